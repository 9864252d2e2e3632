"""A client that stops reading: bounded server memory, a 1008 at the hard
limit, and no effect on the other sessions.

The slow client asks something (a 700 Hz tone, heard as "forest") that the
scripted LLM answers with a very long reply, spoken by a TTS that makes each
phrase ~29 KB of base64 WAV, ten milliseconds apart: megabytes within a
second or two, so the limit is reached at once rather than after 30 s of real
talk. The client's receive buffer is made small so that the kernel soaks up
little of it. ``bench/slow_reader.py`` is the 30-second variant: a client
talking at real pace that reads nothing for 30 s next to ten that do, with
the server in its own process and its RSS sampled every second.

A control test gives a client that *does* read the same reply: it gets all
of it and is not dropped, so the drop above is the not-reading, not the
volume.
"""

from __future__ import annotations

import statistics
import tracemalloc

import trio

from tests.reliability.conftest import (
    FAST,
    LogWatch,
    abort,
    connect_over_socket,
    fake_set,
    read_until,
    say,
    sessions_gone,
    small_receive_buffer,
    start_server,
)
from voicetrio.client.connection import connect
from voicetrio.engines.base import Engines, SpeechAudio
from voicetrio.engines.fake import FakeLlm, FakeTts, default_reply
from voicetrio.engines.registry import EngineHost
from voicetrio.server.app import Running, serve

MARK = "zebra"
#: About 200 phrases of 40-odd characters.
LONG_REPLY = " ".join(f"{MARK} number {i} is speaking a long phrase now." for i in range(200))
SLOW_FREQ = 700.0  # heard as "... forest ..."
HARD_BYTES = 256 * 1024


class BigTts:
    """~29 KB of base64 WAV every 10 ms for the long reply's phrases; the
    usual short tones for everyone else. ``big`` counts the big phrases and
    ``flowing`` is set once ``flowing_at`` of them have been made: by then a
    client that does not read has filled its socket's buffers."""

    ready = True

    def __init__(self, flowing_at: int = 60) -> None:
        self.flowing_at = flowing_at
        self.bulky = FakeTts(delay_s=0.01, ms_per_char=15)
        self.plain = FakeTts(delay_s=0)
        self.big = 0
        self.flowing = trio.Event()

    async def synthesize(self, text: str) -> SpeechAudio:
        if MARK not in text:
            return await self.plain.synthesize(text)
        self.big += 1
        if self.big >= self.flowing_at:
            self.flowing.set()
        return await self.bulky.synthesize(text)


def engines(tts: BigTts) -> Engines:
    llm = FakeLlm(
        first_token_s=0,
        token_s=0,
        reply=lambda heard: LONG_REPLY if "forest" in heard.lower() else default_reply(heard),
    )
    return fake_set(llm=llm, tts=tts)


async def test_a_client_that_never_reads_is_dropped_at_the_hard_limit(
    nursery: trio.Nursery, log_watch: LogWatch
) -> None:
    tts = BigTts()
    server = await start_server(nursery, engines(tts), backpressure_hard_bytes=HARD_BYTES)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        async with connect_over_socket(server.url) as (slow, stream):
            small_receive_buffer(stream)
            await slow.start(16000)
            (session,) = server.hub.sessions
            await say(slow, 1200, SLOW_FREQ)
            # Dropped at once, closed within the session's 2 s close timeout.
            with trio.fail_after(10):
                await session.closed.wait()
            _, peak = tracemalloc.get_traced_memory()
            # Now read what did arrive: the events, then the close.
            with trio.fail_after(10):
                turn = await read_until(slow, "never")
    finally:
        tracemalloc.stop()
    await sessions_gone(server)
    assert session.close_code == 1008
    # The close frame cannot get past what the client does not read, so the
    # connection is cut: the client reads what its own buffer held (the
    # first events, in order), then sees the connection end (1006).
    assert turn.closed in (1008, 1006)
    assert turn.events and turn.events[0]["type"] == "partial_transcript"
    # It was warned first, though the warning waited behind what it never read.
    told = [r for r in log_watch.records if getattr(r, "sid", None) == session.sid]
    events = [getattr(r, "event", None) for r in told]
    assert "backpressure" in events and "dropped" in events
    assert events.index("backpressure") < events.index("dropped")
    # It stopped well short of the reply: the queue never held much more
    # than the limit (the rest of the reply was never made).
    reply_bytes = 200 * 29_000
    assert tts.big < 200
    assert peak - base < 3 * 1024 * 1024 < reply_bytes, f"peak {peak - base} bytes"


async def test_a_client_that_reads_gets_the_same_long_reply(nursery: trio.Nursery) -> None:
    tts = BigTts()
    server = await start_server(nursery, engines(tts), backpressure_hard_bytes=HARD_BYTES)
    async with connect_over_socket(server.url) as (client, stream):
        small_receive_buffer(stream)
        await client.start(16000)
        await say(client, 1200, SLOW_FREQ)
        turn = await read_until(client, "metrics", timeout_s=30)
    assert turn.closed is None
    assert len(turn.of("tts_chunk")) == tts.bulky.calls + tts.plain.calls >= 200


async def first_audio_delays(url: str, turns: int) -> list[float]:
    """Seconds from ``stop`` to the first tts_chunk, for ``turns`` turns."""
    delays = []
    async with connect(url) as client:
        for _ in range(turns):
            await client.start(16000)
            await say(client, 900, 440.0, silence_ms=0)
            sent = trio.current_time()
            await client.stop()
            first = await read_until(client, "tts_chunk")
            delays.append(trio.current_time() - sent)
            assert first.closed is None
            await read_until(client, "metrics")
    return delays


async def test_a_client_that_never_reads_does_not_delay_the_others(nursery: trio.Nursery) -> None:
    tts = BigTts()
    # The default hard limit (8 MiB): the slow client stays connected, its
    # writer blocked, its queue growing, for the whole comparison.
    server = await start_server(nursery, engines(tts))
    alone = await first_audio_delays(server.url, 3)
    async with connect_over_socket(server.url) as (slow, stream):
        small_receive_buffer(stream)
        await slow.start(16000)
        (session,) = server.hub.sessions
        await say(slow, 1200, SLOW_FREQ)
        with trio.fail_after(10):
            await tts.flowing.wait()
        beside = await first_audio_delays(server.url, 3)
        assert not session.closed.is_set(), "the slow client was dropped too early"
        assert session.outbox.queue.nbytes > 0  # it really is behind
        await abort(slow, stream)
    await sessions_gone(server)
    # Generous: the same machine runs the client, the server and the slow
    # session's output; a shared stall would be seconds, not milliseconds.
    assert statistics.median(beside) < statistics.median(alone) + 0.3, (alone, beside)
    assert max(beside) < 1.0, beside


async def test_shutdown_does_not_wait_forever_for_a_client_that_never_reads(
    nursery: trio.Nursery,
) -> None:
    tts = BigTts()
    config = FAST.replace(shutdown_grace_s=1.0)
    served = trio.Event()

    async def run(task_status: trio.TaskStatus[Running]) -> None:
        await serve(config, host=EngineHost(config, engines=engines(tts)), task_status=task_status)
        served.set()

    server: Running = await nursery.start(run)
    async with connect_over_socket(server.url) as (slow, stream):
        small_receive_buffer(stream)
        await slow.start(16000)
        (session,) = server.hub.sessions
        await say(slow, 1200, SLOW_FREQ)
        with trio.fail_after(10):
            await tts.flowing.wait()
        assert session.outbox.queue.nbytes > 0  # its writer is stuck on a full socket
        server.shutdown.set()
        # grace (1 s) + the session's close timeout (2 s) + Hypercorn's
        # graceful timeout (2 s), and a margin
        with trio.fail_after(8):
            await served.wait()
        await abort(slow, stream)
    assert server.hub.sessions == set()
