"""How the embedded LLM serves several replies at once: slots and threads.

Starts the embedded llama.cpp worker (SmolLM2) with each ``--parallel`` and
``--threads`` combination asked for, sends ``--requests`` chat requests at
the same moment (the spoken system prompt, a different everyday question
each) and reports, per combination: first token p50/max, the time to the
first 10 tokens (roughly a first spoken phrase) p50/max, the whole reply
p50/max and the aggregate tokens per second. With ``--busy`` a second process
keeps one core busy, as Whisper and the speech engine do beside the LLM::

    .venv/bin/python -m bench.llm_slots --parallel 1 2 4 --threads 1 2 --requests 6
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Sequence

import trio

from voicetrio.engines.base import ChatMessage
from voicetrio.engines.llm.embedded import EmbeddedLlmServer
from voicetrio.engines.llm.openai_compat import OpenAiLlm
from voicetrio.session.reply import SPOKEN_SYSTEM_PROMPT

QUESTIONS = (
    "What is the capital of France?",
    "How many minutes are in two hours?",
    "Who wrote Romeo and Juliet?",
    "What is the weather usually like in London in spring?",
    "Can you suggest a quick breakfast?",
    "Why is the sky blue?",
    "What is a good name for a cat?",
    "How far is the moon from the earth?",
)
PHRASE_TOKENS = 10


async def one(llm: OpenAiLlm, question: str, t0: float) -> tuple[float, float, float, int]:
    messages: list[ChatMessage] = [
        {"role": "system", "content": SPOKEN_SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]
    first = phrase = float("nan")
    tokens = 0
    async with llm.stream(messages) as deltas:
        async for delta in deltas:
            if not delta:
                continue
            tokens += 1
            now = time.perf_counter() - t0
            if tokens == 1:
                first = now
            if tokens == PHRASE_TOKENS:
                phrase = now
    end = time.perf_counter() - t0
    return first, phrase if phrase == phrase else end, end, tokens


async def measure(parallel: int, threads: int, requests: int, max_tokens: int) -> str:
    server = EmbeddedLlmServer(threads=threads, parallel=parallel, ctx_size=512 * max(2, parallel))
    async with trio.open_nursery() as nursery:
        base_url: str = await nursery.start(server.run)
        llm = OpenAiLlm(
            base_url=base_url, api_key=server.api_key, model="m", max_tokens=max_tokens,
            temperature=0.0,
        )
        await one(llm, "Hello.", time.perf_counter())  # warm-up
        results: list[tuple[float, float, float, int]] = []

        async def run(q: str, t0: float) -> None:
            results.append(await one(llm, q, t0))

        t0 = time.perf_counter()
        async with trio.open_nursery() as batch:
            for i in range(requests):
                batch.start_soon(run, QUESTIONS[i % len(QUESTIONS)], t0)
        wall = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    firsts = [r[0] for r in results]
    phrases = [r[1] for r in results]
    ends = [r[2] for r in results]
    tokens = sum(r[3] for r in results)
    return (
        f"parallel {parallel} threads {threads}: first token p50 {statistics.median(firsts):.2f} "
        f"max {max(firsts):.2f} s; {PHRASE_TOKENS} tokens p50 {statistics.median(phrases):.2f} "
        f"max {max(phrases):.2f} s; reply p50 {statistics.median(ends):.2f} max {max(ends):.2f} s; "
        f"{tokens / wall:.0f} tokens/s in all ({tokens} tokens)"
    )


def _spin(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(range(10_000))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=150)
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    args = parser.parse_args(argv)
    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin, args=(stop,)) if args.busy else None
    if spinner is not None:
        spinner.start()
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f}; busy core: {args.busy}")
        for threads in args.threads:
            for parallel in args.parallel:
                print(trio.run(measure, parallel, threads, args.requests, args.max_tokens), flush=True)
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        stop.set()
        if spinner is not None:
            spinner.join()


if __name__ == "__main__":
    main()
