"""Recording rules (stability has its own file): Prometheus deltas, generator health and CPU steal."""

from __future__ import annotations

from pathlib import Path

import pytest

from poochlab.experiments.recording.health import CpuTimes, health_reasons, lateness_limit_us, steal_percent
from poochlab.experiments.recording.prometheus import histogram_deltas, parse_text


TF_SERVING_TEXT = """\
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{model_name="pooch_predictor",API="predict",entrypoint="REST",le="100"} {b100}
:tensorflow:serving:request_latency_bucket{model_name="pooch_predictor",API="predict",entrypoint="REST",le="+Inf"} {inf}
:tensorflow:serving:request_latency_sum{model_name="pooch_predictor",API="predict",entrypoint="REST"} {sum}
:tensorflow:serving:request_latency_count{model_name="pooch_predictor",API="predict",entrypoint="REST"} {inf}
:tensorflow:serving:request_count{model_name="pooch_predictor",status="OK"} {inf}
"""


def test_prometheus_deltas_under_tf_serving_names() -> None:
    def text(b100: int, inf: int, total: int) -> str:
        return TF_SERVING_TEXT.replace("{b100}", str(b100)).replace("{inf}", str(inf)).replace("{sum}", str(total))

    before = parse_text(text(5, 10, 900))
    after = parse_text(text(35, 50, 4900))
    deltas = histogram_deltas(before, after)
    (series,) = deltas[":tensorflow:serving:request_latency"].values()
    assert series["count"] == 40
    assert series["mean"] == pytest.approx(100.0)
    assert series["buckets"] == {"100": 30, "+Inf": 40}
    assert list(deltas[":tensorflow:serving:request_count"].values()) == [40]


def test_unparseable_metrics_name_the_source_and_line() -> None:
    with pytest.raises(ValueError, match=r"http://x/metrics line 2"):
        parse_text("# ok\nthis is { not a sample\n", source="http://x/metrics")


def test_health_reasons_name_each_failed_check() -> None:
    healthy = {"worker_cpu_percent": [35.0], "loop_lag_p99_us": 800, "lateness_p99_us": 900, "steal_percent": 1.0}
    assert health_reasons(healthy, latency_p99_us=5_000) == []
    sick = {"worker_cpu_percent": [35.0, 93.0], "loop_lag_p99_us": 12_000, "lateness_p99_us": 4_000,
            "steal_percent": 25.0}
    reasons = health_reasons(sick, latency_p99_us=5_000)
    assert len(reasons) == 4
    assert "worker 1 used 93% CPU" in reasons[0]
    # 10% of a slow p99 allows more lateness than the 2 ms floor.
    assert lateness_limit_us(100_000) == 10_000
    assert health_reasons({"lateness_p99_us": 4_000}, latency_p99_us=100_000) == []


def test_steal_comes_from_the_aggregate_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 700 0 0 0 100 0 0\ncpu0 1 2 3\n")
    before = CpuTimes.read(stat)
    stat.write_text("cpu  200 0 200 1400 0 0 0 200 0 0\ncpu0 1 2 3\n")
    assert steal_percent(before, CpuTimes.read(stat)) == pytest.approx(10.0)
    assert CpuTimes.read(tmp_path / "missing") is None


def test_placement_pins_and_raises_priority_then_restores() -> None:
    import os
    import subprocess
    import sys

    from poochlab.experiments.recording.placement import plan_and_pin

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("pinning one role needs a machine with at least 2 cores")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before = os.sched_getaffinity(child.pid)
        placement = plan_and_pin(None, [child.pid], None)
        record = placement.as_record()
        assert record["pinned"] and os.sched_getaffinity(child.pid) == set(record["cores"]["generator0"])
        assert len(record["cores"]["generator0"]) == 1
        if record["nice"] is not None:  # allowed to raise priority (root or CAP_SYS_NICE)
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == record["nice"]
        if record["realtime_priority"] is not None:  # the generator runs before any time-shared work
            assert os.sched_getscheduler(child.pid) == os.SCHED_FIFO
            assert os.sched_getparam(child.pid).sched_priority == record["realtime_priority"]
        placement.restore()
        assert os.sched_getaffinity(child.pid) == before
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 0
        assert os.sched_getscheduler(child.pid) == os.SCHED_OTHER
        disabled = plan_and_pin(None, [child.pid], None, enabled=False).as_record()
        assert not disabled["pinned"] and "disabled" in disabled["reason"]
        crowded = plan_and_pin(child.pid, [child.pid] * len(os.sched_getaffinity(0)), None)
        assert not crowded.pinned and "(1 to spare)" in crowded.reason
        crowded.restore()
    finally:
        child.kill()
        child.wait()
