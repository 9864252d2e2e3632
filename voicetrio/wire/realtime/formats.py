"""The Realtime API's audio formats: their names in both shapes, and the
bytes on the wire to and from 16-bit PCM.

Three formats, each with a fixed rate: ``pcm16`` (16-bit little-endian PCM
at 24 kHz) and G.711 μ-law and A-law at 8 kHz. The GA shape names them
``{"type": "audio/pcm", "rate": 24000}``, ``{"type": "audio/pcmu"}`` and
``{"type": "audio/pcma"}``; the beta shape ``"pcm16"``, ``"g711_ulaw"`` and
``"g711_alaw"``. Input is decoded to PCM at the format's rate (the session
resamples it for the engines); speech is resampled to the format's rate and
encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from voicetrio.core.resample import resample
from voicetrio.wire.realtime import g711


@dataclass(frozen=True, slots=True)
class AudioFormat:
    #: The beta name, which is also ours.
    name: str
    #: The GA ``type``.
    mime: str
    sample_rate: int
    #: Bytes on the wire per sample.
    width: int

    def ga(self) -> dict[str, Any]:
        if self.name == "pcm16":
            return {"type": self.mime, "rate": self.sample_rate}
        return {"type": self.mime}

    def decode(self, data: bytes) -> bytes:
        """Wire bytes to 16-bit PCM at :attr:`sample_rate`; ValueError if
        they are not whole samples."""
        if self.name == "g711_ulaw":
            return g711.ulaw_decode(data)
        if self.name == "g711_alaw":
            return g711.alaw_decode(data)
        if len(data) % 2:
            raise ValueError(f"{len(data)} bytes of pcm16 is not whole 16-bit samples")
        return data

    def encode(self, pcm: bytes, rate: int) -> bytes:
        """16-bit PCM at ``rate`` to wire bytes of this format."""
        if rate != self.sample_rate:
            pcm = resample(pcm, rate, self.sample_rate)
        if self.name == "g711_ulaw":
            return g711.ulaw_encode(pcm)
        if self.name == "g711_alaw":
            return g711.alaw_encode(pcm)
        return pcm

    def duration_ms(self, nbytes: int) -> float:
        return nbytes / self.width / self.sample_rate * 1000


PCM16: Final = AudioFormat("pcm16", "audio/pcm", 24000, 2)
ULAW: Final = AudioFormat("g711_ulaw", "audio/pcmu", 8000, 1)
ALAW: Final = AudioFormat("g711_alaw", "audio/pcma", 8000, 1)
FORMATS: Final = (PCM16, ULAW, ALAW)


def from_beta(name: object) -> AudioFormat:
    """The format a beta name says; ValueError if it names none."""
    for fmt in FORMATS:
        if name == fmt.name:
            return fmt
    raise ValueError(f"expected one of {', '.join(f.name for f in FORMATS)}")


def from_ga(value: object) -> AudioFormat:
    """The format a GA format object says; ValueError if it names none (or
    a rate other than its own)."""
    if not isinstance(value, dict):
        raise ValueError('expected an object such as {"type": "audio/pcm", "rate": 24000}')
    for fmt in FORMATS:
        if value.get("type") == fmt.mime:
            rate = value.get("rate", fmt.sample_rate)
            if rate != fmt.sample_rate:
                raise ValueError(f"{fmt.mime} is {fmt.sample_rate} Hz only, not {rate!r}")
            return fmt
    raise ValueError(f"type must be one of {', '.join(f.mime for f in FORMATS)}")


__all__ = ["ALAW", "FORMATS", "PCM16", "ULAW", "AudioFormat", "from_beta", "from_ga"]
