"""Tools (issue 15, item 5): the evaluation's questions that use a tool,
asked with and without the session's tools, per model.

The questions are those of ``bench/answers_questions.json`` that name a
tool (``--questions tools``: the calculator's arithmetic, the clock's time,
weekday and date, a timer), scored by :mod:`bench.answer_scoring` and asked
through :func:`bench.answers.ask` (the memory, the system prompt, the phrase
splitting of a turn). The model is started by the product's LLM start
(:class:`~voicetrio.engines.registry.GatedLlm`), which decides whether it
gets tools (``STREAM_LLM_TOOLS``, "auto": its chat template's say); with
tools, each turn goes through :func:`~voicetrio.engines.llm.tooling.open_reply`
with the tools a session offers (:func:`~voicetrio.core.builtin_tools.builtin_toolbox`,
timers that are really set; :func:`bench.answers.run_items` scores a timer
question right only if one was), and every call is counted from the
client's ``tool_call`` log events. Without tools, the same server and model
are asked through an engine that cannot offer any.

Usage::

    .venv/bin/python -m bench.tools [--model NAME|PATH ...] [--tools auto|on] [--rounds N] [-v]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

import trio

from bench.answer_scoring import Item, load_items, select
from bench.answers import ItemResult, model_config, run_items
from voicetrio.config import Config, from_env
from voicetrio.core.prompt import ChatMessage
from voicetrio.engines.base import LlmEngine
from voicetrio.engines.llm.openai_compat import OpenAiLlm
from voicetrio.engines.registry import EngineHost, GatedLlm
from voicetrio.logs import LOGGER


class WithoutTools:
    """The engine as a model that cannot call tools: only ``stream(messages)``."""

    def __init__(self, llm: LlmEngine) -> None:
        self.llm = llm

    @property
    def ready(self) -> bool:
        return self.llm.ready

    def stream(
        self, messages: Sequence[ChatMessage]
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self.llm.stream(messages)


class CallLog(logging.Handler):
    """The tools called, from the client's ``tool_call`` log events."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.calls: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "tool_call":
            self.calls.append(str(getattr(record, "fields", {}).get("tool")))


@dataclasses.dataclass
class Run:
    label: str
    items: list[ItemResult]
    calls: list[str]

    def line(self) -> str:
        right = sum(i.correct for i in self.items)
        turns = [t for i in self.items for t in i.turns]
        first = [t.first_token_s for t in turns if t.first_token_s is not None]
        total = [t.total_s for t in turns]
        errors = sum(t.error is not None for t in turns)
        named = ", ".join(f"{n} {self.calls.count(n)}" for n in sorted(set(self.calls))) or "none"
        return (
            f"  {self.label:<13} correct {right}/{len(self.items)}"
            f"  first token median {_s(first)}  reply median {_s(total)}"
            f"  errors {errors}  tool calls: {named}"
        )


def _s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "n/a"


async def run_model(
    base: Config, model: str | None, items: Sequence[Item], rounds: int, verbose: bool
) -> None:
    config = model_config(base, model)
    load_before = os.getloadavg()
    async with trio.open_nursery() as nursery:
        gated = GatedLlm(EngineHost(config))
        await gated.start(nursery)
        inner = gated.inner
        assert isinstance(inner, OpenAiLlm) and gated.server is not None
        print(f"model {model or gated.server.model_path.stem} ({gated.server.model_path})")
        print(
            f"  tools offered: {'yes' if inner.calls_tools else 'no'} (STREAM_LLM_TOOLS={config.llm_tools})"
        )
        runs = []
        try:
            for label, with_tools in (("without tools", False), ("with tools", True)):
                if with_tools and not inner.calls_tools:
                    continue
                log = CallLog()
                LOGGER.addHandler(log)
                if not LOGGER.isEnabledFor(logging.INFO):
                    LOGGER.setLevel(logging.INFO)
                # With tools: the evaluation's own path (a session's toolbox,
                # real timers it scores); without: the same model, offered none.
                llm: LlmEngine = inner if with_tools else WithoutTools(inner)
                results: list[ItemResult] = []
                try:
                    for _ in range(rounds):
                        if verbose:
                            print(f"  -- {label}")
                        results.extend(await run_items(llm, config, items, verbose))
                finally:
                    LOGGER.removeHandler(log)
                runs.append(Run(label, results, log.calls))
                print(runs[-1].line())
        finally:
            await inner.aclose()
            nursery.cancel_scope.cancel()
    print(
        "  load average  before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + "  after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )


async def main(args: argparse.Namespace) -> None:
    base = from_env(os.environ)
    if base.openai_base_url:
        sys.exit("bench.tools measures the embedded LLM: unset OPENAI_BASE_URL")
    base = dataclasses.replace(base, llm_tools=args.tools)
    items = select(load_items(), args.questions)
    print(f"questions: {', '.join(i.id for i in items)}")
    for model in list(args.model) or [None]:
        await run_model(base, model, items, args.rounds, args.verbose)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME|PATH")
    parser.add_argument("--tools", choices=("auto", "on"), default="auto")
    parser.add_argument("--questions", default="tools")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args())
