"""The protocol fuzzer: strategies, an oracle, and a runner, shared by
``tests/reliability/test_fuzz.py`` (CI-sized) and ``bench/fuzz.py`` (long runs).

A *scenario* is a list of frames a client sends on one connection (valid
``start``/``stop``/``cancel``, mutated and random JSON, random text, random and
oversized binary, speech and silence), with *sync points* in between and a way
to leave: close at once, drop the TCP connection, reset it, or first talk one
more utterance and wait for its whole turn (the same session still works).
The runner sends them over a real socket while a reader task validates every
event the server sends.

The oracle is the sans-IO :class:`~voicetrio.wire.v1.ProtocolMachine` fed the
same frames on the client side: it predicts, frame by frame, which ones the
server refuses and with which code and reason, which ``start``s it accepts
(each answered by a ``protocol`` hello) and which ``cancel``s (each answered by
``CANCELLED`` or ``nothing_to_cancel``), and where the 20th bad frame in a row
ends the connection with 1008. Those answers come from the server's reader in
order, so the runner can check them exactly; everything else a turn produces
(transcripts, tokens, speech, metrics) is checked for form and for the
invariants that hold under any interleaving (ids, ``seq`` order).

A sync point waits until every answer owed so far has arrived: the frames
after it meet a server that has acted on everything before it, which is how
turns in flight get interleaved with the frames that follow, without a sleep.

The server runs in a :class:`ServerThread`, so that one server lives through
every example (hypothesis runs each example in a ``trio.run`` of its own): a
shared resource left broken by one example (a capacity-limiter token, a hung
task) shows up in the next ones.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal, TypeVar

import outcome
import trio
import trio.testing
from hypothesis import strategies as st

from tests.conftest import quiet, speech
from tests.reliability.conftest import (
    abort,
    assert_full_turn,
    connect_over_socket,
    read_until,
    say,
    sessions_gone,
    task_count,
)
from voicetrio.client.connection import ClientClosed, VoiceClient, connect
from voicetrio.config import Config
from voicetrio.engines.base import Engines
from voicetrio.engines.fake import words_for
from voicetrio.engines.registry import EngineHost
from voicetrio.server.app import Running, serve
from voicetrio.wire import v1 as protocol
from voicetrio.wire.v1 import ErrorCode, ProtocolError

T = TypeVar("T")

#: The fuzz server: small engine delays, so turns last a few tens of ms and
#: the frames that follow a sync point land in the middle of them.
FUZZ_CONFIG: Final = Config(
    port=0,
    engines="fake",
    fake_asr_ms=1,
    fake_llm_first_token_ms=5,
    fake_llm_token_ms=1,
    fake_tts_ms=1,
    shutdown_grace_s=1.0,
)

#: Refusals: the reader's answers to a frame it did not accept.
REFUSAL_CODES: Final = frozenset(
    {ErrorCode.BAD_MESSAGE, ErrorCode.UNSUPPORTED_SAMPLE_RATE, ErrorCode.PROTOCOL_VIOLATION}
)
ERROR_CODES: Final = frozenset(code.value for code in ErrorCode)
#: (type, code, event) of the two answers to an accepted cancel.
CANCEL_ANSWERS: Final = frozenset(
    {("error", ErrorCode.CANCELLED.value, None), ("info", None, "nothing_to_cancel")}
)


# -- the server in a thread ------------------------------------------------------


class ServerThread:
    """A voicetrio server in a Trio loop of its own thread; see the module docs."""

    def __init__(self, config: Config = FUZZ_CONFIG, engines: Engines | None = None) -> None:
        self.config = config
        self.engines = engines
        self._started = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._main, name="fuzz-server", daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self._running: Running | None = None

    @property
    def running(self) -> Running:
        assert self._running is not None, "the server is not running"
        return self._running

    @property
    def url(self) -> str:
        return self.running.url

    def start(self, timeout_s: float = 30) -> None:
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError("the fuzz server did not start")
        if self._errors:
            raise self._errors[0]

    def stop(self, timeout_s: float = 30) -> None:
        """Shut the server down as SIGTERM would; re-raise whatever it raised."""
        if self._token is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):  # it stopped by itself
                trio.from_thread.run_sync(self.running.shutdown.set, trio_token=self._token)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError("the fuzz server did not stop")
        if self._errors:
            raise self._errors[0]

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        host = None if self.engines is None else EngineHost(self.config, engines=self.engines)
        async with trio.open_nursery() as nursery:
            self._running = await nursery.start(partial(serve, self.config, host=host))
            self._started.set()

    def call_sync(self, afn: Callable[[Running], Awaitable[T]]) -> T:
        """Run ``afn(running)`` in the server's loop, from a thread outside Trio."""
        return trio.from_thread.run(afn, self.running, trio_token=self._token)

    async def call(self, afn: Callable[[Running], Awaitable[T]]) -> T:
        """Run ``afn(running)`` in the server's loop, from another Trio loop.

        Each loop hands the other a callback (``run_sync_soon``), so no worker
        thread is involved: a thread left in Trio's cache would otherwise
        change the thread count that later tests compare."""
        assert self._token is not None
        running, caller = self.running, trio.lowlevel.current_trio_token()
        done = trio.Event()
        result: list[outcome.Outcome[T]] = []

        async def in_server() -> None:
            result.append(await outcome.acapture(afn, running))
            caller.run_sync_soon(done.set)

        self._token.run_sync_soon(trio.lowlevel.spawn_system_task, in_server)
        await done.wait()
        return result[0].unwrap()


async def server_task_count(running: Running) -> int:
    """Tasks in the server loop, this one's system task excepted."""
    return task_count() - 1


async def drained(running: Running) -> int:
    """Wait (in the server loop) until every session is gone; the task count then."""
    await trio.testing.wait_all_tasks_blocked(0.01)
    await sessions_gone(running)
    await trio.testing.wait_all_tasks_blocked(0.01)
    return await server_task_count(running)


# -- scenarios -------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str

    def frame(self) -> str | bytes:
        return self.text


@dataclass(frozen=True)
class Binary:
    data: bytes

    def frame(self) -> str | bytes:
        return self.data


@dataclass(frozen=True)
class Speech:
    """A tone the energy VAD hears as speech and the fake ASR as words."""

    ms: int
    freq: float

    def frame(self) -> str | bytes:
        return speech(self.ms, self.freq)


@dataclass(frozen=True)
class Talk:
    """An utterance in one frame: speech, then the silence that ends it."""

    ms: int
    freq: float

    def frame(self) -> str | bytes:
        return speech(self.ms, self.freq) + quiet(800)


@dataclass(frozen=True)
class Quiet:
    ms: int

    def frame(self) -> str | bytes:
        return quiet(self.ms)


@dataclass(frozen=True)
class Zeros:
    """A binary frame of ``size`` zero bytes (around the frame size limit)."""

    size: int

    def frame(self) -> str | bytes:
        return bytes(self.size)


@dataclass(frozen=True)
class Burst:
    """``count`` copies of one bad frame: enough of them in a row is a violation."""

    count: int
    text: str

    def frames(self) -> list[str | bytes]:
        return [self.text] * self.count


@dataclass(frozen=True)
class Sync:
    """Wait until every answer owed so far has arrived."""


Frame = Text | Binary | Speech | Talk | Quiet | Zeros
Action = Frame | Burst | Sync
#: How the client leaves: close (1000) at once, drop the TCP connection (FIN,
#: or RST), or first talk one more utterance and wait for its whole turn.
Finish = Literal["close", "abort", "reset", "turn"]


@dataclass(frozen=True)
class Scenario:
    actions: list[Action]
    finish: Finish


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
sample_rates = (
    st.sampled_from([16000, 16000, 16000, 16000, 8000, 11025, 22050, 44100, 48000])
    | st.sampled_from([16000, 16000, 16000, 16000, 16000, 16000, 16000, 16000, 16000])
    | st.integers(min_value=7990, max_value=8010)
    | st.integers(min_value=47990, max_value=48010)
    | st.integers(min_value=-(2**40), max_value=2**40)
)


@st.composite
def starts(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "start", "sample_rate": draw(sample_rates)}
    audio_format = draw(st.sampled_from([None, "wav", "pcm16"]))
    if audio_format is not None:
        message["audio_format"] = audio_format
    return message


valid_messages = starts() | st.just({"type": "stop"}) | st.just({"type": "cancel"})


@st.composite
def mutated_messages(draw: st.DrawFn) -> str:
    """A valid message with one structural change, as JSON text."""
    message = dict(draw(valid_messages))
    keys = ["type", "sample_rate", "audio_format", *message]
    how = draw(st.sampled_from(["set", "delete", "type", "wrap", "extra"]))
    if how == "set":
        message[draw(st.sampled_from(keys))] = draw(json_values)
    elif how == "delete":
        message.pop(draw(st.sampled_from(sorted(message))), None)
    elif how == "type":
        kind = str(message["type"])
        message["type"] = draw(
            st.sampled_from([kind.upper(), f" {kind}", f"{kind}\x00", kind[:-1], ""]) | st.text(max_size=10)
        )
    elif how == "extra":
        message[draw(st.text(max_size=8))] = draw(json_values)
    else:
        return _dumps(draw(st.sampled_from([[message], {"message": message}, _dumps(message)])))
    return _dumps(message)


@st.composite
def mangled_text(draw: st.DrawFn) -> str:
    """Valid JSON text cut, or with one character inserted or replaced."""
    text = _dumps(draw(valid_messages))
    at = draw(st.integers(min_value=0, max_value=len(text)))
    how = draw(st.sampled_from(["cut", "insert", "replace"]))
    char = draw(st.characters(exclude_categories=["Cs"]))
    if how == "cut":
        return text[:at]
    if how == "insert":
        return text[:at] + char + text[at:]
    return text[:at] + char + text[at + 1 :]


oversized_text = st.sampled_from(
    [
        '{"type":"cancel","pad":"' + "x" * 4100 + '"}',
        '{"type":"cancel","pad":"' + "é" * 2040 + '"}',  # 4080 characters, 4112 bytes
        '{"type":"cancel","pad":"' + "x" * 4068 + '"}',  # exactly 4096 bytes: accepted
        "{" + " " * 5000 + "}",
    ]
)

#: What a scenario is made of, with weights: mostly a client's valid moves
#: (so that sessions get deep into turns, cancels and barge-ins), with every
#: kind of bad frame mixed in.
_WEIGHTED: Final[list[tuple[int, st.SearchStrategy[Action]]]] = [
    (8, st.just(Sync())),
    (10, starts().map(lambda m: Text(_dumps(m)))),
    (7, st.just(Text('{"type":"stop"}'))),
    (7, st.just(Text('{"type":"cancel"}'))),
    (
        14,
        st.builds(
            Speech,
            st.sampled_from([60, 100, 300, 700, 1200]),
            st.sampled_from([300.0, 440.0, 700.0, 1000.0]),
        ),
    ),
    (8, st.builds(Talk, st.sampled_from([300, 700, 1200]), st.sampled_from([300.0, 440.0, 700.0]))),
    (8, st.builds(Quiet, st.sampled_from([30, 100, 400, 800]))),
    (5, mutated_messages().map(Text)),
    (3, mangled_text().map(Text)),
    (3, st.builds(Text, json_values.map(_dumps))),
    (2, st.builds(Text, st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))),
    (2, oversized_text.map(Text)),
    (5, st.builds(Binary, st.binary(max_size=700))),
    (2, st.builds(Zeros, st.sampled_from([0, 1, 3, 191_998, 192_000, 192_001, 192_002]))),
    (2, st.builds(Burst, st.integers(min_value=5, max_value=22), st.sampled_from(["x", "{}", "[]"]))),
]


@st.composite
def frames(draw: st.DrawFn) -> Action:
    pick = draw(st.integers(min_value=0, max_value=sum(w for w, _ in _WEIGHTED) - 1))
    for weight, strategy in _WEIGHTED:
        if pick < weight:
            return draw(strategy)
        pick -= weight
    raise AssertionError("unreachable")


#: Most clients open with a valid start, so most scenarios reach turns.
_openings: st.SearchStrategy[list[Action]] = st.sampled_from(
    [[Text('{"type":"start","sample_rate":16000}')]] * 3 + [[]]
)
scenarios = st.builds(
    Scenario,
    st.builds(lambda a, b: a + b, _openings, st.lists(frames(), min_size=3, max_size=40)),
    st.sampled_from(["turn", "close", "abort", "reset"]),
)

#: The last utterance of a "turn" finish: a pitch no other speech in the
#: scenarios has, in the middle of one of the fake ASR's pitch bands (so the
#: chunk alignment never tips it into the next word), so that its final is
#: known by the word heard in its full 300 ms chunks.
LAST_WORDS: Final = Talk(1200, 1425.0)
LAST_WORD: Final = words_for(speech(1200, 1425.0)).split()[1].lower()


# -- checking events -------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_event(event: dict[str, Any], audio: bytes | None) -> None:
    """Raise AssertionError unless ``event`` is a well-formed server event
    (docs/protocol.md, section 4). ``parse_event`` has already accepted it."""
    kind = event["type"]
    if kind == "protocol":
        assert event["version"] == protocol.PROTOCOL_VERSION, event
        assert isinstance(event["session_id"], str) and event["session_id"], event
        assert event["mode"] in ("full", "lean"), event
    elif kind == "partial_transcript":
        assert isinstance(event["text"], str), event
    elif kind == "final_transcript":
        assert isinstance(event["text"], str) and event["text"], event
        assert isinstance(event["id"], str) and event["id"], event
    elif kind == "llm_token":
        assert isinstance(event["text"], str) and isinstance(event["done"], bool), event
        assert event["text"] == "" if event["done"] else event["text"] != "", event
    elif kind == "tts_chunk":
        assert _is_int(event["seq"]) and event["seq"] >= 1, event
        if event.get("format") == "pcm16":
            assert _is_int(event["sample_rate"]) and event["sample_rate"] > 0, event
            assert audio is not None and len(audio) == event["bytes"], event
        else:
            assert event["mime"] == "audio/wav" and isinstance(event["audio_b64"], str), event
            assert audio is None
    elif kind == "tts_phrase_done":
        assert _is_int(event["seq"]) and event["seq"] >= 1, event
    elif kind == "tts_complete":
        pass
    elif kind == "metrics":
        assert isinstance(event["id"], str), event
        assert event["t0_ms"] == 0 and _is_number(event["t2_final_ms"]), event
        for name in ("t1_first_partial_ms", "t3_first_token_ms", "t4_first_audio_ms"):
            assert event[name] is None or _is_number(event[name]), event
        assert _is_int(event["decode_runs"]), event
    elif kind == "error":
        assert event["code"] in ERROR_CODES, event
        assert isinstance(event["message"], str) and event["message"], event
        assert event["recoverable"] is (not protocol.is_fatal(ErrorCode(event["code"]))), event
        assert "reason" not in event or isinstance(event["reason"], str), event
    elif kind == "info":
        assert isinstance(event["message"], str) and event["message"], event
        assert "event" not in event or isinstance(event["event"], str), event
        assert "code" not in event or event["code"] in ERROR_CODES, event
    else:  # parse_event only lets the known types through
        raise AssertionError(f"unknown event type {kind!r}")


@dataclass
class Seen:
    """What the reader saw, and a wake-up for whoever waits on it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    hellos: int = 0
    cancel_answers: int = 0
    refusals: list[tuple[str, str | None]] = field(default_factory=list)
    closed: int | None = None
    final_ids: list[str] = field(default_factory=list)
    metrics_ids: list[str] = field(default_factory=list)
    last_chunk_seq: int | None = None
    _changed: trio.Event = field(default_factory=trio.Event)

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        kind = event["type"]
        if kind == "protocol":
            self.hellos += 1
        elif (kind, event.get("code"), event.get("event")) in CANCEL_ANSWERS:
            self.cancel_answers += 1
        elif kind == "error" and event["code"] in REFUSAL_CODES:
            self.refusals.append((event["code"], event.get("reason")))
        elif kind == "error":
            # The fake engines never fail here, and nothing may crash.
            raise AssertionError(f"unexpected error event: {event}")
        elif kind == "final_transcript":
            assert event["id"] not in self.final_ids, f"final id repeated: {event}"
            self.final_ids.append(event["id"])
        elif kind == "metrics":
            # Every turn's metrics names a final already sent, once.
            assert event["id"] in self.final_ids, f"metrics for an unknown final: {event}"
            assert event["id"] not in self.metrics_ids, f"second metrics for a turn: {event}"
            self.metrics_ids.append(event["id"])
        elif kind == "tts_chunk":
            self.last_chunk_seq = event["seq"]
        elif kind == "tts_phrase_done":
            # Phrase k is finished before phrase k+1 starts: its chunks came last.
            assert self.last_chunk_seq == event["seq"], f"phrase_done out of order: {event}"
        self._wake()

    def close(self, code: int) -> None:
        self.closed = code
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready() and self.closed is None:
            await self._changed.wait()


async def _reader(client: VoiceClient, seen: Seen) -> None:
    while True:
        try:
            received = await client.next_event()
        except ClientClosed as closed:
            seen.close(closed.code)
            return
        check_event(received.event, received.audio)
        seen.add(received.event)


@dataclass
class Owed:
    """Answers the oracle says the server owes, so far."""

    hellos: int = 0
    cancel_answers: int = 0
    refusals: list[tuple[str, str | None]] = field(default_factory=list)
    violation: bool = False

    def met_by(self, seen: Seen) -> bool:
        return (
            seen.hellos >= self.hellos
            and seen.cancel_answers >= self.cancel_answers
            and len(seen.refusals) >= len(self.refusals)
        )


def predict(oracle: protocol.ProtocolMachine, frame: str | bytes, owed: Owed) -> None:
    try:
        message = oracle.receive_text(frame) if isinstance(frame, str) else oracle.receive_bytes(frame)
    except ProtocolError as exc:
        owed.refusals.append((exc.code.value, exc.reason))
        owed.violation = exc.fatal
        return
    if isinstance(message, protocol.Start):
        owed.hellos += 1
    elif isinstance(message, protocol.Cancel):
        owed.cancel_answers += 1


async def run_scenario(url: str, scenario: Scenario, config: Config = FUZZ_CONFIG) -> Seen:
    """Play ``scenario`` on one connection and check every answer; see the module docs."""
    oracle = protocol.ProtocolMachine(config.limits)
    owed = Owed()
    seen = Seen()
    with trio.fail_after(20):
        async with connect_over_socket(url) as (client, stream):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_reader, client, seen)
                for action in scenario.actions:
                    if isinstance(action, Sync):
                        await seen.wait_until(lambda: owed.met_by(seen))
                        continue
                    for frame in action.frames() if isinstance(action, Burst) else [action.frame()]:
                        predict(oracle, frame, owed)
                        try:
                            await client.send_raw(frame)
                        except ClientClosed:
                            break  # checked below: only a predicted violation closes
                        if owed.violation:
                            break
                    if owed.violation or seen.closed is not None:
                        break
                await seen.wait_until(lambda: owed.met_by(seen))
                if scenario.finish == "turn" and not owed.violation:
                    await _last_turn(client, oracle, owed, seen)
                if not owed.violation or scenario.finish in ("abort", "reset"):
                    nursery.cancel_scope.cancel()
                # else the server closes after the violation: the reader reads up
                # to its close frame, and the nursery waits for it.
            if scenario.finish in ("abort", "reset"):
                await abort(client, stream, reset=scenario.finish == "reset")
    assert seen.refusals == owed.refusals, (seen.refusals, owed.refusals)
    assert seen.hellos == owed.hellos, (seen.hellos, owed.hellos)
    assert seen.cancel_answers == owed.cancel_answers, (seen.cancel_answers, owed.cancel_answers)
    if owed.violation:
        assert seen.refusals[-1] == ("PROTOCOL_VIOLATION", "too_many_errors")
        if scenario.finish in ("abort", "reset"):
            assert seen.closed in (1008, None), seen.closed
        else:
            assert seen.closed == 1008, seen.closed
    else:
        assert seen.closed is None, f"the server closed the connection with {seen.closed}"
    return seen


async def _last_turn(
    client: VoiceClient, oracle: protocol.ProtocolMachine, owed: Owed, seen: Seen
) -> None:
    """The same session, after all that, answers one more utterance in full."""
    frames: list[str | bytes] = [LAST_WORDS.frame()]
    if oracle.state is protocol.ClientState.IDLE or oracle.sample_rate != 16000:
        if oracle.state is protocol.ClientState.STREAMING:
            frames.insert(0, '{"type":"stop"}')
        frames.insert(-1, '{"type":"start","sample_rate":16000}')
    for frame in frames:
        predict(oracle, frame, owed)
        await client.send_raw(frame)

    def final_id() -> str | None:
        for event in reversed(seen.events):
            if event["type"] == "final_transcript" and LAST_WORD in event["text"].lower():
                return str(event["id"])
        return None

    await seen.wait_until(lambda: (tid := final_id()) is not None and tid in seen.metrics_ids)
    assert seen.closed is None, f"closed with {seen.closed} during the last turn"
    tid = final_id()
    start = next(i for i, e in enumerate(seen.events) if e.get("id") == tid)
    kinds = [e["type"] for e in seen.events[start:] if e["type"] != "partial_transcript"]
    assert "llm_token" in kinds and "tts_chunk" in kinds and kinds[-2:] == ["tts_complete", "metrics"], kinds


async def full_turn(url: str) -> None:
    """A fresh session completes a whole turn."""
    async with connect(url) as client:
        await client.start(16000)
        await say(client)
        turn = await read_until(client, "metrics")
    assert turn.closed is None
    assert_full_turn(turn)
