"""Many sessions on one decoder and one LLM: who waits for whom.

Deterministic (MockClock, autojump): the fake engines only ``trio.sleep``, so
every time asserted here is exact.
"""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from tests.conftest import Harness, make_engines, open_session, quiet, speech
from voicetrio.config import Config
from voicetrio.core.work_queue import Lane
from voicetrio.engines.fake import FakeAsr, FakeLlm
from voicetrio.engines.scheduler import Scheduler

START = {"type": "start", "sample_rate": 16000}
DECODE_S = 0.25


async def talk(h: Harness, speech_ms: int, quiet_ms: int) -> None:
    h.peer.send_json(START)
    await h.stream(speech(speech_ms) + quiet(quiet_ms))


async def test_a_final_does_not_wait_behind_other_talkers_partials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Four people talk without pause: their partials alone would keep the one
    # decoder busy (4 x 0.25 s of decoding every 0.5 s). A fifth stops
    # talking; its final must still come exactly one silence window after
    # its speech, as when it talks alone.
    config = Config(partial_interval_ms=500, vad_silence_ms=700, speculative_reply=False)
    decoder = Scheduler(1)
    engines = dataclasses.replace(
        make_engines(asr=FakeAsr(delay_s=DECODE_S, scheduler=decoder)), decoder=decoder
    )
    async with trio.open_nursery() as nursery:
        talkers = [await open_session(nursery, config, engines) for _ in range(4)]
        for h in talkers:
            nursery.start_soon(talk, h, 8000, 0)
        await trio.sleep(2.0)
        asker = await open_session(nursery, config, engines)
        began = trio.current_time()
        nursery.start_soon(talk, asker, 1200, 1500)
        await asker.peer.wait_for("final_transcript")
        final_s = asker.peer.time_of("final_transcript") - began
        # 1.2 s of speech, then the 0.7 s window: as if it talked alone.
        assert final_s == pytest.approx(1.2 + 0.7)
        # The others' partials did run, and kept coming behind the finals.
        assert decoder.queue.granted[Lane.TENTATIVE] >= 8
        nursery.cancel_scope.cancel()


async def test_a_partial_decodes_the_audio_of_when_its_turn_came(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The decoder is held for a second by someone else's final: the partial
    # that waited behind it hears everything said until then, not the stale
    # 0.5 s it was asked for.
    config = Config(partial_interval_ms=500, first_partial_ms=500, vad_silence_ms=700)
    decoder = Scheduler(1)
    asr = FakeAsr(delay_s=0.0, scheduler=decoder)
    engines = dataclasses.replace(make_engines(asr=asr), decoder=decoder)
    async with trio.open_nursery() as nursery:
        hold = decoder.slot(Lane.URGENT)
        await hold.reserve()
        h = await open_session(nursery, config, engines)
        nursery.start_soon(talk, h, 3000, 0)
        await trio.sleep(1.5)
        assert h.peer.of_type("partial_transcript") == []
        hold.close()
        first = await h.peer.wait_for("partial_transcript")
        # FakeAsr hears one word per 300 ms of tone: 1.5 s of speech, not 0.5.
        assert len(first["text"].split()) >= 4
        nursery.cancel_scope.cancel()


async def test_a_reply_waiting_for_the_llm_is_not_timed_out_by_the_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One LLM slot; each reply streams for ~4 s. The second asker's reply
    # waits behind the first for longer than the first-token timeout (2 s),
    # and must still be answered: waiting in line is not the model failing.
    config = Config(
        partial_interval_ms=500, vad_silence_ms=700, llm_timeout_s=20, speculative_reply=False
    )
    assert config.llm_first_token_timeout_s == 5.0
    llm = FakeLlm(first_token_s=0.0, token_s=0.25)
    engines = dataclasses.replace(make_engines(llm=llm), replies=Scheduler(1))
    async with trio.open_nursery() as nursery:
        first = await open_session(nursery, config, engines)
        second = await open_session(nursery, config, engines)
        nursery.start_soon(talk, first, 1200, 12000)
        await trio.sleep(0.5)  # the second finishes speaking half a second later
        nursery.start_soon(talk, second, 1200, 12000)
        await second.peer.wait_for("tts_complete")
        assert first.peer.of_type("error") == [] and second.peer.of_type("error") == []
        # Served in order of the end of speech: the second reply starts when
        # the first one's stream ends, and it waited more than 5 s for it.
        first_done = first.peer.time_of("llm_token", done=True)
        second_token = second.peer.time_of("llm_token")
        assert second_token >= first_done
        assert second_token - second.peer.time_of("final_transcript") > 5.0
        nursery.cancel_scope.cancel()


async def test_a_reply_that_cannot_get_the_llm_times_out_with_a_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(partial_interval_ms=500, vad_silence_ms=700, llm_timeout_s=3)
    replies = Scheduler(1)
    engines = dataclasses.replace(make_engines(), replies=replies)
    async with trio.open_nursery() as nursery:
        stuck = replies.slot(Lane.URGENT)
        await stuck.reserve()  # someone holds the only slot for ever
        h = await open_session(nursery, config, engines)
        nursery.start_soon(talk, h, 1200, 6000)
        error = await h.peer.wait_for("error")
        assert error["code"] == "LLM_TIMEOUT"
        assert "busy" in error["message"]
        assert replies.queue.waiting() == 0
        stuck.close()
        nursery.cancel_scope.cancel()
