"""Reactive scaling against real lab servers behind nginx: a planted overload (a slow model on
every replica) makes the policy add a replica during a trial, nginx picks it up on a reload, and
taking it out again mid-trial drops no request."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from fixtures.lab_server import write_models_config

pytestmark = pytest.mark.e2e

METRICS = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def one_replica(tmp_path_factory, pooch_exports, half_plus_two_base) -> Iterator[tuple[Any, Any]]:
    from poochlab.processes.servers.replicas import launch_replicas
    from poochlab.processes.servers.launcher import ServerSpec

    workdir: Path = tmp_path_factory.mktemp("reactive")
    config = write_models_config(workdir / "models.config",
                                 {"pooch_predictor": pooch_exports["small"] / "pooch_predictor"})
    monitoring = workdir / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS}" }}\n')
    # The planted overload: every request is held 30 ms, so every window's p99 is above 10 ms.
    spec = ServerSpec(model_config_file=config, monitoring_config_file=monitoring, rest_api_num_threads=4,
                      log_file=workdir / "server.log", extra_flags=("--lab_fault_delay_ms=30",))
    with launch_replicas(spec, 1, balancer="nginx", pin=False) as replicas:
        replicas.wait_until_available(["pooch_predictor"], timeout_s=180)
        yield replicas, spec


def _requests_answered(rest_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}{METRICS}", timeout=10) as answer:
        return sum(float(line.split()[-1]) for line in answer.read().decode().splitlines()
                   if line.startswith(":tensorflow:serving:request_count{") and 'status="OK"' in line)


def test_an_overload_adds_a_replica_that_takes_traffic_and_removing_it_drops_nothing(one_replica) -> None:
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.load import LoadSettings, Workload, measure_trial
    from poochlab.experiments.records import TrialRecord
    from poochlab.experiments.sweep.scaling import ReactiveScaler, ScalingSettings, replica_changes

    replicas, spec = one_replica
    add, remove = replica_changes(replicas, spec, ["pooch_predictor"])
    scaler = ReactiveScaler(ScalingSettings(max_replicas=2, p99_up_ms=10, p99_down_ms=1, cooldown_s=0),
                            min_replicas=1, add_replica=add, remove_replica=remove)
    client = ClientConfig(rest_url=replicas.rest_url)
    settings = LoadSettings(mode="open", rate_rps=20, window_s=1.0, warmup_s=0.5, min_windows=2, max_windows=2)

    def trial(name: str, progress: Any) -> TrialRecord:
        record = TrialRecord(run_id="test", trial_id=name, config_id=name, repetition=0, factors={}, seed=1)
        return measure_trial(settings, client, Workload.generated(500, seed=3), record, progress=progress)

    hot = trial("hot", scaler.progress(settings.window_s, None))
    assert hot.status == "ok", hot.failure_reason
    timeline = scaler.finish()  # the new replica may join after the trial: its models load first
    events = [e["event"] for e in timeline]
    assert events[:2] == ["scale_add_decided", "replica_joined"], timeline
    assert timeline[0]["window_end_s"] == 1.0 and timeline[0]["p99_ms"] > 10
    assert timeline[1]["replicas"] == 2 and len(replicas.replicas) == 2
    added = timeline[1]["rest_port"]
    assert replicas.balancer.backends[-1].rest_port == added  # nginx balances over both now

    seen: dict[str, float] = {}

    def remove_after_first_window(info: dict[str, Any]) -> None:
        if info["window"] == 0:  # the new replica has answered through nginx; now take it out
            seen["added_answered"] = _requests_answered(added)
            scaler.back_to_minimum()

    calm = trial("remove", remove_after_first_window)
    assert calm.status == "ok", calm.failure_reason
    assert seen["added_answered"] > 0
    assert calm.errors_by_kind == {}  # nothing dropped across the reload and the replica's stop
    left = scaler.timeline[-1]
    assert (left["event"], left["replicas"], left["after_trial"], left["drained"]) == ("replica_left", 1, True, True)
    assert len(replicas.replicas) == 1 and len(replicas.balancer.backends) == 1
