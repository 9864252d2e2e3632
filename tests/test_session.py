"""Session timing under MockClock(autojump_threshold=0): every assertion on
time is exact, because the deterministic engines only ever ``trio.sleep``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import Harness, make_engines, open_session, quiet, speech
from voicetrio.config import Config
from voicetrio.engines.base import Engines
from voicetrio.engines.fake import FakeAsr, FakeLlm, FakeTts, default_reply
from voicetrio.metrics import TurnMetrics
from voicetrio.reply import Turn, Utterance
from voicetrio.session import CLOSE_TIMEOUT_S

START = {"type": "start", "sample_rate": 16000}


def types(h: Harness) -> list[str]:
    return [e["type"] for e in h.peer.events]


async def one_turn(h: Harness, ms: int = 1200) -> None:
    h.peer.send_json(START)
    await h.stream(speech(ms) + quiet(1000))


# -- the whole turn ------------------------------------------------------------


async def test_event_order_of_one_turn(autojump_clock: trio.testing.MockClock, config: Config) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


async def test_final_comes_exactly_one_silence_window_after_speech(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


async def test_a_pause_inside_the_window_drops_the_speculative_final(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    asr = FakeAsr(delay_s=0.0625)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(asr=asr))
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
        nursery.cancel_scope.cancel()


async def test_three_utterances_give_three_turns_in_order(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
        h.peer.send_json(START)
        pcm = b"".join(speech(900, f) + quiet(3000) for f in (300.0, 600.0, 900.0))
        await h.stream(pcm)
        await h.peer.wait_for("metrics", 3)
        finals = h.peer.of_type("final_transcript")
        assert [f["id"] for f in finals] == ["s1-1", "s1-2", "s1-3"]
        assert len({f["text"] for f in finals}) == 3
        assert [m["id"] for m in h.peer.of_type("metrics")] == ["s1-1", "s1-2", "s1-3"]
        assert len(h.peer.of_type("tts_complete")) == 3
        assert len(h.session.ctx.memory) == 3
        nursery.cancel_scope.cancel()


async def test_stop_finalizes_now(autojump_clock: trio.testing.MockClock, config: Config) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


async def test_stop_with_silence_only_gives_no_final(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
        h.peer.send_json(START)
        await h.stream(quiet(3000))
        h.peer.send_json({"type": "stop"})
        await h.peer.wait_for("info", event="no_speech")
        await trio.testing.wait_all_tasks_blocked()
        assert types(h) == ["protocol", "info"]
        nursery.cancel_scope.cancel()


async def test_max_duration_finalizes_with_info(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(max_utterance_ms=2000)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


# -- cancel -------------------------------------------------------------------


async def _until_final(h: Harness) -> float:
    await one_turn(h)
    await h.peer.wait_for("final_transcript")
    return h.peer.time_of("final_transcript")


async def test_cancel_before_first_token(autojump_clock: trio.testing.MockClock, config: Config) -> None:
    llm = FakeLlm(first_token_s=2.0, token_s=0.03125)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
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
        assert h.session.turn is not None and not h.session.turn.active
        await trio.sleep_until(trio.current_time() + 5)  # well past when tokens would have come
        assert h.peer.of_type("llm_token") == [] and h.peer.of_type("tts_chunk") == []
        assert h.peer.of_type("metrics") == []
        assert len(h.session.ctx.memory) == 0
        # ready for the next utterance at once
        await h.stream(speech(1200, 600.0) + quiet(1000))
        await h.peer.wait_for("metrics")
        assert len(h.session.ctx.memory) == 1
        nursery.cancel_scope.cancel()


async def test_cancel_mid_reply_closes_stream_and_drops_output(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    llm = FakeLlm(first_token_s=0.125, token_s=0.25)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
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
        assert len(h.session.ctx.memory) == 0
        nursery.cancel_scope.cancel()


async def test_cancel_during_tts_drops_queued_audio(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    tts = FakeTts(delay_s=1.0)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(tts=tts))
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
        assert len(h.session.ctx.memory) == 1
        nursery.cancel_scope.cancel()


async def test_cancel_after_turn_ended_is_a_noop(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
        await one_turn(h)
        await h.peer.wait_for("metrics")
        h.peer.send_json({"type": "cancel"})
        info = await h.peer.wait_for("info", event="nothing_to_cancel")
        assert info["message"] == "nothing to cancel"
        assert h.peer.of_type("error") == []
        assert len(h.session.ctx.memory) == 1
        nursery.cancel_scope.cancel()


# -- barge-in -------------------------------------------------------------------


async def test_barge_in_cancels_reply_and_answers_new_utterance(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    llm = FakeLlm(first_token_s=0.125, token_s=0.25)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
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
        assert h.session.ctx.memory.turns[0][0] == finals[1]["text"]
        assert len(h.session.ctx.memory) == 1
        nursery.cancel_scope.cancel()


async def test_barge_in_off_keeps_the_reply(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(barge_in=False)
    llm = FakeLlm(first_token_s=0.125, token_s=0.25)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
        await one_turn(h)
        await h.peer.wait_for("llm_token", 2)
        await h.stream(speech(1200, 800.0) + quiet(1000))
        await h.peer.wait_for("metrics", 2)
        assert not [e for e in h.peer.of_type("info") if e.get("event") == "barge_in"]
        assert len(h.peer.of_type("tts_complete")) == 2
        assert len(h.session.ctx.memory) == 2
        nursery.cancel_scope.cancel()


# -- LLM timeouts -----------------------------------------------------------------


class ScriptedLlm:
    """Yields deltas at the given delays (seconds before each)."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.closed = 0

    @asynccontextmanager
    async def stream(self, messages: Any) -> AsyncIterator[AsyncIterator[str]]:
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
    delays: list[float],
    expect_after_s: float,
    message: str,
) -> None:
    llm = ScriptedLlm(delays)
    engines = make_engines()
    engines = Engines(engines.name, engines.vad, engines.asr, llm, engines.tts)
    async with trio.open_nursery() as nursery:
        # Without a speculative start the turn begins at the final: the
        # timeouts then count from it.
        h = await open_session(nursery, config.replace(speculative_reply=False), engines)
        await one_turn(h)
        await h.peer.wait_for("final_transcript")
        t_final = h.peer.time_of("final_transcript")
        err = await h.peer.wait_for("error")
        assert err["code"] == "LLM_TIMEOUT" and err["recoverable"] is True
        assert err["message"] == message
        assert h.peer.time_of("error") == pytest.approx(t_final + expect_after_s)
        await trio.testing.wait_all_tasks_blocked()
        assert llm.closed == 1
        assert len(h.session.ctx.memory) == 0
        assert not any(e.get("done") for e in h.peer.of_type("llm_token"))
        nursery.cancel_scope.cancel()


async def test_llm_timeout_first_token_bound_follows_total(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(llm_timeout_s=4.0, speculative_reply=False)
    assert config.llm_first_token_timeout_s == 2.0
    llm = ScriptedLlm([60.0])
    e = make_engines()
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, Engines(e.name, e.vad, e.asr, llm, e.tts))
        await one_turn(h)
        await h.peer.wait_for("final_transcript")
        await h.peer.wait_for("error")
        assert h.peer.time_of("error") == pytest.approx(h.peer.time_of("final_transcript") + 2.0)
        nursery.cancel_scope.cancel()


async def test_llm_failure_then_next_turn_works(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    llm = FakeLlm(first_token_s=0.125, token_s=0.03125, fail_after_tokens=3)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
        await one_turn(h)
        err = await h.peer.wait_for("error")
        assert err["code"] == "LLM_FAIL" and err["recoverable"] is True
        assert len(h.session.ctx.memory) == 0
        llm.fail_after_tokens = None
        await h.stream(speech(1200, 600.0) + quiet(1000))
        await h.peer.wait_for("tts_complete")
        assert len(h.session.ctx.memory) == 1
        nursery.cancel_scope.cancel()


# -- TTS ---------------------------------------------------------------------------


async def test_failed_phrase_is_skipped(autojump_clock: trio.testing.MockClock, config: Config) -> None:
    tts = FakeTts(delay_s=0.015625, fail_on=lambda text: text.startswith("This is"))
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(tts=tts))
        await one_turn(h)
        await h.peer.wait_for("metrics")
        fails = [e for e in h.peer.of_type("info") if e.get("event") == "tts_fail"]
        assert len(fails) == 1 and fails[0]["code"] == "TTS_FAIL"
        chunk_seqs = [c["seq"] for c in h.peer.of_type("tts_chunk")]
        assert fails[0]["seq"] not in chunk_seqs
        assert max(chunk_seqs) > fails[0]["seq"]
        assert len(h.peer.of_type("tts_complete")) == 1
        nursery.cancel_scope.cancel()


async def test_pcm16_chunks_are_followed_by_their_bytes(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


# -- lean mode, bad input -----------------------------------------------------------


async def test_lean_mode_gives_transcripts_only(autojump_clock: trio.testing.MockClock) -> None:
    llm = FakeLlm()
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, Config(lean=True), make_engines(llm=llm))
        await one_turn(h)
        await h.peer.wait_for("metrics")
        assert h.peer.events[0]["mode"] == "lean"
        assert set(types(h)) == {"protocol", "partial_transcript", "final_transcript", "metrics"}
        assert llm.opened == 0
        m = h.peer.of_type("metrics")[0]
        assert m["t3_first_token_ms"] is None and m["t4_first_audio_ms"] is None
        nursery.cancel_scope.cancel()


BAD_INPUTS: list[tuple[str | bytes, str, str]] = [
    ("not json", "BAD_MESSAGE", "invalid_json"),
    ("[1, 2]", "BAD_MESSAGE", "not_an_object"),
    ('{"sample_rate": 16000}', "BAD_MESSAGE", "missing_type"),
    ('{"type": "dance"}', "BAD_MESSAGE", "unknown_type"),
    ('{"type": "start", "sample_rate": "16000"}', "BAD_MESSAGE", "bad_field"),
    ('{"type": "start", "sample_rate": 96000}', "UNSUPPORTED_SAMPLE_RATE", "unsupported_sample_rate"),
    ('{"type": "stop"}', "BAD_MESSAGE", "not_started"),
    (b"\x00\x01" * 10, "BAD_MESSAGE", "audio_before_start"),
    ("x" * 5000, "BAD_MESSAGE", "text_too_large"),
]


@pytest.mark.parametrize(("frame", "code", "reason"), BAD_INPUTS)
async def test_bad_input_before_start_is_answered_and_survived(
    autojump_clock: trio.testing.MockClock, config: Config, frame: str | bytes, code: str, reason: str
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00" * 3, "odd_length"),
        (b"\x00" * 200_000, "frame_too_large"),
        ('{"type": "start", "sample_rate": 16000}', "already_started"),
    ],
)
async def test_bad_input_mid_stream_keeps_the_utterance(
    autojump_clock: trio.testing.MockClock, config: Config, frame: str | bytes, reason: str
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


async def test_a_stream_of_garbage_is_a_protocol_violation(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
) -> None:
    config = Config(backpressure_threshold=8, partial_interval_ms=250)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        nursery.cancel_scope.cancel()


async def test_client_far_behind_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(backpressure_hard_bytes=64 * 1024)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(tts=FakeTts(delay_s=0.01, ms_per_char=200)))
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
) -> None:
    """Hypercorn's socket writes are shielded: at the hard limit the close
    frame cannot get past the stuck send, so after the close timeout the
    connection is severed, which frees the writer."""
    config = Config(backpressure_hard_bytes=64 * 1024)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(tts=FakeTts(delay_s=0.01, ms_per_char=200)))
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
) -> None:
    config = Config(shutdown_grace_s=1.0)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
        h.peer.send_json(START)
        await trio.testing.wait_all_tasks_blocked()
        h.peer.blocked = h.peer.shielded = True
        await h.stream(speech(1200) + quiet(1000))
        await trio.testing.wait_all_tasks_blocked()
        began = trio.current_time()
        await h.session.shutdown(began + config.shutdown_grace_s)
        assert h.session.closed.is_set() and h.peer.aborted
        assert trio.current_time() - began == pytest.approx(config.shutdown_grace_s + CLOSE_TIMEOUT_S)



# -- held (speculative) turns ---------------------------------------------------------


async def test_a_held_turn_sends_nothing_until_released(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
        utterance = Utterance("hello there", "s1-x", TurnMetrics(trio.current_time()))
        turn: Turn = await nursery.start(Turn(1, utterance, h.session.ctx, held=True).run)
        await turn.finished.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert h.peer.frames == []
        assert len(h.session.ctx.memory) == 0
        turn.release()
        await h.peer.wait_for("metrics")
        kinds = types(h)
        assert kinds[-2:] == ["tts_complete", "metrics"] and "llm_token" in kinds
        assert h.session.ctx.memory.turns == ((utterance.text, turn.reply_text),)
        nursery.cancel_scope.cancel()


async def test_a_dropped_held_turn_leaves_no_trace(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    llm = FakeLlm(first_token_s=0.125, token_s=0.03125)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
        utterance = Utterance("hello there", "s1-x", TurnMetrics(trio.current_time()))
        turn: Turn = await nursery.start(Turn(1, utterance, h.session.ctx, held=True).run)
        await trio.sleep_until(trio.current_time() + 0.3)  # mid-stream, output held
        assert turn.active and turn.reply_text
        turn.cancel()
        await turn.finished.wait()
        turn.release()  # too late: a cancelled turn stays silent
        await trio.testing.wait_all_tasks_blocked()
        assert h.peer.frames == []
        assert len(h.session.ctx.memory) == 0
        assert llm.closed == 1
        nursery.cancel_scope.cancel()


async def test_slow_recognition_advises_a_smaller_model_once(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    asr = FakeAsr(delay_s=5.0)  # 5 s for at most ~3 s of audio: RTF > 1.5 each time
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(asr=asr))
        h.peer.send_json(START)
        await h.stream(speech(2500) + quiet(1000) + speech(1200, 600.0) + quiet(3000))
        await h.peer.wait_for("metrics", 2)
        slow = [e for e in h.peer.of_type("info") if e.get("event") == "asr_slow"]
        assert len(slow) == 1 and slow[0]["rtf"] > 1.5
        assert "smaller model" in slow[0]["message"]
        nursery.cancel_scope.cancel()



# -- speculative replies ----------------------------------------------------------------


async def test_a_speculative_reply_leaves_with_the_final(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config)
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
        assert len(h.session.ctx.memory) == 1
        nursery.cancel_scope.cancel()


async def test_speech_resuming_drops_the_speculative_reply_unheard(
    autojump_clock: trio.testing.MockClock, config: Config
) -> None:
    llm = FakeLlm(first_token_s=0.125, token_s=0.03125)
    async with trio.open_nursery() as nursery:
        h = await open_session(nursery, config, make_engines(llm=llm))
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
        assert h.session.ctx.memory.turns == ((finals[0]["text"], reply),)
        nursery.cancel_scope.cancel()
