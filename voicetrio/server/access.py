"""Who may connect: shared-secret tokens and an origin allowlist, sans-IO.

Checked before any work is done for a request: a WebSocket handshake that
fails is answered with a plain HTTP 401 or 403, never accepted. Browsers
cannot set headers on a WebSocket, so ``/ws`` also takes the token as a
``token`` query parameter; HTTP APIs take only the header. Tokens are
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Denied:
    status: int  # 401 no or wrong token, 403 origin not allowed
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    tokens: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, tokens: str, origins: str) -> AccessPolicy:
        return cls(tokens=_split(tokens), origins=tuple(o.rstrip("/") for o in _split(origins)))

    @property
    def open(self) -> bool:
        return not self.tokens

    def check(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        *,
        websocket: bool = False,
    ) -> Denied | None:
        """None when the request may proceed; else why not."""
        origin = headers.get("Origin")
        if origin is not None and self.origins and origin.rstrip("/") not in self.origins:
            return Denied(403, "FORBIDDEN_ORIGIN", f"origin {origin[:100]!r} is not allowed")
        if self.open:
            return None
        presented = _bearer(headers.get("Authorization", ""))
        if presented is None and websocket and query is not None:
            presented = query.get("token")
        if presented is None:
            return Denied(401, "UNAUTHORIZED", "a token is required: Authorization: Bearer <token>")
        if not _known(presented, self.tokens):
            return Denied(401, "UNAUTHORIZED", "the token is not valid")
        return None


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _bearer(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _known(presented: str, tokens: Iterable[str]) -> bool:
    # Compare with every token, so timing tells nothing about which matched.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found
