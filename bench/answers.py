"""Answer quality: everyday spoken questions put to each LLM the way a turn puts them.

Each question of ``bench/answers_questions.json`` (facts, arithmetic,
advice, small talk, follow-ups, and the turns that need a tool) goes through
the product's own path, not a copy of it: the engine host's LLM start
(:class:`~voicetrio.engines.registry.GatedLlm`: the embedded llama.cpp worker,
the model the settings name, its warm-up, the sampling settings and token
cap of the config), the conversation memory
(:class:`~voicetrio.core.conversation.Conversation`, so a follow-up sees the
model's own earlier answers), the system prompt
(:func:`~voicetrio.core.prompt.system_prompt`, ``STREAM_SYSTEM_PROMPT`` if
set) and the phrase splitting a spoken reply goes through
(:class:`~voicetrio.core.phrases.PhraseAggregator`). Scoring is in
:mod:`bench.answer_scoring`.

Per model it prints the share of questions answered correctly (those that
need a tool apart), the share of answers fit to be spoken, the median time
to the first token and to the first phrase, and the decode rate (tokens/s,
counting one streamed delta as one token, as llama.cpp sends them). One
question at a time, as one user would ask them. Usage::

    .venv/bin/python -m bench.answers [--model NAME|PATH ...] [--questions IDS|CATEGORIES]
        [--rounds N] [--json PATH] [-v]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from bench.answer_scoring import Item, correct, load_items, select, spoken_style
from voicetrio.config import Config, from_env
from voicetrio.core.builtin_tools import builtin_toolbox
from voicetrio.core.conversation import Conversation, reply_key, utterance_key
from voicetrio.core.phrases import PhraseAggregator
from voicetrio.core.prompt import system_prompt
from voicetrio.core.tools import Toolbox
from voicetrio.engines.base import LlmEngine, LlmError
from voicetrio.engines.llm.openai_compat import OpenAiLlm
from voicetrio.engines.llm.tooling import open_reply
from voicetrio.engines.registry import EngineHost, GatedLlm
from voicetrio.session.timers import SessionTimers


@dataclass
class TurnResult:
    question: str
    answer: str
    phrases: list[str]
    first_token_s: float | None
    first_phrase_s: float | None
    total_s: float
    deltas: int
    #: Seconds from the first delta to the last (the decode rate's span).
    decode_s: float
    cut_off: bool
    error: str | None
    scored: bool
    correct: bool | None
    style_ok: bool
    style_problems: list[str]


@dataclass
class ItemResult:
    id: str
    category: str
    needs_tool: bool
    tools: list[str]
    correct: bool
    turns: list[TurnResult] = field(default_factory=list)


@dataclass
class ModelReport:
    model: str
    path: str
    prompt: str
    items: list[ItemResult]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    def summary(self) -> dict[str, Any]:
        plain = [i for i in self.items if not i.needs_tool]
        tooled = [i for i in self.items if i.needs_tool]
        turns = [t for i in self.items for t in i.turns]
        first = [t.first_token_s for t in turns if t.first_token_s is not None]
        phrase = [t.first_phrase_s for t in turns if t.first_phrase_s is not None]
        decode_s = sum(t.decode_s for t in turns)
        decoded = sum(max(0, t.deltas - 1) for t in turns)
        return {
            "model": self.model,
            "questions": len(plain),
            "correct": sum(i.correct for i in plain),
            "correct_share": _share(sum(i.correct for i in plain), len(plain)),
            "tool_questions": len(tooled),
            "tool_correct": sum(i.correct for i in tooled),
            "answers": len(turns),
            "spoken": sum(t.style_ok for t in turns),
            "spoken_share": _share(sum(t.style_ok for t in turns), len(turns)),
            "errors": sum(t.error is not None for t in turns),
            "first_token_median_s": statistics.median(first) if first else None,
            "first_phrase_median_s": statistics.median(phrase) if phrase else None,
            "tokens_per_s": decoded / decode_s if decode_s > 0 else None,
            "load_before": self.load_before,
            "load_after": self.load_after,
        }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def model_config(base: Config, model: str | None) -> Config:
    """``base`` with the LLM the catalog (or a GGUF path) names, if any."""
    return base if model is None else dataclasses.replace(base, llm_model=model)


async def ask(
    llm: LlmEngine,
    config: Config,
    conversation: Conversation,
    tools: Toolbox,
    n: int,
    text: str,
) -> TurnResult:
    """Turn ``n`` (from 1) as the reply stage takes it: the memory's prompt,
    the stream (offered the session's tools if the model calls tools), the
    phrases; the exchange enters the memory after."""
    messages = conversation.messages(system_prompt(config.system_prompt), text)
    aggregator = PhraseAggregator(
        max_length=config.tts_max_phrase_length,
        gap_ms=config.tts_phrase_gap_ms,
        first_max_length=config.tts_first_phrase_length,
    )
    phrases: list[str] = []
    answer = ""
    deltas = 0
    first_token: float | None = None
    first_phrase: float | None = None
    last_delta: float | None = None
    error: str | None = None
    start = trio.current_time()
    with trio.move_on_after(config.llm_timeout_s) as scope:
        try:
            async with open_reply(llm, messages, tools) as stream:
                async for delta in stream:
                    if not delta:
                        continue
                    now = trio.current_time()
                    if first_token is None:
                        first_token = now - start
                    last_delta = now
                    deltas += 1
                    answer += delta
                    phrases.extend(aggregator.push(delta, now * 1000))
                    if phrases and first_phrase is None:
                        first_phrase = now - start
        except LlmError as exc:
            error = str(exc)
    if scope.cancelled_caught:
        error = f"no complete reply within {config.llm_timeout_s:g} s"
    phrases.extend(aggregator.flush())
    end = trio.current_time()
    if phrases and first_phrase is None:
        first_phrase = end - start
    # What the session remembers is the reply's text, as written.
    conversation.add_exchange(utterance_key(n), text, reply_key(n), answer)
    cut_off = deltas >= config.openai_max_tokens
    spoken = " ".join(phrases)
    style = spoken_style(spoken, cut_off=cut_off)
    return TurnResult(
        question=text,
        answer=answer.strip(),
        phrases=phrases,
        first_token_s=first_token,
        first_phrase_s=first_phrase,
        total_s=end - start,
        deltas=deltas,
        decode_s=0.0
        if first_token is None or last_delta is None
        else last_delta - start - first_token,
        cut_off=cut_off,
        error=error,
        scored=False,
        correct=None,
        style_ok=style.ok and error is None,
        style_problems=list(style.problems) + ([error] if error else []),
    )


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def run_items(
    llm: LlmEngine, config: Config, items: Sequence[Item], verbose: bool
) -> list[ItemResult]:
    results = []
    for item in items:
        # A fresh session's memory and tools per item; its timers are real
        # (a timer question is right only if a timer was set) and end with it.
        conversation = Conversation(config.memory_max_turns, config.memory_max_chars)
        result = ItemResult(item.id, item.category, item.needs_tool, list(item.tools), True)
        async with trio.open_nursery() as nursery:
            timers = SessionTimers("bench", nursery, lambda _: None, now=_wall_clock)
            tools = builtin_toolbox(_wall_clock, timers)
            for n, turn in enumerate(item.turns, 1):
                asked_at = dt.datetime.now()
                outcome = await ask(llm, config, conversation, tools, n, turn.text)
                if turn.scored:
                    set_s = [entry.duration_s for entry in timers.book.pending]
                    outcome.scored = True
                    outcome.correct = outcome.error is None and correct(
                        turn, outcome.answer, asked_at, timers_set_s=set_s
                    )
                    result.correct = result.correct and outcome.correct
                result.turns.append(outcome)
                if verbose:
                    _print_turn(item.id, turn.text, outcome)
            timers.cancel(None)
        results.append(result)
    return results


def _print_turn(item_id: str, text: str, outcome: TurnResult) -> None:
    mark = {True: "ok ", False: "BAD", None: "   "}[outcome.correct]
    style = "spoken" if outcome.style_ok else ",".join(outcome.style_problems)
    print(f"  {mark} {item_id:<18} {text!r} -> {outcome.answer!r} [{style}]")


async def run_model(
    base: Config, model: str | None, items: Sequence[Item], rounds: int, verbose: bool
) -> ModelReport:
    config = model_config(base, model)
    load_before = os.getloadavg()
    async with trio.open_nursery() as nursery:
        # The product's LLM start: resolves the model, starts the worker,
        # warms it up with the system prompt, builds the client.
        gated = GatedLlm(EngineHost(config))
        await gated.start(nursery)
        assert gated.inner is not None and gated.server is not None
        path = gated.server.model_path
        results: list[ItemResult] = []
        try:
            for _ in range(rounds):
                results.extend(await run_items(gated.inner, config, items, verbose))
        finally:
            if isinstance(gated.inner, OpenAiLlm):
                await gated.inner.aclose()
            nursery.cancel_scope.cancel()
    return ModelReport(
        model=model or path.stem,
        path=str(path),
        prompt=system_prompt(config.system_prompt),
        items=results,
        load_before=load_before,
        load_after=os.getloadavg(),
    )


def _fmt_share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "n/a"


def _fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def print_report(report: ModelReport) -> None:
    s = report.summary()
    by_category: dict[str, list[bool]] = {}
    for item in report.items:
        by_category.setdefault(item.category, []).append(item.correct)
    print(f"model {s['model']} ({report.path})")
    print(
        f"  correct       {_fmt_share(s['correct'], s['questions'])}  (without the tool questions)"
    )
    print(
        "  by category   "
        + ", ".join(f"{c} {sum(v)}/{len(v)}" for c, v in sorted(by_category.items()))
    )
    print(f"  tool questions {_fmt_share(s['tool_correct'], s['tool_questions'])}")
    print(
        f"  spoken style  {_fmt_share(s['spoken'], s['answers'])}  (answers, follow-ups included)"
    )
    print(
        f"  first token   median {_fmt_s(s['first_token_median_s'])}   "
        f"first phrase median {_fmt_s(s['first_phrase_median_s'])}"
    )
    rate = s["tokens_per_s"]
    print(f"  tokens/s      {'n/a' if rate is None else f'{rate:.1f}'}   errors {s['errors']}")
    print(
        "  load average  before "
        + " ".join(f"{x:.2f}" for x in s["load_before"])
        + "  after "
        + " ".join(f"{x:.2f}" for x in s["load_after"])
    )


async def main(args: argparse.Namespace) -> None:
    base = from_env(os.environ)
    if base.openai_base_url:
        sys.exit("bench.answers measures the embedded LLM: unset OPENAI_BASE_URL")
    items = select(load_items(), args.questions)
    models: list[str | None] = list(args.model) or [None]
    reports = []
    for model in models:
        report = await run_model(base, model, items, args.rounds, args.verbose)
        print_report(report)
        reports.append(report)
    if args.json:
        out = {
            "command": " ".join(sys.argv),
            "rounds": args.rounds,
            "models": [
                {"summary": r.summary(), "path": r.path, "prompt": r.prompt,
                 "items": [dataclasses.asdict(i) for i in r.items]}
                for r in reports
            ],
        }  # fmt: skip
        await trio.Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help="a catalog model or a GGUF path (repeatable); default: STREAM_LLM_MODEL's",
    )
    parser.add_argument(
        "--questions",
        default="",
        help="comma-separated item ids or categories (or 'tools'); default: all",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each question is asked")
    parser.add_argument("--json", help="write every answer and verdict here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every answer")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args())
