"""Capacity: how many people can talk to one server on the real engines.

N talkers, each a live microphone that never stops streaming (16-bit PCM,
``--frame-ms`` frames, real-time pace), ask spoken questions (espeak-ng,
different ones per talker and turn) turn after turn: the question, then
silence until the turn's ``metrics`` and the reply has been heard (each
``tts_chunk`` played in order from its arrival, for as long as its audio
lasts), then a natural pause (0.5-2.0 s, seeded), then the next question. Talkers arrive spread over
``--spread-s``. Each N gets a fresh ``voicetrio serve`` on the default engines
(Whisper tiny.en, embedded SmolLM2, pyttsx3) in its own process, warmed up by
one question first; N steps from ``--start`` by ``--step`` up to ``--max``
and stops at the first N that misses a target (``--past-miss K`` runs K more).

Per N, over the admitted talkers only: end of speech to final transcript and
to first audio (the first ``tts_chunk``), and speech onset to first text
(the first ``partial_transcript``, or the final if it came first), p50 and
p95; error events by code; turns unanswered. Refused connections
(``SERVER_BUSY`` and/or close 1013, at connect) are counted apart, not
retried, and are not failed talkers. Clock: this process's monotonic clock.
A microphone sends a frame when it is full, so the instant speech starts
(ends) is the moment the frame holding it was handed to the socket, less the
audio in that frame after that point; latencies therefore include the
framing, as a user hears it (up to one frame more than counting from the
frame's start, as bench.voice_to_voice does).

Targets (a step meets them all): first audio p50 <= 1.2 s and p95 <= 2.5 s,
first text p95 <= 1.5 s, no error event (``LLM_TIMEOUT`` or any other), no
dropped connection, every admitted talker answered on every turn, every
connection not admitted refused with SERVER_BUSY/1013 within
``--refuse-within-s``, and when stepping, no refusal at all. The capacity
printed is the largest N met before the first miss.

``--sessions N`` runs N talkers once, no stepping: with
``--max-sessions M`` (``STREAM_MAX_SESSIONS``) below N, it checks that the M
admitted still meet the targets and the others are refused at once.
Usage::

    .venv/bin/python -m bench.capacity [--max 12] [--turns 3]
    .venv/bin/python -m bench.capacity --sessions 8 --max-sessions 4
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import os
import random
import resource
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from bench.common import RATE, server_process, speech_bounds, trim
from bench.load import cpu_seconds
from bench.rawws import Closed, RawClient
from bench.soak import server_pids
from tests.speech import say
from voicetrio.core.audio import silence

#: Short everyday questions; talker i, turn j asks QUESTIONS[(i * 5 + j) % 16].
QUESTIONS = (
    "What is the capital of France?",
    "How many minutes are in two hours?",
    "What time does the sun usually set in summer?",
    "Can you suggest something quick for breakfast?",
    "How do I boil an egg?",
    "What is a good name for a black cat?",
    "How many days are there in a week?",
    "Why do leaves change color in the fall?",
    "What should I wear when it rains?",
    "How far can a person walk in one hour?",
    "What is the tallest animal in the world?",
    "Can you tell me a fun fact about the ocean?",
    "How do I keep my plants alive?",
    "What is the best way to learn a new word?",
    "Which fruit has the most vitamin C?",
    "How long should I sleep every night?",
)

TARGET_AUDIO_P50_S = 1.2
TARGET_AUDIO_P95_S = 2.5
TARGET_PARTIAL_P95_S = 1.5

#: The reply speech a listener waits for is capped at this (a runaway reply
#: must not hold the bench).
LISTEN_CAP_S = 60.0

#: Other processes' CPU is sampled over windows of this many seconds.
OTHERS_WINDOW_S = 3.0


@dataclass(frozen=True)
class Question:
    """One spoken question cut into microphone frames.

    ``onset_frame``/``end_frame`` hold the first/last speech sample; the
    ``*_tail_s`` are the audio in that frame after the onset/end."""

    text: str
    frames: tuple[bytes, ...]
    onset_frame: int
    onset_tail_s: float
    end_frame: int
    end_tail_s: float


def question(text: str, frame_ms: int) -> Question:
    step = RATE * frame_ms // 1000  # samples per frame
    pcm = trim(say(text))
    pcm += b"\0\0" * ((-(len(pcm) // 2)) % step)  # silence to a whole frame
    start_s, end_s = speech_bounds(pcm)
    onset, end = round(start_s * RATE), round(end_s * RATE)
    onset_frame, end_frame = onset // step, (end - 1) // step
    frames = tuple(pcm[i : i + 2 * step] for i in range(0, len(pcm), 2 * step))
    return Question(
        text,
        frames,
        onset_frame,
        ((onset_frame + 1) * step - onset) / RATE,
        end_frame,
        ((end_frame + 1) * step - end) / RATE,
    )


@dataclass
class Utterance:
    question: Question
    index: int = 0  # next frame to send
    onset_at: float | None = None
    end_at: float | None = None


class Microphone:
    """Streams a frame every ``frame_ms`` (when it is full), forever: the
    current question's frames, else silence."""

    def __init__(self, client: RawClient, frame_ms: int) -> None:
        self.client = client
        self.frame_s = frame_ms / 1000
        self.quiet = silence(frame_ms, RATE)
        self.pending: Utterance | None = None
        self.current: Utterance | None = None
        self.late_max_s = 0.0

    def say(self, item: Question) -> Utterance:
        utterance = Utterance(item)
        self.pending = utterance
        return utterance

    async def run(self) -> None:
        t0 = trio.current_time()
        k = 0
        while True:
            due = t0 + (k + 1) * self.frame_s
            await trio.sleep_until(due)
            if self.current is None and self.pending is not None:
                self.current, self.pending = self.pending, None
            utterance = self.current
            now = trio.current_time()
            self.late_max_s = max(self.late_max_s, now - due)
            if utterance is None:
                frame = self.quiet
            else:
                item = utterance.question
                i = utterance.index
                frame = item.frames[i]
                if i == item.onset_frame:
                    utterance.onset_at = now - item.onset_tail_s
                if i == item.end_frame:
                    utterance.end_at = now - item.end_tail_s
                utterance.index += 1
                if utterance.index == len(item.frames):
                    self.current = None
            await self.client.send_audio(frame)
            k += 1


@dataclass
class TurnResult:
    final_s: float | None = None  # end of speech -> final_transcript
    audio_s: float | None = None  # end of speech -> first tts_chunk
    first_text_s: float | None = None  # onset -> first partial (or final)
    final_first: bool = False  # no partial before the final
    finals: int = 0
    answered: bool = False  # a final, speech back, no error, metrics
    listen_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    text: str = ""


@dataclass
class TalkerResult:
    admitted: bool = False
    refused: bool = False
    refusal_s: float | None = None  # connect -> refusal seen
    refusal_close: int | None = None
    busy_event: bool = False  # the refusal said SERVER_BUSY
    failure: str | None = None  # connect failed / connection dropped / client timeout
    turns: list[TurnResult] = field(default_factory=list)
    infos: Counter[str] = field(default_factory=Counter)
    mic_late_max_s: float = 0.0


@dataclass(frozen=True)
class Options:
    turns: int
    frame_ms: int
    audio_format: str
    spread_s: float
    turn_timeout_s: float
    connect_timeout_s: float
    refuse_within_s: float
    seed: int
    verbose: bool = False


def wav_seconds(audio_b64: str) -> float:
    """Duration of a base64 WAV (RIFF, PCM, the 44-byte header Python's wave writes)."""
    head = base64.b64decode(audio_b64[:64])
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0.0
    byte_rate = struct.unpack_from("<I", head, 28)[0]
    size = len(audio_b64) // 4 * 3 - audio_b64[-2:].count("=") - 44
    return max(0, size) / byte_rate if byte_rate else 0.0


async def turn(
    client: RawClient, mic: Microphone, item: Question, options: Options, out: TalkerResult
) -> TurnResult:
    """Ask ``item``; read events until the turn's metrics (or the timeout)."""
    result = TurnResult()
    utterance = mic.say(item)
    first_text_at = final_at = audio_at = None
    play_end: float | None = None
    speech_s = len(item.frames) * mic.frame_s
    with trio.move_on_after(speech_s + options.turn_timeout_s) as scope:
        while True:
            event = await client.receive()
            if isinstance(event, bytes):  # the pcm16 frame its tts_chunk announced
                continue
            now = trio.current_time()
            kind = event.get("type")
            if kind == "partial_transcript":
                if first_text_at is None and utterance.onset_at is not None:
                    first_text_at = now
            elif kind == "final_transcript":
                if first_text_at is None:
                    first_text_at = now
                    result.final_first = True
                result.finals += 1
                result.text = str(event.get("text", ""))
                # A question split in two: the reply belongs to the last final.
                final_at, audio_at, play_end = now, None, None
            elif kind == "tts_chunk":
                if event.get("format") == "pcm16":
                    rate = int(event.get("sample_rate") or RATE)
                    duration = int(event.get("bytes") or 0) / 2 / rate
                else:
                    duration = wav_seconds(str(event.get("audio_b64", "")))
                audio_at = now if audio_at is None else audio_at
                play_end = max(play_end or now, now) + duration
            elif kind == "error":
                result.errors.append(str(event.get("code")))
                if event.get("recoverable") is False:  # the server closes next
                    out.turns.append(result)
                    raise Closed(-1)
            elif kind == "info":
                out.infos[str(event.get("event") or event.get("code"))] += 1
            elif kind == "metrics" and final_at is not None:
                break
    if scope.cancelled_caught:
        result.errors.append("CLIENT_TIMEOUT")
    onset, end = utterance.onset_at, utterance.end_at
    if end is not None:
        result.final_s = None if final_at is None else final_at - end
        result.audio_s = None if audio_at is None else audio_at - end
    if onset is not None and first_text_at is not None:
        result.first_text_s = first_text_at - onset
    result.answered = final_at is not None and audio_at is not None and not result.errors
    if play_end is not None:
        result.listen_s = min(LISTEN_CAP_S, max(0.0, play_end - trio.current_time()))
    return result


async def talker(
    url: str, index: int, plan: list[Question], options: Options, out: TalkerResult
) -> None:
    rng = random.Random(f"{options.seed}-{index}")
    connect_at = trio.current_time()
    try:
        with trio.fail_after(options.connect_timeout_s):
            client = await RawClient.connect(url)
    except (OSError, ConnectionError, Closed, trio.TooSlowError) as exc:
        out.failure = f"connect: {type(exc).__name__}"
        return
    try:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            message = {"type": "start", "sample_rate": RATE, "audio_format": options.audio_format}
            await client.send_json(message)
        try:
            with trio.fail_after(options.connect_timeout_s):
                hello = await client.receive()
        except Closed as closed:
            if closed.code == 1013:
                out.refused, out.refusal_s = True, trio.current_time() - connect_at
                out.refusal_close = 1013
            else:
                out.failure = f"closed {closed.code} before the hello"
            return
        except (trio.TooSlowError, trio.BrokenResourceError) as exc:
            out.failure = f"hello: {type(exc).__name__}"
            return
        if isinstance(hello, dict) and hello.get("code") == "SERVER_BUSY":
            out.refused, out.refusal_s = True, trio.current_time() - connect_at
            out.busy_event = True
            with trio.move_on_after(2), contextlib.suppress(trio.BrokenResourceError):
                try:
                    while True:
                        await client.receive()
                except Closed as closed:
                    out.refusal_close = closed.code
            return
        if not isinstance(hello, dict) or hello.get("type") != "protocol":
            out.failure = f"no hello: {hello if isinstance(hello, dict) else 'binary'}"
            return
        out.admitted = True
        mic = Microphone(client, options.frame_ms)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mic.run)
                for j, item in enumerate(plan):
                    result = await turn(client, mic, item, options, out)
                    out.turns.append(result)
                    if options.verbose:
                        print(
                            f"      talker {index} turn {j + 1}: {trace(item, result)}", flush=True
                        )
                    if "CLIENT_TIMEOUT" in result.errors:
                        out.failure = "client timeout (turn abandoned)"
                        break
                    # Listen to the reply (the microphone still on), then a
                    # natural pause before the next question.
                    pause = rng.uniform(0.5, 2.0) if j + 1 < len(plan) else 0.0
                    await trio.sleep(result.listen_s + pause)
                nursery.cancel_scope.cancel()
        except* Closed as group:
            codes = [e.code for e in group.exceptions if isinstance(e, Closed)]
            out.failure = f"connection dropped (close {codes[0]})"
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            out.failure = "connection broken"
        out.mic_late_max_s = mic.late_max_s
    finally:
        with trio.move_on_after(2):
            await client.close()


def trace(item: Question, result: TurnResult) -> str:
    return (
        f"final {fmt(result.final_s)} audio {fmt(result.audio_s)} partial "
        f"{fmt(result.first_text_s)} listen {result.listen_s:4.1f} s "
        f"errors {result.errors or '-'} {item.text!r} -> {result.text!r}"
    )


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def pcent(share: float | None) -> str:
    return "   -" if share is None else f"{share * 100:4.0f}"


def fmt(value: float | None) -> str:
    return "   -" if value is None else f"{value:4.2f}"


@dataclass
class Step:
    n: int
    talkers: list[TalkerResult]
    stepping: bool
    refuse_within_s: float
    timed_out: bool = False
    load_start: float = 0.0
    load_end: float = 0.0
    server_cpu: float | None = None  # share of one core over the step
    other_cpu: float | None = None  # every other process on the machine, same unit
    other_max: float | None = None  # the same over its busiest OTHERS_WINDOW_S
    server_error: str | None = None
    health: dict[str, Any] = field(default_factory=dict)
    own_cpu: float = 0.0
    wall_s: float = 0.0

    @property
    def admitted(self) -> list[TalkerResult]:
        return [t for t in self.talkers if t.admitted]

    @property
    def turns(self) -> list[TurnResult]:
        return [turn for t in self.admitted for turn in t.turns]

    def values(self, name: str) -> list[float]:
        return [v for turn in self.turns if (v := getattr(turn, name)) is not None]

    @property
    def errors(self) -> Counter[str]:
        return Counter(code for turn in self.turns for code in turn.errors)

    def misses(self) -> list[str]:
        why: list[str] = []
        audio, text = self.values("audio_s"), self.values("first_text_s")
        p50, p95, tp95 = pct(audio, 0.5), pct(audio, 0.95), pct(text, 0.95)
        if not self.admitted:
            why.append("no talker admitted")
        if p50 is None or p50 > TARGET_AUDIO_P50_S:
            why.append(f"first audio p50 {fmt(p50)} s > {TARGET_AUDIO_P50_S}")
        if p95 is None or p95 > TARGET_AUDIO_P95_S:
            why.append(f"first audio p95 {fmt(p95)} s > {TARGET_AUDIO_P95_S}")
        if tp95 is None or tp95 > TARGET_PARTIAL_P95_S:
            why.append(f"first partial p95 {fmt(tp95)} s > {TARGET_PARTIAL_P95_S}")
        if self.errors:
            why.append("errors " + ", ".join(f"{c} x{k}" for c, k in sorted(self.errors.items())))
        unanswered = sum(1 for t in self.admitted if not all(turn.answered for turn in t.turns))
        short = sum(1 for t in self.admitted if t.failure is not None)
        if unanswered or short:
            why.append(f"{max(unanswered, short)} talker(s) not answered on every turn")
        failed = [t.failure for t in self.talkers if not t.admitted and not t.refused]
        if failed:
            why.append(f"{len(failed)} connection(s) failed: {sorted(set(map(str, failed)))}")
        refused = [t for t in self.talkers if t.refused]
        if self.stepping and refused:
            why.append(f"{len(refused)} refused")
        slow = [
            t
            for t in refused
            if (t.refusal_s or 0) > self.refuse_within_s
            or t.refusal_close != 1013
            or not t.busy_event
        ]
        if slow:
            why.append(
                f"{len(slow)} refusal(s) not SERVER_BUSY + 1013 within {self.refuse_within_s} s"
            )
        if self.timed_out:
            why.append("step timed out")
        if self.server_error:
            why.append(self.server_error)
        return why

    def row(self) -> str:
        turns = self.turns
        answered = sum(turn.answered for turn in turns)
        final, audio, text = (self.values(k) for k in ("final_s", "audio_s", "first_text_s"))
        cells = [
            str(self.n),
            f"{len(self.admitted)}/{sum(t.refused for t in self.talkers)}",
            f"{answered}/{len(turns)}",
            f"{cell(pct(final, 0.5))} {cell(pct(final, 0.95))}",
            f"{cell(pct(audio, 0.5))} {cell(pct(audio, 0.95))}",
            f"{cell(pct(text, 0.5))} {cell(pct(text, 0.95))}",
            f"{self.errors.get('LLM_TIMEOUT', 0)} / {sum(self.errors.values())}",
            f"{self.load_start:4.1f} {self.load_end:4.1f}",
            f"{pcent(self.server_cpu)} {pcent(self.other_cpu)} {pcent(self.other_max)}",
            "yes" if not self.misses() else "NO",
        ]
        return " | ".join(c.rjust(len(h)) for c, h in zip(cells, COLUMNS, strict=True))


def cell(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.2f}"


COLUMNS = (
    "  N",
    "adm/ref",
    "ans/turns",
    "final p50   p95",
    "audio p50   p95",
    "partial p50 p95",
    "tmo / err",
    "load1 s/e",
    "srv% oth% (max)",
    "meets",
)
HEADER = " | ".join(COLUMNS)


async def run_step(
    n: int,
    options: Options,
    server_args: list[str],
    env: dict[str, str],
    stepping: bool,
    step_timeout_s: float,
    warmup: bool,
) -> Step:
    plans = [
        [
            question(QUESTIONS[(i * 5 + j) % len(QUESTIONS)], options.frame_ms)
            for j in range(options.turns)
        ]
        for i in range(n)
    ]
    step = Step(n, [TalkerResult() for _ in range(n)], stepping, options.refuse_within_s)
    step.load_start = os.getloadavg()[0]
    env = {"STREAM_LOG_LEVEL": "WARNING", **env}
    for attempt in (1, 2):
        started = False
        try:
            async with server_process(server_args, env=env) as port:
                started = True
                step.server_error = None
                await drive(step, port, plans, options, step_timeout_s, warmup)
            break
        except* (trio.TooSlowError, RuntimeError, OSError) as group:
            if started:
                raise
            # Another engineer's edit may have broken the server for a moment.
            step.server_error = f"server did not start (attempt {attempt}): {group.exceptions[0]!r}"
            print(f"    {step.server_error[:300]}", flush=True)
            await trio.sleep(10)
    step.load_end = os.getloadavg()[0]
    return step


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants (the server runs the LLM and the
    TTS in worker processes of its own)."""
    parents: dict[int, int] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{name}/stat") as f:
            parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
    tree, grew = set(roots), True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    return sorted(tree)


def tree_cpu_s(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of each of ``pids`` still alive."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            out[pid] = cpu_seconds([pid])
    return out


async def wait_quiet(share: float, max_s: float) -> None:
    """Wait until the machine's busy CPU over 5 s is below ``share`` of a
    core (the server of the last step gone, other people's work done)."""
    began = trio.current_time()
    while True:
        busy0 = machine_busy_s()
        await trio.sleep(5)
        busy = (machine_busy_s() - busy0) / 5
        waited = trio.current_time() - began
        if busy < share or waited >= max_s:
            if waited > 6:
                state = "quiet" if busy < share else "still busy, going on"
                print(
                    f"    waited {waited:.0f} s for a quiet machine: {state} ({busy * 100:.0f} %)"
                )
            return


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every core), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def health(port: int) -> dict[str, Any]:
    import httpx

    with contextlib.suppress(httpx.HTTPError, ValueError):
        async with httpx.AsyncClient(timeout=5) as http:
            answer: dict[str, Any] = (await http.get(f"http://127.0.0.1:{port}/health")).json()
            return answer
    return {}


async def sample_others(step: Step, pids: list[int], window_s: float = OTHERS_WINDOW_S) -> None:
    """The busiest ``window_s`` of every other process on the machine (not the
    server's, not ours): a burst of someone else's work spoils a few turns
    and hides in the average."""
    me = os.getpid()

    def ours() -> float:
        return sum(tree_cpu_s([*pids, me]).values())

    busy0, ours0 = machine_busy_s(), ours()
    while True:
        await trio.sleep(window_s)
        busy, mine = machine_busy_s(), ours()
        share = max(0.0, (busy - busy0) - (mine - ours0)) / window_s
        step.other_max = max(step.other_max or 0.0, share)
        busy0, ours0 = busy, mine


async def drive(
    step: Step,
    port: int,
    plans: list[list[Question]],
    options: Options,
    step_timeout_s: float,
    warmup: bool,
) -> None:
    """Warm the server up with one question, then run the step's talkers."""
    url = f"ws://127.0.0.1:{port}/ws"
    step.health = await health(port)
    if warmup:
        with trio.move_on_after(options.turn_timeout_s + 30):
            warm = dataclasses.replace(options, turns=1, verbose=False)
            await talker(url, -1, [question(QUESTIONS[-1], options.frame_ms)], warm, TalkerResult())
    try:
        pids = process_tree(server_pids(port))
    except (RuntimeError, OSError):
        pids = []
    cpu0 = tree_cpu_s(pids)
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    busy0 = machine_busy_s()
    wall0 = time.monotonic()
    with trio.move_on_after(step_timeout_s) as scope:
        async with trio.open_nursery() as outer:
            outer.start_soon(sample_others, step, pids)
            async with trio.open_nursery() as nursery:
                for i, plan in enumerate(plans):
                    nursery.start_soon(partial(talker, url, i, plan, options, step.talkers[i]))
                    # Users arrive spread over a few seconds, not all in one frame.
                    await trio.sleep(options.spread_s / len(plans))
            outer.cancel_scope.cancel()
    step.timed_out = scope.cancelled_caught
    step.wall_s = wall = time.monotonic() - wall0
    # Processes of the server that ended during the step are left out (their
    # CPU falls to "other").
    cpu1 = tree_cpu_s(pids)
    server = sum(cpu1[pid] - cpu0[pid] for pid in cpu1 if pid in cpu0) if cpu1 else None
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    own = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
    step.server_cpu = None if server is None else server / wall
    step.own_cpu = own / wall
    if server is not None:
        step.other_cpu = max(0.0, machine_busy_s() - busy0 - server - own) / wall


def details(step: Step) -> str:
    infos: Counter[str] = Counter()
    for t in step.admitted:
        infos.update(t.infos)
    refused = [t for t in step.talkers if t.refused]
    lines = [
        f"    N={step.n}: {step.wall_s:.0f} s; server CPU (with its LLM and TTS workers) "
        + ("n/a" if step.server_cpu is None else f"{step.server_cpu * 100:.0f} % of a core")
        + f", load generator {step.own_cpu * 100:.0f} %, other processes "
        + ("n/a" if step.other_cpu is None else f"{step.other_cpu * 100:.0f} %")
        + f" (busiest {OTHERS_WINDOW_S:g} s: {pcent(step.other_max).strip()} %)"
        + "; mic sends late at most "
        f"{max((t.mic_late_max_s for t in step.admitted), default=0) * 1000:.0f} ms",
        f"      server max_sessions {step.health.get('max_sessions', '?')}; "
        f"errors {dict(step.errors) or 'none'}; info events {dict(infos) or 'none'}; "
        f"turns whose final came before any partial: {sum(t.final_first for t in step.turns)}; "
        f"split questions (>1 final): {sum(t.finals > 1 for t in step.turns)}",
    ]
    if refused:
        times = [t.refusal_s for t in refused if t.refusal_s is not None]
        lines.append(
            f"      refused {len(refused)}: SERVER_BUSY events {sum(t.busy_event for t in refused)}, "
            f"close codes {dict(Counter(t.refusal_close for t in refused))}, "
            f"connect to refusal max {max(times, default=0) * 1000:.0f} ms"
        )
    failures = Counter(t.failure for t in step.talkers if t.failure is not None)
    if failures:
        lines.append(f"      failures {dict(failures)}")
    misses = step.misses()
    lines.append("      meets every target" if not misses else "      misses: " + "; ".join(misses))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    options = Options(
        turns=args.turns,
        frame_ms=args.frame_ms,
        audio_format=args.audio_format,
        spread_s=args.spread_s,
        turn_timeout_s=args.turn_timeout_s,
        connect_timeout_s=args.connect_timeout_s,
        refuse_within_s=args.refuse_within_s,
        seed=args.seed,
        verbose=args.verbose,
    )
    env = dict(item.split("=", 1) for item in args.env)
    if args.max_sessions:
        env["STREAM_MAX_SESSIONS"] = str(args.max_sessions)
    # Every question is synthesized before any server starts.
    for text in QUESTIONS:
        question(text, options.frame_ms)
    per_turn = 10 + options.turn_timeout_s + LISTEN_CAP_S + 2
    step_timeout_s = args.step_timeout_s or options.spread_s + 30 + options.turns * per_turn
    stepping = args.sessions is None
    counts = [args.sessions] if not stepping else list(range(args.start, args.max + 1, args.step))
    load0 = os.getloadavg()
    print(
        f"capacity: turns {options.turns}, {options.frame_ms} ms frames, {options.audio_format} "
        f"replies, spread {options.spread_s} s, server args {args.server_arg or []}, env {env or {}}; "
        f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} ({os.cpu_count()} cores)",
        flush=True,
    )
    steps: list[Step] = []
    misses_seen = 0
    print(HEADER, flush=True)
    for n in counts:
        for attempt in range(args.retry_noisy + 1):
            if args.wait_quiet:
                await wait_quiet(args.wait_quiet / 100, args.wait_quiet_max_s)
            step = await run_step(
                n, options, list(args.server_arg), env, stepping, step_timeout_s, not args.no_warmup
            )
            print(step.row(), flush=True)
            print(details(step), flush=True)
            quiet = args.wait_quiet / 100
            noisy = args.wait_quiet and (
                (step.other_cpu or 0) > quiet or (step.other_max or 0) > 2 * quiet
            )
            if not noisy:
                break
            print(
                f"    N={n}: other processes took more than {args.wait_quiet:g} % of a core "
                f"(or {2 * args.wait_quiet:g} % over {OTHERS_WINDOW_S:g} s)",
                end="",
            )
            print(": run again" if attempt < args.retry_noisy else ": kept", flush=True)
        steps.append(step)
        if step.misses():
            misses_seen += 1
            if misses_seen > args.past_miss:
                break
    load1 = os.getloadavg()
    print()
    print(
        "seconds; final and audio from the end of speech, partial from its onset; "
        "tmo = LLM_TIMEOUT events, err = all error events; CPU in % of one core: "
        f"the server's processes, everyone else's (busiest {OTHERS_WINDOW_S:g} s)"
    )
    print(HEADER)
    for step in steps:
        print(step.row())
    print(f"load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if stepping:
        capacity = 0
        for step in steps:
            if step.misses():
                break
            capacity = step.n
        later = [s.n for s in steps if s.n > capacity and not s.misses()]
        note = f" (met again at N={later} after a miss: noise?)" if later else ""
        if capacity == 0 and args.start > 1:
            print(f"capacity: below {args.start} talkers (the first N tried missed){note}")
        else:
            print(f"capacity: {capacity} talkers{note}")
    else:
        step = steps[0]
        verdict = (
            "meets the targets" if not step.misses() else "MISSES: " + "; ".join(step.misses())
        )
        print(
            f"sessions {step.n}: admitted {len(step.admitted)}, refused "
            f"{sum(t.refused for t in step.talkers)}; {verdict}"
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--start", type=int, default=1, help="first N")
    parser.add_argument("--step", type=int, default=1, help="N grows by this")
    parser.add_argument("--max", type=int, default=12, help="last N")
    parser.add_argument("--sessions", type=int, help="run this N once, no stepping")
    parser.add_argument(
        "--past-miss", type=int, default=0, help="steps to run after the first miss"
    )
    parser.add_argument("--turns", type=int, default=3, help="questions per talker")
    parser.add_argument("--frame-ms", type=int, default=100)
    parser.add_argument("--audio-format", choices=("pcm16", "wav"), default="pcm16")
    parser.add_argument("--spread-s", type=float, default=2.5, help="talkers arrive over this")
    parser.add_argument(
        "--turn-timeout-s",
        type=float,
        default=45.0,
        help="after the question, wait this long for metrics",
    )
    parser.add_argument("--step-timeout-s", type=float, default=0.0, help="0: from the turns")
    parser.add_argument("--connect-timeout-s", type=float, default=10.0)
    parser.add_argument("--refuse-within-s", type=float, default=1.0, help="a refusal 'at once'")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="PCT",
        help="before each step, wait until the machine is busy less than PCT %% of a core; "
        "with --retry-noisy K, a step where other processes took more (or twice that "
        "over any 3 s) is run again, up to K times",
    )
    parser.add_argument("--wait-quiet-max-s", type=float, default=600.0)
    parser.add_argument("--retry-noisy", type=int, default=0, metavar="K")
    parser.add_argument("--verbose", action="store_true", help="print every turn")
    parser.add_argument("--no-warmup", action="store_true", help="no warm-up question per server")
    parser.add_argument("--max-sessions", type=int, default=0, help="sets STREAM_MAX_SESSIONS")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="server environment"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `voicetrio serve` argument",
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    if (args.sessions is not None and args.sessions < 1) or args.start < 1 or args.step < 1:
        parser.error("N must be at least 1")
    if RATE * args.frame_ms % 1000:
        parser.error("--frame-ms must be a whole number of samples")
    return args


if __name__ == "__main__":
    arguments = parse()
    try:
        trio.run(main, arguments)
    except KeyboardInterrupt:
        sys.exit(130)
