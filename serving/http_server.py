"""HTTP/1.1 for the REST API: an asyncio Protocol on httptools' parser (llhttp).

Chosen over uvicorn after measuring both with the same client (``poochlab bench server``): the
protocol hands a parsed request straight to :class:`RestApi` with no ASGI layer in between.
Keep-alive and pipelining are supported (answers go out in request order); bodies above the
size limit are refused with 413 and TF Serving's error body before they are buffered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Coroutine, Generator

import httptools

from poochlab.serving.json_format import error_body

log = logging.getLogger("poochlab.serving")

# An async def (method, path, headers, body) -> Response: a coroutine function, because a call
# that waits for nothing is run to its end at once (see on_message_complete), outside any Task:
# until its first wait, asyncio.current_task() is None (no asyncio.timeout() there), and context
# variables it sets are not isolated per request. Only the headers the REST API reads are passed
# (lower-case names: content-encoding), to keep per-request work small.
Handler = Callable[[str, str, dict[str, str], bytes], Coroutine[object, object, "object"]]

_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
            409: b"Conflict", 413: b"Payload Too Large", 429: b"Too Many Requests",
            499: b"Client Closed Request", 500: b"Internal Server Error", 501: b"Not Implemented",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}


def encode_response(status: int, content_type: bytes, body: bytes, headers: list[tuple[bytes, bytes]],
                    keep_alive: bool) -> bytes:
    head = [b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (status, _REASONS.get(status, b"Unknown"), content_type, len(body))]
    for name, value in headers:
        head.append(name + b": " + value + b"\r\n")
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


class RequestGauge:
    """How busy the server is, over all connections: may a request's model run on the loop?

    ``in_flight`` counts the parsed requests being answered right now (counted when a request
    is parsed, before its handler runs). A request is :attr:`alone` when no other is being
    answered and the one before it came on the same connection: once requests whose models run
    on the loop are answered one by one, ``in_flight`` alone would call every request alone
    under concurrent load, and each client's next request would wait behind a model run.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self._last_connection: int | None = None  # id(): no reference keeps a closed connection
        self._interleaved = False

    def arrive(self, connection: object) -> None:
        """A request was parsed on ``connection``."""
        self.in_flight += 1
        key = id(connection)
        self._interleaved = self._last_connection is not None and self._last_connection != key
        self._last_connection = key

    def leave(self) -> None:
        """A request's answer is ready."""
        self.in_flight -= 1

    @property
    def alone(self) -> bool:
        return self.in_flight <= 1 and not self._interleaved


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, max_body_bytes: int, too_large_message: str,
                 gauge: RequestGauge | None = None) -> None:
        self._handler = handler
        self._gauge = gauge if gauge is not None else RequestGauge()
        self._max_body = max_body_bytes
        self._too_large = too_large_message
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._rejected = False
        self._pending: asyncio.Task | None = None  # the last answer in flight (keeps order)
        self._closing = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # typeshed: connection_made gets a BaseTransport; a stream server's is a Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "Upgrade is not supported")
        except httptools.HttpParserError as error:
            if not self._rejected:
                self._fail(400, f"Malformed HTTP request: {error}")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-length":
            if value.isdigit() and int(value) > self._max_body:
                self._fail(413, self._too_large)
        elif key == b"content-encoding":  # the only header the REST API reads
            self._headers["content-encoding"] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._fail(413, self._too_large)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        method = self._parser.get_method().decode("ascii", "replace")
        keep_alive = self._parser.should_keep_alive()
        path = self._url.decode("utf-8", "replace")
        body = b"".join(self._body)
        previous = self._pending
        self._gauge.arrive(self)
        rest: _Resumed | None = None
        if previous is None or previous.done():
            # Most answers wait for nothing (a quick model runs right here, see direct_session):
            # run the handler now and write its answer, without a Task and a later turn of the
            # loop. That saved ~50 us of a ~0.45 ms request at concurrency 1 on our machines.
            rest = self._answer_now(method, path, self._headers, body, keep_alive)
            if rest is None:
                return
        self._pending = asyncio.ensure_future(
            self._answer(previous, rest, method, path, self._headers, body, keep_alive))

    def _answer_now(self, method: str, path: str, headers: dict[str, str], body: bytes,
                    keep_alive: bool) -> "_Resumed | None":
        """Run the handler up to its first wait. None: it finished and its answer is written;
        else the rest of it, for a Task to finish."""
        try:
            coroutine = self._handler(method, path, headers, body)
            awaited = coroutine.send(None)
        except StopIteration as finished:
            self._write(self._encode(finished.value, keep_alive), keep_alive)
            return None
        except (Exception, asyncio.CancelledError):  # a handler bug answers 500, never kills the connection
            log.exception("REST handler failed for %s %s", method, path)
            self._write(self._encode(None, keep_alive), keep_alive)
            return None
        except BaseException:  # KeyboardInterrupt, SystemExit: no answer, but the gauge stays true
            self._gauge.leave()
            raise
        return _Resumed(coroutine, awaited)

    async def _answer(self, previous: asyncio.Task | None, rest: "_Resumed | None", method: str, path: str,
                      headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        """Finish (or run) the handler on a Task and write its answer after ``previous``'s."""
        try:
            response = await (rest if rest is not None else self._handler(method, path, headers, body))
        except (Exception, asyncio.CancelledError):  # a handler bug answers 500
            log.exception("REST handler failed for %s %s", method, path)
            response = None
        except BaseException:  # KeyboardInterrupt, SystemExit: no answer, but the gauge stays true
            self._gauge.leave()
            raise
        data = self._encode(response, keep_alive)
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # answers leave in request order (pipelining)
        self._write(data, keep_alive)

    def _encode(self, response: "object | None", keep_alive: bool) -> bytes:
        """The bytes of a handler's answer, and the request leaves the gauge. A failed handler
        (None) or an answer that cannot be encoded is answered 500."""
        self._gauge.leave()
        if response is not None:
            try:
                return encode_response(response.status, response.content_type,  # type: ignore[attr-defined]
                                       response.body, response.headers, keep_alive)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 (a handler bug: a malformed Response)
                log.exception("REST answer could not be encoded: %r", response)
        return encode_response(500, b"application/json", error_body("Internal server error"), [], keep_alive)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(data)
        if not keep_alive:
            self._transport.close()

    def _fail(self, status: int, message: str) -> None:
        """Answer an unparseable or oversized request and close the connection."""
        self._rejected = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_response(status, b"application/json", error_body(message), [], False))
            self._transport.close()


class _Resumed:
    """Await the rest of a coroutine that was already run up to its first wait (``awaited``).

    asyncio's Task drives it from there exactly as if it had started the coroutine itself: the
    future the coroutine waits on goes up to the Task, and the Task's wake-up comes back down.
    """

    def __init__(self, coroutine: Coroutine, awaited: object) -> None:
        self._coroutine = coroutine
        self._awaited = awaited

    def __await__(self) -> Generator[object, object, object]:
        awaited = self._awaited
        while True:
            try:
                sent = yield awaited
            except BaseException as error:  # e.g. CancelledError: the coroutine handles it
                try:
                    awaited = self._coroutine.throw(error)
                except StopIteration as finished:
                    return finished.value
                continue
            try:
                awaited = self._coroutine.send(sent)
            except StopIteration as finished:
                return finished.value


async def start_http_server(handler: Handler, host: str, port: int, max_body_bytes: int,
                            too_large_message: str, gauge: RequestGauge | None = None) -> asyncio.Server:
    """Serve ``handler`` on ``host:port``; ``gauge`` (shared by all connections) counts the
    requests being answered."""
    loop = asyncio.get_running_loop()
    shared = gauge if gauge is not None else RequestGauge()
    return await loop.create_server(
        lambda: HttpProtocol(handler, max_body_bytes, too_large_message, shared), host, port,
        reuse_address=True, backlog=1024)
