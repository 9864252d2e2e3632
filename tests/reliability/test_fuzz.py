"""The protocol fuzzer, CI-sized: random and mutated frames and random
interleavings of start/stop/cancel/audio against one live server.

For every example (see :mod:`tests.reliability.fuzzing` for what a scenario
is and what the oracle checks): every event is well formed, every refused
frame gets exactly its error, every ``start`` its hello and every ``cancel``
its answer; the session ends and leaves the hub; nothing unhandled reaches the
log; and a fresh session then completes a whole turn. After the fuzz the
server holds no session and no task more than before it. Examples are
derandomized, so CI runs the same ones every time; ``bench/fuzz.py`` runs
thousands of random ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trio
from hypothesis import HealthCheck, given, settings

from tests.reliability.conftest import LogWatch, read_until, say, start_server
from tests.reliability.fuzzing import (
    FUZZ_CONFIG,
    Scenario,
    ServerThread,
    drained,
    full_turn,
    run_scenario,
    scenarios,
)
from voicetrio.client.connection import connect

CI_EXAMPLES = 80


@dataclass
class FuzzServer:
    server: ServerThread
    watch: LogWatch
    tasks_before: int


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[FuzzServer]:
    watch = LogWatch()
    watch.attach()
    server = ServerThread()
    server.start()
    try:
        yield FuzzServer(server, watch, server.call_sync(drained))
    finally:
        server.stop()
        watch.detach()


@settings(
    max_examples=CI_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios)
async def test_random_frames_and_interleavings(fuzz_server: FuzzServer, scenario: Scenario) -> None:
    mark = len(fuzz_server.watch.records)
    await run_scenario(fuzz_server.server.url, scenario)
    await fuzz_server.server.call(drained)
    problems = fuzz_server.watch.problems(mark)
    assert not problems, fuzz_server.watch.describe(problems)
    await full_turn(fuzz_server.server.url)


async def test_metrics_name_their_final_at_real_time_pace(nursery: trio.Nursery) -> None:
    """Found by ``bench/fuzz.py``: with fast engines and audio at real-time
    pace, the speculative reply is finished (held) before the silence window
    closes; its ``metrics`` must still carry the id of the final it answers."""
    server = await start_server(nursery, config=FUZZ_CONFIG)
    async with connect(server.url) as client:
        await client.start(16000)
        await say(client, 1200, 440.0, realtime=True)
        turn = await read_until(client, "metrics")
    assert turn.closed is None
    final = turn.of("final_transcript")[0]
    assert turn.events[-1]["id"] == final["id"], (final, turn.events[-1])


async def test_the_server_is_whole_after_the_fuzz(fuzz_server: FuzzServer) -> None:
    server = fuzz_server.server
    await full_turn(server.url)
    assert await server.call(drained) == fuzz_server.tasks_before
    assert server.running.hub.sessions == set()
    problems = fuzz_server.watch.problems()
    assert not problems, fuzz_server.watch.describe(problems)
