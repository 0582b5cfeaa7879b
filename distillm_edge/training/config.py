"""The one config of ``distillm-edge train``: a frozen dataclass, validated before any model loads.

A run's config comes from a recipe (``training/recipes/<name>.yaml``) or ``--config FILE``, then
``key=value`` overrides (``max_steps=20``, ``student.layers=even:10``, ``lora.r=8``), through the
strict loader in ``distillm_edge.config``: an unknown key is an error that suggests the closest
valid key. :meth:`TrainConfig.__post_init__` then names impossible combinations (QLoRA without
LoRA, attention alignment with a cross-tokenizer teacher, ``kd_weight`` outside [0, 1], ...).
A teacher with another tokenizer teaches through the shared vocabulary (+ ULD) by default;
``cross_tokenizer.method: projection`` selects the research's learned vocabulary projection
instead, for comparison (see :class:`CrossTokenizerConfig`).
Whether a teacher shares the student's tokenizer is only known once tokenizers load; that check
runs in ``trainer.setup`` right after, still before any weights load.

Defaults are the ``tiny-cpu`` recipe: two embedded teachers (SmolLM2-135M, same tokenizer;
Gemma-3 270M, another tokenizer) teaching a 15-layer student cut from SmolLM2 (first 5 + last 10
layers), on the built-in corpus, in ~15 minutes on 2 shared CPU cores.

Test: ``pytest tests/training/test_recipes.py tests/training/test_trainer.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distillm_edge.config import ConfigError, deep_merge, from_mapping, load_yaml
from distillm_edge.data.records import SPECIALTIES

RECIPES_DIR = Path(__file__).parent / "recipes"
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")


@dataclass(frozen=True)
class TeacherConfig:
    """One frozen teacher: a model spec and its share of the distillation loss."""

    model: str
    weight: float = 1.0  # static weight; all teachers' weights are normalized to sum to 1
    dtype: str = "float32"
    quantization: Literal["none", "nf4", "int8"] = "none"  # research teachers: nf4
    device: str | None = None  # None: the training device; e.g. cuda:1 to keep a teacher off the student's GPU
    device_map: str | None = None  # "auto": spread one big teacher over the visible GPUs
    cache: str | None = None  # a `distillm-edge teachers cache` folder: read its top-k log-probs, load no weights

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("teachers[].model: give a model spec (embedded name, directory, .gguf or Hub id).")
        if self.weight < 0:
            raise ConfigError(f"teachers[].weight {self.weight}: must be >= 0.")
        if self.device and self.device_map:
            raise ConfigError(f"teacher {self.model}: set device or device_map, not both.")


@dataclass(frozen=True)
class StudentConfig:
    """Where the student comes from: a model, optionally cut down to some of its layers."""

    model: str = "smollm2-135m-instruct"
    layers: str | None = "first-last:5,10"  # even:K | first-last:A,B | 0,1,29 | null (train the model as is)
    dtype: str = "float32"  # stored weights; full fine-tuning needs float32 (master weights; bf16 via precision: bf16)
    quantization: Literal["none", "nf4"] = "none"  # nf4 = QLoRA base (needs lora)


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters through peft; the base weights stay frozen."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r {self.r}: must be >= 1.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout {self.dropout}: must be in [0, 1).")
        if not self.target_modules:
            raise ConfigError("lora.target_modules: name at least one module (e.g. q_proj, v_proj).")


@dataclass(frozen=True)
class TemperatureConfig:
    """Distillation temperature τ(step): progressive τ0·exp(−γ·step) floored, linear, or constant."""

    schedule: Literal["progressive", "linear", "constant"] = "progressive"
    initial: float = 8.0
    floor: float = 1.0  # progressive: the floor; linear: the final value
    steps: int | None = None  # steps to go from initial to floor (null: the whole run)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.floor <= 0:
            raise ConfigError(f"temperature: initial ({self.initial}) and floor ({self.floor}) must be > 0.")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"temperature.steps {self.steps}: must be >= 1 (or null for the whole run).")


@dataclass(frozen=True)
class HiddenConfig:
    """Hidden-state MSE to one teacher through a learned projection (when widths differ)."""

    weight: float = 0.0  # 0 disables it
    teacher: int = 0  # index into teachers

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"hidden.weight {self.weight}: must be >= 0.")


@dataclass(frozen=True)
class AttentionConfig:
    """Attention-map MSE to one teacher on a few student layers (eager attention; aligned positions only
    for a teacher with another tokenizer)."""

    weight: float = 0.0
    teacher: int = 0
    layers: tuple[int, ...] = ()  # student layers; their teacher layers come from layer_map
    heads: Literal["mean", "per_head"] = "mean"  # mean: compare head-averaged maps; per_head: head i to head i

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"attention.weight {self.weight}: must be >= 0.")
        if self.weight > 0 and not self.layers:
            raise ConfigError("attention.layers: list the student layers to align (e.g. [0, 7, 14]) or set attention.weight: 0.")


@dataclass(frozen=True)
class CrossTokenizerConfig:
    """How a teacher with another tokenizer teaches (``method``):

    - ``shared_vocab`` (the default): KL on the shared vocabulary, plus ULD when ``uld_weight > 0``;
    - ``projection`` (the research's option, for comparison): the teacher's top-``projection_top_k``
      probabilities are projected into the student vocabulary by a learned rank-``projection_rank``
      MLP, trained jointly by cross-entropy on the student's next tokens; the student is distilled
      towards the projected distribution. ULD does not apply (``uld_weight`` must be 0).
    """

    method: Literal["shared_vocab", "projection"] = "shared_vocab"
    uld_weight: float = 0.0  # weight of the ULD term next to shared-vocab KL (0: the teacher is projected onto the
    # shared vocabulary only, 5-6x cheaper for Gemma; > 0 needs its full softmax and a sort per aligned token)
    min_shared: int = 1000  # fewer shared tokens than this is an error (tokenizers too different)
    projection_rank: int = 256  # method projection: bottleneck width of the learned projection
    projection_top_k: int = 64  # method projection: teacher probabilities projected per aligned token

    def __post_init__(self) -> None:
        if not 0.0 <= self.uld_weight <= 1.0:
            raise ConfigError(f"cross_tokenizer.uld_weight {self.uld_weight}: must be in [0, 1].")
        for name in ("projection_rank", "projection_top_k"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"cross_tokenizer.{name} {value}: must be >= 1 (defaults: projection_rank 256, "
                                  "projection_top_k 64).")
        if self.method == "projection" and self.uld_weight > 0:
            raise ConfigError(f"cross_tokenizer: method projection with uld_weight {self.uld_weight} is not possible: ULD "
                              "belongs to the shared_vocab method. Set cross_tokenizer.uld_weight: 0 to use the learned "
                              "projection, or method: shared_vocab to keep ULD.")

    @property
    def shared_only(self) -> bool:
        """True when a teacher's logits are needed on the shared vocabulary only (shared_vocab, no ULD)."""
        return self.method == "shared_vocab" and self.uld_weight == 0


@dataclass(frozen=True)
class FakeQuantConfig:
    """Progressive quantization-aware training (``fakequant.py``): the student's block linears fake-quantized
    in groups along the input, the bit-width falling on ``schedule`` [[fraction of the run, bits], ...]."""

    schedule: tuple[tuple[float, int], ...] = ((0.0, 16), (0.33, 8), (0.66, 4))
    group_size: int = 32
    symmetric: bool = False
    include: str = r"layers\.\d+\.(self_attn|mlp)\.\w+_proj$"

    def __post_init__(self) -> None:
        from distillm_edge.errors import UserError
        from distillm_edge.training.fakequant import check_schedule

        if self.group_size < 1:
            raise ConfigError(f"fake_quant.group_size {self.group_size}: must be >= 1 (32 matches Q4_K_M and int4).")
        try:
            check_schedule(self.schedule)
        except UserError as exc:
            raise ConfigError(f"fake_quant.schedule: {exc}") from None


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``distillm-edge train`` needs; see ``recipes/tiny-cpu.yaml`` for a commented example."""

    description: str = ""
    teachers: tuple[TeacherConfig, ...] = (
        TeacherConfig("smollm2-135m-instruct", weight=0.6),
        TeacherConfig("gemma-3-270m", weight=0.4),
    )
    student: StudentConfig = field(default_factory=StudentConfig)
    # data
    data: str | None = None  # a prepared dataset (data prepare --out); null: the built-in corpus, prepared into the cache
    max_length: int = 256
    train_on_prompt: bool = False  # False: only response tokens count (prompt masking)
    curriculum: bool = False  # order each epoch by difficulty stage 1 -> 4
    curriculum_replay: float | None = None  # with curriculum: staged sampling over the whole run (stage 1's examples
    # for all epochs, then stage 2's, ...), this share of each phase replayed from earlier stages (curriculum.py)
    max_train_examples: int | None = None
    eval_examples: int = 27  # held-out examples for the before/after table (0 skips it)
    real_eval: str | None = None  # JSON/JSONL {instruction, input, output|response} records never trained on: student and
    # teacher perplexity on the last real_eval_examples of them after training (a relative path that is not found from the
    # working directory is tried from the repository's parent, so ../shared/data works from anywhere; absent: skipped)
    real_eval_examples: int = 100
    # optimization
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; null: run all epochs (tiny-cpu sets its CPU budget)
    batch_size: int = 1
    grad_accum: int = 8
    packing: bool = False  # micro-batches are packed rows of consecutive examples up to max_tokens_per_batch tokens
    # (attention never crosses an example; no padding; batch_size is then unused): training/packing.py
    max_tokens_per_batch: int = 1024
    lr: float = 5e-4
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio after warmup (1.0 = constant)
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    freeze_embeddings: bool = True  # keep the (tied) embedding/head frozen: fewer trainable params, faster on CPU
    # distillation
    kd_weight: float = 0.5  # L = (1 - kd_weight) * CE + kd_weight * KD
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"] = "forward_kl"
    jsd_beta: float = 0.5
    skew: float = 0.1
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    teacher_weighting: Literal["static", "confidence"] = "static"  # confidence: per-token, lower teacher entropy weighs more
    specialty_weights: dict[str, float] | str | None = None  # {cardiology: 1.2, ...} | inverse_frequency
    cross_tokenizer: CrossTokenizerConfig = field(default_factory=CrossTokenizerConfig)
    layer_map: dict[str, int] | None = None  # {student_layer: teacher_layer} for hidden/attention; null: the student's stored map
    hidden: HiddenConfig = field(default_factory=HiddenConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    l2_weight: float = 0.0  # L2 penalty on the trainable weights' drift from their initial values (L2-SP)
    lora: LoraConfig | None = None
    fake_quant: FakeQuantConfig | None = None  # progressive quantization-aware training (null: off)
    # running
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast where bf16 is native (GPU; AVX512-BF16/AMX CPU), else fp32
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"  # adamw_8bit: bitsandbytes' 8-bit states (GPU)
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    # CPU, one process: a step's micro-batches run in this many threads at once, each with its share of the torch
    # threads (0: auto, 2 when there are >= 2 torch threads; 1: one after another). Same losses: training/step.py
    micro_batch_threads: int = 0
    out: str | None = None  # run directory; null: runs/train-<timestamp>
    save_every: int = 10  # optimizer steps between checkpoints (0: only at the end)
    log_every: int = 1
    keep_checkpoints: int = 2
    max_bad_steps: int = 5  # consecutive NaN/inf losses that stop the run
    progress: bool = True  # rich progress bar (else one fixed-width line per logging step)
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "distillm-edge"
    deepspeed: str | None = None  # arrives with the scale-out work; any value is an error for now

    def __post_init__(self) -> None:
        if not self.teachers and self.kd_weight > 0:
            raise ConfigError("teachers: empty, but kd_weight > 0; add a teacher or set kd_weight: 0 (plain fine-tuning).")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ConfigError(f"kd_weight {self.kd_weight}: must be in [0, 1] (L = (1 - kd_weight) CE + kd_weight KD).")
        if self.teachers and sum(t.weight for t in self.teachers) <= 0:
            raise ConfigError("teachers[].weight: at least one teacher needs a positive weight.")
        positive = {"max_length": self.max_length, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "epochs": self.epochs, "max_bad_steps": self.max_bad_steps, "log_every": self.log_every,
                    "keep_checkpoints": self.keep_checkpoints}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} {value}: must be >= 1.")
        if self.max_length < 16:
            raise ConfigError(f"max_length {self.max_length}: use at least 16 tokens.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps {self.max_steps}: must be >= 1 (or null to run all epochs).")
        if self.lr <= 0:
            raise ConfigError(f"lr {self.lr}: must be > 0.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio {self.min_lr_ratio}: must be in [0, 1].")
        if (self.warmup_steps < 0 or self.save_every < 0 or self.eval_examples < 0 or self.threads < 0
                or self.real_eval_examples < 0 or self.micro_batch_threads < 0):
            raise ConfigError("warmup_steps, save_every, eval_examples, real_eval_examples, threads and "
                              "micro_batch_threads must be >= 0.")
        if self.divergence == "jsd" and not 0.0 <= self.jsd_beta <= 1.0:
            raise ConfigError(f"jsd_beta {self.jsd_beta}: must be in [0, 1].")
        if self.divergence.startswith("skew") and not 0.0 <= self.skew <= 1.0:
            raise ConfigError(f"skew {self.skew}: must be in [0, 1].")
        self._check_specialty_weights()
        if self.curriculum_replay is not None:
            if not self.curriculum:
                raise ConfigError("curriculum_replay is set but curriculum is false; set curriculum: true (staged "
                                  "sampling) or curriculum_replay: null.")
            if not 0.0 <= self.curriculum_replay < 1.0:
                raise ConfigError(f"curriculum_replay {self.curriculum_replay}: must be in [0, 1) (e.g. 0.2).")
        if self.packing:
            if self.max_tokens_per_batch < self.max_length:
                raise ConfigError(f"max_tokens_per_batch {self.max_tokens_per_batch}: with packing: true a micro-batch must "
                                  f"hold at least one example of max_length {self.max_length}; raise it (e.g. "
                                  f"{4 * self.max_length}) or set packing: false.")
            if self.batch_size != 1:
                raise ConfigError(f"batch_size {self.batch_size} with packing: true: a packed micro-batch holds as many "
                                  "examples as fit in max_tokens_per_batch; set batch_size: 1 (or packing: false).")
        if self.fake_quant is not None and self.lora is not None:
            raise ConfigError("fake_quant with lora: fake quantization trains the student's own linear weights; "
                              "use one or the other (fake_quant: null, or remove the lora section).")
        for name, section in (("hidden", self.hidden), ("attention", self.attention)):
            if section.weight > 0 and not 0 <= section.teacher < len(self.teachers):
                raise ConfigError(f"{name}.teacher {section.teacher}: there are {len(self.teachers)} teachers (index from 0).")
        if self.l2_weight < 0:
            raise ConfigError(f"l2_weight {self.l2_weight}: must be >= 0.")
        if self.student.quantization == "nf4" and self.lora is None:
            raise ConfigError("student.quantization: nf4 is QLoRA and needs adapters; add a lora: {r: 16, ...} section.")
        if self.student.layers is not None and self.student.quantization != "none":
            raise ConfigError("student.layers with student.quantization: cut the layers first (a run without "
                              "quantization), then QLoRA the saved student with student.layers: null.")
        self._check_precision()
        if self.teacher_weighting == "confidence" and len(self.teachers) < 2:
            raise ConfigError("teacher_weighting: confidence needs at least two teachers (use static).")
        if self.deepspeed is not None:
            raise ConfigError(
                f"deepspeed: '{self.deepspeed}' — DeepSpeed/ZeRO sharding is not implemented yet (it comes with the "
                "scale-out work). Remove the key; data-parallel runs work with "
                "`accelerate launch --multi_gpu --num_processes N $(which distillm-edge) train ...`."
            )

    def _check_precision(self) -> None:
        if self.student.dtype in ("bfloat16", "bf16", "float16", "fp16") and self.lora is None:
            raise ConfigError(
                f"student.dtype: {self.student.dtype} trains {self.student.dtype} weights directly: updates smaller than "
                "the weights' rounding step vanish (at lr 1e-6 nothing moves). Use student.dtype: float32 with precision: "
                "bf16 (fp32 master weights under bf16 autocast), or LoRA (a frozen bf16 base with fp32 adapters).")
        if self.precision == "fp16":
            raise ConfigError("precision: fp16 is not supported (it needs loss scaling that skips steps); use precision: "
                              "bf16 (any Ampere or newer GPU) or fp32.")

    def _check_specialty_weights(self) -> None:
        sw = self.specialty_weights
        if sw is None:
            return
        if isinstance(sw, str):
            if sw != "inverse_frequency":
                raise ConfigError(f"specialty_weights '{sw}': use a mapping {{cardiology: 1.2, ...}} or inverse_frequency.")
            return
        for name, weight in sw.items():
            if name not in SPECIALTIES:
                import difflib

                close = difflib.get_close_matches(name, SPECIALTIES, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else f" Known: {', '.join(SPECIALTIES)}."
                raise ConfigError(f"specialty_weights.{name}: not a specialty.{hint}")
            if weight < 0:
                raise ConfigError(f"specialty_weights.{name} {weight}: must be >= 0.")

    @property
    def total_teacher_weight(self) -> float:
        return sum(t.weight for t in self.teachers)


def list_recipes() -> list[tuple[str, str]]:
    """(name, one-line description) of every shipped recipe, sorted by name."""
    out = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        out.append((path.stem, str(load_yaml(path).get("description", "")).strip()))
    return out


def recipe_path(name: str) -> Path:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        import difflib

        names = [p.stem for p in RECIPES_DIR.glob("*.yaml")]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"recipe '{name}' does not exist.{hint} Shipped recipes: {', '.join(sorted(names))} "
                          "(distillm-edge train --list-recipes).")
    return path


def resolve_config(recipe: str | None = None, config_file: str | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Recipe (default ``tiny-cpu`` unless a config file is given), then the file, then overrides."""
    data: dict[str, Any] = {}
    where = []
    if recipe or not config_file:
        name = recipe or "tiny-cpu"
        data = load_yaml(recipe_path(name))
        where.append(f"recipe {name}")
    if config_file:
        data = deep_merge(data, load_yaml(config_file))
        where.append(str(config_file))
    if overrides:
        data = deep_merge(data, overrides)
        where.append("overrides")
    if "stages" in data:
        raise ConfigError(f"{' + '.join(where)} declares stages (staged distillation): run it with distillm-edge train "
                          "--recipe/--config as usual (training/staged.py), not as a single run.")
    return from_mapping(TrainConfig, data, where=" + ".join(where))


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of ``cfg`` with some fields changed (validated again)."""
    return dataclasses.replace(cfg, **changes)
