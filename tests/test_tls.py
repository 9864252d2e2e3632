"""TLS on the box: ``https://`` and ``wss://`` with STREAM_TLS_CERT/KEY.

Each test module run makes a certificate authority of its own (``trustme``)
and a server certificate for ``127.0.0.1``, ``localhost`` and
``voicetrio.test``; the clients trust that CA only. Real sockets, the
project's client and httpx, the deterministic engines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
from trio_websocket import wrap_client_stream

from tests.conftest import quiet, speech
from tests.reliability.conftest import (
    log_watch,  # noqa: F401  (autouse: fails a test whose server logged an unhandled exception)
    read_until,
    say,
    sessions_gone,
    small_receive_buffer,
    start_server,
)
from tests.reliability.test_slow_reader import HARD_BYTES, SLOW_FREQ, BigTts, engines
from tests.test_cli import LogLines
from tests.test_client_unit import write_wav
from voicetrio.cli import main as cli_main
from voicetrio.client.connection import (
    ClientError,
    VoiceClient,
    connect,
    tls_context,
)
from voicetrio.config import Config, ConfigError
from voicetrio.server.app import Running
from voicetrio.server.tls import server_context

PYTHON = sys.executable
NAMES = ("127.0.0.1", "localhost", "voicetrio.test")


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client(self) -> ssl.SSLContext:
        return tls_context(str(self.ca_file))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def make_pki(folder: Path) -> Pki:
    ca = trustme.CA()
    issued = ca.issue_cert(*NAMES)
    pki = Pki(ca, folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    # The chain: the server's certificate first, then any intermediates.
    for i, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(pki.cert_file), append=i > 0)
    issued.private_key_pem.write_to_path(str(pki.key_file))
    return pki


async def tls_server(nursery: trio.Nursery, pki: Pki, **changes: Any) -> Running:
    return await start_server(
        nursery, tls_cert=str(pki.cert_file), tls_key=str(pki.key_file), **changes
    )


# -- serving -----------------------------------------------------------------


async def test_a_conversation_over_wss(nursery: trio.Nursery, pki: Pki) -> None:
    server = await tls_server(nursery, pki)
    assert server.tls and server.url.startswith("wss://127.0.0.1:")
    async with connect(server.url, ssl_context=pki.client()) as client:
        hello = await client.start(16000)
        assert hello["type"] == "protocol"
        await say(client, 1200, 440.0)
        turn = await read_until(client, "metrics")
    kinds = [e["type"] for e in turn.events]
    assert turn.closed is None
    assert "final_transcript" in kinds and "llm_token" in kinds and "tts_chunk" in kinds
    assert kinds[-1] == "metrics"


async def test_https_health_and_the_page(nursery: trio.Nursery, pki: Pki) -> None:
    server = await tls_server(nursery, pki)
    async with httpx.AsyncClient(verify=pki.client()) as http:
        health = await http.get(f"https://127.0.0.1:{server.port}/health")
        page = await http.get(f"https://localhost:{server.port}/")
    assert health.status_code == 200 and health.json()["status"] in ("ok", "starting")
    assert page.status_code == 200 and "<html" in page.text.lower()
    # HTTP/1.1 only (voicetrio.server.tls.ALPN): a sever must cut one session.
    assert health.http_version == "HTTP/1.1"


async def test_plain_http_on_the_tls_port_fails_and_the_server_goes_on(
    nursery: trio.Nursery, pki: Pki
) -> None:
    server = await tls_server(nursery, pki)
    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://127.0.0.1:{server.port}/health")
    # Refused at once: a raw look at what a plain client gets.
    probe = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with probe:
        await probe.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            assert await probe.receive_some() == b""  # closed, no answer
    # A client that connects and says nothing: the handshake waits, others go on.
    with socket.create_connection(("127.0.0.1", server.port)):
        async with httpx.AsyncClient(verify=pki.client()) as http:
            health = await http.get(f"https://127.0.0.1:{server.port}/health")
        assert health.status_code == 200
        async with connect(server.url, ssl_context=pki.client()) as client:
            await client.start(16000)
            await say(client)
            assert (await read_until(client, "metrics")).closed is None


async def test_a_client_that_does_not_trust_the_ca_is_refused_by_its_own_check(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    server = await tls_server(nursery, pki)
    stranger = make_pki(tmp_path)  # another CA: the server's certificate does not verify
    # Underneath, the handshake fails on verification, at once:
    with pytest.raises(trio.BrokenResourceError) as caught:
        await _handshake(server.port, stranger.client(), "127.0.0.1")
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    # The name is checked too: the certificate is not for elsewhere.test.
    with pytest.raises(trio.BrokenResourceError) as caught:
        await _handshake(server.port, pki.client(), "elsewhere.test")
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def _handshake(port: int, context: ssl.SSLContext, name: str) -> None:
    """A TLS handshake with the server on loopback, expecting it to be ``name``."""
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), context, server_hostname=name
    )
    async with stream:
        await stream.do_handshake()


async def test_the_client_cli_takes_a_ca_file(
    nursery: trio.Nursery, pki: Pki, tmp_path: Path
) -> None:
    server = await tls_server(nursery, pki)
    wav = tmp_path / "hello.wav"
    write_wav(wav, speech(1500) + quiet(300), 16000)
    base = [PYTHON, "-m", "voicetrio", "client", str(wav), "--json", "--url", server.url]
    ok = await trio.run_process(
        [*base, "--no-realtime", "--ca-file", str(pki.ca_file)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    kinds = [json.loads(line)["type"] for line in ok.stdout.decode().splitlines()]
    assert "final_transcript" in kinds and "metrics" in kinds
    missing = await trio.run_process(
        [*base, "--ca-file", str(tmp_path / "missing.pem")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert missing.returncode == 1
    assert "CA file" in missing.stderr.decode() and "No such file" in missing.stderr.decode()


def test_a_ca_file_that_is_not_one_is_a_client_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ClientError, match=r"CA file .*empty\.pem"):
        tls_context(str(empty))
    with pytest.raises(ClientError, match="No such file"):
        tls_context(str(tmp_path / "missing.pem"))


# -- the sever and the shutdown, through TLS -----------------------------------


@asynccontextmanager
async def wss_over_socket(
    url_port: int, context: ssl.SSLContext
) -> AsyncIterator[tuple[VoiceClient, trio.SocketStream]]:
    """A wss:// session over a TCP stream the test holds (to shrink its
    receive buffer), TLS over it, the WebSocket over that."""
    stream = await trio.open_tcp_stream("127.0.0.1", url_port)
    small_receive_buffer(stream)
    secure = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
    async with secure, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery, secure, f"127.0.0.1:{url_port}", "/ws", max_message_size=16 * 1024 * 1024
        )
        try:
            yield VoiceClient(ws), stream
        finally:
            nursery.cancel_scope.cancel()


async def test_a_wss_client_that_never_reads_is_severed(nursery: trio.Nursery, pki: Pki) -> None:
    """The slow-reader drop (tests/reliability/test_slow_reader.py) through
    TLS: the send stuck in the TLS stream (Hypercorn shields it) ends only
    because the sever shuts the socket under it down."""
    tts = BigTts()
    server = await start_server(
        nursery,
        engines(tts),
        backpressure_hard_bytes=HARD_BYTES,
        tls_cert=str(pki.cert_file),
        tls_key=str(pki.key_file),
    )
    async with wss_over_socket(server.port, pki.client()) as (slow, _):
        await slow.start(16000)
        (session,) = server.hub.sessions
        await say(slow, 1200, SLOW_FREQ)
        with trio.fail_after(10):
            await session.closed.wait()
    await sessions_gone(server)
    assert session.close_code == 1008
    assert tts.big < 200  # stopped well short of the whole reply
    # The server goes on serving TLS.
    async with connect(server.url, ssl_context=pki.client()) as client:
        await client.start(16000)
        await say(client)
        assert (await read_until(client, "metrics")).closed is None


async def test_shutdown_closes_wss_sessions_with_1001(pki: Pki) -> None:
    async with trio.open_nursery() as nursery:
        server = await tls_server(nursery, pki, shutdown_grace_s=1.0)
        async with connect(server.url, ssl_context=pki.client()) as client:
            await client.start(16000)
            server.shutdown.set()
            turn = await read_until(client, "never", timeout_s=10)
        assert turn.closed == 1001
        assert any(e.get("event") == "shutdown" for e in turn.events)
    # serve() returned: the nursery closed with nothing left running.


# -- configuration -------------------------------------------------------------


def test_one_of_the_pair_alone_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="STREAM_TLS_KEY"):
        Config(engines="fake").replace(tls_cert=str(pki.cert_file))
    with pytest.raises(ConfigError, match="STREAM_TLS_CERT"):
        Config(engines="fake").replace(tls_key=str(pki.key_file))


def test_bad_files_are_config_errors_naming_the_setting(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(_encrypted(pki.ca, pki.key_file))
    cert, key = str(pki.cert_file), str(pki.key_file)
    cases = [
        (str(tmp_path / "missing.pem"), key, "STREAM_TLS_CERT", "cannot read"),
        (cert, str(tmp_path / "missing.pem"), "STREAM_TLS_KEY", "cannot read"),
        (str(garbage), key, "STREAM_TLS_CERT", "no PEM certificate"),
        (key, key, "STREAM_TLS_CERT", "no PEM certificate"),  # a key where the certificate goes
        (cert, cert, "STREAM_TLS_KEY", "not a PEM private key"),  # and the other way round
        (cert, str(other.key_file), "STREAM_TLS_KEY", "not a PEM private key"),  # another's key
        (cert, str(encrypted), "STREAM_TLS_KEY", "encrypted"),
        (str(tmp_path), key, "STREAM_TLS_CERT", "cannot read"),  # a folder
    ]
    for cert_path, key_path, setting, problem in cases:
        config = Config(engines="fake", tls_cert=cert_path, tls_key=key_path)
        with pytest.raises(ConfigError, match=problem) as caught:
            server_context(config)
        assert caught.value.setting == setting, (cert_path, key_path)
    assert server_context(Config(engines="fake", tls_cert=cert, tls_key=key)) is not None
    assert server_context(Config(engines="fake")) is None


def _encrypted(ca: trustme.CA, key_file: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def test_serve_with_a_bad_certificate_is_one_line_and_exit_1(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.pem")
    for extra in ([], ["--workers", "2"]):
        code = cli_main(
            ["serve", "--engines", "fake", "--port", "0", "--tls-cert", missing,
             "--tls-key", str(pki.key_file), *extra]
        )  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1
        assert err == [
            f"voicetrio: invalid setting STREAM_TLS_CERT: cannot read {missing}: No such file or directory"
        ]
    code = cli_main(["serve", "--engines", "fake", "--tls-key", str(pki.key_file)])
    assert code == 1
    assert "STREAM_TLS_CERT" in capsys.readouterr().err


# -- several workers on the one TLS port -----------------------------------------


async def test_one_process_serves_tls_from_the_environment(pki: Pki) -> None:
    env = {
        **os.environ,
        "STREAM_SHUTDOWN_GRACE_S": "1",
        "STREAM_TLS_CERT": str(pki.cert_file),
        "STREAM_TLS_KEY": str(pki.key_file),
    }
    command = [PYTHON, "-m", "voicetrio", "serve", "--port", "0", "--engines", "fake"]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, stderr=subprocess.PIPE, check=False, env=env)
        )
        log = LogLines(proc)
        listening = await log.event("listening")
        assert listening["url"].startswith("https://127.0.0.1:")
        port = int(listening["url"].rsplit(":", 1)[1])
        async with httpx.AsyncClient(verify=pki.client()) as http:
            health = await http.get(f"https://127.0.0.1:{port}/health")
        assert health.status_code == 200
        # Printed just after the log line: read on until it comes.
        line = next((seen for seen in log._seen if "voicetrio serving on" in seen), "")
        while "voicetrio serving on" not in line:
            line = await log._line()
        assert line == f"voicetrio serving on https://127.0.0.1:{port}/"
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await proc.wait()
        assert proc.returncode == 0


async def test_workers_serve_tls_on_the_shared_port(pki: Pki, tmp_path: Path) -> None:
    """The flags this time: the supervisor passes them on to its workers."""
    env = {**os.environ, "STREAM_SHUTDOWN_GRACE_S": "1", "STREAM_LOG_LEVEL": "INFO"}
    command = [
        PYTHON, "-m", "voicetrio", "serve", "--port", "0", "--engines", "fake", "--workers", "2",
        "--tls-cert", str(pki.cert_file), "--tls-key", str(pki.key_file),
    ]  # fmt: skip
    wav = tmp_path / "hello.wav"
    write_wav(wav, speech(1500) + quiet(300), 16000)
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial(trio.run_process, command, stderr=subprocess.PIPE, check=False, env=env)
        )
        log = LogLines(proc)
        listening = [await log.event("listening") for _ in range(2)]
        assert sorted(e["worker"] for e in listening) == [0, 1]
        urls = {e["url"] for e in listening}
        assert len(urls) == 1 and urls.pop().startswith("https://127.0.0.1:")
        port = int(listening[0]["url"].rsplit(":", 1)[1])
        assert any(
            f"voicetrio serving on https://127.0.0.1:{port}/ with 2 workers" in line
            for line in log._seen
        ), log._seen
        # Which worker accepts a connection is the kernel's choice: each
        # announced https above; here any of them answers over TLS.
        async with httpx.AsyncClient(verify=pki.client()) as http:
            health = await http.get(f"https://127.0.0.1:{port}/health")
        assert health.status_code == 200 and health.json()["workers"] == 2
        result = await trio.run_process(
            [PYTHON, "-m", "voicetrio", "client", str(wav), "--json",
             "--url", f"wss://localhost:{port}/ws", "--ca-file", str(pki.ca_file)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        kinds = [json.loads(line)["type"] for line in result.stdout.decode().splitlines()]
        assert "final_transcript" in kinds and "metrics" in kinds
        proc.send_signal(signal.SIGTERM)
        stopped = [await log.event("worker_stopped") for _ in range(2)]
        assert all(e["code"] == 0 for e in stopped)
        with trio.fail_after(15):
            await proc.wait()
        assert proc.returncode == 0
