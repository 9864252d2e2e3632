"""A Realtime session's settings: read from ``session.update`` in either
shape, shown in ``session.created`` / ``session.updated``, and told to the
session core as one :class:`~voicetrio.core.inputs.Configure` snapshot.

GA keeps audio settings under ``audio.input`` / ``audio.output`` and calls
the reply's modalities ``output_modalities``; beta keeps them flat
(``input_audio_format``, ``turn_detection``, ``modalities``, ...). One
:class:`SessionConfig` holds both; an update is read in the connection's
shape and applied whole or not at all (a refused update changes nothing).

What the core acts on: the input format (its rate), turn detection (server
VAD's silence window, pre-roll, ``create_response``, ``interrupt_response``,
or none: manual turns), the instructions and the output modality (audio or
text). What only this adapter acts on: the output format, and input
transcription on or off (the words are always recognized, since the replies
need them; off, the transcription events are not sent). Accepted, shown back
and otherwise ignored: the voice, the VAD threshold, semantic VAD's
eagerness, noise reduction, speed, temperature, the token limit, tools,
tracing, the prompt reference (``docs/realtime.md`` lists them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from voicetrio.core.inputs import Configure, TurnTaking
from voicetrio.wire.realtime.errors import INVALID_VALUE
from voicetrio.wire.realtime.fields import Fields, JsonDict
from voicetrio.wire.realtime.formats import PCM16, AudioFormat, from_beta, from_ga

Shape = Literal["ga", "beta"]
SessionKind = Literal["realtime", "transcription"]

#: The models a beta transcription session may name.
_BETA_ASR_MODELS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "whisper-1")
#: The longest pre-roll kept before the speech onset (a ring of audio frames).
MAX_PREFIX_PADDING_MS = 2000


@dataclass(frozen=True, slots=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None
    eagerness: str = "auto"

    def shown(self) -> JsonDict:
        if self.type == "semantic_vad":
            return {
                "type": self.type,
                "eagerness": self.eagerness,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return {
            "type": self.type,
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True, slots=True)
class Transcription:
    model: str
    language: str | None = None
    prompt: str | None = None

    def shown(self) -> JsonDict:
        return {"model": self.model, "language": self.language, "prompt": self.prompt}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    kind: SessionKind
    model: str
    #: The server's defaults, for fields a client resets.
    default_silence_ms: int
    default_instructions: str
    asr_model: str
    instructions: str | None = None
    voice: str = "default"
    speak: bool = True
    input_format: AudioFormat = PCM16
    output_format: AudioFormat = PCM16
    turn_detection: TurnDetection | None = None
    transcription: Transcription | None = None
    noise_reduction: JsonDict | None = None
    temperature: float = 0.8
    speed: float = 1.0
    max_output_tokens: int | str = "inf"

    @classmethod
    def initial(
        cls,
        kind: SessionKind,
        model: str,
        *,
        silence_ms: int,
        instructions: str,
        asr_model: str,
        voice: str = "default",
    ) -> SessionConfig:
        """A new session: server VAD with the server's silence window, and
        transcription on (the words are recognized anyway)."""
        return cls(
            kind=kind,
            model=model,
            default_silence_ms=silence_ms,
            default_instructions=instructions,
            asr_model=asr_model,
            voice=voice,
            turn_detection=TurnDetection(silence_duration_ms=silence_ms),
            transcription=Transcription(asr_model),
        )

    # -- for the core and the adapter -----------------------------------------

    def configure(self) -> Configure:
        """The snapshot the session core acts on."""
        td = self.turn_detection
        if td is None:
            turns = TurnTaking(detect=False, reply=False, interrupt=False)
        else:
            turns = TurnTaking(
                detect=True,
                silence_ms=td.silence_duration_ms if td.type == "server_vad" else None,
                preroll_ms=min(td.prefix_padding_ms, MAX_PREFIX_PADDING_MS),
                reply=td.create_response and self.kind == "realtime",
                interrupt=td.interrupt_response,
            )
        return Configure(
            sample_rate=self.input_format.sample_rate,
            turns=turns,
            instructions=self.instructions,
            speak=self.speak,
        )

    @property
    def vad(self) -> bool:
        return self.turn_detection is not None

    def modalities(self, shape: Shape, speak: bool | None = None) -> list[str]:
        spoken = self.speak if speak is None else speak
        if shape == "ga":
            return ["audio"] if spoken else ["text"]
        return ["audio", "text"] if spoken else ["text"]

    # -- session.update --------------------------------------------------------

    def update(self, session: Fields, shape: Shape) -> SessionConfig:
        """This config with ``session`` applied; :class:`Refusal` (nothing
        applied) if any of it is wrong."""
        kind = session.choice("type", ("realtime", "transcription"))
        if kind is not None and kind != self.kind:
            raise session.refuse(
                "type",
                f"This is a {self.kind} session; its type cannot change to {kind}. "
                "Open a new connection (intent=transcription for a transcription session).",
            )
        if shape == "ga":
            return self._update_ga(session)
        return self._update_beta(session)

    def _common(self, s: Fields) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "instructions" in s:
            changes["instructions"] = s.text("instructions", nullable=True)
        if "model" in s:
            changes["model"] = s.text("model") or self.model
        return changes

    def _update_ga(self, s: Fields) -> SessionConfig:
        changes = self._common(s)
        modalities = s.strings("output_modalities")
        if modalities is not None:
            changes["speak"] = _speak(s, "output_modalities", modalities)
        audio = s.obj("audio")
        inp = audio.obj("input") if audio is not None else None
        out = audio.obj("output") if audio is not None else None
        if inp is not None:
            changes.update(self._input(inp, "format", from_ga, "transcription", "noise_reduction"))
        if out is not None:
            if "format" in out:
                changes["output_format"] = _format(out, "format", from_ga)
            if "voice" in out:
                changes["voice"] = _voice(out)
            speed = out.number("speed", low=0.25, high=1.5)
            if speed is not None:
                changes["speed"] = speed
        return dataclasses.replace(self, **changes)

    def _update_beta(self, s: Fields) -> SessionConfig:
        changes = self._common(s)
        modalities = s.strings("modalities")
        if modalities is not None and self.kind == "realtime":
            changes["speak"] = _speak(s, "modalities", modalities)
        changes.update(
            self._input(
                s,
                "input_audio_format",
                from_beta,
                "input_audio_transcription",
                "input_audio_noise_reduction",
            )
        )
        if "output_audio_format" in s:
            changes["output_format"] = _format(s, "output_audio_format", from_beta)
        if "voice" in s:
            changes["voice"] = _voice(s)
        temperature = s.number("temperature", low=0.0, high=2.0)
        if temperature is not None:
            changes["temperature"] = temperature
        speed = s.number("speed", low=0.25, high=1.5)
        if speed is not None:
            changes["speed"] = speed
        return dataclasses.replace(self, **changes)

    def _input(
        self,
        f: Fields,
        format_key: str,
        parse_format: Any,
        transcription_key: str,
        noise_key: str,
    ) -> dict[str, Any]:
        """Input audio settings, the same in both shapes but for where they are."""
        changes: dict[str, Any] = {}
        if format_key in f:
            changes["input_format"] = _format(f, format_key, parse_format)
        if "turn_detection" in f:
            changes["turn_detection"] = self._turn_detection(f.obj("turn_detection"))
        if transcription_key in f:
            t = f.obj(transcription_key)
            changes["transcription"] = (
                None
                if t is None
                else Transcription(
                    t.text("model") or self.asr_model,
                    t.text("language", nullable=True),
                    t.text("prompt", nullable=True),
                )
            )
        if noise_key in f:
            noise = f.obj(noise_key)
            if noise is not None:
                noise.choice("type", ("near_field", "far_field"))
            changes["noise_reduction"] = None if noise is None else noise.value
        return changes

    def _turn_detection(self, td: Fields | None) -> TurnDetection | None:
        if td is None:
            return None
        kind = td.choice("type", ("server_vad", "semantic_vad")) or "server_vad"
        defaults = TurnDetection(type=kind, silence_duration_ms=self.default_silence_ms)
        threshold = td.number("threshold", low=0.0, high=1.0)
        padding = td.integer("prefix_padding_ms", minimum=0)
        silence = td.integer("silence_duration_ms", minimum=0)
        create = td.flag("create_response")
        interrupt = td.flag("interrupt_response")
        idle = td.integer("idle_timeout_ms", minimum=0)
        eagerness = td.choice("eagerness", ("low", "medium", "high", "auto"))
        return dataclasses.replace(
            defaults,
            threshold=defaults.threshold if threshold is None else threshold,
            prefix_padding_ms=defaults.prefix_padding_ms
            if padding is None
            else min(padding, MAX_PREFIX_PADDING_MS),
            silence_duration_ms=defaults.silence_duration_ms if silence is None else silence,
            create_response=defaults.create_response if create is None else create,
            interrupt_response=defaults.interrupt_response if interrupt is None else interrupt,
            idle_timeout_ms=idle,
            eagerness=eagerness or defaults.eagerness,
        )

    # -- shown to the client ---------------------------------------------------

    def shown(self, shape: Shape, session_id: str) -> JsonDict:
        """The ``session`` object of ``session.created`` / ``session.updated``."""
        if shape == "ga":
            return self._ga(session_id)
        return self._beta(session_id)

    def _audio_input(self) -> JsonDict:
        return {
            "format": self.input_format.ga(),
            "transcription": None if self.transcription is None else self.transcription.shown(),
            "noise_reduction": self.noise_reduction,
            "turn_detection": None if self.turn_detection is None else self.turn_detection.shown(),
        }

    def _ga(self, session_id: str) -> JsonDict:
        if self.kind == "transcription":
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": session_id,
                "audio": {"input": self._audio_input()},
                "include": None,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": self.modalities("ga"),
            "instructions": self._instructions(),
            "audio": {
                "input": self._audio_input(),
                "output": {
                    "format": self.output_format.ga(),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": self.max_output_tokens,
            "tracing": None,
            "prompt": None,
            "include": None,
            # voicetrio sessions do not expire.
            "expires_at": 0,
        }

    def _beta(self, session_id: str) -> JsonDict:
        common: JsonDict = {
            "id": session_id,
            "input_audio_format": self.input_format.name,
            "input_audio_transcription": None
            if self.transcription is None
            else self.transcription.shown(),
            "turn_detection": None if self.turn_detection is None else self.turn_detection.shown(),
            "input_audio_noise_reduction": self.noise_reduction,
        }
        if self.kind == "transcription":
            transcription = common["input_audio_transcription"]
            if transcription is not None and transcription["model"] not in _BETA_ASR_MODELS:
                # The beta transcription session names only OpenAI's models;
                # a strict client refuses any other name.
                common["input_audio_transcription"] = {**transcription, "model": "whisper-1"}
            return {
                "object": "realtime.transcription_session",
                **common,
                "modalities": ["text"],
                "include": None,
                # The beta model names one; voicetrio issues no client secrets.
                "client_secret": {"value": "", "expires_at": 0},
            }
        return {
            "object": "realtime.session",
            **common,
            "model": self.model,
            "modalities": self.modalities("beta"),
            "instructions": self._instructions(),
            "voice": self.voice,
            "output_audio_format": self.output_format.name,
            "tools": [],
            "tool_choice": "auto",
            "temperature": self.temperature,
            "max_response_output_tokens": self.max_output_tokens,
            "speed": self.speed,
            "tracing": None,
        }

    def _instructions(self) -> str:
        return self.default_instructions if self.instructions is None else self.instructions


def _speak(f: Fields, key: str, modalities: list[str]) -> bool:
    unknown = [m for m in modalities if m not in ("audio", "text")]
    if unknown or not modalities:
        raise f.refuse(key, f"'{f.param(key)}' must list 'audio' and/or 'text'.", INVALID_VALUE)
    return "audio" in modalities


def _format(f: Fields, key: str, parse: Any) -> AudioFormat:
    try:
        fmt: AudioFormat = parse(f.value.get(key))
    except ValueError as exc:
        raise f.refuse(key, f"Invalid audio format for '{f.param(key)}': {exc}.") from None
    return fmt


def _voice(f: Fields) -> str:
    value = f.value.get("voice")
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    voice = f.text("voice")
    return voice or "default"


__all__ = ["MAX_PREFIX_PADDING_MS", "SessionConfig", "SessionKind", "Shape", "TurnDetection"]
