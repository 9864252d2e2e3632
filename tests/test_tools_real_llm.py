"""Tools on the real embedded llama.cpp (xllamacpp) with the catalog's
Qwen2.5-Coder-0.5B: its chat template declares tools, so "auto" gives it
them, and asked "What is 1234 times 5678?" it calls the calculator and says
the product; SmolLM2-135M's template does not, so it gets none.

The models come from the catalog (``voicetrio models install NAME``); a
model that is not installed is a skip that names the command, not a pass.
Greedy decoding (temperature 0) so the run is the same each time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from voicetrio.core.builtin_tools import NoTimers, builtin_toolbox
from voicetrio.core.tools import Tool, Toolbox, ToolResult
from voicetrio.engines.base import ChatMessage, ModelLoadError
from voicetrio.engines.catalog import resolve_llm
from voicetrio.engines.llm.embedded import EmbeddedLlmServer
from voicetrio.engines.llm.openai_compat import OpenAiLlm
from voicetrio.engines.llm.tooling import embedded_tools, open_reply, template_calls_tools

SYSTEM = (
    "You are a voice assistant. Answer in one or two short spoken sentences, "
    "with no lists or markdown."
)


def installed(name: str) -> Path:
    try:
        return resolve_llm(name).path
    except ModelLoadError as exc:
        pytest.skip(f"{name} is not installed (voicetrio models install {name}): {exc}")


async def test_qwen_calls_the_calculator() -> None:
    path = installed("qwen2.5-0.5b")
    calls: list[str] = []
    box = builtin_toolbox(lambda: datetime.now(UTC), NoTimers())
    calculator = next(t for t in box.tools if t.name == "calculate")

    def counted(expression: str) -> ToolResult:
        calls.append(expression)
        result = calculator.function(expression=expression)
        assert isinstance(result, str)
        return result

    tools = Toolbox(
        [t for t in box.tools if t.name != "calculate"]
        + [Tool(calculator.name, calculator.description, calculator.parameters, counted)]
    )
    server = EmbeddedLlmServer(model_path=path, threads=1, parallel=1, startup_timeout_s=120)
    messages: list[ChatMessage] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is 1234 times 5678?"},
    ]
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(server.run)
        assert await embedded_tools("auto", base_url, server.api_key) == "on"
        llm = OpenAiLlm(
            base_url=base_url,
            api_key=server.api_key,
            model="qwen",
            max_tokens=80,
            temperature=0.0,
            tools="on",
            tool_results="text",  # as the engine host builds it for the embedded model
        )
        try:
            with trio.fail_after(120):
                async with open_reply(llm, messages, tools) as deltas:
                    answer = "".join([d async for d in deltas])
        finally:
            await llm.aclose()
            nursery.cancel_scope.cancel()
    print(f"calculator called with {calls}; answer {answer!r}")
    assert calls, f"the calculator was not called; the model said {answer!r}"
    assert re.search(r"7,?006,?652", answer), answer
    assert "{" not in answer and "calculate" not in answer, f"a call was spoken: {answer!r}"


async def test_smollm2_gets_no_tools() -> None:
    path = installed("smollm2-135m")
    server = EmbeddedLlmServer(model_path=path, threads=1, parallel=1)
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(server.run)
        try:
            assert await template_calls_tools(base_url, server.api_key) is False
            assert await embedded_tools("auto", base_url, server.api_key) == "off"
            assert await embedded_tools("on", base_url, server.api_key) == "on"
        finally:
            nursery.cancel_scope.cancel()
