"""Pipecat's ``OpenAIRealtimeLLMService`` against a voicetrio server: the driver.

Runs in Pipecat's own virtualenv (made by :mod:`bench.pipecat_interop`,
which also starts the server and speaks the questions): it imports nothing
from voicetrio, only Pipecat and the standard library. Pipecat parses every
server event into a strict pydantic model; a rejected event only kills its
receive loop (logged, nothing else), so this driver wraps
``events.parse_server_event`` to record every event and, verbatim, every
rejection, and wraps ``send_client_event`` to record what Pipecat sends.

The pipeline is the one of Pipecat's ``realtime-openai`` example without a
transport: ``[user aggregator, probe, service, speaker, assistant
aggregator]``, the probe noting what the service pushes upstream.
A microphone task queues 20 ms ``InputAudioRawFrame``\\s at real-time pace
(silence between utterances, as a live microphone sends); the speaker
stands in for the output transport, "playing" the service's audio in real
time and sending ``BotStartedSpeakingFrame`` / ``BotStoppedSpeakingFrame``
as a transport does. The steps:

1. session: ``session.created``, then Pipecat's ``session.update`` answered
   by ``session.updated``, both accepted by Pipecat's models;
2. greeting: an ``LLMRunFrame`` at start (as Pipecat's examples send when a
   client connects): the context as ``conversation.item.create`` and a
   ``response.create``; the response completes with audio;
3. the spoken question: a user transcript (``TranscriptionFrame``), the
   reply's audio (``TTSAudioRawFrame``\\s with bytes), ``response.done``
   with ``completed``;
4. barge-in (unless ``--no-barge-in``): a question with a long answer, and
   a second utterance over the first audio of its reply (while the reply
   is still being written): ``speech_started``,
   Pipecat's ``conversation.item.truncate`` answered by
   ``conversation.item.truncated``, ``response.done`` with ``cancelled``;
   then the reply to the second utterance completes;
5. strict parsing: no event rejected by Pipecat's models and no ``error``
   event (every ``error`` but two codes is fatal in Pipecat).

Usage (what :mod:`bench.pipecat_interop` runs)::

    PIPECAT_VENV/bin/python bench/pipecat_interop_driver.py \\
        --url ws://127.0.0.1:PORT/v1/realtime --clips DIR/clips.json [--report out.json]

Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import importlib.metadata
import json
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMRunFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner

FRAME_MS = 20
INSTRUCTIONS = "You are a helpful voice assistant. Answer in one or two short sentences."
#: The context of Pipecat's realtime-openai example, sent at start by its LLMRunFrame.
GREETING = "Say hello!"


def now() -> float:
    return time.monotonic()


@dataclass
class ServerEvent:
    at: float
    type: str
    #: Pipecat's model accepted it (None: a type Pipecat has no model for, ignored).
    parsed: bool | None
    raw: dict[str, Any]


@dataclass
class Rejection:
    at: float
    type: str
    error: str
    event: str


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float | None = None


@dataclass
class Recorder:
    """Everything seen on the wire and in the pipeline, with its time."""

    t0: float = field(default_factory=now)
    server: list[ServerEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    client: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    transcripts: list[tuple[float, str]] = field(default_factory=list)
    interims: list[tuple[float, str]] = field(default_factory=list)
    audio: list[tuple[float, int]] = field(default_factory=list)
    reply_text: list[tuple[float, str]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)

    def on_server(self, message: str | bytes, parsed: object) -> None:
        raw = json.loads(message)
        kind = str(raw.get("type"))
        if kind == "response.output_audio.delta":
            raw = {**raw, "delta": len(base64.b64decode(raw.get("delta", "")))}
        self.server.append(ServerEvent(now(), kind, None if parsed is None else True, raw))

    def on_rejected(self, message: str | bytes, error: BaseException) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        try:
            kind = str(json.loads(text).get("type"))
        except ValueError:
            kind = "<not JSON>"
        # parse_server_event re-raises as Exception(f"{e} \n\n{message}"): the
        # pydantic error is its context.
        cause = error.__context__ or error
        self.rejected.append(Rejection(now(), kind, str(cause), text[:2000]))

    def events_since(self, start: float, kind: str) -> list[ServerEvent]:
        return [e for e in self.server if e.at >= start and e.type == kind]

    def first(self, start: float, kind: str) -> ServerEvent | None:
        found = self.events_since(start, kind)
        return found[0] if found else None

    def audio_bytes_since(self, start: float) -> int:
        """Bytes of the service's TTSAudioRawFrames since ``start``."""
        return sum(n for at, n in self.audio if at >= start)

    def sent_audio_since(self, start: float) -> int:
        """Bytes of audio in the server's deltas since ``start``."""
        return sum(e.raw["delta"] for e in self.events_since(start, "response.output_audio.delta"))


class RecordingService(OpenAIRealtimeLLMService):
    """The service as shipped; only what it sends is noted on the way out."""

    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder

    async def send_client_event(self, event: events.ClientEvent) -> None:
        dump = event.model_dump(exclude_none=True)
        if dump.get("type") == "input_audio_buffer.append":
            dump["audio"] = f"<{len(dump.get('audio', ''))} base64 chars>"
        else:
            self.recorder.client.append((now(), str(dump.get("type")), dump))
        await super().send_client_event(event)


class Probe(FrameProcessor):
    """Before the service: what it pushes upstream (transcripts, errors)."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(name="probe")
        self.recorder = recorder

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.recorder.transcripts.append((now(), frame.text))
        elif isinstance(frame, InterimTranscriptionFrame):
            self.recorder.interims.append((now(), frame.text))
        elif isinstance(frame, ErrorFrame):
            self.recorder.errors.append((now(), str(frame.error)))
        await self.push_frame(frame, direction)


class Speaker(FrameProcessor):
    """Stands in for the output transport: plays the audio in real time."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(name="speaker")
        self.recorder = recorder
        self.playing_until: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.recorder.audio.append((now(), len(frame.audio)))
            seconds = len(frame.audio) / 2 / frame.sample_rate / frame.num_channels
            if self.playing_until is None:
                self.playing_until = now() + seconds
                await self.broadcast_frame(BotStartedSpeakingFrame)
            else:
                self.playing_until = max(now(), self.playing_until) + seconds
            return  # played here, as a transport would
        if isinstance(frame, TTSTextFrame):
            self.recorder.reply_text.append((now(), frame.text))
        elif isinstance(frame, InterruptionFrame) and self.playing_until is not None:
            self.playing_until = now()
        await self.push_frame(frame, direction)

    async def tick(self) -> None:
        """Say the bot stopped speaking when its audio has played out."""
        if self.playing_until is not None and now() >= self.playing_until:
            self.playing_until = None
            await self.broadcast_frame(BotStoppedSpeakingFrame)


@dataclass
class Utterance:
    pcm: bytes
    rate: int
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    start_at: float = 0.0
    end_at: float = 0.0


class Microphone:
    """20 ms frames at real-time pace: the utterance being said, else silence."""

    def __init__(self, worker: PipelineWorker, speaker: Speaker, rate: int) -> None:
        self.worker = worker
        self.speaker = speaker
        self.rate = rate
        self.queue: list[Utterance] = []

    def say(self, pcm: bytes, rate: int) -> Utterance:
        utterance = Utterance(pcm, rate)
        self.queue.append(utterance)
        return utterance

    async def run(self) -> None:
        frame_bytes = self.rate * FRAME_MS // 1000 * 2
        silence = bytes(frame_bytes)
        due = now()
        current: Utterance | None = None
        offset = 0
        while True:
            due += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, due - now()))
            if current is None and self.queue:
                current, offset = self.queue.pop(0), 0
                current.start_at = now()
                current.started.set()
            chunk = silence
            if current is not None:
                chunk = current.pcm[offset : offset + frame_bytes].ljust(frame_bytes, b"\0")
                offset += frame_bytes
                if offset >= len(current.pcm):
                    current.end_at = now()
                    current.ended.set()
                    current = None
            frame = InputAudioRawFrame(audio=chunk, sample_rate=self.rate, num_channels=1)
            await self.worker.queue_frame(frame)
            await self.speaker.tick()


async def wait_for(check: Callable[[], bool], within: float) -> bool:
    """Poll ``check`` every 10 ms until it holds (True) or ``within`` s pass (False)."""
    deadline = now() + within
    while not check():
        if now() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def read_pcm(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise SystemExit(f"{path}: 16-bit mono WAV expected")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


class Scenario:
    def __init__(
        self,
        recorder: Recorder,
        mic: Microphone,
        worker: PipelineWorker,
        speaker: Speaker,
        timeout: float,
    ) -> None:
        self.rec = recorder
        self.mic = mic
        self.worker = worker
        self.speaker = speaker
        self.timeout = timeout
        self.steps: list[Step] = []
        self.timings: dict[str, float | None] = {}

    def step(self, name: str, ok: bool, detail: str, seconds: float | None = None) -> bool:
        self.steps.append(Step(name, ok, detail, seconds))
        mark = "PASS" if ok else "FAIL"
        took = "" if seconds is None else f" ({ms(seconds)})"
        print(f"  {mark}  {name}{took}: {detail}", flush=True)
        return ok

    def rejected_since(self, start: float) -> str:
        found = [r for r in self.rec.rejected if r.at >= start]
        errors = [e for e in self.rec.server if e.at >= start and e.type == "error"]
        notes = [f"Pipecat rejected {r.type}: {r.error}" for r in found]
        notes += [f"error event: {json.dumps(e.raw)}" for e in errors]
        return "; ".join(notes)

    async def response_done(self, start: float) -> ServerEvent | None:
        await wait_for(lambda: self.rec.first(start, "response.done") is not None, self.timeout)
        return self.rec.first(start, "response.done")

    async def audio_arrived(self, start: float) -> tuple[int, int]:
        """(bytes in frames, bytes in deltas) since ``start``, once the frames caught up."""
        await wait_for(
            lambda: self.rec.audio_bytes_since(start) >= self.rec.sent_audio_since(start), 2.0
        )
        return self.rec.audio_bytes_since(start), self.rec.sent_audio_since(start)

    async def played_out(self) -> None:
        await wait_for(lambda: self.speaker.playing_until is None, self.timeout)

    async def session(self, started: float) -> bool:
        ok = await wait_for(
            lambda: (
                bool(self.rec.events_since(started, "session.updated")) or bool(self.rec.rejected)
            ),
            self.timeout,
        )
        created = self.rec.first(started, "session.created")
        updated = self.rec.first(started, "session.updated")
        sent = [c for _, kind, c in self.rec.client if kind == "session.update"]
        problem = self.rejected_since(started)
        took = None if updated is None else updated.at - started
        self.timings["start -> session.created"] = None if created is None else created.at - started
        self.timings["start -> session.updated"] = took
        if not ok or created is None or updated is None or problem:
            detail = problem or (
                f"session.created {'seen' if created else 'missing'}, "
                f"session.updated {'seen' if updated else 'missing'} "
                f"({len(sent)} session.update sent)"
            )
            return self.step("session established", False, detail, took)
        keys = sorted(sent[0]["session"]) if sent else []
        return self.step(
            "session established",
            True,
            f"session.created and session.updated accepted by Pipecat's models "
            f"(its session.update set {', '.join(keys)})",
            took,
        )

    async def greeting(self, start: float) -> bool:
        await self.worker.queue_frame(LLMRunFrame())
        done = await self.response_done(start)
        created = [c for at, kind, c in self.rec.client if at >= start and kind.startswith("conv")]
        problem = self.rejected_since(start)
        audio, sent = await self.audio_arrived(start)
        status = None if done is None else done.raw.get("response", {}).get("status")
        took = None if done is None else done.at - start
        ok = status == "completed" and audio > 0 and audio == sent and not problem
        detail = (
            f"{len(created)} context item(s) created, response.done {status or 'missing'}, "
            f"{audio} bytes of audio in frames ({sent} in the deltas)"
        )
        self.step("greeting (LLMRunFrame at start)", ok, problem or detail, took)
        await self.played_out()
        return ok

    async def spoken_turn(self, pcm: bytes, rate: int) -> bool:
        start = now()
        said = self.mic.say(pcm, rate)
        await said.ended.wait()
        end = said.end_at
        got_transcript = await wait_for(
            lambda: any(at >= start for at, _ in self.rec.transcripts) or bool(self.rec.rejected),
            self.timeout,
        )
        transcripts = [t for at, t in self.rec.transcripts if at >= start]
        interims = [t for at, t in self.rec.interims if at >= start]
        stopped = self.rec.first(start, "input_audio_buffer.speech_stopped")
        completed = self.rec.first(start, "conversation.item.input_audio_transcription.completed")
        self.timings["end of speech -> speech_stopped"] = (
            None if stopped is None else stopped.at - end
        )
        self.timings["end of speech -> transcript"] = (
            None if completed is None else completed.at - end
        )
        problem = self.rejected_since(start)
        self.step(
            "user transcript",
            got_transcript and bool(transcripts and transcripts[0].strip()) and not problem,
            problem
            or (
                f"TranscriptionFrame {transcripts[0]!r} ({len(interims)} interim deltas)"
                if transcripts
                else "no TranscriptionFrame"
            ),
            None if completed is None else completed.at - end,
        )
        await wait_for(
            lambda: any(at >= start for at, _ in self.rec.audio) or bool(self.rec.rejected),
            self.timeout,
        )
        first_audio = next((at for at, _ in self.rec.audio if at >= start), None)
        self.timings["end of speech -> first audio frame"] = (
            None if first_audio is None else first_audio - end
        )
        done = await self.response_done(start)
        audio, sent = await self.audio_arrived(start)
        frames = sum(1 for at, _ in self.rec.audio if at >= start)
        problem = self.rejected_since(start)
        self.step(
            "assistant audio streams",
            audio > 0 and audio == sent and not problem,
            problem
            or f"{frames} TTSAudioRawFrames, {audio} bytes ({audio / 48000:.2f} s at 24 kHz; "
            f"the deltas held {sent})",
            None if first_audio is None else first_audio - end,
        )
        status = None if done is None else done.raw.get("response", {}).get("status")
        text = "".join(t for at, t in self.rec.reply_text if at >= start)
        self.timings["end of speech -> response.done"] = None if done is None else done.at - end
        ok = status == "completed" and not problem
        self.step(
            "response completes",
            ok,
            problem or f"response.done {status or 'missing'}; reply text {text.strip()[:80]!r}",
            None if done is None else done.at - end,
        )
        await self.played_out()
        return ok

    async def barge_in(self, question: tuple[bytes, int], barge: tuple[bytes, int]) -> bool:
        start = now()
        said = self.mic.say(*question)
        await said.ended.wait()
        got_audio = await wait_for(
            lambda: any(at >= start for at, _ in self.rec.audio) or bool(self.rec.rejected),
            self.timeout,
        )
        if not got_audio:
            return self.step("barge-in", False, self.rejected_since(start) or "no reply audio")
        interrupted = self.mic.say(*barge)
        await interrupted.started.wait()
        onset = interrupted.start_at
        done = await self.response_done(start)
        await interrupted.ended.wait()
        # Pipecat truncates at speech_started: wait for the answer (or a refusal).
        await wait_for(
            lambda: (
                self.rec.first(onset, "conversation.item.truncated") is not None
                or self.rec.first(onset, "error") is not None
            ),
            2.0,
        )
        status = None if done is None else done.raw.get("response", {}).get("status")
        details = None if done is None else done.raw.get("response", {}).get("status_details")
        started = self.rec.first(onset, "input_audio_buffer.speech_started")
        truncates = [
            c
            for at, kind, c in self.rec.client
            if at >= onset and kind == "conversation.item.truncate"
        ]
        truncated = self.rec.first(onset, "conversation.item.truncated")
        problem = self.rejected_since(start)
        self.timings["barge-in onset -> speech_started"] = (
            None if started is None else started.at - onset
        )
        self.timings["barge-in onset -> response.done (cancelled)"] = (
            None if done is None else done.at - onset
        )
        truncate_note = (
            f"truncate audio_end_ms={truncates[0].get('audio_end_ms')} "
            f"{'answered by conversation.item.truncated' if truncated else 'not answered'}"
            if truncates
            else "no conversation.item.truncate sent"
        )
        ok = status == "cancelled" and bool(truncates) and truncated is not None and not problem
        if done is not None and done.at < onset:
            truncate_note += " (the reply was complete before the barge-in: nothing to cancel)"
        self.step(
            "barge-in cancels the reply",
            ok,
            problem
            or f"response.done {status or 'missing'} {json.dumps(details)}; {truncate_note}",
            None if done is None else done.at - onset,
        )
        # The second utterance is a turn of its own: its reply completes.
        after = interrupted.end_at
        cancelled_id = None if done is None else done.raw.get("response", {}).get("id")

        def next_done() -> ServerEvent | None:
            return next(
                (
                    e
                    for e in self.rec.events_since(onset, "response.done")
                    if e.raw.get("response", {}).get("id") != cancelled_id
                ),
                None,
            )

        await wait_for(lambda: next_done() is not None, self.timeout)
        second = next_done()
        status2 = None if second is None else second.raw.get("response", {}).get("status")
        problem = self.rejected_since(after)
        self.step(
            "reply to the barge-in turn completes",
            status2 == "completed" and not problem,
            problem or f"response.done {status2 or 'missing'}",
            None if second is None else second.at - after,
        )
        await self.played_out()
        return ok and status2 == "completed"

    def strictness(self) -> bool:
        kinds = sorted({e.type for e in self.rec.server})
        unmodelled = sorted({e.type for e in self.rec.server if e.parsed is None})
        errors = [e.raw for e in self.rec.server if e.type == "error"]
        if self.rec.rejected or errors or self.rec.errors:
            notes = [f"rejected {r.type}: {r.error}" for r in self.rec.rejected]
            notes += [f"error event {json.dumps(e)}" for e in errors]
            notes += [f"ErrorFrame: {e}" for _, e in self.rec.errors]
            return self.step("strict parsing", False, "; ".join(notes))
        note = f"; not modelled by Pipecat (ignored): {', '.join(unmodelled)}" if unmodelled else ""
        return self.step(
            "strict parsing",
            True,
            f"{len(self.rec.server)} server events of {len(kinds)} types, every one "
            f"validated by Pipecat's models, no error event{note}",
        )


async def run(
    args: argparse.Namespace,
    question: tuple[bytes, int],
    long_question: tuple[bytes, int],
    barge: tuple[bytes, int],
) -> tuple[bool, dict[str, Any]]:
    """The steps, printed as they pass or fail; whether all passed, and the report."""
    rate = question[1]

    recorder = Recorder()
    original: Callable[[str], Any] = events.parse_server_event

    def parse_and_record(message: str) -> Any:
        try:
            evt = original(message)
        except Exception as exc:
            recorder.on_rejected(message, exc)
            raise
        recorder.on_server(message, evt)
        return evt

    # The service looks it up on the module at every event.
    events.parse_server_event = parse_and_record

    turn_detection: events.TurnDetection | events.SemanticTurnDetection | None = None
    if args.turn_detection == "semantic_vad":
        turn_detection = events.SemanticTurnDetection()
    elif args.turn_detection == "server_vad":
        turn_detection = events.TurnDetection()
    service = RecordingService(
        recorder,
        api_key=args.api_key,
        base_url=args.url,
        settings=OpenAIRealtimeLLMService.Settings(
            system_instruction=INSTRUCTIONS,
            session_properties=events.SessionProperties(
                audio=events.AudioConfiguration(
                    input=events.AudioInput(
                        transcription=events.InputAudioTranscription(),
                        turn_detection=turn_detection,
                        noise_reduction=events.InputAudioNoiseReduction(type="near_field"),
                    )
                )
            ),
        ),
    )
    context = LLMContext([{"role": "developer", "content": GREETING}])
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context)
    probe = Probe(recorder)
    speaker = Speaker(recorder)
    worker = PipelineWorker(
        Pipeline([user_aggregator, probe, service, speaker, assistant_aggregator]),
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=24000),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)

    version = importlib.metadata.version("pipecat-ai")
    print(f"Pipecat {version} OpenAIRealtimeLLMService -> {service.base_url}", flush=True)
    scenario = Scenario(recorder, Microphone(worker, speaker, rate), worker, speaker, args.timeout)
    started = now()
    running = asyncio.create_task(runner.run())
    mic = asyncio.create_task(scenario.mic.run())
    try:
        if await scenario.session(started) and await scenario.greeting(now()):
            await scenario.spoken_turn(*question)
            if not args.no_barge_in:
                await scenario.barge_in(long_question, barge)
        scenario.strictness()
    finally:
        mic.cancel()
        await worker.cancel()
        try:
            await asyncio.wait_for(running, 10)
        except TimeoutError:
            print("  (the pipeline did not stop within 10 s)", flush=True)

    print("timings:")
    for name, value in scenario.timings.items():
        print(f"  {name:<45} {ms(value)}")
    passed = all(step.ok for step in scenario.steps)
    print(
        f"{'PASS' if passed else 'FAIL'}: {sum(s.ok for s in scenario.steps)}/"
        f"{len(scenario.steps)} steps",
        flush=True,
    )
    report = {
        "pipecat": version,
        "url": service.base_url,
        "passed": passed,
        "steps": [asdict(s) for s in scenario.steps],
        "timings_s": scenario.timings,
        "rejected": [asdict(r) for r in recorder.rejected],
        "server_events": [
            {"at": e.at - recorder.t0, "type": e.type, "parsed": e.parsed} for e in recorder.server
        ],
        "client_events": [
            {"at": at - recorder.t0, "type": kind, "event": event}
            for at, kind, event in recorder.client
        ],
    }
    return passed, report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://HOST:PORT/v1/realtime")
    parser.add_argument(
        "--clips", required=True, help="clips.json: question, long_question, barge_in WAVs"
    )
    parser.add_argument("--api-key", default="voicetrio", help="sent as Authorization: Bearer")
    parser.add_argument(
        "--turn-detection",
        choices=("semantic_vad", "server_vad", "default"),
        default="semantic_vad",
        help="the session's turn detection (default: semantic_vad, as Pipecat's example)",
    )
    parser.add_argument("--no-barge-in", action="store_true")
    parser.add_argument("--timeout", type=float, default=30.0, help="per step, seconds")
    parser.add_argument("--report", help="write the steps, timings and events as JSON here")
    parser.add_argument("--verbose", action="store_true", help="Pipecat's DEBUG log on stderr")
    args = parser.parse_args()
    logger: Any = importlib.import_module("loguru").logger
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if args.verbose else "WARNING")
    clips = json.loads(Path(args.clips).read_text())
    question, long_question, barge = (
        read_pcm(Path(clips[name])) for name in ("question", "long_question", "barge_in")
    )
    passed, report = asyncio.run(run(args, question, long_question, barge))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
