"""The subtitle formatter (core/subtitles.py): SubRip and WebVTT, byte for byte."""

from __future__ import annotations

from voicetrio.core.subtitles import srt, timestamp, vtt
from voicetrio.core.transcript import Segment

SEGMENTS = (
    Segment(0, 0.0, 2.5, " Hello there."),
    Segment(1, 2.5, 61.0004, " How are you?"),
    Segment(2, 3723.4567, 3725.0, " Fine."),
)


def test_timestamps() -> None:
    assert timestamp(0) == "00:00:00,000"
    assert timestamp(1.2345) == "00:00:01,234"  # half-way rounds to even (1234.5 ms)
    assert timestamp(1.2346) == "00:00:01,235"
    assert timestamp(59.9996) == "00:01:00,000"  # the carry reaches the minutes
    assert timestamp(3723.4567, decimal=".") == "01:02:03.457"
    assert timestamp(100 * 3600.0) == "100:00:00,000"  # hours are not cut to two digits
    assert timestamp(-0.5) == "00:00:00,000"


def test_srt() -> None:
    assert srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:02,500 --> 00:01:01,000\nHow are you?\n\n"
        "3\n01:02:03,457 --> 01:02:05,000\nFine.\n\n"
    )
    assert srt(()) == ""


def test_vtt() -> None:
    assert vtt(SEGMENTS) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "00:00:02.500 --> 00:01:01.000\nHow are you?\n\n"
        "01:02:03.457 --> 01:02:05.000\nFine.\n\n"
    )
    assert vtt(()) == "WEBVTT\n\n"


def test_what_would_break_a_parse_is_mended() -> None:
    segments = (
        Segment(0, 1.0, 2.0, "   "),  # no text: no cue, and the numbering goes on
        Segment(1, 1.0, 1.0, " a <b> & c"),  # ends where it starts
        Segment(2, 2.0, 1.5, " two\n\nlines --> here"),  # ends before it starts
    )
    assert srt(segments) == (
        "1\n00:00:01,000 --> 00:00:01,001\na <b> & c\n\n"
        "2\n00:00:02,000 --> 00:00:02,001\ntwo lines -> here\n\n"
    )
    assert vtt(segments) == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:01.001\na &lt;b&gt; &amp; c\n\n"
        "00:00:02.000 --> 00:00:02.001\ntwo lines -&gt; here\n\n"
    )
