"""Benchmark: chat's time from Enter to the first visible token vs the backend's own time to first
token, and the on-screen streaming rate vs the backend's decode rate — side by side, one run.

For the same prompt (the chat template over the system prompt and one question, greedy decoding so
both paths produce the same tokens), each repeat measures:

- **backend**: ``backend.stream(prompt_ids)`` called directly — TTFT = call → first token id;
  decode rate = (tokens − 1) / (last token − first token). Its chat template + tokenizer time for
  the same messages is timed apart and printed on its own line (the app's figure includes it).
- **app**: the real Textual app (headless, 80x24, the question set in its input) — TTFT = the
  moment Enter is pressed (delivered as a terminal's driver delivers a key: :func:`press_enter`) →
  the first draft text is on screen (``DraftView.first_shown_at``: after the screen
  refreshed with it); rate = (tokens − 1) / (last text on screen − first text on screen). This
  includes everything the chat does: context fit, red-flag check, worker start, detokenization,
  message passing, Markdown rendering. The worker's rate includes its one pause after the first
  token (decoding waits until the screen shows it). Also printed: the UI thread's CPU time from
  Enter to the first visible token, which does not depend on other load on the machine.

llama.cpp keeps the KV cache of its last sequence and reuses a common prefix, so before every
measured run (both paths) an unrelated text is scored to flush it: each run prefills the whole
prompt. With ``--history N`` the conversation already holds N approved exchanges (questions and
answers from the built-in corpus): they are in the prompt and on screen, as when a clinician asks
the next question, and before every run (both paths) the backend's cache is primed with the
conversation so far (system prompt + history, as llama.cpp holds it after the last answer), so each
run prefills only the new question. This is the case where the screen's cost weighs most: a short
prefill behind a long transcript, every widget of which a layout visits. The two paths alternate
order per repeat; medians over ``--repeats`` are printed with their ratio (target: app TTFT within
10% of the backend's), and the load average beside them.

Every model call runs on the app's one worker thread (the event loop's default executor, as the
app's generation does): llama.cpp's OpenMP keeps a pool of spinning threads per calling thread, and
with two pools on 2 cores libgomp throttles its spinning, which slowed decoding ~1.6× in the test.

The medians ratio compares two populations taken minutes apart; the "paired" line takes the
median of app/backend over the adjacent runs of each repeat (robust to the machine's slow phases).

Run: ``python benchmarks/chat_latency.py`` (embedded SmolLM2 GGUF; ``--model/--backend`` for
others, ``--repeats 7 --max-tokens 48 --threads 1``; ``--history 20`` for a long conversation). The
"chat overhead" line is the robust figure on a loaded machine: it subtracts, inside each app run,
the backend's own TTFT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from textual import events

from distillm_edge.backends.base import common_prefix
from distillm_edge.backends.generate import GenerationSettings
from distillm_edge.chat.app import build_app
from distillm_edge.chat.config import DEFAULT_SYSTEM_PROMPT
from distillm_edge.chat.run import open_chat_backend
from distillm_edge.chat.session import ChatSession, State
from distillm_edge.chat.store import ConversationStore
from distillm_edge.chat.widgets.draft import DraftView
from distillm_edge.data.readers import BUILTIN_CORPUS
from distillm_edge.safety.audit import AuditLog
from distillm_edge.safety.redflags import load_rules

QUESTION = "What are the first-line treatments for high blood pressure in adults?"
FLUSH = "An unrelated sentence about the weather, scored to push the prompt out of the KV cache."


def flush(backend, prime: list[int]) -> None:
    """Before a run: the cache holds the conversation so far (``prime``) or, with none, an unrelated text."""
    backend.token_logprobs(prime or backend.tokenize(FLUSH))


def seed_history(store: ConversationStore, n: int) -> str:
    """A saved conversation of ``n`` approved exchanges from the built-in corpus; returns its id."""
    with open(BUILTIN_CORPUS, encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    conv = store.create(rows[0]["question"][:60])
    for row in rows:
        store.add_exchange(conv.id, row["question"], row["answer"], "benchmark")
    return conv.id


def backend_run(backend, messages: list[dict], max_tokens: int, prime: list[int]) -> dict:
    """The backend alone: TTFT from ``stream(ids)`` (the table), and the time the chat template and
    tokenizer took to make ``ids`` from the messages, as a chat API spends it before that call."""
    flush(backend, prime)
    tokenize_started = time.perf_counter()
    prompt_ids = backend.chat_ids(messages)
    started = time.perf_counter()
    stamps = []
    for token in backend.stream(prompt_ids, max_tokens, temperature=0.0):
        if token in backend.eos_token_ids:  # the chat ends its draft there too (not a token of text)
            break
        stamps.append(time.perf_counter())
    return {"ttft": stamps[0] - started, "tokens": len(stamps), "tokenize": started - tokenize_started,
            "rate": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")}


def press_enter(app) -> None:
    """Deliver Enter as a terminal does: the driver's input thread hands the key event to the app's
    loop, and nothing else runs. ``pilot.press`` would also wait for the app to go idle and then
    queue a callback on every widget (``Pilot._wait_for_screen``), UI-thread work in the middle of
    the prefill that no terminal does (``--pilot-enter`` measures with it)."""
    key = events.Key("enter", "\r")
    key.set_sender(app)
    app._driver.send_message(key)


async def app_run(pilot, session: ChatSession, prime: list[int], pilot_enter: bool = False) -> dict:
    screen = pilot.app.chat
    screen.input.value = QUESTION  # set, not typed: each app run stays close in time to its paired backend run
    await pilot.pause()
    await asyncio.to_thread(flush, session.backend, prime)
    started, started_cpu = time.perf_counter(), time.thread_time()  # the app runs in this thread
    if pilot_enter:
        await pilot.press("enter")
    else:
        press_enter(pilot.app)
    while session.state is not State.DRAFT:
        await asyncio.sleep(0.05)  # the timestamps come from the app; polling slowly leaves it the CPU
    await pilot.pause(0.05)  # let the last refresh land
    view = next(v for v in screen.query(DraftView) if v.display)  # the next draft's box waits hidden
    worker = session.draft.turn.result  # stream_text's own clock, in the generation worker
    tokens = worker.completion_tokens
    result = {"ttft": view.first_shown_at - started, "tokens": tokens,
              "rate": (tokens - 1) / (view.last_shown_at - view.first_shown_at) if tokens > 1 else float("nan"),
              "worker_ttft": worker.ttft_s, "ui_cpu": view.first_shown_cpu - started_cpu,
              "to_ui": view.first_text_at - started, "ui_cpu_to_text": view.first_text_cpu - started_cpu,
              "worker_rate": (tokens - 1) / (worker.total_s - worker.ttft_s) if tokens > 1 else float("nan")}
    await pilot.press("escape")  # cancel the draft: the next repeat sends the same prompt again
    while session.state is not State.IDLE:
        await pilot.pause(0.005)
    return result


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend = open_chat_backend(args.model, args.backend, **({"threads": args.threads} if args.threads else {}))
        settings = GenerationSettings(max_new_tokens=args.max_tokens, temperature=0.0)
        session = ChatSession(lambda: backend, load_rules(), AuditLog(Path(tmp) / "audit.sqlite3"),
                              ConversationStore(Path(tmp) / "chat.sqlite3"), DEFAULT_SYSTEM_PROMPT, settings,
                              clinician="benchmark")
        session.load()
        if args.history:
            session.resume(seed_history(session.store, args.history))
        system = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
        messages = [*system, *session.history, {"role": "user", "content": QUESTION}]
        prompt_ids = backend.chat_ids(messages)
        prime = []  # with --history: the conversation so far, as the backend holds it after the last answer
        if args.history:
            so_far = backend.chat_ids([*system, *session.history])
            prime = so_far[:common_prefix(so_far, prompt_ids)]
        info = backend.info
        print(f"model {info.model} · {info.backend} {info.dtype} · {info.threads} threads · prompt "
              f"{len(prompt_ids)} tokens" + (f" ({len(prime)} cached: {args.history} exchanges before it)"
                                             if args.history else "") +
              f" · up to {args.max_tokens} new tokens · {args.repeats} repeats")
        rows = {"backend": [], "app": []}
        async with build_app(session, model_label=args.model, export_dir=tmp).run_test(size=(80, 24)) as pilot:
            while session.state is not State.IDLE:
                await pilot.pause(0.01)
            if args.history:
                pilot.app.chat._show_conversation()  # as resuming it from the conversations list does
                await pilot.pause()
            await app_run(pilot, session, prime)  # warm-up (first Markdown render, worker pool)
            await asyncio.to_thread(backend_run, backend, messages, args.max_tokens, prime)
            for r in range(args.repeats):
                order = ("backend", "app") if r % 2 == 0 else ("app", "backend")
                for path in order:
                    rows[path].append(await asyncio.to_thread(backend_run, backend, messages, args.max_tokens, prime)
                                      if path == "backend"
                                      else await app_run(pilot, session, prime, args.pilot_enter))
        assert all(row["tokens"] == rows["backend"][0]["tokens"] for rows_ in rows.values() for row in rows_), \
            "greedy runs should produce the same number of tokens on both paths"

    def med(path, key):
        return statistics.median(row[key] for row in rows[path])

    ttft_b, ttft_w, ttft_a = med("backend", "ttft"), med("app", "worker_ttft"), med("app", "ttft")
    rate_b, rate_w, rate_a = med("backend", "rate"), med("app", "worker_rate"), med("app", "rate")
    print(f"{'median of ' + str(args.repeats):26}{'backend':>10}{'app: worker':>13}{'app: screen':>13}"
          f"{'screen/backend':>16}")
    print(f"{'time to first token, ms':26}{ttft_b * 1000:10.1f}{ttft_w * 1000:13.1f}{ttft_a * 1000:13.1f}"
          f"{ttft_a / ttft_b:16.3f}")
    print(f"{'tokens/s after the first':26}{rate_b:10.1f}{rate_w:13.1f}{rate_a:13.1f}{rate_a / rate_b:16.3f}")
    for path in ("backend", "app"):
        print(f"  per-repeat TTFT ms, {path:8}{[round(r['ttft'] * 1000, 1) for r in rows[path]]}")
    print(f"  per-repeat TTFT ms, worker  {[round(r['worker_ttft'] * 1000, 1) for r in rows['app']]}")
    # The same comparison paired in time: each app run against the backend-alone run next to it (the
    # two alternate order per repeat). This 2-core VM runs in fast and slow phases of some seconds
    # (a backend TTFT of ~150 or ~175 ms, also seen alone), which the separate medians above can
    # straddle; an adjacent pair mostly shares its phase.
    paired = statistics.median(a["ttft"] / b["ttft"] for a, b in zip(rows["app"], rows["backend"]))
    print(f"paired, each app run / the adjacent backend run: median {paired:.3f} ({paired - 1:+.1%})")
    slower = statistics.median(a["worker_ttft"] - b["ttft"] for a, b in zip(rows["app"], rows["backend"]))
    print(f"  of which the model's own call -> first token in the app vs the adjacent run alone: median "
          f"{slower * 1000:+.1f} ms")
    # What the chat adds, measured within each app run (so the load's effect on the model cancels):
    # Enter -> on screen, minus the backend's own call -> first token inside that same run.
    overheads = sorted(r["ttft"] - r["worker_ttft"] for r in rows["app"])
    overhead = statistics.median(overheads)
    print(f"chat overhead to the first visible token: median {overhead * 1000:.1f} ms per run = "
          f"{overhead / ttft_w:.1%} of the backend's TTFT in the same runs (target <= 10%); "
          f"screen/backend medians {ttft_a / ttft_b - 1:+.1%}; slowest runs "
          f"{', '.join(f'{x * 1000:.1f}' for x in overheads[-3:])} ms")
    tokenize = statistics.median(r["tokenize"] for r in rows["backend"])
    with_template = statistics.median(a["ttft"] / (b["ttft"] + b["tokenize"]) for a, b in zip(rows["app"], rows["backend"]))
    print(f"backend's chat template + tokenizer for this prompt: median {tokenize * 1000:.1f} ms; counted in the "
          f"backend's TTFT (as a chat API spends it), paired app/backend: {with_template:.3f} ({with_template - 1:+.1%})")
    print(f"UI thread's CPU time from Enter to the first visible token: median "
          f"{statistics.median(r['ui_cpu'] for r in rows['app']) * 1000:.1f} ms (the model's prefill shares the cores with it), "
          f"{statistics.median(r['ui_cpu_to_text'] for r in rows['app']) * 1000:.1f} ms of it before the first text reached the UI")
    print(f"Enter -> first text reaches the UI thread: median "
          f"{statistics.median(r['to_ui'] for r in rows['app']) * 1000:.1f} ms; -> on screen: median "
          f"{statistics.median(r['ttft'] - r['to_ui'] for r in rows['app']) * 1000:.1f} ms more")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="backend threads (0: the backend's default)")
    parser.add_argument("--history", type=int, default=0,
                        help="approved exchanges already in the conversation (cached by the backend)")
    parser.add_argument("--pilot-enter", action="store_true",
                        help="press Enter through Textual's pilot (adds its waits to the UI thread's work)")
    args = parser.parse_args()
    if args.repeats < 1 or args.max_tokens < 2 or args.history < 0:
        sys.exit("--repeats must be >= 1, --max-tokens >= 2 and --history >= 0")
    asyncio.run(main(args))
