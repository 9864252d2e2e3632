"""The real voice activity detector: WebRTC's VAD behind an energy gate, with hangover.

One instance per session (it keeps state between frames). Two corrections on
top of the raw WebRTC decision:

* Energy gate: a frame whose RMS is below ``energy_floor`` is never speech.
  At aggressiveness below 3 WebRTC's VAD fires on low-level hiss and hum,
  which would keep an utterance open forever in a quiet room.
* Hangover: after a speech frame the next ``hangover_ms`` of frames still
  count as speech, whatever they hold. A stop consonant or a short dip between
  words then does not start the end-of-utterance silence window early. The
  cost is that the silence the session measures begins ``hangover_ms`` after
  the voice really stopped, so the effective end-of-turn delay is
  ``vad_silence_ms + hangover_ms``; a session that wants the configured
  silence exactly may subtract :attr:`WebRtcVad.hangover_ms` from its window.
"""

from __future__ import annotations

from typing import Final

import webrtcvad  # type: ignore[import-untyped]

from voicetrio.core import audio
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, VAD_FRAME_MS

#: Bytes in one VAD frame (30 ms of 16 kHz 16-bit mono).
FRAME_BYTES: Final = 2 * ENGINE_SAMPLE_RATE * VAD_FRAME_MS // 1000
#: Below this int16 RMS a frame is silence (quiet room noise is ~10-50,
#: soft speech several hundred).
DEFAULT_ENERGY_FLOOR: Final = 80


class WebRtcVad:
    """``is_speech`` on exactly :data:`FRAME_BYTES` of 16 kHz PCM per call."""

    def __init__(
        self,
        aggressiveness: int = 2,
        hangover_ms: int = 90,
        energy_floor: float = DEFAULT_ENERGY_FLOOR,
    ) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        if hangover_ms < 0:
            raise ValueError(f"hangover_ms must be >= 0, got {hangover_ms}")
        if not energy_floor >= 0:  # also rejects NaN
            raise ValueError(f"energy_floor must be >= 0, got {energy_floor}")
        self.aggressiveness = aggressiveness
        self.energy_floor = energy_floor
        # Whole frames, rounded up: a hangover shorter than asked would not do its job.
        self.hangover_frames = -(-hangover_ms // VAD_FRAME_MS)
        self.hangover_ms = self.hangover_frames * VAD_FRAME_MS
        self._vad = webrtcvad.Vad(aggressiveness)
        self._left = 0

    def raw_is_speech(self, frame: bytes) -> bool:
        """The gated WebRTC decision for one frame, without hangover or state."""
        if len(frame) != FRAME_BYTES:
            raise ValueError(
                f"a VAD frame is {FRAME_BYTES} bytes ({VAD_FRAME_MS} ms at "
                f"{ENGINE_SAMPLE_RATE} Hz), got {len(frame)}"
            )
        if audio.rms(frame) < self.energy_floor:
            return False
        return bool(self._vad.is_speech(frame, ENGINE_SAMPLE_RATE))

    def is_speech(self, frame: bytes) -> bool:
        if self.raw_is_speech(frame):
            self._left = self.hangover_frames
            return True
        if self._left > 0:
            self._left -= 1
            return True
        return False

    def reset(self) -> None:
        """Forget any hangover in progress (e.g. at the start of a new stream)."""
        self._left = 0


__all__ = ["DEFAULT_ENERGY_FLOOR", "FRAME_BYTES", "WebRtcVad"]
