"""Memory planner for ``distillm-edge train --plan``: will a recipe fit, per device, before any weight loads?

    distillm-edge train --plan --recipe multi-teacher --gpus 2 --gpu-mem 24GiB
    distillm-edge train --plan --config my.yaml --gpus 1

Model sizes come from configs only (no weights): a local checkpoint's ``config.json``, the Hub's
(cached, else downloaded when online), or the architecture files shipped in ``architectures/`` for
the embedded models and the research models (Llama3-Med42-8B, MedGemma-4B / gemma-3-4b-it,
Llama-3.2-1B), so the research recipes plan offline. Parameters are counted exactly by building the
model on PyTorch's ``meta`` device (nested multimodal configs included: Gemma-3 4B loads as
``Gemma3ForConditionalGeneration`` with its vision tower).

The estimate (:func:`estimate`, a pure function of the config and the counts) has, per device:
each teacher's weights at its precision (NF4: 4 bits + 8-bit block scales with double quantization;
int8: 1 byte + a per-row scale; embeddings, norms and the output head stay in the teacher's dtype),
the student's weights, fp32 master weights, gradients and AdamW states (8-bit AdamW: 2 bytes), the
activations kept for backward at ``batch_size x max_length`` (with and without gradient
checkpointing), the teachers' forward transients, and the logits and loss buffers (student logits,
one gradient buffer per loss term, teacher logits up to the full teacher vocabulary with ULD, the
chunked loss's fp32 chunks). :func:`verdict` says whether it fits and, if not, which change would
(gradient checkpointing, 8-bit AdamW, teachers on the other GPU, ZeRO-2 / ZeRO-3-FSDP, LoRA, a
shorter ``max_length``). :func:`refuse_if_unfit` raises the same message as a ``UserError``; the
trainer calls it before loading weights.

Validated against measured peaks by ``python benchmarks/plan_accuracy.py``.
Test: ``pytest tests/training/test_plan.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.training.config import LoraConfig, TrainConfig

ARCHITECTURES_DIR = Path(__file__).parent / "architectures"
GiB = 1 << 30
_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 4}
CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}  # losses.CHUNK_ELEMENTS_CPU / _GPU
CHUNK_BUFFERS = 6  # fp32 buffers the chunked loss holds at once (student + teacher rows, log-softmaxes, grad)
CUDA_RESERVE = 0.75 * GiB  # CUDA context and cuBLAS workspace, outside max_memory_allocated
FRAGMENTATION = 0.10  # the caching allocator's slack on top of the live tensors (GPU only)


# --------------------------------------------------------------------------- model sizes (no weights)


@dataclass(frozen=True)
class ModelCounts:
    """Parameter counts and shape numbers of one model, from its config."""

    name: str
    model_type: str
    params: int  # every parameter
    linear: int  # nn.Linear weights bitsandbytes would quantize (all but the output head)
    linear_rows: int  # their output rows (int8 keeps one fp32 scale per row)
    embedding: int  # input embedding
    head: int  # an untied output head (0 when tied to the embedding)
    vision: int  # parameters outside the text model (a multimodal tower), loaded too
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    lora_dims: dict[str, int] = field(default_factory=dict)  # Linear name -> sum of (in + out) over layers
    lora_inputs: dict[str, int] = field(default_factory=dict)  # Linear name -> sum of in_features over layers

    def lora_params(self, r: int, targets: tuple[str, ...]) -> int:
        return r * sum(self.lora_dims.get(t, 0) for t in targets)


def _packaged(spec: str) -> Path | None:
    path = ARCHITECTURES_DIR / f"{spec.replace('/', '--')}.json"
    return path if path.is_file() else None


def load_config(spec: str):
    """The transformers config of a model spec, reading no weights.

    Local checkpoint dir > materialized embedded model > Hub cache > shipped architecture file >
    Hub download (online only). Offline with none of these: a UserError saying what to do.
    """
    from transformers import AutoConfig

    from distillm_edge.models.sources import resolve

    source = resolve(spec)
    if source.kind == "hf_dir":
        return AutoConfig.from_pretrained(source.path)
    if source.kind in ("embedded", "gguf") and source.cache_dir is not None and (source.cache_dir / "config.json").is_file():
        return AutoConfig.from_pretrained(source.cache_dir)  # materialized already
    if source.kind == "gguf":  # the GGUF header only
        return AutoConfig.from_pretrained(source.path.parent, gguf_file=source.path.name)
    if source.kind == "hub":
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(spec, "config.json", local_files_only=True)
            return AutoConfig.from_pretrained(Path(path).parent)
        except Exception:  # noqa: BLE001 - not cached: fall through to the shipped file or the network
            pass
    packaged = _packaged(spec)
    if packaged is not None:
        return config_from_dict(json.loads(packaged.read_text(encoding="utf-8")))
    if source.kind == "hub":
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        if not offline:
            try:
                from huggingface_hub import hf_hub_download

                return AutoConfig.from_pretrained(Path(hf_hub_download(spec, "config.json")).parent)
            except Exception as exc:  # noqa: BLE001 - any Hub failure gets the same advice
                why = f"it could not be downloaded ({type(exc).__name__})"
        else:
            why = "offline mode is on (HF_HUB_OFFLINE=1)"
        raise UserError(f"--plan: the config of '{spec}' is not in the Hugging Face cache and {why}. Download it "
                        f"once while online (huggingface-cli download {spec} config.json), or plan with a local "
                        "checkpoint directory.")
    raise UserError(f"--plan: cannot read the architecture of '{spec}' without loading it ({source.kind}); "
                    "materialize it first (distillm-edge models pull) or give a checkpoint directory.")


def config_from_dict(data: dict):
    from transformers import AutoConfig

    data = dict(data)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def count_model(config, name: str = "", layers: list[int] | None = None) -> ModelCounts:
    """Exact parameter counts of the model ``config`` describes, built on the meta device (no memory).

    ``layers``: keep only these decoder layers (a student cut by ``student.layers``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from distillm_edge.models.student import student_config

    text = config.get_text_config()
    if layers is not None:
        config = student_config(config, layers)
        text = config.get_text_config()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head_module = model.get_output_embeddings()
    embedding = model.get_input_embeddings().weight
    head = head_module.weight if head_module is not None else None
    tied = head is None or head is embedding
    linear = rows = vision = 0
    dims: dict[str, int] = {}
    inputs: dict[str, int] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head_module:
            linear += module.weight.numel()
            rows += module.out_features
            short = mod_name.rsplit(".", 1)[-1]
            if "vision" not in mod_name and "multi_modal" not in mod_name:
                dims[short] = dims.get(short, 0) + module.in_features + module.out_features
                inputs[short] = inputs.get(short, 0) + module.in_features
    for p_name, p in model.named_parameters():
        if "vision_tower" in p_name or "multi_modal_projector" in p_name:
            vision += p.numel()
    heads = text.num_attention_heads
    return ModelCounts(
        name=name or getattr(config, "name_or_path", "") or text.model_type,
        model_type=text.model_type,
        params=sum(p.numel() for p in model.parameters()),
        linear=linear, linear_rows=rows, embedding=embedding.numel(), head=0 if tied else head.numel(),
        vision=vision, vocab=text.vocab_size, hidden=text.hidden_size, layers=text.num_hidden_layers,
        heads=heads, kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        intermediate=text.intermediate_size, lora_dims=dims, lora_inputs=inputs)


def model_counts(cfg: TrainConfig) -> dict[str, ModelCounts]:
    """Counts of the student (as cut) and of every teacher, keyed ``student`` and teacher spec."""
    from distillm_edge.models.student import select_layers

    out: dict[str, ModelCounts] = {}
    for tc in cfg.teachers:
        if tc.model not in out:
            out[tc.model] = count_model(load_config(tc.model), tc.model)
    config = load_config(cfg.student.model)
    layers = None
    if cfg.student.layers is not None:
        layers = select_layers(config.get_text_config().num_hidden_layers, cfg.student.layers)
    out["student"] = count_model(config, cfg.student.model, layers)
    return out


# --------------------------------------------------------------------------- the estimate (pure)


@dataclass(frozen=True)
class Setup:
    """Where and how a run trains: the knobs the verdict turns."""

    gpus: int = 1  # 0: CPU
    memory: int = 24 * GiB  # per device
    engine: str = "auto"  # auto (one process; DDP when gpus > 1 and no teacher has its own GPU) | ddp | zero2 | zero3
    checkpointing: bool = False
    optimizer: str = "adamw"  # adamw | adamw_8bit
    teachers_on: int | None = None  # put every teacher on this GPU (the split layout)
    lora_r: int | None = None  # plan as LoRA with this rank on a bf16 base (suggestion only)
    qlora: bool = False  # with lora_r: an NF4 base (suggestion only)
    max_length: int | None = None  # plan at this length (suggestion only)
    cpu_bf16: bool = False  # gpus == 0: this CPU has native bf16, so precision auto means bf16 autocast

    @property
    def processes(self) -> int:
        return self.gpus if self.gpus > 1 and self.engine in ("ddp", "zero2", "zero3") else 1


@dataclass
class DevicePlan:
    name: str
    capacity: int
    lines: list[tuple[str, float]] = field(default_factory=list)

    def add(self, label: str, nbytes: float) -> None:
        if nbytes > 0:
            self.lines.append((label, float(nbytes)))

    @property
    def total(self) -> float:
        return sum(b for _, b in self.lines)


@dataclass
class Plan:
    devices: list[DevicePlan]
    setup: Setup
    notes: list[str] = field(default_factory=list)
    activations_checkpointed: float = 0.0  # the other choice, for the printout
    activations_full: float = 0.0

    @property
    def fits(self) -> bool:
        return all(d.total <= d.capacity for d in self.devices)


def teacher_weight_bytes(c: ModelCounts, dtype: str, quantization: str) -> float:
    """A teacher's weights: NF4 4 bits + one 8-bit absmax per 64 weights + one fp32 per 256 blocks
    (double quantization); int8 1 byte + one fp32 scale per output row; the rest in ``dtype``."""
    b = _BYTES[dtype]
    if quantization == "nf4":
        return c.linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + (c.params - c.linear) * b
    if quantization == "int8":
        return c.linear * 1.0 + c.linear_rows * 4 + (c.params - c.linear) * b
    return c.params * b


def student_activations(c: ModelCounts, batch: int, seq: int, *, compute: int, residual: int, autocast_casts: bool,
                        eager: bool, checkpointing: bool) -> float:
    """Bytes the student's decoder keeps for backward at ``batch x seq`` tokens.

    Per token and layer (h hidden, q = heads * head_dim, i intermediate; ``compute`` / ``residual``
    bytes of the matmul outputs / the residual stream): each RMSNorm keeps an fp32 input and its
    normalized output, 2 (4 + residual) h; the Linear inputs, 2 h (5 h when autocast casts an fp32
    input once per projection); attention keeps q, k, v (KV heads repeated) and its output, 4 q,
    and the o_proj input, q; the SwiGLU MLP keeps gate, act(gate), up and the down input, 4 i.
    Eager attention (attention alignment) adds the fp32 softmax and its cast per head: a s^2 each.
    Checkpointing keeps only each layer's input and recomputes one layer at a time.
    """
    tokens = batch * seq
    norms = 4 if c.model_type.startswith("gemma") else 2
    q = c.heads * c.head_dim
    per_token = (norms * (4 + residual) * c.hidden + (5 if autocast_casts else 2) * compute * c.hidden
                 + 5 * compute * q + 4 * compute * c.intermediate)
    per_layer = per_token * tokens
    if eager:
        per_layer += c.heads * seq * seq * batch * (4 + (compute if compute != 4 else 0))
    final = (4 + residual) * c.hidden * tokens  # final norm
    if checkpointing:
        return c.layers * residual * c.hidden * tokens + per_layer + final
    return c.layers * per_layer + final


def estimate(cfg: TrainConfig, counts: dict[str, ModelCounts], setup: Setup) -> Plan:
    """Per-device memory of ``cfg`` under ``setup`` (pure: counts come from :func:`model_counts`)."""
    cpu = setup.gpus == 0
    seq = setup.max_length or cfg.max_length
    batch = cfg.batch_size
    n_rows = batch * seq  # worst case: every position counted
    s = counts["student"]
    notes: list[str] = []
    # precision auto: bf16 autocast on a GPU and on a CPU with native bf16 (precision.mixed_precision), else fp32
    amp = cfg.precision in ("bf16", "fp16") or (cfg.precision == "auto" and (not cpu or setup.cpu_bf16))
    compute = 2 if amp else 4
    lora_r = setup.lora_r or (cfg.lora.r if cfg.lora is not None else None)
    lora_targets = cfg.lora.target_modules if cfg.lora is not None else (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    full_ft = lora_r is None
    weight_bytes = 2 if setup.lora_r else _BYTES[cfg.student.dtype]  # a suggested LoRA keeps a bf16 base
    master = full_ft and weight_bytes < 4  # the trainer keeps fp32 master weights of a bf16 student
    # QLoRA: peft's prepare_model_for_kbit_training upcasts every weight bitsandbytes left unquantized
    # (embeddings, norms, the head) to fp32, so the residual stream runs in fp32 and each quantized
    # Linear casts its output back to it (measured on an H200: benchmarks/gpu_check.py, qlora cases)
    qlora = cfg.student.quantization == "nf4" or setup.qlora
    residual = 4 if (master or weight_bytes == 4 or qlora) else weight_bytes
    procs = setup.processes
    if procs > 1:  # every rank is alike: its own student shard or replica and its own teachers
        devices = [DevicePlan(f"each of {procs} GPUs", setup.memory)]
    else:
        devices = [DevicePlan("cpu" if cpu else f"cuda:{i}", setup.memory) for i in range(max(1, setup.gpus))]
    shard_states = procs if setup.engine in ("zero2", "zero3") else 1
    shard_weights = procs if setup.engine == "zero3" else 1
    student_dev = devices[0]

    # teachers
    teacher_placement: dict[int, int] = {}
    for i, tc in enumerate(cfg.teachers):
        where = 0
        if setup.teachers_on is not None and procs == 1:
            where = setup.teachers_on
        elif tc.device and tc.device.startswith("cuda") and not cpu and procs == 1:
            where = int(tc.device.split(":", 1)[1]) if ":" in tc.device else 0
            if where >= len(devices):
                notes.append(f"teachers[{i}].device {tc.device} does not exist with {setup.gpus} GPU(s): planned on cuda:0 "
                             f"(the trainer refuses it; remove the device or add a GPU)")
                where = 0
        teacher_placement[i] = where
        c = counts[tc.model]
        label = f"teacher {Path(tc.model).name} weights ({tc.quantization if tc.quantization != 'none' else tc.dtype})"
        if tc.device_map == "auto" and len(devices) > 1:
            for d in devices:
                d.add(label + f", 1/{len(devices)} by device_map", teacher_weight_bytes(c, tc.dtype, tc.quantization) / len(devices))
        else:
            devices[where].add(label, teacher_weight_bytes(c, tc.dtype, tc.quantization))
    # student weights and training state
    if qlora:
        student_dev.add("student weights (NF4 base; embeddings and norms upcast to fp32 by peft)",
                        teacher_weight_bytes(s, "float32", "nf4") / shard_weights)
    else:
        student_dev.add(f"student weights ({cfg.student.dtype if not master else 'fp32 master'})",
                        s.params * (4 if master else weight_bytes) / shard_weights)
    if full_ft:
        trainable = s.params - (s.embedding + s.head if cfg.freeze_embeddings else 0)
    else:
        trainable = s.lora_params(lora_r, tuple(lora_targets))
    extra = 0  # hidden-state projections and learned vocabulary projections (fp32, trained)
    if cfg.hidden.weight > 0 and cfg.teachers:
        t = counts[cfg.teachers[cfg.hidden.teacher].model]
        n_map = len(cfg.layer_map) if cfg.layer_map else s.layers
        if t.hidden != s.hidden:
            extra += n_map * (s.hidden * t.hidden + t.hidden)
    if cfg.cross_tokenizer.method == "projection":
        for tc in cfg.teachers:
            t = counts[tc.model]
            if t.vocab != s.vocab:
                rank = cfg.cross_tokenizer.projection_rank
                extra += t.vocab * rank + rank * s.vocab + rank + s.vocab
    grad_bytes = 4 if (master or weight_bytes == 4 or not full_ft) else weight_bytes
    state_bytes = 2 if setup.optimizer == "adamw_8bit" else 8
    if not full_ft:
        student_dev.add(f"LoRA adapters (r={lora_r}, fp32)", trainable * 4 / shard_weights)
    if extra:
        student_dev.add("alignment/vocabulary projections (fp32 weights)", extra * 4 / shard_weights)
    student_dev.add(f"gradients ({trainable / 1e6:,.1f}M trainable{' + projections' if extra else ''})",
                    (trainable * grad_bytes + extra * 4) / shard_states)
    student_dev.add(f"optimizer states ({'8-bit AdamW' if state_bytes == 2 else 'AdamW, fp32'})",
                    (trainable + extra) * state_bytes / shard_states)
    if procs > 1 and setup.engine == "ddp":
        student_dev.add("DDP gradient buckets", trainable * grad_bytes + extra * 4)
    if cfg.l2_weight > 0:  # the trainer keeps the reference in host memory and applies it per tensor
        if cpu:
            student_dev.add("L2-SP reference weights (fp32)", trainable * 4)
        else:
            notes.append(f"L2-SP reference weights: {_gib(trainable * 4)} of host RAM (per process), not on the GPU")
    # activations
    eager = cfg.attention.weight > 0
    act_kwargs = dict(compute=compute, residual=residual, autocast_casts=amp and residual == 4, eager=eager)
    act_full = student_activations(s, batch, seq, checkpointing=False, **act_kwargs)
    act_ckpt = student_activations(s, batch, seq, checkpointing=True, **act_kwargs)
    student_dev.add(f"activations ({batch} x {seq} tokens{', eager attention' if eager else ''}"
                    f"{', checkpointed' if setup.checkpointing else ''})", act_ckpt if setup.checkpointing else act_full)
    if amp and residual == 4 and not full_ft and qlora:  # bitsandbytes' NF4 Linears cast nothing; the fp32 head
        student_dev.add("bf16 copy of the fp32 head (precision.AutocastWeights)",
                        (s.head or s.embedding) * compute / shard_weights)
        dropout = (cfg.lora or LoraConfig()).dropout  # a suggested QLoRA gets the default adapter
        adapter_inputs = sum(s.lora_inputs.get(t, 0) for t in lora_targets)  # over layers
        per_token = adapter_inputs * (compute + (1 if dropout > 0 else 0))  # bf16 cast of the fp32 input, dropout mask
        student_dev.add(f"LoRA adapter inputs (bf16 casts{' + dropout masks' if dropout > 0 else ''})",
                        per_token * n_rows / (s.layers if setup.checkpointing else 1))
    elif amp and residual == 4:
        student_dev.add("bf16 weight copies made by autocast (kept for backward)",
                        (s.linear + s.head + (s.embedding if s.head == 0 else 0)) * compute / shard_weights)
    # logits and loss buffers on the student's device
    n_losses = (1 if cfg.kd_weight < 1 else 0) + (len(cfg.teachers) if cfg.kd_weight > 0 else 0)
    student_dev.add(f"student logits + {n_losses} loss gradient buffer(s) + their sum ({n_rows} rows x {s.vocab:,})",
                    n_rows * s.vocab * compute * (1 + n_losses + (1 if n_losses > 1 else 0)))
    for i, tc in enumerate(cfg.teachers):
        t = counts[tc.model]
        tb = _BYTES[tc.dtype]
        same = t.vocab == s.vocab or tc.model == cfg.student.model
        width = s.vocab if same or cfg.cross_tokenizer.shared_only else t.vocab
        if cfg.kd_weight > 0:
            student_dev.add(f"teacher {Path(tc.model).name} logits ({width:,} wide)", n_rows * width * tb)
        where = devices[teacher_placement[i]]
        transient = (2 * t.hidden + 3 * t.intermediate) * n_rows * tb + n_rows * (t.vocab if same else width) * tb
        if eager and i == cfg.attention.teacher:
            transient += t.layers * t.heads * seq * seq * batch * tb + t.heads * seq * seq * batch * 4
        if cfg.hidden.weight > 0 and i == cfg.hidden.teacher:
            transient += (t.layers + 1) * t.hidden * n_rows * tb
        where.add(f"teacher {Path(tc.model).name} forward (inference, outputs kept)", transient)
    vocab = max([s.vocab] + [counts[tc.model].vocab for tc in cfg.teachers])
    chunk = CHUNK_ELEMENTS["cpu" if cpu else "cuda"]
    student_dev.add("chunked loss buffers (fp32)", min(chunk, n_rows * vocab) * 4 * CHUNK_BUFFERS)
    if not cpu:
        for d in devices:
            if d.lines:
                d.add("allocator slack (10%) + CUDA context", d.total * FRAGMENTATION + CUDA_RESERVE)
    if procs > 1:
        notes.append(f"{procs} processes ({setup.engine}): each GPU holds its own copy of every teacher")
    plan = Plan([d for d in devices if d.lines] or devices[:1], setup, notes)
    plan.activations_full, plan.activations_checkpointed = act_full, act_ckpt
    return plan


# --------------------------------------------------------------------------- verdict


def baseline_setup(cfg: TrainConfig, gpus: int, memory: int) -> Setup:
    """The layout the recipe asks for: one process with teachers on their own GPU, else DDP over ``gpus``."""
    split = any(tc.device and tc.device not in ("cuda", "cuda:0") for tc in cfg.teachers)
    engine = "auto" if gpus <= 1 or split else "ddp"
    from distillm_edge.training.precision import cpu_has_native_bf16

    return Setup(gpus=gpus, memory=memory, engine=engine, cpu_bf16=gpus == 0 and cpu_has_native_bf16(),
                 checkpointing=bool(getattr(cfg, "gradient_checkpointing", False)),
                 optimizer=str(getattr(cfg, "optimizer", "adamw")))


def alternatives(cfg: TrainConfig, base: Setup) -> list[tuple[str, Setup]]:
    """The single changes the verdict tries, in the order it suggests them."""
    out = []
    if not base.checkpointing:
        out.append(("gradient_checkpointing: true", dataclasses.replace(base, checkpointing=True)))
    if base.optimizer != "adamw_8bit" and cfg.lora is None:
        out.append(("optimizer: adamw_8bit (bitsandbytes)", dataclasses.replace(base, optimizer="adamw_8bit")))
    if base.gpus > 1 and base.engine != "auto" and cfg.teachers:
        out.append(("one process, teachers on the other GPU (teachers[].device: cuda:1)",
                    dataclasses.replace(base, engine="auto", teachers_on=1)))
    if base.gpus > 1:
        for engine, label in (("zero2", "DeepSpeed ZeRO-2 (configs/accelerate/zero2.yaml)"),
                              ("zero3", "DeepSpeed ZeRO-3 / FSDP (configs/accelerate/zero3.yaml, fsdp.yaml)")):
            if base.engine != engine:
                out.append((label, dataclasses.replace(base, engine=engine, teachers_on=None)))
    if cfg.lora is None:
        out.append(("LoRA on a bf16 base (lora: {r: 16}, student.dtype: bfloat16)", dataclasses.replace(base, lora_r=16)))
        out.append(("QLoRA (lora: {r: 16}, student.dtype: bfloat16, student.quantization: nf4)",
                    dataclasses.replace(base, lora_r=16, qlora=True)))
    return out


def verdict(cfg: TrainConfig, counts: dict[str, ModelCounts], base: Setup) -> tuple[Plan, str]:
    """The plan of ``base`` and a one-paragraph verdict: fits, or the changes that would make it fit."""
    plan = estimate(cfg, counts, base)
    worst = max(plan.devices, key=lambda d: d.total / d.capacity)
    where = "RAM" if base.gpus == 0 else f"{worst.name}"
    if plan.fits:
        return plan, f"fits: peak {_gib(worst.total)} of {_gib(worst.capacity)} on {where}."
    fixes, full = [], []
    for label, alt in alternatives(cfg, base):
        if alt.qlora and any(f.startswith("LoRA") for f in fixes):
            continue  # LoRA already fits: QLoRA would too
        p = estimate(cfg, counts, alt)
        if p.fits:
            fixes.append(f"{label} -> {_gib(max(d.total for d in p.devices))}")
            full += [label] if alt.lora_r is None else []
    if not full:  # no single change keeps full fine-tuning: checkpointing + 8-bit AdamW (+ one layout change)
        singles = [(label, alt) for label, alt in alternatives(cfg, base) if alt.lora_r is None]
        memory = [(label, alt) for label, alt in singles if alt.engine == base.engine and alt.teachers_on is None]
        layouts = [(label, alt) for label, alt in singles if (label, alt) not in memory]
        combined = dataclasses.replace(base, checkpointing=True, optimizer="adamw_8bit")
        labels = [label for label, _ in memory]
        for label, alt in [(None, None)] + layouts:
            trial = combined if alt is None else dataclasses.replace(combined, engine=alt.engine, teachers_on=alt.teachers_on)
            p = estimate(cfg, counts, trial)
            if p.fits and len(labels + ([label] if label else [])) > 1:
                fixes.append(" + ".join(labels + ([label] if label else [])) + f" -> {_gib(max(d.total for d in p.devices))}")
                break
    length = cfg.max_length
    while length > 64 and not estimate(cfg, counts, dataclasses.replace(base, max_length=length)).fits:
        length //= 2
    if length < cfg.max_length and estimate(cfg, counts, dataclasses.replace(base, max_length=length)).fits:
        fixes.append(f"max_length: {length} (now {cfg.max_length})")
    advice = ("; or ".join(fixes)) if fixes else "no single change found; use a smaller student or more GPUs"
    return plan, (f"does not fit: {worst.name} needs {_gib(worst.total)} of {_gib(worst.capacity)}. "
                  f"It would fit with: {advice}.")


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def render(cfg: TrainConfig, plan: Plan, message: str) -> str:
    """The printed plan: one table per device, the checkpointing alternative, notes and the verdict."""
    s = plan.setup
    head = (f"memory plan: {'CPU' if s.gpus == 0 else f'{s.gpus} GPU(s) x {_gib(s.memory)}'}, "
            f"{s.processes} process(es){'' if s.engine == 'auto' else f', {s.engine}'}, "
            f"batch {cfg.batch_size} x {s.max_length or cfg.max_length} tokens, precision {cfg.precision}")
    out = [head]
    for d in plan.devices:
        out.append(f"  {d.name}")
        out.extend(f"    {label:<72} {nbytes / GiB:>7.2f} GiB" for label, nbytes in d.lines)
        out.append(f"    {'total':<72} {d.total / GiB:>7.2f} GiB  (of {d.capacity / GiB:.1f})")
    other = "without" if s.checkpointing else "with"
    alt = plan.activations_full if s.checkpointing else plan.activations_checkpointed
    out.append(f"  activations {other} gradient checkpointing would be {alt / GiB:.2f} GiB")
    out.extend(f"  note: {n}" for n in plan.notes)
    out.append(message)
    return "\n".join(out)


def parse_size(text: str) -> int:
    """``24GiB``, ``24GB`` (10^9), ``80G`` (GiB), ``512MiB`` -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(GiB|GB|G|MiB|MB|M|TiB|TB)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise UserError(f"--gpu-mem '{text}': give a size like 24GiB, 80GB or 16G.")
    unit = (m.group(2) or "GiB").lower()
    scale = {"gib": GiB, "g": GiB, "gb": 10**9, "mib": 1 << 20, "m": 1 << 20, "mb": 10**6, "tib": 1 << 40, "tb": 10**12}
    return int(float(m.group(1)) * scale[unit])


def local_devices() -> tuple[int, int]:
    """(visible GPUs, memory of the smallest), or (0, total RAM) without a GPU."""
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n))
    import psutil

    return 0, psutil.virtual_memory().total


def run(cfg: TrainConfig, gpus: int | None = None, memory: str | None = None) -> str:
    """``distillm-edge train --plan``: print the plan and verdict; returns the text."""
    have, have_mem = local_devices()
    n = have if gpus is None else gpus
    mem = parse_size(memory) if memory else (have_mem if gpus is None or (n and have) else 24 * GiB)
    plan, message = verdict(cfg, model_counts(cfg), baseline_setup(cfg, n, mem))
    text = render(cfg, plan, message)
    print(text)
    return text


def refuse_if_unfit(cfg: TrainConfig, processes: int = 1) -> None:
    """Raise the planner's message as a UserError when the run cannot fit here (before any weights load).

    A model whose config cannot be read without loading it (e.g. a Hub id offline) is not planned: a
    warning says so and the run goes on to the loader, which reports the real problem.
    """
    import warnings

    gpus, mem = local_devices()
    base = baseline_setup(cfg, gpus, mem)
    if processes > 1:
        base = dataclasses.replace(base, engine="ddp", gpus=max(gpus, processes) if gpus else 0)
    try:
        counts = model_counts(cfg)
    except UserError as exc:
        warnings.warn(f"memory plan skipped: {exc}", stacklevel=2)
        return
    plan, message = verdict(cfg, counts, base)
    if not plan.fits:
        raise UserError(f"{message} (distillm-edge train --plan shows the breakdown)")
