"""A server process of its own: version switch under load, config reloads, batching, shutdown."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from poochlab.processes.servers.launcher import ServerSpec, ServerStartError, launch

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.2)


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post_json(url: str, payload: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def states(server, model: str = "half_plus_two") -> dict[str, str]:
    status, body = get_json(f"{server.rest_url}/v1/models/{model}")
    return {s["version"]: s["state"] for s in body.get("model_version_status", [])} if status == 200 else {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, half_plus_two_base) -> Path:
    workdir = tmp_path_factory.mktemp("switching")
    shutil.copytree(half_plus_two_base / "half_plus_two" / "1", workdir / "half_plus_two" / "1")
    return workdir


def write_config(workdir: Path, extra: str = "") -> Path:
    path = workdir / "models.config"
    text = (f"model_config_list {{ config {{ name: 'half_plus_two' base_path: '{workdir / 'half_plus_two'}' "
            f"model_platform: 'tensorflow' {extra} }} }}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # the poller never reads half a file
    return path


@pytest.fixture(scope="module")
def switching_server(workdir):
    config = write_config(workdir)
    (workdir / "batching.config").write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n"
                                             "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n")
    (workdir / "monitoring.config").write_text('prometheus_config { enable: true, path: "/metrics" }')
    spec = ServerSpec(model_config_file=config, batching_parameters_file=workdir / "batching.config",
                      monitoring_config_file=workdir / "monitoring.config", file_system_poll_wait_seconds=1,
                      extra_flags=("--model_config_file_poll_wait_seconds=1",), log_file=workdir / "server.log")
    with launch(spec) as server:
        server.wait_until_available(["half_plus_two"], timeout_s=180)
        yield server


def test_a_new_version_takes_over_under_steady_load_without_a_failed_request(switching_server, workdir):
    url = f"{switching_server.rest_url}/v1/models/half_plus_two:predict"
    failures: list[object] = []
    answers = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answers
        while not stop.is_set():
            try:
                status, body = post_json(url, {"instances": [[2.0]]})
            except OSError as error:
                failures.append(error)
                continue
            if status != 200 or body != {"predictions": [[3.0]]}:
                failures.append((status, body))
            answers += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: answers >= 10 or bool(failures))  # the load runs before the switch ...
        staging = workdir / "staging-2"
        shutil.copytree(workdir / "half_plus_two" / "1", staging)
        os.replace(staging, workdir / "half_plus_two" / "2")  # appears whole, as exporters should do
        wait_for(lambda: states(switching_server) == {"2": "AVAILABLE", "1": "END"})
        switched = answers
        wait_for(lambda: answers >= switched + 10 or bool(failures))  # ... and goes on after it
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []


def test_batching_metrics_appear_under_tf_serving_names(switching_server):
    import re
    from concurrent.futures import ThreadPoolExecutor

    url = f"{switching_server.rest_url}/v1/models/half_plus_two:predict"
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda x: post_json(url, {"instances": [[float(x)]]}), range(24)))
    assert answers == [(200, {"predictions": [[0.5 * x + 2]]}) for x in range(24)]
    with urllib.request.urlopen(f"{switching_server.rest_url}/metrics") as answer:
        text = answer.read().decode()
    for name in ("queuing_latency", "input_batch_size", "processed_batch_size", "padding_size"):
        assert re.search(rf"^:tensorflow:serving:batching_session:{name}_count\{{.*\}} [1-9]\d*$", text, re.M), name


def test_config_file_polling_applies_new_labels(switching_server, workdir):
    write_config(workdir, "model_version_policy { all {} } version_labels { key: 'stable' value: 2 }")
    label_url = f"{switching_server.rest_url}/v1/models/half_plus_two/labels/stable:predict"
    wait_for(lambda: post_json(label_url, {"instances": [[0.0]]})[0] == 200)
    assert post_json(label_url, {"instances": [[0.0]]}) == (200, {"predictions": [[2.0]]})


def test_reload_config_request_replaces_the_model_list(switching_server, workdir):
    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    from poochlab.serving.model_config import parse_model_config_text

    with grpc.insecure_channel(switching_server.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = model_management_pb2.ReloadConfigRequest()
        bad = parse_model_config_text(
            f"model_config_list {{ config {{ name: 'half_plus_two' base_path: '{workdir / 'half_plus_two'}' "
            "version_labels { key: 'stable' value: 9 } } }", "test")
        request.config.CopyFrom(bad)
        with pytest.raises(grpc.RpcError) as error:
            stub.HandleReloadConfigRequest(request)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        request.config.CopyFrom(parse_model_config_text("model_config_list {}", "test"))
        assert stub.HandleReloadConfigRequest(request).status.error_code == 0
    status, body = get_json(f"{switching_server.rest_url}/v1/models/half_plus_two")
    assert status == 404 and "half_plus_two" in body["error"]


def test_sigterm_shuts_down_cleanly(switching_server):
    assert switching_server.stop() == 0


def test_a_server_that_cannot_start_reports_its_log_tail(tmp_path, half_plus_two_base):
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: maybe }")
    spec = ServerSpec(model_name="half_plus_two", model_base_path=half_plus_two_base / "half_plus_two",
                      monitoring_config_file=monitoring, log_file=tmp_path / "server.log")
    with launch(spec) as server:
        with pytest.raises(ServerStartError) as error:
            server.wait_until_available(["half_plus_two"], timeout_s=120)
    assert "exited with code 2" in str(error.value)
    assert str(monitoring) in str(error.value)  # the log tail names the bad file


def test_batching_parameters_file_errors_stop_the_start(tmp_path, half_plus_two_base):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 2\n")
    spec = ServerSpec(model_name="half_plus_two", model_base_path=half_plus_two_base / "half_plus_two",
                      batching_parameters_file=params, log_file=tmp_path / "server.log")
    with launch(spec) as server:
        with pytest.raises(ServerStartError) as error:
            server.wait_until_available(["half_plus_two"], timeout_s=120)
    assert str(params) in str(error.value) and "allowed_batch_sizes" in str(error.value)
