"""One streamed round of a reply with tools offered: text to speak, calls to run; sans-IO.

:class:`RoundAssembler` takes the chunks of one chat completion stream
(:func:`~voicetrio.engines.llm.sse.parse_chat_chunk`) and gives back the
text to pass on at once, and at the end the tool calls the model made.

Calls come in two shapes:

* **structured**: ``delta.tool_calls`` pieces, joined by index (the id and
  name come first, the JSON arguments in pieces), as OpenAI, vLLM and
  llama.cpp (with ``--jinja``, when the model wrote its template's tags) send;
* **written out**: small models (Qwen2.5-Coder 0.5B and 1.5B, measured)
  often write the call as plain content, ``{"name": "calculate",
  "arguments": {...}}``, without the ``<tool_call>`` tags their template
  asks for, so the server streams it as text. A spoken reply never starts
  with ``{``, ``<`` or a code fence, so content that does is held back until
  the round ends: if it is nothing but calls of offered tools, they are the
  calls; otherwise the text is passed on, late but whole. A reply that
  speaks first and then writes a call (Qwen 1.5B: "Here is the current
  time." and a fenced call) is held from the first such character on: the
  words before it are passed on, the call is run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from voicetrio.core.tools import ToolCall
from voicetrio.engines.llm.sse import ChatChunk

#: Calls in one round beyond this are refused (the stream is bad).
MAX_CALLS_PER_ROUND: Final = 8
#: The arguments of one structured call beyond this are refused.
MAX_CALL_CHARS: Final = 8192
#: What a round's content starting with one of these may be: a written-out call.
_CALL_OPENERS: Final = ("{", "<", "`")
#: What may surround written-out calls: braces (Qwen 1.5B doubled them),
#: the template's tags, a code fence and its language.
_WRAPPING: Final = re.compile(r"(?:\s|[{}]|</?tool_call>|```(?:json)?|json)*")
_CALL_START: Final = re.compile(r'\{\s*"name"\s*:')


@dataclass(slots=True)
class _Partial:
    id: str = ""
    name: str = ""
    arguments: str = ""


class RoundAssembler:
    """See the module docs. ``tools``: the names offered this round."""

    def __init__(self, tools: Collection[str]) -> None:
        self._tools = tools
        self._partials: dict[int, _Partial] = {}
        self._held = ""
        #: None until the content's first visible character decides.
        self._holding: bool | None = None if tools else False
        #: Held text that proved not to be a call: no more holding.
        self._released = False

    @property
    def busy(self) -> bool:
        """The model is writing something that is not (yet) text to pass on."""
        return bool(self._partials) or bool(self._holding)

    def feed(self, chunk: ChatChunk) -> str:
        """The text to pass on now for ``chunk`` (may be ``""``); raises ValueError."""
        for piece in chunk.tool_calls:
            partial = self._partials.get(piece.index)
            if partial is None:
                if len(self._partials) >= MAX_CALLS_PER_ROUND:
                    raise ValueError(f"more than {MAX_CALLS_PER_ROUND} tool calls in one reply")
                partial = self._partials[piece.index] = _Partial()
            partial.id = partial.id or piece.id
            partial.name += piece.name
            partial.arguments += piece.arguments
            if len(partial.arguments) > MAX_CALL_CHARS:
                raise ValueError(f"tool call arguments longer than {MAX_CALL_CHARS} characters")
        text = chunk.delta
        if not text:
            return text
        if self._holding is None:
            self._held += text
            visible = self._held.lstrip()
            if not visible:
                return ""
            if visible.startswith(_CALL_OPENERS):
                self._holding = True
                return self._bounded()
            self._holding = False
            text, self._held = self._held, ""
        elif self._holding:
            self._held += text
            return self._bounded()
        if not self._tools or self._released:
            return text
        # Passing text on: a call may still begin mid-reply.
        at = min((i for i in map(text.find, _CALL_OPENERS) if i >= 0), default=-1)
        if at < 0:
            return text
        self._holding = True
        self._held = text[at:]
        return text[:at] + self._bounded()

    def _bounded(self) -> str:
        """Nothing while the held text may be a call; all of it once too long."""
        if len(self._held) <= MAX_CALL_CHARS:
            return ""
        # Too long for a call: it is text after all, and so is the rest.
        self._holding = False
        self._released = True
        text, self._held = self._held, ""
        return text

    def finish(self) -> tuple[str, list[ToolCall]]:
        """At the end of the round: held text to pass on, and the calls made."""
        calls = [
            ToolCall(p.id or f"call_{index}", p.name, p.arguments)
            for index, p in sorted(self._partials.items())
        ]
        held, self._held = self._held, ""
        if held:
            written = written_calls(held, self._tools)
            if written is None:
                return held, calls
            calls += written
        return "", calls


def written_calls(text: str, tools: Collection[str]) -> list[ToolCall] | None:
    """The calls ``text`` is made of, if it is nothing but calls of ``tools``."""
    calls: list[ToolCall] = []
    decoder = json.JSONDecoder()
    position = 0
    rest: list[str] = []
    while (match := _CALL_START.search(text, position)) is not None:
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            # Small models drop the last brace or two (Qwen 0.5B, measured).
            value, end = _closed(text[match.start() :])
            if value is None:
                return None
            end = len(text)
        call = _as_call(value, tools, len(calls))
        if call is None:
            return None
        rest.append(text[position : match.start()])
        calls.append(call)
        position = end
    rest.append(text[position:])
    if not calls or any(not _WRAPPING.fullmatch(piece) for piece in rest):
        return None
    return calls


def _closed(tail: str) -> tuple[object, int]:
    """The call at the end of a reply, if one or two closing braces complete it."""
    decoder = json.JSONDecoder()
    for missing in ("}", "}}"):
        try:
            value, end = decoder.raw_decode(tail.rstrip() + missing)
        except ValueError:
            continue
        if end == len(tail.rstrip()) + len(missing):
            return value, end
    return None, 0


def _as_call(value: Any, tools: Collection[str], number: int) -> ToolCall | None:
    if not isinstance(value, dict) or value.get("name") not in tools:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        text = arguments
    elif isinstance(arguments, dict):
        text = json.dumps(arguments, ensure_ascii=False)
    else:
        return None
    return ToolCall(f"call_{number}", value["name"], text)


__all__ = ["MAX_CALLS_PER_ROUND", "MAX_CALL_CHARS", "RoundAssembler", "written_calls"]
