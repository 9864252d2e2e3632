"""Voices compared: how well Whisper understands each TTS engine, and how fast it speaks.

Each answer is cut into phrases as a spoken reply is
(:class:`~voicetrio.core.phrases.PhraseAggregator` with the config's phrase
lengths) and synthesized phrase by phrase by the product's engine
(:class:`~voicetrio.engines.tts.espeak.Pyttsx3Tts`, the default, or
:class:`~voicetrio.engines.tts.piper.PiperTts` on the joe voice, once on one
onnxruntime thread and once on its default, one per core). Then the answer's
audio, resampled to 16 kHz, is transcribed back by the product's Whisper
engine on tiny.en, and compared word by word with the text.

Reported per voice: the word error rate (word edits over all the answers'
words, numbers normalized as in ``tests/speech.py``), the real-time factor
(synthesis time over audio duration, all phrases), and the time to first
audio of an answer: the synthesis time of its first phrase, which is what the
TTS adds between the end of the LLM's first phrase and the first audio sent.

The answers are a fixed set of 24 spoken answers to the evaluation's
questions (``bench/answers_questions.json``), or, with ``--answers``, the
answers a model gave in ``bench/answers.py --json`` (those of the model
``--model`` names, leaving out answers with markup, JSON or several lines,
which are no test of a voice). Usage::

    .venv/bin/python -m bench.voices [--voice pyttsx3|piper|piper-1t ...]
        [--answers PATH [--model NAME]] [--limit N] [--json PATH] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.speech import normalize, wer
from voicetrio.config import Config, from_env
from voicetrio.core.phrases import PhraseAggregator
from voicetrio.core.resample import resample
from voicetrio.engines.asr.whisper import WhisperAsr
from voicetrio.engines.base import SpeechAudio, TtsEngine
from voicetrio.engines.models import resolve_model

#: Spoken answers to questions of the evaluation, written as a good model
#: would answer them: facts, numbers, advice, small talk. Numbers above 99
#: are digits, as a model writes them and Whisper transcribes them (the
#: word error count normalizes only 0..99 written out).
ANSWERS: tuple[str, ...] = (
    "William Shakespeare wrote Romeo and Juliet.",
    "The capital of France is Paris.",
    "The capital of Japan is Tokyo.",
    "There are seven days in a week.",
    "Jupiter is the largest planet in our solar system.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The Pacific is the largest ocean on Earth.",
    "Leonardo da Vinci painted the Mona Lisa.",
    "A spider has eight legs.",
    "Plants take in carbon dioxide from the air.",
    "People in Brazil speak Portuguese.",
    "The pyramids of Giza are in Egypt.",
    "Mount Everest is the tallest mountain in the world.",
    "There are seven continents.",
    "Two hours have 120 minutes.",
    "Twelve times twelve is 144.",
    "If you can't sleep, try a warm drink and put your phone away an hour before bed.",
    "I'm doing well, thanks for asking. How about you?",
    "Sure, I can help with that. What would you like to know?",
    "It's a good idea to drink water regularly through the day.",
    "A healthy breakfast could be oatmeal with fruit and a glass of milk.",
    "You're welcome! Have a great evening.",
    "I'm sorry, I didn't catch that. Could you say it again?",
    "Your timer is set for ten minutes, and I'll tell you when it's done.",
)
VOICES = ("pyttsx3", "piper-1t", "piper")
_MARKUP = re.compile(r"[{}*#`|\n]")
ASR_RATE = 16000


@dataclass
class Spoken:
    text: str
    phrases: list[str]
    #: Synthesis seconds of each phrase (wall time around synthesize()).
    synth_s: list[float]
    audio_s: float
    heard: str = ""
    wer: float = 0.0
    words: int = 0


@dataclass
class VoiceReport:
    voice: str
    answers: list[Spoken] = field(default_factory=list)
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()

    def summary(self) -> dict[str, Any]:
        words = sum(a.words for a in self.answers)
        edits = sum(a.wer * a.words for a in self.answers)
        synth = sum(sum(a.synth_s) for a in self.answers)
        audio = sum(a.audio_s for a in self.answers)
        first = sorted(a.synth_s[0] for a in self.answers)
        return {
            "voice": self.voice,
            "answers": len(self.answers),
            "words": words,
            "wer": edits / words if words else None,
            "answers_heard_exactly": sum(a.wer == 0 for a in self.answers),
            "rtf": synth / audio if audio else None,
            "first_audio_median_s": statistics.median(first),
            "first_audio_max_s": first[-1],
            "audio_s": audio,
            "load_before": self.load_before,
            "load_after": self.load_after,
        }


def engine_for(voice: str, config: Config) -> TtsEngine:
    if voice == "pyttsx3":
        from voicetrio.engines.tts.espeak import Pyttsx3Tts

        return Pyttsx3Tts(
            voice=config.tts_voice or None, rate_wpm=config.tts_rate_wpm, volume=config.tts_volume
        )
    from voicetrio.engines.tts.piper import PiperTts

    return PiperTts(volume=config.tts_volume, threads=1 if voice == "piper-1t" else None)


def phrases_of(text: str, config: Config) -> list[str]:
    """``text`` cut as a streamed reply is (all of it arrives at once here)."""
    aggregator = PhraseAggregator(
        max_length=config.tts_max_phrase_length,
        gap_ms=config.tts_phrase_gap_ms,
        first_max_length=config.tts_first_phrase_length,
    )
    return [*aggregator.push(text, 0.0), *aggregator.flush()]


async def speak(
    voice: str, texts: Sequence[str], config: Config
) -> tuple[list[Spoken], list[SpeechAudio]]:
    engine = engine_for(voice, config)
    spoken: list[Spoken] = []
    audios: list[SpeechAudio] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)  # type: ignore[attr-defined]
        for text in texts:
            phrases = phrases_of(text, config)
            synth: list[float] = []
            pcm = b""
            rate = 0
            for phrase in phrases:
                started = time.perf_counter()
                speech = await engine.synthesize(phrase)
                synth.append(time.perf_counter() - started)
                rate = speech.sample_rate
                pcm += speech.pcm
            audio = SpeechAudio(pcm, rate)
            spoken.append(Spoken(text, phrases, synth, audio.duration_s))
            audios.append(audio)
        nursery.cancel_scope.cancel()
    return spoken, audios


async def measure(voice: str, texts: Sequence[str], config: Config, asr: WhisperAsr) -> VoiceReport:
    report = VoiceReport(voice, load_before=os.getloadavg())
    spoken, audios = await speak(voice, texts, config)
    report.load_after = os.getloadavg()
    # Transcribed after all the synthesis, so that the two never share the CPU.
    for answer, audio in zip(spoken, audios, strict=True):
        answer.heard = await asr.transcribe(
            resample(audio.pcm, audio.sample_rate, ASR_RATE), final=True
        )
        answer.wer = wer(answer.text, answer.heard)
        answer.words = len(normalize(answer.text))
    report.answers = spoken
    return report


def answers_from(path: Path, model: str = "") -> list[str]:
    """The answers one model gave in a ``bench/answers.py --json`` file (the
    first model whose GGUF path contains ``model``), without those that are
    not speech: empty, or with markup, JSON or several lines."""
    data = json.loads(path.read_text())
    chosen = next((m for m in data["models"] if model in m.get("path", "")), None)
    if chosen is None:
        raise SystemExit(f"no model matching {model!r} in {path}")
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            answer = node.get("answer")
            if isinstance(answer, str) and answer.strip() and not _MARKUP.search(answer.strip()):
                found.append(answer.strip())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(chosen["items"])
    return list(dict.fromkeys(found))


def print_report(report: VoiceReport, verbose: bool) -> None:
    s = report.summary()
    print(f"\n{report.voice}")
    print(
        f"  word error rate  {s['wer']:.1%} of {s['words']} words "
        f"({s['answers_heard_exactly']}/{s['answers']} answers heard exactly)"
    )
    print(f"  real-time factor {s['rtf']:.3f}  ({s['audio_s']:.1f} s of speech)")
    print(
        f"  first audio      median {s['first_audio_median_s'] * 1000:.0f} ms, "
        f"max {s['first_audio_max_s'] * 1000:.0f} ms (synthesis of an answer's first phrase)"
    )
    print(
        "  load average     before "
        + " ".join(f"{x:.2f}" for x in s["load_before"])
        + "  after "
        + " ".join(f"{x:.2f}" for x in s["load_after"])
    )
    if verbose:
        for a in report.answers:
            if a.wer:
                print(f"    {a.wer:.0%} {a.text!r} -> {a.heard!r}")


async def main(args: argparse.Namespace) -> None:
    config = from_env(os.environ)
    texts = answers_from(Path(args.answers), args.model) if args.answers else list(ANSWERS)
    texts = texts[: args.limit] if args.limit else texts
    asr = WhisperAsr(resolve_model("tiny.en"))
    await asr.load()
    print(f"{len(texts)} answers; Whisper tiny.en; {os.cpu_count()} CPUs")
    reports = []
    for voice in args.voice or VOICES:
        report = await measure(voice, texts, config, asr)
        print_report(report, args.verbose)
        reports.append(report)
    if args.json:
        out = {
            "command": " ".join(sys.argv),
            "voices": [
                {"summary": r.summary(), "answers": [asdict(a) for a in r.answers]} for r in reports
            ],
        }
        await trio.Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--voice", action="append", choices=VOICES, help="default: all")
    parser.add_argument("--answers", help="a bench/answers.py --json file: speak its answers")
    parser.add_argument(
        "--model", default="", help="with --answers: the model whose GGUF path contains this"
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N answers")
    parser.add_argument("--json", help="write every answer, transcript and figure here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each misheard answer")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args())
