"""The REST transport's answer paths: at once when the handler waits for nothing, else on a Task,
always in request order, and a failing handler answers 500 on either path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from poochlab.serving.http_server import HttpProtocol, RequestGauge


@dataclass
class Response:
    status: int
    body: bytes
    headers: list = field(default_factory=list)
    content_type: bytes = b"application/json"


class CapturingTransport(asyncio.Transport):
    """Collects what the protocol writes (the protocol under test never touches a socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def request(path: str, body: bytes = b"{}") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


async def handler(method: str, path: str, headers: dict, body: bytes) -> Response:
    if path == "/slow":
        await asyncio.sleep(0.02)
    elif path == "/yield":
        await asyncio.sleep(0)
    elif path == "/boom":
        raise RuntimeError("handler bug")
    elif path == "/slow-boom":
        await asyncio.sleep(0.01)
        raise RuntimeError("handler bug after a wait")
    elif path in ("/bad-header", "/slow-bad-header"):
        if path.startswith("/slow"):
            await asyncio.sleep(0.01)
        return Response(200, b"{}", headers=[(b"X-Bad", "text, not bytes")])  # cannot be encoded
    elif path == "/cancelled":
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled  # raises CancelledError inside the handler
    return Response(200, path.encode())


def connect() -> tuple[HttpProtocol, CapturingTransport, RequestGauge]:
    gauge = RequestGauge()
    protocol = HttpProtocol(handler, 1 << 20, "too large", gauge)
    transport = CapturingTransport()
    protocol.connection_made(transport)
    return protocol, transport, gauge


def bodies(transport: CapturingTransport) -> list[bytes]:
    return [data.split(b"\r\n\r\n", 1)[1] for data in transport.written]


def statuses(transport: CapturingTransport) -> list[int]:
    return [int(data.split(b" ", 2)[1]) for data in transport.written]


def test_an_answer_that_waits_for_nothing_is_written_before_the_loop_turns() -> None:
    async def scenario() -> None:
        protocol, transport, gauge = connect()
        protocol.data_received(request("/fast"))
        assert bodies(transport) == [b"/fast"]  # no await in between: written synchronously
        assert gauge.in_flight == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/slow", "/yield"])
def test_an_answer_that_waits_is_written_when_its_wait_ends(path: str) -> None:
    async def scenario() -> None:
        protocol, transport, gauge = connect()
        protocol.data_received(request(path))
        assert transport.written == [] and gauge.in_flight == 1
        await asyncio.sleep(0.05)
        assert bodies(transport) == [path.encode()]
        assert gauge.in_flight == 0

    asyncio.run(scenario())


def test_pipelined_answers_leave_in_request_order_whatever_finishes_first() -> None:
    async def scenario() -> None:
        protocol, transport, _ = connect()
        protocol.data_received(request("/slow") + request("/fast") + request("/yield") + request("/fast"))
        await asyncio.sleep(0.1)
        assert bodies(transport) == [b"/slow", b"/fast", b"/yield", b"/fast"]

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/boom", "/slow-boom", "/bad-header", "/slow-bad-header", "/cancelled"])
def test_a_failing_handler_answers_500_on_either_path_and_the_connection_serves_on(path: str) -> None:
    async def scenario() -> None:
        protocol, transport, gauge = connect()
        protocol.data_received(request(path))
        await asyncio.sleep(0.05)
        protocol.data_received(request("/fast"))
        await asyncio.sleep(0)
        assert statuses(transport) == [500, 200]
        assert b"Internal server error" in transport.written[0]
        assert gauge.in_flight == 0 and not transport.closed

    asyncio.run(scenario())


def test_answers_pipelined_behind_a_failed_one_are_still_written_in_order() -> None:
    async def scenario() -> None:
        protocol, transport, gauge = connect()
        protocol.data_received(request("/slow-boom") + request("/slow-bad-header") + request("/fast"))
        await asyncio.sleep(0.1)
        assert statuses(transport) == [500, 500, 200]
        assert bodies(transport)[2] == b"/fast"
        assert gauge.in_flight == 0

    asyncio.run(scenario())


def test_a_resumed_handler_sees_cancellation_like_any_awaited_coroutine() -> None:
    """The Task that finishes a handler started synchronously passes cancellation down to it."""
    from poochlab.serving.http_server import _Resumed

    seen: list[str] = []

    async def waits_forever() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "never"

    async def scenario() -> None:
        coroutine = waits_forever()
        awaited = coroutine.send(None)

        async def finish() -> object:
            return await _Resumed(coroutine, awaited)

        task = asyncio.ensure_future(finish())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert seen == ["cancelled"]


def test_requests_are_alone_until_another_connection_interleaves() -> None:
    """One client's sequential requests may run their models on the loop; once requests of two
    connections alternate (concurrent clients), none is alone, even answered one at a time."""
    gauge = RequestGauge()
    first, second = object(), object()
    alone = []
    for connection in (first, first, first, second, first, second, second, second):
        gauge.arrive(connection)
        alone.append(gauge.alone)
        gauge.leave()
    assert alone == [True, True, True, False, False, False, True, True]
    gauge.arrive(first)
    gauge.arrive(first)  # pipelined: two answers in flight on one connection
    assert not gauge.alone


def test_concurrent_connections_hand_models_to_threads_sequential_ones_do_not() -> None:
    """Through the protocol: the handler sees ``gauge.alone`` as the REST API reads it."""
    seen: list[bool] = []
    gauge = RequestGauge()

    async def recording(method, path, headers, body):
        seen.append(gauge.alone)
        return Response(200, b"{}")

    async def scenario() -> None:
        connections = []
        for _ in range(2):
            protocol = HttpProtocol(recording, 1 << 20, "too large", gauge)
            protocol.connection_made(CapturingTransport())
            connections.append(protocol)
        a, b = connections
        for protocol in (a, a, b, a, b):
            protocol.data_received(request("/x"))

    asyncio.run(scenario())
    assert seen == [True, True, False, False, False]
