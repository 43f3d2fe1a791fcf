"""The lab server's gRPC services with tensorflow-serving-api's own stubs and protos."""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


@pytest.fixture(scope="module")
def channel(lab_server):
    with grpc.insecure_channel(lab_server.grpc_target) as channel:
        yield channel


@pytest.fixture(scope="module")
def prediction(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(channel)


def half_plus_two_request(values, **spec):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "half_plus_two")
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, dtype=np.float32).reshape(-1, 1)))
    return request


def examples_input(target, values):
    for value in values:
        example = target.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)


def test_predict_answers_typed_values_echoes_the_spec_and_sends_server_timing(prediction):
    response, call = prediction.Predict.with_call(half_plus_two_request([1.0, 2.0, 5.0]))
    output = response.outputs["y"]
    assert list(output.float_val) == [2.5, 3.0, 4.5] and not output.tensor_content
    assert [d.size for d in output.tensor_shape.dim] == [3, 1]
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    trailers = dict(call.trailing_metadata())
    assert re.fullmatch(r"queue;dur=[0-9.]+, compute;dur=[0-9.]+", trailers["server-timing"])


def test_pooch_predictor_predict_over_grpc_matches_rest(prediction, lab_server):
    import json
    import urllib.request

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pooch_predictor"
    request.inputs["hashtags"].CopyFrom(tf.make_tensor_proto([b"#corgi #adorable", b"#husky"]))
    request.inputs["country"].CopyFrom(tf.make_tensor_proto([b"GB", b"US"]))
    request.inputs["followers"].CopyFrom(tf.make_tensor_proto(np.array([1200, 15], dtype=np.int64)))
    likes = list(prediction.Predict(request).outputs["likes"].float_val)
    body = json.dumps({"inputs": {"hashtags": ["#corgi #adorable", "#husky"], "country": ["GB", "US"],
                                  "followers": [1200, 15]}}).encode()
    with urllib.request.urlopen(urllib.request.Request(
            lab_server.rest_url + "/v1/models/pooch_predictor:predict", data=body)) as answer:
        rest = json.loads(answer.read())["outputs"]
    assert len(likes) == 2
    assert np.allclose(likes, rest, rtol=1e-6)


@pytest.mark.parametrize("spec, code, message", [
    ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ({"version": 9}, grpc.StatusCode.NOT_FOUND, "Specific(half_plus_two, 9)"),
    ({"version_label": "stable"}, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: stable"),
    ({"signature_name": "nope"}, grpc.StatusCode.FAILED_PRECONDITION, "nope"),
])
def test_predict_errors_carry_tf_serving_codes(prediction, spec, code, message):
    with pytest.raises(grpc.RpcError) as error:
        prediction.Predict(half_plus_two_request([1.0], **spec))
    assert error.value.code() == code
    assert message in error.value.details()


def test_output_filter_selects_outputs_and_refuses_unknown_or_repeated_aliases(prediction):
    request = half_plus_two_request([1.0])
    request.output_filter.append("y")
    assert list(prediction.Predict(request).outputs) == ["y"]
    for aliases, message in ((["z"], "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
                             (["y", "y"], "duplicate output tensor alias: y")):
        request = half_plus_two_request([1.0])
        request.output_filter.extend(aliases)
        with pytest.raises(grpc.RpcError) as error:
            prediction.Predict(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details() == message


def test_wrong_dtype_is_invalid_argument(prediction):
    import tensorflow as tf

    request = half_plus_two_request([1.0])
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1]], dtype=np.int64)))
    with pytest.raises(grpc.RpcError) as error:
        prediction.Predict(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x" in error.value.details()


def test_classify_regress_and_multi_inference(prediction):
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "half_plus_two", "classify_x_to_y"
    examples_input(classify.input, [1.0, 3.0])
    result = prediction.Classify(classify).result
    assert [[(c.label, c.score) for c in row.classes] for row in result.classifications] == [[("", 2.5)], [("", 3.5)]]

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "half_plus_two", "regress_x_to_y"
    examples_input(regress.input, [2.0])
    answer = prediction.Regress(regress)
    assert [r.value for r in answer.result.regressions] == [3.0]
    assert answer.model_spec.signature_name == "regress_x_to_y"

    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "half_plus_two", signature, method
    examples_input(multi.input, [4.0])
    results = prediction.MultiInference(multi).results
    assert results[0].classification_result.classifications[0].classes[0].score == 4.0
    assert results[1].regression_result.regressions[0].value == 4.0


def test_regress_on_a_signature_without_an_inputs_tensor_is_invalid_argument(prediction):
    from tensorflow_serving.apis import regression_pb2

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two"
    examples_input(regress.input, [2.0])
    with pytest.raises(grpc.RpcError) as error:
        prediction.Regress(regress)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("No regression inputs found in SignatureDef: ")


def test_metadata_packs_the_signature_def_map(prediction):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert set(signature_map.signature_def) >= {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    assert signature_map.signature_def["regress_x_to_y"].method_name == "tensorflow/serving/regress"


def test_model_status_and_unknown_model(models):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "pooch_predictor"
    (status,) = models.GetModelStatus(request).model_version_status
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as error:
        models.GetModelStatus(request)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_requests_are_counted_with_the_grpc_entrypoint(prediction, lab_server):
    import urllib.request

    prediction.Predict(half_plus_two_request([1.0]))
    with urllib.request.urlopen(lab_server.rest_url + "/monitoring/prometheus/metrics") as answer:
        text = answer.read().decode()
    assert re.search(r'^:tensorflow:serving:request_latency_count\{model_name="half_plus_two",API="Predict",'
                     r'entrypoint="GRPC"\} [1-9]\d*$', text, re.M)
