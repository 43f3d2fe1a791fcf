"""Per-window cache counts and answer paths: each window holds what the cache counted while it
was open, so a Redis outage shows up in the windows it touched (and nowhere else)."""

from __future__ import annotations

from typing import Any

from poochlab.experiments.faults.injectors import RedisOutage
from poochlab.experiments.faults.runner import FakeClock
from poochlab.experiments.faults.schedule import FaultSpec
from poochlab.experiments.recording.merge import merge_window_data
from poochlab.experiments.recording.windows import WindowRecorder
from poochlab.experiments.records import CacheCounts


def _cache_counts(stats: dict[str, Any]) -> CacheCounts:
    # What the worker's probe reads from a predictor's stats (experiments/load/worker.py).
    return CacheCounts(hits=stats.get("cache_hits", 0), misses=stats.get("cache_misses", 0),
                       errors_by_reason=dict(stats.get("cache_errors_by_reason", {})))


def test_each_window_holds_the_cache_counts_of_its_own_time() -> None:
    counts = {"hits": 5, "misses": 2, "errors_by_reason": {"timeout": 1}}  # warm-up and prefill
    recorder = WindowRecorder(10.0, 1.0, open_loop=True, cache_probe=lambda: CacheCounts(
        hits=counts["hits"], misses=counts["misses"], errors_by_reason=dict(counts["errors_by_reason"])))
    recorder.start_client_counts()
    counts.update(hits=8, misses=3)  # window 0: 3 hits, 1 miss
    recorder.record(10.1, 10.2, path="cache")
    recorder.advance(11.0)
    counts.update(hits=8, misses=7, errors_by_reason={"timeout": 1, "connection": 4})  # window 1: outage
    recorder.record(11.1, 11.2, path="model")
    recorder.advance(12.0)
    first, second = recorder.take_closed()
    assert (first.cache_counts, first.cache_errors_by_reason, first.answer_paths) == (
        {"hits": 3, "misses": 1}, {}, {"cache": 1})
    assert (second.cache_counts, second.cache_errors_by_reason, second.answer_paths) == (
        {"hits": 0, "misses": 4}, {"connection": 4}, {"model": 1})
    # Two workers' same window add up.
    merged = merge_window_data([second, second])
    assert merged.cache_counts == {"hits": 0, "misses": 8} and merged.cache_errors_by_reason == {"connection": 8}


def test_each_window_holds_the_breakers_transitions_of_its_own_time() -> None:
    counts = {"opened": 1, "probes": 0, "closed": 0}  # opened during warm-up
    recorder = WindowRecorder(0.0, 1.0, open_loop=True, breaker_probe=lambda: dict(counts))
    recorder.start_client_counts()
    counts.update(opened=2, probes=1)  # window 0: a probe failed and it opened again
    recorder.record(0.1, 0.2, path="fallback")
    recorder.advance(1.0)
    counts.update(probes=2, closed=1)  # window 1: the next probe closed it
    recorder.record(1.1, 1.2, path="model")
    recorder.advance(2.0)
    first, second = recorder.take_closed()
    assert first.breaker_counts == {"opened": 1, "probes": 1, "closed": 0}
    assert second.breaker_counts == {"opened": 0, "probes": 1, "closed": 1}
    assert merge_window_data([first, second]).breaker_counts == {"opened": 1, "probes": 2, "closed": 1}


def test_a_redis_outage_fails_no_request_and_shows_in_its_windows_cache_errors(
        lab_server, redis_server, redis_url) -> None:
    from poochlab.clients import CacheConfig, ClientConfig, build_predictor

    rows = [{"hashtags": f"#window{i}", "country": "GB", "followers": i} for i in range(4)]
    predictor = build_predictor(ClientConfig(rest_url=lab_server.rest_url, cache=CacheConfig(
        redis_url=redis_url, op_timeout_s=0.2, reconnect_after_s=0.0)))
    for row in rows:  # warm the cache (before the measurement)
        predictor.predict([row])
    recorder = WindowRecorder(0.0, 1.0, open_loop=True, cache_probe=lambda: _cache_counts(predictor.stats()))
    recorder.start_client_counts()

    def send(window: int) -> None:
        # Recorded at made-up times inside ``window``: the windows are told apart by the recorder's
        # clock, not by how long the real calls took.
        for i, row in enumerate(rows):
            answer = predictor.predict([row])
            recorder.record(window + 0.1 * (i + 1), window + 0.1 * (i + 1) + 0.001, path=answer.path)
        recorder.advance(window + 1.0)

    outage = RedisOutage(redis_server)
    send(0)
    outage.inject(FaultSpec("redis_outage", 1.0, 1.0), FakeClock(1.0))
    try:
        send(1)
    finally:
        outage.clear(FaultSpec("redis_outage", 1.0, 1.0), FakeClock(2.0))
    send(2)
    before, during, after = recorder.take_closed()
    predictor.close()
    # Zero failed requests in every window: the cache failed open.
    assert [w.errors_by_kind for w in (before, during, after)] == [{}, {}, {}]
    assert [w.requests for w in (before, during, after)] == [4, 4, 4]
    # Before: answered from the cache, no cache error. During: the model answered all four and the
    # cache counted its errors in this window only. After: Redis is back (empty), no error.
    assert (before.answer_paths, before.cache_counts["hits"], before.cache_errors_by_reason) == ({"cache": 4}, 4, {})
    assert during.answer_paths == {"model": 4} and sum(during.cache_errors_by_reason.values()) >= 1
    assert set(during.cache_errors_by_reason) <= {"connection", "timeout"}
    assert after.cache_errors_by_reason == {} and after.answer_paths == {"model": 4}
