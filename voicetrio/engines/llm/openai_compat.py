"""The LLM engine for any OpenAI-compatible chat completions endpoint.

:class:`OpenAiLlm` streams ``POST {base_url}/chat/completions`` with one
``httpx.AsyncClient`` for the whole process, so sessions share a connection
pool and a remote endpoint's TCP and TLS set-up is paid once, not per turn.
The bytes are parsed by the sans-IO :mod:`voicetrio.engines.llm.sse`; this module only
moves them and maps every failure to :class:`LlmError`.

No timeouts but the connect (and pool) timeout are applied here: the turn owns
the first-token, gap and total deadlines and enforces them by cancelling, so
a stream must close promptly on cancellation, which it does.

The body is read by a task of its own, which hands text deltas to the
consumer through a channel. That task is only ever stopped *inside* a read
(by cancellation, or by the end of the body): httpx reads bodies through a
chain of async generators, and stopping between two reads would leave that
chain suspended, for Trio to finalize (with a ResourceWarning) whenever the
collector finds it. The read-ahead this allows is bounded by
:data:`MAX_REPLY_CHARS`.

The API key is a secret: it is sent only in the ``Authorization`` header and
scrubbed from every message this module produces, including error bodies a
server might echo it in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, Literal

import httpx
import trio

from voicetrio.core.tools import Toolbox, ToolCall
from voicetrio.engines.base import ChatMessage, LlmError
from voicetrio.engines.llm.sse import SseParser, StreamErrorEvent, error_message, parse_chat_chunk
from voicetrio.engines.llm.tool_calls import RoundAssembler
from voicetrio.logs import log_event

#: How much of an error response is read for its message.
ERROR_BODY_LIMIT: Final = 8192
#: How long, at most, to wait after ``[DONE]`` for the end of the body, which
#: lets the connection go back to the pool (it normally arrives with [DONE]).
DONE_DRAIN_S: Final = 0.1
#: How much to read after ``[DONE]`` before giving up on reusing the connection.
DONE_DRAIN_LIMIT: Final = 4096
#: Reply text read ahead of the consumer beyond this is an error: an honest
#: server stops at ``max_tokens`` (32768 tokens is about 150 000 characters).
MAX_REPLY_CHARS: Final = 1 << 20
#: Upper bound on closing a response, cancellation or not.
CLOSE_TIMEOUT_S: Final = 1.0
#: Rounds in which the model may call tools; the round after them is asked
#: without tools, so a reply always ends (the answer usually comes in round 2).
MAX_TOOL_ROUNDS: Final = 3
#: A tool that takes longer gives the model an error result instead.
TOOL_TIMEOUT_S: Final = 5.0
_MESSAGE_LIMIT: Final = 300
# A fragment of the key this long inside a word of a message masks the word:
# servers often echo keys half-masked ("sk-abc...wxyz") or cut.
_KEY_FRAGMENT: Final = 8
_WORD: Final = re.compile(r"[A-Za-z0-9_\-\.~+/=]+")


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` or any word sharing a long fragment with it."""
    if not secret:
        return text
    text = text.replace(secret, "***")
    if len(secret) < _KEY_FRAGMENT:
        return text
    fragments = {secret[i : i + _KEY_FRAGMENT] for i in range(len(secret) - _KEY_FRAGMENT + 1)}

    def mask(match: re.Match[str]) -> str:
        word = match.group()
        for i in range(len(word) - _KEY_FRAGMENT + 1):
            if word[i : i + _KEY_FRAGMENT] in fragments:
                return "***"
        return word

    return _WORD.sub(mask, text)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _describe_one(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _describe(exc: BaseException) -> str:
    """The exception and, when it says more, its root cause: httpx's
    "all attempts to connect failed" hides "Connection refused" there."""
    text = _describe_one(exc)
    root = exc
    for _ in range(8):
        if isinstance(root, BaseExceptionGroup):
            root = root.exceptions[0]
        else:
            # httpcore re-raises "from None", which leaves the cause in __context__.
            below = root.__cause__ or root.__context__
            if below is None:
                break
            root = below
    root_text = _describe_one(root)
    if root is exc or str(root) in text:
        return text
    return f"{text} ({root_text})"


def _without_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class _Deltas:
    """What ``stream`` yields: the text deltas, then the reader's error if any."""

    def __init__(self, receive: trio.MemoryReceiveChannel[str]) -> None:
        self._receive = receive
        # Set by the reader before it closes the channel.
        self.error: LlmError | None = None

    def __aiter__(self) -> _Deltas:
        return self

    async def __anext__(self) -> str:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.error is not None:
                raise self.error from None
            raise StopAsyncIteration from None


class _Reader:
    """Parses one response body (one round) into a :class:`_Deltas`.

    The text goes to the consumer as it comes; with tools offered, the
    :class:`RoundAssembler` holds back what may be a written-out tool call
    and collects the calls, which :attr:`calls` gives once the round is
    complete. While the model writes a call, an empty delta marks each chunk:
    the turn's token timeouts see the model working.
    """

    def __init__(
        self,
        send: trio.MemorySendChannel[str],
        deltas: _Deltas,
        make_error: Callable[[str], LlmError],
        assembler: RoundAssembler,
        *,
        chars: int = 0,
    ) -> None:
        self._send = send
        self._deltas = deltas
        self._make_error = make_error
        self._assembler = assembler
        self._parser = SseParser()
        self._scope = trio.CancelScope()
        self.chars = chars
        self._ended = False  # the consumer has seen, or will see, the end
        self._after_done: int | None = None  # bytes read after [DONE]
        #: The round is complete and the model called these tools: the
        #: reply goes on in another round (the consumer has not seen the end).
        self.calls: list[ToolCall] = []

    @property
    def draining(self) -> bool:
        """After [DONE]: reading the end of the body, for at most DONE_DRAIN_S."""
        return self._after_done is not None

    async def run(self, response: httpx.Response) -> None:
        with self._scope:
            try:
                async for data in response.aiter_bytes():
                    # Never break, raise or await here: see the module docs.
                    self._handle(data)
            except httpx.HTTPError as exc:
                self._finish(f"the connection broke mid-reply: {_describe(exc)}")
            else:
                self._finish("the stream ended without [DONE] (reply cut short)")

    def _handle(self, data: bytes) -> None:
        if self._after_done is not None:
            self._after_done += len(data)
            if self._after_done > DONE_DRAIN_LIMIT:
                self._scope.cancel()
            return
        if self._ended:  # stopped for an error: ignore what comes until the cancel lands
            return
        try:
            for payload in self._parser.feed(data):
                chunk = parse_chat_chunk(payload)
                if chunk.done:
                    held, calls = self._assembler.finish()
                    self._pass(held)
                    # Read on briefly, only so the connection can be reused.
                    self._after_done = 0
                    self._scope.deadline = trio.current_time() + DONE_DRAIN_S
                    self._ended = True
                    self.calls = calls
                    if not calls:
                        self._send.close()
                    return
                self._pass(self._assembler.feed(chunk))
                if self._assembler.busy:
                    self._send.send_nowait("")
        except StreamErrorEvent as exc:
            self._stop(f"the server reported an error mid-reply: {exc}")
        except ValueError as exc:
            self._stop(f"bad stream from the server: {exc}")

    def _pass(self, text: str) -> None:
        if text:
            self.chars += len(text)
            if self.chars > MAX_REPLY_CHARS:
                raise ValueError(f"the reply is longer than {MAX_REPLY_CHARS} characters")
            self._send.send_nowait(text)

    def _stop(self, message: str) -> None:
        self._finish(message)
        self._scope.cancel()

    def _finish(self, message: str) -> None:
        """End the deltas with an error, unless they already ended."""
        if self._ended:
            return
        self._ended = True
        self._deltas.error = self._make_error(message)
        self._send.close()


class _StatusError(LlmError):
    """The server answered a request with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def about_tools(self) -> bool:
        """Refused because of the tools (not the key, the load or the model)."""
        return self.status not in (401, 403, 408, 429, 503) and "tool" in str(self).lower()


class _Rounds:
    """The reply's rounds, read by one task: a round's text goes to the
    consumer; when the model called tools instead of (or after) speaking,
    they run here, their results go back as ``tool`` messages, and the next
    round streams on the same deltas. At most ``tool_rounds`` rounds
    offer tools; the one after is asked with none, so it must answer.

    The results go back as the protocol has it (``tool_results="messages"``:
    the assistant's ``tool_calls`` and one ``tool`` message each), or, for
    small models that answer a tool message with more calls
    (``"text"``: Qwen2.5-Coder 0.5B echoed its call in every variant we
    tried), as one system note of plain text in a last round without tools. A
    tool's failure is a result the model reads (``{"error": ...}``); a round
    that fails ends the deltas with the error, like a one-round reply.
    Cancelling the task (the turn's cancel, a barge-in) stops a round or a
    tool wherever it is; :attr:`response` is closed by the stream either way.
    """

    def __init__(
        self,
        llm: OpenAiLlm,
        body: dict[str, Any],
        tools: Toolbox | None,
        send: trio.MemorySendChannel[str],
        deltas: _Deltas,
        response: httpx.Response,
    ) -> None:
        self._llm = llm
        self._body = body
        self._tools = tools
        self._send = send
        self._deltas = deltas
        self.response = response
        self._reader: _Reader | None = None

    @property
    def draining(self) -> bool:
        """The last round is complete and its body is being read to the end."""
        reader = self._reader
        return reader is not None and reader.draining and not reader.calls

    async def run(self) -> None:
        chars = 0
        with self._send:
            last = self._llm.tool_rounds
            for number in range(last + 1):
                names = self._tools.names if self._tools else []
                reader = _Reader(
                    self._send, self._deltas, self._llm._error, RoundAssembler(names), chars=chars
                )
                self._reader = reader
                try:
                    await reader.run(self.response)
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                        await self.response.aclose()
                chars = reader.chars
                if not reader.calls or self._tools is None:
                    return  # the reply is complete, or failed
                if number == last or "tools" not in self._body:
                    if not chars:
                        self._deltas.error = self._llm._error(
                            f"the model called tools {number + 1} times without answering"
                        )
                    return
                await self._call_tools(reader.calls, self._tools)
                if number + 1 == last or self._llm.tool_results == "text":
                    del self._body["tools"]
                try:
                    self.response = await self._llm._open(self._body)
                except LlmError as exc:
                    self._deltas.error = exc
                    return

    async def _call_tools(self, calls: list[ToolCall], tools: Toolbox) -> None:
        results = []
        for call in calls:
            began = trio.current_time()
            result = _tool_timed_out(call)
            with trio.move_on_after(TOOL_TIMEOUT_S):
                result = await tools.run(call)
            log_event(
                None,
                "tool_call",
                tool=call.name,
                ms=round((trio.current_time() - began) * 1000),
                error=result.startswith('{"error"'),
            )
            results.append(result)
            # The model is working: the turn's token timeouts see it.
            self._send.send_nowait("")
        messages: list[dict[str, Any]] = self._body["messages"]
        if self._llm.tool_results == "text":
            messages.append({"role": "system", "content": results_note(calls, results)})
            return
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": _echoed(call.arguments)},
                    }
                    for call in calls
                ],
            }
        )
        for call, result in zip(calls, results, strict=True):
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})


def results_note(calls: Sequence[ToolCall], results: Sequence[str]) -> str:
    """The tools' results as one note of plain text (``tool_results="text"``)."""
    said = []
    for call, result in zip(calls, results, strict=True):
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            arguments = {}
        shown = ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}"
            for k, v in (arguments.items() if isinstance(arguments, dict) else ())
        )
        try:
            error = json.loads(result).get("error") if result.startswith('{"error"') else None
        except (ValueError, AttributeError):
            error = None
        outcome = f"failed: {error}" if error else f"gave: {result}"
        said.append(f"{call.name}({shown}) {outcome}")
    return (
        "Tool results for the user's last message: "
        + "; ".join(said)
        + ". Answer the user now in plain spoken words, using these results; no JSON."
    )


def _echoed(arguments: str) -> str:
    """A call's arguments as sent back in the history: servers that render
    them into the prompt (llama.cpp) refuse a history whose arguments are
    not a JSON object, and the tool's error result already says what was wrong."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return "{}"
    return arguments if isinstance(value, dict) else "{}"


def _tool_timed_out(call: ToolCall) -> str:
    return json.dumps({"error": f"the tool {call.name} took longer than {TOOL_TIMEOUT_S:g} s"})


class OpenAiLlm:
    """Streams chat replies from an OpenAI-compatible server (see module docs).

    ``ready`` is False once :meth:`aclose` was called, and while the last
    attempt to reach the server failed at the transport level (connection
    refused, reset): it turns True again with the next answer.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        model: str,
        max_tokens: int,
        temperature: float,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_timeout_s: float = 5.0,
        tools: Literal["on", "auto", "off"] = "off",
        tool_rounds: int = MAX_TOOL_ROUNDS,
        tool_results: Literal["messages", "text"] = "messages",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._url = self.base_url + "/chat/completions"
        self._shown_url = _without_userinfo(self.base_url)
        self._key = api_key
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            # Read and write stay unbounded: the turn's deadlines cancel us.
            timeout=httpx.Timeout(None, connect=connect_timeout_s, pool=connect_timeout_s),
        )
        self._reachable = True
        self._closed = False
        #: Whether replies are offered the tools given to :meth:`stream`
        #: ("on", or "auto" until the server refuses them once).
        self.calls_tools = tools != "off"
        self._tools_fallback = tools == "auto"
        if tool_rounds < 1:
            raise ValueError(f"tool_rounds must be >= 1, got {tool_rounds}")
        #: Rounds that may call tools before one that must answer (see _Rounds).
        self.tool_rounds = tool_rounds
        #: How the results go back: ``tool`` messages, or a note of text.
        self.tool_results = tool_results

    def __repr__(self) -> str:
        return f"OpenAiLlm(base_url={self._shown_url!r}, model={self.model!r})"

    @property
    def ready(self) -> bool:
        return self._reachable and not self._closed

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()

    def _error(self, message: str) -> LlmError:
        return LlmError(_shorten(scrub(message, self._key)))

    def _body(self, messages: Sequence[ChatMessage], tools: Toolbox | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
        }
        if tools:
            body["tools"] = tools.definitions()
        return body

    @contextlib.asynccontextmanager
    async def stream(
        self, messages: Sequence[ChatMessage], *, tools: Toolbox | None = None
    ) -> AsyncIterator[AsyncIterator[str]]:
        """The reply's text deltas; with ``tools`` (and :attr:`calls_tools`),
        the model may call them first: the calls run between rounds, and the
        deltas carry on with the next round's text (see :class:`_Rounds`)."""
        if self._closed:
            raise LlmError("the client is closed")
        offered = tools if tools and self.calls_tools else None
        body = self._body(messages, offered)
        try:
            response = await self._open(body)
        except _StatusError as exc:
            if offered is None or not self._tools_fallback or not exc.about_tools:
                raise
            # "auto": a server that refuses tools (llama.cpp without --jinja,
            # an Ollama model without them) is asked again without, from now on.
            self.calls_tools = False
            log_event(None, "llm_tools_refused", level=logging.WARNING, error=str(exc))
            offered = None
            body = self._body(messages, None)
            response = await self._open(body)
        send, receive = trio.open_memory_channel[str](math.inf)
        deltas = _Deltas(receive)
        rounds = _Rounds(self, body, offered, send, deltas, response)
        raised: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rounds.run)
                try:
                    yield deltas
                except BaseException as exc:
                    # Re-raised below, outside the nursery, so the consumer
                    # gets back its own exception rather than a group.
                    raised = exc
                    nursery.cancel_scope.cancel()
                else:
                    # A complete reply: the reader is finishing the body so the
                    # connection can be reused, and stops by itself within
                    # DONE_DRAIN_S. Anything else (a tool round) stops now.
                    if not rounds.draining:
                        nursery.cancel_scope.cancel()
            if raised is not None:
                raise raised
        finally:
            # Shielded: this runs on cancellation too, and an open response
            # would keep a half-read connection (and the server's work) alive.
            with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await rounds.response.aclose()

    async def _open(self, body: dict[str, Any]) -> httpx.Response:
        """The streamed response to ``body``; raises LlmError (_StatusError for a status)."""
        response = await self._send(body)
        if response.status_code >= 400:
            try:
                message = await self._status_message(response)
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    await response.aclose()
            raise _StatusError(_shorten(scrub(message, self._key)), response.status_code)
        return response

    async def _send(self, body: dict[str, Any]) -> httpx.Response:
        try:
            request = self._client.build_request("POST", self._url, json=body)
            try:
                response = await self._client.send(request, stream=True)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                # The pool handed out a keep-alive connection that the server
                # closed a moment ago (llama.cpp closes after every streamed
                # reply, however it advertises keep-alive). Nothing was
                # answered, so asking again on a fresh connection is safe.
                response = await self._client.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._reachable = False
            # ``from None``: the cause carries the request, headers and all.
            raise self._error(f"cannot reach {self._shown_url}: {_describe(exc)}") from None
        self._reachable = True
        return response

    async def _status_message(self, response: httpx.Response) -> str:
        raw = bytearray()
        # Stopped by cancellation inside a read, like the reader (module docs).
        with trio.CancelScope() as scope:
            try:
                async for data in response.aiter_bytes():
                    if len(raw) < ERROR_BODY_LIMIT:
                        raw += data
                    else:
                        scope.cancel()
            except httpx.HTTPError:
                pass  # the status says enough; the body is a bonus
        text = raw[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace").strip()
        detail = text
        try:
            obj = json.loads(text)
        except ValueError:
            pass
        else:
            if isinstance(obj, dict) and "error" in obj:
                detail = error_message(obj["error"])
        reason = f" {response.reason_phrase}" if response.reason_phrase else ""
        head = f"HTTP {response.status_code}{reason} from {self._shown_url}"
        return f"{head}: {detail}" if detail else head


__all__ = [
    "MAX_REPLY_CHARS",
    "MAX_TOOL_ROUNDS",
    "TOOL_TIMEOUT_S",
    "OpenAiLlm",
    "results_note",
    "scrub",
]
