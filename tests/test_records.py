"""Trial records are the saved data every analysis reads: they must survive the disk intact."""

from __future__ import annotations

import json
from pathlib import Path


def test_a_trial_record_round_trips_through_its_file(tmp_path: Path) -> None:
    from poochlab.experiments.records import TrialRecord, Window

    record = TrialRecord(run_id="run", trial_id="t1", config_id="c1", repetition=2, factors={"protocol": "rest"}, seed=9)
    record.windows.append(Window(index=0, start_s=0.0, duration_s=1.0, requests=3, errors=1, histogram="HIST"))
    record.validity.invalidate("a reason")
    record.save(tmp_path / "t1.json")
    again = TrialRecord.read(tmp_path / "t1.json")
    assert again == record and again.load.to_dict() == {}
    assert json.loads((tmp_path / "t1.json").read_text())["load"] == {}  # nothing that did not apply
    assert not list(tmp_path.glob(".t1.json.*"))  # no temporary file left behind


def test_the_result_windows_are_the_stable_ones_or_all_when_none_is_stable() -> None:
    from poochlab.experiments.records import TrialRecord, Window

    record = TrialRecord(run_id="run", trial_id="t1", config_id="c1", repetition=0, factors={}, seed=1)
    record.windows = [Window(index=i, start_s=float(i), duration_s=1.0, requests=1, errors=0, histogram=f"H{i}")
                      for i in range(4)]
    record.stable_windows = [1, 3]
    assert [w.index for w in record.result_windows()] == [1, 3]
    record.stable_windows = []
    assert [w.index for w in record.result_windows()] == [0, 1, 2, 3]


# A schema-2 record as the lab wrote it before the sub-records (dicts with comment-only schemas),
# written out by hand: a saved run must still load, and analysis reads the same figures.
OLD_FORMAT_RECORD = {
    "run_id": "old-run", "trial_id": "c1-r0", "config_id": "c1", "repetition": 0,
    "factors": {"protocol": "grpc", "cache": "on"}, "seed": 7, "status": "ok", "failure_reason": None,
    "started_at": "2026-11-01T10:00:00+00:00", "ended_at": "2026-11-01T10:00:30+00:00",
    "load": {"mode": "open", "rate_rps": 400.0, "window_s": 5.0, "warmup_s": 2.0, "min_windows": 3,
             "max_windows": 10, "workers": 1, "seed": 7, "pin_cpus": True, "drain_s": 2.0,
             "client": {"protocol": "grpc", "library": "lean"}, "workload": {"instances": 1},
             "stability": "windows 0-2 agree", "generator_floor": "floor/grpc.json",
             "search": {"step": 1, "of": 4, "budget_ms": 20.0}},
    "windows": [{"index": 0, "start_s": 0.0, "duration_s": 5.0, "requests": 2000, "errors": 0,
                 "histogram": "HIST", "corrected_histogram": None, "fault": False}],
    "stable": True, "stable_windows": [0], "errors_by_kind": {}, "outstanding_at_end": 0,
    "lateness_histogram": None, "server_queue_histogram": None, "server_compute_histogram": None,
    "server_metrics": {":tensorflow:serving:request_count": {"model_name=pooch": 2000.0},
                       "scrape_errors": ["after: refused"]},
    "client_timing_us": {"encode_us": 12.5}, "cache": {"hits": 1200, "misses": 800, "errors": 3,
                                                       "errors_by_reason": {"timeout": 3}},
    "answer_paths": {"model": 800, "cache": 1200},
    "resources": {"wall_s": 15.0, "server_cpu_s": 4.5, "server_peak_rss_bytes": 300_000_000,
                  "generator_cpu_s": 3.0, "generator_cpu_percent": [20.0], "redis_cpu_s": None,
                  "energy_joules": 90.0, "energy_method": "estimate", "energy_watts_per_core": 12.0,
                  "measured_s": 15.0, "steal_percent": 0.0, "placement": {"pinned": False, "cores": {}},
                  "server_starts_so_far": 1},
    "generator": {"worker_cpu_percent": [20.0], "loop_lag_p99_us": 800.0, "loop_lag_max_us": 1500.0,
                  "steal_percent": 0.0, "timer": "timerfd", "expected_interval_us": None, "sender_greenlets": 4,
                  "lateness_p50_us": 40.0, "lateness_p99_us": 700.0, "late_send_fraction": 0.001},
    "validity": {"valid": True, "reasons": [], "kinds": [], "findings": [], "warnings": [],
                 "server_overloaded": False},
    "schema_version": 2, "faults": [], "fault_summary": {},
}


def test_an_old_format_record_loads_into_the_typed_sub_records(tmp_path: Path) -> None:
    from poochlab.experiments.records import TrialRecord

    path = tmp_path / "c1-r0.json"
    path.write_text(json.dumps(OLD_FORMAT_RECORD))
    record = TrialRecord.read(path)
    assert (record.load.mode, record.load.rate_rps, record.load.users) == ("open", 400.0, None)
    assert record.load.search == {"step": 1, "of": 4, "budget_ms": 20.0}
    assert record.load.generator_floor == "floor/grpc.json"
    assert record.resources.server_cpu_s == 4.5 and record.resources.redis_cpu_s is None
    assert record.resources.placement == {"pinned": False, "cores": {}}
    assert record.generator.lateness_p99_us == 700.0 and record.generator.timer == "timerfd"
    assert record.cache is not None and (record.cache.hits, record.cache.misses, record.cache.errors) == (1200, 800, 3)
    assert record.cache.errors_by_reason == {"timeout": 3}
    assert record.server_metrics.deltas == {":tensorflow:serving:request_count": {"model_name=pooch": 2000.0}}
    assert record.server_metrics.scrape_errors == ["after: refused"]
    # Saved again, the same keys with the same values (a None figure is left out, not written as null).
    again = json.loads(record.to_json())
    for name in ("load", "server_metrics", "cache"):
        assert again[name] == OLD_FORMAT_RECORD[name], name
    for name in ("resources", "generator"):
        assert again[name] == {k: v for k, v in OLD_FORMAT_RECORD[name].items() if v is not None}, name


def test_a_schema_1_cache_without_errors_by_reason_stays_unrecorded() -> None:
    from poochlab.experiments.analysis.trial_metrics import errors_by_reason_text
    from poochlab.experiments.records import TrialRecord

    data = {**OLD_FORMAT_RECORD, "schema_version": 1, "cache": {"hits": 5, "misses": 5, "errors": 0},
            "validity": {"valid": False, "reasons": ["late"]}}
    record = TrialRecord.from_dict(data)
    assert record.cache is not None and record.cache.errors_by_reason is None
    assert errors_by_reason_text(record.cache) == ""  # not recorded, rather than "no errors"
    assert record.validity.kinds == ["invalid"]


def test_keys_this_lab_does_not_know_survive_a_load_save_round_trip(tmp_path: Path) -> None:
    """Fields a newer lab (or another experiment) adds, at the top level or inside a sub-record."""
    from poochlab.experiments.records import TrialRecord

    data = json.loads(json.dumps(OLD_FORMAT_RECORD))
    data["rate_schedule"] = [{"at_s": 0.0, "rate_rps": 100.0}, {"at_s": 10.0, "rate_rps": 300.0}]
    data["load"]["arm"] = "B"
    data["cache"]["per_window"] = [{"hits": 600, "misses": 400}]
    data["resources"]["gpu_seconds"] = 0.0
    data["generator"]["new_health_figure"] = 1.5
    data["windows"] = [{"index": 0, "start_s": 0.0, "duration_s": 1.0, "requests": 10, "errors": 0,
                        "histogram": "", "tail_events": 2}]
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(data))
    record = TrialRecord.read(path)
    assert record.extra == {"rate_schedule": data["rate_schedule"]}
    assert record.load.extra == {"arm": "B"}
    record.save(tmp_path / "again.json")
    saved = json.loads((tmp_path / "again.json").read_text())
    assert saved["rate_schedule"] == [{"at_s": 0.0, "rate_rps": 100.0}, {"at_s": 10.0, "rate_rps": 300.0}]
    assert saved["load"]["arm"] == "B"
    assert saved["cache"]["per_window"] == [{"hits": 600, "misses": 400}]
    assert saved["resources"]["gpu_seconds"] == 0.0
    assert saved["generator"]["new_health_figure"] == 1.5
    assert record.windows[0].requests == 10 and saved["windows"][0]["tail_events"] == 2


def test_a_sub_record_that_is_not_an_object_is_refused_naming_the_file_and_field() -> None:
    import pytest

    from poochlab.experiments.records import TrialRecord

    with pytest.raises(ValueError, match=r"saved/t\.json: resources: ResourcesRecord must be a JSON object"):
        TrialRecord.from_dict({**OLD_FORMAT_RECORD, "resources": [1, 2]}, source="saved/t.json")
