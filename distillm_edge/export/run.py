"""``distillm-edge export``: checkpoint → GGUF file or ONNX directory → parity check → manifest.

Steps of :func:`run`:

1. resolve ``--model`` to a Hugging Face checkpoint directory (embedded names are materialized)
   and check the architecture is exportable;
2. export under a temporary name in ``--outdir``, renamed into place only when complete:
   ``<model>-<quant>.gguf`` (f32/f16/bf16/q8_0 written directly; other types quantized by
   llama.cpp from a temporary f32 GGUF) or the directory ``<model>-onnx-<quant>/``;
3. unless ``--no-verify``: run the source (PyTorch) and the artifact (llama.cpp / ONNX Runtime) on
   the shipped medical prompts and judge the figures (``parity.py``);
4. write the manifest (``<model>-<quant>.manifest.json`` beside a GGUF, ``manifest.json`` inside an
   ONNX directory) with ``verified`` true only if the check ran and passed.

A failed check leaves the artifact in place, marked unverified, and the command exits non-zero.

Run: ``distillm-edge export --model smollm2-135m-instruct --format gguf --quant q4_k_m``.
Test: ``pytest tests/export``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from distillm_edge.export.checkpoint import Checkpoint, open_checkpoint
from distillm_edge.export.config import CRITERIA, QUANTS, ExportConfig
from distillm_edge.export.manifest import build_manifest
from distillm_edge.io import atomic_dir, atomic_path, atomic_write_json

console = Console(stderr=True)


@dataclass
class ExportResult:
    artifact: Path
    manifest_path: Path
    manifest: dict[str, Any]
    verified: bool
    failures: list[str] = field(default_factory=list)
    reference: Any = None  # the source's parity.Reference, reusable for further exports of the same model


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def source_checkpoint(spec: str, fmt: str = "gguf") -> tuple[Checkpoint, str]:
    """The checkpoint behind ``spec`` (checked exportable to ``fmt``) and a short name for output files."""
    from distillm_edge.models.sources import hub_snapshot, local_dir, resolve

    source = resolve(spec)
    if source.kind == "onnx_dir":
        from distillm_edge.errors import UserError

        raise UserError(f"{spec} is already an ONNX export; point --model at the Hugging Face checkpoint it came from.")
    path = hub_snapshot(spec) if source.kind == "hub" else Path(local_dir(spec))
    name = source.spec if source.kind == "embedded" else source.name if source.kind == "hub" else path.name
    return open_checkpoint(path, fmt), name


def parameter_counts(ckpt: Checkpoint) -> tuple[int, int]:
    """(parameters in 2-D weights, in 1-D weights); a tied LM head counts once."""
    import math

    two, one = 0, 0
    for shape in ckpt.shapes().values():
        n = math.prod(shape)
        two, one = (two + n, one) if len(shape) > 1 else (two, one + n)
    return two, one


def list_quants(cfg: ExportConfig) -> Table:
    """A table of every output type with its approximate size for ``cfg.model``."""
    ckpt, name = source_checkpoint(cfg.model, cfg.format)
    two, one = parameter_counts(ckpt)
    table = Table(title=f"export types for {name} ({(two + one) / 1e6:.1f}M parameters)")
    for col in ("--format", "--quant", "made by", "≈ bits/weight", "≈ size", "verified by"):
        table.add_column(col, justify="right" if col.startswith("≈") else "left")
    for fmt, quants in QUANTS.items():
        for quant, info in quants.items():
            size = (two * info.bits + one * 32) / 8
            table.add_row(fmt, quant, info.how, f"{info.bits:g}", f"{size / 2**20:.0f} MiB", CRITERIA[info.check])
    return table


def export_gguf(cfg: ExportConfig, ckpt: Checkpoint, tokenizer, name: str, progress: Progress) -> tuple[Path, dict]:
    from distillm_edge.export import gguf_quantize
    from distillm_edge.export.gguf_convert import DIRECT_TYPES, write_gguf

    final = cfg.outdir / f"{name}-{cfg.quant}.gguf"
    direct = cfg.quant in DIRECT_TYPES
    task = progress.add_task(f"gguf {'f32' if not direct else cfg.quant}: tensors", total=None)

    def advance(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    details: dict[str, Any] = {}
    with atomic_path(final) as tmp:
        if direct:
            write_gguf(ckpt, tokenizer, tmp, cfg.quant, name, progress=advance)
            details["tool"] = "gguf.GGUFWriter (distillm_edge.export.gguf_convert)"
        else:
            f32 = cfg.outdir / f".{name}-f32-for-{cfg.quant}.{os.getpid()}.gguf"  # intermediate, never an output
            try:
                write_gguf(ckpt, tokenizer, f32, "f32", name, progress=advance)
                quant_task = progress.add_task(f"llama.cpp quantize → {cfg.quant}", total=None)
                imatrix = _imatrix(cfg, ckpt, name, progress, details) if cfg.imatrix else None
                quantized = gguf_quantize.quantize(f32, tmp, cfg.quant, cfg.threads, imatrix=imatrix)
                details["fallbacks"] = quantized.fallbacks
                if imatrix is not None:
                    details["imatrix"]["missing"] = list(quantized.imatrix_missing)
                progress.update(quant_task, total=1, completed=1)
            finally:
                f32.unlink(missing_ok=True)
            details["tool"] = "llama.cpp llama_model_quantize (via llama-cpp-python), from an f32 GGUF"
        types = gguf_quantize.tensor_types(tmp)
        details["pre_tokenizer"] = gguf_quantize.metadata_string(tmp, "tokenizer.ggml.pre")
    details["tensor_types"] = gguf_quantize.type_counts(types)
    return final, details


def _imatrix(cfg: ExportConfig, ckpt: Checkpoint, name: str, progress: Progress, details: dict) -> dict:
    """The imatrix values for the quantizer: computed on the built-in corpus (and saved beside the
    artifact as ``<model>.imatrix.gguf``) for ``--imatrix builtin``, else read from the given file."""
    from distillm_edge.export import imatrix as im
    from distillm_edge.io import sha256_file

    if cfg.imatrix == "builtin":
        task = progress.add_task("imatrix: calibration on the built-in corpus", total=None)
        matrix = im.compute(ckpt.path, im.calibration_texts(), threads=cfg.threads)
        path = cfg.outdir / f"{name}.imatrix.gguf"
        with atomic_path(path) as tmp:
            im.write_imatrix(matrix, tmp)
        progress.update(task, total=1, completed=1)
    else:
        path = Path(cfg.imatrix)
        matrix = im.read_imatrix(path)
    details["imatrix"] = {"file": str(path), "sha256": sha256_file(path), "datasets": matrix.datasets,
                          "chunk_count": matrix.chunk_count, "chunk_size": matrix.chunk_size,
                          "entries": len(matrix.sums)}
    return matrix.values()


def export_onnx(cfg: ExportConfig, ckpt: Checkpoint, name: str, progress: Progress, build_dir: Path) -> dict:
    from distillm_edge.export.onnx_convert import build_onnx

    layers = int(ckpt.config["num_hidden_layers"])
    task = progress.add_task(f"onnx {cfg.quant}: layers", total=layers)
    details = build_onnx(ckpt.path, build_dir, cfg.quant, layers,
                         progress=lambda done, total: progress.update(task, completed=done, total=total))
    progress.update(task, completed=layers)
    return details


def verify(cfg: ExportConfig, ckpt: Checkpoint, artifact: Path, progress: Progress,
           reference=None) -> tuple[dict, list[str], Any]:
    """Parity of ``artifact`` against the source; returns (figures, failures, reference for reuse)."""
    from distillm_edge.backends.torch_backend import TorchBackend
    from distillm_edge.export import parity

    inputs = parity.load_inputs()
    steps = len(inputs.prompts) + len(inputs.texts)
    if reference is None:
        task = progress.add_task("verify: source (torch fp32)", total=steps)
        source = TorchBackend(str(ckpt.path), threads=cfg.threads)
        reference = parity.reference(source, inputs, progress=lambda: progress.advance(task))
        source.close()
    task = progress.add_task(f"verify: {cfg.format} {cfg.quant}", total=steps)
    backend = open_artifact(artifact, cfg.format, cfg.threads)
    try:
        figures = parity.compare(reference, backend, inputs, progress=lambda: progress.advance(task))
    finally:
        backend.close()
    return figures.to_dict(), parity.judge(figures, cfg.check, cfg.max_ppl_increase), reference


def open_artifact(artifact: Path, fmt: str, threads: int):
    if fmt == "gguf":
        from gguf import GGUFReader

        from distillm_edge.backends.llamacpp_backend import LlamaCppBackend

        fields = GGUFReader(artifact).fields
        trained = int(fields["llama.context_length"].contents()) if "llama.context_length" in fields else 2048
        return LlamaCppBackend(str(artifact), threads=threads, n_ctx=min(2048, trained))
    from distillm_edge.backends.onnx_backend import OnnxBackend

    return OnnxBackend(str(artifact), threads=threads)


def run(cfg: ExportConfig, reference=None) -> ExportResult:
    """Export, verify and write the manifest (``reference``: a reused ``parity.Reference``)."""
    from transformers import AutoTokenizer

    ckpt, name = source_checkpoint(cfg.model, cfg.format)
    tokenizer = AutoTokenizer.from_pretrained(ckpt.path)
    two, one = parameter_counts(ckpt)
    started = time.perf_counter()
    parity_figures, failures = None, []
    with _progress() as progress:
        if cfg.format == "gguf":
            artifact, details = export_gguf(cfg, ckpt, tokenizer, name, progress)
            details["seconds"] = round(time.perf_counter() - started, 2)
            if cfg.verify:
                parity_figures, failures, reference = verify(cfg, ckpt, artifact, progress, reference)
            manifest_path = artifact.with_suffix(".manifest.json")
        else:
            artifact = cfg.outdir / f"{name}-onnx-{cfg.quant}"
            with atomic_dir(artifact) as build_dir:
                details = export_onnx(cfg, ckpt, name, progress, build_dir)
                details["seconds"] = round(time.perf_counter() - started, 2)
                if cfg.verify:
                    parity_figures, failures, reference = verify(cfg, ckpt, build_dir, progress, reference)
                manifest = _manifest(cfg, ckpt, build_dir, artifact.name, tokenizer, details, parity_figures,
                                     failures, two + one)
                atomic_write_json(build_dir / "manifest.json", manifest)
            manifest_path = artifact / "manifest.json"
    if cfg.format == "gguf":
        manifest = _manifest(cfg, ckpt, artifact, artifact.name, tokenizer, details, parity_figures, failures, two + one)
        atomic_write_json(manifest_path, manifest)
    result = ExportResult(artifact, manifest_path, manifest, manifest["verified"], failures, reference)
    console.print(summary_table(result))
    return result


def _manifest(cfg, ckpt, files_at, name, tokenizer, details, figures, failures, num_parameters):
    verified = bool(cfg.verify and figures is not None and not failures)
    return build_manifest(cfg=cfg, source_spec=cfg.model, checkpoint=ckpt.path, architecture=ckpt.architecture,
                          num_parameters=num_parameters, artifact=files_at, name=name, tokenizer=tokenizer,
                          export=details, parity=figures, failures=failures, verified=verified)


def summary_table(result: ExportResult) -> Table:
    m = result.manifest
    status = "[green]verified[/]" if result.verified else ("[red]FAILED[/]" if result.failures else "[yellow]not verified[/]")
    table = Table(title=f"{result.artifact} — {status}", show_header=False)
    table.add_row("size", f"{m['total_bytes'] / 2**20:.1f} MiB ({m['bits_per_weight']:.2f} bits/weight)")
    table.add_row("export time", f"{m['export']['seconds']:.1f} s")
    if "tensor_types" in m["export"]:
        table.add_row("tensor types", ", ".join(f"{t}×{n}" for t, n in m["export"]["tensor_types"].items()))
    if m["export"].get("fallbacks"):
        used = sorted({f"{f['wanted']}→{f['used']}" for f in m["export"]["fallbacks"].values()})
        table.add_row("llama.cpp fallbacks", f"{len(m['export']['fallbacks'])} tensors ({', '.join(used)}): "
                      "rows not a multiple of 256")
    p = m["parity"]
    if p:
        table.add_row("mean KL", f"{p['mean_kl']:.2e} over {p['positions']} positions")
        table.add_row("top-1 agreement", f"{p['top1_agreement']:.2%}")
        tie = f", {p['greedy_tie_parted']} parted at a tie of the source" if p.get("greedy_tie_parted") else ""
        table.add_row("greedy identical", f"{p['greedy_identical']}/{p['greedy_prompts']} prompts{tie} "
                      f"(mean prefix {p['greedy_mean_prefix']:.1f}/{p['max_new_tokens']})")
        table.add_row("perplexity", f"{p['ppl_source']:.2f} → {p['ppl_artifact']:.2f} ({p['ppl_increase']:+.1%})")
        table.add_row("tokenizer", "identical" if p["tokenizer_match"] else "[red]differs[/]")
    table.add_row("criterion", CRITERIA[m["criterion"]])
    for failure in result.failures:
        table.add_row("[red]failure[/]", failure)
    table.add_row("manifest", str(result.manifest_path))
    return table
