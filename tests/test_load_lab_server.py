"""End to end through Locust against the lab's real server (real TensorFlow behind it)."""

from __future__ import annotations

import pytest

from poochlab.clients.config import ClientConfig
from poochlab.experiments.load import LoadSettings, Workload, measure_trial
from poochlab.experiments.records import TrialRecord

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


def test_trial_against_the_lab_server_records_server_timing_and_prometheus_deltas(lab_server) -> None:
    from fixtures.lab_server import PROMETHEUS_PATH

    settings = LoadSettings(mode="open", rate_rps=60, window_s=1.0, warmup_s=0.5, min_windows=2, max_windows=2)
    record = TrialRecord(run_id="e2e", trial_id="lab", config_id="lab", repetition=0, factors={}, seed=2)
    measure_trial(settings, ClientConfig(rest_url=lab_server.rest_url), Workload.generated(500, seed=2), record,
                  server_pid=lab_server.pid, metrics_url=lab_server.rest_url + PROMETHEUS_PATH)
    assert record.status == "ok", record.failure_reason
    answered = sum(w.requests for w in record.windows)
    assert answered > 0 and record.errors_by_kind == {}
    assert record.answer_paths == {"model": answered}
    # The lab server sends its queue/compute times per request; Prometheus gives the same trial's deltas.
    assert record.server_compute_histogram is not None
    latency = record.server_metrics.deltas[":tensorflow:serving:request_latency"]
    rest = [series for labels, series in latency.items() if "entrypoint=REST" in labels]
    # Every answered request of the trial (warm-up and drain included) is in the server's count.
    assert sum(series["count"] for series in rest) >= answered
    assert record.resources.server_cpu_s > 0
    assert record.resources.server_peak_rss_bytes > 0


def test_a_redis_outage_during_a_cache_trial_is_in_its_record_and_voids_it_as_a_cache_measurement(
        lab_server, redis_server, redis_url: str) -> None:
    from poochlab.clients.config import CacheConfig

    settings = LoadSettings(mode="open", rate_rps=80, window_s=1.0, warmup_s=0.3, min_windows=3, max_windows=3)
    record = TrialRecord(run_id="e2e", trial_id="redis-down", config_id="redis-down", repetition=0, factors={},
                         seed=3)
    workload = Workload.generated(500, seed=3, cache_hit_ratio=0.5, hot_set_size=20)

    def kill_redis_after_the_first_window(window: dict) -> None:
        if window["window"] == 0:
            redis_server.stop()

    try:
        measure_trial(settings, ClientConfig(rest_url=lab_server.rest_url, cache=CacheConfig(redis_url=redis_url)),
                      workload, record, server_pid=lab_server.pid, progress=kill_redis_after_the_first_window)
    finally:
        redis_server.start()
    assert record.status == "ok", record.failure_reason
    # The cache failed open: every request was answered (by the model while Redis was down) ...
    assert record.errors_by_kind == {}
    assert record.answer_paths.get("model", 0) > record.answer_paths.get("cache", 0) > 0
    # ... and the outage is in the record, by reason, and voids the trial as a cache measurement.
    assert record.cache is not None and record.cache.errors > 0
    assert set(record.cache.errors_by_reason) <= {"connection", "bypassed", "timeout"}
    assert record.cache.errors_by_reason.get("connection", 0) > 0
    assert "cache_unreliable" in record.validity.kinds
    assert any(r.startswith("cache errors on") for r in record.validity.reasons)
