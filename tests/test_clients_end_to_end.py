"""Every client against the real lab server: same answers, server timing, errors with their kinds."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest

from poochlab.clients import ClientConfig, PredictionError, build_predictor, build_transport

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

REST_LIBRARIES = ("requests", "lean", "urllib3", "http.client", "geventhttpclient", "httptools")
PUPDATES = [
    {"hashtags": "#corgi #adorable", "country": "US", "followers": 120},
    {"hashtags": ["#pug", "#zoomies"], "country": "FR", "followers": 3},
]


@pytest.fixture(scope="module")
def grpc_answer(lab_server) -> tuple[list[float], int | None]:
    predictor = build_transport(ClientConfig(protocol="grpc", grpc_target=lab_server.grpc_target))
    prediction = predictor.predict(PUPDATES)
    predictor.close()
    return prediction.likes, prediction.model_version


@pytest.mark.parametrize("request_format", ["row", "columnar"])
@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_rest_clients_agree_with_grpc(lab_server, grpc_answer, library: str, request_format: str) -> None:
    predictor = build_transport(ClientConfig(rest_url=lab_server.rest_url, library=library,
                                             request_format=request_format))
    first = predictor.predict(PUPDATES)
    second = predictor.predict(PUPDATES)
    likes, _ = grpc_answer
    assert all(math.isfinite(v) and v >= 0 for v in first.likes)
    # REST prints float32 with 6 significant digits when that reads back as the same float32.
    assert first.likes == pytest.approx(likes, rel=1e-6)
    assert second.likes == first.likes
    assert first.path == "model"
    assert first.timing.server_compute_us is not None and first.timing.server_compute_us > 0
    assert first.timing.server_queue_us is not None and first.timing.server_queue_us >= 0
    assert predictor._http.opened == 1  # one kept-alive connection, reused
    predictor.close()


def _open_sockets_to(port: int) -> set[tuple[str, int]]:
    """This process's established TCP connections to ``port`` on loopback (their local ends)."""
    import psutil

    return {tuple(c.laddr) for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED}


@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_sequential_calls_reuse_one_socket(lab_server, library: str) -> None:
    """Keep-alive on the wire, not just one adapter object: a client that reconnected on every
    call (as the httptools client once did, reading keep-alive after the parser had reset)
    would pay a TCP handshake per request and leave no socket open between calls."""
    from urllib.parse import urlsplit

    port = urlsplit(lab_server.rest_url).port
    predictor = build_transport(ClientConfig(rest_url=lab_server.rest_url, library=library))
    before = _open_sockets_to(port)
    predictor.predict(PUPDATES)
    first = _open_sockets_to(port) - before
    for _ in range(3):
        predictor.predict(PUPDATES)
    assert len(first) == 1
    assert _open_sockets_to(port) - before == first
    predictor.close()


def test_grpc_reports_version_and_server_timing(lab_server, grpc_answer) -> None:
    predictor = build_transport(ClientConfig(protocol="grpc", grpc_target=lab_server.grpc_target))
    prediction = predictor.predict(PUPDATES[:1])
    assert prediction.model_version == predictor.model_versions()[-1] == grpc_answer[1]
    assert prediction.timing.server_compute_us is not None and prediction.timing.server_compute_us > 0
    assert prediction.likes == pytest.approx(grpc_answer[0][:1], rel=1e-7)
    predictor.close()


def test_rest_status_api_lists_the_same_versions_as_grpc(lab_server) -> None:
    rest = build_transport(ClientConfig(rest_url=lab_server.rest_url))
    grpc = build_transport(ClientConfig(protocol="grpc", grpc_target=lab_server.grpc_target))
    assert rest.model_versions() == grpc.model_versions() != []
    rest.close()
    grpc.close()


@pytest.mark.parametrize("protocol,kind", [("rest", "http_404"), ("grpc", "grpc_NOT_FOUND")])
def test_unknown_model_fails_with_the_servers_status(lab_server, protocol: str, kind: str) -> None:
    predictor = build_transport(ClientConfig(protocol=protocol, rest_url=lab_server.rest_url,
                                             grpc_target=lab_server.grpc_target, model_name="no_such_model"))
    with pytest.raises(PredictionError) as caught:
        predictor.predict(PUPDATES)
    assert caught.value.kind == kind
    assert "no_such_model" in caught.value.message
    predictor.close()


def test_grpc_receive_limit_is_applied(lab_server) -> None:
    predictor = build_transport(ClientConfig(protocol="grpc", grpc_target=lab_server.grpc_target,
                                             grpc_max_receive_bytes=16))
    with pytest.raises(PredictionError) as caught:
        predictor.predict(PUPDATES)
    assert caught.value.kind == "grpc_RESOURCE_EXHAUSTED"
    predictor.close()


def test_clients_work_under_gevent_with_many_greenlets(lab_server) -> None:
    """As in Locust: monkey-patched, init_gevent() before any channel, one predictor per process."""
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import grpc.experimental.gevent
        grpc.experimental.gevent.init_gevent()
        import gevent, json
        from poochlab.clients import ClientConfig, build_predictor
        pupdates = {PUPDATES!r}
        results = {{}}
        for protocol, library in (("grpc", None), ("grpc", "lean"), ("rest", "lean"), ("rest", "requests")):
            predictor = build_predictor(ClientConfig(protocol=protocol, library=library,
                                        rest_url={lab_server.rest_url!r}, grpc_target={lab_server.grpc_target!r}))
            def user():
                return [predictor.predict(pupdates).likes for _ in range(5)]
            greenlets = [gevent.spawn(user) for _ in range(4)]
            gevent.joinall(greenlets, timeout=60, raise_error=True)
            results[protocol + "/" + str(library)] = [g.value for g in greenlets]
            predictor.close()
        print(json.dumps(results))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    reference = results["grpc/None"][0][0]
    for runs in results.values():
        assert len(runs) == 4
        for likes in (likes for run in runs for likes in run):
            assert likes == pytest.approx(reference, rel=1e-6)


def test_build_predictor_composes_cache_and_supervisor(lab_server, redis_url, tmp_path) -> None:
    from poochlab.clients import CacheConfig, FallbackConfig
    from poochlab.models.baseline import HistoricalBaseline

    baseline = HistoricalBaseline(mean_likes=1.0, per_hashtag={}, max_plausible_likes=10.0)
    config = ClientConfig(rest_url=lab_server.rest_url, cache=CacheConfig(redis_url=redis_url),
                          fallback=FallbackConfig(baseline_path=baseline.write(tmp_path / "b.json"), deadline_s=5.0))
    predictor = build_predictor(config)
    assert [predictor.predict(PUPDATES).path for _ in range(2)] == ["model", "cache"]
    stats = predictor.stats()
    assert (stats["cache_hits"], stats["cache_misses"], stats["model_requests"]) == (2, 2, 1)
    assert stats["breaker_state"] == "closed" and stats["fallback_requests"] == 0
    predictor.close()


@pytest.mark.parametrize("library", ["http.client", "urllib3", "requests"])
def test_connections_are_pooled_not_per_caller(lab_server, grpc_answer, library: str) -> None:
    """A thread per request (as a thread-based generator may run) reuses one idle connection."""
    import threading

    predictor = build_transport(ClientConfig(rest_url=lab_server.rest_url, library=library))
    answers: list = []
    for _ in range(5):
        thread = threading.Thread(target=lambda: answers.append(predictor.predict(PUPDATES).likes))
        thread.start()
        thread.join()
    assert answers == [answers[0]] * 5 and answers[0] == pytest.approx(grpc_answer[0], rel=1e-6)
    assert predictor._http.opened == 1
    predictor.close()


def test_lean_client_serves_several_os_threads_at_once(lab_server, grpc_answer) -> None:
    """The lean client's sockets are bound to their OS thread (gevent's hub, when patched): each
    thread gets its own connection."""
    from concurrent.futures import ThreadPoolExecutor

    predictor = build_transport(ClientConfig(rest_url=lab_server.rest_url, library="lean"))
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: predictor.predict(PUPDATES).likes, range(12)))
    assert all(likes == pytest.approx(grpc_answer[0], rel=1e-6) for likes in results)
    assert 1 <= predictor._http.opened <= 3
    predictor.close()


def test_predict_command_prints_likes_path_and_timing(lab_server, redis_url, capsys) -> None:
    import argparse
    import re

    from poochlab.cli import CommandError
    from poochlab.clients.commands import predict

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    common = ["#corgi #adorable", "--country", "US", "--rest-url", lab_server.rest_url,
              "--grpc-target", lab_server.grpc_target, "--redis-url", redis_url]
    outputs = []
    for _ in range(2):
        assert predict.run(parser.parse_args([*common, "--protocol", "grpc", "--cache", "redis"])) == 0
        outputs.append(capsys.readouterr().out)
    first, second = outputs
    assert re.search(r"^path +model \(version \d+\)$", first, re.M)
    assert re.search(r"^path +cache \(version \d+\)$", second, re.M)
    likes = [re.search(r"^likes +([\d.]+)$", out, re.M).group(1) for out in outputs]  # type: ignore[union-attr]
    assert likes[0] == likes[1]
    for field in ("client encode", "wait", "client decode"):
        assert re.search(rf"^{field} +[\d,]+ us", first, re.M)
    assert re.search(r"^server compute +[\d,]+ us$", first, re.M)
    assert re.search(r"^server compute +n/a$", second, re.M)  # a hit never reached the server
    with pytest.raises(CommandError, match="followers"):
        predict.run(parser.parse_args([*common, "--followers", "-1"]))


def test_a_forked_child_opens_its_own_connection(lab_server, grpc_answer) -> None:
    """Locust --processes forks: the child must not talk on the parent's kept-alive socket."""
    import os

    predictor = build_transport(ClientConfig(rest_url=lab_server.rest_url, library="http.client"))
    parent_likes = predictor.predict(PUPDATES).likes

    def local_port() -> int:
        (connection,) = predictor._http._all
        return connection._connection.sock.getsockname()[1]

    parent_port = local_port()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: predict, report, and leave without running pytest's teardown
        try:
            likes = predictor.predict(PUPDATES).likes
            os.write(write_end, json.dumps([likes, local_port()]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    child_likes, child_port = json.loads(os.read(read_end, 65536))
    os.close(read_end)
    assert status == 0 and child_port != parent_port
    assert child_likes == parent_likes
    assert predictor.predict(PUPDATES).likes == parent_likes  # the parent's connection still works
    assert local_port() == parent_port
    predictor.close()
