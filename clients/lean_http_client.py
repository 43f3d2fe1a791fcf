"""The lab's lean HTTP client: a bare socket and httptools' C response parser.

The least Python per call of all the HTTP libraries (``poochlab bench clients``: the lowest
client CPU per call and the p50 closest to wrk's). Under gevent's monkey patching (Locust) it
waits cooperatively in gevent's hub; in plain threads it blocks.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

from poochlab.clients.http_connection import HttpAnswer, KeepAliveConnection
from poochlab.clients.prediction import KIND_BAD_RESPONSE, KIND_CONNECTION, KIND_TIMEOUT, PredictionError
from poochlab.clients.wire_socket import HubWaits, open_connection


class HttptoolsConnection(KeepAliveConnection):
    """A bare socket and httptools' C response parser: the least Python between call and wire.

    With gevent's monkey patching (Locust), on the hub's thread, the wait is cooperative (the real
    socket, non-blocking, waiting in gevent's hub); on any other thread it blocks. ``timeout_s``
    bounds the wait for the answer: the send and the first wait get all of it, each further chunk
    only what remains.
    Per call it only joins the request's bytes and feeds the answer to a parser kept with the
    connection: after a wake-up from a blocking wait every line of Python runs on cold caches,
    so the call path is kept short.
    """

    thread_bound = True  # a monkey-patched socket belongs to its OS thread's hub
    modules = ("httptools",)

    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError(f"the httptools client speaks plain http, not {parts.scheme!r} ({base_url})")
        import httptools

        self._new_parser, self._parse_error = httptools.HttpResponseParser, httptools.HttpParserError
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._host = parts.netloc
        self._socket: socket.socket | None = None
        # gevent's wait_read and wait_write when the connection waits in gevent's hub, else None.
        self._hub_waits: HubWaits | None = None
        self._armed = -1.0  # the timeout a blocking socket is set to
        self._answer = _ParsedAnswer()  # its parser is the connection's (a new one per connection)
        # (method, path, header items) -> the request head up to its Content-Length value.
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes] = {}
        self._last_head: tuple[str, str, dict[str, str], bytes] | None = None

    def _head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        last = self._last_head  # a client mostly sends the same request line and headers again
        if last is not None and last[0] == method and last[1] == path and last[2] == headers:
            return last[3]
        key = (method, path, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}",
                     *(f"{name}: {value}" for name, value in headers.items())]
            head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
            if len(self._heads) < 64:  # a client addresses a handful of paths; never grow unbounded
                self._heads[key] = head
        self._last_head = (method, path, dict(headers), head)  # a copy: the caller's dict may change
        return head

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        body = body or b""
        data = b"%s%d\r\n\r\n%s" % (self._head(method, path, headers), len(body), body)
        sent_at = time.monotonic()  # on the wire from here (a new connection's connect included)
        deadline = sent_at + timeout_s
        answer = self._answer
        answer.start()
        try:
            connection = self._socket
            if connection is None:
                connection = self._connect(timeout_s)
                answer.parser = self._new_parser(answer)
            parser = answer.parser
            if self._hub_waits is None:
                self._arm(timeout_s)
                connection.sendall(data)
                while True:
                    chunk = connection.recv(65536)
                    if not chunk:
                        raise ConnectionResetError("the server closed the connection")
                    parser.feed_data(chunk)
                    if answer.complete:
                        break
                    self._arm(max(deadline - time.monotonic(), 1e-6))
            else:
                self._exchange_on_hub(connection, data, parser, deadline)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: the kernel's SO_RCVTIMEO expired
            self._reset()
            raise PredictionError(KIND_TIMEOUT, f"{method} {path}: timed out after {timeout_s} s") from None
        except self._parse_error as error:
            self._reset()
            raise PredictionError(KIND_BAD_RESPONSE, f"{method} {path}: not an HTTP answer ({error})") from None
        except OSError as error:
            self._reset()
            raise PredictionError(KIND_CONNECTION, f"{method} {path}: {error!r}") from error
        received_at = time.monotonic()
        status = parser.get_status_code()
        if not answer.keep_alive:
            self._reset()
        return HttpAnswer(status, answer.body[0] if len(answer.body) == 1 else b"".join(answer.body),
                          answer.server_timing, sent_at, received_at)

    def _exchange_on_hub(self, connection: socket.socket, data: bytes, parser: Any, deadline: float) -> None:
        """Send ``data`` and read the answer on a non-blocking socket, waiting in gevent's hub.

        An answer takes the server some time, so after the send the greenlet waits for the
        socket to be readable before reading (no read that finds nothing): send, the hub's
        wait, one recv, as wrk does with its event loop; less Python than gevent's socket.
        """
        assert self._hub_waits is not None
        wait_read, wait_write = self._hub_waits
        descriptor = connection.fileno()
        answer = self._answer
        view = memoryview(data)
        while view:
            try:
                view = view[connection.send(view):]
            except BlockingIOError:
                wait_write(descriptor, max(deadline - time.monotonic(), 1e-6))
        while True:
            wait_read(descriptor, max(deadline - time.monotonic(), 1e-6))  # TimeoutError at the deadline
            try:
                chunk = connection.recv(65536)
            except BlockingIOError:  # woken without data after all
                continue
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            parser.feed_data(chunk)
            if answer.complete:
                return

    def _connect(self, timeout_s: float) -> socket.socket:
        # Under gevent (Locust), on the hub's thread, calls wait in the hub on the real socket
        # (_exchange_on_hub): gevent's own send asked the kernel for the send buffer's size on
        # every call and wrapped every wait in its timeout bookkeeping, 15-30 us of a 0.5 ms
        # call at concurrency 1. Elsewhere the socket blocks (clients/wire_socket.py).
        sock, self._hub_waits = open_connection(self._address, timeout_s)
        self._armed = -1.0
        if self._hub_waits is None:
            # A blocking socket: the kernel enforces the timeout (SO_RCVTIMEO/SO_SNDTIMEO):
            # Python's own timeout would poll() before every send and recv, a system call each.
            sock.settimeout(None)
        self._socket = sock
        return sock

    def _arm(self, timeout_s: float) -> None:
        """Make the next blocking send/recv give up after ``timeout_s`` (a system call only on change)."""
        if timeout_s == self._armed:
            return
        assert self._socket is not None
        # struct timeval; zero would mean "wait forever", so at least one microsecond.
        value = struct.pack("ll", *divmod(max(int(timeout_s * 1e6), 1), 1_000_000))
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._armed = timeout_s

    def _reset(self) -> None:
        super()._reset()
        self.close()

    def _kept_open(self) -> bool:
        return self._socket is not None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class _ParsedAnswer:
    """httptools' callbacks for the answers on one connection, one at a time."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.start()

    def start(self) -> None:
        self.body: list[bytes] = []
        self.server_timing: str | None = None
        self.complete = False
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name == b"Server-Timing" or (len(name) == 13 and name.lower() == b"server-timing"):
            text = value.decode("latin-1")
            self.server_timing = text if self.server_timing is None else f"{self.server_timing}, {text}"

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        # Read it now: once the message is complete the parser resets and always says False.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
