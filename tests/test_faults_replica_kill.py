"""The replica_kill fault: one of two lab replicas behind nginx SIGKILLed, restarted by its
supervisor (or left dead), while the balancer sends requests to the other.

One dedicated replica set for this module (half_plus_two: quick to load). The test that leaves
a replica dead runs last.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from fixtures.lab_server import PROMETHEUS_PATH, write_models_config

MODEL = "half_plus_two"
OK_COUNT = re.compile(r':tensorflow:serving:request_count\{model_name="half_plus_two",status="OK"\} (\d+)')


@pytest.fixture(scope="module")
def replica_set(tmp_path_factory, half_plus_two_base):
    from poochlab.processes.servers.replicas import launch_replicas
    from poochlab.processes.servers.launcher import ServerSpec

    workdir = tmp_path_factory.mktemp("replica_kill")
    config = write_models_config(workdir / "models.config", {MODEL: half_plus_two_base / MODEL})
    monitoring = workdir / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{PROMETHEUS_PATH}" }}\n')
    spec = ServerSpec(model_config_file=config, monitoring_config_file=monitoring, log_file=workdir / "server.log")
    replicas = launch_replicas(spec, 2, balancer="nginx")
    try:
        replicas.wait_until_available([MODEL], timeout_s=180)
        yield replicas
    finally:
        replicas.stop()


def predict_rest(url: str, value: float) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/v1/models/{MODEL}:predict", method="POST",
                                     data=json.dumps({"instances": [value]}).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, {"error": error.read()[:200]}


def predict_grpc(target: str, value: float) -> list[float]:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[value]], dtype=np.float32)))
    with grpc.insecure_channel(target) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return list(answer.outputs["y"].float_val)


def answered_ok(server) -> int:
    with urllib.request.urlopen(server.rest_url + PROMETHEUS_PATH, timeout=30) as answer:
        match = OK_COUNT.search(answer.read().decode())
    return int(match.group(1)) if match else 0


def test_a_killed_replica_is_restarted_and_its_restart_recorded(replica_set) -> None:
    from poochlab.experiments.faults.replica_kill import ReplicaKill
    from poochlab.experiments.faults.runner import FaultRunner, RealClock
    from poochlab.experiments.faults.schedule import FaultSpec

    old = replica_set.replicas[1]
    kill = ReplicaKill(replica_set, [MODEL])
    runner = FaultRunner([FaultSpec("replica_kill", at_s=0.0, params={"replica": 1})], {"replica_kill": kill},
                         RealClock())
    runner.start()
    # While it is down (its process gone, the runner still waiting for the restart), requests
    # through the balancer are answered: nginx passes them to replica 0.
    old.process.wait()
    answers = []
    while not answers or not runner.done:
        answers.append(predict_rest(replica_set.rest_url, 2.0))
    event = runner.wait(300).events[0]
    kill.release()
    assert "inject_error" not in event.detail and "clear_error" not in event.detail, event.detail
    assert all(answer == (200, {"predictions": [3.0]}) for answer in answers), answers
    assert event.detail["replica"] == 1 and event.detail["killed_pid"] == old.pid
    assert event.detail["restart"] is True and event.detail["exit_code"] == -9
    assert event.injected_at_s <= event.detail["died_at_s"] <= event.detail["restarted_at_s"] \
        <= event.detail["ready_at_s"] == event.cleared_at_s
    fresh = replica_set.replicas[1]
    assert event.detail["new_pid"] == fresh.pid != old.pid
    # Back on the same ports, so nginx's upstream finds it again.
    assert fresh.rest_port == old.rest_port and fresh.grpc_port == old.grpc_port
    assert predict_rest(fresh.rest_url, 4.0) == (200, {"predictions": [4.0]})


def test_a_replica_left_dead_has_the_other_answer_every_request(replica_set) -> None:
    from poochlab.experiments.faults.replica_kill import ReplicaKill
    from poochlab.experiments.faults.runner import FaultRunner, RealClock
    from poochlab.experiments.faults.schedule import FaultSpec

    # Replica 1 again (the one restarted above, if that test ran): nginx may still hold it as
    # failed (max_fails=1, fail_timeout=10s), so the replica left alive must be one it never
    # marked, or nginx would find no live upstream at all.
    alive, dead = replica_set.replicas
    before = answered_ok(alive)
    kill = ReplicaKill(replica_set, [MODEL])
    spec = FaultSpec("replica_kill", at_s=0.0, params={"replica": 1, "restart": False})
    event = FaultRunner([spec], {"replica_kill": kill}, RealClock()).run().events[0]
    dead.process.wait()
    rest = [predict_rest(replica_set.rest_url, float(v)) for v in range(6)]
    grpc_answers = [predict_grpc(replica_set.grpc_target, float(v)) for v in range(6)]
    assert rest == [(200, {"predictions": [v / 2 + 2]}) for v in range(6)]
    assert grpc_answers == [[v / 2 + 2] for v in range(6)]
    # Every one of them was answered by the replica still alive.
    assert answered_ok(alive) - before == 12
    assert dead.process.poll() == -9 and replica_set.replicas[1] is dead  # nobody restarted it
    assert event.detail["restart"] is False and event.detail["replica"] == 1
    assert event.injected_at_s is not None and event.cleared_at_s is None  # lasts to the trial's end


def test_the_kill_needs_two_replicas_and_a_real_index(replica_set) -> None:
    from poochlab.experiments.faults.replica_kill import ReplicaKill
    from poochlab.experiments.faults.runner import FakeClock
    from poochlab.experiments.faults.schedule import FaultSpec

    with pytest.raises(ValueError, match="at least 2 replicas"):
        ReplicaKill(type("One", (), {"replicas": [object()]})(), [MODEL])
    with pytest.raises(ValueError, match=r"replica_kill.replica: 2 is not a replica index \(0 to 1\)"):
        ReplicaKill(replica_set, [MODEL]).inject(FaultSpec("replica_kill", 0.0, params={"replica": 2}), FakeClock())


SPEC = """
[sweep]
name = "k"
server_kind = "{kind}"
[controls]
users = 1
replicas = {replicas}
{external}
[[faults]]
kind = "replica_kill"
at_s = 5
replica = {replica}
"""


@pytest.mark.parametrize("kind, replicas, replica, message", [
    ("lab", 1, 0, r"replicas: a replica_kill kills one of several replicas: every trial needs replicas >= 2, got 1"),
    ("lab", 2, 2, r"faults\[0\].replica: replica 2 of 2 \(indexes 0 to 1\)"),
    ("docker", 2, 0, r"faults\[0\].kind: the lab can kill and restart only replicas it runs as processes"),
])
def test_a_sweep_refuses_a_kill_it_cannot_plant(tmp_path, kind, replicas, replica, message) -> None:
    from poochlab.experiments.sweep.spec import SpecError, load_spec

    path = tmp_path / "k.toml"
    path.write_text(SPEC.format(kind=kind, replicas=replicas, replica=replica, external=""))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_the_phases_count_errors_by_kind() -> None:
    from poochlab.experiments.faults.phases import summarize
    from poochlab.experiments.records import Window
    from poochlab.experiments.recording.histograms import new_histogram

    def window(index: int, errors: int) -> Window:
        histogram = new_histogram()
        for _ in range(10):
            histogram.record_value(5_000)
        return Window(index, float(index), 1.0, 10, errors, histogram.encode().decode())

    windows = [window(0, 0), window(1, 3), window(2, 0)]
    events = [{"kind": "replica_kill", "injected_at_s": 1.2, "cleared_at_s": 1.6}]
    errors = {1: {"http_502": 2, "connection": 1}}
    summary, marked, _ = summarize(windows, events, 100.0, errors)
    assert summary["during"]["errors_by_kind"] == {"http_502": 2, "connection": 1}
    assert summary["before"]["errors_by_kind"] == {} and summary["after"]["errors_by_kind"] == {}
    assert summary["during"]["availability"] == 10 / 13 and 1 in marked
    # Without the per-window kinds the summary keeps its former shape.
    assert "errors_by_kind" not in summarize(windows, events, 100.0)[0]["during"]
