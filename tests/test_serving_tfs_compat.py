"""The lab's server driven the way TF Serving's common clients drive TF Serving.

TF Serving's REST examples (row and columnar), the ``tensorflow-serving-api`` gRPC stubs with
and without deadlines, Classify/Regress/MultiInference on TF1 and TF2 exports, metadata and
status over both APIs, and config reloads, on models with the traits of TF Serving's own test
data (``fixtures.tfs_models``: version folder ``00000123``, an input without ``tensor_shape``,
a ``tf.saved_model.save`` export). Every expected value is worked out by hand: the models
compute ``0.5 * x + 2`` (``half_plus_two``) and ``0.5 * x + 3`` (``half_plus_three``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from poochlab.processes.servers.launcher import ServerSpec, launch

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

MODELS = ("half_plus_two", "half_plus_three", "half_plus_two_tf2")
PREDICT, CLASSIFY, REGRESS = ("tensorflow/serving/predict", "tensorflow/serving/classify",
                              "tensorflow/serving/regress")


def models_config(base: Path, names: tuple[str, ...], extra: dict[str, str] | None = None) -> str:
    extra = extra or {}
    entries = "".join(f"  config {{ name: '{name}' base_path: '{base / name}' model_platform: 'tensorflow' "
                      f"{extra.get(name, '')} }}\n" for name in names)
    return "model_config_list {\n" + entries + "}\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a poller never reads half a file


def wait_until(condition, timeout_s: float = 60.0):
    """Poll ``condition`` until it returns something truthy (bounded; never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout_s} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tfs_models, tmp_path_factory):
    """TF Serving's defaults: no batching, method-name check off."""
    workdir = tmp_path_factory.mktemp("tfs_compat")
    config = workdir / "models.config"
    config.write_text(models_config(tfs_models, MODELS))
    with launch(ServerSpec(model_config_file=config, log_file=workdir / "server.log")) as running:
        running.wait_until_available(list(MODELS), timeout_s=180)
        yield running


@pytest.fixture(scope="module")
def batching_server(tfs_models, tmp_path_factory):
    """Batching on, and the config file re-read every second."""
    workdir = tmp_path_factory.mktemp("tfs_compat_batching")
    config = workdir / "models.config"
    write_atomically(config, models_config(tfs_models, ("half_plus_two",)))
    params = workdir / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n")
    spec = ServerSpec(model_config_file=config, batching_parameters_file=params,
                      extra_flags=("--model_config_file_poll_wait_seconds=1",), log_file=workdir / "server.log")
    with launch(spec) as running:
        running.wait_until_available(["half_plus_two"], timeout_s=180)
        running.config_path = config
        yield running


def rest(server, method: str, path: str, payload: object = None) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(server.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def stubs(server):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
               model_service_pb2_grpc.ModelServiceStub(channel))


def predict_request(model: str, array: np.ndarray, signature: str = "", name: str = "x"):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def add_examples(target, values: list[float]) -> None:
    for value in values:
        target.example_list.examples.add().features.feature["x"].float_list.value.append(value)


# ---- version folders ------------------------------------------------------------------------

def test_a_version_folder_with_leading_zeros_serves_its_number(server):
    assert rest(server, "GET", "/v1/models/half_plus_two") == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert rest(server, "POST", "/v1/models/half_plus_two/versions/123:predict",
                {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})


def test_version_folders_map_numbers_to_the_folders_found(tmp_path):
    from poochlab.serving.model_manager import scan_versions, version_folders

    for name in ("00000123", "7", "0007", "abc", "12x"):
        (tmp_path / name).mkdir()
    (tmp_path / "99").write_text("a file, not a version")
    assert version_folders(str(tmp_path)) == {7: tmp_path / "0007", 123: tmp_path / "00000123"}
    assert scan_versions(str(tmp_path)) == [7, 123]


# ---- TF Serving's REST examples, and shapes left to TensorFlow ---------------------------------

@pytest.mark.parametrize("model, payload, answer", [
    # TF Serving's README quickstart request, verbatim: x is float[?,1], and [3] goes to TF as is.
    ("half_plus_two", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
    ("half_plus_two", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
    ("half_plus_two", {"instances": [[1.0], [2.0]]}, {"predictions": [[2.5], [3.0]]}),
    ("half_plus_two", {"instances": [[1.0, 2.0]]}, {"predictions": [[2.5, 3.0]]}),
    ("half_plus_two", {"inputs": [1.0, 2.0, 5.0]}, {"outputs": [2.5, 3.0, 4.5]}),
    ("half_plus_two", {"inputs": {"x": [[1.0], [3.0]]}}, {"outputs": [[2.5], [3.5]]}),
    ("half_plus_two", {"signature_name": "serving_default", "instances": [{"x": [4.0]}]}, {"predictions": [[4.0]]}),
    # No tensor_shape in the signature: an unknown shape, so a scalar is fine too.
    ("half_plus_three", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [3.5, 4.0, 5.5]}),
    ("half_plus_three", {"inputs": 2.0}, {"outputs": 4.0}),
    ("half_plus_two_tf2", {"instances": [[1.0], [2.0], [5.0]]}, {"predictions": [[2.5], [3.0], [4.5]]}),
])
def test_rest_predict_answers_tf_serving_examples(server, model, payload, answer):
    assert rest(server, "POST", f"/v1/models/{model}:predict", payload) == (200, answer)


def test_an_op_that_cannot_take_the_shape_fails_with_tensorflows_invalid_argument(server, stubs):
    status, body = rest(server, "POST", "/v1/models/half_plus_three:predict",
                        {"signature_name": "matmul_x", "instances": [2.0, 3.0]})
    # TensorFlow's MatMul kernel words it (e.g. "In[0] ndims must be >= 2: 1 [[{{node product}}]]").
    assert status == 400 and "In[0]" in body["error"] and "{{node product}}" in body["error"]
    prediction, _ = stubs
    with pytest.raises(grpc.RpcError) as error:
        prediction.Predict(predict_request("half_plus_three", np.array([2.0, 3.0], np.float32), "matmul_x"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "In[0]" in error.value.details() and "{{node product}}" in error.value.details()


# ---- gRPC with tensorflow-serving-api's stubs ---------------------------------------------------

@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-deadline", "deadline"])
def test_grpc_predict_with_and_without_a_deadline(stubs, timeout):
    prediction, _ = stubs
    response = prediction.Predict(predict_request("half_plus_two", np.array([2.0, 3.0, 4.0], np.float32)),
                                  timeout=timeout)
    assert list(response.outputs["y"].float_val) == [3.0, 3.5, 4.0]
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [3]
    assert (response.model_spec.name, response.model_spec.version.value) == ("half_plus_two", 123)


def test_a_tensor_that_cannot_be_allocated_is_a_tensor_parsing_error(stubs):
    from tensorflow_serving.apis import predict_pb2

    prediction, _ = stubs
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT, no values: TensorFlow would fill 4 TiB of zeros
    for size in (1048576, 1048576):
        tensor.tensor_shape.dim.add().size = size
    with pytest.raises(grpc.RpcError) as error:
        prediction.Predict(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "tensor parsing error: x"


# ---- Classify, Regress, MultiInference on TF1 and TF2 exports ---------------------------------

@pytest.mark.parametrize("model", ["half_plus_two", "half_plus_two_tf2"])
def test_classify_and_regress_over_rest_on_tf1_and_tf2_exports(server, model):
    examples = {"examples": [{"x": 1.0}, {"x": 3.0}]}
    assert rest(server, "POST", f"/v1/models/{model}:classify", {"signature_name": "classify_x_to_y", **examples}) \
        == (200, {"results": [[["", 2.5]], [["", 3.5]]]})
    assert rest(server, "POST", f"/v1/models/{model}:regress", {"signature_name": "regress_x_to_y", **examples}) \
        == (200, {"results": [2.5, 3.5]})


def test_regress_on_a_tf1_export_whose_input_has_no_shape(server):
    assert rest(server, "POST", "/v1/models/half_plus_three:regress",
                {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == (200, {"results": [4.0]})


@pytest.mark.parametrize("model", ["half_plus_two", "half_plus_two_tf2"])
def test_classify_regress_and_multi_inference_over_grpc(stubs, model):
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    prediction, _ = stubs
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = model, "classify_x_to_y"
    add_examples(classify.input, [1.0, 3.0])
    result = prediction.Classify(classify).result
    assert [[(c.label, c.score) for c in row.classes] for row in result.classifications] == [[("", 2.5)], [("", 3.5)]]

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = model, "regress_x_to_y"
    add_examples(regress.input, [2.0])
    answer = prediction.Regress(regress)
    assert [r.value for r in answer.result.regressions] == [3.0]
    assert (answer.model_spec.version.value, answer.model_spec.signature_name) == (123, "regress_x_to_y")

    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", CLASSIFY), ("regress_x_to_y", REGRESS)):
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = model, signature, method
    add_examples(multi.input, [4.0])
    results = prediction.MultiInference(multi).results
    assert results[0].classification_result.classifications[0].classes[0].score == 4.0
    assert results[1].regression_result.regressions[0].value == 4.0


def test_regress_on_a_signature_without_an_inputs_tensor_is_invalid_argument(stubs):
    from tensorflow_serving.apis import regression_pb2

    prediction, _ = stubs
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two"  # serving_default: input x, output y
    add_examples(regress.input, [2.0])
    with pytest.raises(grpc.RpcError) as error:
        prediction.Regress(regress)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("No regression inputs found in SignatureDef: ")
    regress.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as error:
        prediction.Regress(regress)
    assert (error.value.code(), error.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope")


# ---- metadata and status over both APIs -------------------------------------------------------

SHAPE_N_BY_1 = {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}


def test_rest_metadata_prints_fields_without_presence_as_tf_serving_does(server):
    status, half_plus_two = rest(server, "GET", "/v1/models/half_plus_two/metadata")
    assert status == 200
    assert half_plus_two["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    signatures = half_plus_two["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"] == {
        "inputs": {"x": {"name": "x:0", "dtype": "DT_FLOAT", "tensor_shape": SHAPE_N_BY_1}},
        "outputs": {"y": {"name": "y:0", "dtype": "DT_FLOAT", "tensor_shape": SHAPE_N_BY_1}},
        "method_name": PREDICT,
        "defaults": {},
    }
    status, half_plus_three = rest(server, "GET", "/v1/models/half_plus_three/metadata")
    regress = half_plus_three["metadata"]["signature_def"]["signature_def"]["regress_x_to_y"]
    assert regress == {
        "inputs": {"inputs": {"name": "tf_example:0", "dtype": "DT_STRING"}},  # no tensor_shape at all
        "outputs": {"outputs": {"name": "y_from_example:0", "dtype": "DT_FLOAT",
                                "tensor_shape": {"dim": [], "unknown_rank": True}}},
        "method_name": REGRESS,
        "defaults": {},
    }


def test_grpc_metadata_and_status(stubs):
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    prediction, models = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two_tf2"
    request.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert response.model_spec.version.value == 123
    served = {k: v.method_name for k, v in signature_map.signature_def.items() if not k.startswith("__")}
    assert served == {"serving_default": PREDICT, "classify_x_to_y": PREDICT, "regress_x_to_y": PREDICT}

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "half_plus_three"
    (status,) = models.GetModelStatus(status_request).model_version_status
    assert (status.version, status.state, status.status.error_code) == (
        123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)


# ---- config reloads ---------------------------------------------------------------------------

def test_handle_reload_config_request_applies_a_new_label(server, stubs, tfs_models):
    from tensorflow_serving.apis import model_management_pb2

    from poochlab.serving.model_config import parse_model_config_text

    _, models = stubs
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(parse_model_config_text(models_config(
        tfs_models, MODELS, {"half_plus_two": "version_labels { key: 'stable' value: 123 }"}), "reload"))
    assert models.HandleReloadConfigRequest(request).status.error_code == 0
    assert rest(server, "POST", "/v1/models/half_plus_two/labels/stable:predict",
                {"instances": [[0.0]]}) == (200, {"predictions": [[2.0]]})


def test_a_grpc_call_without_a_deadline_is_answered_with_batching_on(batching_server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = prediction.Predict(predict_request("half_plus_two", np.array([[1.0], [2.0]], np.float32)))
        assert list(response.outputs["y"].float_val) == [2.5, 3.0]
        response = prediction.Predict(predict_request("half_plus_two", np.array([[5.0]], np.float32)), timeout=30)
        assert list(response.outputs["y"].float_val) == [4.5]


def test_the_polled_config_file_adds_a_model(batching_server, tfs_models):
    write_atomically(batching_server.config_path, models_config(tfs_models, ("half_plus_two", "half_plus_two_tf2")))
    wait_until(lambda: rest(batching_server, "GET", "/v1/models/half_plus_two_tf2")[0] == 200
               and rest(batching_server, "GET", "/v1/models/half_plus_two_tf2")[1]["model_version_status"][0]["state"]
               == "AVAILABLE", timeout_s=120)
    assert rest(batching_server, "POST", "/v1/models/half_plus_two_tf2:predict",
                {"instances": [[4.0]]}) == (200, {"predictions": [[4.0]]})


# ---- start-up errors ----------------------------------------------------------------------------

def test_a_config_file_the_parser_refuses_prints_tf_servings_lines(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n  config {\n    nme: 'x'\n  }\n}\n")
    done = subprocess.run([sys.executable, "-m", "poochlab.serving", f"--model_config_file={config}",
                           "--port=0"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert ('Error parsing text-format tensorflow.serving.ModelServerConfig: 3:5: '
            'Message type "tensorflow.serving.ModelConfig" has no field named "nme".') in lines
    assert f"Invalid protobuf file: '{config}'" in lines


# ---- in-process: the method-name check turned on, and the gzip limit ------------------------

@pytest.fixture(scope="module")
def manager(tfs_models):
    from poochlab.serving.direct_session import DirectSession
    from poochlab.serving.model_config import parse_model_config_text
    from poochlab.serving.model_manager import ModelManager
    from poochlab.serving.model_threads import ModelThreads

    threads = ModelThreads(1)
    manager = ModelManager(lambda compute, name: DirectSession(compute, threads))
    manager.apply_config(parse_model_config_text(models_config(tfs_models, MODELS), "test"))
    yield manager
    manager.close()
    threads.shutdown()


def rest_api(manager, **options):
    from poochlab.serving.metrics import ServerMetrics
    from poochlab.serving.rest_api import RestApi

    return RestApi(manager, ServerMetrics(), 30000, None, **options)


def test_with_the_method_name_check_on_a_predict_method_signature_cannot_regress(manager):
    body = json.dumps({"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}).encode()
    checked = asyncio.run(rest_api(manager, check_method_name=True).handle(
        "POST", "/v1/models/half_plus_two_tf2:regress", {}, body))
    assert checked.status == 400
    assert json.loads(checked.body)["error"] == (
        f"Expected regression signature method_name to be {REGRESS}. Was: {PREDICT}")
    unchecked = asyncio.run(rest_api(manager).handle("POST", "/v1/models/half_plus_two_tf2:regress", {}, body))
    assert (unchecked.status, json.loads(unchecked.body)) == (200, {"results": [3.0]})


def test_a_gzip_body_past_the_limit_after_decompression_is_413(manager):
    body = gzip.compress(json.dumps({"instances": [[1.0]] * 200}).encode())
    assert len(body) < 1000
    answer = asyncio.run(rest_api(manager, max_body_bytes=1000).handle(
        "POST", "/v1/models/half_plus_two:predict", {"content-encoding": "gzip"}, body))
    assert answer.status == 413 and "1000 bytes" in json.loads(answer.body)["error"]


def test_a_signature_input_without_tensor_shape_has_an_unknown_shape(manager):
    servable = manager.resolve("half_plus_three").servable
    assert servable.signature("").inputs["x"].shape is None
    assert manager.resolve("half_plus_two").servable.signature("").inputs["x"].shape == (None, 1)
