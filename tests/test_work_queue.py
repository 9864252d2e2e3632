"""The work queue's order and figures, with exact numbers (sans-IO)."""

from __future__ import annotations

import math

import pytest

from voicetrio.core.work_queue import WAIT_EWMA_ALPHA, WAIT_FADE_S, Lane, WorkQueue

URGENT, TENTATIVE = Lane.URGENT, Lane.TENTATIVE


def test_urgent_before_tentative_oldest_end_of_speech_first() -> None:
    q = WorkQueue(1)
    busy = q.request(TENTATIVE, since=0.0, now=0.0)
    assert q.grant(0.0) == [busy]
    p1 = q.request(TENTATIVE, since=1.0, now=1.0)
    f_late = q.request(URGENT, since=3.0, now=3.0)
    f_early = q.request(URGENT, since=2.0, now=3.1)  # its speech ended first
    p0 = q.request(TENTATIVE, since=0.5, now=3.2)
    assert q.grant(3.5) == []  # the slot is busy
    order = []
    q.release(TENTATIVE)
    for now in (4.0, 4.1, 4.2, 4.3):
        order += q.grant(now)
        q.release(order[-1].lane)
    assert order == [f_early, f_late, p0, p1]
    assert q.granted == {URGENT: 2, TENTATIVE: 3}


def test_slots_run_at_once_and_release_is_checked() -> None:
    q = WorkQueue(2)
    a = q.request(URGENT, 0.0, 0.0)
    b = q.request(TENTATIVE, 0.0, 0.0)
    c = q.request(TENTATIVE, 1.0, 0.0)
    assert q.grant(0.0) == [a, b]
    assert q.in_use == 2 and q.waiting() == 1 and q.waiting(TENTATIVE) == 1
    q.release(TENTATIVE)
    assert q.grant(0.1) == [c]
    q.release(TENTATIVE)
    q.release(URGENT)
    with pytest.raises(RuntimeError):
        q.release(URGENT)
    with pytest.raises(ValueError):
        WorkQueue(0)
    with pytest.raises(ValueError):
        WorkQueue(2, tentative_slots=3)


def test_tentative_work_leaves_a_slot_for_urgent_work() -> None:
    q = WorkQueue(2, tentative_slots=1)
    s1 = q.request(TENTATIVE, 0.0, 0.0)
    s2 = q.request(TENTATIVE, 1.0, 0.0)
    assert q.grant(0.0) == [s1]  # the second slot stays free
    u = q.request(URGENT, 2.0, 2.0)
    assert q.grant(2.0) == [u]
    q.release(TENTATIVE)
    assert q.grant(3.0) == [s2]


def test_promoted_request_keeps_its_place_in_time() -> None:
    q = WorkQueue(2, tentative_slots=1)
    running = q.request(TENTATIVE, 0.0, 0.0)
    assert q.grant(0.0) == [running]
    waiting = q.request(TENTATIVE, 1.0, 1.0)
    q.request(URGENT, 2.0, 2.0)  # a later end of speech
    blocker = q.request(URGENT, 0.5, 0.5)
    assert q.grant(2.0) == [blocker]
    promoted = q.promote(waiting)
    assert promoted.lane is URGENT and promoted.since == 1.0
    q.release(URGENT)
    assert q.grant(3.0) == [promoted]  # before `later`, whose speech ended after
    # A granted tentative request that is promoted counts as urgent from then on.
    q.moved(running)
    assert q.busy == {URGENT: 2, TENTATIVE: 0}
    assert q.promote(promoted) is promoted


def test_cancelled_request_is_never_granted() -> None:
    q = WorkQueue(1)
    first = q.request(URGENT, 0.0, 0.0)
    q.grant(0.0)
    gone = q.request(URGENT, 1.0, 1.0)
    kept = q.request(TENTATIVE, 2.0, 2.0)
    assert q.cancel(gone)
    assert not q.cancel(first)  # granted already
    assert q.waiting() == 1
    q.release(URGENT)
    assert q.grant(3.0) == [kept]


def test_urgent_wait_is_the_recent_average_or_the_oldest_waiting() -> None:
    q = WorkQueue(1)
    q.request(URGENT, 0.0, now=0.0)
    q.grant(0.0)  # waited 0 s
    assert q.urgent_wait_s(0.0) == 0.0
    waiting = q.request(URGENT, 0.5, now=0.5)
    assert q.urgent_wait_s(2.5) == pytest.approx(2.0)  # the oldest waiting, 2 s so far
    q.release(URGENT)
    assert q.grant(2.5) == [waiting]
    average = WAIT_EWMA_ALPHA * 2.0
    assert q.urgent_wait_s(2.5) == pytest.approx(average)
    # Fades while no urgent request comes.
    assert q.urgent_wait_s(2.5 + WAIT_FADE_S) == pytest.approx(average / math.e)
    # Tentative requests do not count.
    q.release(URGENT)
    q.request(TENTATIVE, 0.0, now=0.0)
    assert q.urgent_wait_s(2.5) == pytest.approx(average)
