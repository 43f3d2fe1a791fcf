"""Network faults through the lab's TCP proxy, a Redis outage under cached predictions, and the
TF Serving launchers refusing the lab's fault flags."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from pathlib import Path

import pytest

from poochlab.experiments.faults.injectors import NetworkFault, RedisOutage
from poochlab.experiments.faults.proxy import FaultProxy
from poochlab.experiments.faults.runner import FakeClock, FaultRunner
from poochlab.experiments.faults.schedule import FaultSpec


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def echo_port():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo_port):
    with FaultProxy("127.0.0.1", echo_port) as running:
        yield running


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=30)


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_the_proxy_forwards_both_ways(proxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"ping" * 1000) == b"ping" * 1000


def test_a_delay_holds_each_chunk_each_way(proxy) -> None:
    proxy.set_delay(150)
    with connect(proxy) as sock:
        started = time.perf_counter()
        assert round_trip(sock, b"hello") == b"hello"
        assert time.perf_counter() - started >= 0.3  # 150 ms there and 150 ms back
    proxy.clear()


def test_a_freeze_holds_bytes_until_thawed(proxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"warm") == b"warm"
        proxy.set_frozen(True)
        sock.sendall(b"frozen")
        while proxy.held_bytes < len(b"frozen"):  # the proxy holds the request ...
            time.sleep(0.005)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # ... so nothing came back
            sock.recv(16)
        sock.setblocking(True)
        proxy.set_frozen(False)
        assert sock.recv(16) == b"frozen"
        assert proxy.held_bytes == 0


def test_a_drop_resets_open_connections_and_refuses_new_ones_until_cleared(proxy) -> None:
    sock = connect(proxy)
    assert round_trip(sock, b"a") == b"a"
    assert proxy.drop(refuse_new=True) == 1
    with _closed():
        assert sock.recv(16) == b""
    sock.close()
    with connect(proxy) as refused:  # accepted by the kernel, then reset by the proxy
        with _closed():
            refused.sendall(b"x")
            assert refused.recv(16) == b""
    assert proxy.refused == 1
    proxy.clear()
    with connect(proxy) as again:
        assert round_trip(again, b"back") == b"back"


class _closed:
    """The connection ends: EOF (b"") or a reset, whichever the kernel reports first."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, trace) -> bool:
        return kind is not None and issubclass(kind, (ConnectionResetError, BrokenPipeError))


def test_network_faults_run_from_a_schedule_and_are_recorded(proxy) -> None:
    schedule = [FaultSpec("network", 1.0, 2.0, {"mode": "delay", "delay_ms": 40}),
                FaultSpec("network", 5.0, 1.0, {"mode": "drop"})]
    with connect(proxy) as sock:
        round_trip(sock, b"open")
        timeline = FaultRunner(schedule, {"network": NetworkFault(proxy)}, FakeClock()).run()
    delay, drop = timeline.events
    assert (delay.injected_at_s, delay.cleared_at_s, delay.detail["delay_ms_each_way"]) == (1.0, 3.0, 40)
    assert (drop.injected_at_s, drop.cleared_at_s, drop.detail["connections_dropped"]) == (5.0, 6.0, 1)
    with connect(proxy) as sock:  # cleared: no delay, accepted
        assert round_trip(sock, b"x") == b"x"


def test_a_redis_outage_fails_no_cached_prediction(lab_server, redis_server, redis_url) -> None:
    from poochlab.clients import CacheConfig, ClientConfig, build_predictor

    rows = [{"hashtags": f"#dog{i}", "country": "GB", "followers": i} for i in range(4)]
    predictor = build_predictor(ClientConfig(rest_url=lab_server.rest_url, cache=CacheConfig(
        redis_url=redis_url, op_timeout_s=0.2, reconnect_after_s=0.0)))
    warm = [predictor.predict([row]) for row in rows]
    assert {p.path for p in warm} == {"model"}

    clock = FakeClock()
    answers: dict[str, list] = {"during": [], "after": []}

    class Outage(RedisOutage):
        def inject(self, spec, clock_):
            detail = super().inject(spec, clock_)
            answers["during"] += [predictor.predict([row]) for row in rows]  # Redis is down here
            return detail

    timeline = FaultRunner([FaultSpec("redis_outage", 2.0, 3.0)],
                           {"redis_outage": Outage(redis_server)}, clock).run()
    answers["after"] += [predictor.predict([row]) for row in rows]
    event = timeline.events[0]
    assert (event.injected_at_s, event.cleared_at_s, event.lasted_s) == (2.0, 5.0, 3.0)
    assert event.detail["redis_pid"] != event.detail["new_redis_pid"] and redis_server.running
    # Zero failed requests: every row answered by the model, with the same likes as before.
    assert [p.path for p in answers["during"]] == ["model"] * 4
    assert [p.likes for p in answers["during"]] == [p.likes for p in warm]
    assert predictor.stats()["cache_errors"] >= 1
    assert [p.likes for p in answers["after"]] == [p.likes for p in warm]
    predictor.close()


@pytest.mark.parametrize("kind", ["tfserving", "docker"])
def test_tf_serving_launchers_refuse_the_lab_fault_flags(tmp_path: Path, kind: str) -> None:
    from poochlab.processes.servers.registry import launch_kind
    from poochlab.processes.servers.launcher import ServerSpec

    spec = ServerSpec(kind=kind, model_name="m", model_base_path=tmp_path,
                      extra_flags=("--lab_fault_delay_ms=100", "--lab_fault_admin=true"))
    with pytest.raises(ValueError) as refused:
        launch_kind(spec)
    message = str(refused.value)
    assert f"server kind {kind!r} runs real TF Serving" in message
    assert "--lab_fault_delay_ms=100 --lab_fault_admin=true" in message
    assert "fault injection (--lab_fault_*) exists only in the lab's server" in message
