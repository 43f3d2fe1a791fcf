"""HTTP/1.1 for the REST API: an asyncio Protocol on httptools' parser (llhttp).

Chosen over uvicorn after measuring both with the same client (``poochlab bench server``): the
protocol hands a parsed request straight to :class:`RestApi` with no ASGI layer in between.
Keep-alive and pipelining are supported (answers go out in request order); bodies above the
size limit are refused with 413 and TF Serving's error body before they are buffered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import httptools

from poochlab.serving.json_format import error_body

log = logging.getLogger("poochlab.serving")

# (method, path, headers, body) -> Response. Only the headers the REST API reads are passed
# (lower-case names: content-encoding), to keep per-request work small.
Handler = Callable[[str, str, dict[str, str], bytes], Awaitable["object"]]

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
    """How many parsed requests the server is answering right now, over all connections.

    Counted when a request is parsed (in ``data_received``), before its handler task first
    runs, so a handler can tell whether other requests are waiting behind it on the loop.
    """

    def __init__(self) -> None:
        self.in_flight = 0


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Callable, max_body_bytes: int, too_large_message: str,
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
        self._transport = transport  # type: ignore[assignment]

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
        self._gauge.in_flight += 1
        self._pending = asyncio.ensure_future(self._answer(previous, method, path, self._headers, body, keep_alive))

    async def _answer(self, previous: asyncio.Task | None, method: str, path: str, headers: dict[str, str],
                      body: bytes, keep_alive: bool) -> None:
        try:
            response = await self._handler(method, path, headers, body)
            data = encode_response(response.status, response.content_type, response.body, response.headers, keep_alive)
        except Exception:  # a handler bug must answer 500, never kill the connection silently
            log.exception("REST handler failed for %s %s", method, path)
            data = encode_response(500, b"application/json", error_body("Internal server error"), [], keep_alive)
        finally:
            self._gauge.in_flight -= 1
        if previous is not None and not previous.done():
            await previous
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


async def start_http_server(handler: Callable, host: str, port: int, max_body_bytes: int,
                            too_large_message: str, gauge: RequestGauge | None = None) -> asyncio.AbstractServer:
    """Serve ``handler`` on ``host:port``; ``gauge`` (shared by all connections) counts the
    requests being answered."""
    loop = asyncio.get_running_loop()
    shared = gauge if gauge is not None else RequestGauge()
    return await loop.create_server(
        lambda: HttpProtocol(handler, max_body_bytes, too_large_message, shared), host, port,
        reuse_address=True, backlog=1024)
