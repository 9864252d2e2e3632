"""A lean WebSocket client for the load benchmark: RFC 6455 over a Trio socket.

The load generator shares the server's two cores, so what it spends is taken
from the server it measures: trio-websocket (wsproto underneath) costs about
as much CPU per message as the server itself. This client does only what a
load test needs: it sends pre-masked binary frames (each audio frame is
masked once, not once per send) and JSON text frames, and reads text,
binary and close frames. It checks what it parses (opcodes, lengths, the
101 answer) and raises on anything else, so a protocol error in the server
still shows.

One deliberate shortcut: every frame of one client is masked with one fixed
key. RFC 6455 asks for an unpredictable key per frame to protect proxies
from cache poisoning; on loopback, with no proxy, the server unmasks either
the same way.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import struct
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import trio

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server closed the connection (``code`` 1006 when there was no close frame)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed with code {code}")
        self.code = code


class Masker:
    """Masks payloads with one key, and remembers audio frames it masked."""

    def __init__(self) -> None:
        self.key = os.urandom(4)
        self._key_array = np.frombuffer(self.key * 1024, np.uint8)
        self._cache: dict[bytes, bytes] = {}

    def frame(self, opcode: int, payload: bytes, *, cache: bool = False) -> bytes:
        if cache:
            found = self._cache.get(payload)
            if found is not None:
                return found
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        key = np.resize(self._key_array, n) if n > len(self._key_array) else self._key_array[:n]
        masked = (np.frombuffer(payload, np.uint8) ^ key).tobytes()
        frame = header + self.key + masked
        if cache:
            self._cache[payload] = frame
        return frame


class RawClient:
    def __init__(self, stream: trio.SocketStream, masker: Masker) -> None:
        self.stream = stream
        self.masker = masker
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_op = 0

    @classmethod
    async def connect(cls, url: str, masker: Masker | None = None) -> RawClient:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        stream = await trio.open_tcp_stream(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(request.encode())
        client = cls(stream, masker or Masker())
        while b"\r\n\r\n" not in client._buffer:
            data = await stream.receive_some(65536)
            if not data:
                raise Closed(1006)
            client._buffer += data
        head, _, rest = bytes(client._buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            await stream.aclose()
            raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
        client._buffer = bytearray(rest)
        return client

    async def send_json(self, value: dict[str, Any]) -> None:
        await self.stream.send_all(self.masker.frame(OP_TEXT, json.dumps(value).encode()))

    async def send_audio(self, pcm: bytes) -> None:
        await self.stream.send_all(self.masker.frame(OP_BINARY, pcm, cache=True))

    async def close(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(self.masker.frame(OP_CLOSE, struct.pack("!H", 1000)))
        await self.stream.aclose()

    async def receive(self) -> dict[str, Any] | bytes:
        """The next message: a JSON text event as a dict, or binary bytes."""
        while True:
            frame = self._parse()
            if frame is None:
                data = await self.stream.receive_some(262144)
                if not data:
                    raise Closed(1006)
                self._buffer += data
                continue
            fin, opcode, payload = frame
            if opcode == OP_CLOSE:
                raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005)
            if opcode == OP_PING:
                await self.stream.send_all(self.masker.frame(OP_PONG, payload))
                continue
            if opcode == OP_PONG:
                continue
            if opcode in (OP_TEXT, OP_BINARY):
                self._fragment_op = opcode
                self._fragments = []
            elif opcode != OP_CONT:
                raise ValueError(f"unexpected opcode {opcode:#x}")
            self._fragments.append(payload)
            if not fin:
                continue
            message = b"".join(self._fragments)
            self._fragments = []
            if self._fragment_op == OP_TEXT:
                event: dict[str, Any] = json.loads(message)
                return event
            return message

    def _parse(self) -> tuple[bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if second & 0x80:
            raise ValueError("the server masked a frame")
        n, at = second & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < at + n:
            return None
        payload = bytes(buf[at : at + n])
        del buf[: at + n]
        return bool(first & 0x80), first & 0x0F, payload
