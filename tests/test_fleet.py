"""A fleet on one box: the shipped HAProxy configuration in front of three
voicetrio backends, 50 clients talking, one backend stopped mid-run.

Real processes all through: three ``python -m voicetrio serve`` on the
deterministic engines (replies of about a second, so that turns are in
flight when the stop comes), one of them (vt3) using another (vt1) as its
remote ASR over the Realtime transcription session; Debian's haproxy 2.6
running ``deploy/haproxy/haproxy.cfg`` from ``defaults`` on (only the
addresses, ports and the stats socket are the test's); the project's
client. 40 users start talking; vt2 gets SIGTERM; 10 more users arrive,
half before HAProxy has read the agent's ``drain``, half after. Then:

- every user does all of its turns; no error event, no close but the
  leaving server's 1001 after its ``shutdown`` notice, and a refused
  reconnect (``SERVER_BUSY``, 1013) only as a retry that then succeeds;
- every turn in flight on vt2 when it told its sessions to leave (its final
  heard before the notice) finishes with its ``metrics`` before the close;
- HAProxy shows vt2 ``DRAIN (agent)``, then ``DOWN``; it routes no session
  to it after the drain; vt2 refuses a session sent to it directly while
  it drains, and exits 0 within the drain delay plus the grace;
- vt1 served vt3's recognition (more sessions than HAProxy gave it).

The figures (sessions, turns, errors, drain time) are printed (``-s``).
HAProxy's state is read from its own log lines as they come and checked on
its stats socket (``show stat``); it is another process, so waiting for it
to come up is a bounded poll.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import quiet, speech
from voicetrio.client.connection import ClientClosed, StartRejected, VoiceClient, connect

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "deploy" / "haproxy" / "haproxy.cfg"

USERS = 40
LATE_USERS = 10
TURNS = 5
DRAIN_DELAY_S = 3.0
GRACE_S = 5.0
FRAME_MS = 100
#: A client's pause before it connects again after a refusal.
RETRY_BACKOFF_S = 0.2
#: Audio goes at twice real time (endpointing counts audio time, not wall time).
PACE = 2.0
#: Replies of ~25 words at 40 ms a word, spoken in 20 ms a phrase: about a second.
ENGINE_ENV = {
    "STREAM_ENGINES": "fake",
    "STREAM_FAKE_ASR_MS": "10",
    "STREAM_FAKE_LLM_FIRST_TOKEN_MS": "150",
    "STREAM_FAKE_LLM_TOKEN_MS": "40",
    "STREAM_FAKE_TTS_MS": "20",
    "STREAM_LOG_LEVEL": "WARNING",
    "STREAM_SHUTDOWN_GRACE_S": str(GRACE_S),
    "STREAM_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
    # Users speak the moment a reply has arrived, over its playback: no
    # barge-in, or that speech would be judged against the reply.
    "STREAM_BARGE_IN": "false",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- processes ------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    process: trio.Process
    port: int
    agent_port: int
    log: list[Line] = field(default_factory=list)


#: A line of a process's output, and when it was read (trio's clock).
Line = tuple[float, str]


async def _lines(stream: trio.abc.ReceiveStream, into: list[Line], seen: trio.Condition) -> None:
    buffer = b""
    while chunk := await stream.receive_some():
        now = trio.current_time()
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        async with seen:
            into.extend((now, line.decode(errors="replace")) for line in lines)
            seen.notify_all()


async def wait_line(log: list[Line], seen: trio.Condition, pattern: str, timeout_s: float) -> Line:
    """The first line of ``log`` matching ``pattern``, waiting for it to come."""
    regex = re.compile(pattern)
    with trio.fail_after(timeout_s):
        async with seen:
            while True:
                for at, line in log:
                    if regex.search(line):
                        return at, line
                await seen.wait()


class Fleet:
    """Every process the test starts, ended (SIGKILL past a bound) on exit."""

    def __init__(self, nursery: trio.Nursery, tmp: Path) -> None:
        self.nursery = nursery
        self.tmp = tmp
        self.processes: list[trio.Process] = []
        self.seen = trio.Condition()

    async def start(self, argv: list[str], env: dict[str, str], log: list[Line]) -> trio.Process:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=ROOT,
        )
        self.processes.append(process)
        assert process.stdout is not None
        self.nursery.start_soon(_lines, process.stdout, log, self.seen)
        return process

    async def backend(self, name: str, **env: str) -> Backend:
        agent_port = free_port()
        log: list[Line] = []
        argv = [sys.executable, "-m", "voicetrio", "serve", "--port", "0"]
        process = await self.start(
            argv, {**ENGINE_ENV, "STREAM_AGENT_PORT": str(agent_port), **env}, log
        )
        _, line = await wait_line(log, self.seen, r"voicetrio serving on http://127\.0\.0\.1:\d+/", 60)
        port = int(re.findall(r":(\d+)/", line)[0])
        async with httpx.AsyncClient() as http:
            # Another process, loading its engines: a bounded poll.
            with trio.fail_after(60):
                while (await http.get(f"http://127.0.0.1:{port}/health")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.05)
        return Backend(name, process, port, agent_port, log)

    async def end_all(self) -> None:
        with trio.CancelScope(shield=True):
            for process in self.processes:
                if process.returncode is None:
                    process.terminate()
            for process in self.processes:
                with trio.move_on_after(GRACE_S + DRAIN_DELAY_S + 5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


def haproxy_config(front: int, stats_port: int, sock: Path, backends: list[Backend]) -> str:
    """The shipped configuration from ``defaults`` on; addresses are ours."""
    shipped = SHIPPED.read_text()
    body = shipped[shipped.index("\ndefaults\n") :]
    body = body.replace("    bind :80\n", f"    bind 127.0.0.1:{front}\n")
    body = body.replace("    bind 127.0.0.1:8404\n", f"    bind 127.0.0.1:{stats_port}\n")
    body = re.sub(r"(?m)^    server vt\d .*\n", "", body)
    servers = "".join(
        f"    server {b.name} 127.0.0.1:{b.port} agent-port {b.agent_port}\n" for b in backends
    )
    body = re.sub(r"(?m)^(    default-server .*\n)", lambda m: m.group(1) + servers, body)
    assert body.count("    server ") == len(backends)
    head = f"global\n    stats socket {sock} mode 600 level admin\n    log stdout format raw local0\n"
    return head + body


async def show_stat(sock: Path) -> dict[str, dict[str, str]]:
    """HAProxy's ``show stat``, the servers of backend vt by name."""
    stream = await trio.open_unix_socket(str(sock))
    async with stream:
        await stream.send_all(b"show stat\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {row["svname"]: row for row in rows if row["pxname"] == "vt" and row["svname"] != "BACKEND"}


# -- users -----------------------------------------------------------------------


@dataclass
class Tally:
    turns: int = 0
    sessions: int = 0
    refused: int = 0  # reconnects refused (SERVER_BUSY) then retried
    moved: int = 0  # sessions told to leave (shutdown, 1001) whose user reconnected
    in_flight: int = 0  # turns whose final came before the notice
    in_flight_done: int = 0  # ... and whose metrics came before the close
    redone: int = 0  # utterances cut by the close before their final (said again)
    errors: list[str] = field(default_factory=list)
    #: As many turns done as there are first users: everyone is talking.
    first_round: trio.Event = field(default_factory=trio.Event)


class Left(Exception):
    """The server told this session to leave and closed it (1001)."""


async def one_turn(voice: VoiceClient, index: int, notice: list[bool], tally: Tally) -> None:
    """Say one utterance; read until its ``metrics``; raise :class:`Left` if
    the server closes the session after its ``shutdown`` notice first."""
    pcm = speech(1200, 300.0 + 40 * (index % 15)) + quiet(900)
    frame = 32 * FRAME_MS
    final = False
    in_flight = False  # its final came before the notice

    async def microphone() -> None:
        t0 = trio.current_time()
        for k, offset in enumerate(range(0, len(pcm), frame)):
            await trio.sleep_until(t0 + k * FRAME_MS / 1000 / PACE)
            await voice.send_audio(pcm[offset : offset + frame])

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(microphone)
            while True:
                event = (await voice.next_event()).event
                kind = event["type"]
                if kind == "info" and event.get("event") == "shutdown":
                    notice[0] = True
                    if final:
                        in_flight = True
                        tally.in_flight += 1
                elif kind == "final_transcript":
                    final = True
                elif kind == "error":
                    tally.errors.append(f"error {event.get('code')}: {event.get('message')}")
                elif kind == "metrics":
                    if in_flight:
                        tally.in_flight_done += 1
                    tally.turns += 1
                    if tally.turns >= USERS:
                        tally.first_round.set()
                    return
    except* ClientClosed as group:
        closed = group.exceptions[0]
        assert isinstance(closed, ClientClosed)
        if closed.code == 1001 and notice[0]:
            # Said to leave: a turn in flight must have ended first. An
            # utterance that ended after the notice is not answered by a
            # leaving server: it is said again on the next connection.
            if in_flight:
                tally.errors.append("a turn in flight was lost")
            tally.redone += 1
            raise Left from None
        tally.errors.append(f"closed {closed.code} {closed.reason}")
        raise


async def user(url: str, index: int, tally: Tally) -> None:
    """A user who talks TURNS turns, reconnecting when told to leave."""
    done = 0
    while done < TURNS:
        notice = [False]
        try:
            async with connect(url) as voice:
                try:
                    await voice.start(16000)
                except StartRejected as refused:
                    if refused.code != "SERVER_BUSY":
                        raise
                    # A draining server not yet seen as such: retry_after_s 0,
                    # the retry can go elsewhere; a polite client's backoff.
                    assert refused.event.get("retry_after_s") == 0, refused.event
                    tally.refused += 1
                    await trio.sleep(RETRY_BACKOFF_S)
                    continue
                tally.sessions += 1
                while done < TURNS:
                    await one_turn(voice, index, notice, tally)
                    done += 1
        except* Left:
            tally.moved += 1
        except* ClientClosed as group:
            if not any(isinstance(e, ClientClosed) and e.code == 1013 for e in group.exceptions):
                raise
            tally.refused += 1  # refused before the hello was read


# -- the test --------------------------------------------------------------------


@asynccontextmanager
async def fleet_of_three(tmp: Path) -> AsyncIterator[tuple[Fleet, list[Backend]]]:
    async with trio.open_nursery() as nursery:
        fleet = Fleet(nursery, tmp)
        try:
            vt1 = await fleet.backend("vt1")
            vt2 = await fleet.backend("vt2")
            # vt3 hears through vt1: its ASR is vt1's Realtime transcription session.
            vt3 = await fleet.backend("vt3", STREAM_ASR_URL=f"http://127.0.0.1:{vt1.port}/v1")
            yield fleet, [vt1, vt2, vt3]
        finally:
            await fleet.end_all()
            nursery.cancel_scope.cancel()


async def test_a_backend_drains_under_50_users_behind_haproxy(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is not installed: run ./scripts/setup"
    t_start = trio.current_time()
    with trio.fail_after(120):
        async with fleet_of_three(tmp_path) as (fleet, backends):
            vt1, vt2, vt3 = backends
            front, sock = free_port(), tmp_path / "admin.sock"
            config = tmp_path / "haproxy.cfg"
            config.write_text(haproxy_config(front, free_port(), sock, backends))
            check = await trio.run_process(
                [haproxy, "-c", "-f", str(config)], capture_stdout=True, capture_stderr=True, check=False
            )
            assert check.returncode == 0, (check.stdout + check.stderr).decode()
            hlog: list[Line] = []
            await fleet.start([haproxy, "-f", str(config), "-db"], {}, hlog)
            # Up, and each agent heard. Another process: a bounded poll.
            stats: dict[str, dict[str, str]] = {}
            with trio.move_on_after(15):
                while not (
                    len(stats) == 3
                    and all(s["status"] == "UP" and s["agent_status"] == "L7OK" for s in stats.values())
                ):
                    await trio.sleep(0.1)
                    with contextlib.suppress(OSError):  # not listening yet
                        stats = await show_stat(sock)
            assert len(stats) == 3, hlog
            for name, row in stats.items():
                assert (row["status"], row["agent_status"]) == ("UP", "L7OK"), (name, row, hlog)

            url = f"ws://127.0.0.1:{front}/ws"
            tally = Tally()
            async with trio.open_nursery() as users:
                for i in range(USERS):
                    users.start_soon(user, url, i, tally)
                    await trio.sleep(2.0 / USERS)  # arrivals spread over 2 s
                # Everyone is talking; some turns are a reply in flight.
                await tally.first_round.wait()
                assert tally.errors == []
                sessions_before = {n: int(s["scur"]) for n, s in (await show_stat(sock)).items()}
                sigterm_at = trio.current_time()
                vt2.process.send_signal(signal.SIGTERM)
                for i in range(USERS, USERS + LATE_USERS // 2):
                    users.start_soon(user, url, i, tally)
                drained_at, _ = await wait_line(hlog, fleet.seen, r"Server vt/vt2 enters drain state", 5)
                stats = await show_stat(sock)
                assert stats["vt2"]["status"] == "DRAIN (agent)", stats["vt2"]
                routed_at_drain = int(stats["vt2"]["stot"])
                # Sent to it directly, a new session is refused: retry elsewhere.
                async with connect(f"ws://127.0.0.1:{vt2.port}/ws") as direct:
                    with pytest.raises(StartRejected) as refused:
                        await direct.start(16000)
                    assert refused.value.code == "SERVER_BUSY"
                    assert refused.value.event["retry_after_s"] == 0
                for i in range(USERS + LATE_USERS // 2, USERS + LATE_USERS):
                    users.start_soon(user, url, i, tally)
                code = await vt2.process.wait()
                exited_at = trio.current_time()
                down_at, _ = await wait_line(hlog, fleet.seen, r"Server vt/vt2 is DOWN", 10)
            stats = await show_stat(sock)
            async with httpx.AsyncClient() as http:
                vt1_health = (await http.get(f"http://127.0.0.1:{vt1.port}/health")).json()
                vt3_config = (await http.get(f"http://127.0.0.1:{vt3.port}/api/stream_config")).json()

    users_total = USERS + LATE_USERS
    print(
        f"\nfleet: {users_total} users x {TURNS} turns through HAProxy to 3 backends "
        f"(sessions at SIGTERM {sessions_before}); "
        f"sessions {tally.sessions}, turns {tally.turns}, errors {len(tally.errors)}, "
        f"refused reconnects {tally.refused} (all retried), moved off vt2 {tally.moved}, "
        f"turns in flight at vt2's notice {tally.in_flight} (finished {tally.in_flight_done}), "
        f"utterances cut by the close and said again {tally.redone}\n"
        f"drain: HAProxy saw it {drained_at - sigterm_at:.2f} s after SIGTERM, "
        f"vt2 exited {exited_at - sigterm_at:.2f} s after (delay {DRAIN_DELAY_S:g} s), "
        f"marked DOWN {down_at - sigterm_at:.2f} s after; "
        f"whole test {trio.current_time() - t_start:.1f} s"
    )
    assert tally.errors == [], tally.errors
    assert tally.turns == users_total * TURNS
    assert code == 0
    # vt2's sessions were told and moved, their turns in flight finished first.
    assert tally.moved == sessions_before["vt2"] > 0
    assert tally.in_flight > 0
    assert tally.in_flight_done == tally.in_flight
    # No session reached vt2 after HAProxy read "drain"; it is down now.
    assert int(stats["vt2"]["stot"]) == routed_at_drain
    assert stats["vt2"]["status"].startswith("DOWN"), stats["vt2"]
    assert exited_at - sigterm_at < DRAIN_DELAY_S + GRACE_S
    # The ones who stayed and the newcomers are on vt1 and vt3.
    assert int(stats["vt1"]["stot"]) > 0 and int(stats["vt3"]["stot"]) > 0
    # vt3 heard through vt1: vt1 served more sessions than HAProxy sent it.
    assert vt3_config["asr_url"] == f"http://127.0.0.1:{vt1.port}/v1"
    assert vt1_health["sessions_total"] > int(stats["vt1"]["stot"])
