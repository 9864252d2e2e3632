"""The outbound queue alone (sans-IO) and the Outbox wake-up."""

from __future__ import annotations

import trio
import trio.testing

from voicetrio.session.outbound import OutboundQueue, Outbox, OutItem, Pressure


def item(text: str, *, droppable: bool = False, turn: int | None = None) -> OutItem:
    return OutItem((text,), droppable=droppable, turn=turn)


def drain(q: OutboundQueue) -> list[str]:
    out: list[str] = []
    while (i := q.pop()) is not None:
        out.extend(str(f) for f in i.render())
    return out


def test_partials_coalesce_latest_wins_and_others_keep_order() -> None:
    q = OutboundQueue(soft_messages=100, hard_bytes=10_000)
    q.put(item("p1", droppable=True))
    q.put(item("final"))
    q.put(item("p2", droppable=True))
    q.put(item("tok1"))
    q.put(item("p3", droppable=True))
    q.put(item("tok2"))
    assert drain(q) == ["final", "tok1", "p3", "tok2"]
    assert q.dropped_partials == 2
    assert q.nbytes == 0


def test_soft_limit_warns_once_per_episode() -> None:
    q = OutboundQueue(soft_messages=4, hard_bytes=10_000)
    pressures = [q.put(item(f"t{i}")) for i in range(8)]
    assert pressures == [Pressure.OK] * 4 + [Pressure.SOFT] + [Pressure.OK] * 3
    for _ in range(5):
        q.pop()
    assert len(q) == 3
    assert q.put(item("x")) is Pressure.OK  # 4 queued: at the limit, not over
    for _ in range(2):
        q.pop()
    assert len(q) == 2
    assert q.put(item("y")) is Pressure.OK
    assert q.put(item("z")) is Pressure.OK
    assert q.put(item("w")) is Pressure.SOFT  # re-armed after draining to half


def test_hard_limit_in_bytes() -> None:
    q = OutboundQueue(soft_messages=1000, hard_bytes=10)
    assert q.put(item("12345")) is Pressure.OK
    assert q.put(item("12345")) is Pressure.OK
    assert q.put(item("1")) is Pressure.HARD
    assert q.nbytes == 11


def test_purge_turn_drops_only_that_turn() -> None:
    q = OutboundQueue(soft_messages=100, hard_bytes=10_000)
    q.put(item("a", turn=1))
    q.put(item("b", turn=2))
    q.put(item("c"))
    q.put(item("d", turn=1))
    assert q.purge_turn(1) == 2
    assert drain(q) == ["b", "c"]


def test_rendered_items_render_at_pop() -> None:
    q = OutboundQueue(soft_messages=100, hard_bytes=10_000)
    state = {"v": "early"}
    q.put(OutItem(lambda: (state["v"],)))
    state["v"] = "late"
    assert drain(q) == ["late"]


async def test_outbox_wakes_the_writer_and_closes() -> None:
    box = Outbox(OutboundQueue(soft_messages=10, hard_bytes=10_000))
    got: list[str] = []

    async def writer() -> None:
        while True:
            try:
                i = await box.get()
            except trio.EndOfChannel:
                return
            got.extend(str(f) for f in i.render())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        box.put(item("one"))
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["one"]
        box.put(item("two"))
        assert not box.closed
        box.close()
        assert box.closed
        assert box.put(item("after close")) is Pressure.OK
    assert got == ["one", "two"]
