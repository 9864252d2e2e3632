"""TurnMetrics and delta_ms: exact rounded numbers."""

from __future__ import annotations

from voicetrio.core.metrics import FIELD_NAMES, TurnMetrics, delta_ms


def test_fresh_turn_has_only_t0() -> None:
    fields = TurnMetrics(t0=12.5).fields()
    assert list(fields) == list(FIELD_NAMES)
    assert fields == {
        "t0_ms": 0.0,
        "t1_first_partial_ms": None,
        "t2_final_ms": None,
        "t3_first_token_ms": None,
        "t4_first_audio_ms": None,
        "decode_runs": 0,
        "last_decode_ms": None,
        "rtf": None,
        "mean_rtf": None,
    }


def test_marks_are_relative_to_t0_and_first_call_wins() -> None:
    m = TurnMetrics(t0=100.0)
    m.mark_first_partial(100.25)
    m.mark_first_partial(100.5)
    m.mark_final(100.5)
    m.mark_final(101.0)
    m.mark_first_token(100.75)
    m.mark_first_token(100.8)
    m.mark_first_audio(101.125)
    m.mark_first_audio(102.0)
    fields = m.fields()
    assert fields["t0_ms"] == 0.0
    assert fields["t1_first_partial_ms"] == 250.0
    assert fields["t2_final_ms"] == 500.0
    assert fields["t3_first_token_ms"] == 750.0
    assert fields["t4_first_audio_ms"] == 1125.0


def test_marks_round_to_a_tenth_of_a_millisecond() -> None:
    m = TurnMetrics(t0=0.0)
    m.mark_final(0.12344)
    m.mark_first_token(0.12346)
    fields = m.fields()
    assert fields["t2_final_ms"] == 123.4
    assert fields["t3_first_token_ms"] == 123.5


def test_decode_runs_last_and_mean_rtf() -> None:
    m = TurnMetrics(t0=0.0)
    m.add_decode(0.1, 0.5)
    fields = m.fields()
    assert (fields["decode_runs"], fields["last_decode_ms"]) == (1, 100.0)
    assert (fields["rtf"], fields["mean_rtf"]) == (0.2, 0.2)
    m.add_decode(0.3, 1.0)
    fields = m.fields()
    assert (fields["decode_runs"], fields["last_decode_ms"]) == (2, 300.0)
    assert (fields["rtf"], fields["mean_rtf"]) == (0.3, 0.25)


def test_rtf_rounds_to_three_places() -> None:
    m = TurnMetrics(t0=0.0)
    m.add_decode(0.1, 0.3)
    m.add_decode(0.2, 0.3)
    fields = m.fields()
    assert fields["rtf"] == 0.667
    assert fields["mean_rtf"] == 0.5
    assert fields["last_decode_ms"] == 200.0


def test_decode_of_no_audio_counts_but_has_no_rtf() -> None:
    m = TurnMetrics(t0=0.0)
    m.add_decode(0.2, 0.4)
    m.add_decode(0.05, 0.0)
    fields = m.fields()
    assert fields["decode_runs"] == 2
    assert fields["last_decode_ms"] == 50.0
    assert fields["rtf"] is None
    assert fields["mean_rtf"] == 0.5


def test_delta_ms() -> None:
    assert delta_ms(None, 1.0) is None
    assert delta_ms(1.0, None) is None
    assert delta_ms(None, None) is None
    assert delta_ms(1.0, 1.25) == 250.0
    assert delta_ms(2.0, 1.5) == -500.0
    assert delta_ms(0.0, 0.00016) == 0.2
