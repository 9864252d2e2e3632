"""OpenAiLlm against scripted servers: httpx.MockTransport for the HTTP
semantics, and a small HTTP server of our own on 127.0.0.1 where real sockets
matter (refused, reset, cut and hanging streams, connection reuse)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel
import trio.testing

from voicetrio.engines.base import ChatMessage, LlmEngine, LlmError
from voicetrio.engines.llm import openai_compat as openai_llm
from voicetrio.engines.llm.openai_compat import OpenAiLlm, scrub

KEY = "sk-proj-Zq4vW9xR2mT7bN5kL8pJ3hG6fD1sA0eC"
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello?"},
]


def event(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


def delta(content: str | None, *, role: str | None = None, finish: str | None = None) -> bytes:
    d: dict[str, Any] = {"content": content}
    if role is not None:
        d["role"] = role
    return event(json.dumps({"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}))


ROLE = delta(None, role="assistant")  # what llama.cpp sends first
DONE = event("[DONE]")
HAPPY = [ROLE, delta("Hel"), delta("lo"), delta(" there"), delta(None, finish="stop"), DONE]


# -- MockTransport -----------------------------------------------------------


class ScriptedBody(httpx.AsyncByteStream):
    """A response body that records how far it was read and whether it was closed."""

    def __init__(
        self, chunks: list[bytes], *, hang: bool = False, gate_after: int | None = None
    ) -> None:
        self.chunks = chunks
        self.hang = hang
        # The chunks from index gate_after on wait for the gate to open.
        self.gate_after = gate_after
        self.gate = trio.Event()
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, data in enumerate(self.chunks):
            if i == self.gate_after:
                await self.gate.wait()
            # A network read is a checkpoint; cancellation lands here.
            await trio.lowlevel.checkpoint()
            self.sent += 1
            yield data
        if self.hang:
            await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Mock:
    """A scripted server behind httpx.MockTransport."""

    responses: list[httpx.Response | Exception]
    requests: list[httpx.Request] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        result = self.responses.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def sse_response(body: ScriptedBody, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/event-stream"}, stream=body)


MakeLlm = Callable[..., OpenAiLlm]


@pytest.fixture
async def make_llm() -> AsyncIterator[MakeLlm]:
    made: list[OpenAiLlm] = []

    def make(
        base_url: str = "http://llm.test/v1",
        *,
        key: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OpenAiLlm:
        llm = OpenAiLlm(
            base_url=base_url,
            api_key=key,
            model="test-model",
            max_tokens=64,
            temperature=0.3,
            transport=transport,
            connect_timeout_s=2.0,
        )
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.aclose()


async def collect(llm: OpenAiLlm, got: list[str] | None = None) -> list[str]:
    out = got if got is not None else []
    async with llm.stream(MESSAGES) as deltas:
        async for d in deltas:
            out.append(d)
    return out


def test_is_an_llm_engine() -> None:
    llm: LlmEngine = OpenAiLlm(base_url="http://x/v1", model="m", max_tokens=1, temperature=0)
    assert repr(llm) == "OpenAiLlm(base_url='http://x/v1', model='m')"


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="base_url"):
        OpenAiLlm(base_url="llm.test/v1", model="m", max_tokens=1, temperature=0)
    with pytest.raises(ValueError, match="max_tokens"):
        OpenAiLlm(base_url="http://x", model="m", max_tokens=0, temperature=0)


async def test_streams_text_deltas_and_sends_the_request(make_llm: MakeLlm) -> None:
    body = ScriptedBody(HAPPY)
    mock = Mock([sse_response(body)])
    llm = make_llm("http://llm.test/v1/", transport=mock.transport)
    assert await collect(llm) == ["Hel", "lo", " there"]
    assert body.closed
    (request,) = mock.requests
    assert request.method == "POST"
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["accept"] == "text/event-stream"
    assert json.loads(request.content) == {
        "model": "test-model",
        "messages": MESSAGES,
        "max_tokens": 64,
        "temperature": 0.3,
        "stream": True,
    }
    assert llm.ready


@pytest.mark.parametrize("key", ["", KEY])
async def test_authorization_only_when_a_key_is_set(make_llm: MakeLlm, key: str) -> None:
    mock = Mock([sse_response(ScriptedBody(HAPPY))])
    await collect(make_llm(key=key, transport=mock.transport))
    headers = mock.requests[0].headers
    if key:
        assert headers["authorization"] == f"Bearer {KEY}"
    else:
        assert "authorization" not in headers


async def test_deltas_split_across_reads(make_llm: MakeLlm) -> None:
    raw = b"".join(HAPPY)
    body = ScriptedBody([raw[i : i + 3] for i in range(0, len(raw), 3)])
    assert await collect(make_llm(transport=Mock([sse_response(body)]).transport)) == [
        "Hel",
        "lo",
        " there",
    ]


async def test_bytes_after_done_are_ignored(make_llm: MakeLlm) -> None:
    body = ScriptedBody([delta("a"), DONE + b"data: {not json\n\n"])
    assert await collect(make_llm(transport=Mock([sse_response(body)]).transport)) == ["a"]


@pytest.mark.parametrize(
    ("status", "content", "expected"),
    [
        (
            400,
            b'{"error": {"message": "maximum context length is 2048 tokens", "type": "x"}}',
            "HTTP 400 Bad Request from http://llm.test/v1: maximum context length is 2048 tokens",
        ),
        (502, b"upstream   down\n", "HTTP 502 Bad Gateway from http://llm.test/v1: upstream down"),
        (503, b"", "HTTP 503 Service Unavailable from http://llm.test/v1"),
        (
            429,
            b'{"error": "slow down"}',
            "HTTP 429 Too Many Requests from http://llm.test/v1: slow down",
        ),
    ],
)
async def test_http_errors_pass_the_server_message_on(
    make_llm: MakeLlm, status: int, content: bytes, expected: str
) -> None:
    body = ScriptedBody([content])
    llm = make_llm(transport=Mock([sse_response(body, status)]).transport)
    with pytest.raises(LlmError) as info:
        await collect(llm)
    assert str(info.value) == expected
    assert body.closed


async def test_error_body_is_read_only_up_to_a_bound(make_llm: MakeLlm) -> None:
    body = ScriptedBody([b"x" * 1024] * 1000)  # a megabyte of error page
    llm = make_llm(transport=Mock([sse_response(body, 500)]).transport)
    with pytest.raises(LlmError, match=r"^HTTP 500 Internal Server Error") as info:
        await collect(llm)
    assert body.sent <= 10
    assert body.closed
    assert len(str(info.value)) <= 300


async def test_401_with_an_echoed_key_is_scrubbed(
    make_llm: MakeLlm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {
        "error": {
            "message": f"Incorrect API key provided: {KEY}. Also seen as {KEY[:14]}****{KEY[-4:]}.",
            "type": "invalid_request_error",
        }
    }
    mock = Mock([sse_response(ScriptedBody([json.dumps(echo).encode()]), 401)])
    llm = make_llm(key=KEY, transport=mock.transport)
    with pytest.raises(LlmError) as info:
        await collect(llm)
    message = str(info.value)
    assert message.startswith(
        "HTTP 401 Unauthorized from http://llm.test/v1: Incorrect API key provided: ***."
    )
    assert_no_key(message)
    assert_no_key_logged(caplog)


def assert_no_key(text: str) -> None:
    # Not even an 8-character piece of it.
    for i in range(len(KEY) - 7):
        assert KEY[i : i + 8] not in text, text


def assert_no_key_logged(caplog: pytest.LogCaptureFixture) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        assert_no_key(formatter.format(record))
        assert_no_key(repr(record.__dict__))


def test_scrub() -> None:
    assert scrub(f"a {KEY} b", KEY) == "a *** b"
    assert scrub(f"key: {KEY[:10]}...", KEY) == "key: ***"
    assert scrub(f"key={KEY}", KEY) == "key=***"
    assert scrub("nothing secret here, sk-proj", KEY) == "nothing secret here, sk-proj"
    assert scrub("short key abc", "abc") == "short key ***"
    assert scrub("any text", "") == "any text"


async def test_malformed_chunk(make_llm: MakeLlm) -> None:
    body = ScriptedBody([delta("ok"), b'data: {"choices": [\n\n', delta("never")])
    got: list[str] = []
    with pytest.raises(LlmError, match=r"^bad stream from the server: malformed JSON"):
        await collect(make_llm(transport=Mock([sse_response(body)]).transport), got)
    assert got == ["ok"]
    assert body.closed


async def test_error_event_mid_stream(make_llm: MakeLlm) -> None:
    error = event(json.dumps({"error": {"message": f"slot crashed for {KEY}"}}))
    body = ScriptedBody([ROLE, delta("par"), error, DONE])
    got: list[str] = []
    with pytest.raises(LlmError) as info:
        await collect(make_llm(key=KEY, transport=Mock([sse_response(body)]).transport), got)
    assert str(info.value) == "the server reported an error mid-reply: slot crashed for ***"
    assert got == ["par"]


async def test_stream_without_done(make_llm: MakeLlm) -> None:
    body = ScriptedBody([ROLE, delta("cut"), delta(None, finish="stop")])
    got: list[str] = []
    with pytest.raises(LlmError, match=r"^the stream ended without \[DONE\]"):
        await collect(make_llm(transport=Mock([sse_response(body)]).transport), got)
    assert got == ["cut"]


async def test_transport_failure_on_open_and_readiness(make_llm: MakeLlm) -> None:
    mock = Mock(
        [httpx.ConnectError("[Errno 111] Connection refused"), sse_response(ScriptedBody(HAPPY))]
    )
    llm = make_llm(key=KEY, transport=mock.transport)
    with pytest.raises(LlmError) as info:
        await collect(llm)
    assert str(info.value) == (
        "cannot reach http://llm.test/v1: ConnectError: [Errno 111] Connection refused"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not llm.ready
    assert await collect(llm) == ["Hel", "lo", " there"]
    assert llm.ready


async def test_a_connection_dropped_before_any_answer_is_retried_once(make_llm: MakeLlm) -> None:
    dropped = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    mock = Mock([dropped, sse_response(ScriptedBody(HAPPY))])
    assert await collect(make_llm(transport=mock.transport)) == ["Hel", "lo", " there"]
    assert len(mock.requests) == 2
    mock = Mock([dropped, dropped])
    with pytest.raises(LlmError, match=r"^cannot reach .*RemoteProtocolError: Server disconnected"):
        await collect(make_llm(transport=mock.transport))


async def test_credentials_in_base_url_are_not_shown(make_llm: MakeLlm) -> None:
    mock = Mock([httpx.ConnectError("refused")])
    llm = make_llm("http://user:pw@llm.test/v1", transport=mock.transport)
    with pytest.raises(
        LlmError, match=r"^cannot reach http://llm\.test/v1: ConnectError: refused$"
    ):
        await collect(llm)


async def test_cancelling_mid_stream_closes_the_response_at_once(make_llm: MakeLlm) -> None:
    body = ScriptedBody([ROLE, delta("one")], hang=True)
    llm = make_llm(transport=Mock([sse_response(body)]).transport)
    got: list[str] = []
    with trio.fail_after(1), trio.CancelScope() as scope:
        async with llm.stream(MESSAGES) as deltas:
            async for d in deltas:
                got.append(d)
                scope.cancel()
    assert scope.cancelled_caught
    assert got == ["one"]
    assert body.closed
    assert body.sent == 2


@pytest.mark.parametrize("how", ["break", "raise"])
async def test_leaving_the_context_early_closes_the_response(make_llm: MakeLlm, how: str) -> None:
    body = ScriptedBody([ROLE, delta("one"), delta("two"), *HAPPY], gate_after=3)
    llm = make_llm(transport=Mock([sse_response(body)]).transport)
    with pytest.raises(KeyError, match="consumer failed") if how == "raise" else _nothing():
        async with llm.stream(MESSAGES) as deltas:
            async for _ in deltas:
                await trio.testing.wait_all_tasks_blocked()  # let the reader read ahead
                if how == "raise":
                    raise KeyError("consumer failed")
                break
    assert body.closed
    assert body.sent == 3
    body.gate.set()  # more to read now, but nobody may read it
    await trio.testing.wait_all_tasks_blocked()
    assert body.sent == 3


@contextmanager
def _nothing() -> Iterator[None]:
    yield


async def test_read_ahead_is_bounded(make_llm: MakeLlm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_llm, "MAX_REPLY_CHARS", 8)
    body = ScriptedBody([delta("12345"), delta("67890"), DONE])
    got: list[str] = []
    with pytest.raises(LlmError, match=r"^bad stream from the server: the reply is longer than 8"):
        await collect(make_llm(transport=Mock([sse_response(body)]).transport), got)
    assert got == ["12345"]


async def test_closed_client(make_llm: MakeLlm) -> None:
    llm = make_llm(transport=Mock([]).transport)
    await llm.aclose()
    assert not llm.ready
    with pytest.raises(LlmError, match="client is closed"):
        await collect(llm)


async def test_key_never_in_errors_or_logs(
    make_llm: MakeLlm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echoed = json.dumps({"error": {"message": f"bad key {KEY}"}}).encode()
    mock = Mock(
        [
            httpx.ConnectError(f"refused by proxy for {KEY}"),
            sse_response(ScriptedBody([echoed]), 403),
            sse_response(ScriptedBody([f"Bearer {KEY} rejected".encode()]), 500),
            sse_response(ScriptedBody([delta("x"), event(json.dumps({"error": KEY}))])),
            sse_response(ScriptedBody(HAPPY)),
        ]
    )
    llm = make_llm(key=KEY, transport=mock.transport)
    for _ in range(4):
        with pytest.raises(LlmError) as info:
            await collect(llm)
        assert_no_key(str(info.value))
        assert_no_key(repr(info.value.args))
    await collect(llm)
    assert_no_key(repr(llm))
    assert_no_key_logged(caplog)
    assert caplog.records  # httpx did log the requests


# -- a real HTTP server on 127.0.0.1 ------------------------------------------

Handler = Callable[[trio.SocketStream, "Connection"], Awaitable[None]]


@dataclass
class Connection:
    """The server's side of one client connection."""

    stream: trio.SocketStream
    buffer: bytearray = field(default_factory=bytearray)
    requests: list[bytes] = field(default_factory=list)

    async def read_request(self) -> bytes | None:
        """The next request's head and body, or None if the client closed."""
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.buffer += data
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = await self.stream.receive_some()
            if not data:
                return None
            rest += data
        self.buffer[:] = rest[length:]
        self.requests.append(head + b"\r\n\r\n" + rest[:length])
        return self.requests[-1]

    async def send_stream_head(self) -> None:
        await self.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"
        )

    async def send_chunk(self, data: bytes) -> None:
        await self.stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_body(self) -> None:
        await self.stream.send_all(b"0\r\n\r\n")

    async def reset(self) -> None:
        # SO_LINGER 0: close() sends RST instead of FIN.
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def wait_client_close(self) -> None:
        while await self.stream.receive_some():
            pass


@dataclass
class LocalServer:
    port: int
    connections: list[Connection]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


async def start_server(nursery: trio.Nursery, handler: Handler) -> LocalServer:
    connections: list[Connection] = []

    async def serve(stream: trio.SocketStream) -> None:
        conn = Connection(stream)
        connections.append(conn)
        async with stream:
            # A client that resets must not take the whole server down.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await handler(stream, conn)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return LocalServer(port, connections)


async def answer_all(stream: trio.SocketStream, conn: Connection) -> None:
    """A well-behaved server: every request on the connection gets a full reply."""
    while await conn.read_request() is not None:
        await conn.send_stream_head()
        for data in HAPPY:
            await conn.send_chunk(data)
        await conn.end_body()


async def test_connection_refused(make_llm: MakeLlm) -> None:
    # A bound socket that does not listen: nobody can take the port meanwhile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        llm = make_llm(f"http://127.0.0.1:{port}/v1", key=KEY)
        with trio.fail_after(5), pytest.raises(LlmError) as info:
            await collect(llm)
    assert str(info.value).startswith(f"cannot reach http://127.0.0.1:{port}/v1: ConnectError: ")
    assert "refused" in str(info.value).lower()
    assert not llm.ready


async def test_connection_reset_mid_stream(make_llm: MakeLlm, nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream, conn: Connection) -> None:
        await conn.read_request()
        await conn.send_stream_head()
        await conn.send_chunk(ROLE + delta("half"))
        await trio.testing.wait_all_tasks_blocked()  # let the client read it first
        await conn.reset()

    server = await start_server(nursery, handler)
    got: list[str] = []
    with (
        trio.fail_after(5),
        pytest.raises(LlmError, match=r"^the connection broke mid-reply: ReadError"),
    ):
        await collect(make_llm(server.base_url), got)
    assert got == ["half"]


@pytest.mark.parametrize("clean_end", [True, False])
async def test_stream_stops_without_done(
    make_llm: MakeLlm, nursery: trio.Nursery, clean_end: bool
) -> None:
    async def handler(stream: trio.SocketStream, conn: Connection) -> None:
        await conn.read_request()
        await conn.send_stream_head()
        await conn.send_chunk(ROLE + delta("so far"))
        if clean_end:
            await conn.end_body()  # a complete HTTP body, but no [DONE]
        # else: FIN in the middle of the chunked body

    server = await start_server(nursery, handler)
    expected = (
        r"^the stream ended without \[DONE\]"
        if clean_end
        else "^the connection broke mid-reply: RemoteProtocolError: .*incomplete chunked read"
    )
    got: list[str] = []
    with trio.fail_after(5), pytest.raises(LlmError, match=expected):
        await collect(make_llm(server.base_url), got)
    assert got == ["so far"]


async def test_cancelling_a_hung_stream_disconnects_at_once(
    make_llm: MakeLlm, nursery: trio.Nursery
) -> None:
    disconnected = trio.Event()

    async def handler(stream: trio.SocketStream, conn: Connection) -> None:
        await conn.read_request()
        await conn.send_stream_head()
        await conn.send_chunk(ROLE + delta("thinking"))
        await conn.wait_client_close()  # and never send anything more
        disconnected.set()

    server = await start_server(nursery, handler)
    llm = make_llm(server.base_url)
    got: list[str] = []
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with llm.stream(MESSAGES) as deltas:
                async for d in deltas:
                    got.append(d)
                    scope.cancel()
        assert scope.cancelled_caught
        # The client side is closed by now; the server sees it right away.
        await disconnected.wait()
    assert got == ["thinking"]


async def test_connection_is_reused_after_a_complete_stream(
    make_llm: MakeLlm, nursery: trio.Nursery
) -> None:
    server = await start_server(nursery, answer_all)
    llm = make_llm(server.base_url)
    with trio.fail_after(5):
        for _ in range(3):
            assert await collect(llm) == ["Hel", "lo", " there"]
    (conn,) = server.connections
    assert len(conn.requests) == 3
    assert b"authorization" not in conn.requests[0].lower()


async def test_a_body_left_open_after_done_costs_little(
    make_llm: MakeLlm, nursery: trio.Nursery
) -> None:
    disconnected = trio.Event()

    async def handler(stream: trio.SocketStream, conn: Connection) -> None:
        await conn.read_request()
        await conn.send_stream_head()
        for data in HAPPY:
            await conn.send_chunk(data)
        await conn.wait_client_close()  # the body never ends
        disconnected.set()

    server = await start_server(nursery, handler)
    with trio.fail_after(5):
        start = trio.current_time()
        assert await collect(make_llm(server.base_url)) == ["Hel", "lo", " there"]
        # Only the bounded wait for the end of the body, then the connection is dropped.
        assert trio.current_time() - start < openai_llm.DONE_DRAIN_S + 0.5
        await disconnected.wait()


async def test_stale_keep_alive_connection_is_replaced(
    make_llm: MakeLlm, nursery: trio.Nursery
) -> None:
    # Like llama.cpp: it promises keep-alive, then drops the connection when
    # the next request arrives on it.
    async def handler(stream: trio.SocketStream, conn: Connection) -> None:
        if len(server.connections) == 1:
            await conn.read_request()
            await conn.send_stream_head()
            for data in HAPPY:
                await conn.send_chunk(data)
            await conn.end_body()
            await conn.read_request()
            return  # closed without an answer
        await answer_all(stream, conn)

    server = await start_server(nursery, handler)
    llm = make_llm(server.base_url, key=KEY)
    with trio.fail_after(5):
        assert await collect(llm) == ["Hel", "lo", " there"]
        assert await collect(llm) == ["Hel", "lo", " there"]
    assert [len(c.requests) for c in server.connections] == [2, 1]
    head = server.connections[1].requests[0]
    assert b"authorization:" in head.lower()
    assert f"Bearer {KEY}".encode() in head
