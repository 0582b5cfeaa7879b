"""Tests of cross-tokenizer distillation: offsets alignment, shared vocabulary, the loss, diagnostics.

Unit tests build tiny byte-level BPE, SentencePiece-style BPE (byte fallback, like Gemma) and
Unigram tokenizers in-test; ``-m slow`` runs the real SmolLM2 and Gemma-3 tokenizers on a
medical paragraph and prints the alignment figures.

Run: ``pytest tests/training/test_cross_tokenizer.py`` (add ``-m slow -s`` for the real ones).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from distillm_edge.errors import UserError
from distillm_edge.training import cross_tokenizer as ct
from distillm_edge.training.losses import kd_loss

CORPUS = [
    "The patient, a 67-year-old male with hypertension, was given 5 mg amlodipine daily.",
    "Blood pressure 160/95 mmHg; heart rate 88. No chest pain, no dyspnea.",
    "Métformine 500 mg twice daily for type 2 diabetes mellitus.\nFollow up in 2 weeks.",
    "Patient reports fatigue and mild oedema of the ankles.",
] * 5
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def byte_level_bpe(trim_offsets: bool = False) -> Tokenizer:
    """A SmolLM2-like byte-level BPE (optionally with trimmed offsets, like GPT-2/RoBERTa)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=330, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"],
        show_progress=False))
    if trim_offsets:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return tok


def sentencepiece_bpe() -> Tokenizer:
    """A Gemma-like tokenizer: spaces -> ▁, BPE with <0xNN> byte fallback, <bos> prepended."""
    base = Tokenizer(models.BPE())
    base.normalizer = normalizers.Replace(" ", "▁")
    base.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, show_progress=False))
    trained = json.loads(base.to_str())["model"]
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(SPECIALS) + b for b in range(256)})
    for piece in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return tok


def unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=["<unk>"], unk_token="<unk>",
                                                            show_progress=False))
    return tok


@pytest.fixture(scope="module")
def toks():
    return {"byte": byte_level_bpe(), "byte_trim": byte_level_bpe(True), "sp": sentencepiece_bpe(), "uni": unigram()}


# ----------------------------------------------------------------------------- vocabulary


def test_canonical_tokens_normalize_space_markers_and_bytes():
    assert ct.canonical_token("Ġthe", "byte_level") == (b" the", False)
    assert ct.canonical_token("Ċ", "byte_level") == (b"\n", False)
    assert ct.canonical_token("ĉ", "byte_level") == (b"\t", False)
    assert ct.canonical_token("Ã©", "byte_level") == ("é".encode(), False)
    assert ct.canonical_token("▁the", "sentencepiece") == (b" the", False)
    assert ct.canonical_token("<0x0A>", "sentencepiece") == (b"\n", True)
    assert ct.canonical_token("\n\n", "sentencepiece") == (b"\n\n", False)


def test_token_style_detection(toks):
    assert ct.token_style(toks["byte"]) == "byte_level"
    assert ct.token_style(toks["sp"]) == "sentencepiece"
    assert ct.token_style(toks["uni"]) == "sentencepiece"
    with pytest.raises(UserError, match="fast tokenizer"):
        ct.backend(object())


def hand_made(vocab: list[str], style: str, specials: tuple[str, ...] = ()) -> Tokenizer:
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(vocab)}, merges=[], byte_fallback=style == "sp"))
    if style == "byte":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    else:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(list(specials))
    return tok


def test_shared_vocab_on_hand_made_vocabularies():
    student = hand_made(["<|endoftext|>", "a", "b", "Ġa", "ab", "Ċ", "Ã©", "é", "Ġ"], "byte", ("<|endoftext|>",))
    teacher = hand_made(["<pad>", "<bos>", "<0x0A>", "<0x61>", "a", "▁a", "ab", "é", "\n", "▁", "zz"], "sp",
                        ("<pad>", "<bos>"))
    s_ids, t_ids = ct.shared_vocab(student, teacher)
    pairs = {(student.id_to_token(s), teacher.id_to_token(t)) for s, t in zip(s_ids.tolist(), t_ids.tolist())}
    # 'a' beats the byte piece <0x61>; '\n' beats <0x0A>; 'Ã©' (bytes of é) and 'é' (utf-8 é) both mean é in
    # byte-level, the first one wins; specials never map; 'b' and 'zz' have no partner
    assert pairs == {("a", "a"), ("Ġa", "▁a"), ("ab", "ab"), ("Ċ", "\n"), ("Ã©", "é"), ("Ġ", "▁")}
    assert len(set(s_ids.tolist())) == len(s_ids) and len(set(t_ids.tolist())) == len(t_ids)
    assert s_ids.dtype == torch.long and s_ids.tolist() == sorted(s_ids.tolist())


def test_shared_vocab_of_trained_tokenizers_is_consistent(toks):
    s_ids, t_ids = ct.shared_vocab(toks["byte"], toks["sp"])
    assert len(s_ids) > 50
    for s, t in zip(s_ids.tolist(), t_ids.tolist()):
        assert toks["byte"].decode([s]) == toks["sp"].decode([t])


def test_shared_vocab_cache_round_trip(toks, tmp_path, monkeypatch):
    first = ct.shared_vocab(toks["byte"], toks["sp"], cache_dir=tmp_path)
    files = list(tmp_path.glob("shared-vocab-*.npz"))
    assert len(files) == 1 and ct.tokenizer_hash(toks["byte"])[:16] in files[0].name

    def boom(_tok):
        raise AssertionError("the cached mapping should have been used")

    monkeypatch.setattr(ct, "canonical_vocab", boom)
    second = ct.shared_vocab(toks["byte"], toks["sp"], cache_dir=tmp_path)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


# ----------------------------------------------------------------------------- positions


def test_token_starts_contiguous_overlap_and_specials():
    # "The  male 😀x" as SmolLM2 tokenizes it (contiguous offsets): the emoji is split into 2 byte tokens
    offsets = [(0, 3), (3, 4), (4, 9), (9, 11), (10, 11), (11, 12)]
    assert ct.token_starts(offsets, [False] * 6) == [0, 3, 4, 9, None, 11]
    assert ct.token_starts([(0, 0), (0, 3), (3, 7)]) == [None, 0, 3]  # BOS (0, 0): special by default
    # a special token written in the text (chat markup, <unk>) is never a target but covers its span
    assert ct.token_starts([(0, 3), (3, 13), (13, 15)], [False, True, False]) == [0, None, 13]
    # byte fallback: 3 pieces of one character share its offsets
    assert ct.token_starts([(0, 1), (1, 2), (1, 2), (1, 2), (2, 4)], [False] * 5) == [0, 1, None, None, 2]


def test_token_starts_trimmed_offsets_are_conservative():
    # the same text with trim_offsets=True (as tokenizers produces it): 'Ġ' -> (4, 4), 'Ġmale' -> (5, 9)
    offsets = [(0, 3), (4, 4), (5, 9), (10, 11), (10, 11), (11, 12)]
    # 'Ġ' lost its span, so 'Ġmale' after it is unknown; 'Ġ😀' lost one leading space: starts at 9
    assert ct.token_starts(offsets, [False] * 6) == [0, None, None, 9, None, 11]


def test_align_positions_hand_checked():
    # student: "The" "Ġpatient" ","      teacher: <bos> "The" "▁pat" "ient" ","
    student = [(0, 3), (3, 11), (11, 12)]
    teacher = [(0, 0), (0, 3), (3, 7), (7, 11), (11, 12)]
    s_pos, t_pos = ct.align_positions(student, teacher, [False] * 3, [True, False, False, False, False])
    # student 0 predicts 'Ġpatient' (char 3) <- teacher 1 predicts '▁pat'; student 1 predicts ',' (char 11)
    # <- teacher 3 predicts ','. Nothing predicts the student's first token.
    assert (s_pos, t_pos) == ([0, 1], [1, 3])


def decoded_prefix_pairs(tok_s, tok_t, text):
    """Brute force: (i, j) where both prefixes decode to the same text[:c] and both next tokens start at c."""
    es, et = tok_s.encode(text), tok_t.encode(text)
    ss = {i for i, t in tok_s.get_added_tokens_decoder().items() if t.special}
    st_ = {i for i, t in tok_t.get_added_tokens_decoder().items() if t.special}
    t_prefix = {}
    for j in range(len(et.ids) - 1):
        if et.ids[j + 1] in st_:
            continue
        q = tok_t.decode(et.ids[: j + 1])
        if text.startswith(q) and tok_t.decode(et.ids[: j + 2]) != q:
            t_prefix[q] = j
    pairs = []
    for i in range(len(es.ids) - 1):
        if es.ids[i + 1] in ss:
            continue
        p = tok_s.decode(es.ids[: i + 1])
        if p in t_prefix and text.startswith(p) and tok_s.decode(es.ids[: i + 2]) != p:
            pairs.append((i, t_prefix[p]))
    return pairs


TEXT_ALPHABET = "abdeimnopst  ,.-\n0123é😀PT"


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=TEXT_ALPHABET, min_size=1, max_size=40))
def test_alignment_equals_brute_force_prefix_matching(toks, text):
    es, et = ct.encode(toks["byte"], [text])[0], ct.encode(toks["sp"], [text])[0]
    s_pos, t_pos = ct.align_positions(es.offsets, et.offsets, es.special, et.special)
    assert list(zip(s_pos, t_pos)) == decoded_prefix_pairs(toks["byte"], toks["sp"], text)
    # trimmed offsets: a subset, never a wrong pair
    es = ct.encode(toks["byte_trim"], [text])[0]
    s_pos, t_pos = ct.align_positions(es.offsets, et.offsets, es.special, et.special)
    assert set(zip(s_pos, t_pos)) <= set(decoded_prefix_pairs(toks["byte_trim"], toks["sp"], text))


def test_alignment_on_a_sentence_with_unigram_and_byte_fallback(toks):
    text = "Patient: 67-year-old male, BP 160/95 mmHg 😀 é.\nFollow up."
    for teacher in ("sp", "uni"):
        es, et = ct.encode(toks["byte"], [text])[0], ct.encode(toks[teacher], [text])[0]
        s_pos, t_pos = ct.align_positions(es.offsets, et.offsets, es.special, et.special)
        assert len(s_pos) >= 0.3 * (len(es.ids) - 1)
        for i, j in zip(s_pos, t_pos):
            c = es.offsets[i + 1][0]
            assert et.offsets[j + 1][0] in (c, c - 1)  # Metaspace offsets may include the ▁ space
    assert sum(es.offsets[k][0] == es.offsets[k - 1][0] for k in range(1, len(es.offsets))) > 0  # split emoji


def test_align_batch_pads_with_minus_one(toks):
    texts = ["a short one", "a somewhat longer medical sentence, 5 mg."]
    pos_s, pos_t = ct.align_batch(ct.encode(toks["byte"], texts), ct.encode(toks["sp"], texts))
    assert pos_s.shape == pos_t.shape and pos_s.shape[0] == 2
    assert (pos_s[0] == -1).any() and not (pos_s[1] == -1).any()
    assert ((pos_s == -1) == (pos_t == -1)).all()
    with pytest.raises(ValueError, match="encodings"):
        ct.align_batch(ct.encode(toks["byte"], texts), ct.encode(toks["sp"], texts[:1]))


def test_scatter_to_student():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out, avail = ct.scatter_to_student(values, torch.tensor([[0, 2, -1]]), torch.tensor([[3, 1, -1]]), 3)
    assert out.tolist() == [[4.0, 0.0, 2.0]] and avail.tolist() == [[True, False, True]]


# ----------------------------------------------------------------------------- the loss


def naive_uld(q, p):
    """Brute force: python lists sorted descending, zero-padded, summed |difference|."""
    a, b = sorted(q.tolist(), reverse=True), sorted(p.tolist(), reverse=True)
    n = max(len(a), len(b))
    a, b = a + [0.0] * (n - len(a)), b + [0.0] * (n - len(b))
    return sum(abs(x - y) for x, y in zip(a, b))


def naive_uld_torch(q, p):
    n = max(q.shape[-1], p.shape[-1])
    qs = F.pad(q.sort(descending=True).values, (0, n - q.shape[-1]))
    ps = F.pad(p.sort(descending=True).values, (0, n - p.shape[-1]))
    return (qs - ps).abs().sum()


def naive_cross_kd(s, t, sp, tp, mask, s_ids, t_ids, tau, uld_weight, weights=None, kind="forward_kl", beta=0.5):
    num, den = 0.0, 0.0
    for b in range(s.shape[0]):
        for i, j in zip(sp[b].tolist(), tp[b].tolist()):
            if i < 0 or (mask is not None and not mask[b, i]):
                continue
            zs, zt = s[b, i].double() / tau, t[b, j].double() / tau
            lq, lp = F.log_softmax(zs[s_ids], -1), F.log_softmax(zt[t_ids], -1)
            p, q = lp.exp(), lq.exp()
            if kind == "forward_kl":
                d = (p * (lp - lq)).sum()
            else:
                m = beta * p + (1 - beta) * q
                d = beta * (p * (p / m).log()).sum() + (1 - beta) * (q * (q / m).log()).sum()
            u = naive_uld_torch(F.softmax(zs, -1), F.softmax(zt, -1))
            w = 1.0 if weights is None else float(weights[b])
            num = num + w * (tau**2 * d + uld_weight * u)
            den += w
    return num / den


def setup_cross(seed=0, vs=7, vt=9, ts=6, tt=8):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, ts, vs, generator=g) * 2
    t = torch.randn(2, tt, vt, generator=g) * 2
    sp = torch.tensor([[0, 1, 3, 4, -1], [1, 2, 3, 4, 5]])
    tp = torch.tensor([[0, 2, 4, 7, -1], [0, 1, 3, 5, 6]])
    s_ids, t_ids = torch.tensor([0, 2, 3, 5]), torch.tensor([1, 0, 8, 4])
    return s, t, sp, tp, (s_ids, t_ids)


def value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    out.backward()
    return out.detach(), x.grad


def test_uld_rows_matches_brute_force_both_padding_directions():
    g = torch.Generator().manual_seed(1)
    for vs, vt in ((5, 9), (9, 5), (6, 6)):
        q, p = torch.randn(3, vs, generator=g).softmax(-1), torch.randn(3, vt, generator=g).softmax(-1)
        loss, grad = ct.uld_rows(q, p)
        for r in range(3):
            assert loss[r].item() == pytest.approx(naive_uld(q[r], p[r]), abs=1e-6)
        qq = q.double().requires_grad_(True)
        sum(naive_uld_torch(qq[r], p[r].double()) for r in range(3)).backward()
        torch.testing.assert_close(grad.double(), qq.grad)


@pytest.mark.parametrize("kind,chunk", [("forward_kl", 1), ("forward_kl", 3), ("forward_kl", 100), ("jsd", 2)])
def test_cross_tokenizer_kd_matches_naive_values_and_grads(kind, chunk):
    s, t, sp, tp, vmap = setup_cross()
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 2] = False
    weights = torch.tensor([1.0, 2.0])
    got, grad = value_and_grad(lambda x: ct.cross_tokenizer_kd(
        x, t, sp, tp, mask, vocab_map=vmap, temperature=2.0, uld_weight=0.5, weights=weights, kind=kind,
        chunk_size=chunk), s)
    want, want_grad = value_and_grad(lambda x: naive_cross_kd(
        x, t, sp, tp, mask, *vmap, 2.0, 0.5, weights, kind=kind), s.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), want_grad, rtol=1e-4, atol=1e-7)


def test_cross_tokenizer_kd_student_vocab_larger_than_teacher():
    s, t, sp, tp, vmap = setup_cross(seed=3, vs=12, vt=5)
    vmap = (torch.tensor([1, 4, 11]), torch.tensor([0, 2, 4]))
    got, grad = value_and_grad(lambda x: ct.cross_tokenizer_kd(x, t, sp, tp, vocab_map=vmap, uld_weight=1.0), s)
    want, want_grad = value_and_grad(lambda x: naive_cross_kd(x, t, sp, tp, None, *vmap, 1.0, 1.0), s.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), want_grad, rtol=1e-4, atol=1e-7)


def test_cross_tokenizer_kd_nothing_aligned_is_zero_with_zero_grads():
    s, t, _, _, vmap = setup_cross()
    none = torch.full((2, 3), -1)
    loss, grad = value_and_grad(lambda x: ct.cross_tokenizer_kd(x, t, none, none, vocab_map=vmap), s)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    _, _, sp, tp, _ = setup_cross()
    loss, grad = value_and_grad(lambda x: ct.cross_tokenizer_kd(
        x, t, sp, tp, torch.zeros(2, 6, dtype=torch.bool), vocab_map=vmap), s)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_cross_tokenizer_kd_same_tokenizer_reduces_to_kd():
    """Identity alignment and identity vocab map: the shared part is plain KD; identical logits give 0."""
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    pos = torch.arange(5).expand(2, 5)
    vmap = (torch.arange(6), torch.arange(6))
    got = ct.cross_tokenizer_kd(s, t, pos, pos, vocab_map=vmap, temperature=2.0, uld_weight=0.0)
    torch.testing.assert_close(got, kd_loss(s, t, temperature=2.0))
    assert ct.cross_tokenizer_kd(s, s.clone(), pos, pos, vocab_map=vmap, uld_weight=1.0).abs() < 1e-6


def test_cross_tokenizer_kd_errors():
    s, t, sp, tp, vmap = setup_cross()
    with pytest.raises(ValueError, match="vocab_map ids exceed"):
        ct.cross_tokenizer_kd(s, t, sp, tp, vocab_map=(torch.tensor([50]), torch.tensor([0])))
    with pytest.raises(UserError, match="share no vocabulary"):
        ct.cross_tokenizer_kd(s, t, sp, tp, vocab_map=(torch.tensor([], dtype=torch.long),) * 2, uld_weight=0.0)
    with pytest.raises(ValueError, match="must both be"):
        ct.cross_tokenizer_kd(s, t, sp, tp[:, :2], vocab_map=vmap)
    # ULD alone works without any shared entry
    empty = (torch.tensor([], dtype=torch.long),) * 2
    assert ct.cross_tokenizer_kd(s, t, sp, tp, vocab_map=empty, uld_weight=1.0) > 0


# ----------------------------------------------------------------------------- diagnostics and projection


def test_alignment_report():
    s, t, sp, tp, vmap = setup_cross()
    mask = torch.ones(2, 6, dtype=torch.bool)
    rep = ct.alignment_report(sp, tp, mask, vmap, student_vocab_size=7, teacher_logits=t, chunk_size=3)
    assert rep.n_aligned == 9 and rep.n_positions == 12 and rep.aligned_share == pytest.approx(0.75)
    assert rep.vocab_overlap == pytest.approx(4 / 7) and rep.n_shared == 4
    want = sum(F.softmax(t[b, j], -1)[vmap[1]].sum() for b in range(2) for j in tp[b].tolist() if j >= 0) / 9
    assert rep.teacher_mass == pytest.approx(want.item(), rel=1e-5)
    assert ct.alignment_report(sp, tp, mask, vmap, 7).teacher_mass is None


def test_projected_kd_trains_projection_only_through_its_ce():
    s, t, sp, tp, _ = setup_cross()
    proj = ct.make_vocab_projection(9, 7, rank=4, top_k=3)
    labels = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(5))
    student = s.clone().requires_grad_(True)
    kd, ce = ct.projected_kd(student, t, sp, tp, proj, labels, temperature=2.0)
    kd.backward(retain_graph=True)
    assert student.grad.abs().sum() > 0 and proj.up.weight.grad is None
    ce.backward()
    assert proj.up.weight.grad.abs().sum() > 0 and proj.down.weight.grad.abs().sum() > 0
    none = torch.full((2, 2), -1)
    kd0, ce0 = ct.projected_kd(s, t, none, none, proj, labels)
    assert kd0.item() == 0.0 and ce0.item() == 0.0


# ----------------------------------------------------------------------------- the real tokenizers

MEDICAL_PARAGRAPH = (
    "A 58-year-old woman with a history of type 2 diabetes mellitus and hypertension presents with "
    "three days of fever (38.9 °C), productive cough and pleuritic chest pain. On examination, "
    "respiratory rate is 24/min, SpO2 91% on room air, and there are crackles over the right lower lobe. "
    "Chest X-ray shows right lower-lobe consolidation; CRP is 187 mg/L and procalcitonin 2.1 ng/mL.\n\n"
    "Assessment: community-acquired pneumonia (CURB-65 score 1). Start amoxicillin 1 g three times daily "
    "plus clarithromycin 500 mg twice daily for 5 days, review HbA1c and metformin dosing (eGFR 52 mL/min/1.73 m²), "
    "and re-assess within 48 hours."
)


@pytest.mark.slow
def test_real_smollm2_and_gemma_tokenizers_align_sensibly(tmp_path):
    """The real pair: SmolLM2 (student, byte-level BPE) taught by Gemma-3 270M (SentencePiece), real logits."""
    from distillm_edge.models import load_model

    s_model, student = load_model("smollm2-135m-instruct", progress=False)
    t_model, teacher = load_model("gemma-3-270m", progress=False)
    s_ids, t_ids = ct.shared_vocab(student, teacher, cache_dir=tmp_path)
    es, et = ct.encode(student, [MEDICAL_PARAGRAPH])[0], ct.encode(teacher, [MEDICAL_PARAGRAPH])[0]
    sp, tp = ct.align_batch([es], [et])
    mask = torch.zeros(1, len(es.ids), dtype=torch.bool)
    mask[0, :-1] = True  # positions that predict a next token
    with torch.no_grad():
        teacher_logits = t_model(torch.tensor([et.ids])).logits
    student_logits = s_model(torch.tensor([es.ids])).logits
    rep = ct.alignment_report(sp, tp, mask, (s_ids, t_ids), len(student), teacher_logits=teacher_logits)
    loss = ct.cross_tokenizer_kd(student_logits, teacher_logits, sp, tp, mask, vocab_map=(s_ids, t_ids),
                                 temperature=2.0, uld_weight=1.0)
    uld_only = ct.cross_tokenizer_kd(student_logits.detach(), teacher_logits, sp, tp, mask,
                                     vocab_map=(s_ids[:0], t_ids[:0]), temperature=2.0, uld_weight=1.0)
    print(f"\nSmolLM2 <- Gemma-3 on a {len(MEDICAL_PARAGRAPH)}-char medical paragraph: {len(es.ids)} student / "
          f"{len(et.ids)} teacher tokens; aligned {rep.n_aligned}/{rep.n_positions} = {rep.aligned_share:.1%}; "
          f"shared vocab {rep.n_shared} = {rep.vocab_overlap:.1%} of the student's; teacher mass on shared "
          f"entries {rep.teacher_mass:.1%}; loss (tau 2) {loss.item():.3f} of which ULD {uld_only.item():.3f}")
    assert ct.token_style(student) == "byte_level" and ct.token_style(teacher) == "sentencepiece"
    assert rep.aligned_share > 0.5
    assert 0.3 < rep.vocab_overlap <= 1.0
    assert 0.5 < rep.teacher_mass <= 1.0
    # every aligned pair: both models predict the continuation of the same text prefix
    for i, j in zip(sp[0].tolist(), tp[0].tolist()):
        assert student.decode(es.ids[: i + 1]) == teacher.decode(et.ids[: j + 1], skip_special_tokens=True)
    # common words map to their counterpart, e.g. " pneumonia" / "▁pneumonia", "\n"
    shared = dict(zip(s_ids.tolist(), t_ids.tolist()))
    for word in (" pneumonia", " mg", "\n", "the"):
        sid = student.convert_tokens_to_ids(student.tokenize(word))
        if len(sid) == 1:
            assert sid[0] in shared, word
            assert teacher.decode([shared[sid[0]]]) == word
    loss.backward()
    assert torch.isfinite(loss) and loss > uld_only > 0
    assert all(torch.isfinite(p.grad).all() for p in s_model.parameters() if p.grad is not None)
