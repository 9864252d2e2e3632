"""``GET /v1/models``: the models this server runs, and the Whisper models it could.

Built from the configuration (which engine set, which Whisper model, which
LLM, which TTS engine and voice) and from the installed model packages,
never by loading anything, so it answers while the engines still load.
Each entry is in the OpenAI API's shape (``id``, ``object``, ``created``,
``owned_by``) with two fields of ours that SDKs pass through: ``kind``
(``transcription``, ``chat`` or ``speech``: which routes it serves) and
``active`` (this server runs it; an installed Whisper model it does not run
needs ``STREAM_MODEL_WHISPER`` set to it and a restart).

Every request is served by the active model of its kind, whatever its
``model`` field says (``whisper-1``, ``tts-1`` work unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from voicetrio.config import Config
from voicetrio.core.model_catalog import served_name
from voicetrio.engines.models import SHIPPED, find_package

Kind = Literal["transcription", "chat", "speech"]
OWNER: Final = "voicetrio"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    kind: Kind
    active: bool = True

    def body(self) -> dict[str, Any]:
        # No creation date is known for a local model: 0, the epoch.
        return {
            "id": self.id,
            "object": "model",
            "created": 0,
            "owned_by": OWNER,
            "kind": self.kind,
            "active": self.active,
        }


def available_models(
    config: Config, *, locate: Callable[[str], Path | None] = find_package
) -> list[ModelEntry]:
    """The models of this server's configuration, active ones first.

    ``locate`` finds installed packages (tests point it at a fake layout).
    """
    talks = not config.lean
    if config.engines == "fake":
        entries = [ModelEntry("fake-asr", "transcription")]
        if talks:
            entries += [ModelEntry("fake-llm", "chat"), ModelEntry("fake-tts", "speech")]
        return entries
    loaded = config.model_whisper.strip()
    entries = [ModelEntry(loaded, "transcription")]
    if talks:
        llm = config.openai_model if config.openai_base_url else served_name(config.llm_model)
        entries += [ModelEntry(llm, "chat"), ModelEntry(_tts_id(config), "speech")]
    for name, shipped in SHIPPED.items():
        packages = {shipped.folder.package, *(p.package for p in shipped.parts)}
        running = loaded.lower() == name or loaded.lower().startswith(name + "-")  # "-int8"
        if not running and all(locate(p) is not None for p in packages):
            entries.append(ModelEntry(name, "transcription", active=False))
    return entries


def _tts_id(config: Config) -> str:
    if config.tts_engine == "pyttsx3":
        return f"espeak-ng/{config.tts_voice}" if config.tts_voice else "espeak-ng"
    if config.tts_engine == "piper":
        return "piper/joe-us"
    return "fake-tts"


def find_model(entries: list[ModelEntry], model_id: str) -> ModelEntry | None:
    return next((e for e in entries if e.id == model_id), None)


def list_body(entries: list[ModelEntry]) -> dict[str, Any]:
    return {"object": "list", "data": [e.body() for e in entries]}


__all__ = ["ModelEntry", "available_models", "find_model", "list_body"]
