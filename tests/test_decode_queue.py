"""The decode queue's order and figures, with exact numbers (sans-IO)."""

from __future__ import annotations

import math

import pytest

from voicetrio.decode_queue import WAIT_EWMA_ALPHA, WAIT_FADE_S, DecodeQueue, Lane


def test_finals_before_partials_oldest_end_of_speech_first() -> None:
    q = DecodeQueue(1)
    busy = q.request(Lane.PARTIAL, since=0.0, now=0.0)
    assert q.grant(0.0) == [busy]
    p1 = q.request(Lane.PARTIAL, since=1.0, now=1.0)
    f_late = q.request(Lane.FINAL, since=3.0, now=3.0)
    f_early = q.request(Lane.FINAL, since=2.0, now=3.1)  # its speech ended first
    p0 = q.request(Lane.PARTIAL, since=0.5, now=3.2)
    assert q.grant(3.5) == []  # the slot is busy
    order = []
    for now in (4.0, 4.1, 4.2, 4.3):
        q.release()
        order += q.grant(now)
    assert order == [f_early, f_late, p0, p1]
    assert q.granted == {Lane.FINAL: 2, Lane.PARTIAL: 3}


def test_slots_run_at_once_and_release_is_checked() -> None:
    q = DecodeQueue(2)
    a = q.request(Lane.FINAL, 0.0, 0.0)
    b = q.request(Lane.PARTIAL, 0.0, 0.0)
    c = q.request(Lane.PARTIAL, 1.0, 0.0)
    assert q.grant(0.0) == [a, b]
    assert q.busy == 2 and q.waiting() == 1 and q.waiting(Lane.PARTIAL) == 1
    q.release()
    assert q.grant(0.1) == [c]
    q.release()
    q.release()
    with pytest.raises(RuntimeError):
        q.release()
    with pytest.raises(ValueError):
        DecodeQueue(0)


def test_cancelled_request_is_never_granted() -> None:
    q = DecodeQueue(1)
    first = q.request(Lane.FINAL, 0.0, 0.0)
    q.grant(0.0)
    gone = q.request(Lane.FINAL, 1.0, 1.0)
    kept = q.request(Lane.PARTIAL, 2.0, 2.0)
    q.cancel(gone)
    q.cancel(first)  # granted already: no-op
    assert q.waiting() == 1
    q.release()
    assert q.grant(3.0) == [kept]


def test_final_wait_is_the_recent_average_or_the_oldest_waiting() -> None:
    q = DecodeQueue(1)
    q.request(Lane.FINAL, 0.0, now=0.0)
    q.grant(0.0)  # waited 0 s
    assert q.final_wait_s(0.0) == 0.0
    waiting = q.request(Lane.FINAL, 0.5, now=0.5)
    assert q.final_wait_s(2.5) == pytest.approx(2.0)  # the oldest waiting, 2 s so far
    q.release()
    assert q.grant(2.5) == [waiting]
    average = WAIT_EWMA_ALPHA * 2.0
    assert q.final_wait_s(2.5) == pytest.approx(average)
    # Fades while no final comes.
    assert q.final_wait_s(2.5 + WAIT_FADE_S) == pytest.approx(average / math.e)
    # Partials do not count.
    q.release()
    q.request(Lane.PARTIAL, 0.0, now=0.0)
    assert q.final_wait_s(2.5) == pytest.approx(average)
