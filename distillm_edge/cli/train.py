"""CLI for ``distillm-edge train``: recipe/config/overrides → one ``TrainConfig`` → ``trainer.run``.

    distillm-edge train                                   # the tiny-cpu recipe: CPU, offline, ~15 min
    distillm-edge train --list-recipes
    distillm-edge train --recipe med42-llama --out runs/med42 max_steps=2000
    distillm-edge train --recipe staged-cpu --out runs/staged   # stages run in order; rerun (or --resume) to continue
    distillm-edge train --config my.yaml lr=1e-4 student.layers=even:10
    distillm-edge train --resume runs/med42               # continue from its latest checkpoint
    distillm-edge train --resume runs/med42 kd_weight=0.7 --allow-config-change   # change loss settings (logged)
    accelerate launch --multi_gpu --num_processes 2 $(which distillm-edge) train --recipe ...   # data parallel
    distillm-edge train --probe-layers "even:10;first-last:8,7"   # initial perplexity of candidate students
    distillm-edge train --plan --recipe multi-teacher --gpus 2 --gpu-mem 24GiB   # memory per device; loads no weights

Overrides are ``key=value`` (dotted keys for sections: ``lora.r=8``, ``temperature.initial=4``).

Test: ``pytest tests/training/test_recipes.py``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``train`` to the root app."""

    @app.command("train", context_settings={"help_option_names": ["-h", "--help"]})
    def train(
        overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Config overrides, e.g. max_steps=20 lora.r=8."),
        recipe: str = typer.Option(None, "--recipe", "-r", help="A shipped recipe (see --list-recipes); default tiny-cpu."),
        config: Path = typer.Option(None, "--config", "-c", help="A YAML config (applied over --recipe, if given)."),
        out: str = typer.Option(None, "--out", "-o", help="Run directory (default runs/train-<timestamp>)."),
        resume: Path = typer.Option(None, "--resume", help="Continue the run in this directory from its latest checkpoint."),
        allow_config_change: bool = typer.Option(
            False, "--allow-config-change", help="--resume: accept changed loss settings (kd_weight, divergence, "
            "temperature, ...); the change is logged."),
        list_recipes: bool = typer.Option(False, "--list-recipes", help="List the shipped recipes and exit."),
        probe_layers: str = typer.Option(
            None, "--probe-layers", help="Measure the initial held-out perplexity of layer selections "
            "(';'-separated, e.g. 'even:10;first-last:8,7') of student.model, and exit."),
        ablation: bool = typer.Option(False, "--ablation", help="Run the ablation ladder (baseline KD -> + progressive "
                                      "temperature -> + specialty weighting -> + attention alignment) and the divergences "
                                      "on --recipe (with the overrides) over teacher caches built once (in <out>/cache); "
                                      "print the held-out table."),
        plan: bool = typer.Option(False, "--plan", help="Print the per-device memory plan and whether it fits; loads no weights."),
        gpus: int = typer.Option(None, "--gpus", help="--plan: GPUs to plan for (0 = CPU; default: the visible ones)."),
        gpu_mem: str = typer.Option(None, "--gpu-mem", help="--plan: memory per GPU, e.g. 24GiB (default: the visible GPU's)."),
    ) -> None:
        """Distil the teachers into a student (multi-teacher KD); writes a run directory."""
        import os

        # Idle OpenMP threads sleep instead of spinning: on a shared CPU, spinning threads made the
        # element-wise loss kernels 10-60x slower (measured with 2 threads and ~6 busy neighbours).
        # Must be set before torch loads; an explicit OMP_WAIT_POLICY in the environment wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from distillm_edge.cli.common import friendly_errors

        with friendly_errors():
            from distillm_edge.config import ConfigError, parse_overrides
            from distillm_edge.training.config import list_recipes as recipes
            from distillm_edge.training.config import resolve_config

            if list_recipes:
                for name, description in recipes():
                    typer.echo(f"{name:<28} {description}")
                return
            extra = parse_overrides(overrides or [])
            from distillm_edge.training import staged

            stages = staged.from_cli(recipe, str(config) if config else None, resume, out, extra)
            if stages is not None:  # a recipe with stages: (staged distillation), or --resume of one
                if plan or probe_layers or ablation:
                    raise ConfigError("--plan, --probe-layers and --ablation take a single-stage recipe; a staged "
                                      "recipe's stages can be run one at a time with --config.")
                staged.run(stages, allow_config_change=allow_config_change)
                return
            if resume is not None:
                if recipe or config:
                    raise ConfigError("--resume uses the run's own config.yaml; drop --recipe/--config (overrides still apply).")
                if out and Path(out) != resume:
                    raise ConfigError(f"--resume {resume} writes into that run; drop --out {out}.")
                extra["out"] = str(resume)
                cfg = resolve_config(config_file=str(resume / "config.yaml"), overrides=extra)
            else:
                if out:
                    extra["out"] = out
                cfg = resolve_config(recipe, str(config) if config else None, extra)
            if plan:
                from distillm_edge.training import plan as planner

                planner.run(cfg, gpus=gpus, memory=gpu_mem)
                return
            from distillm_edge.training import trainer

            if probe_layers:
                trainer.probe(cfg, [s.strip() for s in probe_layers.split(";") if s.strip()])
                return
            if ablation:
                from distillm_edge.training import ablation as ablation_runner

                ablation_runner.run(cfg)
                return
            trainer.run(cfg, resume=resume is not None, allow_config_change=allow_config_change)
