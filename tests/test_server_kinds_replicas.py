"""Replicas on one machine: two lab servers behind Debian's nginx, REST and gRPC.

Each replica's own Prometheus counters show that the balancer spread the requests over both;
the answers show that nothing was lost or mixed up on the way.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from fixtures.lab_server import PROMETHEUS_PATH, write_models_config
from poochlab.processes.servers.replicas import ReplicaSet, launch_replicas, replica_cores
from poochlab.processes.servers.launcher import ServerSpec

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

MODEL = "half_plus_two"
REQUESTS = 12


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory, half_plus_two_base: Path) -> Iterator[ReplicaSet]:
    workdir = tmp_path_factory.mktemp("replicas")
    config = write_models_config(workdir / "models.config", {MODEL: half_plus_two_base / MODEL})
    monitoring = workdir / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{PROMETHEUS_PATH}" }}\n')
    spec = ServerSpec(model_config_file=config, monitoring_config_file=monitoring, rest_api_num_threads=2,
                      tensorflow_intra_op_parallelism=1, tensorflow_inter_op_parallelism=1,
                      log_file=workdir / "server.log")
    with launch_replicas(spec, 2, balancer="nginx", pin=True) as replicas:
        replicas.wait_until_available([MODEL], timeout_s=180)
        yield replicas


def _served(rest_url: str) -> dict[str, float]:
    """Requests a replica has answered for MODEL, by entrypoint (REST / GRPC), from its metrics."""
    with urllib.request.urlopen(rest_url + PROMETHEUS_PATH, timeout=30) as answer:
        text = answer.read().decode()
    counts = {"REST": 0.0, "GRPC": 0.0}
    pattern = r'^:tensorflow:serving:request_latency_count\{([^}]*)\} (\S+)$'
    for labels, value in re.findall(pattern, text, re.M):
        if f'model_name="{MODEL}"' in labels:
            entrypoint = re.search(r'entrypoint="(\w+)"', labels).group(1)
            counts[entrypoint] += float(value)
    return counts


def _rest_predict(url: str, x: float) -> object:
    request = urllib.request.Request(f"{url}/v1/models/{MODEL}:predict", data=json.dumps({"instances": [[x]]}).encode())
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _grpc_request(x: float) -> object:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].float_val.append(x)
    return request


def _grpc_predict_all(target: str, options: list) -> None:
    """REQUESTS predictions over one channel, each answer checked."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(REQUESTS):
            answer = stub.Predict(_grpc_request(float(i)), timeout=30)
            assert list(answer.outputs["y"].float_val) == [i / 2 + 2]
            assert answer.model_spec.name == MODEL


def test_rest_requests_reach_both_replicas_and_answer_correctly(two_replicas: ReplicaSet) -> None:
    before = [_served(url)["REST"] for url in two_replicas.rest_urls]
    for i in range(REQUESTS):
        assert _rest_predict(two_replicas.rest_url, float(i)) == {"predictions": [[i / 2 + 2]]}
    # The metrics requests themselves go to each replica directly, not through the balancer.
    gained = [_served(url)["REST"] - b for url, b in zip(two_replicas.rest_urls, before)]
    assert sum(gained) == REQUESTS
    assert all(g > 0 for g in gained), gained


def test_grpc_requests_reach_both_replicas_over_http2(two_replicas: ReplicaSet) -> None:
    before = [_served(url)["GRPC"] for url in two_replicas.rest_urls]
    _grpc_predict_all(two_replicas.grpc_target, two_replicas.grpc_channel_options)
    gained = [_served(url)["GRPC"] - b for url, b in zip(two_replicas.rest_urls, before)]
    assert sum(gained) == REQUESTS
    assert all(g > 0 for g in gained), gained


def test_client_side_round_robin_over_the_same_replicas(two_replicas: ReplicaSet) -> None:
    client_side = ReplicaSet(two_replicas.replicas, None, {})
    assert client_side.grpc_target.startswith("ipv4:")
    before = [_served(url)["GRPC"] for url in client_side.rest_urls]
    _grpc_predict_all(client_side.grpc_target, client_side.grpc_channel_options)
    gained = [_served(url)["GRPC"] - b for url, b in zip(client_side.rest_urls, before)]
    assert sum(gained) == REQUESTS and all(g > 0 for g in gained), gained


def test_placement_records_each_replicas_cores(two_replicas: ReplicaSet) -> None:
    placement = two_replicas.placement
    assert placement["replicas"] == 2 and placement["balancer"] == "nginx" and placement["pinned"]
    cores = placement["replica_cores"]
    assert cores == replica_cores(2, placement["available_cores"], pin=True)
    for pid, wanted in zip(two_replicas.pids, cores):
        assert sorted(os.sched_getaffinity(pid)) == wanted


def test_core_shares() -> None:
    assert replica_cores(2, [0, 1, 2, 3], pin=True) == [[0, 1], [2, 3]]
    assert replica_cores(4, [0, 1], pin=True) == [[0], [1], [0], [1]]
    assert replica_cores(2, [0, 1], pin=False) == [[0, 1], [0, 1]]


def test_replicas_refuse_kinds_and_balancers_they_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind 'lab' or 'tfserving'"):
        launch_replicas(ServerSpec(kind="docker", model_name="m", model_base_path=tmp_path), 2)
    with pytest.raises(ValueError, match="unknown balancer 'haproxy'"):
        launch_replicas(ServerSpec(model_name="m", model_base_path=tmp_path), 2, balancer="haproxy")
