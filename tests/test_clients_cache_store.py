"""Cache keys, version resolution and the fail-open Redis store, against a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from poochlab.clients.cache_aside import cache_key
from poochlab.clients.prediction import PredictionError
from poochlab.clients.redis_store import RedisStore, decode_value, encode_value
from poochlab.clients.version_resolver import VersionResolver

ROW = {"hashtags": "#corgi #adorable", "country": "US", "followers": 10}


def test_keys_are_stable_across_processes_and_ignore_key_order() -> None:
    here = cache_key("p:", "pooch_predictor", 3, "serving_default", ROW)
    code = ("from poochlab.clients.cache_aside import cache_key;"
            "print(cache_key('p:', 'pooch_predictor', 3, 'serving_default',"
            " {'followers': 10, 'country': 'US', 'hashtags': '#corgi #adorable'}))")
    elsewhere = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert elsewhere == here


def test_every_part_of_the_key_matters() -> None:
    base = cache_key("p:", "pooch_predictor", 3, "serving_default", ROW)
    variants = [
        cache_key("p:", "pooch_predictor", 4, "serving_default", ROW),
        cache_key("p:", "other_model", 3, "serving_default", ROW),
        cache_key("p:", "pooch_predictor", 3, "other_signature", ROW),
        cache_key("p:", "pooch_predictor", 3, "serving_default", {**ROW, "followers": 11}),
        cache_key("p:", "pooch_predictor", 3, "serving_default", {**ROW, "country": "FR"}),
        cache_key("p:", "pooch_predictor", 3, "serving_default", {**ROW, "hashtags": "#corgi"}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_values_round_trip_and_foreign_values_are_rejected() -> None:
    for likes in (0.0, 12.5, 1e-7, 123456.789, float("inf")):
        assert decode_value(encode_value(likes)) == likes
    for garbage in (b"12.5", b"likes1:", b"likes1:abc", b"\xff\xfe", b"likes1:nan"):
        with pytest.raises(ValueError):
            decode_value(garbage)


class ScriptedStatus:
    """The server's AVAILABLE versions over time, as the status API would report them."""

    def __init__(self, *answers: list[int] | PredictionError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, timeout_s: float | None) -> list[int]:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, PredictionError):
            raise answer
        return answer


def test_resolver_follows_the_latest_version_on_refresh() -> None:
    status = ScriptedStatus([1], [1, 2], [2])
    resolver = VersionResolver(status, refresh_s=0.0)
    assert resolver.current() == 1
    assert resolver.current() == 2
    assert resolver.current() == 2
    assert resolver.changes == 1
    assert cache_key("p:", "m", 1, "s", ROW) != cache_key("p:", "m", resolver.current(), "s", ROW)


def test_resolver_caches_between_refreshes_and_keeps_the_last_version_on_errors() -> None:
    status = ScriptedStatus([4], PredictionError("connection", "down"), [5])
    resolver = VersionResolver(status, refresh_s=3600.0)
    assert resolver.current() == 4 and resolver.current() == 4
    assert status.calls == 1  # within the interval nobody asks again
    resolver.invalidate()
    assert resolver.current() == 4  # the refresh failed: keep what we knew
    assert resolver.refresh_failures == 1
    resolver.invalidate()
    assert resolver.current() == 5


def test_pinned_version_never_asks_the_server() -> None:
    status = ScriptedStatus([9])
    assert VersionResolver(status, refresh_s=0.0, pinned=2).current() == 2
    assert status.calls == 0


def test_store_fails_open_when_redis_dies_and_reconnects_when_it_returns(redis_server, redis_url: str) -> None:
    store = RedisStore(redis_url, op_timeout_s=0.2, reconnect_after_s=0.0)
    assert store.set_many({"k1": b"v1", "k2": b"v2"}, ttl_s=60)
    assert store.get_many(["k1", "k2", "k3"]) == [b"v1", b"v2", None]
    redis_server.stop()
    try:
        assert store.get_many(["k1"]) is None
        assert store.set_many({"k1": b"v"}, ttl_s=60) is False
        assert store.stats()["connection"] == 2
    finally:
        redis_server.start()
    assert store.set_many({"k1": b"again"}, ttl_s=60)
    assert store.get_many(["k1"]) == [b"again"]
    store.close()


def test_store_bypasses_redis_for_a_while_after_an_error(redis_server, redis_url: str) -> None:
    store = RedisStore(redis_url, op_timeout_s=0.2, reconnect_after_s=3600.0)
    redis_server.stop()
    try:
        assert store.get_many(["k"]) is None
    finally:
        redis_server.start()
    assert store.get_many(["k"]) is None  # Redis is back, but the store waits out its interval
    assert store.stats() == {"connection": 1, "bypassed": 1}
    store.close()


def test_store_times_out_on_a_frozen_redis(redis_server, redis_url: str) -> None:
    store = RedisStore(redis_url, op_timeout_s=0.05, reconnect_after_s=0.0)
    assert store.set_many({"k": b"v"}, ttl_s=60)
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        assert store.get_many(["k"]) is None
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert store.stats() == {"timeout": 1}
    for _ in range(50):  # the frozen reply may still arrive on the dropped connection; a new one is clean
        if store.get_many(["k"]) == [b"v"]:
            break
        time.sleep(0.01)
    assert store.get_many(["k"]) == [b"v"]
    store.close()


def test_entries_expire_after_their_ttl(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url, op_timeout_s=0.2, reconnect_after_s=0.0)
    store.set_many({"k": b"v"}, ttl_s=30)
    ttl_ms = redis.Redis.from_url(redis_url).pttl("k")
    assert 0 < ttl_ms <= 30_000
    store.close()
