"""Whether the user's speech during a reply interrupts it: barge-in, sans-IO.

A listener does not stop talking at every sound: a cough, an "uh-huh" or a
"yeah" while someone speaks says "go on", not "stop". And without echo
cancellation (a loudspeaker beside an open microphone) the assistant hears
itself: the microphone's words are the reply's own. So speech that overlaps
a reply interrupts it only when it is a real turn:

1. **Stop words** interrupt at once, however short: "stop", "wait", "no",
   "cancel", "hold on", ... (:data:`STOP_WORDS`, :data:`STOP_PHRASES`).
2. **Enough speech and enough words**: at least ``min_speech_ms`` of speech
   since its onset *and* at least ``min_words`` counted words.
3. Anything else does not interrupt (yet). Counted words exclude
   backchannels and fillers (:data:`BACKCHANNELS`, :data:`BACKCHANNEL_PHRASES`)
   and *echo*: the words that match, in order, what the assistant said while
   the user spoke (:func:`echo_mask`, on the reply text given by
   :func:`recent_reply`). A stop word that is echo does not count either; a
   real interruption over the echo still does, because its words (or its
   stop word) are not in the reply.

:func:`decide` is one pure call per update (each partial transcript, and the
utterance's end): ``Interrupt``, ``Listen`` (not yet: the utterance goes on)
or, once the utterance has ended without interrupting, ``Ignore`` with the
reason. Word counts are compared after :func:`words` normalizes both sides
alike: lowercase, no punctuation or apostrophes, "uh-huh" as "uhhuh", number
words as digits (so a reply's "7" matches a heard "seven"), and Whisper's
bracketed notes ("[MUSIC]", "(coughs)") dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Final, Literal

#: Single words that mean "stop talking": an interruption at once.
STOP_WORDS: Final = frozenset(
    {"stop", "wait", "no", "nope", "cancel", "quiet", "enough", "pause", "halt", "nevermind"}
)
#: Phrases that mean the same (as normalized word sequences).
STOP_PHRASES: Final = (
    ("hold", "on"),
    ("hang", "on"),
    ("shut", "up"),
    ("never", "mind"),
    ("one", "moment"),
    ("one", "second"),
    ("excuse", "me"),
    ("be", "quiet"),
)
#: Listener tokens and fillers: they say "go on", never "stop". "uhuh" and
#: "mmmm" are how Whisper tiny.en writes a spoken "uh-huh" and "mm-hmm"
#: ("Uh-uh.", "Mm-mm.", bench/turns.py); a refusal still has "no".
BACKCHANNELS: Final = frozenset(
    {
        "uhhuh", "uhuh", "mmhmm", "mmmm", "mhm", "mhmm", "mmhm", "mm", "mmm", "hmm", "hm", "uh", "um",
        "umm", "uhm", "er", "erm", "ah", "oh", "aha", "ahh", "ohh", "yeah", "yes", "yep",
        "yup", "ya", "ok", "okay", "kay", "right", "sure", "alright", "cool", "nice",
        "great", "wow", "really", "indeed", "exactly", "totally", "true", "good", "fine",
        "gotcha", "huh",
    }
)  # fmt: skip
#: Multi-word listener tokens.
BACKCHANNEL_PHRASES: Final = (
    ("i", "see"),
    ("got", "it"),
    ("all", "right"),
    ("uh", "huh"),
    ("mm", "hmm"),
    ("thats", "right"),
    ("of", "course"),
    ("makes", "sense"),
)


@dataclass(frozen=True, slots=True)
class BargeInSettings:
    #: Speech since the onset before words can interrupt (ms of audio): a
    #: cough or a click is over before this.
    min_speech_ms: int = 500
    #: Counted words (not backchannels, not echo) that interrupt: one word
    #: over a reply is more often a reaction ("Paris?") than a new turn.
    #: 0: any speech of ``min_speech_ms`` interrupts (no echo tolerance then).
    min_words: int = 2
    #: Reply text counts as possible echo from this long before the user's
    #: speech began: the server's estimate of when the client plays each
    #: phrase runs early by the client's buffering.
    echo_margin_ms: int = 1000
    stop_words: frozenset[str] = STOP_WORDS
    stop_phrases: tuple[tuple[str, ...], ...] = STOP_PHRASES

    def __post_init__(self) -> None:
        for name in ("min_speech_ms", "min_words", "echo_margin_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Cancel the reply now."""

    reason: Literal["stop_word", "words", "speech"]


@dataclass(frozen=True, slots=True)
class Listen:
    """Not (yet): the utterance goes on; decide again on its next words or its end."""


IgnoreReason = Literal["noise", "echo", "backchannel", "short"]


@dataclass(frozen=True, slots=True)
class Ignore:
    """The utterance ended without interrupting. ``noise``: no words;
    ``echo``: words of the reply's own, maybe with a few others (``counted``:
    a recognizer mishears some echo, so they are taken for echo too);
    ``backchannel``: only listener tokens; ``short``: too few counted words
    (or too short) and no echo: a real reaction, which the caller may answer
    once the reply is over. The others it drops."""

    reason: IgnoreReason
    counted: tuple[str, ...] = ()


BargeInDecision = Interrupt | Listen | Ignore


@dataclass(frozen=True, slots=True)
class Heard:
    """What the user said over the reply, as far as it is known."""

    #: Speech since the utterance's onset (ms of audio).
    speech_ms: int
    #: The transcript so far (the latest partial, or the final).
    text: str
    #: What the assistant said meanwhile (:func:`recent_reply`).
    reply_text: str = ""
    #: The utterance is over: ``text`` is its final.
    ended: bool = False


# ------------------------------------------------------------------ words

_NOTES: Final = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")
_APOSTROPHES: Final = re.compile(r"['`\u2019]")
_INNER_DASH: Final = re.compile(r"(?<=\w)-(?=\w)")
_NOT_WORD: Final = re.compile(r"[^\w]+")
_UNITS: Final = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
)  # fmt: skip
_TENS: Final = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBERS: Final = {w: n for n, w in enumerate(_UNITS)} | {
    w: 20 + 10 * n for n, w in enumerate(_TENS)
}


def words(text: str) -> list[str]:
    """The words of ``text``, normalized so that a reply and what was heard of
    it compare: see the module docstring. Number words become digits,
    "twenty five" as "25"."""
    text = _NOTES.sub(" ", text.lower())
    text = _INNER_DASH.sub("", _APOSTROPHES.sub("", text))
    out: list[str] = []
    for word in _NOT_WORD.sub(" ", text).split():
        value = _NUMBERS.get(word)
        if value is None:
            out.append(word)
            continue
        if 0 < value < 10 and out and out[-1].isdigit():
            tens = int(out[-1])
            if 20 <= tens < 100 and tens % 10 == 0:
                out[-1] = str(tens + value)
                continue
        out.append(str(value))
    return out


def _same(a: str, b: str) -> bool:
    """Whether two normalized words are one word heard two ways: equal, or
    (four letters and more) nearly so, as a recognizer misspells a name."""
    if a == b:
        return True
    if min(len(a), len(b)) < 4:
        return False
    return SequenceMatcher(None, a, b).ratio() >= 0.8


def echo_mask(heard: Sequence[str], reply: Sequence[str]) -> list[bool]:
    """For each heard word, whether it is echo: part of the longest in-order
    match (a longest common subsequence, words compared by :func:`_same`)
    between what was heard and the reply text. A recognizer hears an echo as
    a run of the reply in its order; a word the user adds does not fit it."""
    n, m = len(heard), len(reply)
    mask = [False] * n
    if not n or not m:
        return mask
    # lengths[i][j]: the longest match of heard[i:] and reply[j:].
    lengths = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if _same(heard[i], reply[j]):
                lengths[i][j] = lengths[i + 1][j + 1] + 1
            else:
                lengths[i][j] = max(lengths[i + 1][j], lengths[i][j + 1])
    i = j = 0
    while i < n and j < m:
        if _same(heard[i], reply[j]) and lengths[i][j] == lengths[i + 1][j + 1] + 1:
            mask[i] = True
            i += 1
            j += 1
        elif lengths[i + 1][j] >= lengths[i][j + 1]:
            i += 1
        else:
            j += 1
    return mask


def _phrase_mask(tokens: Sequence[str], phrases: Iterable[tuple[str, ...]]) -> list[bool]:
    """Which tokens belong to one of ``phrases`` (consecutive, in order)."""
    mask = [False] * len(tokens)
    for phrase in phrases:
        size = len(phrase)
        for start in range(len(tokens) - size + 1):
            if tuple(tokens[start : start + size]) == phrase:
                for k in range(start, start + size):
                    mask[k] = True
    return mask


def _has_stop(tokens: Sequence[str], settings: BargeInSettings) -> bool:
    # Normalized like the heard words, so "one moment" is found as "1 moment".
    stop = {normal for word in settings.stop_words for normal in words(word)}
    if any(token in stop for token in tokens):
        return True
    phrases = [tuple(words(" ".join(phrase))) for phrase in settings.stop_phrases]
    return any(_phrase_mask(tokens, phrases))


def counted_words(heard: Sequence[str], reply: Sequence[str]) -> tuple[list[str], list[str]]:
    """The heard words that are not echo, and of those the ones that count
    (not backchannels or fillers)."""
    echo = echo_mask(heard, reply)
    novel = [word for word, is_echo in zip(heard, echo, strict=True) if not is_echo]
    listener = _phrase_mask(novel, BACKCHANNEL_PHRASES)
    counted = [
        word
        for word, in_phrase in zip(novel, listener, strict=True)
        if not in_phrase and word not in BACKCHANNELS
    ]
    return novel, counted


# ------------------------------------------------------------------ the rule


def decide(settings: BargeInSettings, heard: Heard) -> BargeInDecision:
    """Interrupt the reply, listen on, or (the utterance over) ignore it."""
    if heard.speech_ms < 0:
        raise ValueError(f"speech_ms must not be negative, got {heard.speech_ms}")
    said = words(heard.text)
    novel, counted = counted_words(said, words(heard.reply_text))
    # Stop phrases are matched in the novel words only, so "hold on" is found
    # when echo words came between "hold" and "on" on the microphone.
    if _has_stop(novel, settings):
        return Interrupt("stop_word")
    long_enough = heard.speech_ms >= settings.min_speech_ms
    if long_enough and settings.min_words == 0:
        return Interrupt("speech")
    if long_enough and len(counted) >= settings.min_words:
        return Interrupt("words")
    if not heard.ended:
        return Listen()
    if not said:
        return Ignore("noise")
    if len(novel) < len(said):
        return Ignore("echo", tuple(counted))
    if counted:
        return Ignore("short", tuple(counted))
    return Ignore("backchannel")


# ------------------------------------------------------- what the reply said


@dataclass(frozen=True, slots=True)
class SpokenPhrase:
    """A phrase of the reply and when the client plays it (seconds, any clock)."""

    text: str
    start_s: float
    end_s: float


def recent_reply(phrases: Iterable[SpokenPhrase], since_s: float, until_s: float) -> str:
    """The text of the phrases played (by estimate) at any time in
    ``[since_s, until_s]``, in order: what the microphone may have picked up
    of the reply while the user spoke. The caller passes the user's speech
    onset less ``echo_margin_ms`` as ``since_s`` and now as ``until_s``."""
    return " ".join(
        phrase.text for phrase in phrases if phrase.start_s <= until_s and phrase.end_s >= since_s
    )


__all__ = [
    "BACKCHANNELS",
    "BACKCHANNEL_PHRASES",
    "STOP_PHRASES",
    "STOP_WORDS",
    "BargeInDecision",
    "BargeInSettings",
    "Heard",
    "Ignore",
    "IgnoreReason",
    "Interrupt",
    "Listen",
    "SpokenPhrase",
    "counted_words",
    "decide",
    "echo_mask",
    "recent_reply",
    "words",
]
