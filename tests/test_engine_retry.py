"""Engines that fail to load are tried again, and a server that cannot load
them ends with one clear line instead of staying up refusing sessions.

The retry policy is plain arithmetic (exact numbers). The host is driven by
injected loaders that fail a given number of times: under the autojump
clock when the test is about the pauses, on the real clock with zero
backoff when a real server and its /health are involved, each attempt
held at a gate the test opens, so nothing waits on a sleep. The command
itself is run once as a user would, on a Whisper model that does not exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import FAST_FAKE
from voicetrio.cli import EXIT_ENGINES_FAILED
from voicetrio.config import Config, ConfigError, from_env
from voicetrio.engines.base import ModelLoadError
from voicetrio.engines.load_retry import MAX_DELAY_S, LoadRetry
from voicetrio.engines.registry import EngineHost, EngineLoadFailed
from voicetrio.server.app import Running, serve

# -- the policy ---------------------------------------------------------------


def test_pauses_double_from_the_first_and_stop_at_the_last_attempt() -> None:
    retry = LoadRetry(attempts=4, first_delay_s=1.0)
    assert retry.delays() == [1.0, 2.0, 4.0]
    assert [retry.delay_after(k) for k in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, None, None]


def test_pauses_are_capped() -> None:
    assert LoadRetry(attempts=8, first_delay_s=5.0).delays() == [
        5.0,
        10.0,
        20.0,
        30.0,
        30.0,
        30.0,
        30.0,
    ]
    assert LoadRetry(attempts=3, first_delay_s=0.5, max_delay_s=0.75).delays() == [0.5, 0.75]
    # However many attempts: no overflow, never past the cap.
    assert LoadRetry(attempts=100, first_delay_s=1.0).delays()[-1] == MAX_DELAY_S


def test_one_attempt_means_no_retry_and_zero_backoff_means_at_once() -> None:
    assert LoadRetry(attempts=1, first_delay_s=1.0).delays() == []
    assert LoadRetry(attempts=3, first_delay_s=0.0).delays() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("attempts", "first", "cap"),
    [(0, 1.0, 30.0), (3, -1.0, 30.0), (3, float("nan"), 30.0), (3, 1.0, float("inf"))],
)
def test_a_policy_that_makes_no_sense_is_refused(attempts: int, first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        LoadRetry(attempts, first, cap)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="count from 1"):
        LoadRetry(3, 1.0).delay_after(0)


def test_the_settings_and_their_bounds() -> None:
    config = from_env({"STREAM_ENGINE_LOAD_ATTEMPTS": "5", "STREAM_ENGINE_LOAD_BACKOFF_S": "0.5"})
    assert EngineHost(config.replace(engines="fake")).retry == LoadRetry(5, 0.5)
    assert (Config().engine_load_attempts, Config().engine_load_backoff_s) == (3, 1.0)
    for name, value in (
        ("STREAM_ENGINE_LOAD_ATTEMPTS", "0"),
        ("STREAM_ENGINE_LOAD_BACKOFF_S", "-1"),
    ):
        with pytest.raises(ConfigError) as info:
            from_env({name: value})
        assert info.value.setting == name


# -- the host, on the autojump clock -------------------------------------------


class FlakyLoader:
    """A loader whose first ``failures`` calls raise; records when each began,
    and what the host said about its progress meanwhile."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures  # None: never works
        self.calls: list[float] = []
        self.progress: list[tuple[int, dict[str, int]]] = []

    async def __call__(self, host: EngineHost) -> None:
        self.calls.append(trio.current_time())
        self.progress.append((host.load_attempt, host.loading))
        await trio.lowlevel.checkpoint()
        if self.failures is None or len(self.calls) <= self.failures:
            raise ModelLoadError(f"broken #{len(self.calls)}")


def attempt_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of each failed attempt's log record, in order."""
    return [
        getattr(r, "fields", {})
        for r in caplog.records
        if getattr(r, "event", None) == "engine_load_attempt_fail"
    ]


async def test_a_loader_that_fails_twice_then_works(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    loader = FlakyLoader(failures=2)
    host = EngineHost(FAST_FAKE.replace(engine_load_attempts=3), loader=loader)
    failures: list[ModelLoadError] = []
    host.on_failure.append(failures.append)
    t0 = trio.current_time()
    await nursery.start(host.run)
    await host.loaded.wait()
    assert host.ready and host.failure is None and failures == []
    # 1 s after the first failure, 2 s after the second.
    assert [t - t0 for t in loader.calls] == [0.0, 1.0, 3.0]
    assert loader.progress == [(k, {"engines": k}) for k in (1, 2, 3)]
    assert (host.load_attempt, host.loading) == (0, {})
    assert attempt_logs(caplog) == [
        {"engine": "engines", "attempt": k, "of": 3, "error": f"broken #{k}", "retry_in_s": delay}
        for k, delay in ((1, 1.0), (2, 2.0))
    ]


async def test_a_loader_that_never_works_fails_the_host_after_the_last_attempt(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    loader = FlakyLoader(failures=None)
    host = EngineHost(
        FAST_FAKE.replace(engine_load_attempts=4, engine_load_backoff_s=2), loader=loader
    )
    failures: list[ModelLoadError] = []
    host.on_failure.append(failures.append)
    t0 = trio.current_time()
    await nursery.start(host.run)
    await host.loaded.wait()
    assert [t - t0 for t in loader.calls] == [0.0, 2.0, 6.0, 14.0]
    assert trio.current_time() - t0 == 14.0  # no pause after the last
    assert not host.ready and failures == [host.failure]
    failure = host.failure
    assert isinstance(failure, EngineLoadFailed)
    assert (failure.what, failure.attempts, str(failure.cause)) == (
        "the engine set",
        4,
        "broken #4",
    )
    assert str(failure) == "the engine set did not load (4 attempts): broken #4"
    assert [(e["attempt"], e["retry_in_s"]) for e in attempt_logs(caplog)] == [
        (1, 2.0),
        (2, 4.0),
        (3, 8.0),
        (4, None),
    ]


async def test_only_the_engine_that_failed_is_tried_again_and_its_services_go_first(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real engine set's gates, their loading replaced: the TTS fails twice,
    each time after starting a service; ASR and LLM load once."""
    host = EngineHost(Config(engines="real", engine_load_attempts=3))
    calls = {"asr": 0, "llm": 0, "tts": 0}
    # Per TTS attempt: whether its service was still running when the next began.
    service_alive: list[bool] = []
    services: list[trio.Event] = []  # set when that attempt's service ended

    async def asr_load() -> None:
        calls["asr"] += 1
        await trio.sleep(10)  # slower than all three TTS attempts together

    async def llm_start(nursery: trio.Nursery) -> None:
        calls["llm"] += 1
        await trio.lowlevel.checkpoint()

    async def service(ended: trio.Event) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    async def tts_start(nursery: trio.Nursery) -> None:
        calls["tts"] += 1
        service_alive.extend(not ended.is_set() for ended in services)
        ended = trio.Event()
        services.append(ended)
        nursery.start_soon(service, ended)
        await trio.lowlevel.checkpoint()
        if calls["tts"] <= 2:
            raise ModelLoadError("no audible speech")

    monkeypatch.setattr(host.engines.asr, "load", asr_load)
    monkeypatch.setattr(host.engines.llm, "start", llm_start)
    monkeypatch.setattr(host.engines.tts, "start", tts_start)
    await nursery.start(host.run)
    await host.loaded.wait()
    assert host.failure is None
    assert calls == {"asr": 1, "llm": 1, "tts": 3}
    # Each failed attempt's service was stopped before the next attempt began...
    assert service_alive == [False, False, False]
    # ...and the one that worked keeps running.
    assert [e.is_set() for e in services] == [True, True, False]


async def test_the_last_failure_stops_the_engines_that_did_load(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = EngineHost(Config(engines="real", engine_load_attempts=2))
    llm_service_ended = trio.Event()

    async def asr_load() -> None:
        await trio.lowlevel.checkpoint()
        raise ModelLoadError("unknown Whisper model")

    async def llm_start(nursery: trio.Nursery) -> None:
        async def serve_llm() -> None:
            try:
                await trio.sleep_forever()
            finally:
                llm_service_ended.set()

        nursery.start_soon(serve_llm)
        await trio.lowlevel.checkpoint()

    async def tts_start(nursery: trio.Nursery) -> None:
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr(host.engines.asr, "load", asr_load)
    monkeypatch.setattr(host.engines.llm, "start", llm_start)
    monkeypatch.setattr(host.engines.tts, "start", tts_start)
    await nursery.start(host.run)
    await host.loaded.wait()
    assert host.failure is not None
    assert str(host.failure) == "the ASR engine did not load (2 attempts): unknown Whisper model"
    with trio.fail_after(1):
        await llm_service_ended.wait()


# -- a real server, real clock, zero backoff -------------------------------------


class GatedLoader:
    """Each attempt waits for the test to let it finish; the first
    ``failures`` then raise."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.attempts = 0
        self.entered = trio.Event()
        self._go = trio.Event()

    async def __call__(self, host: EngineHost) -> None:
        self.attempts += 1
        self.entered.set()
        await self._go.wait()
        self._go = trio.Event()
        if self.failures is None or self.attempts <= self.failures:
            raise ModelLoadError(f"broken #{self.attempts}")

    async def next_attempt(self) -> None:
        """Wait until an attempt is under way (and not yet let go)."""
        with trio.fail_after(10):
            await self.entered.wait()
        self.entered = trio.Event()

    def finish(self) -> None:
        self._go.set()


async def health(port: int) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/health")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_health_says_starting_with_the_attempt_while_the_engines_retry(
    nursery: trio.Nursery,
) -> None:
    config = FAST_FAKE.replace(engine_load_attempts=3, engine_load_backoff_s=0)
    loader = GatedLoader(failures=2)
    server: Running = await nursery.start(
        partial(serve, config, host=EngineHost(config, loader=loader))
    )
    for attempt in (1, 2, 3):
        await loader.next_attempt()
        status, body = await health(server.port)
        assert status == 503
        assert body["status"] == "starting"
        assert (body["load_attempt"], body["load_attempts"], body["loading"]) == (
            attempt,
            3,
            {"engines": attempt},
        )
        loader.finish()
    with trio.fail_after(10):
        await server.hub.host.loaded.wait()
    status, body = await health(server.port)
    assert (status, body["status"]) == (200, "ok")
    assert not {"load_attempt", "load_attempts", "loading"} & body.keys()


async def test_a_server_whose_engines_never_load_ends_with_the_error() -> None:
    config = FAST_FAKE.replace(engine_load_attempts=2, engine_load_backoff_s=0)
    loader = GatedLoader(failures=None)
    seen: list[tuple[int, str, int]] = []

    async def drive(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        server: Running = await outer.start(
            partial(serve, config, host=EngineHost(config, loader=loader))
        )
        task_status.started()
        for _ in range(2):
            await loader.next_attempt()
            status, body = await health(server.port)
            seen.append((status, body["status"], body["load_attempt"]))
            loader.finish()

    with (
        trio.fail_after(20),
        pytest.RaisesGroup(EngineLoadFailed, flatten_subgroups=True) as raised,
    ):
        async with trio.open_nursery() as outer:
            await outer.start(drive)
    assert seen == [(503, "starting", 1), (503, "starting", 2)]
    (failure,) = raised.value.exceptions
    assert str(failure) == "the engine set did not load (2 attempts): broken #2"


# -- the command ----------------------------------------------------------------

COMMAND = [
    sys.executable,
    "-m",
    "voicetrio",
    "serve",
    "--port",
    "0",
    "--lean",
    "--asr-model",
    "no-such-model",
]
FAILING_ENV = {
    **os.environ,
    "STREAM_ENGINE_LOAD_ATTEMPTS": "2",
    "STREAM_ENGINE_LOAD_BACKOFF_S": "0",
    "STREAM_LOG_LEVEL": "INFO",
}


def split_stderr(stderr: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON log records, and every other line."""
    records: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        else:
            other.append(line)
    return records, other


async def test_serve_exits_3_with_one_line_when_an_engine_never_loads() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            COMMAND, capture_stdout=True, capture_stderr=True, check=False, env=FAILING_ENV
        )
    records, other = split_stderr(result.stderr)
    assert result.returncode == EXIT_ENGINES_FAILED == 3
    serving = [line for line in other if line.startswith("voicetrio serving on")]
    (line,) = [line for line in other if line not in serving]
    assert line.startswith(
        "voicetrio: the ASR engine did not load (2 attempts): unknown Whisper model 'no-such-model'"
    )
    assert len(serving) == 1 and "Traceback" not in result.stderr.decode()
    attempts = [r for r in records if r["event"] == "engine_load_attempt_fail"]
    assert [(r["engine"], r["attempt"], r["of"]) for r in attempts] == [
        ("asr", 1, 2),
        ("asr", 2, 2),
    ]
    assert [r["attempts"] for r in records if r["event"] == "model_load_fail"] == [2]


async def test_the_supervisor_restarts_such_a_worker_with_a_growing_pause() -> None:
    command = [*COMMAND, "--workers", "2"]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, stderr=subprocess.PIPE, check=False, env=FAILING_ENV)
        )
        deaths = await read_until(
            proc, lambda r: r.get("event") == "worker_died" and r["worker"] == 0, count=2
        )
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()
    assert [(d["code"], d["restart_in_s"]) for d in deaths] == [(3, 1.0), (3, 2.0)]


async def read_until(
    proc: trio.Process, match: Callable[[dict[str, Any]], bool], *, count: int
) -> list[dict[str, Any]]:
    """The first ``count`` JSON records on ``proc``'s stderr that ``match``."""
    assert proc.stderr is not None
    found: list[dict[str, Any]] = []
    buffer = b""
    with trio.fail_after(60):
        while len(found) < count:
            chunk = await proc.stderr.receive_some()
            assert chunk, "the supervisor exited"
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                if (
                    line.startswith(b"{")
                    and match(record := json.loads(line))
                    and len(found) < count
                ):
                    found.append(record)
    return found
