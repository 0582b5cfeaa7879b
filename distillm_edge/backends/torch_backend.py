"""PyTorch / transformers backend: any Hugging Face checkpoint, embedded name or Hub id.

Generation uses the model's KV cache and yields one token at a time (greedy by default), so
latency can be measured from outside; scoring runs one forward pass over the whole sequence.

Test: ``pytest tests/backends``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np

from distillm_edge.backends.base import (
    BackendInfo,
    gather_token_logprobs,
    hf_chat_ids,
    hf_chat_text,
    hf_is_special_token,
    sample,
)


class TorchBackend:
    def __init__(self, spec: str, dtype: str = "float32", device: str = "cpu", quantization: str = "none",
                 threads: int = 0, model=None, tokenizer=None):
        import torch

        from distillm_edge.models import LoadOptions, load_model

        if threads:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        if model is None:
            model, tokenizer = load_model(spec, LoadOptions(dtype=dtype, device=device, quantization=quantization))
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.config.vocab_size)
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_token_ids = frozenset(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.info = BackendInfo(
            backend="torch", model=spec, path=str(getattr(model, "name_or_path", spec)),
            dtype=quantization if quantization != "none" else str(next(model.parameters()).dtype).replace("torch.", ""),
            threads=torch.get_num_threads(), load_seconds=time.perf_counter() - started,
        )

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def chat_text(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return hf_chat_text(self.tokenizer, messages, add_generation_prompt)

    def chat_ids(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        return hf_chat_ids(self.tokenizer, messages, add_generation_prompt)  # = tokenize(chat_text(...), False)

    def is_special_token(self, token: int) -> bool:
        return hf_is_special_token(self.tokenizer, token)

    def _logits(self, ids: Sequence[int]):
        import torch

        with torch.inference_mode():
            x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
            return self.model(input_ids=x).logits[0].float()

    def next_token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        return torch.log_softmax(self._logits(ids), dim=-1).cpu().numpy()

    def token_logprobs(self, ids: Sequence[int], start: int = 1) -> np.ndarray:
        return gather_token_logprobs(self.next_token_logprobs(ids), ids, start)

    def stream(self, ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
               top_p: float = 1.0) -> Iterator[int]:
        import torch
        from transformers import DynamicCache

        rng = np.random.default_rng(seed)
        cache = DynamicCache(config=self.model.config)
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                out = self.model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
                row = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu().numpy()
                token = sample(row, temperature, rng, top_p)
                yield token
                if token in self.eos_token_ids:
                    return
                x = torch.tensor([[token]], dtype=torch.long, device=self.device)

    def close(self) -> None:
        self.model = None

    # --- batched scoring (see base.last_logprobs / base.continuation_logprobs) ------------------

    def last_logprobs(self, contexts: Sequence[Sequence[int]], prefix: Sequence[int] = (),
                      batch_tokens: int = 4096) -> np.ndarray:
        """[len(contexts), V] next-token log-probs after ``prefix + context``, in padded batches."""
        if not prefix and any(not c for c in contexts):
            raise ValueError("cannot score the next token of an empty sequence")
        out = np.empty((len(contexts), self.vocab_size), dtype=np.float32)
        for i, rows in self._scored_rows(contexts, prefix, [[len(c) - 1] for c in contexts], batch_tokens):
            out[i] = rows[0]
        return out

    def continuation_logprobs(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], prefix: Sequence[int] = (),
                              batch_tokens: int = 4096) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per (context, continuation): log p of each continuation token and whether it was the argmax."""
        if any(not cont for _, cont in pairs) or (not prefix and any(not ctx for ctx, _ in pairs)):
            raise ValueError("continuation scoring needs a non-empty context (or prefix) and continuation")
        seqs = [[*ctx, *cont] for ctx, cont in pairs]
        wanted = [list(range(len(ctx) - 1, len(s) - 1)) for (ctx, _), s in zip(pairs, seqs)]
        out: list = [None] * len(pairs)
        for i, rows in self._scored_rows(seqs, prefix, wanted, batch_tokens):
            targets = np.asarray(pairs[i][1], dtype=np.int64)
            out[i] = (rows[np.arange(len(targets)), targets].astype(np.float32), rows.argmax(-1) == targets)
        return out

    def _scored_rows(self, seqs, prefix, wanted, batch_tokens, logits_bytes: int = 512 << 20):
        """Yield ``(i, rows)``: float32 log-softmax rows of ``prefix + seqs[i]`` at positions ``wanted[i]``.

        Positions index into ``seqs[i]`` (ascending; -1 is the last prefix token). Sequences run in
        length-sorted, right-padded batches of at most ``batch_tokens`` tokens, with logits computed
        only at the wanted positions (``logits_to_keep``) and at most ``logits_bytes`` of them at once.
        Right padding needs no attention mask: under the causal mask a real token only sees earlier,
        real tokens. The prefix runs once; its KV cache is copied for each batch.
        """
        import copy

        import torch

        prefix = list(prefix)
        prefix_cache, prefix_last = None, None
        max_rows = max(1, logits_bytes // (4 * self.vocab_size))
        with torch.inference_mode():
            if prefix:
                out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True, logits_to_keep=1)
                prefix_cache = out.cache if hasattr(out, "cache") else out.past_key_values
                prefix_last = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu().numpy()
            order = sorted((i for i in range(len(seqs)) if seqs[i]), key=lambda i: -len(seqs[i]))
            for i in range(len(seqs)):  # an empty sequence after a prefix: only the prefix's last row
                if not seqs[i]:
                    yield i, prefix_last[None]
            start = 0
            while start < len(order):
                batch, need = [order[start]], {p for p in wanted[order[start]] if p >= 0}
                longest = len(seqs[order[start]])
                for i in order[start + 1 :]:
                    grown = need | {p for p in wanted[i] if p >= 0}
                    if (len(batch) + 1) * longest > batch_tokens or (len(batch) + 1) * len(grown) > max_rows:
                        break
                    batch.append(i)
                    need = grown
                start += len(batch)
                x = torch.zeros((len(batch), longest), dtype=torch.long, device=self.device)
                for r, i in enumerate(batch):
                    x[r, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
                kwargs: dict = {"use_cache": prefix_cache is not None}
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)
                    if len(batch) > 1:
                        cache.batch_repeat_interleave(len(batch))
                    kwargs["cache"] = cache
                positions = sorted(need)
                column = {p: k for k, p in enumerate(positions)}
                keep = torch.tensor(positions, dtype=torch.long, device=self.device)
                logits = self.model(input_ids=x, logits_to_keep=keep, **kwargs).logits  # [B, K, V]
                for r, i in enumerate(batch):
                    cols = [column[p] for p in wanted[i] if p >= 0]
                    rows = torch.log_softmax(logits[r, cols].float(), dim=-1).cpu().numpy()
                    if wanted[i] and wanted[i][0] < 0:
                        rows = np.concatenate([prefix_last[None], rows])
                    yield i, rows
