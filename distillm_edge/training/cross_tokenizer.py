"""Cross-tokenizer distillation: teach at the logit level when teacher and student tokenize differently.

E.g. Gemma-3 (262,144-token SentencePiece vocab) teaching SmolLM2 (49,152-token byte-level BPE).

1. Positions (``align_positions`` / ``align_batch``), from character offsets of the same text
   (``return_offsets_mapping``). Student position i predicts student token i+1, which starts at
   character c; it is *aligned* when the teacher tokenization also starts a token at c, and then
   teacher position j (the one predicting that teacher token) supplies the distribution -- both
   models then predict the continuation of the same prefix ``text[:c]``. Offsets are untrimmed
   first: a token's start is the previous token's end (byte-level BPE with ``trim_offsets`` drops
   the leading space of ``Ġword``; SentencePiece ``▁word`` keeps it), tokens that split one
   character into bytes (overlapping offsets) start nowhere, and special tokens (BOS with (0, 0)
   offsets, padding) consume no text. Result: index tensors [B, K] padded with -1.
2. Vocabulary (``shared_vocab``): token pairs whose canonical text is identical, after mapping
   byte-level symbols back to bytes (``Ġ`` space, ``Ċ`` newline, ...), ``▁`` to a space and
   ``<0xNN>`` byte-fallback pieces to the byte. Special tokens are left out. Cached as .npz keyed
   by both tokenizers' hashes.
3. Loss (``cross_tokenizer_kd``), on aligned positions only, chunked like ``losses.kd_loss``:
   ``tau^2 * D(p_shared || q_shared) + uld_weight * ULD(p, q)`` where p_shared is the teacher's
   softmax restricted to the shared entries and renormalized (= softmax of the gathered logits),
   q_shared likewise for the student, D one of ``losses.KINDS``; ULD (Boizard et al. 2024) is the
   L1 distance between the full tempered distributions sorted in decreasing order, the shorter
   one padded with zeros (a closed-form Wasserstein distance that needs no token mapping); it is
   not tau^2-scaled. It sorts both full distributions per aligned token: ~10 ms of one CPU core
   at 49k/262k vocabularies (numpy's sort on CPU), against ~2 ms for the shared-vocab part.
4. Diagnostics (``alignment_report``) and, for comparison only, a learned projection of the
   teacher's top-k probabilities into the student vocabulary (``make_vocab_projection``,
   ``projected_kd``), as in the research notes. It is not chunked and not the default; the
   trainer uses it with ``cross_tokenizer.method: projection`` (one projection per teacher with
   another tokenizer, trained jointly by its cross-entropy on the student's next tokens, saved
   in checkpoints and as ``projection-<teacher>.safetensors`` in the run directory).

Test: ``pytest tests/training/test_cross_tokenizer.py`` (``-m slow`` for the real tokenizers).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillm_edge.errors import UserError
from distillm_edge.io import atomic_path
from distillm_edge.training.losses import (
    check_kind,
    chunk_rows,
    chunked_row_loss,
    counted_rows,
    divergence_rows,
    kd_loss,
    tempered_log_softmax,
)

VOCAB_CACHE_VERSION = 1
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


# --------------------------------------------------------------------------- tokenizers and vocabularies


def backend(tokenizer):
    """The ``tokenizers.Tokenizer`` behind a Hugging Face fast tokenizer (or the object itself)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    inner = getattr(tokenizer, "backend_tokenizer", None)
    if inner is None:
        raise UserError(
            f"cross-tokenizer distillation needs a fast tokenizer with offsets, got {type(tokenizer).__name__}; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    return inner


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode table (byte-level BPE symbols -> byte values)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_style(tokenizer) -> str:
    """``byte_level`` (GPT-2/Llama-3/SmolLM2 BPE), ``sentencepiece`` (▁ for spaces) or ``plain``."""
    tok = backend(tokenizer)
    parts = " ".join(repr(x) for x in (tok.normalizer, tok.pre_tokenizer, tok.decoder))
    if "ByteLevel" in parts:
        return "byte_level"
    if "▁" in parts or "Metaspace" in parts:
        return "sentencepiece"
    return "plain"


def canonical_token(token: str, style: str) -> tuple[bytes, bool]:
    """A vocabulary entry as the bytes of text it stands for, and whether it is a byte-fallback piece."""
    if style == "byte_level":
        table = _byte_decoder()
        if token and all(c in table for c in token):
            return bytes(table[c] for c in token), False
        return token.encode("utf-8"), False  # an added token kept as literal text
    if style == "sentencepiece":
        m = _BYTE_PIECE.match(token)
        if m:
            return bytes([int(m.group(1), 16)]), True
        return token.replace("▁", " ").encode("utf-8"), False
    return token.encode("utf-8"), False


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special (control) tokens."""
    return {i for i, t in backend(tokenizer).get_added_tokens_decoder().items() if t.special}


def canonical_vocab(tokenizer) -> dict[bytes, int]:
    """canonical bytes -> token id over the non-special vocabulary (byte pieces lose ties, then higher ids)."""
    tok = backend(tokenizer)
    style = token_style(tok)
    specials = special_ids(tok)
    best: dict[bytes, tuple[bool, int]] = {}
    for i in range(tok.get_vocab_size(with_added_tokens=True)):
        piece = tok.id_to_token(i)
        if piece is None or i in specials:
            continue
        key, is_byte = canonical_token(piece, style)
        if key and (key not in best or (is_byte, i) < best[key]):
            best[key] = (is_byte, i)
    return {k: i for k, (_, i) in best.items()}


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's full serialized definition (vocab, merges, added tokens, pipeline)."""
    return hashlib.sha256(backend(tokenizer).to_str().encode("utf-8")).hexdigest()


def shared_vocab(student_tokenizer, teacher_tokenizer, *, cache_dir: Path | str | None = None) -> tuple[Tensor, Tensor]:
    """``(student_ids, teacher_ids)`` LongTensors [K]: token pairs with the same canonical text.

    Sorted by student id; one-to-one. With ``cache_dir`` the result is stored as
    ``shared-vocab-<student hash>-<teacher hash>-v<version>.npz`` and reused.
    """
    path = None
    if cache_dir is not None:
        key = f"{tokenizer_hash(student_tokenizer)[:16]}-{tokenizer_hash(teacher_tokenizer)[:16]}"
        path = Path(cache_dir) / f"shared-vocab-{key}-v{VOCAB_CACHE_VERSION}.npz"
        if path.is_file():
            with np.load(path) as data:
                return torch.from_numpy(data["student_ids"]).long(), torch.from_numpy(data["teacher_ids"]).long()
    student, teacher = canonical_vocab(student_tokenizer), canonical_vocab(teacher_tokenizer)
    pairs = sorted((sid, teacher[k]) for k, sid in student.items() if k in teacher)
    s_ids = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    t_ids = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    if path is not None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, student_ids=s_ids.numpy(), teacher_ids=t_ids.numpy())
    return s_ids, t_ids


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True)
class Encoded:
    """One tokenized text: ids, character offsets and which tokens are special."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]


def encode(tokenizer, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[Encoded]:
    """Tokenize ``texts`` with offsets (no padding or truncation)."""
    tok = backend(tokenizer)
    specials = special_ids(tok)
    out = []
    for enc in tok.encode_batch(list(texts), add_special_tokens=add_special_tokens):
        out.append(Encoded(list(enc.ids), [tuple(o) for o in enc.offsets], [i in specials for i in enc.ids]))
    return out


def token_starts(offsets: Sequence[tuple[int, int]], special: Sequence[bool] | None = None) -> list[int | None]:
    """Per token, the character where its text starts, or None when that is not known for sure.

    Contiguous offsets (SmolLM2, Llama-3, Gemma: each token starts where the previous one ends)
    give the start directly. None for: special tokens (when ``special`` is None, zero-width tokens
    are taken as special; a special token with a span, e.g. chat markup in the text, still covers
    its characters), a token whose offsets overlap the previous one's (a character split
    into several byte tokens: only the first piece starts at a character), and a repeated start.
    Trimmed offsets (byte-level BPE with ``trim_offsets=True``) are handled conservatively: a
    one-character gap before a token is its trimmed leading space (the ``Ġword`` convention) so it
    starts at the previous end; a zero-width non-special token (trimmed whitespace-only token)
    and the token after it, or a longer gap, start nowhere known (None).
    """
    starts: list[int | None] = []
    prev_end: int | None = None
    last: int | None = None
    unsure = False
    for k, (a, b) in enumerate(offsets):
        a, b = int(a), int(b)
        is_special = special[k] if special is not None else a == b
        if is_special:  # no start; a special token written in the text (chat markup, <unk>) still covers it
            starts.append(None)
            if b > a:
                prev_end = b if prev_end is None else max(prev_end, b)
                unsure = False
            continue
        if a == b:  # whitespace-only token trimmed to nothing: its true span is unknown
            starts.append(None)
            unsure = True
            continue
        if prev_end is None:
            start = a
        elif a < prev_end or unsure:
            start = None
        elif a == prev_end:
            start = a
        elif a == prev_end + 1:
            start = prev_end
        else:
            start = None
        if start is not None and start == last:
            start = None
        starts.append(start)
        last = start if start is not None else last
        prev_end = b if prev_end is None else max(prev_end, b)
        unsure = False
    return starts


def align_positions(
    student_offsets: Sequence[tuple[int, int]],
    teacher_offsets: Sequence[tuple[int, int]],
    student_special: Sequence[bool] | None = None,
    teacher_special: Sequence[bool] | None = None,
) -> tuple[list[int], list[int]]:
    """Aligned ``(student_positions, teacher_positions)`` of one text (see the module docstring)."""
    s_starts = token_starts(student_offsets, student_special)
    teacher_at = {c: m - 1 for m, c in enumerate(token_starts(teacher_offsets, teacher_special)) if c is not None and m >= 1}
    s_pos, t_pos = [], []
    for i in range(len(s_starts) - 1):
        c = s_starts[i + 1]
        if c is not None and c in teacher_at:
            s_pos.append(i)
            t_pos.append(teacher_at[c])
    return s_pos, t_pos


def align_batch(student: Sequence[Encoded], teacher: Sequence[Encoded]) -> tuple[Tensor, Tensor]:
    """``(student_pos, teacher_pos)`` LongTensors [B, K], padded with -1, for a batch of texts.

    Positions index the token sequences as given: pass the batch's own (padded) encodings, or
    shift the positions by the left-padding yourself.
    """
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student encodings but {len(teacher)} teacher encodings")
    pairs = [align_positions(s.offsets, t.offsets, s.special, t.special) for s, t in zip(student, teacher)]
    width = max((len(p[0]) for p in pairs), default=0)
    s_pos = torch.full((len(pairs), width), -1, dtype=torch.long)
    t_pos = torch.full((len(pairs), width), -1, dtype=torch.long)
    for b, (sp, tp) in enumerate(pairs):
        s_pos[b, : len(sp)] = torch.tensor(sp, dtype=torch.long)
        t_pos[b, : len(tp)] = torch.tensor(tp, dtype=torch.long)
    return s_pos, t_pos


def scatter_to_student(values: Tensor, student_pos: Tensor, teacher_pos: Tensor, student_len: int) -> tuple[Tensor, Tensor]:
    """Per-teacher-position values [B, Tt] moved to student positions: ``(out [B, Ts], available [B, Ts])``.

    E.g. teacher entropies for ``losses.confidence_weights`` with cross-tokenizer teachers.
    """
    batch = values.shape[0]
    out = torch.zeros(batch, student_len, dtype=values.dtype, device=values.device)
    available = torch.zeros(batch, student_len, dtype=torch.bool, device=values.device)
    b, k = (student_pos >= 0).nonzero(as_tuple=True)
    out[b, student_pos[b, k]] = values[b, teacher_pos[b, k]]
    available[b, student_pos[b, k]] = True
    return out, available


def _aligned_grid(student_pos: Tensor, teacher_pos: Tensor, batch: int, seq: int) -> tuple[Tensor, Tensor]:
    """(aligned [B, Ts] bool, teacher index [B, Ts]) on the student's position grid."""
    if student_pos.shape != teacher_pos.shape or student_pos.dim() != 2 or student_pos.shape[0] != batch:
        raise ValueError(
            f"student_pos {tuple(student_pos.shape)} and teacher_pos {tuple(teacher_pos.shape)} must both be [{batch}, K]"
        )
    if student_pos.numel() and student_pos.max() >= seq:
        raise ValueError(f"student_pos reaches {int(student_pos.max())} but the student sequence has {seq} positions")
    aligned = torch.zeros(batch, seq, dtype=torch.bool, device=student_pos.device)
    t_index = torch.zeros(batch, seq, dtype=torch.long, device=student_pos.device)
    b, k = (student_pos >= 0).nonzero(as_tuple=True)
    aligned[b, student_pos[b, k]] = True
    t_index[b, student_pos[b, k]] = teacher_pos[b, k]
    return aligned, t_index


# --------------------------------------------------------------------------- the loss


def _sort_desc(x: Tensor, with_perm: bool) -> tuple[Tensor, Tensor | None]:
    """Rows of ``x`` sorted descending (and the permutation). On CPU numpy's sort is ~10x faster
    than torch's for 262k-entry rows (torch always sorts indices too)."""
    if x.device.type != "cpu":
        values, perm = x.sort(dim=-1, descending=True)
        return values, perm if with_perm else None
    a = x.detach().numpy()
    if with_perm:
        perm = torch.from_numpy(np.argsort(-a, axis=-1))
        return x.gather(1, perm), perm
    return torch.from_numpy(-np.sort(-a, axis=-1)), None


def uld_rows(q: Tensor, p: Tensor, need_grad: bool = True) -> tuple[Tensor, Tensor | None]:
    """ULD per row: L1 between student probs ``q`` [n, Vs] and teacher probs ``p`` [n, Vt], each sorted
    descending, the shorter zero-padded. Returns (loss [n], d loss / d q [n, Vs] or None)."""
    qs, perm = _sort_desc(q, with_perm=need_grad)
    ps, _ = _sort_desc(p, with_perm=False)
    m = min(q.shape[-1], p.shape[-1])
    diff = qs[:, :m] - ps[:, :m]
    loss = diff.abs().sum(-1) + qs[:, m:].sum(-1) + ps[:, m:].sum(-1)
    if not need_grad:
        return loss, None
    dqs = torch.ones_like(qs)  # beyond m: |q - 0| -> +1 (q > 0)
    dqs[:, :m] = diff.sign()
    return loss, torch.empty_like(q).scatter_(1, perm, dqs)


def cross_tokenizer_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_pos: Tensor,
    teacher_pos: Tensor,
    mask: Tensor | None = None,
    *,
    vocab_map: tuple[Tensor, Tensor],
    temperature: float = 1.0,
    kind: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    uld_weight: float = 1.0,
    weights: Tensor | None = None,
    normalizer: float | Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """tau^2 * D on the shared vocabulary + uld_weight * ULD, weighted mean over aligned counted positions.

    ``student_logits`` [B, Ts, Vs], ``teacher_logits`` [B, Tt, Vt]; ``student_pos``/``teacher_pos``
    [B, K] from ``align_batch`` (-1 padded); ``mask`` [B, Ts] counts student positions (e.g. the
    response); ``weights`` per sample [B] or per student token [B, Ts]; ``vocab_map`` from
    ``shared_vocab``. 0 (with zero gradients) when nothing is aligned.
    """
    if temperature <= 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    if uld_weight < 0:
        raise UserError(f"uld_weight must be >= 0, got {uld_weight}")
    check_kind(kind, beta, skew)
    s_ids, t_ids = (x.to(student_logits.device) for x in vocab_map)
    if s_ids.numel() == 0 and uld_weight == 0:
        raise UserError("the tokenizers share no vocabulary entries: set uld_weight > 0 to distil through ULD only")
    if (s_ids.numel() and int(s_ids.max()) >= student_logits.shape[-1]) or (t_ids.numel() and int(t_ids.max()) >= teacher_logits.shape[-1]):
        raise ValueError("vocab_map ids exceed the logits' vocabulary size: was it built for these tokenizers?")
    batch, seq = student_logits.shape[:2]
    aligned, t_index = _aligned_grid(student_pos, teacher_pos, batch, seq)
    counted = aligned if mask is None else aligned & mask.bool()
    b, t, w = counted_rows(counted, weights, (batch, seq), normalizer, student_logits.device)
    tau = float(temperature)

    def row_fn(s: Tensor, te: Tensor, _sl: slice, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        s.div_(tau)
        te.div_(tau)
        grad = torch.zeros_like(s) if need_grad else None
        loss = s.new_zeros(s.shape[0])
        if s_ids.numel():
            lq = tempered_log_softmax(s[:, s_ids])  # s, te are already divided by tau
            lp = tempered_log_softmax(te[:, t_ids])
            d, g = divergence_rows(lq, lp, kind, beta=beta, skew=skew, need_grad=need_grad)
            loss += d * tau * tau
            if need_grad:
                grad[:, s_ids] = g.mul_(tau)
        if uld_weight > 0:
            q = F.softmax(s, dim=-1)
            u, gq = uld_rows(q, F.softmax(te, dim=-1), need_grad)
            loss += uld_weight * u
            if need_grad:  # through the softmax: q * (gq - sum(q * gq)), then 1/tau
                gs = gq.mul_(q)
                gs.addcmul_(q, gs.sum(dim=-1, keepdim=True), value=-1.0)
                grad.add_(gs, alpha=uld_weight / tau)
        return loss, grad

    return chunked_row_loss(student_logits, teacher_logits, (b, t), (b, t_index[b, t]), w, row_fn, chunk_size)


# --------------------------------------------------------------------------- diagnostics


@dataclass(frozen=True)
class AlignmentReport:
    """How well a teacher's tokenization and vocabulary line up with the student's."""

    aligned_share: float  # aligned / counted student positions
    vocab_overlap: float  # |shared| / |student vocab|
    teacher_mass: float | None  # mean teacher probability on shared entries at aligned positions
    n_aligned: int
    n_positions: int
    n_shared: int


@torch.no_grad()
def alignment_report(
    student_pos: Tensor,
    teacher_pos: Tensor,
    mask: Tensor,
    vocab_map: tuple[Tensor, Tensor],
    student_vocab_size: int,
    *,
    teacher_logits: Tensor | None = None,
    chunk_size: int | None = None,
) -> AlignmentReport:
    """Alignment figures; ``mask`` [B, Ts] marks the student positions that predict a real next token."""
    batch, seq = mask.shape
    aligned, t_index = _aligned_grid(student_pos, teacher_pos, batch, seq)
    counted = aligned & mask.bool()
    n_aligned, n_positions = int(counted.sum()), int(mask.bool().sum())
    t_ids = vocab_map[1]
    mass = None
    if teacher_logits is not None and n_aligned:
        b, t = counted.nonzero(as_tuple=True)
        tt = t_index[b, t]
        rows = chunk_rows(teacher_logits.shape[-1], chunk_size, teacher_logits.device)
        total = 0.0
        for start in range(0, b.numel(), rows):
            sl = slice(start, start + rows)
            lp = tempered_log_softmax(teacher_logits[b[sl], tt[sl]].float())
            total += float(lp[:, t_ids.to(lp.device)].exp().sum())
        mass = total / n_aligned
    return AlignmentReport(
        aligned_share=n_aligned / n_positions if n_positions else 0.0,
        vocab_overlap=len(t_ids) / student_vocab_size,
        teacher_mass=mass,
        n_aligned=n_aligned,
        n_positions=n_positions,
        n_shared=len(t_ids),
    )


# --------------------------------------------------------------------------- learned projection (option)


class TopKVocabProjection(nn.Module):
    """Teacher top-k probabilities -> student-vocabulary logits, through a rank-r bottleneck.

    ``EmbeddingBag(teacher_vocab, r)`` summing the top-k token embeddings weighted by their
    probabilities (a sparse ``Linear(teacher_vocab -> r)``), then ``Linear(r -> student_vocab)``.
    """

    def __init__(self, teacher_vocab_size: int, student_vocab_size: int, rank: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.down = nn.EmbeddingBag(teacher_vocab_size, rank, mode="sum")
        self.up = nn.Linear(rank, student_vocab_size)

    def forward(self, top_ids: Tensor, top_probs: Tensor) -> Tensor:
        return self.up(self.down(top_ids, per_sample_weights=top_probs.to(self.down.weight.dtype)))


def make_vocab_projection(teacher_vocab_size: int, student_vocab_size: int, *, rank: int = 256, top_k: int = 64) -> TopKVocabProjection:
    """The learned teacher->student vocabulary projection (an option for comparison, not the default)."""
    if rank < 1 or top_k < 1:
        raise UserError(f"vocab projection rank and top_k must be >= 1, got {rank} and {top_k}")
    return TopKVocabProjection(teacher_vocab_size, student_vocab_size, rank, min(top_k, teacher_vocab_size))


def projected_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_pos: Tensor,
    teacher_pos: Tensor,
    projection: TopKVocabProjection,
    labels: Tensor,
    mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    kind: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    weights: Tensor | None = None,
    normalizer: float | Tensor | None = None,
    ignore_index: int = -100,
    ce_normalizer: float | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(kd, projection_ce)`` at aligned positions through the learned projection.

    kd: ``losses.kd_loss`` of the student against the projected teacher logits (detached, so the
    projection cannot collapse onto the student), weighted like ``cross_tokenizer_kd``: ``weights``
    per sample [B] or per student token [B, Ts], ``normalizer`` replacing the denominator.
    projection_ce: unweighted cross-entropy of the projected logits against the student's next
    tokens ``labels`` [B, Ts] (already shifted), which trains the projection (a mean over the aligned
    tokens, or their sum divided by ``ce_normalizer``); add both to the objective. Materializes
    [aligned tokens, Vs] tensors.
    """
    batch, seq = student_logits.shape[:2]
    aligned, t_index = _aligned_grid(student_pos, teacher_pos, batch, seq)
    counted = aligned & (labels != ignore_index)
    if mask is not None:
        counted &= mask.bool()
    b, t = counted.nonzero(as_tuple=True)
    with torch.no_grad():
        rows = teacher_logits[b, t_index[b, t]].float()
        lse = torch.logsumexp(rows, dim=-1, keepdim=True)
        top_v, top_i = rows.topk(projection.top_k, dim=-1)
        top_p = (top_v - lse).exp()
    projected = projection(top_i, top_p)  # [n, Vs]
    student_rows = student_logits[b, t].unsqueeze(0)
    row_w = None
    if weights is not None:
        row_w = (weights[b] if weights.dim() == 1 else weights[b, t]).unsqueeze(0)
    kd = kd_loss(student_rows, projected.detach().unsqueeze(0), temperature=temperature, kind=kind, beta=beta, skew=skew,
                 weights=row_w, normalizer=normalizer)
    if b.numel() == 0:
        return kd, projected.sum() * 0.0
    if ce_normalizer is None:
        return kd, F.cross_entropy(projected.float(), labels[b, t].long())
    return kd, F.cross_entropy(projected.float(), labels[b, t].long(), reduction="sum") / ce_normalizer
