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
