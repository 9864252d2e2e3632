"""The page over ``https://`` by a name that is not loopback, in a real browser.

A browser grants the microphone only to a secure context: ``https://``, or
``localhost``/``127.0.0.1``. Opened as ``http://host:8000/`` from another
machine the page cannot capture audio; served with STREAM_TLS_CERT/KEY it
can. To show that without a second machine, Chromium resolves
``voicetrio.test`` to 127.0.0.1 (``--host-resolver-rules``), a name that is
no secure context by itself, and trusts the server certificate's key
(``--ignore-certificate-errors-spki-list``: that one key only, so the page
is an ordinary verified https page, not one with a certificate error
waved through). The server runs the real ASR (Whisper tiny.en, lean mode):
what the page captured is transcribed over ``wss://``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.browser_helpers import (
    ServerThread,
    chromium_page,
    require_browser,
    running_server,
    save_screenshot,
)
from tests.test_browser import (
    TURN_TIMEOUT_MS,
    assert_no_page_errors,
    open_page,
    speak_and_wait_for_final,
    spoken_wav,  # noqa: F401  (a fixture: the spoken question as the microphone)
    state,
    wait,
)
from voicetrio.config import Config

NAME: Final = "voicetrio.test"


def spki_hash(cert_pem: bytes) -> str:
    """What ``--ignore-certificate-errors-spki-list`` takes: base64 of the
    SHA-256 of the certificate's DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    folder = tmp_path_factory.mktemp("pki")
    issued = trustme.CA().issue_cert(NAME)
    cert, key = folder / "cert.pem", folder / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key, spki_hash(issued.cert_chain_pems[0].bytes())


@pytest.fixture(scope="module")
def tls_lean_server(tls_files: tuple[Path, Path, str]) -> Iterator[ServerThread]:
    require_browser()
    cert, key, _ = tls_files
    config = Config(port=0, engines="real", lean=True, tls_cert=str(cert), tls_key=str(key))
    with running_server(config) as server:
        yield server


def test_the_page_over_https_by_name_captures_and_transcribes(
    tls_lean_server: ServerThread,
    tls_files: tuple[Path, Path, str],
    spoken_wav: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    _, _, spki = tls_files
    flags = (
        f"--host-resolver-rules=MAP {NAME} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki}",
    )
    url = f"https://{NAME}:{tls_lean_server.port}/"
    with chromium_page(spoken_wav, tmp_path / "profile", extra_args=flags) as (page, errors):
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        open_page(page, url)
        # Served by name over verified TLS: a secure context, so the page
        # may ask for the microphone; its socket is wss:// to the same name.
        assert page.evaluate("() => window.isSecureContext") is True
        assert (
            page.evaluate("() => location.protocol + '//' + location.hostname") == f"https://{NAME}"
        )
        wait(page, "v.lean === true")

        first = speak_and_wait_for_final(page)  # the key words of the question, from Whisper
        assert first["framesSent"] > 0 and first["inputRate"] in (44100, 48000)
        wait(page, "v.turns[0].done", TURN_TIMEOUT_MS)
        page.click("#stop")
        wait(page, "v.state === 'ready'")
        (turn,) = state(page)["turns"]
        assert turn["status"] == "transcribed" and turn["server"]["final_ms"] is not None
        # Every request the page made went over TLS to the server by name.
        loaded = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(u.startswith(f"https://{NAME}:") for u in loaded), loaded
        assert sockets and all(u.startswith(f"wss://{NAME}:") for u in sockets), sockets

        save_screenshot(page, tmp_path, "browser-https-turn.png")
        assert_no_page_errors(errors)


def test_the_same_name_over_plain_http_is_no_secure_context(
    tls_files: tuple[Path, Path, str],
    spoken_wav: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The control: the same page by the same name without TLS may not use
    the microphone, which is why TLS matters off loopback."""
    require_browser()
    config = Config(port=0, engines="fake", lean=True)
    flags = (f"--host-resolver-rules=MAP {NAME} 127.0.0.1",)
    with (
        running_server(config) as server,
        chromium_page(spoken_wav, tmp_path / "profile", extra_args=flags) as (page, _),
    ):
        page.goto(f"http://{NAME}:{server.port}/")
        assert page.evaluate("() => window.isSecureContext") is False
        # navigator.mediaDevices is withheld outside a secure context.
        assert page.evaluate("() => navigator.mediaDevices === undefined") is True
