"""Turn a model spec into a local Hugging Face checkpoint directory.

A spec is one of:

- an embedded name (``smollm2-135m-instruct``, ``gemma-3-270m``; see ``registry.py``);
- a local ``.gguf`` file;
- a local Hugging Face directory (has ``config.json``), e.g. a trained student;
- a local ONNX directory (has ``genai_config.json`` or ``model.onnx``): only the ONNX backend runs it;
- a Hub id (``org/name``): downloaded by transformers when online; offline, a clear error.

GGUF models are *materialized* once into ``$DISTILLM_EDGE_HOME/models/<name>``: transformers loads
a GGUF only dequantized and will neither quantize nor ``save_pretrained`` such a model, so we
rebuild the model from its config and state dict and save a normal safetensors checkpoint with
its tokenizer and chat template. The directory is built under a temporary name, verified (the
reloaded checkpoint must give the same logits as the GGUF-loaded model, and every file's sha256
is recorded in ``distillm_edge.json``) and only then renamed into place.

Test: ``pytest tests/models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from distillm_edge.errors import UserError
from distillm_edge.io import DIR_MODE, atomic_write_json, ensure_dir, home, sha256_file
from distillm_edge.models.registry import EMBEDDED

MANIFEST = "distillm_edge.json"
SourceKind = Literal["embedded", "gguf", "hf_dir", "onnx_dir", "hub"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    spec: str
    kind: SourceKind
    path: Path | None = None  # GGUF file, HF dir or ONNX dir (None for hub ids / unassembled embedded)
    name: str = ""  # a short display name

    @property
    def cache_dir(self) -> Path | None:
        """Where a GGUF source is materialized (None for other kinds)."""
        if self.kind == "embedded":
            return home() / "models" / self.spec
        if self.kind == "gguf" and self.path is not None:
            stat = self.path.stat()
            key = hashlib.sha256(f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
            return home() / "models" / f"{self.path.stem}-{key[:12]}"
        return None


def resolve(spec: str | os.PathLike) -> ModelSource:
    """Classify a model spec; raise UserError naming the supported forms when it is none of them."""
    text = str(spec)
    if text in EMBEDDED:
        return ModelSource(text, "embedded", None, text)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(text, "gguf", path, path.stem)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(text, "hf_dir", path, path.name)
        if (path / "genai_config.json").is_file() or any(path.glob("*.onnx")):
            return ModelSource(text, "onnx_dir", path, path.name)
        raise UserError(
            f"{path} is a directory but holds neither a Hugging Face checkpoint (config.json) nor an "
            "ONNX export (genai_config.json / *.onnx). Point --model at the checkpoint directory."
        )
    if path.exists():
        raise UserError(f"{path}: not a model (expected a .gguf file or a checkpoint directory).")
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return ModelSource(text, "hub", None, text.split("/")[-1])
    known = ", ".join(EMBEDDED)
    raise UserError(
        f"model '{text}' not found. Use an embedded name ({known}), a local .gguf file, a local "
        "Hugging Face checkpoint directory, an ONNX export directory, or a Hub id like org/name."
    )


def is_materialized(source: ModelSource) -> bool:
    cache = source.cache_dir
    return cache is not None and (cache / MANIFEST).is_file()


def gguf_path(source: ModelSource) -> Path:
    """The GGUF file behind an embedded or GGUF source (assembling Gemma's chunks if needed)."""
    if source.kind == "embedded":
        return EMBEDDED[source.spec].locate()
    if source.kind == "gguf" and source.path is not None:
        return source.path
    raise UserError(f"model '{source.spec}' is not a GGUF model.")


def check_gguf(path: Path) -> str:
    """The architecture of a readable GGUF file; UserError naming the file when it is not a GGUF, is
    cut off or corrupt (tensor infos unreadable or tensor data past the end of the file)."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise UserError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes). Pass a .gguf "
                        "model file, a Hugging Face checkpoint directory or an embedded model name.")
    from gguf import GGUFReader

    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
        arch = reader.fields["general.architecture"].contents() if "general.architecture" in reader.fields else "?"
    except Exception as exc:  # noqa: BLE001 - gguf-py fails with ValueError/struct.error/IndexError on a cut-off file
        raise UserError(f"{path}: truncated or corrupt GGUF file ({type(exc).__name__}: {exc}). "
                        "Download or export it again.") from None
    if end > size:
        raise UserError(f"{path}: truncated or corrupt GGUF file: its tensors need {end:,} bytes but the file has "
                        f"{size:,}. Download or export it again.")
    return str(arch)


HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]  # no pickled weights


def hub_snapshot(spec: str) -> Path:
    """A local directory holding a Hub model's checkpoint files (downloaded once into the Hugging
    Face cache when online; only the cache when offline), or UserError saying what to do."""
    import huggingface_hub

    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    try:
        path = Path(huggingface_hub.snapshot_download(repo_id=spec, allow_patterns=HUB_FILES))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, gated repo, network errors: all end here
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else f"it could not be downloaded ({type(exc).__name__}: {exc})"
        raise UserError(
            f"Hub model '{spec}' is not in the local Hugging Face cache and {why}. Download it once while "
            f"online (huggingface-cli download {spec}), or pass a local checkpoint directory or .gguf file."
        ) from None
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise UserError(f"Hub model '{spec}' has no config.json with safetensors weights ({path}); export reads "
                        "safetensors checkpoints only.")
    return path


def local_dir(spec: str | os.PathLike, progress: bool = True) -> Path | str:
    """A directory (or Hub id) that ``from_pretrained`` can load, materializing GGUF if needed."""
    source = resolve(spec)
    if source.kind in ("embedded", "gguf"):
        return materialize(source, progress=progress)
    if source.kind == "hf_dir":
        return source.path  # type: ignore[return-value]
    if source.kind == "hub":
        return source.spec
    raise UserError(
        f"{source.path} is an ONNX export: it runs only on the ONNX Runtime backend "
        "(use --backend onnx), not as a PyTorch model."
    )


def materialize(source: ModelSource, progress: bool = True, force: bool = False) -> Path:
    """Convert a GGUF source into a verified safetensors checkpoint in the cache (once)."""
    final = source.cache_dir
    assert final is not None, source
    if (final / MANIFEST).is_file() and not force:
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf = gguf_path(source)
    architecture = check_gguf(gguf)
    chat_template = EMBEDDED[source.spec].chat_template if source.kind == "embedded" else None
    ensure_dir(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=DIR_MODE)
    started = time.time()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (ValueError, KeyError, NotImplementedError) as exc:  # transformers' GGUF support ends here
            raise UserError(
                f"{gguf}: transformers cannot load this GGUF (architecture '{architecture}': {exc}). Run it on "
                "llama.cpp with --backend gguf, or pass the Hugging Face checkpoint it was converted from."
            ) from None
        if chat_template and not tokenizer.chat_template:
            tokenizer.chat_template = chat_template
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"state dict mismatch rebuilding {gguf.name}: missing={missing}, unexpected={unexpected}")
        if config.tie_word_embeddings:
            model.tie_weights()
        model.eval()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _verify_reload(tmp, loaded, tokenizer)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(
            tmp / MANIFEST,
            {
                "source": source.spec,
                "gguf_file": str(gguf),
                "gguf_sha256": sha256_file(gguf),
                "architecture": config.model_type,
                "vocab_size": config.vocab_size,
                "num_parameters": sum(p.numel() for p in model.parameters()),
                "files": files,
                "seconds": round(time.time() - started, 1),
            },
        )
        for p in tmp.iterdir():
            os.chmod(p, 0o640)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not progress:
            hf_logging.enable_progress_bar()
    return final


def _verify_reload(directory: Path, reference, tokenizer) -> None:
    """The saved checkpoint must reproduce the GGUF-loaded model's logits exactly."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    ids = tokenizer("Hypertension is a risk factor for stroke.", return_tensors="pt").input_ids
    with torch.no_grad():
        a = reference(ids).logits
        b = reloaded(ids).logits
    if not torch.equal(a, b):
        diff = (a - b).abs().max().item()
        raise RuntimeError(f"materialized checkpoint in {directory} differs from the GGUF model (max |Δlogit| {diff})")


def verify(directory: Path) -> list[str]:
    """Re-hash a materialized checkpoint; return the names of files that no longer match."""
    manifest = json.loads((Path(directory) / MANIFEST).read_text())
    bad = []
    for name, digest in manifest["files"].items():
        path = Path(directory) / name
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return bad
