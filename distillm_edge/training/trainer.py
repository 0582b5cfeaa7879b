"""`distillm-edge train`: the distillation recipe, read top to bottom — setup → train → finish → cleanup.

- ``setup``: run directory and resolved config, tokenizers (which teachers share the student's
  tokenizer; impossible combinations fail here, before any weights load), the prepared data
  (the built-in corpus through the data pipeline unless ``data:`` names a prepared dataset),
  teachers (frozen, eval mode), the student (cut from a model by layer selection, optionally
  LoRA/QLoRA through peft), hidden-state projections, learned vocabulary projections
  (``cross_tokenizer.method: projection`` only), AdamW + warmup/cosine LR, Accelerate (device
  placement, bf16 autocast, DDP under ``torchrun``/``accelerate launch``), the "before" held-out
  scores, and a checkpoint to resume from;
- ``train``: per optimizer step, ``grad_accum`` micro-batches (``step.py``; on a CPU run of one
  process several at once, one per thread: ``micro_batch_threads``); each runs the teachers
  under ``torch.inference_mode()`` and the student, and ``step.compute_loss`` mixes
  ``(1 - kd_weight) CE + kd_weight KD`` (+ hidden-state and attention terms, and the
  vocabulary projections' own cross-entropy, which trains only them), every term normalized by
  the counted tokens of the whole step over all processes. L2-SP adds its gradient once per
  step. A NaN/inf loss or gradient skips the step (counted); ``max_bad_steps`` in a row stop the
  run with a message. Checkpoints every ``save_every`` steps; Ctrl-C saves one and exits (a
  Ctrl-C during the optimizer update is held until the step is counted, so a resume never
  applies it twice); a resume that changes the loss settings needs ``--allow-config-change``;
- ``finish``: the student as a Hugging Face checkpoint (``model/``), the before/after held-out
  table (``report.md``, ``summary.json``), the loss-curve PNG, and any learned vocabulary
  projection as ``projection-<teacher>.safetensors`` (for inspection; not part of the model);
- ``cleanup``: close loggers.

Precision policy is in ``precision.py``, one step's math in ``step.py``, the before/after
evaluation and ``--probe-layers`` in ``evaluation.py``.

The run directory holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``tb/`` (TensorBoard),
``loss_curve.png``, ``checkpoints/step-*``, ``model/``, ``report.md`` and ``summary.json``.

Run: ``distillm-edge train`` (the ``tiny-cpu`` recipe). Test: ``pytest tests/training/test_trainer.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distillm_edge.config import ConfigError, save_yaml, to_dict
from distillm_edge.errors import UserError
from distillm_edge.io import atomic_write_json, ensure_dir, home
from distillm_edge.training import checkpoint as ckpt
from distillm_edge.training.batches import Example, encode_records, ensure_chat_template, micro_batches
from distillm_edge.training.config import TrainConfig
from distillm_edge.training.evaluation import evaluate_real, evaluate_run, probe  # noqa: F401  (probe: the CLI's --probe-layers)
from distillm_edge.training.precision import mixed_precision
from distillm_edge.training.report import RunLog, plot_losses
from distillm_edge.training.step import accumulate, compute_loss, step_batches, step_flops, temperature  # noqa: F401 (compute_loss: benchmarks)
from distillm_edge.training.teachers import Teacher, load_teacher_weights, open_teachers, pad_id

# Fields that change what a step computes or which data it sees: a resume must not change them.
# (epochs and max_steps may change: an epoch's order depends only on the seed and its index.)
RESUME_LOCKED = ("teachers", "student", "data", "max_length", "train_on_prompt", "curriculum", "max_train_examples",
                 "batch_size", "grad_accum", "seed", "lora", "hidden", "layer_map", "curriculum_replay", "fake_quant")
# Loss settings: a resume that changes them is refused unless --allow-config-change (then logged).
LOSS_SETTINGS = ("kd_weight", "divergence", "jsd_beta", "skew", "temperature", "teacher_weighting", "specialty_weights",
                 "cross_tokenizer", "attention", "l2_weight")


class TrainingStopped(UserError):
    """The run stopped on purpose (too many non-finite steps); a checkpoint was saved."""


@dataclass
class Run:
    """Everything ``setup`` builds and ``train``/``finish`` use."""

    cfg: TrainConfig
    run_dir: Path
    accelerator: object
    tokenizer: object
    student: torch.nn.Module  # as prepared by Accelerate (maybe DDP-wrapped)
    teachers: list[Teacher]
    projections: torch.nn.ModuleDict | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_examples: list[Example]
    valid_examples: list[Example]
    plan: list[list[int]]
    total_steps: int
    log: RunLog
    state: ckpt.TrainState = field(default_factory=ckpt.TrainState)
    before: dict | None = None  # held-out Scores of the student before training (main process), by name
    hidden_map: dict[int, int] = field(default_factory=dict)  # student hidden_states index -> teacher's
    attention_map: dict[int, int] = field(default_factory=dict)  # student block -> teacher block
    l2_reference: list[torch.Tensor] | None = None
    vocab_projections: torch.nn.ModuleDict | None = None  # teacher index -> TopKVocabProjection (method projection)
    specialty_counts: dict[str, int] = field(default_factory=dict)  # training examples per specialty
    setup_seconds: float = 0.0
    plan_stages: tuple[int, ...] | None = None  # staged curriculum: each micro-batch's stage
    fake_quant: object | None = None  # fakequant.FakeQuant handle (fake_quant config)
    student_autocast: object | None = None  # precision.AutocastWeights of the student's frozen Linears (bf16 runs)
    peak_flops: float | None = None  # matmul FLOP/s measured at start-up (CPU), in the dtype the step runs in
    flop_shapes: tuple | None = None  # (student ModelShape, {teacher index: ModelShape}, {index: same tokenizer})


def run(cfg: TrainConfig, *, resume: bool = False, allow_config_change: bool = False) -> Path:
    """Train according to ``cfg``; returns the run directory.

    ``allow_config_change``: a resume may change the loss settings (``LOSS_SETTINGS``); the change is logged.
    """
    r = setup(cfg, resume=resume, allow_config_change=allow_config_change)
    try:
        train(r)
        finish(r)
        r.log.say(f"[green]done:[/] {r.run_dir}  (student: {r.run_dir / 'model'})")
    finally:
        cleanup(r)
    return r.run_dir


# --------------------------------------------------------------------------- setup


def config_hash(cfg: TrainConfig) -> str:
    locked = {k: v for k, v in to_dict(cfg).items() if k in RESUME_LOCKED}
    return hashlib.sha256(json.dumps(locked, sort_keys=True).encode()).hexdigest()[:16]


def loss_settings(cfg: TrainConfig) -> dict:
    """The ``LOSS_SETTINGS`` of ``cfg`` as flat ``{dotted.key: value}`` (recorded in every checkpoint)."""
    def flat(prefix: str, value) -> dict:
        if isinstance(value, dict) and value:
            return {k: v for key, sub in value.items() for k, v in flat(f"{prefix}.{key}", sub).items()}
        return {prefix: list(value) if isinstance(value, tuple) else value}

    return {k: v for name, value in to_dict(cfg).items() if name in LOSS_SETTINGS for k, v in flat(name, value).items()}


def run_directory(cfg: TrainConfig, resume: bool, allow_config_change: bool = False) -> tuple[Path, dict]:
    """The run directory, checked against a resumed run's checkpoint; and the loss settings that changed."""
    run_dir = Path(cfg.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}").expanduser()
    changed: dict = {}
    if resume:
        saved = json.loads((ckpt.latest_checkpoint(run_dir) / "state.json").read_text(encoding="utf-8"))
        if saved.get("config_hash") != config_hash(cfg):
            raise ConfigError(f"--resume {run_dir}: the config differs from the run's in a field that changes the data or "
                              f"model ({', '.join(RESUME_LOCKED)}); resume without such overrides.")
        old, new = saved.get("loss_settings") or {}, loss_settings(cfg)
        changed = {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old and old.get(k) != new.get(k)}
        if changed and not allow_config_change:
            listed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            raise ConfigError(f"--resume {run_dir}: the loss settings differ from the run's ({listed}); the resumed steps "
                              "would optimize another objective. Drop those overrides, or pass --allow-config-change to "
                              "continue with them (the change is logged in metrics.jsonl).")
    elif ckpt.list_checkpoints(run_dir) or (run_dir / "model").exists():
        raise UserError(f"--out {run_dir}: a run is already there; continue it with --resume {run_dir}, or choose another --out.")
    return ensure_dir(run_dir), changed


def prepared_data(cfg: TrainConfig, tokenizer) -> Path:
    """``cfg.data``, or the built-in corpus prepared once into the cache (keyed by its contents)."""
    from distillm_edge.data import PrepareConfig, builtin_corpus_path
    from distillm_edge.data import run as prepare
    from distillm_edge.io import sha256_file

    if cfg.data:
        return Path(cfg.data).expanduser()
    prep = PrepareConfig(out="cache", overwrite=True, progress=False, tokenizer=cfg.student.model)
    options = json.dumps({k: v for k, v in to_dict(prep).items() if k != "out"}, sort_keys=True)
    key = hashlib.sha256((sha256_file(builtin_corpus_path()) + options).encode()).hexdigest()
    out = home() / "data" / f"builtin-{key[:12]}"
    if not (out / "dataset_dict.json").is_file():
        prepare(dataclasses.replace(prep, out=str(out)), tokenizer=tokenizer)
    return out


def load_examples(cfg: TrainConfig, tokenizer, teachers: list[Teacher], log: RunLog) -> tuple[list[Example], list[Example]]:
    from distillm_edge.data import load_prepared

    path = prepared_data(cfg, tokenizer)
    dataset = load_prepared(path)
    train_records = list(dataset["train"])[: cfg.max_train_examples]
    valid_records = list(dataset["valid"])[: cfg.eval_examples] if "valid" in dataset else []
    cross = {t.index: t.tokenizer for t in teachers if not t.same_tokenizer}
    train, dropped = encode_records(train_records, tokenizer, cross, cfg.max_length, train_on_prompt=cfg.train_on_prompt)
    valid, _ = encode_records(valid_records, tokenizer, cross, cfg.max_length, train_on_prompt=cfg.train_on_prompt)
    if not train:
        raise UserError(f"{path}: no training example has a response token within max_length={cfg.max_length}.")
    if cfg.eval_examples and not valid:
        log.say(f"[yellow]{path} has no usable held-out ('valid') examples: the before/after table is skipped.[/]")
    log.say(f"data: {path} — {len(train)} train examples ({dropped} dropped: no response token within max_length), "
            f"{len(valid)} held-out for evaluation")
    return train, valid


def text_config(model):
    """The config holding vocab_size/num_hidden_layers/hidden_size (``text_config`` of a multimodal Gemma-3)."""
    return model.config.get_text_config()


def build_student(cfg: TrainConfig, device, attn_implementation: str | None, reuse: dict):
    """The student model before LoRA/Accelerate: cut from ``student.model`` or loaded as is."""
    from distillm_edge.models import LoadOptions, load_model, select_layers
    from distillm_edge.models import build_student as cut

    sc = cfg.student
    if sc.layers is None:
        options = LoadOptions(dtype=sc.dtype, device=str(device), quantization=sc.quantization)
        student, _ = load_model(sc.model, options, progress=False)
    else:
        source = reuse.get(sc.model)
        if source is None:
            source, _ = load_model(sc.model, LoadOptions(dtype=sc.dtype, device="cpu"), progress=False)
        student = cut(source, select_layers(text_config(source).num_hidden_layers, sc.layers)).to(device)
    if attn_implementation and hasattr(student, "set_attn_implementation"):
        student.set_attn_implementation(attn_implementation)
    student.config.use_cache = False
    return student


def add_lora(cfg: TrainConfig, student):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.student.quantization != "none":
        student = prepare_model_for_kbit_training(student, use_gradient_checkpointing=False)
    lc = cfg.lora
    peft_cfg = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=list(lc.target_modules),
                          task_type="CAUSAL_LM")
    try:
        return get_peft_model(student, peft_cfg)
    except ValueError as exc:
        raise ConfigError(f"lora.target_modules {list(lc.target_modules)}: {exc}") from None


def layer_maps(cfg: TrainConfig, student, teachers: list[Teacher]) -> tuple[dict[int, int], dict[int, int]]:
    """(hidden_states index map, attention block map) for the alignment losses, validated."""
    from distillm_edge.models import layer_map

    if cfg.hidden.weight == 0 and cfg.attention.weight == 0:
        return {}, {}
    blocks = {int(k): int(v) for k, v in cfg.layer_map.items()} if cfg.layer_map else layer_map(student.config)
    if not blocks:
        raise ConfigError("layer_map: the student has no stored layer map (it was not cut from a teacher by "
                          "student.layers); give layer_map: {student_layer: teacher_layer, ...}.")
    n_student = text_config(student).num_hidden_layers

    def checked(section: str, teacher_index: int, pairs: dict[int, int]) -> dict[int, int]:
        t = teachers[teacher_index]
        n_teacher = text_config(t.model).num_hidden_layers
        for s, tl in pairs.items():
            if not (0 <= s < n_student and 0 <= tl < n_teacher):
                raise ConfigError(f"{section}: student layer {s} -> teacher layer {tl} is out of range (the student has "
                                  f"{n_student} layers, teacher {t.name} has {n_teacher}).")
        return pairs

    hidden, attention = {}, {}
    if cfg.hidden.weight > 0:
        pairs = checked("layer_map (hidden)", cfg.hidden.teacher, blocks)
        hidden = {s + 1: t + 1 for s, t in pairs.items()}  # hidden_states[0] is the embedding output
    if cfg.attention.weight > 0:
        missing = [s for s in cfg.attention.layers if s not in blocks]
        if missing:
            raise ConfigError(f"attention.layers {missing}: not in the layer map (student layers {sorted(blocks)}).")
        attention = checked("attention.layers", cfg.attention.teacher, {s: blocks[s] for s in cfg.attention.layers})
    return hidden, attention


def setup(cfg: TrainConfig, *, resume: bool = False, allow_config_change: bool = False) -> Run:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers.utils import logging as hf_logging

    from distillm_edge.models import load_tokenizer
    from distillm_edge.training.alignment import make_projections
    from distillm_edge.training.evaluation import evaluate_before
    from distillm_edge.training.plan import refuse_if_unfit
    from distillm_edge.training.precision import make_optimizer
    from distillm_edge.training.schedules import lr_lambda

    started = time.perf_counter()
    hf_logging.disable_progress_bar()  # our own bars and log lines only
    run_dir, changed = run_directory(cfg, resume, allow_config_change)
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg), cpu=not torch.cuda.is_available())
    log = RunLog(run_dir, cfg, enabled=accelerator.is_main_process)
    log.say(f"processes: {accelerator.num_processes} ({accelerator.distributed_type.value}), device {accelerator.device}, "
            f"mixed precision {accelerator.mixed_precision}")
    if changed:
        log.say("[yellow]--allow-config-change: resuming with other loss settings: "
                + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) + "[/]")
        log.event("config_change", {"changed": changed})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        save_yaml(cfg, run_dir / "config.yaml")

    # tokenizers first: every check that needs no weights runs before any model loads
    tokenizer = load_tokenizer(cfg.student.model, progress=False)
    ensure_chat_template(tokenizer)
    teachers = open_teachers(cfg, tokenizer, cache_dir=ensure_dir(home() / "cache"))
    for t in teachers:
        log.say(f"teacher {t.name}: weight {t.weight:.2f}, "
                + ("same tokenizer" if t.same_tokenizer else f"other tokenizer, {len(t.vocab_map[0]):,} shared tokens")
                + (f" ({t.tokenizer_note})" if t.tokenizer_note else ""))
    from distillm_edge.training.cached_teachers import check_coverage, open_caches

    open_caches(cfg, teachers, tokenizer, prepared_data(cfg, tokenizer), log)  # teachers[i].cache: no weights load
    refuse_if_unfit(cfg, processes=accelerator.num_processes)  # memory planner: what cannot fit stops before loading
    train_examples, valid_examples = load_examples(cfg, tokenizer, teachers, log)

    # models
    attn = "eager" if cfg.attention.weight > 0 else None
    load_teacher_weights(teachers, cfg, accelerator.device, eager_attention=cfg.attention.teacher if attn else None)
    # the student is cut from a teacher's weights when it names the same model (no second load)
    reuse = {tc.model: t.model for t, tc in zip(teachers, cfg.teachers, strict=True)
             if tc.quantization == "none" and tc.device is None and tc.device_map is None and tc.dtype == cfg.student.dtype}
    student = build_student(cfg, accelerator.device, attn, reuse)
    del reuse
    if accelerator.mixed_precision == "bf16":  # teachers' Linear weights cast once, not on every forward
        from distillm_edge.training.teachers import prepare_for_autocast

        added = prepare_for_autocast(teachers, torch.bfloat16)
        if added:
            log.say(f"teachers: bf16 copies of their Linear weights for autocast ({added / 2**20:.0f} MiB)")
    before = None  # the "before" column, measured now rather than from a copy of the student kept through training
    if valid_examples and accelerator.is_main_process:
        before = evaluate_before(student, teachers, valid_examples, pad_id(tokenizer), log)
    hidden_map, attention_map = layer_maps(cfg, student, teachers)
    if cfg.packing and attention_map and not teachers[cfg.attention.teacher].same_tokenizer:
        raise ConfigError(f"packing: true with attention alignment to teachers[{cfg.attention.teacher}], whose tokenizer "
                          "differs: its aligned attention maps are not compared on packed rows; set packing: false, or "
                          "align attention with a same-tokenizer teacher.")
    if cfg.lora is not None:
        student = add_lora(cfg, student)
    elif cfg.freeze_embeddings:
        student.get_input_embeddings().requires_grad_(False)
        student.get_output_embeddings().requires_grad_(False)
    fq = None
    if cfg.fake_quant is not None:  # before prepare and before a checkpoint loads (parametrized state-dict keys)
        from distillm_edge.training.fakequant import apply_fake_quant

        fqc = cfg.fake_quant
        fq = apply_fake_quant(student, group_size=fqc.group_size, symmetric=fqc.symmetric, include=fqc.include)
        log.say(f"fake quantization: {len(fq.layers)} linear layers (groups of {fqc.group_size}, "
                f"{'symmetric' if fqc.symmetric else 'asymmetric'}), bits on the schedule "
                + " -> ".join(f"{int(b)}@{f:g}" for f, b in fqc.schedule)
                + (f"; skipped {len(fq.skipped)} (in_features not a multiple of the group)" if fq.skipped else ""))
    student_autocast = None
    if accelerator.mixed_precision == "bf16":  # a frozen (tied) head or LoRA base: cast once, not per micro-batch
        from distillm_edge.training.precision import AutocastWeights

        student_autocast = AutocastWeights(student, torch.bfloat16, frozen_only=True)
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    projections = None
    if hidden_map:
        t_width = teachers[cfg.hidden.teacher].model.config.get_text_config().hidden_size
        projections = make_projections(hidden_map, text_config(student).hidden_size, t_width).to(accelerator.device)
    trainable = [p for p in student.parameters() if p.requires_grad]
    if projections is not None:
        trainable += list(projections.parameters())
    vocab_projections = make_vocab_projections(cfg, teachers, text_config(student).vocab_size, log)
    if vocab_projections is not None:
        vocab_projections.to(accelerator.device)
    n_train = sum(p.numel() for p in trainable)
    n_all = sum(p.numel() for p in student.parameters())
    log.say(f"student: {text_config(student).num_hidden_layers} layers"
            + (f" ({cfg.student.layers} of {cfg.student.model})" if cfg.student.layers else f" ({cfg.student.model})")
            + f", {n_all / 1e6:.1f}M parameters, {n_train / 1e6:.1f}M trainable")
    # L2-SP reference: off the accelerator (fp32 on the CPU), used once per optimizer step
    l2_reference = [p.detach().to("cpu", copy=True) for p in trainable] if cfg.l2_weight > 0 else None

    groups = [{"params": trainable}]  # group 0: the student (+ hidden projections): clipped together, L2-SP
    if vocab_projections is not None:  # group 1: trained by their own cross-entropy, clipped on their own
        groups.append({"params": list(vocab_projections.parameters())})
    optimizer = make_optimizer(cfg, groups)
    world = accelerator.num_processes
    plan_stages = None
    if cfg.curriculum and cfg.curriculum_replay is not None:  # staged sampling with replay over the whole run
        from distillm_edge.training.curriculum import curriculum_order, describe, micro_batches_of

        order = curriculum_order([e.difficulty for e in train_examples], seed=cfg.seed, epochs=cfg.epochs,
                                 replay=cfg.curriculum_replay)
        cplan = micro_batches_of(order, cfg.batch_size)
        plan, plan_stages = [list(b) for b in cplan.batches], cplan.stages
        log.say("curriculum: " + ", ".join(f"stage {d['stage']} {d['name']} {d['samples']} samples "
                                           f"({100 * d['replay_share']:.0f}% replayed)" for d in describe(order)))
    else:
        plan = micro_batches(train_examples, cfg.batch_size, seed=cfg.seed, curriculum=cfg.curriculum, epochs=cfg.epochs)
    if cfg.packing:  # each micro-batch becomes one row of consecutive examples (training/packing.py)
        from distillm_edge.training.packing import packed_plan

        n = len(train_examples)
        labels = plan_stages if plan_stages is not None else [k // n for k in range(len(plan))]  # stage, or epoch
        plan, stages = packed_plan(plan, labels, [len(e.student.ids) for e in train_examples], cfg.max_tokens_per_batch)
        plan_stages = stages if plan_stages is not None else None
        log.say(f"packing: {sum(map(len, plan)):,} examples in {len(plan):,} rows of <= {cfg.max_tokens_per_batch} tokens "
                f"({sum(map(len, plan)) / len(plan):.1f} examples per row)")
    total_steps = len(plan) // (cfg.grad_accum * world)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    if total_steps < 1:
        raise UserError(f"{len(train_examples)} training examples make {len(plan)} micro-batches: too few for one step of "
                        f"grad_accum={cfg.grad_accum} x {world} processes; raise epochs or lower grad_accum.")
    decay = "constant" if cfg.min_lr_ratio == 1.0 else "cosine"
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(warmup_steps=cfg.warmup_steps, total_steps=total_steps, decay=decay, min_ratio=cfg.min_lr_ratio))
    # the projections stay out of prepare (a DDP-wrapped ModuleDict cannot be indexed): train syncs their gradients
    student, optimizer = accelerator.prepare(student, optimizer)

    r = Run(cfg, run_dir, accelerator, tokenizer, student, teachers, projections, optimizer, scheduler,
            train_examples, valid_examples, plan, total_steps, log, before=before,
            hidden_map=hidden_map, attention_map=attention_map, l2_reference=l2_reference,
            vocab_projections=vocab_projections, plan_stages=plan_stages, fake_quant=fq,
            student_autocast=student_autocast if student_autocast and student_autocast.pairs else None)
    if cfg.specialty_weights is not None:
        counts: dict[str, int] = {}
        for e in train_examples:
            counts[e.specialty] = counts.get(e.specialty, 0) + 1
        r.specialty_counts = counts
    r.state.config_hash, r.state.loss_settings = config_hash(cfg), loss_settings(cfg)
    if resume:
        path = ckpt.latest_checkpoint(run_dir)
        r.state = state = ckpt.load_checkpoint(path, modules(r), optimizer, scheduler)
        state.loss_settings = loss_settings(cfg)  # later checkpoints record the settings they were trained with
        log.say(f"resumed from {path} (step {state.step}, micro-batch {state.micro})")
    check_coverage(r)  # the records the plan uses are in every teacher cache
    r.peak_flops, r.flop_shapes = measure_mfu_peak(r)
    from distillm_edge.training.step import micro_batch_threads

    if (workers := micro_batch_threads(r, cfg.grad_accum)) > 1:
        log.say(f"micro-batches: {workers} at once, one per thread ({max(1, torch.get_num_threads() // workers)} "
                "intra-op thread each; micro_batch_threads: 1 runs them one after another)")
    r.setup_seconds = time.perf_counter() - started
    return r


def measure_mfu_peak(r: Run) -> tuple[float | None, tuple | None]:
    """The matmul peak (FLOP/s, in the step's dtype, with the training threads, or on the training GPU)
    and the models' shapes for the per-step MFU; (None, None) for a model whose config has no Llama-style
    shape, or on a device other than the CPU and CUDA."""
    from distillm_edge.training.mfu import ModelShape, measure_peak, peak_size

    device = r.accelerator.device
    if device.type not in ("cpu", "cuda"):
        return None, None
    try:
        student = ModelShape.from_config(text_config(r.accelerator.unwrap_model(r.student)))
        teachers = {t.index: ModelShape.from_config(text_config(t.model)) for t in r.teachers if t.model is not None}
    except (AttributeError, TypeError):
        return None, None
    bf16 = r.accelerator.mixed_precision == "bf16"
    peak = measure_peak(torch.bfloat16 if bf16 else torch.float32, repeats=3, device=device)
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    r.log.say(f"MFU peak: {peak / 1e9:,.0f} GFLOP/s ({'bf16' if bf16 else 'fp32'} {peak_size(device)}^3 matmul, "
              f"{where}, measured now)")
    return peak, (student, teachers, {t.index: t.same_tokenizer for t in r.teachers})


def modules(r: Run) -> dict[str, torch.nn.Module]:
    """The modules whose trainable tensors a checkpoint holds (unwrapped from DDP)."""
    out = {"student": r.accelerator.unwrap_model(r.student)}
    if r.projections is not None:
        out["projections"] = r.projections
    if r.vocab_projections is not None:
        out["vocab_projections"] = r.vocab_projections
    return out


def make_vocab_projections(cfg: TrainConfig, teachers: list[Teacher], student_vocab: int,
                           log: RunLog) -> torch.nn.ModuleDict | None:
    """``cross_tokenizer.method: projection``: one learned teacher->student vocabulary projection per
    teacher with another tokenizer, keyed by teacher index; None with the default shared_vocab method.

    Like the hidden-state projections they stay out of ``accelerator.prepare`` (a DDP-wrapped
    ModuleDict cannot be indexed); ``train`` averages their gradients over processes itself.
    """
    from distillm_edge.training.cross_tokenizer import make_vocab_projection

    ct = cfg.cross_tokenizer
    if ct.method != "projection":
        return None
    cross = [t for t in teachers if not t.same_tokenizer]
    if not cross:
        log.say("[yellow]cross_tokenizer.method: projection has no effect: every teacher shares the student's tokenizer.[/]")
        return None
    out = torch.nn.ModuleDict()
    for t in cross:
        t_vocab = t.model.config.get_text_config().vocab_size
        proj = make_vocab_projection(t_vocab, student_vocab, rank=ct.projection_rank, top_k=ct.projection_top_k)
        out[str(t.index)] = proj
        log.say(f"teacher {t.name}: learned vocabulary projection {t_vocab:,} -> {student_vocab:,} "
                f"(top-{proj.top_k}, rank {ct.projection_rank}, {sum(p.numel() for p in proj.parameters()) / 1e6:.1f}M "
                "parameters), for comparison with the shared-vocabulary KL")
    return out


# --------------------------------------------------------------------------- train


def train(r: Run) -> None:
    from distillm_edge.training.alignment import l2_sp_gradient_

    cfg, acc, state = r.cfg, r.accelerator, r.state
    world, rank = acc.num_processes, acc.process_index
    pads = {t.index: t.pad_id for t in r.teachers if not t.same_tokenizer}
    student_pad = pad_id(r.tokenizer)
    params = r.optimizer.param_groups[0]["params"]  # the student (+ hidden projections)
    vocab_params = [p for group in r.optimizer.param_groups[1:] for p in group["params"]]  # vocabulary projections
    unwrapped = vocab_params + ([] if r.projections is None else list(r.projections.parameters()))  # not DDP-synced
    r.student.train()
    r.log.start(r.total_steps, state.step)
    started, base_elapsed = time.perf_counter(), state.elapsed
    rng = None
    try:
        while state.step < r.total_steps:
            step_start = time.perf_counter()
            rng = ckpt.rng_state()  # an interrupted step restarts from here
            tau = temperature(cfg, state.step, r.total_steps)
            batches = step_batches(r, state.micro, world, rank, pads, student_pad)
            flops = step_flops(batches, *r.flop_shapes) if r.flop_shapes else None
            extra = {}
            if r.plan_stages is not None:
                extra["stage"] = r.plan_stages[min(state.micro, len(r.plan_stages) - 1)]
            if r.fake_quant is not None:
                from distillm_edge.training.fakequant import bits_at

                extra["bits"] = bits_at(state.step, r.total_steps, cfg.fake_quant.schedule)
                r.fake_quant.set_bits(extra["bits"])
            sums, tokens, seen = accumulate(r, batches, tau)
            if world > 1:  # modules outside DDP: average their gradients here; losses: sum the processes' shares
                for p in unwrapped:
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad.div_(world)
                keys = sorted(sums)
                total = acc.reduce(torch.tensor([sums[k] for k in keys], device=acc.device), reduction="sum")
                sums = dict(zip(keys, total.tolist(), strict=True))
            if r.l2_reference is not None:  # L2-SP: its gradient 2 w (p - p0), once per step, no graph
                sums["l2"] = l2_sp_gradient_(params, r.l2_reference, cfg.l2_weight)
                sums["loss"] += cfg.l2_weight * sums["l2"]
            grad_norm = float(acc.clip_grad_norm_(params, cfg.max_grad_norm))
            vocab_norm = 0.0  # vocabulary projections: clipped on their own, their CE must not shrink the student's step
            if vocab_params:
                vocab_norm = float(torch.nn.utils.clip_grad_norm_(vocab_params, cfg.max_grad_norm))
            finite = math.isfinite(sums["loss"]) and math.isfinite(grad_norm) and math.isfinite(vocab_norm)
            with ckpt.interrupts_deferred():  # a Ctrl-C in here lands once the step is counted: never applied twice
                if finite:
                    r.optimizer.step()
                    state.bad_in_row = 0
                else:
                    state.bad_steps += 1
                    state.bad_in_row += 1
                r.optimizer.zero_grad(set_to_none=True)
                with warnings.catch_warnings():  # a skipped step advances the schedule without an optimizer step
                    warnings.simplefilter("ignore", UserWarning)
                    r.scheduler.step()
                state.step += 1
                state.micro += cfg.grad_accum * world
                state.tokens += tokens * world
                rng = None  # from here a checkpoint records the current RNG state: the next step starts there
                dt = time.perf_counter() - step_start
                state.elapsed = base_elapsed + time.perf_counter() - started
                r.log.step(state, sums, tau=tau, lr=r.scheduler.get_last_lr()[0], grad_norm=grad_norm,
                           tokens_per_s=seen * world / dt, skipped=not finite,
                           mfu=flops / dt / r.peak_flops if flops and r.peak_flops else None, extra=extra)
            if not finite and state.bad_in_row >= cfg.max_bad_steps:
                path = save(r)
                bad = ", ".join(f"{k}={v:.4g}" for k, v in sums.items())
                raise TrainingStopped(
                    f"stopped at step {state.step}: {state.bad_in_row} steps in a row had a non-finite loss or gradient "
                    f"(last: {bad}; grad_norm={grad_norm:.4g}). No update was applied from those steps; the weights "
                    f"are saved in {path}. Lower lr (now {cfg.lr:g}) or max_grad_norm, check the data, or raise "
                    f"max_bad_steps, then continue with --resume {r.run_dir}."
                )
            if cfg.save_every and state.step % cfg.save_every == 0 and state.step < r.total_steps:
                save(r)
    except KeyboardInterrupt:
        r.optimizer.zero_grad(set_to_none=True)  # drop the half-accumulated step; its data is seen again on resume
        path = save(r, rng)
        r.log.say(f"[yellow]interrupted: checkpoint saved in {path}; continue with distillm-edge train --resume {r.run_dir}[/]")
        raise
    finally:
        r.log.stop()
    save(r)
    r.log.say(f"trained {state.step} steps, {state.tokens:,} target tokens, in {state.elapsed / 60:.1f} min"
              + (f"; {state.bad_steps} non-finite steps skipped" if state.bad_steps else ""))


def save(r: Run, rng: dict | None = None) -> Path:
    """A checkpoint of the current step (main process writes; ``rng``: states to record instead of the current)."""
    path = r.run_dir / ckpt.CHECKPOINTS / f"step-{r.state.step:06d}"
    if r.accelerator.is_main_process:
        path = ckpt.save_checkpoint(r.run_dir, r.state, modules(r), r.optimizer, r.scheduler, r.cfg.keep_checkpoints, rng)
    return path


# --------------------------------------------------------------------------- finish


def finish(r: Run) -> None:
    """Save the student, then evaluate before vs after on held-out data; write the report and plots."""
    acc = r.accelerator
    acc.wait_for_everyone()
    if acc.is_main_process:
        finish_main(r)
    acc.wait_for_everyone()  # other processes wait until the model and report are written


def finish_main(r: Run) -> None:
    student = r.accelerator.unwrap_model(r.student).eval()
    if r.fake_quant is not None:  # the saved model holds the float master weights; the exporters quantize them
        r.fake_quant.remove()
    base_loader = None
    if r.cfg.lora is not None and r.cfg.student.quantization != "none":
        def base_loader():  # QLoRA: merge the adapters into an unquantized copy of the base
            from distillm_edge.models import LoadOptions, load_model

            return load_model(r.cfg.student.model, LoadOptions(dtype=r.cfg.student.dtype), progress=False)[0]
    out = ckpt.save_student(student, r.tokenizer, r.run_dir / "model", lora=r.cfg.lora is not None, base_loader=base_loader)
    r.log.say(f"student saved: {out}")
    for path in save_vocab_projections(r):
        r.log.say(f"vocabulary projection saved: {path}")
    plot_losses(r.run_dir / "metrics.jsonl", r.run_dir / "loss_curve.png")
    summ = evaluate_run(r, student) if r.valid_examples else None
    real = evaluate_real(r, student)
    result = {"run_dir": str(r.run_dir), "model": str(out), "steps": r.state.step, "target_tokens": r.state.tokens,
              "train_seconds": r.state.elapsed, "setup_seconds": r.setup_seconds, "bad_steps": r.state.bad_steps,
              "evaluation": summ, "generalization": real}
    atomic_write_json(r.run_dir / "summary.json", result)


def save_vocab_projections(r: Run) -> list[Path]:
    """Each learned vocabulary projection as ``projection-<teacher>.safetensors`` in the run directory."""
    from safetensors.torch import save_file

    from distillm_edge.io import atomic_path

    if r.vocab_projections is None:
        return []
    paths = []
    for t in r.teachers:
        if str(t.index) not in r.vocab_projections:
            continue
        proj = r.vocab_projections[str(t.index)]
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in proj.state_dict().items()}
        meta = {"teacher": t.spec, "student": r.cfg.student.model, "top_k": str(proj.top_k),
                "rank": str(proj.up.in_features), "step": str(r.state.step)}
        path = r.run_dir / f"projection-{t.name}.safetensors"
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        paths.append(path)
    return paths


def cleanup(r: Run) -> None:
    r.log.close()
    r.before = None
    for t in r.teachers:
        t.model = None
