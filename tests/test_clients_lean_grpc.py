"""The lean gRPC client (the lab's own HTTP/2 wire) against the real lab server: the same
answers, statuses and limits as grpcio, frames and flow control for large messages, deadlines."""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import grpc
import pytest

from poochlab.clients import ClientConfig, PredictionError, build_transport
from poochlab.clients.grpc_predictor import GrpcPredictor, LeanGrpcPredictor

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

PUPDATES = [
    {"hashtags": "#corgi #adorable", "country": "US", "followers": 120},
    {"hashtags": ["#pug", "#zoomies"], "country": "FR", "followers": 3},
]


def _clients(target: str, **config) -> tuple[GrpcPredictor, LeanGrpcPredictor]:
    grpcio = build_transport(ClientConfig(protocol="grpc", grpc_target=target, library="grpcio", **config))
    lean = build_transport(ClientConfig(protocol="grpc", grpc_target=target, library="lean", **config))
    assert type(grpcio) is GrpcPredictor and type(lean) is LeanGrpcPredictor
    return grpcio, lean


@pytest.fixture(scope="module")
def clients(lab_server) -> Iterator[tuple[GrpcPredictor, LeanGrpcPredictor]]:
    grpcio, lean = _clients(lab_server.grpc_target)
    yield grpcio, lean
    grpcio.close()
    lean.close()


def test_lean_answers_as_grpcio_does_with_version_and_server_timing(clients) -> None:
    grpcio, lean = clients
    expected = grpcio.predict(PUPDATES)
    for _ in range(3):  # one connection, reused: the server's header table stays in step
        answer = lean.predict(PUPDATES)
        assert answer.likes == expected.likes  # the same float32s, bit for bit
        assert answer.model_version == expected.model_version is not None
        assert answer.timing.server_compute_us is not None and answer.timing.server_compute_us > 0
        assert answer.timing.server_queue_us is not None and answer.timing.server_queue_us >= 0
    assert lean.model_versions() == grpcio.model_versions() != []
    assert len(lean._idle) == 1


def test_a_request_larger_than_the_servers_windows_and_frames_gets_through(clients) -> None:
    # 4,000 pupdates: a PredictRequest of ~150 KB, over HTTP/2's 64 KiB initial window and 16 KiB frames.
    grpcio, lean = clients
    many = [{"hashtags": f"#dog{i} #walk #park #sunny", "country": "US", "followers": i} for i in range(4000)]
    assert len(lean.encode_request(many)) > 100_000
    assert lean.predict(many).likes == grpcio.predict(many).likes


def test_unknown_model_is_not_found_with_the_servers_message(lab_server) -> None:
    for predictor in _clients(lab_server.grpc_target, model_name="no_such_model"):
        with pytest.raises(PredictionError) as caught:
            predictor.predict(PUPDATES)
        assert caught.value.kind == "grpc_NOT_FOUND"
        assert "no_such_model" in caught.value.message
        predictor.close()


@pytest.mark.parametrize("limit", ["grpc_max_receive_bytes", "grpc_max_send_bytes"])
def test_message_limits_are_resource_exhausted_as_in_grpcio(lab_server, limit: str) -> None:
    for predictor in _clients(lab_server.grpc_target, **{limit: 16}):
        with pytest.raises(PredictionError) as caught:
            predictor.predict(PUPDATES)
        assert caught.value.kind == "grpc_RESOURCE_EXHAUSTED", predictor
        predictor.close()


def test_concurrent_threads_each_hold_their_own_connection(clients) -> None:
    from concurrent.futures import ThreadPoolExecutor

    grpcio, _ = clients
    expected = grpcio.predict(PUPDATES).likes
    lean = build_transport(ClientConfig(protocol="grpc", grpc_target=grpcio.config.grpc_target, library="lean"))
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: lean.predict(PUPDATES).likes, range(30)))
    assert answers == [expected] * 30
    assert 1 <= len(lean._idle) <= 3
    lean.close()


def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lean = build_transport(ClientConfig(protocol="grpc", grpc_target=f"127.0.0.1:{port}", library="lean"))
    with pytest.raises(PredictionError) as caught:
        lean.predict(PUPDATES)
    assert caught.value.kind == "connection"


def test_a_server_that_never_answers_times_out_and_its_connection_is_dropped() -> None:
    # A frozen server (accepts, reads, never answers): a fault the lab server cannot take on
    # demand without a restart, so a bare listening socket plays it.
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        connection, _ = listener.accept()
        accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    lean = build_transport(ClientConfig(protocol="grpc", grpc_target=f"127.0.0.1:{listener.getsockname()[1]}",
                                        library="lean", timeout_s=0.2))
    with pytest.raises(PredictionError) as caught:
        lean.predict(PUPDATES)
    assert caught.value.kind == "timeout"
    assert lean._idle == []  # a connection with a call in an unknown state is never reused
    thread.join(5)
    preface = accepted[0].recv(24)
    assert preface == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # it spoke HTTP/2 before giving up
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_pooled_connection_the_network_dropped_is_replaced_without_failing_the_call() -> None:
    # grpcio reconnects a broken channel; the lean client sends once more on a fresh connection
    # when a pooled one fails before any of its answer arrived.
    from poochlab.experiments.faults.proxy import FaultProxy
    from poochlab.experiments.load.echo_server import ECHO_LIKES, start_echo_server

    with start_echo_server(grpc=True) as echo, FaultProxy("127.0.0.1", echo.grpc_port) as proxy:
        lean = build_transport(ClientConfig(protocol="grpc", grpc_target=proxy.address, library="lean"))
        assert lean.predict(PUPDATES).likes == [ECHO_LIKES] * 2
        assert proxy.drop(refuse_new=False) == 1  # the pooled connection is reset
        assert lean.predict(PUPDATES).likes == [ECHO_LIKES] * 2
        assert len(lean._idle) == 1
        proxy.drop(refuse_new=True)  # now every connection fails: the error surfaces
        with pytest.raises(PredictionError) as caught:
            lean.predict(PUPDATES)
        assert caught.value.kind == "connection"
        lean.close()


def test_a_server_that_refuses_the_message_while_it_is_still_being_sent_answers_with_its_status() -> None:
    # grpc's own server, at its default 4 MiB receive limit, ends the call with RESOURCE_EXHAUSTED
    # before the client has sent all of a 6 MB message.
    from concurrent import futures

    from poochlab.clients.grpc_wire import Connection, GrpcStatusError, request_headers

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "lab.Test", {"Echo": grpc.unary_unary_rpc_method_handler(lambda body, context: body)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        connection = Connection("127.0.0.1", port, 10.0)
        headers = request_headers("/lab.Test/Echo", target)
        assert connection.unary(headers, b"small", 10.0)[0] == b"small"
        with pytest.raises(GrpcStatusError) as caught:
            connection.unary(headers, b"x" * 6_000_000, 10.0)
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        if connection.usable:  # the same connection still carries calls
            assert connection.unary(headers, b"again", 10.0)[0] == b"again"
        connection.close()
    finally:
        server.stop(0)


def test_a_header_block_seen_before_means_what_the_dynamic_table_says_now() -> None:
    # Answers repeat their header blocks byte for byte, so the client reuses a block's decoding;
    # an indexed field must still follow the server's dynamic table when an answer changes it.
    import hpack

    from poochlab.clients.grpc_wire import Connection

    listener = socket.create_server(("127.0.0.1", 0))
    connection = Connection("127.0.0.1", listener.getsockname()[1], 5.0)
    server_side = hpack.Encoder()
    first = server_side.encode([(":status", "200"), ("x-arm", "a")])  # x-arm: a enters the table (62)
    indexed = server_side.encode([(":status", "200"), ("x-arm", "a")])
    assert len(indexed) == 2  # both fields by index now: the block a server repeats
    assert connection._decode(first) == [(":status", "200"), ("x-arm", "a")]
    assert connection._decode(indexed) == [(":status", "200"), ("x-arm", "a")]
    assert connection._decode(indexed) == [(":status", "200"), ("x-arm", "a")]
    assert connection._decode(server_side.encode([("x-arm", "b")])) == [("x-arm", "b")]  # now 62, a moves to 63
    assert connection._decode(indexed) == [(":status", "200"), ("x-arm", "b")]  # same bytes, new meaning
    connection.close()
    listener.close()


def test_the_lean_client_under_gevent_waits_in_the_hub_and_answers_as_grpcio_does(lab_server, clients) -> None:
    """Under Locust (gevent's monkey patching) the lean gRPC client sends on the real socket and
    waits in gevent's hub: the same answers as grpcio (a small call and one larger than the
    server's flow-control windows), a silent server times out, and other greenlets keep running."""
    import json
    import subprocess
    import sys
    import textwrap

    grpcio, _ = clients
    many = [{"hashtags": f"#dog{i} #walk", "country": "US", "followers": i} for i in range(4000)]
    expected = {"small": grpcio.predict(PUPDATES).likes, "many": grpcio.predict(many).likes}
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent, json, socket
        from poochlab.clients import ClientConfig, PredictionError, build_transport

        ticks = []
        ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.002)) for _ in range(100000)])
        lean = build_transport(ClientConfig(protocol="grpc", grpc_target={lab_server.grpc_target!r}, library="lean"))
        small = [lean.predict({PUPDATES!r}).likes for _ in range(3)]
        many = lean.predict([{{"hashtags": f"#dog{{i}} #walk", "country": "US", "followers": i}} for i in range(4000)])
        waits = lean._idle[0]._hub_waits is not None
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        quiet = build_transport(ClientConfig(protocol="grpc", grpc_target=f"127.0.0.1:{{silent.getsockname()[1]}}",
                                             library="lean", timeout_s=0.3))
        before = len(ticks)
        try:
            quiet.predict({PUPDATES!r})
            kind = None
        except PredictionError as error:
            kind = error.kind
        ticker.kill()
        print(json.dumps({{"small": small, "many": many.likes, "hub_waits": waits, "timeout_kind": kind,
                          "ticks_while_waiting": len(ticks) - before}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["small"] == [expected["small"]] * 3
    assert result["many"] == expected["many"]
    assert result["hub_waits"] is True
    assert result["timeout_kind"] == "timeout"
    assert result["ticks_while_waiting"] > 0  # the 0.3 s wait ran in the hub, not blocking it
