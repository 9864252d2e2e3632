"""What a Realtime connection's opening request says, sans-IO.

Read from the WebSocket handshake before it is accepted:

* the shape: beta when the request carries ``OpenAI-Beta: realtime=v1``, or
  (browsers cannot set headers) offers the ``openai-beta.realtime-v1``
  subprotocol; GA otherwise;
* a transcription session when ``intent=transcription``;
* the model, from ``model=`` (any name: voicetrio serves its own engines);
* the token a browser sends as the subprotocol
  ``openai-insecure-api-key.<token>``, which the access check treats like an
  ``Authorization: Bearer`` header, and the subprotocol to accept: a browser
  fails a connection whose answer names none of the ones it offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from voicetrio.wire.realtime.session_config import SessionKind, Shape

TOKEN_PREFIX: Final = "openai-insecure-api-key."
BETA_SUBPROTOCOL: Final = "openai-beta.realtime-v1"
DEFAULT_MODEL: Final = "voicetrio"


@dataclass(frozen=True, slots=True)
class Handshake:
    shape: Shape
    kind: SessionKind
    model: str
    #: The request's headers, with the subprotocol's token as a bearer token
    #: when no Authorization header came.
    headers: dict[str, str]
    #: The subprotocol to accept, or None when none was offered.
    subprotocol: str | None


def read(headers: Mapping[str, str], query: Mapping[str, str]) -> Handshake:
    lowered = {k.lower(): v for k, v in headers.items()}
    offered = [p.strip() for p in lowered.get("sec-websocket-protocol", "").split(",") if p.strip()]
    beta = "realtime=v1" in lowered.get("openai-beta", "").replace(" ", "").split(",")
    beta = beta or BETA_SUBPROTOCOL in offered
    out = dict(headers)
    token = next((p[len(TOKEN_PREFIX) :] for p in offered if p.startswith(TOKEN_PREFIX)), None)
    if token and "authorization" not in lowered:
        out["Authorization"] = f"Bearer {token}"
    return Handshake(
        shape="beta" if beta else "ga",
        kind="transcription" if query.get("intent") == "transcription" else "realtime",
        model=query.get("model") or DEFAULT_MODEL,
        headers=out,
        subprotocol=_choose(offered),
    )


def _choose(offered: list[str]) -> str | None:
    """The subprotocol to answer with: ``realtime`` if offered, else any
    other name, and the token one only when it is all there is (a browser
    drops a connection whose answer names none of its offers)."""
    if not offered:
        return None
    plain = [p for p in offered if not p.startswith(TOKEN_PREFIX)]
    if "realtime" in plain:
        return "realtime"
    return plain[0] if plain else offered[0]


__all__ = ["BETA_SUBPROTOCOL", "DEFAULT_MODEL", "TOKEN_PREFIX", "Handshake", "read"]
