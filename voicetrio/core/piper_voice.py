"""A Piper voice without Piper, sans-IO: its config read, text cut into
clauses, espeak-ng's IPA turned into the phoneme ids the voice was trained on.

A Piper voice is a VITS model (an .onnx file) and a JSON config beside it.
The model takes a sequence of integer ids, one per phoneme with a padding id
after each, framed by a begin and an end marker; the config's
``phoneme_id_map`` gives each phoneme's ids (``^`` begin, ``$`` end, ``_``
padding). A phoneme is one Unicode code point of espeak-ng's IPA after
canonical decomposition (NFD), so a diacritic such as a nasal tilde is a
phoneme of its own. Besides phonemes the voices were trained with the clause
punctuation espeak-ng reports (``, ; : . ? !``) appended to each clause, a
space after the non-final ones (``, ; :``), and one utterance per sentence.

espeak-ng's command-line program gives phonemes but drops the punctuation,
so the punctuation comes from here: :func:`clauses` cuts the text at
punctuation followed by whitespace, each clause is phonemized on its own
(by the caller, :mod:`voicetrio.engines.tts.piper`), and :func:`sentences`
puts clauses and punctuation back together as the voice expects.

This module reads no files and starts no programs, so the encoding is tested
on exact ids.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

BOS: Final = "^"
EOS: Final = "$"
PAD: Final = "_"
#: Punctuation that ends a sentence: the clause after it is a new utterance.
SENTENCE_ENDS: Final = frozenset(".?!")
#: Punctuation that ends a clause within a sentence; a space follows it.
CLAUSE_ENDS: Final = frozenset(",;:")
#: The phoneme separator espeak-ng writes when asked ``--sep=z``: zero-width
#: non-joiner, in neither its IPA nor its mnemonics.
SEPARATOR: Final = "\u200c"
#: Sample rates a voice may declare (Piper's are 16000 and 22050).
_RATES: Final = range(8000, 48001)

# A run of clause punctuation, optionally closed by quotes or brackets, then
# whitespace or the end: "3.5", "3,000" and "12:30" are not cut.
_CLAUSE_END = re.compile(r"([.,;:!?]+)[\"'\u2019\u201d)\]]*(?=\s|$)")
# espeak-ng marks words it reads in another language's rules with the
# language's name in brackets, "(fr)"; they are not phonemes.
_LANGUAGE_FLAG = re.compile(r"\([^)]*\)")
# Tie marks (zero-width joiner, combining double inverted breve), which
# espeak-ng writes in some modes: the voices were trained without them.
_TIES: Final = str.maketrans("", "", "\u200d\u0361")


class VoiceConfigError(ValueError):
    """A Piper voice config that this engine cannot use; says which field."""


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """What synthesis needs from a voice's .json: its rate, its espeak-ng
    voice, its default scales and its phoneme ids."""

    sample_rate: int
    espeak_voice: str
    #: Sampling noise of the generator (0 is deterministic).
    noise_scale: float
    #: Duration multiplier (above 1 is slower).
    length_scale: float
    #: Sampling noise of the phoneme durations.
    noise_w: float
    num_speakers: int
    phoneme_id_map: Mapping[str, tuple[int, ...]]

    @classmethod
    def from_json(cls, data: object) -> VoiceConfig:
        """The config of a parsed voice .json; VoiceConfigError on a field
        missing or of the wrong kind."""
        if not isinstance(data, dict):
            raise VoiceConfigError("a voice config must be a JSON object")
        phoneme_type = data.get("phoneme_type", "espeak")
        if phoneme_type != "espeak":
            raise VoiceConfigError(
                f"phoneme_type {phoneme_type!r} is not supported (only espeak voices are)"
            )
        rate = _field(data, "audio", "sample_rate")
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in _RATES:
            raise VoiceConfigError(f"audio.sample_rate must be 8000..48000 Hz, got {rate!r}")
        voice = _field(data, "espeak", "voice")
        if not isinstance(voice, str) or not re.fullmatch(r"[A-Za-z0-9_+\-]{1,40}", voice):
            raise VoiceConfigError(f"espeak.voice must be an espeak-ng voice name, got {voice!r}")
        speakers = data.get("num_speakers", 1)
        if isinstance(speakers, bool) or not isinstance(speakers, int) or speakers < 1:
            raise VoiceConfigError(f"num_speakers must be a positive integer, got {speakers!r}")
        return cls(
            sample_rate=rate,
            espeak_voice=voice,
            noise_scale=_scale(data, "noise_scale", 0.667),
            length_scale=_scale(data, "length_scale", 1.0),
            noise_w=_scale(data, "noise_w", 0.8),
            num_speakers=speakers,
            phoneme_id_map=_id_map(data.get("phoneme_id_map")),
        )


@dataclass(frozen=True, slots=True)
class Clause:
    """A piece of text to phonemize, and the punctuation that ended it ("" if none)."""

    text: str
    end: str

    @property
    def ends_sentence(self) -> bool:
        return self.end in SENTENCE_ENDS


def clauses(text: str) -> list[Clause]:
    """``text`` cut after each run of clause punctuation followed by
    whitespace, except a full stop before a lowercase word; the punctuation
    stays in the clause's text (espeak-ng reads "Dr." as "doctor") and is
    named by ``end``. Blank clauses are dropped."""
    out: list[Clause] = []
    start = 0
    for match in _CLAUSE_END.finditer(text):
        if _abbreviation(match, text):
            continue
        piece = text[start : match.end()].strip()
        start = match.end()
        if piece:
            out.append(Clause(piece, _terminator(match.group(1))))
    rest = text[start:].strip()
    if rest:
        out.append(Clause(rest, ""))
    return out


def clean_ipa(ipa: str, mnemonics: str = "") -> str:
    """One clause's phonemes as the voice knows them, from espeak-ng's IPA
    (``--ipa --sep=z``: phonemes separated by :data:`SEPARATOR`) and, to put
    back the glides the IPA leaves out, the same clause's mnemonics
    (``-x --sep=z``). Language flags and tie marks are dropped, lines joined
    by a space (espeak-ng cuts a long clause in several), and the result
    decomposed (NFD)."""
    ipa_words = _LANGUAGE_FLAG.sub("", ipa).translate(_TIES).split()
    mnemonic_words = _LANGUAGE_FLAG.sub("", mnemonics).split()
    if len(mnemonic_words) != len(ipa_words):
        mnemonic_words = [""] * len(ipa_words)
    words = (_word(i, m) for i, m in zip(ipa_words, mnemonic_words, strict=True))
    return unicodedata.normalize("NFD", " ".join(word for word in words if word))


def _word(ipa: str, mnemonics: str) -> str:
    # The program writes one phoneme as nothing in IPA: ";" in its mnemonics,
    # "ʲ" in the IPA of espeak-ng's library call (the phonemizer Piper's
    # voices were trained with): the glide from an i-like vowel into the
    # next vowel (in "the end", "Romeo": mnemonics "DI2; 'End", "r'oUmI2;,oU").
    # The two outputs list the same phonemes, so they line up one for one.
    # Other phonemes without IPA (pauses) are left out, as the library call
    # does.
    phonemes = ipa.split(SEPARATOR)
    marks = mnemonics.split(SEPARATOR)
    if len(marks) != len(phonemes):
        marks = [""] * len(phonemes)
    return "".join(
        phoneme or ("ʲ" if mark == ";" else "")
        for phoneme, mark in zip(phonemes, marks, strict=True)
    )


def sentences(phonemized: Sequence[tuple[str, Clause]]) -> list[str]:
    """Each sentence's phonemes, its clauses' punctuation included:
    ``phonemized`` pairs each clause with its cleaned IPA. A sentence whose
    clauses had no phonemes at all ("...") is left out."""
    out: list[str] = []
    current = ""
    spoken = False
    for ipa, clause in phonemized:
        current += ipa + clause.end
        spoken = spoken or bool(ipa)
        if clause.end in CLAUSE_ENDS:
            current += " "
        if clause.ends_sentence:
            if spoken:
                out.append(current.strip(" "))
            current, spoken = "", False
    if spoken:
        out.append(current.strip(" "))
    return out


def phoneme_ids(phonemes: str, id_map: Mapping[str, tuple[int, ...]]) -> tuple[list[int], str]:
    """The model's input for one sentence: begin, padding, then each known
    phoneme followed by padding, then end. Returns the ids and the phonemes
    the voice does not know (skipped, as Piper does: espeak-ng may emit a
    symbol a voice never saw in training)."""
    pad = id_map[PAD]
    ids: list[int] = [*id_map[BOS], *pad]
    unknown: list[str] = []
    for phoneme in unicodedata.normalize("NFD", phonemes):
        known = id_map.get(phoneme)
        if known is None:
            unknown.append(phoneme)
            continue
        ids.extend(known)
        ids.extend(pad)
    ids.extend(id_map[EOS])
    return ids, "".join(unknown)


def _abbreviation(match: re.Match[str], text: str) -> bool:
    # A full stop before a lowercase word ends an abbreviation, not a
    # sentence ("e.g. here", "St. near"): cut there, espeak-ng would read
    # "e.g." alone as letters, and a sentence break would be heard.
    if match.group(1) != ".":
        return False
    after = text[match.end() :].lstrip()
    return bool(after) and after[0].islower()


def _terminator(run: str) -> str:
    # "?!" asks, "..." stops, ",." stops: the strongest mark of the run.
    for mark in "?!.":
        if mark in run:
            return mark
    return run[0]


def _field(data: Mapping[str, object], section: str, key: str) -> object:
    part = data.get(section)
    if not isinstance(part, dict) or key not in part:
        raise VoiceConfigError(f"the voice config has no {section}.{key}")
    return part[key]


def _scale(data: Mapping[str, object], key: str, default: float) -> float:
    inference = data.get("inference", {})
    if not isinstance(inference, dict):
        raise VoiceConfigError("inference must be a JSON object")
    value = inference.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 10
    ):
        raise VoiceConfigError(f"inference.{key} must be a number in 0..10, got {value!r}")
    return float(value)


def _id_map(raw: object) -> dict[str, tuple[int, ...]]:
    if not isinstance(raw, dict) or not raw:
        raise VoiceConfigError("phoneme_id_map must be a non-empty JSON object")
    out: dict[str, tuple[int, ...]] = {}
    for phoneme, ids in raw.items():
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
        ):
            raise VoiceConfigError(
                f"phoneme_id_map[{phoneme!r}] must be a list of ids >= 0, got {ids!r}"
            )
        # Keys stay as written: a precomposed key ("ç") is never looked up,
        # since the phonemes are decomposed, as in Piper.
        out[phoneme] = tuple(ids)
    for marker in (BOS, EOS, PAD):
        if marker not in out:
            raise VoiceConfigError(f"phoneme_id_map has no {marker!r} (begin, end and padding)")
    return out


__all__ = [
    "BOS",
    "CLAUSE_ENDS",
    "EOS",
    "PAD",
    "SENTENCE_ENDS",
    "SEPARATOR",
    "Clause",
    "VoiceConfig",
    "VoiceConfigError",
    "clauses",
    "clean_ipa",
    "phoneme_ids",
    "sentences",
]
