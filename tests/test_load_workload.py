"""Workloads: seeded request streams with a stated repeat rate, and a cache experiment that gets
the hit ratio it asked for (real Redis, echo server)."""

from __future__ import annotations

from collections import Counter

import pytest

from poochlab.experiments.load import LoadSettings, Workload, measure_trial
from poochlab.experiments.records import TrialRecord


def _key(request) -> tuple:
    return tuple((p.hashtag_text, p.country, p.followers) for p in request)


@pytest.fixture(scope="module")
def facts() -> Workload:
    return Workload.generated(600, seed=3)


def test_new_requests_never_repeat_across_streams_even_after_the_facts_run_out(facts: Workload) -> None:
    workload = Workload(facts.pupdates, instances=2, seed=1)
    keys = [_key(next(stream)) for stream in (workload.stream(0, 3), workload.stream(1, 3), workload.stream(2, 3))
            for _ in range(400)]  # 3 x 400 x 2 = 2400 pupdates from 600 facts
    assert len(set(keys)) == len(keys)


def test_streams_are_seeded(facts: Workload) -> None:
    a = Workload(facts.pupdates, zipf_s=1.1, seed=4).stream(0, 1)
    b = Workload(facts.pupdates, zipf_s=1.1, seed=4).stream(0, 1)
    assert [_key(next(a)) for _ in range(50)] == [_key(next(b)) for _ in range(50)]


def test_hit_ratio_workload_repeats_only_its_hot_set_at_the_stated_rate(facts: Workload) -> None:
    workload = Workload(facts.pupdates, cache_hit_ratio=0.3, hot_set_size=8, seed=2)
    hot = {_key(r) for r in workload.hot_set()}
    stream = workload.stream(0, 1)
    drawn = [_key(next(stream)) for _ in range(4000)]
    from_hot = sum(1 for key in drawn if key in hot)
    assert abs(from_hot / len(drawn) - 0.3) < 0.03
    misses = [key for key in drawn if key not in hot]
    assert len(set(misses)) == len(misses)


def test_zipf_makes_the_most_popular_request_dominate(facts: Workload) -> None:
    stream = Workload(facts.pupdates, zipf_s=1.2, seed=2).stream(0, 1)
    counts = Counter(_key(next(stream)) for _ in range(3000))
    top, second = [n for _, n in counts.most_common(2)]
    assert top > 1.5 * second


def test_bad_workloads_name_the_field(facts: Workload) -> None:
    with pytest.raises(ValueError, match="cache_hit_ratio"):
        Workload(facts.pupdates, cache_hit_ratio=1.5)
    with pytest.raises(ValueError, match="at most one of cache_hit_ratio and zipf_s"):
        Workload(facts.pupdates, cache_hit_ratio=0.5, zipf_s=1.0)
    with pytest.raises(ValueError, match="hot set"):
        Workload(facts.pupdates[:10], cache_hit_ratio=0.5, hot_set_size=10)


@pytest.mark.e2e  # Locust workers against an echo server
def test_cache_trial_gets_the_hit_ratio_it_asked_for(redis_url: str, facts: Workload) -> None:
    from poochlab.clients.config import CacheConfig, ClientConfig
    from poochlab.experiments.load.echo_server import start_echo_server

    workload = Workload(facts.pupdates, cache_hit_ratio=0.6, hot_set_size=16, seed=9)
    settings = LoadSettings(mode="open", rate_rps=150, window_s=1.0, warmup_s=0.3, min_windows=2, max_windows=2)
    record = TrialRecord(run_id="t", trial_id="cache", config_id="cache", repetition=0, factors={}, seed=9)
    with start_echo_server(grpc=False) as echo:
        client = ClientConfig(rest_url=echo.rest_url, cache=CacheConfig(redis_url=redis_url))
        measure_trial(settings, client, workload, record)
    assert record.status == "ok", record.failure_reason
    assert record.cache is not None
    ratio = record.cache.hits / (record.cache.hits + record.cache.misses)
    assert abs(ratio - 0.6) < 0.1, record.cache
    assert record.answer_paths.get("cache", 0) > 0 and record.answer_paths.get("model", 0) > 0


@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.05, 0.125])
def test_every_prefix_of_a_stream_holds_its_planned_hits_within_one_block(facts: Workload, ratio: float) -> None:
    from poochlab.experiments.load.workload import HIT_BLOCK

    workload = Workload(facts.pupdates, cache_hit_ratio=ratio, hot_set_size=8, seed=4)
    hot = {_key(r) for r in workload.hot_set()}
    stream = workload.stream(0, 1)
    hits = 0
    for n in range(1, 2_001):
        hits += _key(next(stream)) in hot
        # Bernoulli draws would stray by about sqrt(n·p·(1-p)); the stratified stream never
        # strays by more than one block's hits (+1 for rounding).
        assert abs(hits - n * ratio) <= HIT_BLOCK * ratio + 1, (n, hits)
    assert hits == round(2_000 * ratio)  # 2,000 is a whole number of blocks


def test_a_grpc_cache_trial_sends_on_threads_and_gets_its_hit_ratio(redis_url: str, facts: Workload) -> None:
    from poochlab.clients.config import CacheConfig, ClientConfig
    from poochlab.experiments.load.echo_server import start_echo_server
    from poochlab.experiments.load.worker_spec import sends_on_threads

    workload = Workload(facts.pupdates, cache_hit_ratio=0.5, hot_set_size=16, seed=4)
    settings = LoadSettings(mode="open", rate_rps=150, window_s=1.0, warmup_s=0.3, min_windows=2, max_windows=2)
    record = TrialRecord(run_id="t", trial_id="grpc-cache", config_id="grpc-cache", repetition=0, factors={}, seed=4)
    with start_echo_server(grpc=True) as echo:
        client = ClientConfig(protocol="grpc", library="grpcio", grpc_target=echo.grpc_target,
                              cache=CacheConfig(redis_url=redis_url))
        assert sends_on_threads(client)  # redis-py shares its pool between the sending threads
        measure_trial(settings, client, workload, record)
    assert record.status == "ok", record.failure_reason
    assert record.errors_by_kind == {} and record.cache is not None and record.cache.errors == 0
    # Stratified hits: any stretch of the stream is within two blocks' worth (warm-up cut at one
    # end, the last window at the other) of the planned half: 2 x (20 x 0.5 + 1).
    lookups = record.cache.hits + record.cache.misses
    assert abs(record.cache.hits - lookups / 2) <= 22
    assert record.answer_paths.get("cache", 0) > 0 and record.answer_paths.get("model", 0) > 0
