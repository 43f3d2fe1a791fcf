"""The lab server's fault injection (--lab_fault_*, /lab/faults) and the crash supervisor.

One dedicated server for this module (the shared one must stay fault-free): started with a
250 ms delay on every request and the admin path; tests change its plan through /lab/faults
and put it back. The crash test kills it, so it runs last.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from fixtures.lab_server import serve_test_models

DELAY_MS = 250
HALF_PLUS_TWO = "/v1/models/half_plus_two"
CORGI = {"hashtags": "#corgi", "country": "GB", "followers": 1200}


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory, pooch_exports, half_plus_two_base):
    with serve_test_models(tmp_path_factory.mktemp("faulty_server"), pooch_exports, half_plus_two_base,
                           monitoring=False,
                           extra_flags=(f"--lab_fault_delay_ms={DELAY_MS}", "--lab_fault_admin=true")) as server:
        yield server


def call(url: str, method: str = "GET", body: object | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def timed_predict(server, values=(1.0, 2.0)) -> tuple[float, int, dict]:
    started = time.perf_counter()
    status, body = call(server.rest_url + HALF_PLUS_TWO + ":predict", "POST", {"instances": list(values)})
    return time.perf_counter() - started, status, body


@pytest.fixture
def plan(faulty_server):
    """Set a plan with plan(**settings); the flags' plan (250 ms delay) is put back afterwards."""
    url = faulty_server.rest_url + "/lab/faults"

    def set_plan(**settings):
        status, body = call(url, "POST", settings)
        assert status == 200, body
        return body

    yield set_plan
    call(url, "POST", {"delay_ms": DELAY_MS})


def grpc_stub(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_target))


def grpc_predict_request():
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], dtype=np.float32)))
    return request


def test_the_delay_flag_delays_every_rest_and_grpc_request(faulty_server) -> None:
    status, before = call(faulty_server.rest_url + "/lab/faults")
    assert status == 200 and before["plan"]["delay_ms"] == DELAY_MS and before["enabled"]
    for _ in range(3):
        elapsed, status, body = timed_predict(faulty_server)
        assert status == 200 and body == {"predictions": [2.5, 3.0]}
        assert elapsed >= DELAY_MS / 1000
    stub = grpc_stub(faulty_server)
    started = time.perf_counter()
    answer = stub.Predict(grpc_predict_request(), timeout=30)
    assert time.perf_counter() - started >= DELAY_MS / 1000
    assert list(answer.outputs["y"].float_val) == [2.5]
    _, after = call(faulty_server.rest_url + "/lab/faults")
    assert after["delayed"] - before["delayed"] == 4 and after["failed"] == 0


def test_a_delayed_request_does_not_hold_up_others(faulty_server, plan) -> None:
    plan(delay_ms=3000)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(timed_predict, faulty_server)
        # Wait for the slow request to be inside its delay (the server counted it) ...
        while call(faulty_server.rest_url + "/lab/faults")[1]["delayed"] < 1:
            time.sleep(0.01)
        # ... then a status request on another connection is answered while it still waits.
        status, body = call(faulty_server.rest_url + HALF_PLUS_TWO)
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        assert not slow.done()
        assert slow.result()[1] == 200


@pytest.mark.parametrize("code, http, grpc_code", [
    ("UNAVAILABLE", 503, grpc.StatusCode.UNAVAILABLE),
    ("RESOURCE_EXHAUSTED", 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("INTERNAL", 500, grpc.StatusCode.INTERNAL),
])
def test_an_error_fraction_of_one_answers_the_status_on_every_api(faulty_server, plan, code, http, grpc_code) -> None:
    plan(error_code=code, error_fraction=1.0)
    examples = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    for verb, body in (("predict", {"instances": [1.0]}), ("regress", examples),
                       ("classify", {**examples, "signature_name": "classify_x_to_y"})):
        status, answer = call(faulty_server.rest_url + f"{HALF_PLUS_TWO}:{verb}", "POST", body)
        assert status == http, verb
        assert "--lab_fault_error_code=" + code in answer["error"]
    with pytest.raises(grpc.RpcError) as failure:
        grpc_stub(faulty_server).Predict(grpc_predict_request(), timeout=30)
    assert failure.value.code() == grpc_code
    # Status and metadata are not requests to the model: they answer as usual.
    assert call(faulty_server.rest_url + HALF_PLUS_TWO)[0] == 200


def test_fractions_of_zero_change_nothing(faulty_server, plan) -> None:
    status = plan(delay_ms=DELAY_MS, delay_fraction=0.0, error_code="UNAVAILABLE", error_fraction=0.0)
    assert status["enabled"] is False
    for values in ((1.0,), (4.0, 6.0)):
        _, code, body = timed_predict(faulty_server, values)
        assert code == 200 and body == {"predictions": [v / 2 + 2 for v in values]}
    assert call(faulty_server.rest_url + "/lab/faults")[1] | {"plan": None} == \
        {"enabled": False, "plan": None, "delayed": 0, "failed": 0}


def test_the_same_seed_fails_the_same_requests(faulty_server, plan) -> None:
    def pattern() -> list[int]:
        plan(error_code="UNAVAILABLE", error_fraction=0.5, seed=7)
        return [timed_predict(faulty_server)[1] for _ in range(16)]

    first, second = pattern(), pattern()
    assert first == second
    assert set(first) == {200, 503}  # a fraction, not all or nothing


def test_bad_plans_are_refused_naming_the_key(faulty_server, plan) -> None:
    url = faulty_server.rest_url + "/lab/faults"
    status, body = call(url, "POST", {"delay_fraction": 1.5})
    assert status == 400 and "delay_fraction must be between 0 and 1" in body["error"]
    status, body = call(url, "POST", {"error_code": "SLOW"})
    assert status == 400 and "'SLOW' is not a TF status name" in body["error"]
    status, body = call(url, "POST", {"delay": 5})
    assert status == 400 and "unknown key(s) delay" in body["error"]
    assert call(url)[1]["plan"]["delay_ms"] == DELAY_MS  # unchanged


def test_without_the_flags_there_is_no_admin_path_and_no_fault(lab_server) -> None:
    status, _ = call(lab_server.rest_url + "/lab/faults")
    assert status == 404
    status, _ = call(lab_server.rest_url + "/lab/faults", "POST", {"delay_ms": 100})
    assert status == 404


def test_a_slow_model_scheduled_by_the_runner_opens_the_breaker_and_the_fallback_answers(
        faulty_server, plan, pooch_exports) -> None:
    from poochlab.clients import ClientConfig, FallbackConfig, build_predictor
    from poochlab.experiments.faults.injectors import SlowModel
    from poochlab.experiments.faults.runner import FakeClock, FaultRunner
    from poochlab.experiments.faults.schedule import FaultSpec

    plan(delay_ms=0)  # no fault until the runner plants one
    baseline = next((pooch_exports["small"] / "pooch_predictor").glob("*/assets.extra/historical_baseline.json"))
    deadline_s = 0.5
    predictor = build_predictor(ClientConfig(
        rest_url=faulty_server.rest_url,
        fallback=FallbackConfig(baseline_path=baseline, deadline_s=deadline_s, breaker_failures=2, cooldown_s=600)))
    assert predictor.predict([CORGI]).path == "model"

    clock = FakeClock()
    gate, release = threading.Event(), threading.Event()

    class Paused(FakeClock):
        """Stops at the planned clear, so the test acts while the fault is planted."""

        def wait_until(self, at_s, stop):
            if at_s >= 10:
                gate.set()
                release.wait(60)
            return clock.wait_until(at_s, stop)

        def now(self):
            return clock.now()

    spec = FaultSpec("slow_model", at_s=5, duration_s=5, params={"delay_ms": 2000})
    runner = FaultRunner([spec], {"slow_model": SlowModel(faulty_server.rest_url)}, Paused())
    runner.start()
    assert gate.wait(60)
    answers = []
    for _ in range(4):
        started = time.perf_counter()
        answers.append((predictor.predict([CORGI]), time.perf_counter() - started))
    release.set()
    event = runner.wait(60).events[0]
    assert [a.fallback_reason for a, _ in answers] == ["timeout", "timeout", "breaker_open", "breaker_open"]
    assert all(a.path == "fallback" for a, _ in answers)
    # Once open, the fallback answers without calling the model: well inside the deadline.
    assert all(elapsed < deadline_s for _, elapsed in answers[2:])
    assert predictor.breaker.state == "open"
    assert (event.injected_at_s, event.cleared_at_s) == (5.0, 10.0)
    assert event.detail["plan"]["delay_ms"] == 2000 and event.detail["delayed"] == 2
    assert call(faulty_server.rest_url + "/lab/faults")[1]["enabled"] is False  # cleared
    predictor.close()


def test_a_crash_is_recovered_by_the_supervisor_and_the_recovery_is_measured(faulty_server) -> None:
    from poochlab.experiments.faults.injectors import ServerCrash
    from poochlab.experiments.faults.runner import FaultRunner, RealClock
    from poochlab.experiments.faults.schedule import FaultSpec
    from poochlab.experiments.faults.supervisor import ServerSupervisor

    supervisor = ServerSupervisor(faulty_server, ["pooch_predictor", "half_plus_two"]).start()
    old_pid = faulty_server.pid
    runner = FaultRunner([FaultSpec("server_crash", at_s=0.0)], {"server_crash": ServerCrash(supervisor)},
                         RealClock())
    event = runner.run().events[0]
    try:
        assert "inject_error" not in event.detail and "clear_error" not in event.detail, event.detail
        assert event.detail["killed_pid"] == old_pid and event.detail["exit_code"] == -9
        new_pid = event.detail["new_pid"]
        assert new_pid not in (None, old_pid) and supervisor.server.pid == new_pid
        assert event.injected_at_s <= event.detail["died_at_s"] <= event.detail["restarted_at_s"] <= event.cleared_at_s
        assert event.lasted_s == event.cleared_at_s - event.injected_at_s > 0  # the recovery time
        # Same ports, same flags: it answers (and is still delayed) where it did before.
        elapsed, status, body = timed_predict(supervisor.server)
        assert status == 200 and body == {"predictions": [2.5, 3.0]} and elapsed >= DELAY_MS / 1000
        assert supervisor.server.rest_port == faulty_server.rest_port
    finally:
        supervisor.stop()
    assert supervisor.server.process.poll() is not None and len(supervisor.restarts) == 1
