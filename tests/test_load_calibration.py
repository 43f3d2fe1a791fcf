"""Calibration (capacity of a reference configuration, saved) and the generator's floor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poochlab.clients.config import ClientConfig
from poochlab.experiments.load import (LOAD_LEVELS, CapacityCalibration, LoadSettings, Workload,
                                       calibrate_capacity, floor_summary, measure_generator_floor)
from poochlab.experiments.load.echo_server import start_echo_server
from poochlab.experiments.records import TrialRecord

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload.generated(2000, seed=11)


def test_capacity_is_the_best_valid_step_and_levels_are_fractions_of_it(tmp_path: Path, workload: Workload) -> None:
    with start_echo_server(grpc=False) as echo:
        calibration = calibrate_capacity(ClientConfig(rest_url=echo.rest_url), workload, reference="echo-rest",
                                         users_steps=(1, 2), window_s=0.5, warmup_s=0.2)
    valid = [s["throughput_rps"] for s in calibration.steps if s["valid"]]
    assert [s["users"] for s in calibration.steps] == [1, 2]
    if valid:
        assert calibration.valid and calibration.capacity_rps == max(valid)
    else:  # a busy machine: every step's generator was struggling, and the calibration says so
        assert not calibration.valid and len(calibration.notes) == 2
        assert calibration.capacity_rps == max(s["throughput_rps"] for s in calibration.steps)
    assert calibration.rate_for("high") == pytest.approx(LOAD_LEVELS["high"] * calibration.capacity_rps)
    open_loop = calibration.settings_for("light", LoadSettings(mode="closed", users=4, window_s=0.5))
    assert (open_loop.mode, open_loop.rate_rps, open_loop.window_s) == ("open", calibration.rate_for("light"), 0.5)
    saved = tmp_path / "calibration.json"
    calibration.save(saved)
    assert CapacityCalibration.load(saved) == calibration
    with pytest.raises(ValueError, match="unknown load level 'extreme'"):
        calibration.rate_for("extreme")


def test_a_broken_calibration_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"schema": 1, "reference": "x", "steps": []}))
    with pytest.raises(ValueError, match=f"{path}: missing fields \\['capacity_rps'\\]"):
        CapacityCalibration.load(path)


def test_floor_uses_the_client_path_against_the_echo_server_and_is_saved(tmp_path: Path, workload: Workload) -> None:
    client = ClientConfig(rest_url="http://127.0.0.1:9", cache=None)  # the floor never asks this address
    settings = LoadSettings(mode="open", rate_rps=200, window_s=0.5, warmup_s=0.2, min_windows=2, max_windows=2)
    record = measure_generator_floor(settings, client, workload, save_to=tmp_path / "floor.json")
    assert record.status == "ok", record.failure_reason
    assert record.errors_by_kind == {}
    assert record.factors["library"] == "lean" and record.factors["rate_rps"] == 200
    assert TrialRecord.read(tmp_path / "floor.json").windows == record.windows
    summary = floor_summary(record)
    assert summary["count"] == sum(w.requests for w in record.windows if w.index in record.stable_windows) \
        or summary["count"] == sum(w.requests for w in record.windows)
    assert 0 < summary["p50_us"] <= summary["p99_us"]


def _server(capacity: float) -> CapacityCalibration:
    return CapacityCalibration(reference="r", capacity_rps=capacity, steps=({"users": 4, "throughput_rps": capacity},))


def test_levels_are_fractions_of_the_lowest_server_capacity_or_path_limit() -> None:
    from poochlab.experiments.load.calibration import PathLimit, combined

    servers = {"protocol=rest, cache=off": _server(5_000.0), "protocol=grpc, cache=off": _server(2_400.0)}
    # The REST path sent every rate the sweep needs (not a limit); the gRPC path failed above 1,800.
    paths = [PathLimit("rest-lean-row-x1", 4_250.0, bounded=False, steps=()),
             PathLimit("grpc-grpcio-protobuf-x1", 1_800.0, bounded=True, steps=())]
    calibration = combined("protocol=rest, cache=off", servers, paths, {"light": 0.25, "high": 0.85})
    assert calibration.capacity_rps == 1_800.0 and calibration.limited_by == "generator grpc-grpcio-protobuf-x1"
    assert calibration.rate_for("high") == pytest.approx(0.85 * 1_800.0)
    assert calibration.path_limit("rest-lean-row-x1") == 4_250.0 and calibration.path_limit("other") is None
    # Without the slow path, the slower server sets the limit.
    by_server = combined("protocol=rest, cache=off", servers, paths[:1], {"high": 0.85})
    assert (by_server.capacity_rps, by_server.limited_by) == (2_400.0, "server protocol=grpc, cache=off")
    assert [s["configuration"] for s in by_server.servers] == list(servers)


def test_a_path_that_cannot_send_even_its_lowest_rate_stops_the_sweep_by_name(workload: Workload,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from poochlab.experiments.load.calibration import CalibrationError, combined, generator_limit
    from poochlab.experiments.load.worker_spec import PLANT_BURNER_ENV

    monkeypatch.setenv(PLANT_BURNER_ENV, "0.95")  # the generator busy 95% of its time: never healthy
    limit = generator_limit(ClientConfig(rest_url="http://127.0.0.1:9"), workload, path="rest-lean-row-x1",
                            target_rps=400.0, floor_rps=100.0, refine_steps=0, window_s=0.5, warmup_s=0.2)
    assert [s["rate_rps"] for s in limit.steps] == [400.0, 200.0, 100.0]  # halved down to the floor
    assert limit.bounded and limit.limit_rps == 0.0 and not any(s["valid"] for s in limit.steps)
    assert all(any("CPU" in r or "late" in r or "lag" in r for r in s["reasons"]) for s in limit.steps)
    with pytest.raises(CalibrationError, match="generator rest-lean-row-x1 could not carry any load validly"):
        combined("r", {"r": _server(3_000.0)}, [limit], {"high": 0.85})


def test_explicit_rates_above_a_paths_limit_are_refused_before_any_trial(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from poochlab.experiments.load.calibration import CalibrationError
    from poochlab.experiments.sweep.trial_execution import _refuse_rates_beyond_paths

    calibration = CapacityCalibration(reference="(explicit rates)", capacity_rps=900.0, steps=(),
                                      generator_paths=({"path": "grpc-grpcio-protobuf-x1", "limit_rps": 900.0,
                                                        "bounded": True, "steps": []},))
    factors = {"protocol": "grpc", "client_library": "grpcio", "request_format": "protobuf",
               "instances_per_request": 1}
    trials = [SimpleNamespace(factors={**factors, "rate_rps": rate}) for rate in (300.0, 2_000.0)]
    context = SimpleNamespace(spec=SimpleNamespace(path=tmp_path / "fast.toml", rate_schedule=None))
    with pytest.raises(CalibrationError) as error:
        _refuse_rates_beyond_paths(context, trials, calibration)  # type: ignore[arg-type]
    message = str(error.value)
    assert "fast.toml" in message and "2000 req/s on path grpc-grpcio-protobuf-x1" in message
    assert "its measured limit on this machine is 900 req/s" in message and "300 req/s" not in message
    _refuse_rates_beyond_paths(context, trials[:1], calibration)  # type: ignore[arg-type]  # 300 is fine


def test_a_rate_schedule_whose_peak_is_above_a_paths_limit_is_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from poochlab.experiments.load.calibration import CalibrationError
    from poochlab.experiments.load.rate_schedule import parse_schedule
    from poochlab.experiments.sweep.trial_execution import _refuse_rates_beyond_paths

    calibration = CapacityCalibration(reference="(explicit rates)", capacity_rps=900.0, steps=(),
                                      generator_paths=({"path": "rest-lean-row-x1", "limit_rps": 900.0,
                                                        "bounded": True, "steps": []},))
    trials = [SimpleNamespace(factors={"protocol": "rest", "client_library": "lean", "request_format": "row",
                                       "instances_per_request": 1})]
    peak_1500 = parse_schedule([{"at_s": 0, "rps": 300}, {"at_s": 5, "rps": 1500, "ramp_s": 2}], "rate_schedule")
    context = SimpleNamespace(spec=SimpleNamespace(path=tmp_path / "ramp.toml", rate_schedule=peak_1500))
    with pytest.raises(CalibrationError, match=r"ramp.toml: .*1500 req/s \(load.rate_schedule peak\) on path "
                                               r"rest-lean-row-x1 \(its measured limit on this machine is 900 req/s\)"):
        _refuse_rates_beyond_paths(context, trials, calibration)  # type: ignore[arg-type]
    context.spec.rate_schedule = parse_schedule([{"at_s": 0, "rps": 300}, {"at_s": 5, "rps": 800}], "rate_schedule")
    _refuse_rates_beyond_paths(context, trials, calibration)  # type: ignore[arg-type]  # a peak of 800 is fine


def test_a_calibration_saved_before_path_limits_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"schema": 1, "reference": "protocol=rest", "capacity_rps": 5090.0,
                                "steps": [{"users": 8, "throughput_rps": 5090.0}]}))
    calibration = CapacityCalibration.load(path)
    assert calibration.capacity_rps == 5090.0 and calibration.generator_paths == () and calibration.limited_by == ""
