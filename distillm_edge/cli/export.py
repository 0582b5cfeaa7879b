"""CLI for ``distillm-edge export``: options → ``ExportConfig`` → ``export.run``.

Examples::

    distillm-edge export --model smollm2-135m-instruct --list-quants
    distillm-edge export --model runs/student --format gguf --quant q4_k_m --outdir exports
    distillm-edge export --model runs/student --format onnx --quant int4
    distillm-edge export --model smollm2-135m-instruct --quant q4_k_m --imatrix builtin

Exit codes: 0 exported (and verified, unless --no-verify), 1 the parity check failed (the
artifact is kept, marked unverified in its manifest), 2 bad input.

Test: ``pytest tests/export/test_cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from distillm_edge.cli.common import console, friendly_errors


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        model: str = typer.Option(..., "--model", "-m", help="Checkpoint directory or embedded model name."),
        format: str = typer.Option("gguf", "--format", "-f", help="gguf (llama.cpp) or onnx (ONNX Runtime)."),
        quant: str = typer.Option(None, "--quant", "-q",
                                  help="Output type, e.g. f16, q8_0, q4_k_m (gguf) or fp32, int8, int4 (onnx). "
                                       "Default: f16 for gguf, int8 for onnx. See --list-quants."),
        outdir: Path = typer.Option(Path("exports"), "--outdir", "-o", help="Where the artifact and manifest go."),
        no_verify: bool = typer.Option(False, "--no-verify", help="Skip the parity check (manifest says unverified)."),
        max_ppl_increase: float = typer.Option(0.25, "--max-ppl-increase",
                                               help="Largest allowed perplexity increase for 4-8-bit types (0.25 = 25%)."),
        threads: int = typer.Option(0, "--threads", help="CPU threads for quantizing and checking (0 = all)."),
        list_quants: bool = typer.Option(False, "--list-quants", help="Show the output types and their sizes for --model."),
        imatrix: str = typer.Option(None, "--imatrix",
                                    help="Importance matrix for llama.cpp's quantizer: 'builtin' computes one on the "
                                         "built-in medical corpus (saved beside the artifact), or an imatrix file "
                                         "(GGUF or legacy .dat, e.g. from llama-imatrix)."),
    ) -> None:
        """Export a checkpoint to GGUF or ONNX and prove it still behaves like the source."""
        with friendly_errors():
            from distillm_edge.export import ExportConfig, list_quants_table, run

            cfg = ExportConfig(model=model, format=format, quant=quant, outdir=outdir, verify=not no_verify,
                               max_ppl_increase=max_ppl_increase, threads=threads, list_quants=list_quants,
                               imatrix=imatrix)
            if cfg.list_quants:
                console.print(list_quants_table(cfg))
                return
            result = run(cfg)
        if cfg.verify and not result.verified:
            console.print(f"[bold red]parity check failed:[/] {'; '.join(result.failures)} — {result.artifact} is "
                          "marked unverified in its manifest.")
            raise typer.Exit(1)
