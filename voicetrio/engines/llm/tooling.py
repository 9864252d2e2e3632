"""Which LLM engines call tools, and how a turn asks one with its toolbox.

Tools are optional for an LLM engine: :class:`~voicetrio.engines.base.LlmEngine`
is unchanged, and an engine that can offer tools to its model also has
``stream(messages, tools=...)`` and a ``calls_tools`` flag
(:class:`ToolCallingLlm`; the OpenAI-compatible client and the registry's gate
around it). :func:`open_reply` gives the turn the right call: models that
cannot call tools (``calls_tools`` False, engines without it) simply do not
get them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final, Literal, Protocol, runtime_checkable

import httpx

from voicetrio.core.prompt import ChatMessage
from voicetrio.core.tools import Toolbox
from voicetrio.engines.base import LlmEngine

ToolsSetting = Literal["auto", "on", "off"]
#: llama.cpp answers /props at once; a server that does not is not llama.cpp.
PROPS_TIMEOUT_S: Final = 5.0


@runtime_checkable
class ToolCallingLlm(Protocol):
    @property
    def calls_tools(self) -> bool:
        """Whether a reply is offered the tools given (the model can call them)."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], *, tools: Toolbox | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """As :meth:`LlmEngine.stream`; the model may call ``tools`` before it
        answers. Empty deltas mark a model at work on a call (no text yet)."""
        ...


def open_reply(
    llm: LlmEngine, messages: Sequence[ChatMessage], tools: Toolbox | None
) -> AbstractAsyncContextManager[AsyncIterator[str]]:
    """``llm``'s streamed reply, offered ``tools`` when it calls tools and
    the user's last words may need them (``Tool.offered_when``)."""
    if tools and isinstance(llm, ToolCallingLlm) and llm.calls_tools:
        words = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        offered = tools.for_words(words)
        if offered:
            return llm.stream(messages, tools=offered)
    return llm.stream(messages)


def tools_setting(value: str) -> ToolsSetting:
    """STREAM_LLM_TOOLS, checked by the config already."""
    if value == "on":
        return "on"
    if value == "off":
        return "off"
    return "auto"


async def template_calls_tools(base_url: str, api_key: str = "") -> bool:
    """Whether the llama.cpp server at ``base_url`` (``.../v1``) renders tools
    into its model's prompt: its ``/props`` ``chat_template_caps``. The model's
    own chat template says whether it was trained to call tools (Qwen2.5: yes;
    SmolLM2: no); False when the server does not say."""
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with contextlib.suppress(httpx.HTTPError, ValueError):
        async with httpx.AsyncClient(trust_env=False, timeout=PROPS_TIMEOUT_S) as client:
            response = await client.get(root + "/props", headers=headers)
            if response.status_code == 200:
                caps = response.json().get("chat_template_caps") or {}
                return bool(caps.get("supports_tools")) and bool(caps.get("supports_tool_calls"))
    return False


async def embedded_tools(setting: str, base_url: str, api_key: str) -> ToolsSetting:
    """The embedded model's tools: "auto" is "on" when its template calls tools."""
    chosen = tools_setting(setting)
    if chosen != "auto":
        return chosen
    return "on" if await template_calls_tools(base_url, api_key) else "off"


__all__ = [
    "ToolCallingLlm",
    "ToolsSetting",
    "embedded_tools",
    "open_reply",
    "template_calls_tools",
    "tools_setting",
]
