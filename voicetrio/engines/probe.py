"""A probe turn: what one question and its answer cost this machine's engines.

Run once at start-up, after the engines load and before the server says it
is ready: the TTS speaks a question (two, one after the other), the ASR decodes it as a session would
(a partial every half second of speech, then the final), the LLM answers it
and the TTS speaks the answer phrase by phrase. The CPU it took, in this
process and in the engines' own processes (the embedded LLM), and the
seconds of speech it made, are what a talker's turn costs;
:mod:`voicetrio.core.capacity` turns that into talkers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Final

import trio

from voicetrio.core.capacity import TurnCost
from voicetrio.core.phrases import PhraseAggregator
from voicetrio.core.resample import resample
from voicetrio.engines.base import ENGINE_SAMPLE_RATE, AsrEngine, ChatMessage, LlmEngine, TtsEngine

#: Two questions: answers vary in length, and two of them vary less.
PROBE_QUESTIONS: Final = (
    "What is the weather going to be like in London tomorrow morning?",
    "Can you suggest something quick for breakfast?",
)
PARTIAL_EVERY_S: Final = 0.5
#: The answer is cut here: its CPU and its seconds of speech grow together,
#: so a part of it measures the ratio, and start-up stays short.
ANSWER_DELTAS: Final = 40
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far; 0.0 if it is gone.

    Reads /proc (Linux); elsewhere 0.0, so only this process is counted."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def cpu_meter(pids: Callable[[], Iterable[int]]) -> Callable[[], float]:
    """A clock of CPU seconds: this process (all its threads) plus ``pids()``."""

    def now() -> float:
        return time.process_time() + sum(process_cpu_s(pid) for pid in pids())

    return now


async def probe_turn(
    asr: AsrEngine,
    llm: LlmEngine | None,
    tts: TtsEngine,
    *,
    system_prompt: str,
    cpu: Callable[[], float],
) -> TurnCost:
    """What a spoken question and its spoken answer cost, over the probe
    questions; raises the engines' errors. ``llm`` None (lean mode): the
    questions only."""
    start = cpu()
    question_s = answer_s = 0.0
    for text in PROBE_QUESTIONS:
        question = await tts.synthesize(text)
        question_s += question.duration_s
        pcm = resample(question.pcm, question.sample_rate, ENGINE_SAMPLE_RATE)
        step = int(PARTIAL_EVERY_S * ENGINE_SAMPLE_RATE) * 2
        for end in range(step, len(pcm), step):
            await asr.transcribe(pcm[:end], final=False)
        heard = await asr.transcribe(pcm, final=True)
        if llm is not None:
            answer_s += await _answer(llm, tts, system_prompt, heard or text)
    turns = len(PROBE_QUESTIONS)
    return TurnCost(max(1e-3, cpu() - start) / turns, question_s / turns, answer_s / turns)


async def _answer(llm: LlmEngine, tts: TtsEngine, system_prompt: str, question: str) -> float:
    """Seconds of speech of the answer to ``question``, written and spoken."""
    messages: list[ChatMessage] = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question},
    ]
    phrases = PhraseAggregator()
    spoken: list[str] = []
    async with llm.stream(messages) as deltas:
        count = 0
        async for delta in deltas:
            spoken += phrases.push(delta, trio.current_time() * 1000)
            count += 1
            if count == ANSWER_DELTAS:
                break
    spoken += phrases.flush()
    seconds = 0.0
    for phrase in spoken:
        seconds += (await tts.synthesize(phrase)).duration_s
    return seconds


__all__ = ["PROBE_QUESTIONS", "cpu_meter", "probe_turn", "process_cpu_s"]
