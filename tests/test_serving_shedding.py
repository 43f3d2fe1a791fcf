"""Load shedding (--lab_max_queue): with the queue full the lab server refuses at once with
UNAVAILABLE (gRPC) / 503 (REST), and a trial counts the refusals as shed, not as the
generator's or the client's problems.

One server for this module, --lab_max_queue=1, slowed on demand through /lab/faults (a planted
slow model: the delay counts as model time).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import grpc
import pytest

from fixtures.lab_server import PROMETHEUS_PATH as METRICS, serve_test_models
from test_faults_server import HALF_PLUS_TWO, call, grpc_predict_request, grpc_stub


@pytest.fixture(scope="module")
def shedding_server(tmp_path_factory, pooch_exports, half_plus_two_base):
    with serve_test_models(tmp_path_factory.mktemp("shedding_server"), pooch_exports, half_plus_two_base,
                           extra_flags=("--lab_max_queue=1", "--lab_fault_admin=true")) as server:
        yield server


@pytest.fixture
def slow_model(shedding_server):
    """Every request held ``delay_ms`` before the model runs, for one test."""
    url = shedding_server.rest_url + "/lab/faults"

    def plant(delay_ms: float) -> None:
        status, body = call(url, "POST", {"delay_ms": delay_ms})
        assert status == 200, body

    yield plant
    call(url, "POST", {"delay_ms": 0})


def lab_metric(server, name: str) -> float:
    with urllib.request.urlopen(server.rest_url + METRICS, timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_with_the_queue_full_rest_gets_503_and_grpc_unavailable_at_once(shedding_server, slow_model) -> None:
    slow_model(4000)  # the first request holds the only place for 4 s
    answers: list[tuple[int, dict]] = []
    first = threading.Thread(target=lambda: answers.append(
        call(shedding_server.rest_url + HALF_PLUS_TWO + ":predict", "POST", {"instances": [1.0]})))
    first.start()
    while lab_metric(shedding_server, ":lab:serving:queue_admitted") < 1:  # until it holds the place
        pass
    status, body = call(shedding_server.rest_url + HALF_PLUS_TWO + ":predict", "POST", {"instances": [2.0]})
    assert status == 503
    assert "queue is full" in body["error"] and "--lab_max_queue" in body["error"]
    with pytest.raises(grpc.RpcError) as refused:
        grpc_stub(shedding_server).Predict(grpc_predict_request(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "queue is full" in refused.value.details()
    assert lab_metric(shedding_server, ":lab:serving:shed_count") == 2
    first.join()
    assert answers == [(200, {"predictions": [2.5]})]  # the one admitted is answered
    assert lab_metric(shedding_server, ":lab:serving:queue_admitted") == 0


@pytest.mark.e2e
def test_a_trial_counts_refusals_as_shed_and_keeps_their_latency_apart(shedding_server, slow_model) -> None:
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.load import LoadSettings, Workload, measure_trial
    from poochlab.experiments.records import TrialRecord

    slow_model(200)  # 50 arrivals/s against one place held 200 ms each: most are refused
    settings = LoadSettings(mode="open", rate_rps=50, window_s=1.0, warmup_s=0.5, min_windows=2, max_windows=2)
    record = TrialRecord(run_id="test", trial_id="shed", config_id="shed", repetition=0, factors={}, seed=1)
    measure_trial(settings, ClientConfig(rest_url=shedding_server.rest_url), Workload.generated(500, seed=3), record,
                  server_pid=shedding_server.pid)
    assert record.status == "ok", record.failure_reason
    shed = record.shed
    assert shed["requests"] == record.errors_by_kind["http_503"] > 0
    attempts = sum(w.requests + w.errors for w in record.windows)
    assert shed["share"] == pytest.approx(shed["requests"] / attempts)
    assert set(record.errors_by_kind) == {"http_503"}
    # Refused, not broken: the server is overloaded, the measurement stays valid.
    assert record.validity.server_overloaded
    assert "request_errors" not in record.validity.kinds and "generator_limited" not in record.validity.kinds
    assert shed["answer_p50_us"] >= 200_000  # every answer waited the planted 200 ms
    assert shed["refusal_p99_us"] < shed["answer_p50_us"]  # refusals did not wait for it
    assert json.loads(record.to_json())["shed"] == shed
