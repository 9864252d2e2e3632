"""``voicetrio client FILE.wav``: play a recording to the server and print what comes back.

The command behaves like a user at a microphone: it streams the file at
real-time pace, then trailing silence so the server's endpointing hears the
end of speech, then ``stop``, and prints every event until the last turn has
finished. Exit codes: 0 a turn completed; 1 the run failed (no connection,
bad file, connection lost, no turn, timeout); 2 the server sent a fatal error
or refused the session.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import trio

from voicetrio.client.connection import (
    DEFAULT_URL,
    ClientClosed,
    ClientError,
    ConnectFailed,
    ReceivedEvent,
    ServerProtocolError,
    StartRejected,
    VoiceClient,
    connect,
    stream_pcm,
    tls_context,
)
from voicetrio.wire.v1 import AUDIO_FORMATS, ErrorCode


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    SERVER_ERROR = 2


INTERRUPTED: Final = 130  # the shell's convention for SIGINT


class WavError(ValueError):
    """A file this command cannot stream; ``str()`` names the file and the problem."""


def load_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a 16-bit PCM WAV as mono little-endian PCM and its sample rate.

    Channels are averaged. (The CLI keeps its own loader so it has no
    dependency on the server's audio helpers.)
    """
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            data = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise WavError(f"{path}: not a PCM WAV file ({exc or 'truncated'})") from None
    except OSError as exc:
        raise WavError(f"{path}: {exc.strerror or exc}") from None
    if width != 2:
        raise WavError(f"{path}: {8 * width}-bit samples; only 16-bit PCM is supported")
    samples = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        usable = len(samples) - len(samples) % channels
        mixed = samples[:usable].reshape(-1, channels).mean(axis=1)
        samples = np.clip(np.round(mixed), -32768, 32767).astype("<i2")
    return samples.tobytes(), rate


# --------------------------------------------------------------------------
# Printing


def format_event(received: ReceivedEvent) -> str:
    """One human line: ``  0.532s  final_transcript  "hello world" (id=u1)``."""
    head = f"{received.at_s:7.3f}s  {received.event.get('type')}"
    detail = _detail(received)
    return f"{head}  {detail}" if detail else head


def format_event_json(received: ReceivedEvent) -> str:
    """One JSON line: ``{"t": seconds, ...event}``."""
    return json.dumps(
        {"t": round(received.at_s, 3), **received.event},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _quote(text: Any) -> str:
    return json.dumps(str(text), ensure_ascii=False)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def _b64_size(b64: Any) -> int:
    if not isinstance(b64, str):
        return 0
    return len(b64) * 3 // 4 - b64[-2:].count("=")


def _detail(received: ReceivedEvent) -> str:
    event = received.event
    kind = event.get("type")
    if kind == "protocol":
        return f"v{event.get('version')} session={event.get('session_id')} mode={event.get('mode')}"
    if kind == "partial_transcript":
        return _quote(event.get("text", ""))
    if kind == "final_transcript":
        return f"{_quote(event.get('text', ''))} (id={event.get('id')})"
    if kind == "llm_token":
        text = event.get("text") or ""
        if event.get("done"):
            return f"{_quote(text)} done" if text else "done"
        return _quote(text)
    if kind == "tts_chunk":
        if received.audio is not None:
            return (
                f"seq={event.get('seq')} {len(received.audio)} bytes "
                f"pcm16 {event.get('sample_rate')} Hz"
            )
        size = _b64_size(event.get("audio_b64"))
        return f"seq={event.get('seq')} {size} bytes {event.get('mime', '')}".rstrip()
    if kind == "tts_phrase_done":
        return f"seq={event.get('seq')}"
    if kind == "error":
        line = f"{event.get('code')}: {event.get('message')}"
        if event.get("reason"):
            line += f" (reason={event['reason']})"
        if event.get("recoverable") is False:
            line += " [fatal]"
        return line
    if kind == "info":
        extras = ", ".join(
            f"{k}={_value(v)}" for k, v in event.items() if k not in ("type", "message")
        )
        message = str(event.get("message", ""))
        return f"{message} ({extras})" if extras else message
    # metrics, tts_complete and anything newer: every field as key=value.
    return " ".join(f"{k}={_value(v)}" for k, v in event.items() if k != "type")


# --------------------------------------------------------------------------
# The conversation


class TurnTracker:
    """Decides, event by event, when the conversation is over.

    A turn is in flight from its ``final_transcript`` to its ``metrics``. The
    run is over once ``stop`` was sent, the server has answered it (a final
    transcript, ``info no_speech`` or an error) and no turn is in flight.
    Waiting for the answer to ``stop`` matters: until it comes, the server may
    still be about to finalize the last utterance.
    """

    def __init__(self) -> None:
        self.in_flight = False
        self.completed = 0
        self.stop_sent = False
        self.stop_answered = False
        self.fatal: dict[str, Any] | None = None

    def sent_stop(self) -> None:
        self.stop_sent = True

    def observe(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "final_transcript":
            self.in_flight = True
            self.stop_answered = self.stop_answered or self.stop_sent
        elif kind == "metrics":
            self.in_flight = False
            self.completed += 1
        elif kind == "info" and event.get("event") == "no_speech":
            self.stop_answered = self.stop_answered or self.stop_sent
        elif kind == "error":
            if event.get("recoverable") is False:
                self.fatal = event
            elif event.get("code") == ErrorCode.CANCELLED:
                # A cancelled turn's remaining events, metrics included, never come.
                self.in_flight = False
            elif self.stop_sent and not self.in_flight:
                # e.g. ASR_FAIL on the last decode: no final transcript will follow.
                self.stop_answered = True

    @property
    def done(self) -> bool:
        return self.fatal is not None or (
            self.stop_sent and self.stop_answered and not self.in_flight
        )


@dataclass(frozen=True, slots=True)
class RunOptions:
    frame_ms: int = 100
    trailing_silence_ms: int = 1500
    audio_format: str = "wav"
    realtime: bool = True
    timeout_s: float = 30.0
    json: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        return cls(
            frame_ms=args.frame_ms,
            trailing_silence_ms=args.trailing_silence_ms,
            audio_format=args.audio_format,
            realtime=not args.no_realtime,
            timeout_s=args.timeout_s,
            json=args.json,
        )


async def converse(
    client: VoiceClient,
    pcm: bytes,
    sample_rate: int,
    options: RunOptions,
    *,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run one recording through an open session; print events; return the exit code."""
    show = format_event_json if options.json else format_event

    def emit(received: ReceivedEvent) -> None:
        print(show(received), file=out, flush=True)

    try:
        hello = await client.start(sample_rate, options.audio_format)
    except StartRejected as exc:
        emit(ReceivedEvent(exc.at_s, exc.event))
        return ExitCode.SERVER_ERROR
    except ClientClosed as exc:
        print(f"connection closed before the session started: {_close_text(exc)}", file=err)
        return ExitCode.FAILED
    emit(ReceivedEvent(trio.current_time() - client.t0, hello))

    silence = bytes(2 * (sample_rate * options.trailing_silence_ms // 1000))
    tracker = TurnTracker()
    closed: ClientClosed | None = None
    broken: ServerProtocolError | None = None

    async def send_everything(wait: trio.CancelScope) -> None:
        try:
            await stream_pcm(
                client,
                pcm + silence,
                sample_rate,
                frame_ms=options.frame_ms,
                realtime=options.realtime,
            )
            await client.stop()
        except ClientClosed:
            return  # the reader sees the close too, and reports it
        tracker.sent_stop()
        wait.deadline = trio.current_time() + options.timeout_s

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as wait:
            nursery.start_soon(send_everything, wait)
            try:
                while not tracker.done:
                    received = await client.next_event()
                    emit(received)
                    tracker.observe(received.event)
            except ClientClosed as exc:
                closed = exc
            except ServerProtocolError as exc:
                broken = exc
        nursery.cancel_scope.cancel()

    if tracker.fatal is not None:
        return ExitCode.SERVER_ERROR
    if tracker.done:
        if tracker.completed:
            return ExitCode.OK
        print("no turn completed: the server heard no speech", file=err)
        return ExitCode.FAILED
    if broken is not None:
        print(f"protocol error from the server: {broken}", file=err)
    elif closed is not None:
        print(f"connection closed before the turn finished: {_close_text(closed)}", file=err)
    else:
        print(
            f"timed out: the turn did not finish within {options.timeout_s:g}s "
            "after the audio ended",
            file=err,
        )
    return ExitCode.FAILED


def _close_text(exc: ClientClosed) -> str:
    return f"code {exc.code}" + (f" ({exc.reason})" if exc.reason else "")


async def main_async(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """The whole command, inside Trio: load, connect, converse."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        pcm, sample_rate = load_wav(args.file)
    except WavError as exc:
        print(f"voicetrio client: {exc}", file=err)
        return ExitCode.FAILED
    options = RunOptions.from_args(args)
    try:
        context = tls_context(args.ca_file) if args.ca_file else None
        async with connect(args.url, ssl_context=context) as client:
            return await converse(client, pcm, sample_rate, options, out=out, err=err)
    except ConnectFailed as exc:
        print(exc, file=err)
        return ExitCode.FAILED
    except ClientError as exc:  # e.g. the close handshake timed out after the run
        print(f"voicetrio client: {exc}", file=err)
        return ExitCode.FAILED


# --------------------------------------------------------------------------
# Command line


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside {lo}..{hi}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``voicetrio client`` options to ``parser``."""
    parser.add_argument("file", metavar="FILE", help="16-bit PCM WAV file (mono or stereo)")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"server WebSocket (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust the CA certificates in this file for a wss:// URL (default: the system's)",
    )
    parser.add_argument(
        "--json", action="store_true", help='one JSON line per event: {"t": seconds, ...event}'
    )
    parser.add_argument(
        "--frame-ms", type=_int_in(10, 1000), default=100, help="audio frame length (default 100)"
    )
    parser.add_argument(
        "--trailing-silence-ms",
        type=_int_in(0, 60_000),
        default=1500,
        help="silence sent after the file so endpointing hears the end (default 1500)",
    )
    parser.add_argument(
        "--audio-format",
        choices=AUDIO_FORMATS,
        default="wav",
        help="reply audio: base64 WAV in JSON, or raw pcm16 binary frames (default wav)",
    )
    parser.add_argument("--no-realtime", action="store_true", help="send audio as fast as possible")
    parser.add_argument(
        "--timeout-s",
        type=_positive_float,
        default=30.0,
        help="how long to wait for the turn to finish after the audio ended (default 30)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the process exit code."""
    try:
        return trio.run(main_async, args)
    except KeyboardInterrupt:
        return INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="voicetrio client", description="Stream a WAV file to a voicetrio server."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
