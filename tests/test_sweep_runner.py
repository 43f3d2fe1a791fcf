"""The sweep runner against the real lab server: saved records, resume, a server that dies."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from poochlab.experiments.records import TrialRecord
from poochlab.experiments.sweep.runner import RunError, SweepRunner, finished_trials
from poochlab.experiments.sweep.spec import load_spec

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

SPEC = """
[sweep]
name = "runner-test"
repetitions = 1
seed = 11
profile = "quick"
[factors]
users = [1, 2, 3]
[controls]
protocol = "rest"
[profile]
window_s = 0.3
window_requests = 0             # every window 0.3 s, whatever the rate (an open loop's would fill 3 s)
warmup_s = 0.2
min_windows = 3
max_windows = 3
"""


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return load_spec(path)


def runner(spec, run_dir: Path, pooch_exports: dict[str, Path], **options) -> SweepRunner:
    model_root = pooch_exports["small"].parent
    return SweepRunner(spec, run_dir, model_root=model_root, show_progress_bar=False, **options)


def test_interrupt_then_resume_measures_only_what_is_missing(spec, tmp_path: Path, pooch_exports) -> None:
    run_dir = tmp_path / "run"

    def stop_at_second(trial, number, total):
        if number == 2:
            raise KeyboardInterrupt

    summary = runner(spec, run_dir, pooch_exports, progress=stop_at_second).run()
    assert summary.interrupted and summary.measured == 1
    records = {p.stem: TrialRecord.read(p) for p in (run_dir / "trials").glob("*.json")}
    assert len(records) == 1
    first_id, first = next(iter(records.items()))
    assert first.status == "ok" and first.windows, first.failure_reason
    first_bytes = (run_dir / "trials" / f"{first_id}.json").read_bytes()

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["interrupted"] is True and manifest["ended_at"]
    assert manifest["spec"]["factors"] == {"users": [1, 2, 3]}
    for key in ("git", "versions", "platform", "python", "server_commands", "generator_floor", "started_at"):
        assert manifest[key], key
    assert manifest["versions"]["tensorflow"]
    command = manifest["server_commands"][0]["command"]
    assert any(arg.startswith("--model_config_file=") for arg in command)
    config_dir = run_dir / "configs" / manifest["server_commands"][0]["server_config"]
    assert "pooch_predictor" in (config_dir / "models.config").read_text()
    assert "prometheus_config" in (config_dir / "monitoring.config").read_text()

    with pytest.raises(RunError, match="--resume"):
        runner(spec, run_dir, pooch_exports).run()

    resumed = runner(spec, run_dir, pooch_exports, resume=True).run()
    assert not resumed.interrupted
    assert resumed.skipped == 1 and resumed.measured == 2
    assert (run_dir / "trials" / f"{first_id}.json").read_bytes() == first_bytes
    assert finished_trials(run_dir) == {t.trial_id for t in resumed_plan(run_dir)}
    users = sorted(TrialRecord.read(p).factors["users"] for p in (run_dir / "trials").glob("*.json"))
    assert users == [1, 2, 3]
    assert json.loads((run_dir / "manifest.json").read_text())["resumed_at"]


def resumed_plan(run_dir: Path):
    from types import SimpleNamespace

    return [SimpleNamespace(**t) for t in json.loads((run_dir / "plan.json").read_text())["trials"]]


def test_resume_refuses_a_changed_spec(spec, tmp_path: Path, pooch_exports) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "plan.json").write_text(json.dumps({"trials": [{"trial_id": "r1-other"}]}))
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": "run", "server_commands": []}))
    with pytest.raises(RunError, match="spec changed"):
        runner(spec, run_dir, pooch_exports, resume=True).run()


def test_a_server_killed_mid_trial_fails_that_trial_and_the_sweep_goes_on(spec, tmp_path: Path, pooch_exports,
                                                                             monkeypatch) -> None:
    import psutil

    from poochlab.experiments.sweep.servers import ServerPool

    run_dir = tmp_path / "run"
    sweep = runner(spec, run_dir, pooch_exports)
    ensure, calls, killed = ServerPool.ensure, [], []

    def ensure_then_kill_during_second(pool, server):
        # The fault is injected on an event, not a timer: the second trial has its (running)
        # server, then it dies before a single request, so every request of that trial meets it dead.
        endpoints = ensure(pool, server)
        calls.append(server)
        if len(calls) == 2:
            process = psutil.Process(endpoints.pid)
            os.kill(endpoints.pid, signal.SIGKILL)
            while not gone(process):  # SIGKILL cannot be caught; the launcher reaps it later
                time.sleep(0.01)
            killed.append(endpoints.pid)
        return endpoints

    monkeypatch.setattr(ServerPool, "ensure", ensure_then_kill_during_second)
    summary = sweep.run()
    assert killed and summary.measured == 3 and not summary.interrupted
    plan = [t["trial_id"] for t in json.loads((run_dir / "plan.json").read_text())["trials"]]
    second, third = (TrialRecord.read(run_dir / "trials" / f"{tid}.json") for tid in plan[1:])
    # The killed trial is never reported as a clean measurement ...
    assert second.status == "failed" or not second.validity.valid
    assert "server" in (second.failure_reason or "") or second.errors_by_kind
    # ... and the next trial ran on a restarted server.
    assert third.status == "ok" and third.windows
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["server_commands"]) == 2


def gone(process) -> bool:
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_external_server_is_measured_but_never_started_or_stopped(tmp_path: Path, lab_server, pooch_exports) -> None:
    path = tmp_path / "external.toml"
    path.write_text(SPEC.replace('profile = "quick"', 'profile = "quick"\nserver_kind = "external"')
                    .replace("users = [1, 2, 3]", "users = [1]")
                    + f"[external]\nrest_port = {lab_server.rest_port}\ngrpc_port = {lab_server.grpc_port}\n"
                    + "behind_balancer = true\n")
    summary = runner(load_spec(path), tmp_path / "run", pooch_exports).run()
    assert summary.measured == 1 and summary.failed == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["server_kind"] == "external" and manifest["server_commands"] == []
    (record,) = [TrialRecord.read(p) for p in (tmp_path / "run" / "trials").glob("*.json")]
    # Someone else's server: no process to watch, and no Prometheus deltas through a balancer.
    assert record.resources.server_resources == "not measured: a server someone else runs"
    assert record.resources.server_cpu_s is None
    assert record.server_metrics.unavailable.startswith("unavailable behind a balancer")
    assert ":tensorflow:serving:request_latency" not in record.server_metrics.deltas
    assert lab_server.process.poll() is None  # the sweep left someone else's server running


def test_a_rate_search_bisects_towards_the_highest_rate_within_the_budget(tmp_path: Path, pooch_exports) -> None:
    path = tmp_path / "search.toml"
    path.write_text(SPEC.replace("users = [1, 2, 3]", 'load_mode = ["open"]')
                    .replace('profile = "quick"', 'profile = "quick"\np99_budget_ms = 20')
                    + "[search]\nrate_rps = { low = 20.0, high = 2000.0, steps = 3 }\n")
    run_dir = tmp_path / "run"
    summary = runner(load_spec(path), run_dir, pooch_exports).run()
    assert summary.measured == 3 and not summary.interrupted
    steps = sorted((TrialRecord.read(p) for p in (run_dir / "trials").glob("*.json")),
                   key=lambda r: r.load.search["step"])
    rates = [r.factors["rate_rps"] for r in steps]
    assert rates[0] == pytest.approx(200.0)  # the geometric middle of 20 and 2000
    for before, after in zip(steps, steps[1:]):
        went_up = after.factors["rate_rps"] > before.factors["rate_rps"]
        assert went_up == p99_within(before, 20.0), before.trial_id
    assert all(r.load.rate_rps == r.factors["rate_rps"] for r in steps)
    # Every step carries the search's one generator floor, measured at its most demanding rate.
    floors = {r.load.generator_floor for r in steps}
    assert len(floors) == 1 and None not in floors and "rate2000" in floors.pop()

    # A resume reads the saved steps back (same bisection path) and measures only the missing one.
    last = steps[-1]
    (run_dir / "trials" / f"{last.trial_id}.json").unlink()
    resumed = runner(load_spec(path), run_dir, pooch_exports, resume=True).run()
    assert (resumed.measured, resumed.skipped, resumed.failed) == (1, 2, 0)
    assert TrialRecord.read(run_dir / "trials" / f"{last.trial_id}.json").factors["rate_rps"] == last.factors["rate_rps"]


def p99_within(record: TrialRecord, budget_ms: float) -> bool:
    """The search's rule, worked out here from the saved windows with hdrh itself: a valid step
    whose merged p99 (over its stable windows, else all) is within the budget."""
    from hdrh.histogram import HdrHistogram

    if record.status != "ok" or not record.validity.valid:
        return False
    windows = [w for w in record.windows if w.index in set(record.stable_windows)] or record.windows
    histograms = [HdrHistogram.decode(w.histogram) for w in windows]
    merged = histograms[0]
    for histogram in histograms[1:]:
        merged.add(histogram)
    return merged.get_total_count() > 0 and merged.get_value_at_percentile(99) <= budget_ms * 1000


def one_trial_run(tmp_path: Path, pooch_exports, factor: str) -> tuple[Path, TrialRecord]:
    """A one-trial sweep (2 users over REST) varying only ``factor`` (a TOML line)."""
    path = tmp_path / "one.toml"
    path.write_text(SPEC.replace("users = [1, 2, 3]", factor).replace('protocol = "rest"',
                                                                     'protocol = "rest"\nusers = 2'))
    run_dir = tmp_path / "run"
    summary = runner(load_spec(path), run_dir, pooch_exports).run()
    assert summary.measured == 1 and summary.failed == 0
    (record_path,) = (run_dir / "trials").glob("*.json")
    return run_dir, TrialRecord.read(record_path)


def test_models_served_at_once_share_the_load(tmp_path: Path, pooch_exports) -> None:
    run_dir, record = one_trial_run(tmp_path, pooch_exports, "models_served = [2]")
    counts = record.server_metrics.deltas[":tensorflow:serving:request_count"]
    per_model = {key.split(",")[0]: value for key, value in counts.items() if "status=OK" in key}
    assert set(per_model) == {"model_name=pooch_predictor", "model_name=pooch_predictor_2"}
    low, high = sorted(per_model.values())
    assert low > 0 and high - low <= 0.1 * high + 5  # round robin: near-equal shares
    assert "pooch_predictor_2" in next((run_dir / "configs").glob("*/models.config")).read_text()


def test_replicas_run_behind_the_balancer_and_their_placement_is_recorded(tmp_path: Path, pooch_exports) -> None:
    run_dir, record = one_trial_run(tmp_path, pooch_exports, "replicas = [2]")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["server_commands"]) == 2  # one per replica
    (placement,) = manifest["replica_placement"].values()
    assert placement["replicas"] == 2 and placement["balancer"] == "nginx" and len(placement["replica_cores"]) == 2
    assert record.status == "ok" and sum(w.requests for w in record.windows) > 0


def test_a_sweep_asked_to_keep_the_cpus_awake_holds_them_from_calibration_to_its_last_trial(
        tmp_path: Path, pooch_exports) -> None:
    from poochlab.experiments.recording.cpu_wake import current_cpu_latency_us

    path = tmp_path / "spec.toml"
    path.write_text(SPEC.replace("users = [1, 2, 3]", "users = [1]") + "[load]\ncpus_awake = true\n")
    before = current_cpu_latency_us()
    during: list[int | None] = []
    summary = runner(load_spec(path), tmp_path / "run", pooch_exports,
                     progress=lambda trial, number, total: during.append(current_cpu_latency_us())).run()
    assert summary.measured == 1 and during == [0]
    assert current_cpu_latency_us() == before  # released when the run ended
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["cpus_awake"]["held"] is True and manifest["spec"]["cpus_awake"] is True
