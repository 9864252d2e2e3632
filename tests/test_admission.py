"""Admission by measured capacity and live headroom: a server full of talkers
turns newcomers away at once and keeps serving those it admitted."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import FAST_FAKE, MemoryTransport
from voicetrio.client.connection import ClientClosed, connect
from voicetrio.core.capacity import MAX_DECODE_WAIT_S, MAX_LLM_WAIT_S, TurnCost
from voicetrio.core.work_queue import Lane
from voicetrio.server.app import Hub, Running, serve
from voicetrio.session.connection import Session


def cost_for(hub: Hub, talkers: float) -> TurnCost:
    """A measured turn that makes ``hub``'s model serve ``talkers`` talkers."""
    model = hub.model
    per_second = model.cores * model.utilization / talkers
    question_s, answer_s = 3.0, 5.5
    return TurnCost(per_second * (question_s + answer_s + model.pause_s), question_s, answer_s)


async def test_capacity_comes_from_the_measured_turn_and_refuses_past_it(
    nursery: trio.Nursery,
) -> None:
    running: Running = await nursery.start(partial(serve, FAST_FAKE.replace(busy_retry_after_s=3)))
    hub = running.hub
    assert hub.capacity == hub.max_sessions  # nothing measured: the configured count
    hub.host.turn_cost = cost_for(hub, 2.5)
    assert hub.capacity == 2
    async with connect(running.url) as a, connect(running.url) as b:
        await a.start(16000)
        await b.start(16000)
        async with connect(running.url) as c:
            event = (await c.next_event()).event
            assert event["code"] == "SERVER_BUSY"
            assert "capacity (2 talkers)" in event["message"]
            assert event["retry_after_s"] == 3
            with pytest.raises(ClientClosed) as closed:
                await c.next_event()
            assert closed.value.code == 1013
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{running.port}/health")).json()
        assert (health["sessions"], health["capacity"], health["load"]) == (2, 2, 1.0)
        assert health["accepting"] is False
        assert health["cpu_per_talker"] == pytest.approx(hub.model.cores * hub.model.utilization / 2.5, abs=1e-3)
        assert health["queues"] == {"decode_wait_s": 0.0, "llm_wait_s": 0.0}
        # The admitted ones are still served.
        await a.stop()
        with trio.fail_after(10):
            while (event := (await a.next_event()).event).get("event") != "no_speech":
                pass


async def test_a_fixed_max_sessions_still_caps_the_measured_capacity(
    nursery: trio.Nursery,
) -> None:
    running: Running = await nursery.start(partial(serve, FAST_FAKE.replace(max_sessions=1)))
    running.hub.host.turn_cost = cost_for(running.hub, 5)
    assert running.hub.capacity == 1


@pytest.mark.parametrize("engine", ["decoder", "replies"])
async def test_a_queue_that_is_behind_refuses_newcomers_until_it_catches_up(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    hub = Hub(FAST_FAKE)
    scheduler = getattr(hub.engines, engine)
    limit = MAX_DECODE_WAIT_S if engine == "decoder" else MAX_LLM_WAIT_S
    held = [scheduler.slot(Lane.URGENT) for _ in range(scheduler.queue.slots)]
    for slot in held:
        await slot.reserve()
    async with trio.open_nursery() as nursery:

        async def waiting() -> None:
            async with scheduler.slot(Lane.URGENT):
                pass

        nursery.start_soon(waiting)
        await trio.sleep(limit + 0.1)  # virtual time: an urgent request waits past the limit
        peer = MemoryTransport.create()
        await hub.run_session(Session(peer, hub.config, hub.engines, session_id="late"))
        (event,) = peer.events
        assert event["code"] == "SERVER_BUSY" and "behind" in event["message"]
        assert peer.close_code == 1013
        for slot in held:
            slot.close()
    # Caught up (nothing waits): the average alone fades below the limit.
    await trio.sleep(60)
    assert hub.figures().decode_wait_s < MAX_DECODE_WAIT_S
    assert hub.figures().llm_wait_s < MAX_LLM_WAIT_S
