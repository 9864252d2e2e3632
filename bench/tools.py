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
timers kept in a book that never rings), and every call is counted.

Usage::

    .venv/bin/python -m bench.tools [--model NAME|PATH ...] [--tools auto|on] [--rounds N] [-v]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import statistics
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import trio

from bench.answer_scoring import Item, load_items, select
from bench.answers import ItemResult, model_config, run_items
from voicetrio.config import Config, from_env
from voicetrio.core.builtin_tools import builtin_toolbox
from voicetrio.core.prompt import ChatMessage
from voicetrio.core.timers import TimerBook, TimerEntry
from voicetrio.core.tools import Tool, Toolbox, ToolResult
from voicetrio.engines.base import LlmEngine
from voicetrio.engines.llm.openai_compat import OpenAiLlm
from voicetrio.engines.llm.tooling import open_reply
from voicetrio.engines.registry import EngineHost, GatedLlm


class BookTimers:
    """Timers that are set and cancelled in a book, and never ring."""

    def __init__(self) -> None:
        self.book = TimerBook()

    def set(self, duration: float, unit: str, label: str) -> TimerEntry:
        return self.book.add(duration, unit, label, 0.0)

    def cancel(self, timer_id: int | None) -> list[TimerEntry]:
        ids = [e.id for e in self.book.pending] if timer_id is None else [timer_id]
        return [self.book.remove(i) for i in ids]

    def due_at(self, entry: TimerEntry) -> str:
        return f"{datetime.now() + timedelta(seconds=entry.duration_s):%H:%M:%S}"


def counted(tools: Toolbox, calls: list[str]) -> Toolbox:
    """``tools``, each noting its name in ``calls`` when called."""

    def wrap(tool: Tool) -> Tool:
        function = tool.function

        def call(**arguments: object) -> ToolResult:
            calls.append(tool.name)
            result = function(**arguments)
            assert not inspect.isawaitable(result), "the built-in tools are synchronous"
            return result

        return Tool(tool.name, tool.description, tool.parameters, call)

    return Toolbox([wrap(t) for t in tools.tools])


class WithTools:
    """The engine, asked with the tools as a turn asks it."""

    def __init__(self, llm: LlmEngine, tools: Toolbox) -> None:
        self.llm = llm
        self.tools = tools

    @property
    def ready(self) -> bool:
        return self.llm.ready

    def stream(
        self, messages: Sequence[ChatMessage]
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return open_reply(self.llm, messages, self.tools)


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
                calls: list[str] = []
                tools = counted(builtin_toolbox(lambda: datetime.now(UTC), BookTimers()), calls)
                llm: LlmEngine = WithTools(inner, tools) if with_tools else inner
                results: list[ItemResult] = []
                for _ in range(rounds):
                    if verbose:
                        print(f"  -- {label}")
                    results.extend(await run_items(llm, config, items, verbose))
                runs.append(Run(label, results, calls))
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
