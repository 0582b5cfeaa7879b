"""Training checkpoints (to resume a run) and the final student (a normal Hugging Face checkpoint).

A checkpoint is a directory ``<run>/checkpoints/step-000050/``, built under a temporary name and
renamed into place, so a crash or Ctrl-C never leaves a half-written one:

- ``trainable.safetensors``: every trainable tensor (student weights or LoRA adapters, plus the
  hidden-state and learned vocabulary projections) by name. Frozen weights are not saved:
  ``setup`` rebuilds them deterministically from the config (same teacher checkpoint, same
  layer selection);
- ``optimizer.pt``, ``scheduler.pt``, ``rng.pt``: ``torch.save`` state dicts, loaded back with
  ``weights_only=True`` (no pickled code runs on load);
- ``state.json``: optimizer step, data position (global micro-batch index), counters, a hash
  of the config fields that change the data or model (a resume with different ones is refused),
  and the loss settings (a resume that changes them needs ``--allow-config-change``).

:func:`save_student` writes the final model with ``save_pretrained`` (safetensors), its tokenizer
and chat template; LoRA adapters are merged first (and also saved on their own under
``adapter/``), so eval, export, bench and chat load it like any other checkpoint.

Test: ``pytest tests/training/test_trainer.py -k resume``.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distillm_edge.errors import UserError
from distillm_edge.io import atomic_dir, atomic_write_json, ensure_dir

CHECKPOINTS = "checkpoints"


@dataclass
class TrainState:
    """Where a run is: restored on resume, saved in ``state.json``."""

    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches consumed (the data position)
    tokens: int = 0  # counted target tokens seen
    bad_steps: int = 0  # NaN/inf steps skipped in total
    bad_in_row: int = 0
    elapsed: float = 0.0  # training seconds before this process
    config_hash: str = ""
    loss_settings: dict = field(default_factory=dict)  # trainer.LOSS_SETTINGS, flat; a resume that changes them is refused


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, then raise KeyboardInterrupt.

    The trainer wraps ``optimizer.step()`` and the step counter in it, so a checkpoint saved on
    Ctrl-C never records an applied update as not yet done (which a resume would apply again).
    Outside the main thread (where signals cannot be handled) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def trainable_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """``{prefix.name: tensor}`` of every parameter with ``requires_grad`` (contiguous CPU copies)."""
    out = {}
    for prefix, module in modules.items():
        for name, p in module.named_parameters():
            if p.requires_grad:
                out[f"{prefix}.{name}"] = p.detach().to("cpu").contiguous().clone()
    return out


def load_trainable(modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor], where: Path) -> None:
    expected = trainable_state_names(modules)
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise UserError(
            f"{where}: its trainable tensors do not match this run's model (missing {missing[:3]}, unexpected "
            f"{extra[:3]}); resume with the run's own config.yaml, unchanged."
        )
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, p in module.named_parameters():
                if p.requires_grad:
                    p.copy_(tensors[f"{prefix}.{name}"].to(p.device, p.dtype))


def trainable_state_names(modules: dict[str, torch.nn.Module]) -> set[str]:
    return {f"{prefix}.{n}" for prefix, m in modules.items() for n, p in m.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir: Path, state: TrainState, modules: dict[str, torch.nn.Module], optimizer, scheduler,
                    keep: int, rng: dict | None = None) -> Path:
    """Write ``checkpoints/step-XXXXXX`` atomically and prune to the newest ``keep``; returns its path.

    ``rng``: the RNG states to record (default: the current ones), e.g. those at the start of an
    interrupted step, so the resumed step draws the same random numbers.
    """
    root = ensure_dir(Path(run_dir) / CHECKPOINTS)
    final = root / f"step-{state.step:06d}"
    with atomic_dir(final) as tmp:
        save_file(trainable_state(modules), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng or rng_state(), tmp / "rng.pt")
        atomic_write_json(tmp / "state.json", state.__dict__)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "state.json").is_file())


def latest_checkpoint(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"--resume {run_dir}: no checkpoint under {Path(run_dir) / CHECKPOINTS}; "
                        "nothing to resume (start a new run with --out instead).")
    return found[-1]


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> TrainState:
    """Restore weights, optimizer, scheduler and RNG from ``path``; returns the saved TrainState."""
    load_trainable(modules, load_file(str(path / "trainable.safetensors")), path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", map_location="cpu", weights_only=True))
    return TrainState(**json.loads((path / "state.json").read_text(encoding="utf-8")))


def save_student(model, tokenizer, out_dir: Path, *, lora: bool, base_loader=None) -> Path:
    """Save the trained student as a plain Hugging Face checkpoint in ``out_dir`` (atomically).

    With LoRA the adapters are saved under ``adapter/`` and merged into a copy of the base weights
    for the main checkpoint (``model`` itself is left as it is); ``base_loader()`` gives an
    unquantized base when the training base was NF4 (QLoRA).
    """
    import copy

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if lora:
            model.save_pretrained(tmp / "adapter")
            if base_loader is not None:
                from peft import PeftModel

                merged = PeftModel.from_pretrained(base_loader(), tmp / "adapter").merge_and_unload()
            else:
                merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(tmp, safe_serialization=True)
            del merged
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir
