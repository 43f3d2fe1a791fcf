"""Unary gRPC calls over HTTP/2 on a plain socket: the wire of the lean gRPC client.

grpcio spends 0.3-0.4 ms of CPU per blocking call on our machines, most of it in its own
machinery (completion queues, call objects, metadata); a load generator built on it measures
grpcio as much as the server. This speaks the gRPC wire protocol (HTTP/2 framing, RFC 9113; header
compression, RFC 7541; the gRPC-over-HTTP/2 message prefix and trailers) with one call at a time
per connection, so it needs no stream multiplexing: a caller takes an idle connection (or opens
one), runs its call to the end and gives the connection back.

What the server sees is an ordinary gRPC client: the connection preface and SETTINGS, a HEADERS
frame with ``:method POST``, ``:scheme http``, ``:path``, ``:authority``,
``content-type: application/grpc``, ``te: trailers`` and ``grpc-timeout`` (the call's deadline, as
grpcio sends it), the length-prefixed message in DATA frames no larger than the server allows and
within its flow-control windows, then END_STREAM. Answers: response headers, DATA, and the
trailers holding ``grpc-status`` and ``grpc-message`` (or a trailers-only answer for an error).
Headers are encoded by hand (literal fields, no Huffman, nothing added to the server's dynamic
table) and decoded with ``hpack``, which keeps the server's dynamic table in step.

Flow control: the client advertises a 1 GiB window for the connection and every stream, so a
server never waits for it; it honours the server's windows when sending.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import NoReturn
from urllib.parse import unquote

import hpack

from poochlab.clients.wire_socket import open_connection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 2, 4, 5
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
OUR_WINDOW = 1 << 30
_HEADER = struct.Struct(">BHBBI")  # 24-bit length as a byte and a short, type, flags, stream id

# gRPC status codes by number (grpc/doc/statuscodes.md).
STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
# An HTTP status in place of a gRPC answer, as gRPC maps it (grpc/doc/http-grpc-status-mapping.md).
_HTTP_TO_STATUS = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED",
                   429: "UNAVAILABLE", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}
# RST_STREAM error codes, as gRPC maps them.
_RESET_TO_STATUS = {0x7: "UNAVAILABLE", 0x8: "CANCELLED", 0xB: "RESOURCE_EXHAUSTED", 0xC: "PERMISSION_DENIED"}


class WireError(Exception):
    """The call failed below gRPC: ``kind`` is "connection" (no usable connection: nothing was
    answered) or "timeout" (the deadline passed first)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class GrpcStatusError(Exception):
    """The server answered with a gRPC status other than OK."""

    def __init__(self, code: str, details: str, trailers: list[tuple[str, str]]) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.trailers = trailers


def hpack_string(value: bytes) -> bytes:
    """An HPACK string literal without Huffman coding (RFC 7541 5.2)."""
    return hpack_integer(len(value), 7, 0x00) + value


def hpack_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def request_headers(path: str, authority: str) -> bytes:
    """The header block of every call to ``path`` (the deadline is added per call).

    Static-table entries (RFC 7541 appendix A): 3 ``:method POST``, 6 ``:scheme http``; names
    4 ``:path``, 1 ``:authority``, 31 ``content-type``; literals "without indexing"."""
    return (b"\x83\x86"
            + hpack_integer(4, 4, 0x00) + hpack_string(path.encode("ascii"))
            + hpack_integer(1, 4, 0x00) + hpack_string(authority.encode("ascii"))
            + hpack_integer(31, 4, 0x00) + hpack_string(b"application/grpc")
            + b"\x00" + hpack_string(b"te") + hpack_string(b"trailers"))


def timeout_header(timeout_s: float) -> bytes:
    """``grpc-timeout`` as at most 8 digits and a unit, rounded up as grpcio does."""
    micros = max(1, int(timeout_s * 1e6 + 0.999))
    value = f"{micros}u" if micros < 100_000_000 else f"{min(-(-micros // 1_000_000), 99_999_999)}S"
    return b"\x00" + hpack_string(b"grpc-timeout") + hpack_string(value.encode("ascii"))


def address(target: str) -> tuple[str, int]:
    """(host, port) of a ``host:port`` gRPC target (an IPv6 host in brackets)."""
    host, _, port = target.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return _HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream) + payload


def take_frame(buffer: bytearray) -> tuple[int, int, int, bytes] | None:
    """The first whole frame in ``buffer`` as (type, flags, stream, payload), removed from it;
    None while it has not all arrived."""
    if len(buffer) < 9:
        return None
    length = (buffer[0] << 16) | (buffer[1] << 8) | buffer[2]
    if len(buffer) < 9 + length:
        return None
    kind, flags = buffer[3], buffer[4]
    stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
    payload = bytes(buffer[9:9 + length])
    del buffer[:9 + length]
    return kind, flags, stream, payload


def content(kind: int, flags: int, payload: bytes) -> bytes:
    """A DATA or HEADERS frame's payload without its padding and (HEADERS) priority fields."""
    if flags & PADDED:
        payload = payload[1:len(payload) - payload[0]]
    if kind == HEADERS and flags & PRIORITY:
        payload = payload[5:]
    return payload


def settings(payload: bytes) -> list[tuple[int, int]]:
    """A SETTINGS frame's (identifier, value) pairs."""
    return [struct.unpack_from(">HI", payload, offset) for offset in range(0, len(payload) - 5, 6)]


class Connection:
    """One HTTP/2 connection that runs one unary call at a time (not thread-safe: a pool hands
    each to one caller)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        try:
            # On gevent's hub thread (Locust) the real socket, non-blocking, waiting in the hub
            # (send, the hub's wait, one recv): gevent's socket read once for nothing before
            # every wait and kept a timeout object per call, measured a third of the lean
            # client's Python per call in an open loop. Elsewhere it blocks (wire_socket.py).
            self._sock, self._hub_waits = open_connection((host, port), timeout_s)
        except socket.timeout:
            raise WireError("timeout", f"connecting to {host}:{port} took over {timeout_s:g} s") from None
        except OSError as error:
            raise WireError("connection", f"failed to connect to {host}:{port}: {error}") from None
        self._deadline = time.monotonic() + timeout_s  # the current call's (here: the preface's)
        self.usable = True
        self._decoder = hpack.Decoder()
        # Header blocks decoded while the decoder's dynamic table stood as _table_seen: a server
        # sends the same few blocks for every answer, and hpack decodes in Python.
        self._decoded: dict[bytes, tuple[tuple[str, str], ...]] = {}
        self._table_seen: tuple[int, int, object] = (-1, -1, None)
        self._buffer = bytearray()
        self._next_stream = 1
        self._send_window = DEFAULT_WINDOW  # the server's connection window
        self._stream_window_start = DEFAULT_WINDOW  # its SETTINGS_INITIAL_WINDOW_SIZE
        self._stream_window = 0
        self._max_frame = DEFAULT_MAX_FRAME
        self._received = 0  # DATA bytes not yet returned to our connection window
        self.answer_started = False  # a frame of the current call's answer has arrived
        ours = struct.pack(">HIHIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, OUR_WINDOW,
                           SETTINGS_MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)
        self._send(PREFACE + frame(SETTINGS, 0, 0, ours)
                   + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", OUR_WINDOW - DEFAULT_WINDOW)))

    def close(self) -> None:
        self.usable = False
        try:
            self._sock.close()
        except OSError:
            pass

    def _lost(self, error: OSError, doing: str) -> WireError:
        """A socket failure as a WireError; the connection is closed (its state is unknown)."""
        self.close()
        if isinstance(error, socket.timeout):
            return WireError("timeout", f"deadline passed {doing}")
        return WireError("connection", f"connection lost {doing}: {error}")

    def _send(self, data: bytes) -> None:
        try:
            if self._hub_waits is None:
                self._sock.sendall(data)
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[self._sock.send(view):]
                except BlockingIOError:
                    self._hub_waits[1](self._sock.fileno(), self._left())
        except OSError as error:
            raise self._lost(error, "while sending") from None

    def _left(self) -> float:
        """Seconds to the current call's deadline; past it, the wait times out at once."""
        return max(self._deadline - time.monotonic(), 1e-6)

    def unary(self, headers: bytes, message: bytes, timeout_s: float) -> tuple[bytes, list[tuple[str, str]]]:
        """Call with ``headers`` (from :func:`request_headers`) and ``message`` (serialized);
        the answer's message and its trailers. Raises :class:`GrpcStatusError` for a non-OK
        status and :class:`WireError` when no answer came (the connection is then closed)."""
        deadline = self._deadline = time.monotonic() + timeout_s
        stream = self._next_stream
        self._next_stream += 2
        if self._next_stream > 0x7FFFFFFF:  # stream ids run out: no new calls on this connection
            self.usable = False
        self._stream_window = self._stream_window_start
        # What the server sends about this call, even before the request is all out (it may
        # answer early, e.g. refuse a message over its limit).
        self._response: list[tuple[str, str]] | None = None
        self._trailers: list[tuple[str, str]] | None = None
        self._data = bytearray()
        self.answer_started = False
        if self._hub_waits is None:
            self._sock.settimeout(max(timeout_s, 1e-6))
        body = b"\x00" + struct.pack(">I", len(message)) + message
        block = headers + timeout_header(timeout_s)
        if len(body) <= min(self._max_frame, self._send_window, self._stream_window):
            # The usual small request: headers and the whole message in one write.
            self._send(frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, body))
            self._send_window -= len(body)
            self._stream_window -= len(body)
        else:
            self._send(frame(HEADERS, END_HEADERS, stream, block))
            self._send_body(stream, body, deadline)
        return self._answer(stream, deadline)

    def _send_body(self, stream: int, body: bytes, deadline: float) -> None:
        view = memoryview(body)
        while view and self._trailers is None:  # the server may have answered (and ended the call)
            allowed = min(len(view), self._max_frame, self._send_window, self._stream_window)
            if allowed <= 0:
                self._handle(*self._read_frame(deadline), stream, deadline)  # a WINDOW_UPDATE, we hope
                continue
            chunk, view = view[:allowed], view[allowed:]
            self._send(frame(DATA, 0 if view else END_STREAM, stream, bytes(chunk)))
            self._send_window -= allowed
            self._stream_window -= allowed

    def _answer(self, stream: int, deadline: float) -> tuple[bytes, list[tuple[str, str]]]:
        while self._trailers is None:
            self._handle(*self._read_frame(deadline), stream, deadline)
        if self._received >= OUR_WINDOW // 2:
            self._send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received)))
            self._received = 0
        headers = self._response if self._response is not None else self._trailers
        http_status = dict(headers).get(":status")
        if http_status != "200":
            code = _HTTP_TO_STATUS.get(int(http_status or 0), "UNKNOWN")
            raise GrpcStatusError(code, f"HTTP status {http_status} instead of a gRPC answer", self._trailers)
        trailers = self._trailers
        fields = dict(trailers)
        status = fields.get("grpc-status")
        if status != "0":
            number = int(status) if status and status.isdigit() else 2
            code = STATUS_NAMES[number] if number < len(STATUS_NAMES) else "UNKNOWN"
            raise GrpcStatusError(code, unquote(fields.get("grpc-message", "")), trailers)
        data = self._data
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            raise GrpcStatusError("INTERNAL", f"answer is not one uncompressed gRPC message ({len(data)} bytes)",
                                  trailers)
        return bytes(data[5:]), trailers

    def _handle(self, kind: int, flags: int, stream: int, payload: bytes, ours: int, deadline: float) -> None:
        if kind == DATA:
            self._received += len(payload)
            payload = content(kind, flags, payload)
            if stream == ours:
                self.answer_started = True
                self._data += payload
                if flags & END_STREAM:
                    self._trailers = self._trailers or []
        elif kind == HEADERS:
            block = content(kind, flags, payload)
            end_stream = flags & END_STREAM  # a CONTINUATION's flags never carry it
            while not flags & END_HEADERS:
                kind, flags, continued, more = self._read_frame(deadline)
                if kind != CONTINUATION or continued != stream:
                    self._fail(f"expected a CONTINUATION of stream {stream}, got frame type {kind} on {continued}")
                block += more
            fields = self._decode(block)
            if stream != ours:
                return
            self.answer_started = True
            if self._response is None and not end_stream:
                self._response = fields
            else:
                self._trailers = fields
        elif kind == SETTINGS and not flags & ACK:
            for key, value in settings(payload):
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    self._stream_window += value - self._stream_window_start
                    self._stream_window_start = value
                elif key == SETTINGS_MAX_FRAME_SIZE:
                    self._max_frame = value
            self._send(frame(SETTINGS, ACK, 0))
        elif kind == WINDOW_UPDATE:
            increment = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if stream == 0:
                self._send_window += increment
            elif stream == ours:
                self._stream_window += increment
        elif kind == PING and not flags & ACK:
            self._send(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM and stream == ours:
            error_code = struct.unpack(">I", payload[:4])[0]
            if error_code == 0 and self._trailers is not None:
                return  # NO_ERROR after a complete answer: the server only stops reading our body
            self.close()  # the stream is gone; start the next call on a fresh connection
            raise GrpcStatusError(_RESET_TO_STATUS.get(error_code, "INTERNAL"),
                                  f"stream reset by the server (HTTP/2 error code {error_code})", [])
        elif kind == GOAWAY:
            last_stream = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            self.usable = False  # no new calls here
            if last_stream < ours:
                self.close()
                raise WireError("connection", "the server is closing the connection (GOAWAY) before this call")
        elif kind == PUSH_PROMISE:
            self._fail("PUSH_PROMISE although push is disabled")

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        """The block's header fields; a block seen before, with the dynamic table as it was then,
        is not decoded again (decoding it would neither change the table nor give other fields)."""
        table = self._decoder.header_table
        entries = table.dynamic_entries
        state = (table.maxsize, len(entries), entries[0] if entries else None)
        if state[:2] != self._table_seen[:2] or state[2] is not self._table_seen[2]:
            self._decoded.clear()  # fields indexed in the table may mean others now
            self._table_seen = state
        fields = self._decoded.get(block)
        if fields is None:
            try:
                fields = tuple((str(name), str(value)) for name, value in self._decoder.decode(block))
            except hpack.HPACKError as error:
                self._fail(f"header block does not decode: {error}")
            after = (table.maxsize, len(entries), entries[0] if entries else None)
            # Only a block that left the table as it was can be replayed without decoding.
            if after[:2] == state[:2] and after[2] is state[2] and len(self._decoded) < 32:
                self._decoded[bytes(block)] = fields
        return list(fields)

    def _fail(self, message: str) -> NoReturn:
        self.close()
        raise WireError("connection", f"HTTP/2 protocol error: {message}")

    def _read_frame(self, deadline: float) -> tuple[int, int, int, bytes]:
        while (got := take_frame(self._buffer)) is None:
            self._fill(deadline)
        return got

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            self.close()
            raise WireError("timeout", "deadline passed before the answer")
        try:
            if self._hub_waits is None:
                self._sock.settimeout(left)
                chunk = self._sock.recv(65_536)
            else:
                while True:
                    # An answer takes the server a while: wait until there is something to read.
                    self._hub_waits[0](self._sock.fileno(), max(left, 1e-6))
                    try:
                        chunk = self._sock.recv(65_536)
                        break
                    except BlockingIOError:  # woken without data after all
                        left = deadline - time.monotonic()
        except OSError as error:
            raise self._lost(error, "before the answer") from None
        if not chunk:
            self.close()
            raise WireError("connection", "the server closed the connection")
        self._buffer += chunk
