"""TLS terminated at HAProxy: ``deploy/haproxy/haproxy-tls.cfg`` in front of
a real voicetrio, from ``defaults`` on (only the addresses, ports, the
certificate file and the stats socket are the test's).

Debian's haproxy 2.6, one ``python -m voicetrio serve`` on the deterministic
engines with its agent port, a throwaway certificate from ``trustme`` for
``voicetrio.test`` and 127.0.0.1. The project's client talks over ``wss://`` to HAProxy,
which tunnels the upgraded connection to the plain backend; ``https://``
answers with HSTS; ``http://`` is redirected; the backend is UP by both the
health check and the agent, as with the plain file.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import ssl
from pathlib import Path

import httpx
import trio
import trustme

from tests.conftest import quiet, speech
from tests.test_fleet import SHIPPED, Backend, Fleet, Line, free_port, show_stat
from voicetrio.client.connection import connect, tls_context

SHIPPED_TLS = SHIPPED.with_name("haproxy-tls.cfg")
NAME = "voicetrio.test"


def haproxy_tls_config(
    http_port: int, https_port: int, stats_port: int, sock: Path, crt: Path, backend: Backend
) -> str:
    """The shipped TLS configuration from ``defaults`` on; addresses are ours."""
    shipped = SHIPPED_TLS.read_text()
    body = shipped[shipped.index("\ndefaults\n") :]
    replaced = {
        "    bind :80\n": f"    bind 127.0.0.1:{http_port}\n",
        "/etc/haproxy/certs/voicetrio.pem": str(crt),
        "    bind :443 ": f"    bind 127.0.0.1:{https_port} ",
        "    bind 127.0.0.1:8404\n": f"    bind 127.0.0.1:{stats_port}\n",
    }
    for old, new in replaced.items():
        assert body.count(old) == 1, old
        body = body.replace(old, new)
    body = re.sub(r"(?m)^    server vt\d .*\n", "", body)
    server = f"    server vt1 127.0.0.1:{backend.port} agent-port {backend.agent_port}\n"
    body = re.sub(r"(?m)^(    default-server .*\n)", lambda m: m.group(1) + server, body)
    # The shipped global section's TLS settings are part of what is tested.
    shipped_global = shipped[shipped.index("\nglobal\n") : shipped.index("\ndefaults\n")]
    tls_global = "".join(
        line + "\n" for line in shipped_global.splitlines() if line.strip().startswith("ssl-")
    )
    assert tls_global.count("\n") == 2
    head = (
        f"global\n    stats socket {sock} mode 600 level admin\n    log stdout format raw local0\n"
        + tls_global
    )
    return head + body


async def test_wss_and_https_through_haproxy_to_a_plain_backend(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is not installed: run ./scripts/setup"
    ca = trustme.CA()
    crt = tmp_path / "voicetrio.pem"
    ca.issue_cert(NAME, "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(crt))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_tls = tls_context(str(ca_file))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            fleet = Fleet(nursery, tmp_path)
            try:
                backend = await fleet.backend("vt1")
                http_port, https_port, sock = free_port(), free_port(), tmp_path / "admin.sock"
                config = tmp_path / "haproxy-tls.cfg"
                config.write_text(
                    haproxy_tls_config(http_port, https_port, free_port(), sock, crt, backend)
                )
                check = await trio.run_process(
                    [haproxy, "-c", "-f", str(config)],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                assert check.returncode == 0, (check.stdout + check.stderr).decode()
                hlog: list[Line] = []
                await fleet.start([haproxy, "-f", str(config), "-db"], {}, hlog)
                # UP by the health check and the agent. Another process: a bounded poll.
                row: dict[str, str] = {}
                with trio.move_on_after(15):
                    while (row.get("status"), row.get("agent_status")) != ("UP", "L7OK"):
                        await trio.sleep(0.1)
                        with contextlib.suppress(OSError):  # not listening yet
                            row = (await show_stat(sock)).get("vt1", {})
                assert (row.get("status"), row.get("agent_status")) == ("UP", "L7OK"), (row, hlog)
                await _check_https(https_port, http_port, client_tls)
                await _check_wss(https_port, client_tls)
                # Both went through HAProxy to the one backend.
                assert int((await show_stat(sock))["vt1"]["stot"]) >= 2
            finally:
                await fleet.end_all()
                nursery.cancel_scope.cancel()


async def _check_https(https_port: int, http_port: int, client_tls: ssl.SSLContext) -> None:
    async with httpx.AsyncClient(verify=client_tls) as http:
        health = await http.get(f"https://127.0.0.1:{https_port}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.headers["strict-transport-security"] == "max-age=31536000"
    async with httpx.AsyncClient() as plain:
        moved = await plain.get(f"http://127.0.0.1:{http_port}/health?x=1")
    assert moved.status_code == 301
    # Same host (as the client named it) and path, https://.
    assert moved.headers["location"] == f"https://127.0.0.1:{http_port}/health?x=1"


async def _check_wss(https_port: int, client_tls: ssl.SSLContext) -> None:
    async with connect(f"wss://127.0.0.1:{https_port}/ws", ssl_context=client_tls) as client:
        hello = await client.start(16000)
        assert hello["type"] == "protocol"
        pcm = speech(1200) + quiet(1000)
        for offset in range(0, len(pcm), 3200):
            await client.send_audio(pcm[offset : offset + 3200])
        kinds: list[str] = []
        with trio.fail_after(20):
            while not kinds or kinds[-1] != "metrics":
                kinds.append((await client.next_event()).type)
    assert "final_transcript" in kinds and "llm_token" in kinds and "tts_chunk" in kinds
