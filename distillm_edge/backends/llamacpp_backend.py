"""llama.cpp backend (through llama-cpp-python): runs a GGUF file, or an embedded model's shipped GGUF.

Same interface as the other backends (``base.Backend``). Log-likelihoods come from llama.cpp's own
logits: we drive ``llama_decode`` ourselves with per-token output flags, so the output layer runs
only at positions that are scored (the Llama object is created with ``logits_all=False``: with
``True`` llama-cpp-python keeps an ``n_ctx x vocab`` float32 array, 4 GiB for Gemma's 262k
vocabulary at n_ctx 4096, and computes logits at every position). The KV cache of the last
sequence is kept, and the next call reuses its longest common token prefix: few-shot prompts,
the choices of one question and token-by-token generation all evaluate only their new tokens.

Tokenization is llama.cpp's (``add_bos`` follows the GGUF's ``tokenizer.ggml.add_bos_token``,
special tokens parsed), and chats use the GGUF's ``tokenizer.chat_template`` rendered with
jinja2 as transformers does (for an embedded model without one, e.g. Gemma-3 270M, the
registry's template). The underlying ``llama_cpp.Llama`` is ``.native``; ``perf()`` returns
llama.cpp's own counters (prompt-eval and eval milliseconds and token counts).

Test: ``pytest tests/backends/test_llamacpp_backend.py`` (slow: runs the embedded SmolLM2 GGUF).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np

from distillm_edge.backends.base import BackendInfo, common_prefix, log_softmax, sample
from distillm_edge.errors import UserError

_END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>")


class LlamaCppBackend:
    def __init__(self, spec: str, threads: int = 0, n_ctx: int = 8192, n_batch: int = 512,
                 chat_template: str | None = None, verbose: bool = False):
        import llama_cpp
        import psutil
        from llama_cpp import Llama

        from distillm_edge.models.registry import EMBEDDED
        from distillm_edge.models.sources import check_gguf, gguf_path, resolve

        source = resolve(spec)
        path = gguf_path(source)
        threads = threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1  # physical cores, as llama.cpp
        started = time.perf_counter()
        try:
            self.native = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                                n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=verbose)
        except (ValueError, RuntimeError) as exc:
            check_gguf(path)  # a cut-off or non-GGUF file gets its own message
            raise UserError(f"{path}: llama.cpp could not load this GGUF file ({exc}).") from None
        self._lib = llama_cpp
        self._batch = llama_cpp._internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.vocab_size = int(self.native.n_vocab())
        self._cached: list[int] = []  # the tokens whose keys/values are in the KV cache (sequence 0)
        vocab = self.native._model.vocab
        eos = {int(self.native.token_eos()), int(llama_cpp.llama_vocab_eot(vocab))}
        for marker in _END_OF_TURN:
            ids = self.native.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1 and llama_cpp.llama_vocab_is_eog(vocab, ids[0]):
                eos.add(int(ids[0]))
        self.eos_token_ids = frozenset(t for t in eos if t >= 0)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        meta = self.native.metadata
        self.chat_template = chat_template or meta.get("tokenizer.chat_template") or (
            EMBEDDED[source.spec].chat_template if source.kind == "embedded" else None)
        desc = self.native._model.desc()  # e.g. "gemma3 270M Q4_K - Medium"
        quant = desc.split(" ", 2)[-1].replace(" - Medium", "_M").replace(" - Small", "_S").replace(" - Large", "_L")
        self.info = BackendInfo(
            backend="gguf", model=spec, path=str(path), dtype=quant,
            threads=threads, load_seconds=time.perf_counter() - started,
            extra={"n_ctx": n_ctx, "n_batch": n_batch, "desc": desc,
                   "llama_cpp_python": getattr(llama_cpp, "__version__", "")},
        )

    # --- text ------------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.native.tokenize(text.encode("utf-8"), add_bos=add_special_tokens and self.add_bos,
                                         special=True))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.native.detokenize(list(ids), special=False).decode("utf-8", errors="replace")

    def _token_text(self, token: int) -> str:
        return self.native.detokenize([token], special=True).decode("utf-8", errors="replace")

    def chat_text(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """``messages`` rendered by the chat template (special tokens as text, not yet tokenized)."""
        if not self.chat_template:
            raise UserError(
                f"{self.info.path} carries no chat template (GGUF key tokenizer.chat_template); pass "
                "chat_template= to the backend or use a model whose GGUF has one."
            )
        return self._compiled_template().render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self._token_text(self.native.token_bos()), eos_token=self._token_text(self.native.token_eos()),
        )

    def chat_ids(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        return self.tokenize(self.chat_text(messages, add_generation_prompt), add_special_tokens=False)

    def is_special_token(self, token: int) -> bool:
        """Whether llama.cpp's tokenizer (special tokens parsed) cuts ``token``'s text out before BPE:
        the control, user-defined and unknown tokens, the set llama.cpp itself matches literally."""
        lib = self._lib
        literal = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_USER_DEFINED | lib.LLAMA_TOKEN_ATTR_UNKNOWN
        return bool(lib.llama_vocab_get_attr(self.native._model.vocab, int(token)) & literal)

    def _compiled_template(self):
        """The chat template compiled once (compiling costs ~20 ms; chat renders it on every turn)."""
        if getattr(self, "_template", None) is None or self._template_source != self.chat_template:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                raise UserError(f"chat template of {self.info.path}: {message}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            self._template, self._template_source = env.from_string(self.chat_template), self.chat_template
        return self._template

    # --- decoding with prefix reuse --------------------------------------------------------------

    def _decode(self, ids: Sequence[int], first: int) -> Iterator[tuple[int, np.ndarray]]:
        """Evaluate ``ids`` (reusing the cached common prefix); yield ``(position, logits)`` blocks.

        Logits (float32, [n, V], a copy) are produced for every position >= ``first``; blocks come
        in order, one per llama.cpp batch. Positions before ``first`` that are already cached are
        not recomputed.
        """
        ids = [int(t) for t in ids]
        if not 0 <= first < len(ids):
            raise ValueError(f"first={first} must index into the {len(ids)} tokens being decoded")
        if len(ids) > self.n_ctx:
            raise UserError(f"a sequence of {len(ids)} tokens exceeds the llama.cpp context of {self.n_ctx}; "
                            "open the backend with a larger n_ctx or shorten the prompt.")
        keep = common_prefix(self._cached, ids[:first])
        ctx = self.native._ctx
        if not ctx.kv_cache_seq_rm(0, keep, -1):  # this memory cannot drop a suffix: start over
            ctx.kv_cache_seq_rm(0, 0, -1)
            keep = 0
        del self._cached[keep:]
        batch = self._batch.batch
        for start in range(keep, len(ids), self.n_batch):
            chunk = ids[start : start + self.n_batch]
            n_out = 0
            batch.n_tokens = len(chunk)
            for j, token in enumerate(chunk):
                batch.token[j] = token
                batch.pos[j] = start + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = 0
                wanted = start + j >= first
                batch.logits[j] = wanted
                n_out += wanted
            try:
                ctx.decode(self._batch)
            except RuntimeError as exc:
                self._cached.clear()
                ctx.kv_cache_seq_rm(0, 0, -1)
                raise RuntimeError(f"llama.cpp decode failed on {self.info.path}: {exc}") from None
            self._cached.extend(chunk)
            if n_out:
                ptr = self._lib.llama_get_logits(ctx.ctx)
                flat = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                             shape=(n_out * self.vocab_size,))
                yield start + len(chunk) - n_out, flat.reshape(n_out, self.vocab_size).copy()
        # keep llama-cpp-python's own view of the context in step, so .native stays usable
        self.native.input_ids[: len(self._cached)] = self._cached
        self.native.n_tokens = len(self._cached)

    def next_token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        return np.concatenate([log_softmax(block) for _, block in self._decode(ids, 0)])

    def token_logprobs(self, ids: Sequence[int], start: int = 1) -> np.ndarray:
        if start < 1:
            raise ValueError("start must be >= 1: the first token has no prefix to be scored against")
        out = []
        for pos, block in self._decode(ids, start - 1):
            rows = log_softmax(block)
            targets = np.asarray(ids[pos + 1 : pos + 1 + len(rows)], dtype=np.int64)
            out.append(rows[np.arange(len(targets)), targets])
        return np.concatenate(out) if out else np.empty(0, np.float32)

    def last_logprobs(self, contexts: Sequence[Sequence[int]], prefix: Sequence[int] = ()) -> np.ndarray:
        """[len(contexts), V] next-token log-probs after ``prefix + context`` (prefix KV reused)."""
        out = np.empty((len(contexts), self.vocab_size), dtype=np.float32)
        for i, ctx in enumerate(contexts):
            ids = [*prefix, *ctx]
            if not ids:
                raise ValueError("cannot score the next token of an empty sequence")
            for _, block in self._decode(ids, len(ids) - 1):
                out[i] = log_softmax(block[-1])
        return out

    def continuation_logprobs(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                              prefix: Sequence[int] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per (context, continuation): log p of each continuation token and whether it was the argmax."""
        out = []
        for ctx, cont in pairs:
            ids = [*prefix, *ctx, *cont]
            start = len(prefix) + len(ctx)
            if start < 1 or not cont:
                raise ValueError("continuation scoring needs a non-empty context (or prefix) and continuation")
            lps, greedy = [], []
            for pos, block in self._decode(ids[:-1], start - 1):
                rows = log_softmax(block)
                targets = np.asarray(ids[pos + 1 : pos + 1 + len(rows)], dtype=np.int64)
                lps.append(rows[np.arange(len(targets)), targets])
                greedy.append(rows.argmax(-1) == targets)
            out.append((np.concatenate(lps).astype(np.float32), np.concatenate(greedy)))
        return out

    def stream(self, ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
               top_p: float = 1.0) -> Iterator[int]:
        rng = np.random.default_rng(seed)
        seq = [int(t) for t in ids]
        for _ in range(max_new_tokens):
            row = None
            for _, block in self._decode(seq, len(seq) - 1):
                row = block[-1]
            token = sample(log_softmax(row), temperature, rng, top_p)
            yield token
            if token in self.eos_token_ids:
                return
            seq.append(token)

    # --- introspection ---------------------------------------------------------------------------

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters since load (or the last ``reset_perf``)."""
        data = self._lib.llama_perf_context(self.native._ctx.ctx)
        return {"prompt_eval_ms": data.t_p_eval_ms, "prompt_tokens": data.n_p_eval,
                "eval_ms": data.t_eval_ms, "eval_tokens": data.n_eval, "load_ms": data.t_load_ms}

    def reset_perf(self) -> None:
        self._lib.llama_perf_context_reset(self.native._ctx.ctx)

    def close(self) -> None:
        if getattr(self, "native", None) is not None:
            self._batch.close()
            self.native.close()
            self.native = None
