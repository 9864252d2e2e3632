"""Tool calls end to end (issue 15, item 5): the OpenAI-compatible client
against a small server of our own on 127.0.0.1 that speaks the chat
completions protocol with tool calls (a protocol and fault test: rounds,
errors, the bound on rounds, refusal, cancellation), a turn of the reply
stage through it, and the session's timers under a mock clock."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import make_engines
from tests.test_openai_llm import Connection, LocalServer, start_server
from tests.test_session import RecordingLlm, Sink, TurnsEnded
from voicetrio.config import Config
from voicetrio.core.builtin_tools import calculator_tool
from voicetrio.core.events import Info, ReplyDelta, ReplyEnded, ReplyStarted, SpeechChunk
from voicetrio.core.inputs import Respond
from voicetrio.core.metrics import TurnMetrics
from voicetrio.core.tools import Tool, Toolbox, ToolCall
from voicetrio.core.turn_events import Final
from voicetrio.engines.base import ChatMessage, LlmError
from voicetrio.engines.llm import openai_compat
from voicetrio.engines.llm.openai_compat import MAX_TOOL_ROUNDS, OpenAiLlm
from voicetrio.engines.llm.tooling import open_reply
from voicetrio.session.reply import ReplyStage
from voicetrio.session.stage import Downstream, StageContext

QUESTION: list[ChatMessage] = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What is 1234 times 5678?"},
]
RECORDED = Path(__file__).parent / "data" / "llamacpp_qwen05_written_call.sse"


def sse(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


def text_chunk(content: str) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})


def call_chunk(index: int, call_id: str, name: str, arguments: str) -> bytes:
    call = {"index": index, "id": call_id, "type": "function"}
    call["function"] = {"name": name, "arguments": arguments}
    return sse({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})


DONE = sse("[DONE]")
#: One round: a reply's chunks (SSE events, whole).
Round = list[bytes]


class ChatServer:
    """Answers each chat completion request with the next scripted round and
    keeps every request body; a round of None answers 400 with ``refusal``."""

    def __init__(self, rounds: Sequence[Round | None], refusal: str = "") -> None:
        self.rounds = list(rounds)
        self.refusal = refusal
        self.bodies: list[dict[str, Any]] = []
        self.server: LocalServer | None = None
        #: Set when a request comes that has no round left: the server hangs it.
        self.hanging = trio.Event()
        self.client_left = trio.Event()

    async def handle(self, stream: trio.SocketStream, conn: Connection) -> None:
        while (request := await conn.read_request()) is not None:
            self.bodies.append(json.loads(request.partition(b"\r\n\r\n")[2]))
            if not self.rounds:
                await conn.send_stream_head()
                self.hanging.set()
                await conn.wait_client_close()
                self.client_left.set()
                return
            script = self.rounds.pop(0)
            if script is None:
                body = json.dumps({"error": {"message": self.refusal}}).encode()
                await stream.send_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                continue
            await conn.send_stream_head()
            for data in script:
                await conn.send_chunk(data)
            await conn.end_body()

    def tool_messages(self, request: int) -> list[dict[str, Any]]:
        return [m for m in self.bodies[request]["messages"] if m["role"] in ("assistant", "tool")]


@pytest.fixture
async def serve(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Awaitable[OpenAiLlm]]]:
    made: list[OpenAiLlm] = []

    async def start(chat: ChatServer, tools: str = "on") -> OpenAiLlm:
        local = await start_server(nursery, chat.handle)
        chat.server = local
        llm = OpenAiLlm(
            base_url=local.base_url,
            model="m",
            max_tokens=50,
            temperature=0.0,
            tools=tools,  # type: ignore[arg-type]
        )
        made.append(llm)
        return llm

    yield start
    for llm in made:
        await llm.aclose()


async def reply_text(llm: OpenAiLlm, tools: Toolbox | None) -> tuple[str, int]:
    """The reply's text and how many empty (progress) deltas came."""
    text, empty = "", 0
    async with open_reply(llm, QUESTION, tools) as deltas:
        async for delta in deltas:
            text += delta
            empty += not delta
    return text, empty


CALC = Toolbox([calculator_tool()])
ANSWER: Round = [text_chunk("It is "), text_chunk("7006652."), DONE]
STRUCTURED_CALL: Round = [
    call_chunk(0, "call_1", "calculate", '{"expression": '),
    call_chunk(0, "", "", '"1234 * 5678"}'),
    sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    DONE,
]


async def test_a_structured_call_runs_and_the_answer_streams_on(serve: Any) -> None:
    chat = ChatServer([STRUCTURED_CALL, ANSWER])
    llm = await serve(chat)
    text, empty = await reply_text(llm, CALC)
    assert text == "It is 7006652."
    assert empty >= 3  # the call's two chunks, and the tool's run
    first, second = chat.bodies
    assert [t["function"]["name"] for t in first["tools"]] == ["calculate"]
    assert second["tools"] == first["tools"]
    assert chat.tool_messages(1) == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculate", "arguments": '{"expression": "1234 * 5678"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "7006652"},
    ]


async def test_a_call_written_as_text_by_a_small_model(serve: Any) -> None:
    """Round 1 is llama.cpp's recorded stream of Qwen2.5-Coder-0.5B writing
    the call as content: nothing of it is spoken, the call runs."""
    chat = ChatServer([[RECORDED.read_bytes()], ANSWER])
    llm = await serve(chat)
    text, _ = await reply_text(llm, CALC)
    assert text == "It is 7006652."
    assert chat.tool_messages(1)[1] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "content": "7006652",
    }


async def test_without_tools_nothing_is_offered(serve: Any) -> None:
    chat = ChatServer([ANSWER, ANSWER])
    llm = await serve(chat, "off")
    assert await reply_text(llm, CALC) == ("It is 7006652.", 0)
    llm_on = await serve(chat, "on")
    assert await reply_text(llm_on, None) == ("It is 7006652.", 0)
    assert ["tools" in body for body in chat.bodies] == [False, False]


async def test_a_failing_tool_is_a_result_the_model_speaks_about(serve: Any) -> None:
    def broken(expression: str) -> str:
        raise OSError("no such device")

    tools = Toolbox([Tool("calculate", "", calculator_tool().parameters, broken)])
    chat = ChatServer([STRUCTURED_CALL, [text_chunk("Sorry, I could not work it out."), DONE]])
    llm = await serve(chat)
    assert (await reply_text(llm, tools))[0] == "Sorry, I could not work it out."
    assert json.loads(chat.tool_messages(1)[1]["content"]) == {
        "error": "the tool failed: OSError: no such device"
    }


async def test_bad_arguments_are_a_result_and_echoed_as_an_object(serve: Any) -> None:
    chat = ChatServer([[call_chunk(0, "c9", "calculate", '{"expression": 12'), DONE], ANSWER])
    llm = await serve(chat)
    assert (await reply_text(llm, CALC))[0] == "It is 7006652."
    call, result = chat.tool_messages(1)
    # llama.cpp refuses a history whose arguments are not a JSON object.
    assert call["tool_calls"][0]["function"]["arguments"] == "{}"
    assert "not valid JSON" in json.loads(result["content"])["error"]


async def test_a_slow_tool_times_out_as_a_result(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_compat, "TOOL_TIMEOUT_S", 0.01)
    cancelled = []

    async def stuck(expression: str) -> str:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(expression)
        raise AssertionError("unreachable")

    tools = Toolbox([Tool("calculate", "", calculator_tool().parameters, stuck)])
    chat = ChatServer([STRUCTURED_CALL, ANSWER])
    llm = await serve(chat)
    assert (await reply_text(llm, tools))[0] == "It is 7006652."
    assert cancelled == ["1234 * 5678"]
    assert "took longer than 0.01 s" in chat.tool_messages(1)[1]["content"]


async def test_tool_rounds_are_bounded(serve: Any) -> None:
    # The model asks again and again: after MAX_TOOL_ROUNDS rounds it is
    # asked without tools; if it still writes a call, the reply fails.
    chat = ChatServer([STRUCTURED_CALL] * (MAX_TOOL_ROUNDS + 1))
    llm = await serve(chat)
    with pytest.raises(LlmError, match=f"called tools {MAX_TOOL_ROUNDS + 1} times"):
        await reply_text(llm, CALC)
    assert ["tools" in body for body in chat.bodies] == [True] * MAX_TOOL_ROUNDS + [False]
    # and when it answers in the last round, that is the reply
    chat = ChatServer([STRUCTURED_CALL] * MAX_TOOL_ROUNDS + [ANSWER])
    llm = await serve(chat)
    assert (await reply_text(llm, CALC))[0] == "It is 7006652."


async def test_a_server_that_refuses_tools_is_asked_without_them_in_auto(serve: Any) -> None:
    refusal = "tools param requires --jinja flag"
    chat = ChatServer([None, ANSWER, ANSWER], refusal=refusal)
    llm = await serve(chat, "auto")
    assert (await reply_text(llm, CALC))[0] == "It is 7006652."
    assert llm.calls_tools is False  # and from now on not offered
    assert (await reply_text(llm, CALC))[0] == "It is 7006652."
    assert ["tools" in body for body in chat.bodies] == [True, False, False]
    # "on" insists: the refusal is the reply's error
    chat = ChatServer([None], refusal=refusal)
    llm = await serve(chat, "on")
    with pytest.raises(LlmError, match="requires --jinja"):
        await reply_text(llm, CALC)


async def test_cancel_during_a_tool_stops_it_and_closes_the_stream(serve: Any) -> None:
    entered, cancelled = trio.Event(), trio.Event()

    async def stuck(expression: str) -> str:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    tools = Toolbox([Tool("calculate", "", calculator_tool().parameters, stuck)])
    llm = await serve(ChatServer([STRUCTURED_CALL, ANSWER]))
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reply_text, llm, tools)
            await entered.wait()
            scope.cancel()
    assert cancelled.is_set()


async def test_cancel_during_the_next_round_closes_its_connection(serve: Any) -> None:
    chat = ChatServer([STRUCTURED_CALL])  # the second round hangs
    llm = await serve(chat)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reply_text, llm, CALC)
            await chat.hanging.wait()
            scope.cancel()
    await chat.client_left.wait()  # the hung round's connection was closed
    assert chat.tool_messages(1)[1]["content"] == "7006652"


# -- a turn of the reply stage ------------------------------------------------------


async def test_a_turn_calls_the_calculator_and_speaks_the_answer(
    serve: Any, nursery: trio.Nursery, config: Config
) -> None:
    chat = ChatServer([STRUCTURED_CALL, ANSWER, ANSWER])
    llm = await serve(chat)
    sink, ended = Sink(), TurnsEnded()
    engines = dataclasses.replace(make_engines(), llm=llm)
    stage = ReplyStage(StageContext("s1", config, engines, sink, ended))
    send, receive = trio.open_memory_channel[Downstream](8)
    nursery.start_soon(stage.run, receive)
    await send.send(Final(1, "s1-1", "What is 1234 times 5678?", TurnMetrics(trio.current_time())))
    await ended.wait_for(1)
    assert ended.outcomes == ["done"]
    said = "".join(e.text for e in sink.events if isinstance(e, ReplyDelta))
    assert said == "It is 7006652."
    assert any(isinstance(e, SpeechChunk) for e in sink.events)
    # the tool the words may need was offered; only the spoken answer is remembered
    assert [t["function"]["name"] for t in chat.bodies[0]["tools"]] == ["calculate"]
    await send.send(Respond())
    await ended.wait_for(2)
    remembered = chat.bodies[2]["messages"][1:]
    assert remembered == [
        {"role": "user", "content": "What is 1234 times 5678?"},
        {"role": "assistant", "content": "It is 7006652."},
    ]


# -- timers, under a mock clock -------------------------------------------------------


class Stage:
    """A reply stage on the deterministic engines, fed by the test."""

    def __init__(self, nursery: trio.Nursery, config: Config, token_s: float = 0.03125) -> None:
        self.sink, self.ended = Sink(), TurnsEnded()
        self.llm = RecordingLlm(token_s=token_s)
        ctx = StageContext("s1", config, make_engines(llm=self.llm), self.sink, self.ended)
        self.stage = ReplyStage(ctx)
        self.send, receive = trio.open_memory_channel[Downstream](8)
        self.done = trio.Event()

        async def run() -> None:
            await self.stage.run(receive)
            self.done.set()

        nursery.start_soon(run)

    async def tool(self, name: str, arguments: dict[str, Any]) -> str:
        await trio.testing.wait_all_tasks_blocked()
        assert self.stage.tools is not None
        return await self.stage.tools.run(ToolCall("c", name, json.dumps(arguments)))


async def test_a_timer_rings_with_a_notice_and_says_so(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    s = Stage(nursery, config)
    set_at = trio.current_time()
    said = await s.tool("set_timer", {"duration": 2, "unit": "minutes", "label": "tea"})
    assert said.startswith("Timer 1 is set for 2 minutes; it rings at ")
    notice = Info("timer", "Your 2 minutes timer for tea is done.", details=(("timer", 1),))
    await trio.sleep_until(set_at + 119.999)
    assert notice not in s.sink.events
    await trio.sleep_until(set_at + 120)
    await trio.testing.wait_all_tasks_blocked()
    assert s.sink.events[0] == notice
    await s.ended.wait_for(1)
    assert isinstance(s.sink.events[1], ReplyStarted)
    spoken = "".join(e.text for e in s.sink.events if isinstance(e, ReplyDelta))
    assert spoken == "Your 2 minutes timer for tea is done."
    assert any(isinstance(e, SpeechChunk) for e in s.sink.events)
    assert s.llm.opened == 0  # said as it is, without the model
    # the announcement is in the conversation: the next reply's prompt has it
    await s.send.send(Final(1, "s1-1", "thanks", TurnMetrics(trio.current_time())))
    await s.ended.wait_for(2)
    assert s.llm.prompts[-1][-2] == {
        "role": "assistant",
        "content": "Your 2 minutes timer for tea is done.",
    }


async def test_a_timer_that_rings_during_a_reply_is_said_after_it(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    s = Stage(nursery, config, token_s=0.5)  # a reply of several seconds
    await s.tool("set_timer", {"duration": 1, "unit": "seconds"})
    await s.send.send(Final(1, "s1-1", "tell me a story", TurnMetrics(trio.current_time())))
    await s.ended.wait_for(2)
    kinds = [type(e).__name__ for e in s.sink.events]
    # the notice at once, mid-reply; the spoken announcement after the reply ended
    assert kinds.index("Info") < kinds.index("ReplyEnded")
    ends = [e for e in s.sink.events if isinstance(e, ReplyEnded)]
    assert [e.turn for e in ends] == [1, 2]
    last_turn = [e for e in s.sink.events if isinstance(e, ReplyDelta)][-1]
    assert last_turn.turn == 2 and last_turn.text == "Your 1 second timer is done."


async def test_cancelled_timers_do_not_ring_and_timers_die_with_the_session(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    s = Stage(nursery, config)
    await s.tool("set_timer", {"duration": 10, "unit": "seconds"})
    await s.tool("set_timer", {"duration": 20, "unit": "seconds"})
    assert await s.tool("cancel_timer", {"timer": 1}) == "Cancelled: timer 1 (10 seconds)"
    assert "there is no timer 7" in await s.tool("cancel_timer", {"timer": 7})
    began = trio.current_time()
    await s.send.aclose()  # the session ends, with timer 2 pending...
    await s.done.wait()
    assert trio.current_time() == began  # ...which does not keep it
    await trio.sleep(60)
    assert s.sink.events == []


async def test_results_as_a_note_for_small_models(serve: Any, nursery: trio.Nursery) -> None:
    """``tool_results="text"``: one round with tools, then the results as a
    system note in a round without tools (no tool messages)."""
    chat = ChatServer([STRUCTURED_CALL, ANSWER])
    local = await start_server(nursery, chat.handle)
    llm = OpenAiLlm(
        base_url=local.base_url,
        model="m",
        max_tokens=50,
        temperature=0.0,
        tools="on",
        tool_results="text",
    )
    try:
        assert (await reply_text(llm, CALC))[0] == "It is 7006652."
    finally:
        await llm.aclose()
    first, second = chat.bodies
    assert "tools" in first and "tools" not in second
    assert second["messages"][:-1] == first["messages"]
    assert second["messages"][-1] == {
        "role": "system",
        "content": "Tool results for the user's last message: "
        'calculate(expression="1234 * 5678") gave: 7006652. '
        "Answer the user now in plain spoken words, using these results; no JSON.",
    }
