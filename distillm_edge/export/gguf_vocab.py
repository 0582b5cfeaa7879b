"""The tokenizer part of a GGUF file, read from a Hugging Face tokenizer so llama.cpp tokenizes alike.

A GGUF file carries the whole tokenizer: every token string with its type (normal, control =
special, user-defined = added but not special, unused = padding of the embedding matrix), the BPE
merges, the BOS/EOS/UNK/PAD ids, whether a BOS/EOS is added, the chat template, and the
*pre-tokenizer kind*: llama.cpp re-implements each known byte-level BPE pre-tokenizer (the regex
that splits text before merging) under a name. llama.cpp's converter picks the kind by hashing the
ids of a probe string; we use that hash as the first guess, so a file gets the converter's name
whenever llama.cpp tokenizes identically under it (then "gpt-2" when the tokenizer's pre-tokenizer
is plain GPT-2 byte-level), and *check* it: a vocab-only GGUF is
written and loaded by llama.cpp, which must tokenize ``CHECK_TEXT`` (the probe plus fractions,
superscripts, scripts, code, whitespace) exactly as the Hugging Face tokenizer does. If the guess
fails, the other known kinds are tried; if none matches, export stops with an error.

The check matters for our own models: the embedded SmolLM2 is materialized from a GGUF by
transformers, whose tokenizer keeps the GPT-2 split but drops upstream SmolLM2's "one digit per
piece" rule. The probe hash still says "smollm", yet llama.cpp's smollm kind would split " ½" or
" ²" differently; the check selects "gpt-2", which matches the tokenizer the students use.

Only byte-level BPE tokenizers are supported (Llama-3, SmolLM/SmolLM2, GPT-2 and Qwen2 style);
SentencePiece vocabularies (Llama-2, Mistral v0.1) get a clear error.

Test: ``pytest tests/export/test_gguf.py`` (round trip) and ``tests/export/test_gguf_llamacpp.py``
(llama.cpp tokenizes a varied sample exactly like the Hugging Face tokenizer).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from distillm_edge.errors import UserError

# llama.cpp's probe string (the hashes below are of the ids it tokenizes to); it must stay byte-exact.
PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

CHECK_TEXT = PROBE + (
    "\n½ ¾ ² ³ ₂ 42nd 3rd 1,000,000 3.14 10^-6 0x1F ٣ ５ Ⅻ µg/kg m² H₂O 38.9°C ≥ ≤ ± → ×\n"
    "Müller café naïve 心肌梗死 инфаркт احتشاء हृदयाघात 💊🩺❤️‍🩹👩🏽‍⚕️\n"
    "def f(x):\n    return x**2  # ok\n\tif a != b: {'k': [1, 2]}\n"
    "   lead   and trailing   \n\n\n I'M you'LL THEY'RE we've\r\n<|im_start|>user\nhi<|im_end|>\n"
)

# probe hash -> llama.cpp pre-tokenizer name, for the byte-level BPE families we support
KNOWN_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama-3.x
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2 / Qwen2.5
}

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # gguf.TokenType values


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def probe_hash(tokenizer) -> str:
    return sha256(str(tokenizer.encode(PROBE)).encode()).hexdigest()


def guess_pre_tokenizer(tokenizer) -> str | None:
    """llama.cpp's converter's answer: the kind whose probe hash matches (None if unknown)."""
    return KNOWN_PRE_TOKENIZERS.get(probe_hash(tokenizer))


def _plain_gpt2_split(tokenizer) -> bool:
    """Whether the pre-tokenizer is nothing but GPT-2's byte-level regex (then "gpt-2" is tried first)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = json.loads(backend.to_str()).get("pre_tokenizer") if backend is not None else None
    return bool(pre) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)


def settle_pre_tokenizer(vocab: GGUFVocab, tokenizer, write_stub: Callable[[Path, GGUFVocab], None],
                         workdir: Path) -> GGUFVocab:
    """``vocab`` with the first pre-tokenizer kind under which llama.cpp tokenizes ``CHECK_TEXT``
    exactly like ``tokenizer`` (tried in order: the probe-hash guess, i.e. llama.cpp's converter's
    own choice, then "gpt-2" for a plain GPT-2 split, then the other known kinds). ``write_stub(path, vocab)`` writes a
    tensor-less GGUF (metadata + vocab) that llama.cpp can load vocab-only."""
    import llama_cpp

    from distillm_edge.export.gguf_quantize import captured_llama_log

    expected = tokenizer(CHECK_TEXT, add_special_tokens=False).input_ids
    guess = guess_pre_tokenizer(tokenizer)
    plain = "gpt-2" if _plain_gpt2_split(tokenizer) else None
    candidates = [k for k in dict.fromkeys([guess, plain, *KNOWN_PRE_TOKENIZERS.values()]) if k]
    stub = workdir / f".vocab-check-{os.getpid()}.gguf"
    try:
        for kind in candidates:
            candidate = dataclasses.replace(vocab, pre=kind)
            write_stub(stub, candidate)
            with captured_llama_log():
                llm = llama_cpp.Llama(str(stub), vocab_only=True, verbose=False)
            try:
                got = llm.tokenize(CHECK_TEXT.encode("utf-8"), add_bos=False, special=True)
            finally:
                llm.close()
            if got == expected:
                return candidate
    finally:
        stub.unlink(missing_ok=True)
    raise UserError(
        f"llama.cpp cannot reproduce this tokenizer's pre-tokenizer (probe hash {probe_hash(tokenizer)[:16]}…; "
        f"tried {', '.join(candidates)}): a GGUF would tokenize differently from the source model. "
        "Export with --format onnx, which keeps the Hugging Face tokenizer as is."
    )


def _bpe_merges(tokenizer) -> list[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError("GGUF export needs a fast (tokenizer.json) tokenizer; this checkpoint has none.")
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE" or not model.get("merges"):
        raise UserError(
            f"GGUF export supports byte-level BPE tokenizers only; this one is '{model.get('type')}' "
            "(SentencePiece vocabularies such as Llama-2/Mistral v0.1 are not supported). Use --format onnx."
        )
    return [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def _adds(tokenizer, token_id: int | None) -> tuple[bool, bool]:
    """Whether encoding plain text adds ``token_id`` at the start / end (behaviour, not config flags)."""
    if token_id is None:
        return False, False
    ids = tokenizer("a").input_ids
    return ids[0] == token_id, ids[-1] == token_id


def vocab_from_tokenizer(tokenizer, vocab_size: int) -> GGUFVocab:
    """Everything llama.cpp needs to tokenize like ``tokenizer``, padded to ``vocab_size`` entries."""
    merges = _bpe_merges(tokenizer)
    pre = guess_pre_tokenizer(tokenizer) or "gpt-2"  # settled by settle_pre_tokenizer
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise UserError(
            f"the tokenizer has token id {max(by_id)} but the model's vocab_size is {vocab_size}: "
            "the checkpoint and its tokenizer do not belong together."
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(CONTROL if added[i].special else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    add_bos, _ = _adds(tokenizer, tokenizer.bos_token_id)
    _, add_eos = _adds(tokenizer, tokenizer.eos_token_id)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return GGUFVocab(
        tokens=tokens, token_types=types, merges=merges, pre=pre,
        bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, unk_id=tokenizer.unk_token_id,
        pad_id=tokenizer.pad_token_id, add_bos=add_bos, add_eos=add_eos, chat_template=template,
    )


def add_vocab(writer, vocab: GGUFVocab) -> None:
    """Write ``vocab`` into a ``gguf.GGUFWriter``."""
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for token_id, add in ((vocab.bos_id, writer.add_bos_token_id), (vocab.eos_id, writer.add_eos_token_id),
                          (vocab.unk_id, writer.add_unk_token_id), (vocab.pad_id, writer.add_pad_token_id)):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
