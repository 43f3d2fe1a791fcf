"""Trials with scheduled faults, for real: a Redis outage under cache-on load fails no request
and leaves the trial valid; a server crash is recovered, timed, and its errors are findings."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator

import pytest

from fixtures.lab_server import write_models_config
from poochlab.clients.config import CacheConfig, ClientConfig
from poochlab.experiments.faults.injectors import RedisOutage
from poochlab.experiments.faults.phases import overlaps
from poochlab.experiments.faults.schedule import FaultSpec
from poochlab.experiments.faults.trial import FaultTrial
from poochlab.experiments.load import LoadSettings, Workload, measure_trial
from poochlab.experiments.records import TrialRecord


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload.generated(3000, seed=11)


def _record(name: str) -> TrialRecord:
    return TrialRecord(run_id="test", trial_id=name, config_id=name, repetition=0, factors={}, seed=1)


def _span(event: dict) -> tuple[float, float]:
    return event["injected_at_s"], event["cleared_at_s"]


def test_a_redis_outage_trial_records_the_outage_fails_nothing_and_stays_valid(
        lab_server, redis_server, redis_url, workload) -> None:
    settings = LoadSettings(mode="open", rate_rps=60, window_s=1.0, warmup_s=0.5, min_windows=3, max_windows=6)
    faults = FaultTrial([FaultSpec("redis_outage", at_s=2.0, duration_s=2.0)],
                        {"redis_outage": RedisOutage(redis_server)}, slo_ms=100, after_fault_s=2.0)
    client = ClientConfig(rest_url=lab_server.rest_url, cache=CacheConfig(redis_url=redis_url))
    record = measure_trial(settings, client, workload, _record("redis-outage"), server_pid=lab_server.pid,
                           faults=faults)
    assert record.status == "ok", record.failure_reason
    [event] = record.faults
    assert event["kind"] == "redis_outage" and "inject_error" not in event["detail"]
    assert 2.0 <= event["injected_at_s"] < event["cleared_at_s"] and event["lasted_s"] > 0
    assert event["detail"]["redis_pid"] != event["detail"]["new_redis_pid"] and redis_server.running
    # The cache failed open: no request failed, though Redis did.
    assert record.errors_by_kind == {} and sum(w.errors for w in record.windows) == 0
    assert record.cache.errors >= 1
    touched = [w.index for w in record.windows if overlaps(w, _span(event))]
    assert touched and all(w.fault for w in record.windows if w.index in touched)
    assert set(touched) <= set(record.fault_summary["fault_windows"])
    assert not set(record.stable_windows) & set(record.fault_summary["fault_windows"])
    assert record.fault_summary["before"]["windows"] == [0, 1]
    assert record.fault_summary["during"]["errors"] == 0
    # Valid as far as the fault goes (the generator's own health depends on a shared machine's load).
    assert not {"cache_unreliable", "request_errors", "no_data", "failed"} & set(record.validity.kinds), \
        record.validity.reasons
    assert any("scheduled Redis outage" in finding for finding in record.validity.findings)


@pytest.fixture(scope="module")
def crash_server(tmp_path_factory, pooch_exports) -> Iterator[object]:
    """A server of this module's own: the crash test kills it (the shared one must not die)."""
    from poochlab.processes.servers.launcher import ServerSpec, launch

    workdir = tmp_path_factory.mktemp("crash_server")
    config = write_models_config(workdir / "models.config", {"pooch_predictor": pooch_exports["small"] / "pooch_predictor"})
    server = launch(ServerSpec(model_config_file=config, rest_api_num_threads=4, log_file=workdir / "server.log"))
    holder = SimpleNamespace(handle=server)
    try:
        server.wait_until_available(["pooch_predictor"], timeout_s=180)
        yield holder
    finally:
        holder.handle.stop()  # the restarted server, when the crash test ran
        server.stop()


def test_a_server_crash_trial_records_the_recovery_and_its_errors_are_findings(crash_server, workload) -> None:
    from poochlab.experiments.sweep.fault_setup import fault_trial
    from poochlab.experiments.sweep.servers import ServerEndpoints

    server = crash_server.handle
    old_pid = server.pid
    # The sweep's own wiring: a supervisor over the pool's server, swapping the restarted one in.
    context = SimpleNamespace(spec=SimpleNamespace(faults=(FaultSpec("server_crash", at_s=2.0),), p99_budget_ms=None),
                              servers=crash_server, redis=None)
    endpoints = ServerEndpoints(server.rest_url, server.grpc_target, server.pid, None, ["pooch_predictor"])
    settings = LoadSettings(mode="open", rate_rps=50, window_s=1.0, warmup_s=0.5, min_windows=3, max_windows=4)
    with fault_trial(context, {"fallback": "off"}, endpoints) as (endpoints, faults):
        assert faults is not None and faults.slo_ms == 5000  # the client's timeout without a fallback
        record = measure_trial(settings, ClientConfig(rest_url=endpoints.rest_url), workload, _record("crash"),
                               server_pid=endpoints.pid, faults=faults)
    assert record.status == "ok", record.failure_reason
    [event] = record.faults
    assert "inject_error" not in event["detail"] and "clear_error" not in event["detail"], event["detail"]
    assert event["detail"]["killed_pid"] == old_pid and event["detail"]["new_pid"] != old_pid
    # The recovery: from the kill to the restarted server's models AVAILABLE again.
    assert event["lasted_s"] == event["cleared_at_s"] - event["injected_at_s"] > 0
    assert crash_server.handle.pid == event["detail"]["new_pid"]  # the pool sees the restarted server ...
    assert crash_server.handle.process.poll() is None  # ... still running after the trial
    # Requests failed while the server was down, and only in fault windows ...
    failed = [w for w in record.windows if w.errors]
    assert failed and all(w.fault for w in failed)
    assert record.fault_summary["during"]["errors"] > 0
    assert record.fault_summary["during"]["availability"] < record.fault_summary["before"]["availability"]
    # ... so they are findings, not a broken measurement (the generator's own health aside).
    assert not {"request_errors", "no_data", "failed"} & set(record.validity.kinds), record.validity.reasons
    assert any(f.startswith("during scheduled faults:") for f in record.validity.findings)
    # The trial went on at least AFTER_FAULT_S past the restart.
    assert record.windows[-1].start_s + 1.0 >= event["cleared_at_s"] + 5.0


def test_a_network_fault_sends_the_load_through_the_proxy_and_a_slow_model_gets_the_admin_flag(lab_server) -> None:
    import urllib.request

    from poochlab.experiments.sweep.fault_setup import fault_trial
    from poochlab.experiments.sweep.servers import ServerEndpoints, _fault_flags

    network = FaultSpec("network", at_s=1.0, duration_s=1.0, params={"mode": "drop"})
    context = SimpleNamespace(spec=SimpleNamespace(faults=(network,), p99_budget_ms=40.0), servers=None, redis=None)
    endpoints = ServerEndpoints(lab_server.rest_url, lab_server.grpc_target, lab_server.pid, None, ["pooch_predictor"])
    with fault_trial(context, {"protocol": "rest"}, endpoints) as (through, faults):
        assert faults is not None and faults.slo_ms == 40.0 and set(faults.injectors) == {"network"}
        assert through.rest_url != lab_server.rest_url and through.grpc_target == lab_server.grpc_target
        with urllib.request.urlopen(through.rest_url + "/v1/models/pooch_predictor", timeout=30) as answer:
            assert answer.status == 200  # the proxy forwards to the server
    with pytest.raises(OSError):  # closed with the trial
        urllib.request.urlopen(through.rest_url + "/v1/models/pooch_predictor", timeout=5)
    slow = SimpleNamespace(faults=(FaultSpec("slow_model", 1.0, 1.0, {"delay_ms": 50}),))
    assert _fault_flags(slow) == ("--lab_fault_admin=true",)
    assert _fault_flags(SimpleNamespace(faults=(network,))) == ()
