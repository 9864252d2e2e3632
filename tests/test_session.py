"""Session timing under MockClock(autojump_threshold=0): every assertion on
time is exact, because the deterministic engines only ever ``trio.sleep``.

The tests speak to a session as a client does and observe what it sends; the
conversation memory shows in the prompt the language model is given next."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import pytest
import trio
import trio.testing

from tests.conftest import Harness, make_engines, open_session, quiet, speech
from voicetrio.config import Config
from voicetrio.core.codes import ErrorCode
from voicetrio.core.events import (
    NOTHING_TO_CANCEL,
    Error,
    Event,
    Metrics,
    Outcome,
    ReplyDelta,
    ReplyEnded,
    ReplyStarted,
)
from voicetrio.core.metrics import TurnMetrics
from voicetrio.core.turn_events import Final, Retracted, Tentative, TurnEvent
from voicetrio.engines.base import ChatMessage, Engines
from voicetrio.engines.fake import FakeAsr, FakeLlm, FakeTts, default_reply
from voicetrio.prom import Observer
from voicetrio.session.connection import CLOSE_TIMEOUT_S
from voicetrio.session.reply import ReplyStage
from voicetrio.session.stage import OnSent, StageContext

START = {"type": "start", "sample_rate": 16000}


class StartSession(Protocol):
    async def __call__(
        self, config: Config | None = None, engines: Engines | None = None
    ) -> Harness: ...


@pytest.fixture
def start_session(nursery: trio.Nursery, config: Config) -> StartSession:
    """Opens a session (on the ``config`` fixture unless given one) in the
    test's nursery, which is cancelled when the test ends."""
    default = config

    async def start(config: Config | None = None, engines: Engines | None = None) -> Harness:
        return await open_session(nursery, config or default, engines)

    return start


def types(h: Harness) -> list[str]:
    return [e["type"] for e in h.peer.events]


async def one_turn(h: Harness, ms: int = 1200) -> None:
    h.peer.send_json(START)
    await h.stream(speech(ms) + quiet(1000))


class RecordingLlm(FakeLlm):
    """The deterministic language model, keeping every prompt it was given."""

    def __init__(
        self,
        *,
        first_token_s: float = 0.125,
        token_s: float = 0.03125,
        fail_after_tokens: int | None = None,
    ) -> None:
        super().__init__(
            first_token_s=first_token_s, token_s=token_s, fail_after_tokens=fail_after_tokens
        )
        self.prompts: list[list[ChatMessage]] = []

    @asynccontextmanager
    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[AsyncIterator[str]]:
        self.prompts.append(list(messages))
        async with super().stream(messages) as deltas:
            yield deltas


class Prompted(Protocol):
    prompts: list[list[ChatMessage]]


def remembered(prompt: list[ChatMessage]) -> list[tuple[str, str]]:
    """The (user, assistant) turns a prompt carries between its system
    message and the new question: the conversation memory."""
    history = prompt[1:-1]
    return [(u["content"], a["content"]) for u, a in zip(history[::2], history[1::2], strict=True)]


async def memory_of(h: Harness, llm: Prompted) -> list[tuple[str, str]]:
    """What the conversation memory holds now, as the next reply's prompt
    shows it: one more utterance is spoken and answered."""
    answered = len(h.peer.of_type("metrics"))
    await h.stream(speech(900, 1000.0) + quiet(1000))
    await h.peer.wait_for("metrics", answered + 1)
    return remembered(llm.prompts[-1])


# -- the whole turn ------------------------------------------------------------


async def test_event_order_of_one_turn(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    h = await start_session()
    await one_turn(h)
    await h.peer.wait_for("metrics")
    events = h.peer.events
    kinds = types(h)
    assert kinds[0] == "protocol" and events[0]["version"] == 1
    assert events[0]["session_id"] == "s1"
    final_at = kinds.index("final_transcript")
    assert "partial_transcript" in kinds[:final_at]
    assert kinds.count("final_transcript") == 1
    tokens = [e for e in events if e["type"] == "llm_token"]
    assert [t["done"] for t in tokens] == [False] * (len(tokens) - 1) + [True]
    done_at = next(i for i, e in enumerate(events) if e.get("done") is True)
    # the first phrase is spoken while the LLM still streams
    assert final_at < kinds.index("tts_chunk") < done_at
    chunks = h.peer.of_type("tts_chunk")
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert [d["seq"] for d in h.peer.of_type("tts_phrase_done")] == [c["seq"] for c in chunks]
    assert kinds[-2:] == ["tts_complete", "metrics"]
    reply = "".join(t["text"] for t in tokens)
    assert reply.startswith("You said: " + events[final_at]["text"])
    m = events[-1]
    assert m["id"] == events[final_at]["id"]
    assert m["t0_ms"] == 0.0
    # the reply was prepared during the silence window (speculatively),
    # so the first token and audio may leave with the final itself
    assert 0 < m["t1_first_partial_ms"] < m["t2_final_ms"]
    assert m["t2_final_ms"] <= m["t3_first_token_ms"] <= m["t4_first_audio_ms"]
    assert m["decode_runs"] >= 2


async def test_final_comes_exactly_one_silence_window_after_speech(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    h = await start_session()
    h.peer.send_json(START)
    t_start = trio.current_time()
    await h.stream(speech(1200) + quiet(1500))
    await h.peer.wait_for("final_transcript")
    speech_end = t_start + 1.2
    # 700 ms of silence, counted in 30 ms frames that arrive in 100 ms
    # packets: the window closes at 1.2 + 0.72 s of audio, which arrives
    # with the packet sent at 1.9 s (covering 1.9..2.0 s). The final was
    # decoded speculatively while the window ran, so no decode time follows.
    assert h.peer.time_of("final_transcript") == pytest.approx(speech_end + 0.7)


async def test_a_pause_inside_the_window_drops_the_speculative_final(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    asr = FakeAsr(delay_s=0.0625)
    h = await start_session(engines=make_engines(asr=asr))
    h.peer.send_json(START)
    await h.stream(speech(900) + quiet(400) + speech(900, 600.0) + quiet(1000))
    await h.peer.wait_for("metrics")
    finals = h.peer.of_type("final_transcript")
    assert len(finals) == 1
    # one utterance: 3 words, a silent chunk-or-so, 3 words of another pitch
    words = finals[0]["text"].split()
    assert len(words) >= 6 and words[0].lower() != words[-1].lower()
    # the decode begun at the pause was dropped; the one begun at the end kept
    assert asr.final_calls == 2


async def test_three_utterances_give_three_turns_in_order(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm()
    h = await start_session(engines=make_engines(llm=llm))
    h.peer.send_json(START)
    pcm = b"".join(speech(900, f) + quiet(3000) for f in (300.0, 600.0, 900.0))
    await h.stream(pcm)
    await h.peer.wait_for("metrics", 3)
    finals = h.peer.of_type("final_transcript")
    assert [f["id"] for f in finals] == ["s1-1", "s1-2", "s1-3"]
    assert len({f["text"] for f in finals}) == 3
    assert [m["id"] for m in h.peer.of_type("metrics")] == ["s1-1", "s1-2", "s1-3"]
    assert len(h.peer.of_type("tts_complete")) == 3
    assert [user for user, _ in await memory_of(h, llm)] == [f["text"] for f in finals]


async def test_stop_finalizes_now(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    h = await start_session()
    h.peer.send_json(START)
    await h.stream(speech(1000))
    t_stop = trio.current_time()
    h.peer.send_json({"type": "stop"})
    await h.peer.wait_for("metrics")
    assert h.peer.time_of("final_transcript") == pytest.approx(t_stop + 0.0625)
    # after stop the client is idle: audio needs a new start
    h.peer.send_bytes(speech(100))
    err = await h.peer.wait_for("error")
    assert err["reason"] == "audio_before_start"


async def test_stop_with_silence_only_gives_no_final(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    h = await start_session()
    h.peer.send_json(START)
    await h.stream(quiet(3000))
    h.peer.send_json({"type": "stop"})
    await h.peer.wait_for("info", event="no_speech")
    await trio.testing.wait_all_tasks_blocked()
    assert types(h) == ["protocol", "info"]


async def test_max_duration_finalizes_with_info(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    config = Config(max_utterance_ms=2000)
    h = await start_session(config)
    h.peer.send_json(START)
    t_start = trio.current_time()
    await h.stream(speech(3000) + quiet(1000))
    info = await h.peer.wait_for("info", event="max_duration")
    assert info["code"] == "MAX_DURATION_EXCEEDED"
    await h.peer.wait_for("final_transcript")
    kinds = types(h)
    assert kinds.index("info") < kinds.index("final_transcript")
    # the utterance opened after 60 ms of speech and ran 2000 ms from its start
    assert h.peer.time_of("final_transcript") <= t_start + 2.1 + 0.0625


# -- cancel -------------------------------------------------------------------


async def _until_final(h: Harness) -> float:
    await one_turn(h)
    await h.peer.wait_for("final_transcript")
    return h.peer.time_of("final_transcript")


async def test_cancel_before_first_token(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm(first_token_s=2.0)
    h = await start_session(engines=make_engines(llm=llm))
    h.peer.send_json(START)
    await h.stream(speech(1200) + quiet(900))
    await h.peer.wait_for("final_transcript")
    h.peer.send_json({"type": "cancel"})
    err = await h.peer.wait_for("error")
    assert err == {
        "type": "error",
        "code": "CANCELLED",
        "message": "reply cancelled by the client",
        "recoverable": True,
    }
    await trio.testing.wait_all_tasks_blocked()
    assert llm.opened == llm.closed == 1
    # the turn is over: a second cancel finds nothing to cancel
    h.peer.send_json({"type": "cancel"})
    await h.peer.wait_for("info", event="nothing_to_cancel")
    await trio.sleep_until(trio.current_time() + 5)  # well past when tokens would have come
    assert h.peer.of_type("llm_token") == [] and h.peer.of_type("tts_chunk") == []
    assert h.peer.of_type("metrics") == []
    # ready for the next utterance at once, and its prompt remembers nothing
    await h.stream(speech(1200, 600.0) + quiet(1000))
    await h.peer.wait_for("metrics")
    assert remembered(llm.prompts[-1]) == []
    assert len(await memory_of(h, llm)) == 1


async def test_cancel_mid_reply_closes_stream_and_drops_output(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm(token_s=0.25)
    h = await start_session(engines=make_engines(llm=llm))
    await one_turn(h)
    await h.peer.wait_for("llm_token", 3)
    h.peer.send_json({"type": "cancel"})
    await h.peer.wait_for("error", code="CANCELLED")
    n_tokens = len(h.peer.of_type("llm_token"))
    await trio.sleep_until(trio.current_time() + 20)
    assert len(h.peer.of_type("llm_token")) == n_tokens
    assert types(h)[-1] == "error"
    assert llm.closed == 1
    assert not any(e.get("done") for e in h.peer.of_type("llm_token"))
    assert await memory_of(h, llm) == []


async def test_cancel_during_tts_drops_queued_audio(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    tts = FakeTts(delay_s=1.0)
    llm = RecordingLlm()
    h = await start_session(engines=make_engines(llm=llm, tts=tts))
    await one_turn(h)
    await h.peer.wait_for("llm_token", done=True)
    await h.peer.wait_for("tts_chunk")
    h.peer.send_json({"type": "cancel"})
    await h.peer.wait_for("error", code="CANCELLED")
    chunks = len(h.peer.of_type("tts_chunk"))
    await trio.sleep_until(trio.current_time() + 30)
    assert len(h.peer.of_type("tts_chunk")) == chunks
    assert h.peer.of_type("tts_complete") == []
    # done:true was sent, so the reply is in memory (documented rule)
    assert len(await memory_of(h, llm)) == 1


async def test_cancel_after_turn_ended_is_a_noop(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm()
    h = await start_session(engines=make_engines(llm=llm))
    await one_turn(h)
    await h.peer.wait_for("metrics")
    h.peer.send_json({"type": "cancel"})
    info = await h.peer.wait_for("info", event="nothing_to_cancel")
    assert info["message"] == "nothing to cancel"
    assert h.peer.of_type("error") == []
    assert len(await memory_of(h, llm)) == 1


# -- barge-in -------------------------------------------------------------------


async def test_barge_in_cancels_reply_and_answers_new_utterance(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm(token_s=0.25)
    h = await start_session(engines=make_engines(llm=llm))
    await one_turn(h)
    await h.peer.wait_for("llm_token", 2)
    await h.stream(speech(1200, 800.0) + quiet(1000))
    await h.peer.wait_for("metrics")
    kinds = types(h)
    barge = kinds.index("info")
    assert h.peer.events[barge]["event"] == "barge_in"
    finals = h.peer.of_type("final_transcript")
    assert len(finals) == 2
    # nothing of the first reply after the barge-in; the second one completes
    assert kinds[barge:].count("tts_complete") == 1
    assert len(h.peer.of_type("metrics")) == 1
    assert [user for user, _ in await memory_of(h, llm)] == [finals[1]["text"]]


async def test_barge_in_off_keeps_the_reply(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    config = Config(barge_in=False)
    llm = RecordingLlm(token_s=0.25)
    h = await start_session(config, make_engines(llm=llm))
    await one_turn(h)
    await h.peer.wait_for("llm_token", 2)
    await h.stream(speech(1200, 800.0) + quiet(1000))
    await h.peer.wait_for("metrics", 2)
    assert not [e for e in h.peer.of_type("info") if e.get("event") == "barge_in"]
    assert len(h.peer.of_type("tts_complete")) == 2
    assert len(await memory_of(h, llm)) == 2


# -- LLM timeouts -----------------------------------------------------------------


class ScriptedLlm:
    """Yields deltas at the given delays (seconds before each)."""

    ready = True

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.closed = 0
        self.prompts: list[list[ChatMessage]] = []

    @asynccontextmanager
    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[AsyncIterator[str]]:
        self.prompts.append(list(messages))

        async def deltas() -> AsyncIterator[str]:
            for i, delay in enumerate(self.delays):
                await trio.sleep(delay)
                yield f" w{i}."

        try:
            yield deltas()
        finally:
            self.closed += 1


@pytest.mark.parametrize(
    ("delays", "expect_after_s", "message"),
    [
        ([60.0], 5.0, "no first token within 5 s"),
        ([0.5, 0.5, 30.0], 0.5 + 0.5 + 4.0, "no token for 4 s in the middle of the reply"),
        ([0.5] + [3.5] * 20, 30.0, "the reply took longer than 30 s"),
    ],
)
async def test_llm_timeouts(
    autojump_clock: trio.testing.MockClock,
    config: Config,
    start_session: StartSession,
    delays: list[float],
    expect_after_s: float,
    message: str,
) -> None:
    llm = ScriptedLlm(delays)
    engines = make_engines()
    engines = Engines(engines.name, engines.vad, engines.asr, llm, engines.tts)
    # Without a speculative start the turn begins at the final: the
    # timeouts then count from it.
    h = await start_session(config.replace(speculative_reply=False), engines)
    await one_turn(h)
    await h.peer.wait_for("final_transcript")
    t_final = h.peer.time_of("final_transcript")
    err = await h.peer.wait_for("error")
    assert err["code"] == "LLM_TIMEOUT" and err["recoverable"] is True
    assert err["message"] == message
    assert h.peer.time_of("error") == pytest.approx(t_final + expect_after_s)
    await trio.testing.wait_all_tasks_blocked()
    assert llm.closed == 1
    assert not any(e.get("done") for e in h.peer.of_type("llm_token"))
    llm.delays = [0.0]  # a model that answers, to see the memory
    assert await memory_of(h, llm) == []


async def test_llm_timeout_first_token_bound_follows_total(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    config = Config(llm_timeout_s=4.0, speculative_reply=False)
    assert config.llm_first_token_timeout_s == 2.0
    llm = ScriptedLlm([60.0])
    e = make_engines()
    h = await start_session(config, Engines(e.name, e.vad, e.asr, llm, e.tts))
    await one_turn(h)
    await h.peer.wait_for("final_transcript")
    await h.peer.wait_for("error")
    assert h.peer.time_of("error") == pytest.approx(h.peer.time_of("final_transcript") + 2.0)


async def test_llm_failure_then_next_turn_works(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm(fail_after_tokens=3)
    h = await start_session(engines=make_engines(llm=llm))
    await one_turn(h)
    err = await h.peer.wait_for("error")
    assert err["code"] == "LLM_FAIL" and err["recoverable"] is True
    llm.fail_after_tokens = None
    await h.stream(speech(1200, 600.0) + quiet(1000))
    await h.peer.wait_for("tts_complete")
    assert remembered(llm.prompts[-1]) == []  # the failed reply left no trace
    assert len(await memory_of(h, llm)) == 1


# -- TTS ---------------------------------------------------------------------------


async def test_failed_phrase_is_skipped(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    tts = FakeTts(delay_s=0.015625, fail_on=lambda text: text.startswith("This is"))
    h = await start_session(engines=make_engines(tts=tts))
    await one_turn(h)
    await h.peer.wait_for("metrics")
    fails = [e for e in h.peer.of_type("info") if e.get("event") == "tts_fail"]
    assert len(fails) == 1 and fails[0]["code"] == "TTS_FAIL"
    chunk_seqs = [c["seq"] for c in h.peer.of_type("tts_chunk")]
    assert fails[0]["seq"] not in chunk_seqs
    assert max(chunk_seqs) > fails[0]["seq"]
    assert len(h.peer.of_type("tts_complete")) == 1


async def test_pcm16_chunks_are_followed_by_their_bytes(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    h = await start_session()
    h.peer.send_json({**START, "audio_format": "pcm16"})
    await h.stream(speech(1200) + quiet(1000))
    await h.peer.wait_for("metrics")
    frames = h.peer.frames
    headers = [i for i, f in enumerate(frames) if isinstance(f, str) and '"tts_chunk"' in f]
    assert headers
    for i in headers:
        header = json.loads(frames[i])
        body = frames[i + 1]
        assert header["format"] == "pcm16" and "audio_b64" not in header
        assert isinstance(body, bytes) and len(body) == header["bytes"]
    assert sum(isinstance(f, bytes) for f in frames) == len(headers)


# -- lean mode, bad input -----------------------------------------------------------


async def test_lean_mode_gives_transcripts_only(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = FakeLlm()
    h = await start_session(Config(lean=True), make_engines(llm=llm))
    await one_turn(h)
    await h.peer.wait_for("metrics")
    assert h.peer.events[0]["mode"] == "lean"
    assert set(types(h)) == {"protocol", "partial_transcript", "final_transcript", "metrics"}
    assert llm.opened == 0
    m = h.peer.of_type("metrics")[0]
    assert m["t3_first_token_ms"] is None and m["t4_first_audio_ms"] is None


BAD_INPUTS: list[tuple[str | bytes, str, str]] = [
    ("not json", "BAD_MESSAGE", "invalid_json"),
    ("[1, 2]", "BAD_MESSAGE", "not_an_object"),
    ('{"sample_rate": 16000}', "BAD_MESSAGE", "missing_type"),
    ('{"type": "dance"}', "BAD_MESSAGE", "unknown_type"),
    ('{"type": "start", "sample_rate": "16000"}', "BAD_MESSAGE", "bad_field"),
    (
        '{"type": "start", "sample_rate": 96000}',
        "UNSUPPORTED_SAMPLE_RATE",
        "unsupported_sample_rate",
    ),
    ('{"type": "stop"}', "BAD_MESSAGE", "not_started"),
    (b"\x00\x01" * 10, "BAD_MESSAGE", "audio_before_start"),
    ("x" * 5000, "BAD_MESSAGE", "text_too_large"),
]


@pytest.mark.parametrize(("frame", "code", "reason"), BAD_INPUTS)
async def test_bad_input_before_start_is_answered_and_survived(
    autojump_clock: trio.testing.MockClock,
    start_session: StartSession,
    frame: str | bytes,
    code: str,
    reason: str,
) -> None:
    h = await start_session()
    if isinstance(frame, bytes):
        h.peer.send_bytes(frame)
    else:
        h.peer.send_text(frame)
    err = await h.peer.wait_for("error")
    assert (err["code"], err["reason"], err["recoverable"]) == (code, reason, True)
    assert err["message"]
    await one_turn(h)
    await h.peer.wait_for("metrics")
    assert h.peer.close_code is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00" * 3, "odd_length"),
        (b"\x00" * 200_000, "frame_too_large"),
        ('{"type": "start", "sample_rate": 16000}', "already_started"),
    ],
)
async def test_bad_input_mid_stream_keeps_the_utterance(
    autojump_clock: trio.testing.MockClock,
    start_session: StartSession,
    frame: str | bytes,
    reason: str,
) -> None:
    h = await start_session()
    h.peer.send_json(START)
    await h.stream(speech(600))
    if isinstance(frame, bytes):
        h.peer.send_bytes(frame)
    else:
        h.peer.send_text(frame)
    await h.stream(speech(600) + quiet(1000))
    await h.peer.wait_for("metrics")
    assert [e["reason"] for e in h.peer.of_type("error")] == [reason]
    finals = h.peer.of_type("final_transcript")
    # one utterance of 1.2 s: the bad frame neither split nor reset it
    assert len(finals) == 1 and len(finals[0]["text"].split()) == 4


async def test_a_stream_of_garbage_is_a_protocol_violation(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    h = await start_session()
    for _ in range(25):
        h.peer.send_text("garbage")
    await h.session.closed.wait()
    errors = h.peer.of_type("error")
    assert len(errors) == 20
    assert errors[-1]["code"] == "PROTOCOL_VIOLATION" and errors[-1]["recoverable"] is False
    assert h.peer.close_code == 1008


async def test_disconnect_mid_turn_leaves_nothing(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    llm = FakeLlm(first_token_s=0.125, token_s=0.25)
    # A nursery of its own, nothing cancels: leaving it is the assertion.
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
        await one_turn(h)
        await h.peer.wait_for("llm_token", 2)
        h.peer.disconnect()
        await h.session.closed.wait()
        assert llm.closed == 1
    # the nursery exited: every task of the session has ended


# -- backpressure -------------------------------------------------------------------------


async def test_slow_reader_keeps_tokens_and_drops_stale_partials(
    autojump_clock: trio.testing.MockClock,
    start_session: StartSession,
) -> None:
    config = Config(backpressure_threshold=8, partial_interval_ms=250)
    h = await start_session(config)
    h.peer.send_json(START)
    await trio.testing.wait_all_tasks_blocked()
    h.peer.blocked = True
    await h.stream(speech(3000) + quiet(1000))
    await trio.sleep_until(trio.current_time() + 10)
    h.peer.unblock()
    await h.peer.wait_for("metrics")
    partials = h.peer.of_type("partial_transcript")
    assert h.session.outbox.queue.dropped_partials > 0
    assert len(partials) >= 1
    tokens = h.peer.of_type("llm_token")
    reply = "".join(t["text"] for t in tokens)
    assert reply == default_reply(h.peer.of_type("final_transcript")[0]["text"])
    warn = [e for e in h.peer.of_type("info") if e.get("event") == "backpressure"]
    assert len(warn) == 1 and warn[0]["code"] == "BACKPRESSURE"


async def test_client_far_behind_is_closed(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    config = Config(backpressure_hard_bytes=64 * 1024)
    h = await start_session(config, make_engines(tts=FakeTts(delay_s=0.01, ms_per_char=200)))
    h.peer.send_json(START)
    await trio.testing.wait_all_tasks_blocked()
    h.peer.blocked = True
    await h.stream(speech(1200) + quiet(1000))
    with trio.fail_after(60):
        await h.session.closed.wait()
    assert h.session.close_code == 1008
    assert h.session.outbox.queue.nbytes <= 64 * 1024 + 200_000


async def test_client_far_behind_is_severed_when_its_send_cannot_be_cancelled(
    autojump_clock: trio.testing.MockClock,
    start_session: StartSession,
) -> None:
    """Hypercorn's socket writes are shielded: at the hard limit the close
    frame cannot get past the stuck send, so after the close timeout the
    connection is severed, which frees the writer."""
    config = Config(backpressure_hard_bytes=64 * 1024)
    h = await start_session(config, make_engines(tts=FakeTts(delay_s=0.01, ms_per_char=200)))
    h.peer.send_json(START)
    await trio.testing.wait_all_tasks_blocked()
    h.peer.blocked = h.peer.shielded = True
    await h.stream(speech(1200) + quiet(1000))
    with trio.fail_after(60):
        await h.session.closed.wait()
    # No close frame could be sent: the connection was cut instead.
    assert h.peer.aborted and h.peer.close_code is None
    assert h.session.close_code == 1008


async def test_shutdown_severs_a_client_whose_send_cannot_be_cancelled(
    autojump_clock: trio.testing.MockClock,
    start_session: StartSession,
) -> None:
    config = Config(shutdown_grace_s=1.0)
    h = await start_session(config)
    h.peer.send_json(START)
    await trio.testing.wait_all_tasks_blocked()
    h.peer.blocked = h.peer.shielded = True
    await h.stream(speech(1200) + quiet(1000))
    await trio.testing.wait_all_tasks_blocked()
    began = trio.current_time()
    await h.session.shutdown(began + config.shutdown_grace_s)
    assert h.session.closed.is_set() and h.peer.aborted
    assert trio.current_time() - began == pytest.approx(config.shutdown_grace_s + CLOSE_TIMEOUT_S)


# -- the reply stage alone: held (speculative) replies -----------------------------


class Sink:
    """The session's side of the reply stage: what it emits, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event, *, turn: int | None = None, on_sent: OnSent | None = None) -> None:
        self.events.append(event)

    def discard(self, turn: int) -> int:
        return 0

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


class TurnsEnded(Observer):
    """The outcome of every turn that ended, and a way to wait for one."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self._changed = trio.Event()

    def turn(self, outcome: str) -> None:
        self.outcomes.append(outcome)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.outcomes) < count:
            await self._changed.wait()


class Replies:
    """A reply stage fed turn events by the test, as the ASR stage would."""

    def __init__(self, nursery: trio.Nursery, config: Config, llm: RecordingLlm) -> None:
        self.llm = llm
        self.sink = Sink()
        self.ended = TurnsEnded()
        ctx = StageContext("s1", config, make_engines(llm=llm), self.sink, self.ended)
        self.stage = ReplyStage(ctx)
        self.send, receive = trio.open_memory_channel[TurnEvent](8)
        nursery.start_soon(self.stage.run, receive)


async def test_a_held_reply_says_nothing_until_its_final(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    r = Replies(nursery, config, RecordingLlm())
    marks = TurnMetrics(trio.current_time())
    await r.send.send(Tentative(1, "hello there", marks))
    await r.ended.wait_for(1)  # the held reply ran to its end...
    await trio.testing.wait_all_tasks_blocked()
    assert r.sink.events == []  # ...and said nothing
    await r.send.send(Final(1, "s1-1", "hello there", marks))
    await trio.testing.wait_all_tasks_blocked()
    kinds = r.sink.kinds()
    assert kinds[0] == "ReplyStarted" and "ReplyDelta" in kinds
    assert kinds[-2:] == ["ReplyEnded", "Metrics"]
    assert r.sink.events[-1] == Metrics("s1-1", marks)  # under the final's id
    assert r.llm.opened == 1  # released, not asked again
    reply = "".join(e.text for e in r.sink.events if isinstance(e, ReplyDelta))
    # released, it entered the memory: the next reply's prompt has it
    await r.send.send(Final(2, "s1-2", "and then?", TurnMetrics(trio.current_time())))
    await r.ended.wait_for(2)
    assert remembered(r.llm.prompts[-1]) == [("hello there", reply)]


async def test_a_retracted_held_reply_leaves_no_trace(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    r = Replies(nursery, config, RecordingLlm())
    await r.send.send(Tentative(1, "hello there", TurnMetrics(trio.current_time())))
    await trio.sleep_until(trio.current_time() + 0.3)  # mid-stream, output held
    assert r.llm.opened == 1 and r.llm.closed == 0 and r.sink.events == []
    await r.send.send(Retracted(2))  # another utterance's: not this reply's
    await r.send.send(Retracted(1))
    await r.ended.wait_for(1)
    await trio.testing.wait_all_tasks_blocked()
    assert r.ended.outcomes == ["cancelled"]
    assert r.sink.events == [] and r.llm.closed == 1
    # the next reply remembers nothing of it
    await r.send.send(Final(2, "s1-1", "something else", TurnMetrics(trio.current_time())))
    await r.ended.wait_for(2)
    assert remembered(r.llm.prompts[-1]) == []
    assert [e.transcript_id for e in r.sink.events if isinstance(e, Metrics)] == ["s1-1"]


async def test_a_held_reply_waits_for_its_own_final(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    """A slow final of one utterance may come after the next one's tentative:
    it gets its own reply, and the held one is released after it, by its final."""
    r = Replies(nursery, config, RecordingLlm())
    first, second = TurnMetrics(trio.current_time()), TurnMetrics(trio.current_time())
    await r.send.send(Tentative(2, "second", second))
    await r.send.send(Final(1, "s1-1", "first", first))
    await r.send.send(Final(2, "s1-2", "second", second))
    await r.ended.wait_for(2)
    await trio.testing.wait_all_tasks_blocked()
    assert r.llm.opened == 2  # the held reply was released, not asked again
    answered = [e.transcript_id for e in r.sink.events if isinstance(e, Metrics)]
    assert answered == ["s1-1", "s1-2"]
    # never two replies at once: all of turn 2 (the late final's) went out,
    # then all of turn 1 (the held reply)
    turns = [e.turn for e in r.sink.events if isinstance(e, ReplyStarted | ReplyDelta | ReplyEnded)]
    assert [turn for turn, _ in itertools.groupby(turns)] == [2, 1]


async def test_every_reply_seen_to_start_is_seen_to_end(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, config: Config
) -> None:
    r = Replies(nursery, config, RecordingLlm(token_s=0.25))
    await r.send.send(Final(1, "s1-1", "hello there", TurnMetrics(trio.current_time())))
    await trio.sleep_until(trio.current_time() + 0.5)  # mid-reply
    r.stage.cancel()
    await r.ended.wait_for(1)
    await trio.testing.wait_all_tasks_blocked()
    assert [e for e in r.sink.events if isinstance(e, ReplyStarted | ReplyEnded)] == [
        ReplyStarted(1, "s1-1"),
        ReplyEnded(1, Outcome.CANCELLED),
    ]
    assert r.sink.events[-1] == Error(ErrorCode.CANCELLED, "reply cancelled by the client")
    r.stage.cancel()
    assert r.sink.events[-1:] == [NOTHING_TO_CANCEL]


async def test_slow_recognition_advises_a_smaller_model_once(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    asr = FakeAsr(delay_s=5.0)  # 5 s for at most ~3 s of audio: RTF > 1.5 each time
    h = await start_session(engines=make_engines(asr=asr))
    h.peer.send_json(START)
    await h.stream(speech(2500) + quiet(1000) + speech(1200, 600.0) + quiet(3000))
    await h.peer.wait_for("metrics", 2)
    slow = [e for e in h.peer.of_type("info") if e.get("event") == "asr_slow"]
    assert len(slow) == 1 and slow[0]["rtf"] > 1.5
    assert "smaller model" in slow[0]["message"]


# -- speculative replies ----------------------------------------------------------------


async def test_a_speculative_reply_leaves_with_the_final(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm()
    h = await start_session(engines=make_engines(llm=llm))
    h.peer.send_json(START)
    await h.stream(speech(1200) + quiet(1500))
    await h.peer.wait_for("tts_chunk")
    t_final = h.peer.time_of("final_transcript")
    # decode 62.5 ms + first token 125 ms + TTS 15.6 ms all fit in the
    # 700 ms window: token and audio go out the instant the final does
    assert h.peer.time_of("llm_token") == t_final
    assert h.peer.time_of("tts_chunk") == t_final
    kinds = types(h)
    assert kinds.index("final_transcript") < kinds.index("llm_token")
    await h.peer.wait_for("metrics")
    assert len(await memory_of(h, llm)) == 1


async def test_speech_resuming_drops_the_speculative_reply_unheard(
    autojump_clock: trio.testing.MockClock, start_session: StartSession
) -> None:
    llm = RecordingLlm()
    h = await start_session(engines=make_engines(llm=llm))
    h.peer.send_json(START)
    # a 600 ms pause: the held reply starts and streams, then is dropped
    await h.stream(speech(900) + quiet(600) + speech(900, 600.0) + quiet(1500))
    await h.peer.wait_for("metrics")
    assert llm.opened == 2 and llm.closed == 2
    finals = h.peer.of_type("final_transcript")
    assert len(finals) == 1
    reply = "".join(t["text"] for t in h.peer.of_type("llm_token"))
    assert reply == default_reply(finals[0]["text"])
    assert [m["id"] for m in h.peer.of_type("metrics")] == [finals[0]["id"]]
    assert await memory_of(h, llm) == [(finals[0]["text"], reply)]
