"""End to end through Locust against the lab's real server (real TensorFlow behind it)."""

from __future__ import annotations

from poochlab.clients.config import ClientConfig
from poochlab.experiments.load import LoadSettings, Workload, measure_trial
from poochlab.experiments.records import TrialRecord


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
    latency = record.server_metrics[":tensorflow:serving:request_latency"]
    rest = [series for labels, series in latency.items() if "entrypoint=REST" in labels]
    # Every answered request of the trial (warm-up and drain included) is in the server's count.
    assert sum(series["count"] for series in rest) >= answered
    assert record.resources["server_cpu_s"] > 0
    assert record.resources["server_peak_rss_bytes"] > 0
