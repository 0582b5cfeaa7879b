"""Frozen teachers: loading, tokenizer comparison, and one forward pass per batch.

A teacher shares the student's tokenizer (same vocabulary: logits compared position by
position) or not (another tokenizer: its own tokenization of the same chat, positions aligned by
character offsets, logits compared on the shared vocabulary; see ``cross_tokenizer.py``).
:func:`open_teachers` decides that from the tokenizers alone, before any weights load, so
impossible configs (attention alignment with a cross-tokenizer teacher) fail fast. "Same" means
the same regular vocabulary and the same special tokens where the student uses them
(:func:`compare_tokenizers`): Llama-3.0 and Llama-3.2 differ only in reserved token names.

Teachers run under ``torch.inference_mode()`` in the training step itself, unless a teacher has
``cache: DIR`` (its top-k log-probs precomputed by ``distillm-edge teachers cache``; no weights
load: see ``cached_teachers.py``). Only the rows that are used are projected to the vocabulary
(``logits_to_keep=<mask>``); a cross-tokenizer teacher trained with shared-vocabulary KL alone
(``uld_weight: 0``) is projected onto the shared entries only (46k of Gemma's 262k rows for
SmolLM2), which is 5-6x cheaper and gives identical numbers, because the shared-vocabulary KL
is a softmax over exactly those logits. The learned vocabulary projection
(``cross_tokenizer.method: projection``) needs the teacher's full logits for its top-k, so that
shortcut is off there.

Test: ``pytest tests/training/test_trainer.py``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from distillm_edge.config import ConfigError
from distillm_edge.training.batches import Batch, model_inputs
from distillm_edge.training.config import TrainConfig
from distillm_edge.training.losses import cross_entropy_loss, kd_loss


@dataclass
class Teacher:
    """One teacher: its tokenizer relation to the student, weights once loaded, shared vocab."""

    index: int
    name: str
    spec: str
    weight: float  # normalized static weight
    tokenizer: object
    pad_id: int
    same_tokenizer: bool
    tokenizer_note: str = ""  # what differs from the student's tokenizer (see compare_tokenizers)
    vocab_map: tuple[torch.Tensor, torch.Tensor] | None = None  # (student_ids, teacher_ids) if cross-tokenizer
    model: torch.nn.Module | None = None
    shared_head: torch.Tensor | None = None  # output-embedding rows of the shared vocabulary [S, D]
    cache: object | None = None  # a teachers.cache.CachedTeacher (``teachers[i].cache``): read, never run
    autocast_weights: object | None = None  # precision.AutocastWeights: bf16 Linear copies for forwards under autocast
    shared_head_low: torch.Tensor | None = None  # ``shared_head`` in the autocast dtype, made once with them

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device


@dataclass
class TeacherOutput:
    """Teacher logits as flat rows [1, R, V] (see ``Batch``/``TeacherView``) and optional extras."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    nll: float = 0.0  # evaluation only: summed NLL of the teacher's own counted tokens
    shared_only: bool = False  # logits cover only the shared vocabulary (in vocab_map order)


def display_name(spec: str) -> str:
    return Path(spec.rstrip("/")).name or spec


@dataclass(frozen=True)
class TokenizerComparison:
    """Whether a teacher can be compared with the student position by position, and what differs."""

    same: bool
    differences: tuple[str, ...] = ()  # one line each; when ``same``, only special tokens the student never uses

    def note(self) -> str:
        """A short line for the run log ("" when nothing differs)."""
        if not self.differences:
            return ""
        if self.same:
            shown = "; ".join(self.differences[:2]) + ("; ..." if len(self.differences) > 2 else "")
            return (f"{len(self.differences)} special tokens differ, all unused by the student's chat template and "
                    f"special tokens ({shown})")
        return self.differences[0].split(" (e.g.")[0]  # the first difference, without its examples


def same_vocabulary(a, b) -> bool:
    """True when a teacher with tokenizer ``b`` can be compared with a student with ``a`` position by position."""
    return compare_tokenizers(a, b).same


def _special_tokens(tokenizer) -> dict[int, str]:
    """id -> token string of every special token (declared specials and added tokens marked special)."""
    out = {int(i): str(tok) for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
           if getattr(tok, "special", False)}
    for i in getattr(tokenizer, "all_special_ids", []) or []:
        out.setdefault(int(i), tokenizer.convert_ids_to_tokens(int(i)))
    return out


def used_special_ids(tokenizer) -> set[int]:
    """Special ids the student's data can contain: bos/eos/pad/unk and those its chat template emits."""
    used = {int(i) for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                             tokenizer.unk_token_id) if i is not None}
    specials = _special_tokens(tokenizer)
    turns = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    for messages in ([{"role": "system", "content": "be brief"}] + turns, turns):
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception:  # a template may reject a system turn: try without one
            continue
        used |= {i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i in specials}
    return used


def compare_tokenizers(student, teacher) -> TokenizerComparison:
    """Same tokenizer for distillation: the regular vocabulary is identical (token -> id), and every special token
    the student uses (see :func:`used_special_ids`) has the same id and name in the teacher's.

    Reserved special tokens that are only named differently (Llama-3.0's ``<|reserved_special_token_2|>`` is
    Llama-3.2's ``<|finetune_right_pad_id|>``, same id) do not matter: the student's data never contains them.
    """
    if student is teacher:
        return TokenizerComparison(True)
    s_special, t_special = _special_tokens(student), _special_tokens(teacher)
    s_regular = {tok: i for tok, i in student.get_vocab().items() if i not in s_special}
    t_regular = {tok: i for tok, i in teacher.get_vocab().items() if i not in t_special}
    blocking: list[str] = []
    if s_regular != t_regular:
        only_s = sorted(set(s_regular) - set(t_regular))
        only_t = sorted(set(t_regular) - set(s_regular))
        moved = sorted(tok for tok in set(s_regular) & set(t_regular) if s_regular[tok] != t_regular[tok])
        example = (only_s or only_t or moved)[:3]
        blocking.append(f"regular vocabulary differs: {len(only_s)} tokens only in the student's, {len(only_t)} only "
                        f"in the teacher's, {len(moved)} with other ids (e.g. {example})")
    used = used_special_ids(student)
    unused: list[str] = []
    for i in sorted(set(s_special) | set(t_special)):
        a = s_special.get(i, student.convert_ids_to_tokens(i) if i < len(student) else None)
        b = t_special.get(i, teacher.convert_ids_to_tokens(i) if i < len(teacher) else None)
        if a == b:
            continue
        line = f"id {i} '{a}' vs '{b}'"
        (blocking if i in used else unused).append(line + (" (used by the student)" if i in used else ""))
    return TokenizerComparison(not blocking, tuple(blocking + unused) if blocking else tuple(unused))


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def open_teachers(cfg: TrainConfig, student_tokenizer, cache_dir: Path | None) -> list[Teacher]:
    """The teachers with their tokenizers (no weights yet): same tokenizer as the student or not, and
    for the others the shared vocabulary (cached in ``cache_dir``)."""
    from distillm_edge.models import load_tokenizer
    from distillm_edge.training.batches import ensure_chat_template
    from distillm_edge.training.cross_tokenizer import shared_vocab

    total = cfg.total_teacher_weight
    teachers = []
    names = [display_name(t.model) for t in cfg.teachers]
    for i, tc in enumerate(cfg.teachers):
        check_device(i, tc.device)
        tok = student_tokenizer if tc.model == cfg.student.model else load_tokenizer(tc.model, progress=False)
        ensure_chat_template(tok)
        comparison = compare_tokenizers(student_tokenizer, tok)
        name = names[i] if names.count(names[i]) == 1 else f"{names[i]}#{i}"
        teacher = Teacher(i, name, tc.model, tc.weight / total, tok, pad_id(tok), comparison.same, comparison.note())
        if not comparison.same:
            teacher.vocab_map = shared_vocab(student_tokenizer, tok, cache_dir=cache_dir)
            shared = len(teacher.vocab_map[0])
            if shared < cfg.cross_tokenizer.min_shared and cfg.cross_tokenizer.uld_weight == 0:
                raise ConfigError(
                    f"teachers[{i}] {tc.model}: its tokenizer shares only {shared} tokens with the student's "
                    f"(cross_tokenizer.min_shared is {cfg.cross_tokenizer.min_shared}); set cross_tokenizer.uld_weight > 0 "
                    "to distil through ULD, or choose a closer teacher."
                )
        teachers.append(teacher)
    return teachers


def check_device(index: int, device: str | None) -> None:
    """A teacher's explicit ``device`` must exist here (checked before any weights load)."""
    if not device or not device.startswith("cuda"):
        return
    count = torch.cuda.device_count()
    wanted = int(device.split(":", 1)[1]) if ":" in device else 0
    if wanted >= count:
        have = f"only {count} CUDA GPU(s) are visible" if count else "no CUDA GPU is visible"
        raise ConfigError(f"teachers[{index}].device {device}: {have}; set teachers[{index}].device to an existing GPU, "
                          "or remove it to run the teacher where the student trains.")


def load_teacher_weights(teachers: list[Teacher], cfg: TrainConfig, device: torch.device, *,
                         eager_attention: int | None = None) -> None:
    """Load each teacher frozen, in eval mode, on its device; teacher ``eager_attention`` returns attention maps."""
    from distillm_edge.models import LoadOptions, load_model

    for t, tc in zip(teachers, cfg.teachers, strict=True):
        if t.cache is not None:  # a cached teacher loads no weights (cached_teachers.py)
            continue
        where = tc.device or str(device)
        options = LoadOptions(dtype=tc.dtype, device=where, device_map=tc.device_map, quantization=tc.quantization)
        model, _ = load_model(tc.model, options, progress=False)
        if t.index == eager_attention:
            model.set_attn_implementation("eager")
        model.eval().requires_grad_(False)
        t.model = model
        if t.vocab_map is not None:  # the shared-vocabulary head, used by shared_vocab without ULD
            vocab = model.config.get_text_config().vocab_size  # (a multimodal Gemma-3 nests it in text_config)
            if vocab < int(t.vocab_map[1].max()) + 1:
                raise ConfigError(f"teacher {t.spec}: its tokenizer has ids beyond the model's vocabulary ({vocab}).")
            head = model.get_output_embeddings().weight
            if cfg.cross_tokenizer.shared_only and head.dtype.is_floating_point:
                t.shared_head = head.detach()[t.vocab_map[1].to(head.device)]


def prepare_for_autocast(teachers: list[Teacher], dtype: torch.dtype) -> int:
    """Give each loaded teacher pre-cast ``dtype`` copies of its fp32 Linear weights (and shared-vocabulary
    head), used by :func:`teacher_forward` under autocast (``precision.AutocastWeights``); returns the bytes added."""
    from distillm_edge.training.precision import AutocastWeights

    added = 0
    for t in teachers:
        if t.model is None:
            continue
        t.autocast_weights = AutocastWeights(t.model, dtype)
        added += t.autocast_weights.nbytes
        if t.shared_head is not None and t.shared_head.dtype == torch.float32:
            t.shared_head_low = t.shared_head.to(dtype)
            added += t.shared_head_low.numel() * t.shared_head_low.element_size()
    return added


@torch.inference_mode()
def teacher_forward(t: Teacher, batch: Batch, *, student_vocab: int, hidden: bool = False,
                    attentions: bool = False, for_eval: bool = False, shared_only: bool = False) -> TeacherOutput:
    """One teacher pass over ``batch``: logits at the rows the losses need (see ``TeacherOutput``).

    ``shared_only`` projects a cross-tokenizer teacher onto the shared vocabulary only. Under
    autocast the teacher's pre-cast Linear weights are used (:func:`prepare_for_autocast`).
    """
    from distillm_edge.training.precision import autocast_dtype

    low = t.autocast_weights
    cast_once = low is not None and autocast_dtype(t.device) == low.dtype
    with low.active() if cast_once else contextlib.nullcontext():
        return _teacher_forward(t, batch, student_vocab=student_vocab, hidden=hidden, attentions=attentions,
                                for_eval=for_eval, shared_only=shared_only,
                                head_low=t.shared_head_low if cast_once else None)


def _teacher_forward(t: Teacher, batch: Batch, *, student_vocab: int, hidden: bool, attentions: bool,
                     for_eval: bool, shared_only: bool, head_low: torch.Tensor | None) -> TeacherOutput:
    from distillm_edge.training.packed_attention import packed_attention

    model, dev = t.model, t.device
    extra = {"output_hidden_states": hidden or None, "output_attentions": attentions or None}
    if t.same_tokenizer:
        with packed_attention(model, batch.position_ids):  # a packed row: attention per example
            out = model(**model_inputs(batch.input_ids, batch.attention_mask, batch.position_ids, dev),
                        logits_to_keep=batch.loss_mask.to(dev), **extra)
        logits = out.logits[..., :student_vocab].reshape(1, -1, student_vocab)
        nll = 0.0
        if for_eval:
            nll = float(cross_entropy_loss(logits, batch.targets.view(1, -1).to(logits.device), normalizer=1.0))
        return TeacherOutput(logits, out.hidden_states, out.attentions, nll)
    view = batch.views[t.index]
    keep = view.eval_keep if for_eval else view.keep
    inputs = model_inputs(view.input_ids, view.attention_mask, view.position_ids, dev)
    if shared_only and not for_eval and t.shared_head is not None:
        base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        with packed_attention(model, view.position_ids):
            out = base(**inputs, **extra)
        rows = out.last_hidden_state[keep.to(dev)]
        head = head_low if head_low is not None else t.shared_head.to(rows.dtype)
        logits = (rows @ head.T).unsqueeze(0)
        cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return TeacherOutput(logits, out.hidden_states, out.attentions, 0.0, shared_only=True)
    with packed_attention(model, view.position_ids):
        out = model(**inputs, logits_to_keep=keep.to(dev), **extra)
    logits = out.logits.reshape(1, -1, out.logits.shape[-1])
    nll = 0.0
    if for_eval and view.targets.numel():
        rows = logits[:, view.target_rows.to(logits.device)]
        nll = float(cross_entropy_loss(rows, view.targets.view(1, -1).to(logits.device), normalizer=1.0))
    return TeacherOutput(logits, out.hidden_states, out.attentions, nll)


@torch.inference_mode()
def cross_rows_kl(t: Teacher, student_rows: torch.Tensor, out: TeacherOutput, batch: Batch) -> tuple[float, int]:
    """Summed KL(teacher || student) on the shared vocabulary at aligned rows, and the row count."""
    view = batch.views[t.index]
    n = int(view.student_rows.numel())
    if n == 0:
        return 0.0, 0
    s_ids, t_ids = (x.to(student_rows.device) for x in t.vocab_map)
    trows = view.eval_teacher_rows if not out.shared_only else view.teacher_rows
    s = student_rows[:, view.student_rows.to(student_rows.device)][..., s_ids]
    te = out.logits.to(student_rows.device)[:, trows.to(student_rows.device)]
    te = te if out.shared_only else te[..., t_ids]
    return float(kd_loss(s, te, normalizer=1.0)), n
