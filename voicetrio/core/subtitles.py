"""Subtitles from a transcript's segments, sans-IO: SubRip (``srt``) and WebVTT (``vtt``).

One cue per segment, numbered from 1 in SubRip, each followed by a blank
line; WebVTT starts with its ``WEBVTT`` line. Times are rounded to the
millisecond (``00:01:02,345`` in SubRip, ``00:01:02.345`` in WebVTT), hours
have at least two digits. What could break a player's parse is mended:

* the text of a cue is one line (a blank line would end the cue early), and
  a segment with no text makes no cue;
* ``-->`` in the text becomes ``->`` (it is the timing line's arrow);
* WebVTT escapes ``&``, ``<`` and ``>`` (its cue text has tags and entities);
* a cue ends at least 1 ms after it starts (WebVTT drops one that does not;
  Whisper can give a segment that ends where it starts).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from voicetrio.core.transcript import Segment

MIN_CUE_MS: Final = 1


def timestamp(seconds: float, *, decimal: str = ",") -> str:
    """``HH:MM:SS,mmm`` (``decimal`` "." for WebVTT); negative times are 0."""
    return _clock(_ms(seconds), decimal)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _clock(ms: int, decimal: str) -> str:
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def srt(segments: Iterable[Segment]) -> str:
    return "".join(
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n\n"
        for n, (start, end, text) in enumerate(_cues(segments), start=1)
    )


def vtt(segments: Iterable[Segment]) -> str:
    cues = "".join(
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{_escape(text)}\n\n"
        for start, end, text in _cues(segments)
    )
    return "WEBVTT\n\n" + cues


def _cues(segments: Iterable[Segment]) -> Iterator[tuple[int, int, str]]:
    """(start ms, end ms, one-line text) of each cue."""
    for segment in segments:
        text = " ".join(segment.text.split()).replace("-->", "->")
        if not text:
            continue
        start = _ms(segment.start)
        yield start, max(_ms(segment.end), start + MIN_CUE_MS), text


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["srt", "timestamp", "vtt"]
