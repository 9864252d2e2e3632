"""Endpointer: exact events for scripted VAD streams (30 ms frames)."""

from __future__ import annotations

import pytest

from voicetrio.core.endpointing import (
    EndpointConfig,
    Endpointer,
    EndpointEvent,
    PartialDue,
    SilenceStarted,
    SpeechResumed,
    SpeechStarted,
    UtteranceEnded,
)


def feed(ep: Endpointer, pattern: str, *, decode: bool = False) -> list[EndpointEvent]:
    """One frame per character, "S" speech and "." silence. With ``decode``,
    every PartialDue starts and finishes a decode at once."""
    events: list[EndpointEvent] = []
    for char in pattern:
        assert char in "S."
        for event in ep.push(char == "S"):
            events.append(event)
            if decode and isinstance(event, PartialDue):
                ep.partial_started()
                ep.partial_finished()
    return events


def until(ep: Endpointer, speech: bool, at_ms: int, *, decode: bool = False) -> list[EndpointEvent]:
    """Push frames of one kind until ``now_ms == at_ms``."""
    frames, rest = divmod(at_ms - ep.now_ms, ep.config.frame_ms)
    assert frames >= 0
    assert rest == 0
    return feed(ep, ("S" if speech else ".") * frames, decode=decode)


def opened_at_660() -> Endpointer:
    """Onset at 600 ms (frame 20), so start_ms 300 and partial grid 1100, 1600, ..."""
    ep = Endpointer(EndpointConfig())
    assert feed(ep, "." * 20 + "SS") == [SpeechStarted(at_ms=660, start_ms=300)]
    return ep


def test_config_min_speech_frames_and_validation() -> None:
    assert EndpointConfig().min_speech_frames == 2
    assert EndpointConfig(min_speech_ms=61).min_speech_frames == 3
    assert EndpointConfig(min_speech_ms=100).min_speech_frames == 4
    assert EndpointConfig(min_speech_ms=0).min_speech_frames == 1
    with pytest.raises(ValueError, match="frame_ms"):
        EndpointConfig(frame_ms=0)
    with pytest.raises(ValueError, match="preroll_ms"):
        EndpointConfig(preroll_ms=-1)


def test_silence_alone_never_opens() -> None:
    ep = Endpointer(EndpointConfig())
    assert feed(ep, "." * 100) == []
    assert ep.now_ms == 3000
    assert not ep.in_utterance
    assert ep.utterance_ms == 0
    assert ep.start_ms is None
    assert ep.onset_ms is None
    assert ep.speech_end_ms is None


def test_single_click_frames_are_debounced() -> None:
    ep = Endpointer(EndpointConfig())
    assert feed(ep, "." * 10 + "S" + "." * 10 + "S.S.S.") == []
    assert not ep.in_utterance
    assert ep.now_ms == 810


def test_onset_preroll_clamped_at_zero() -> None:
    ep = Endpointer(EndpointConfig())
    assert feed(ep, "." * 10 + "S") == []
    assert ep.push(True) == [SpeechStarted(at_ms=360, start_ms=0)]
    assert ep.in_utterance
    assert ep.utterance_ms == 360
    assert ep.start_ms == 0
    assert ep.speech_end_ms == 360


def test_onset_keeps_preroll() -> None:
    ep = opened_at_660()
    assert ep.utterance_ms == 360
    assert ep.onset_ms == 600
    assert ep.start_ms == 300


def test_broken_run_restarts_the_debounce() -> None:
    ep = Endpointer(EndpointConfig())
    # Frame 10 is a click; the run that counts starts at frame 12 (360 ms).
    assert feed(ep, "." * 10 + "S.SS") == [SpeechStarted(at_ms=420, start_ms=60)]


def test_longer_debounce_opens_on_the_last_frame_of_the_run() -> None:
    ep = Endpointer(EndpointConfig(min_speech_ms=100))
    feed(ep, "." * 20)
    assert [ep.push(True) for _ in range(4)] == [
        [],
        [],
        [],
        [SpeechStarted(at_ms=720, start_ms=300)],
    ]


def test_partial_cadence_follows_the_onset_grid() -> None:
    ep = opened_at_660()
    assert until(ep, True, 2700, decode=True) == [
        PartialDue(at_ms=1110, utterance_ms=810),
        PartialDue(at_ms=1620, utterance_ms=1320),
        PartialDue(at_ms=2100, utterance_ms=1800),
        PartialDue(at_ms=2610, utterance_ms=2310),
    ]
    assert ep.skipped_partials == 0


def test_one_cycle_per_frame_when_the_interval_is_shorter_than_a_frame() -> None:
    ep = Endpointer(EndpointConfig(partial_interval_ms=20, min_partial_growth_ms=0))
    assert feed(ep, "SS", decode=True) == [
        SpeechStarted(at_ms=60, start_ms=0),
        PartialDue(at_ms=60, utterance_ms=60),
    ]
    assert feed(ep, "SS", decode=True) == [
        PartialDue(at_ms=90, utterance_ms=90),
        PartialDue(at_ms=120, utterance_ms=120),
    ]


def test_cycles_are_skipped_while_a_decode_is_in_flight() -> None:
    ep = opened_at_660()
    assert until(ep, True, 1110) == [PartialDue(at_ms=1110, utterance_ms=810)]
    ep.partial_started()
    assert ep.partial_in_flight
    assert until(ep, True, 2100) == []
    assert ep.skipped_partials == 2  # the cycles at 1620 and 2100
    ep.partial_finished()
    assert not ep.partial_in_flight
    assert until(ep, True, 2610) == [PartialDue(at_ms=2610, utterance_ms=2310)]
    assert ep.skipped_partials == 2


def test_cycle_is_skipped_when_the_utterance_barely_grew() -> None:
    ep = opened_at_660()
    assert until(ep, True, 1110) == [PartialDue(at_ms=1110, utterance_ms=810)]
    # The decode only really starts at 1500 ms (utterance 1200 ms): it waited.
    assert until(ep, True, 1500) == []
    ep.partial_started()
    assert until(ep, True, 1530) == []
    ep.partial_finished()
    # Cycle at 1620: utterance 1320 ms grew 120 ms < 200 ms since 1200 ms.
    assert until(ep, True, 1620) == []
    assert ep.skipped_partials == 1
    assert until(ep, True, 2100) == [PartialDue(at_ms=2100, utterance_ms=1800)]
    assert ep.skipped_partials == 1


@pytest.mark.parametrize(
    ("started_at_ms", "expected"),
    [
        (1410, [PartialDue(at_ms=1620, utterance_ms=1320)]),  # grew 210 ms: enough
        (1440, []),  # grew 180 ms
    ],
)
def test_growth_threshold_is_inclusive(started_at_ms: int, expected: list[EndpointEvent]) -> None:
    ep = Endpointer(EndpointConfig(min_partial_growth_ms=210))
    feed(ep, "." * 20 + "SS")
    assert until(ep, True, 1110) == [PartialDue(at_ms=1110, utterance_ms=810)]
    until(ep, True, started_at_ms)
    ep.partial_started()
    ep.partial_finished()
    assert until(ep, True, 1620) == expected
    assert ep.skipped_partials == (0 if expected else 1)


def test_pauses_shorter_than_silence_ms_do_not_split() -> None:
    ep = opened_at_660()
    assert until(ep, True, 900) == []
    # A 300 ms pause; the grid time 1100 falls inside it and is dropped.
    assert until(ep, False, 1200) == [SilenceStarted(at_ms=930)]
    assert ep.in_trailing_silence
    assert ep.speech_end_ms == 900
    assert ep.push(True) == [SpeechResumed(at_ms=1230)]
    assert not ep.in_trailing_silence
    assert until(ep, True, 1800, decode=True) == [PartialDue(at_ms=1620, utterance_ms=1320)]
    # The longest pause that does not split: 23 frames, 690 ms < 700 ms.
    assert until(ep, False, 2490) == [SilenceStarted(at_ms=1830)]
    assert ep.in_utterance
    assert feed(ep, "SSSS", decode=True) == [
        SpeechResumed(at_ms=2520),
        PartialDue(at_ms=2610, utterance_ms=2310),
    ]
    # The 24th silence frame ends it: 720 ms after the last speech frame.
    assert until(ep, False, 3300) == [SilenceStarted(at_ms=2640)]
    assert ep.push(False) == [
        UtteranceEnded(at_ms=3330, reason="silence", start_ms=300, speech_end_ms=2610)
    ]
    assert not ep.in_utterance
    assert ep.skipped_partials == 0  # grid times in silence are not skipped cycles


def test_silence_ends_exactly_at_silence_ms() -> None:
    ep = Endpointer(EndpointConfig(silence_ms=600))
    assert feed(ep, "." * 10 + "SS") == [SpeechStarted(at_ms=360, start_ms=0)]
    assert feed(ep, "." * 19) == [SilenceStarted(at_ms=390)]
    assert ep.now_ms == 930
    assert ep.in_utterance
    assert ep.push(False) == [
        UtteranceEnded(at_ms=960, reason="silence", start_ms=0, speech_end_ms=360)
    ]
    assert not ep.in_utterance


def test_silence_window_within_one_frame() -> None:
    ep = Endpointer(EndpointConfig(silence_ms=30))
    feed(ep, "SS")
    assert ep.push(False) == [
        SilenceStarted(at_ms=90),
        UtteranceEnded(at_ms=90, reason="silence", start_ms=0, speech_end_ms=60),
    ]


def test_max_duration_then_a_new_utterance() -> None:
    ep = Endpointer(EndpointConfig(max_utterance_ms=3000))
    assert feed(ep, "." * 10 + "SS") == [SpeechStarted(at_ms=360, start_ms=0)]
    assert until(ep, True, 3000, decode=True) == [
        PartialDue(at_ms=810, utterance_ms=810),
        PartialDue(at_ms=1320, utterance_ms=1320),
        PartialDue(at_ms=1800, utterance_ms=1800),
        PartialDue(at_ms=2310, utterance_ms=2310),
        PartialDue(at_ms=2820, utterance_ms=2820),
        UtteranceEnded(at_ms=3000, reason="max_duration", start_ms=0, speech_end_ms=3000),
    ]
    assert not ep.in_utterance
    # Still talking: a new debounce run; pre-roll stops at the previous end.
    assert ep.push(True) == []
    assert ep.push(True) == [SpeechStarted(at_ms=3060, start_ms=3000)]
    assert ep.utterance_ms == 60


def test_preroll_never_reaches_into_the_previous_utterance() -> None:
    ep = Endpointer(EndpointConfig(max_utterance_ms=3000))
    until(ep, True, 3000)
    assert feed(ep, ".SS") == [SpeechStarted(at_ms=3090, start_ms=3000)]


def test_max_duration_during_trailing_silence() -> None:
    ep = Endpointer(EndpointConfig(max_utterance_ms=3000))
    feed(ep, "." * 10 + "SS")
    until(ep, True, 2700)
    assert until(ep, False, 3000) == [
        SilenceStarted(at_ms=2730),
        UtteranceEnded(at_ms=3000, reason="max_duration", start_ms=0, speech_end_ms=2700),
    ]


def test_silence_wins_when_both_limits_hit_on_one_frame() -> None:
    ep = Endpointer(EndpointConfig(max_utterance_ms=3000, silence_ms=600))
    feed(ep, "." * 10 + "SS")
    until(ep, True, 2400)
    assert until(ep, False, 3000)[-1] == UtteranceEnded(
        at_ms=3000, reason="silence", start_ms=0, speech_end_ms=2400
    )


def test_stop_inside_an_utterance() -> None:
    ep = Endpointer(EndpointConfig())
    feed(ep, "." * 10 + "S" * 5)
    assert ep.stop() == [UtteranceEnded(at_ms=450, reason="stop", start_ms=0, speech_end_ms=450)]
    assert not ep.in_utterance
    assert ep.utterance_ms == 0
    assert ep.stop() == []


def test_stop_during_trailing_silence() -> None:
    ep = Endpointer(EndpointConfig())
    assert feed(ep, "." * 10 + "SSSS...") == [
        SpeechStarted(at_ms=360, start_ms=0),
        SilenceStarted(at_ms=450),
    ]
    assert ep.stop() == [UtteranceEnded(at_ms=510, reason="stop", start_ms=0, speech_end_ms=420)]


def test_stop_outside_an_utterance_forgets_the_debounce_run() -> None:
    ep = Endpointer(EndpointConfig())
    assert ep.stop() == []
    assert feed(ep, "." * 10 + "S") == []
    assert ep.stop() == []
    assert ep.push(True) == []  # would have opened without the stop
    assert ep.push(True) == [SpeechStarted(at_ms=390, start_ms=30)]


def test_everything_resets_after_an_end() -> None:
    ep = opened_at_660()
    assert until(ep, True, 1110) == [PartialDue(at_ms=1110, utterance_ms=810)]
    ep.partial_started()  # never finishes
    assert until(ep, True, 1620) == []
    assert ep.skipped_partials == 1
    assert ep.stop() == [
        UtteranceEnded(at_ms=1620, reason="stop", start_ms=300, speech_end_ms=1620)
    ]
    assert not ep.partial_in_flight
    assert ep.skipped_partials == 1  # readable after the end, for the turn's metrics
    ep.partial_started()  # idle: ignored
    assert not ep.partial_in_flight
    assert feed(ep, "SS") == [SpeechStarted(at_ms=1680, start_ms=1620)]
    assert ep.skipped_partials == 0
    # New grid from onset 1620 ms: 2120 ms, reached by the frame ending at 2130.
    assert until(ep, True, 2130) == [PartialDue(at_ms=2130, utterance_ms=510)]
    ep.partial_finished()  # harmless even if it was the old decode's
    assert ep.now_ms == 2130


def test_first_partial_can_come_before_the_interval() -> None:
    ep = Endpointer(EndpointConfig(partial_interval_ms=500, first_partial_ms=300, preroll_ms=0))
    due: list[int] = []
    for _ in range(50):
        due += [e.at_ms for e in ep.push(True) if isinstance(e, PartialDue)]
    # onset 0: first cycle at 300 ms, then on the grid 800, 1300 (frame ends 810, 1320)
    assert due == [300, 810, 1320]
