"""Admission, access and metrics: the guards a deployment needs, over real
sockets (and the sans-IO policy and budget alone)."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import FAST_FAKE, quiet, speech
from voicetrio.client.connection import ClientClosed, connect
from voicetrio.core.budget import AudioBudget
from voicetrio.server.access import AccessPolicy
from voicetrio.server.app import Running, serve

FAST = FAST_FAKE.replace(shutdown_grace_s=1)


async def start(nursery: trio.Nursery, **changes: Any) -> Running:
    running: Running = await nursery.start(partial(serve, FAST.replace(**changes)))
    return running


# -- sans-IO -------------------------------------------------------------------------


def test_policy() -> None:
    policy = AccessPolicy.from_settings("alpha, beta", "https://app.example, http://localhost:8000/")
    assert policy.check({"Authorization": "Bearer beta"}) is None
    assert policy.check({"Authorization": "bearer  alpha "}) is None
    denied = policy.check({})
    assert denied is not None and (denied.status, denied.code) == (401, "UNAUTHORIZED")
    denied = policy.check({"Authorization": "Bearer gamma"})
    assert denied is not None and denied.message == "the token is not valid"
    assert policy.check({"Authorization": "Basic alpha"}) is not None
    # the query token is for WebSockets only (browsers cannot set headers there)
    assert policy.check({}, {"token": "alpha"}) is not None
    assert policy.check({}, {"token": "alpha"}, websocket=True) is None
    denied = policy.check({"Origin": "https://evil.example", "Authorization": "Bearer alpha"})
    assert denied is not None and (denied.status, denied.code) == (403, "FORBIDDEN_ORIGIN")
    assert policy.check({"Origin": "http://localhost:8000", "Authorization": "Bearer alpha"}) is None
    assert AccessPolicy.from_settings("", "").check({"Origin": "https://any.example"}) is None


def test_audio_budget() -> None:
    budget = AudioBudget(burst_s=10, rate=2.0)
    assert budget.spend(10.0, now=0.0) == 0.0  # the whole burst at once
    assert budget.spend(1.0, now=0.0) == 0.5  # 1 s over: 0.5 s at 2x real time
    assert budget.spend(1.0, now=1.0) == 0.0  # 1 s later: 2 s refilled, 1 s owed
    assert budget.spend(0.5, now=100.0) == 0.0  # refill stops at the burst
    assert budget.spend(10.0, now=100.0) == pytest.approx(0.25)


# -- over sockets ------------------------------------------------------------------------


async def handshake(port: int, target: str, *headers: str) -> int:
    """The HTTP status a WebSocket handshake gets; the socket is closed after."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = [
            f"GET {target} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            *headers,
        ]
        await stream.send_all(("\r\n".join(request) + "\r\n\r\n").encode())
        reply = b""
        with trio.fail_after(10):
            while b"\r\n" not in reply:
                chunk = await stream.receive_some()
                assert chunk, "connection closed before a status line"
                reply += chunk
    return int(reply.split(b" ", 2)[1])


async def test_past_max_sessions_a_client_is_told_busy_and_closed_1013(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery, max_sessions=2, busy_retry_after_s=7)
    async with connect(server.url) as a, connect(server.url) as b:
        await a.start(16000)
        await b.start(16000)
        async with connect(server.url) as c:
            event = (await c.next_event()).event
            assert event["code"] == "SERVER_BUSY" and event["recoverable"] is False
            assert event["retry_after_s"] == 7
            with pytest.raises(ClientClosed) as closed:
                await c.next_event()
            assert closed.value.code == 1013
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{server.port}/health")).json()
        assert (health["sessions"], health["max_sessions"], health["load"]) == (2, 2, 1.0)
        assert health["accepting"] is False
    # the two sessions still work
    await trio.testing.wait_all_tasks_blocked(0.05)
    async with connect(server.url) as d:
        await d.start(16000)


async def test_tokens_guard_the_socket_and_the_apis(nursery: trio.Nursery) -> None:
    server = await start(nursery, auth_tokens="s3cret,other", allowed_origins="http://good.example")
    base = f"http://127.0.0.1:{server.port}"
    # the handshake itself is refused, with a plain HTTP status
    assert await handshake(server.port, "/ws") == 401
    assert await handshake(server.port, "/ws", "Authorization: Bearer wrong") == 401
    assert await handshake(server.port, "/ws?token=s3cret", "Origin: http://evil.example") == 403
    assert server.hub.sessions_total == 0  # refused before any work
    assert await handshake(server.port, "/ws?token=s3cret", "Origin: http://good.example") == 101
    async with connect(server.url + "?token=s3cret") as client:
        assert (await client.start(16000))["type"] == "protocol"
    async with connect(server.url, headers=[("Authorization", "Bearer other")]) as client:
        assert (await client.start(16000))["type"] == "protocol"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/")).status_code == 200
        r = await http.get("/api/stream_config")
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
        r = await http.get("/api/stream_config", params={"token": "s3cret"})
        assert r.status_code == 401  # query tokens are for the WebSocket only
        r = await http.get("/api/stream_config", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and "s3cret" not in r.text
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.post("/transcribe")).status_code == 401


async def test_metrics_count_sessions_turns_codes_and_latency(nursery: trio.Nursery) -> None:
    server = await start(nursery)
    async with connect(server.url) as client:
        await client.start(16000)
        await client.send_raw("not json")
        pcm = speech(1200) + quiet(1000)
        for offset in range(0, len(pcm), 3200):
            await client.send_audio(pcm[offset : offset + 3200])
        with trio.fail_after(20):
            while (await client.next_event()).type != "metrics":
                pass
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{server.port}/metrics")).text
    lines = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(lines["voicetrio_sessions"]) == 1.0
    assert float(lines["voicetrio_sessions_accepted_total"]) == 1.0
    assert float(lines['voicetrio_turns_total{outcome="done"}']) == 1.0
    assert float(lines['voicetrio_errors_total{code="BAD_MESSAGE"}']) == 1.0
    assert float(lines['voicetrio_decode_seconds_count{kind="final"}']) == 1.0
    assert float(lines["voicetrio_first_token_seconds_count"]) == 1.0
    assert float(lines["voicetrio_first_audio_seconds_count"]) == 1.0
    assert "voicetrio_outbound_queue_depth" in lines and "voicetrio_dropped_partials_total" in lines


async def test_a_client_faster_than_real_time_is_throttled_and_told(nursery: trio.Nursery) -> None:
    server = await start(nursery, audio_burst_s=1, audio_rate_factor=5, lean=True)
    async with connect(server.url) as client:
        await client.start(16000)
        t0 = trio.current_time()
        pcm = speech(1500) + quiet(2500)  # 4 s of audio: 3 s past a 1 s burst
        for offset in range(0, len(pcm), 3200):
            await client.send_audio(pcm[offset : offset + 3200])
        with trio.fail_after(20):
            while True:
                event = (await client.next_event()).event
                if event["type"] == "info" and event.get("event") == "audio_throttled":
                    throttled = event
                if event["type"] == "metrics":
                    break
        # the final needs 1.5 s of speech and 0.7 s of silence read: 1.2 s of
        # audio past the 1 s burst, at 5x real time, is at least 0.24 s
        assert trio.current_time() - t0 >= 0.24
    assert throttled["max_rate"] == 5
