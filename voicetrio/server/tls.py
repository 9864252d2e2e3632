"""The server's TLS context, from ``STREAM_TLS_CERT`` and ``STREAM_TLS_KEY``.

A browser grants the microphone only to a secure context: ``https://`` or
``localhost``. Served over plain HTTP from another machine, the demo page
cannot capture audio, and bearer tokens travel in clear. With a certificate
and key, voicetrio serves ``https://`` and ``wss://`` on its one port
(:mod:`voicetrio.server.front` wraps each accepted connection in a
``trio.SSLStream``); behind a proxy that terminates TLS, leave both unset.

Every problem with the files is found here, once, at startup, and named as
the setting it comes from (a :class:`~voicetrio.config.ConfigError`): a
server that would fail every handshake must not start.
"""

from __future__ import annotations

import ssl
from typing import Final, NoReturn

from voicetrio.config import Config, ConfigError, env_name

CERT: Final = env_name("tls_cert")
KEY: Final = env_name("tls_key")
#: HTTP/1.1 only, never h2: ``front.Connections`` severs a stuck session by
#: shutting its connection down, and over HTTP/2 one connection carries
#: every stream a browser opens to the origin, whose other sessions and
#: requests would be cut with it.
ALPN: Final = ("http/1.1",)


def server_context(config: Config) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None for plain TCP.

    Raises :class:`ConfigError` naming ``STREAM_TLS_CERT`` or
    ``STREAM_TLS_KEY`` for a file that cannot be read, holds no certificate
    or key, is encrypted, or a key that does not match the certificate.
    """
    if not config.tls_cert and not config.tls_key:
        return None
    # validate() refuses one without the other; checked again for a Config
    # built without it.
    if not config.tls_cert or not config.tls_key:
        missing = CERT if not config.tls_cert else KEY
        raise ConfigError(missing, f"TLS needs both {CERT} and {KEY}")
    _readable(CERT, config.tls_cert)
    _readable(KEY, config.tls_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(ALPN))
    _check_certificates(config.tls_cert)

    def no_passphrase() -> NoReturn:
        # Without a callback OpenSSL would prompt on the terminal, and a
        # server under a supervisor would hang at startup.
        raise ConfigError(KEY, f"{config.tls_key} is encrypted; give an unencrypted key")

    try:
        context.load_cert_chain(config.tls_cert, config.tls_key, password=no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(
            KEY,
            f"{config.tls_key} is not a PEM private key for the certificate in "
            f"{config.tls_cert} ({exc.reason or exc})",
        ) from None
    return context


def _readable(setting: str, path: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None


def _check_certificates(path: str) -> None:
    """Raise unless ``path`` holds at least one PEM certificate.

    ``load_cert_chain`` blames a bad certificate and a bad key alike, so the
    certificate is parsed first, on its own, to name the right setting."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(CERT, f"{path} holds no PEM certificate ({exc.reason or exc})") from None
