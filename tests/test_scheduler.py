"""The engine scheduler in Trio: order, cancellation, abandoned threads, promotion."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from voicetrio.core.work_queue import Lane
from voicetrio.engines.scheduler import Scheduler


async def test_finals_jump_the_partials_waiting_for_the_decoder() -> None:
    scheduler = Scheduler(1)
    order: list[str] = []
    release = trio.Event()

    async def decode(name: str, lane: Lane, since: float) -> None:
        async with scheduler.slot(lane, since):
            order.append(name)
            if name == "running":
                await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(decode, "running", Lane.TENTATIVE, 0.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(decode, "partial", Lane.TENTATIVE, 1.0)
        nursery.start_soon(decode, "final-late", Lane.URGENT, 3.0)
        nursery.start_soon(decode, "final-early", Lane.URGENT, 2.0)
        await trio.testing.wait_all_tasks_blocked()
        assert scheduler.queue.waiting() == 3
        release.set()
    assert order == ["running", "final-early", "final-late", "partial"]
    assert scheduler.queue.in_use == 0


async def test_a_cancelled_wait_leaves_no_trace() -> None:
    scheduler = Scheduler(1)
    hold = trio.Event()
    async with trio.open_nursery() as nursery:

        async def holder() -> None:
            async with scheduler.slot(Lane.URGENT):
                await hold.wait()

        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            async with scheduler.slot(Lane.TENTATIVE):
                pytest.fail("granted a cancelled request")
        assert scheduler.queue.waiting() == 0
        hold.set()
    assert scheduler.queue.in_use == 0


async def test_an_abandoned_thread_keeps_its_slot_until_it_ends() -> None:
    scheduler = Scheduler(1)
    finish = threading.Event()

    async def run() -> None:
        await trio.to_thread.run_sync(
            finish.wait, limiter=scheduler.slot(Lane.URGENT).as_limiter(),
            abandon_on_cancel=True,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    # The caller is gone, the thread is not: the decoder is still busy.
    assert scheduler.queue.in_use == 1
    granted = trio.Event()

    async def next_decode() -> None:
        async with scheduler.slot(Lane.URGENT):
            granted.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(next_decode)
        await trio.testing.wait_all_tasks_blocked()
        assert not granted.is_set()
        finish.set()
    assert granted.is_set() and scheduler.queue.in_use == 0


async def test_a_reserved_slot_is_given_back_on_close() -> None:
    scheduler = Scheduler(1)
    slot = scheduler.slot(Lane.TENTATIVE)
    await slot.reserve()
    assert scheduler.queue.in_use == 1
    slot.close()
    slot.close()
    assert scheduler.queue.in_use == 0
    with pytest.raises(RuntimeError):
        await slot.acquire_on_behalf_of(None)


async def test_a_reserved_slot_runs_its_thread_and_frees_after() -> None:
    scheduler = Scheduler(1)
    slot = scheduler.slot(Lane.TENTATIVE)
    await slot.reserve()
    assert await trio.to_thread.run_sync(lambda: 42, limiter=slot.as_limiter()) == 42
    slot.close()  # used: no-op
    assert scheduler.queue.in_use == 0


async def test_a_confirmed_speculative_reply_moves_ahead() -> None:
    # Two LLM slots, one of which tentative work may hold.
    scheduler = Scheduler(2, tentative_slots=1)
    order: list[str] = []
    done = {name: trio.Event() for name in ("spec-a", "urgent", "spec-b")}
    slots = {}

    async def reply(name: str, lane: Lane, since: float) -> None:
        slot = slots[name] = scheduler.slot(lane, since)
        async with slot:
            order.append(name)
            await done[name].wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reply, "spec-a", Lane.TENTATIVE, 0.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(reply, "spec-b", Lane.TENTATIVE, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["spec-a"]  # the other slot is kept for urgent work
        slots["spec-b"].promote()  # its turn was confirmed
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["spec-a", "spec-b"]
        slots["spec-a"].promote()  # holding: now counts as urgent
        assert scheduler.queue.busy == {Lane.URGENT: 2, Lane.TENTATIVE: 0}
        nursery.start_soon(reply, "urgent", Lane.URGENT, 2.0)
        await trio.testing.wait_all_tasks_blocked()
        done["spec-a"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["spec-a", "spec-b", "urgent"]
        done["spec-b"].set()
        done["urgent"].set()
    assert scheduler.queue.in_use == 0


async def test_promoting_a_slot_already_given_back_changes_nothing() -> None:
    # A speculative reply that finished streaming before its turn was
    # confirmed: its promotion must not take another tentative slot's count.
    scheduler = Scheduler(2, tentative_slots=1)
    done = scheduler.slot(Lane.TENTATIVE)
    async with done:
        pass
    other = scheduler.slot(Lane.TENTATIVE)
    await other.reserve()
    done.promote()
    assert scheduler.queue.busy == {Lane.URGENT: 0, Lane.TENTATIVE: 1}
    other.close()
    assert scheduler.queue.in_use == 0
