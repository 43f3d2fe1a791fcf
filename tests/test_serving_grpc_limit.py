"""--grpc_max_threads: RPCs beyond the limit are refused with RESOURCE_EXHAUSTED, none at it."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from poochlab.serving.grpc_limit import SPARE_THREADS, ConcurrencyLimit

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

METHOD = "/lab.Test/Echo"


def _parse(body: bytes) -> bytes:
    if body == b"garbage":
        raise ValueError("not a request")
    return body


def _server(limit: int, handler, own_limit: bool = True) -> tuple[grpc.Server, int, ConcurrencyLimit]:
    limiter = ConcurrencyLimit(limit)
    server = grpc.server(futures.ThreadPoolExecutor(limit + SPARE_THREADS),
                         interceptors=[limiter] if own_limit else [],
                         maximum_concurrent_rpcs=None if own_limit else limit)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "lab.Test", {"Echo": grpc.unary_unary_rpc_method_handler(handler, request_deserializer=_parse)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, limiter


def _refusals_with_clients_at_the_limit(own_limit: bool, limit: int = 8, calls: int = 1500) -> list[str]:
    server, port, _ = _server(limit, lambda request, context: request, own_limit)
    refused: list[str] = []
    try:
        def client() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                echo = channel.unary_unary(METHOD)
                for _ in range(calls):
                    try:
                        echo(b"x", timeout=30)
                    except grpc.RpcError as error:
                        refused.append(f"{error.code()}: {error.details()}")

        threads = [threading.Thread(target=client) for _ in range(limit)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.stop(None)
    return refused


def test_as_many_clients_as_threads_are_never_refused():
    """Each client sends its next call the moment it has an answer: the race grpc's own limit loses."""
    assert _refusals_with_clients_at_the_limit(own_limit=True) == []


def test_one_call_beyond_the_limit_is_refused_at_once_and_the_others_answered():
    release = threading.Event()

    def slow(request: bytes, context) -> bytes:
        release.wait(30)
        return request

    server, port, limiter = _server(2, slow)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(METHOD)
            held = [echo.future(b"a", timeout=30), echo.future(b"b", timeout=30)]
            for _ in range(300):  # until both are inside their handlers
                if limiter.active == 2:
                    break
                release.wait(0.01)
            assert limiter.active == 2
            with pytest.raises(grpc.RpcError) as refused:
                echo(b"c", timeout=10)  # answered by a spare thread while both handlers still wait
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--grpc_max_threads" in refused.value.details()
            release.set()
            assert [call.result() for call in held] == [b"a", b"b"]
            assert echo(b"d", timeout=10) == b"d"  # slots come back
    finally:
        release.set()
        server.stop(None)
    assert limiter.active == 0


def test_a_handler_that_fails_gives_its_slot_back():
    def failing(request: bytes, context) -> bytes:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")

    server, port, limiter = _server(1, failing)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(METHOD)
            for _ in range(3):  # with a slot lost, the second call would be RESOURCE_EXHAUSTED
                with pytest.raises(grpc.RpcError) as error:
                    echo(b"x", timeout=10)
                assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(None)
    assert limiter.active == 0


def test_calls_that_never_reach_their_handler_hold_no_slot():
    """A body that does not parse never runs the handler: the next call is still answered."""
    server, port, limiter = _server(1, lambda request, context: request)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(METHOD)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as error:
                    echo(b"garbage", timeout=10)
                assert error.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                assert echo(b"ok", timeout=10) == b"ok"
    finally:
        server.stop(None)
    assert limiter.active == 0


def test_the_lab_server_answers_as_many_grpc_clients_as_its_default_threads(lab_server):
    """The wiring in the server: --grpc_max_threads left at 4 x CPUs, that many clients at once."""
    import os

    from poochlab.experiments.bench.server import grpc_request_bytes

    payload = grpc_request_bytes()
    refused: list[str] = []

    def client() -> None:
        with grpc.insecure_channel(lab_server.grpc_target) as channel:
            predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            for _ in range(250):
                try:
                    predict(payload, timeout=30)
                except grpc.RpcError as error:
                    refused.append(f"{error.code()}: {error.details()}")

    threads = [threading.Thread(target=client) for _ in range(4 * (os.cpu_count() or 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refused == []
