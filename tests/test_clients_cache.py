"""Redis cache-aside in front of the real lab server: hits, misses, fail-open, single flight."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest
import redis

from poochlab.clients import CacheConfig, ClientConfig, build_predictor

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

CORGI = {"hashtags": "#corgi #adorable", "country": "US", "followers": 120}
PUG = {"hashtags": "#pug", "country": "FR", "followers": 3}


def cached(lab_server, redis_url: str, protocol: str = "rest", **cache: object):
    settings = {"op_timeout_s": 0.2, "reconnect_after_s": 0.0, **cache}
    return build_predictor(ClientConfig(protocol=protocol, rest_url=lab_server.rest_url,
                                        grpc_target=lab_server.grpc_target,
                                        cache=CacheConfig(redis_url=redis_url, **settings)))  # type: ignore[arg-type]


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_miss_then_hit_with_the_same_answer(lab_server, redis_url: str, protocol: str) -> None:
    predictor = cached(lab_server, redis_url, protocol)
    miss = predictor.predict([CORGI])
    hit = predictor.predict([CORGI])
    assert (miss.path, hit.path) == ("model", "cache")
    assert hit.likes == miss.likes
    assert hit.model_version == miss.model_version == predictor.inner.model_versions()[-1]
    assert hit.timing.cache_wait_us > 0 and hit.timing.server_compute_us is None
    stats = predictor.stats()
    assert (stats["cache_hits"], stats["cache_misses"], stats["cache_errors"]) == (1, 1, 0)
    assert stats["model_requests"] == 1
    predictor.close()


def test_rest_and_grpc_share_entries_and_rows_mix_paths(lab_server, redis_url: str) -> None:
    rest, grpc = cached(lab_server, redis_url, "rest"), cached(lab_server, redis_url, "grpc")
    first = rest.predict([CORGI])
    mixed = grpc.predict([CORGI, PUG])  # same model, version, signature and input: same key
    assert mixed.paths == ("cache", "model") and mixed.path == "mixed"
    assert mixed.likes[0] == first.likes[0]
    assert grpc.stats()["model_requests"] == 1
    assert rest.predict([PUG, CORGI]).paths == ("cache", "cache")
    rest.close()
    grpc.close()


def test_entries_carry_the_ttl(lab_server, redis_url: str) -> None:
    predictor = cached(lab_server, redis_url, ttl_s=30.0)
    predictor.predict([CORGI])
    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys("poochlab:prediction:*")
    assert key.decode() == predictor.key_for(CORGI, predictor.resolver.known_version)
    assert 0 < client.pttl(key) <= 30_000
    predictor.close()


def test_redis_killed_mid_run_answers_from_the_model_and_recovers(lab_server, redis_server, redis_url: str) -> None:
    predictor = cached(lab_server, redis_url)
    expected = predictor.predict([CORGI]).likes
    assert predictor.predict([CORGI]).path == "cache"
    redis_server.stop()
    try:
        down = [predictor.predict([CORGI]) for _ in range(3)]
    finally:
        redis_server.start()
    assert [p.path for p in down] == ["model"] * 3 and all(p.likes == expected for p in down)
    assert predictor.stats()["cache_errors_by_reason"]["connection"] >= 3
    # Redis came back empty: one miss refills it, then hits resume on reconnected sockets.
    paths = [predictor.predict([CORGI]).path for _ in range(3)]
    assert paths == ["model", "cache", "cache"]
    predictor.close()


def test_frozen_redis_is_a_timeout_not_a_failure(lab_server, redis_server, redis_url: str) -> None:
    predictor = cached(lab_server, redis_url, op_timeout_s=0.05)
    expected = predictor.predict([PUG]).likes
    with frozen(redis_server.process.pid):
        answer = predictor.predict([PUG])
    assert answer.path == "model" and answer.likes == expected
    assert predictor.stats()["cache_errors_by_reason"].get("timeout", 0) >= 1
    predictor.close()


def test_garbage_in_redis_is_counted_and_replaced(lab_server, redis_url: str) -> None:
    predictor = cached(lab_server, redis_url)
    expected = predictor.predict([CORGI]).likes
    key = predictor.key_for(CORGI, predictor.resolver.known_version)
    redis.Redis.from_url(redis_url).set(key, b"\x00not a prediction")
    answer = predictor.predict([CORGI])
    assert answer.path == "model" and answer.likes == expected
    assert predictor.stats()["cache_errors_by_reason"] == {"garbage": 1}
    assert predictor.predict([CORGI]).path == "cache"
    predictor.close()


def test_a_new_version_never_reads_the_old_versions_entries(lab_server, redis_url: str) -> None:
    predictor = cached(lab_server, redis_url)
    served = predictor.predict([CORGI])
    # Plant an answer under the key the next version would use: the current one must not see it,
    # and the entry the current version wrote is not under the next version's key.
    client = redis.Redis.from_url(redis_url)
    current, future = served.model_version, served.model_version + 1
    client.set(predictor.key_for(CORGI, future), b"likes1:99999.0")
    assert predictor.predict([CORGI]).likes == served.likes
    assert predictor.key_for(CORGI, future) != predictor.key_for(CORGI, current)
    assert client.get(predictor.key_for(CORGI, current)) is not None
    predictor.close()


def _run_identical_misses(lab_server, redis_url: str, single_flight: bool, users: int) -> tuple[dict, list]:
    predictor = cached(lab_server, redis_url, single_flight=single_flight)
    predictor.predict([PUG])  # resolve the version and warm the connection first
    row = {"hashtags": "#single #flight", "country": "NZ", "followers": 42}
    answers: list = [None] * users

    def user(index: int) -> None:
        answers[index] = predictor.predict([row])

    # Observed, not slept on: each user joining the first call's flight (single flight), or each
    # user's cache lookup having missed (without it), before the server may answer.
    followers = threading.Semaphore(0)
    wait_for_flights = predictor._wait_for_flights

    def followed(*args):
        followers.release()
        return wait_for_flights(*args)

    predictor._wait_for_flights = followed
    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    with frozen(lab_server.pid):  # the first model call cannot finish while the others arrive
        threads[0].start()
        deadline = time.monotonic() + 60
        while single_flight and not predictor._flights and time.monotonic() < deadline:
            time.sleep(0.001)
        for thread in threads[1:]:
            thread.start()
        if single_flight:
            assert all(followers.acquire(timeout=60) for _ in threads[1:])
        else:
            while predictor.stats()["cache_misses"] < 1 + users and time.monotonic() < deadline:
                time.sleep(0.001)
            assert predictor.stats()["cache_misses"] == 1 + users
    for thread in threads:
        thread.join(30)
    stats = predictor.stats()
    predictor.close()
    return stats, answers


def test_single_flight_collapses_identical_misses_into_one_model_call(lab_server, redis_url: str) -> None:
    stats, answers = _run_identical_misses(lab_server, redis_url, single_flight=True, users=5)
    assert stats["model_requests"] == 2  # the warm-up and one shared call
    assert stats["single_flight_shared"] + stats["cache_hits"] == 4
    assert len({tuple(a.likes) for a in answers}) == 1 and {a.path for a in answers} <= {"model", "cache"}


def test_without_single_flight_each_miss_calls_the_model(lab_server, redis_url: str) -> None:
    stats, answers = _run_identical_misses(lab_server, redis_url, single_flight=False, users=5)
    assert stats["model_requests"] == stats["cache_misses"] > 2  # every miss asked the model
    assert stats["single_flight_shared"] == 0
    assert len({tuple(a.likes) for a in answers}) == 1


def test_keys_switch_when_the_server_loads_a_new_version(pooch_exports, redis_url: str, tmp_path) -> None:
    """A server of our own (the shared one must not change models): version 1, then 2 appears."""
    import shutil

    from poochlab.processes.servers.launcher import ServerSpec, launch

    source = pooch_exports["small"] / "pooch_predictor"
    newest = max((p for p in source.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    base = tmp_path / "pooch_predictor"
    shutil.copytree(newest, base / "1")
    spec = ServerSpec(model_name="pooch_predictor", model_base_path=base, file_system_poll_wait_seconds=1,
                      log_file=tmp_path / "server.log")
    with launch(spec) as server:
        server.wait_until_available(["pooch_predictor"], timeout_s=120)
        predictor = cached(server, redis_url, version_refresh_s=0.0)
        first = predictor.predict([CORGI])
        assert (first.path, first.model_version, predictor.predict([CORGI]).path) == ("model", 1, "cache")
        shutil.copytree(newest, base / "2")
        deadline = time.monotonic() + 60
        while predictor.inner.model_versions() != [2] and time.monotonic() < deadline:
            time.sleep(0.2)
        after = predictor.predict([CORGI])
        assert (after.path, after.model_version) == ("model", 2)  # not version 1's entry
        assert predictor.predict([CORGI]).path == "cache"
        client = redis.Redis.from_url(redis_url)
        assert client.exists(predictor.key_for(CORGI, 1)) and client.exists(predictor.key_for(CORGI, 2))
        assert predictor.stats()["version_changes"] == 1
        predictor.close()


def test_a_model_rotation_sums_counters_but_keeps_each_models_resolved_version():
    from poochlab.clients.model_rotation import ModelRotation

    class Stub:
        def __init__(self, stats: dict) -> None:
            self._stats = stats

        def stats(self) -> dict:
            return self._stats

    rotation = ModelRotation([Stub({"requests": 2, "resolved_version": None, "errors_by_kind": {"timeout": 1}}),
                              Stub({"requests": 3, "resolved_version": 4, "errors_by_kind": {"timeout": 2}})])
    stats = rotation.stats()
    assert stats["requests"] == 5
    assert stats["errors_by_kind"] == {"timeout": 3}
    assert stats["resolved_version"] == [None, 4]  # not 4, not a TypeError from None + 4
