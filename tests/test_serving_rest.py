"""The lab server's REST API answers like TF Serving (one shared server: fixtures.lab_server)."""

from __future__ import annotations

import base64
import gzip
import json
import re
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


def call(server, method: str, path: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(server.rest_url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def post_json(server, path: str, payload: object) -> tuple[int, dict, dict[str, str]]:
    status, headers, body = call(server, "POST", path, json.dumps(payload))
    return status, json.loads(body), headers


PUPS = [
    {"hashtags": "#corgi #adorable", "country": "GB", "followers": 1200},
    {"hashtags": "#husky", "country": "US", "followers": 15},
    {"hashtags": "", "country": "ZZ", "followers": 0},
]


def test_model_status_lists_the_available_version_with_int64_as_string(lab_server):
    status, _, body = call(lab_server, "GET", "/v1/models/half_plus_two")
    assert status == 200
    assert json.loads(body) == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_half_plus_two_row_predict_prints_like_tf_serving(lab_server):
    status, headers, body = call(lab_server, "POST", "/v1/models/half_plus_two:predict",
                                 '{"instances": [[1.0], [2.0], [5.0]]}')
    assert status == 200
    # TF Serving's exact bytes: 4-space indent, arrays on one line, %g floats with ".0".
    assert body == b'{\n    "predictions": [[2.5], [3.0], [4.5]\n    ]\n}'
    assert headers["Content-Type"] == "application/json"


def test_columnar_predict_answers_outputs(lab_server):
    status, answer, _ = post_json(lab_server, "/v1/models/half_plus_two:predict", {"inputs": {"x": [[1.0], [3.0]]}})
    assert status == 200
    assert answer == {"outputs": [[2.5], [3.5]]}


def test_version_and_case_insensitive_paths_address_the_same_model(lab_server):
    status, answer, _ = post_json(lab_server, "/V1/Models/half_plus_two/Versions/1:PREDICT", {"instances": [[4.0]]})
    assert (status, answer) == (200, {"predictions": [[4.0]]})


def test_pooch_predictor_answers_one_float_per_pupdate_with_server_timing(lab_server):
    status, answer, headers = post_json(lab_server, "/v1/models/pooch_predictor:predict", {"instances": PUPS})
    assert status == 200
    predictions = answer["predictions"]
    assert len(predictions) == len(PUPS) and all(isinstance(p, float) for p in predictions)
    match = re.fullmatch(r"queue;dur=([0-9.]+), compute;dur=([0-9.]+)", headers["Server-Timing"])
    assert match and float(match.group(2)) > 0


def test_row_columnar_and_b64_inputs_give_the_same_predictions(lab_server):
    _, rows, _ = post_json(lab_server, "/v1/models/pooch_predictor:predict", {"instances": PUPS})
    columns = {key: [pup[key] for pup in PUPS] for key in PUPS[0]}
    _, columnar, _ = post_json(lab_server, "/v1/models/pooch_predictor:predict", {"inputs": columns})
    b64 = [dict(pup, hashtags={"b64": base64.b64encode(pup["hashtags"].encode()).decode()}) for pup in PUPS]
    _, encoded, _ = post_json(lab_server, "/v1/models/pooch_predictor:predict", {"instances": b64})
    assert columnar["outputs"] == rows["predictions"] == encoded["predictions"]


def test_gzip_request_body_is_accepted(lab_server):
    body = gzip.compress(b'{"instances": [[2.0]]}')
    status, _, answer = call(lab_server, "POST", "/v1/models/half_plus_two:predict", body,
                             {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 200 and json.loads(answer) == {"predictions": [[3.0]]}


def test_classify_and_regress_use_their_signatures(lab_server):
    examples = {"examples": [{"x": 1.0}, {"x": 3.0}]}
    status, answer, _ = post_json(lab_server, "/v1/models/half_plus_two:classify",
                                  {"signature_name": "classify_x_to_y", **examples})
    assert (status, answer) == (200, {"results": [[["", 2.5]], [["", 3.5]]]})
    status, answer, _ = post_json(lab_server, "/v1/models/half_plus_two:regress",
                                  {"signature_name": "regress_x_to_y", **examples})
    assert (status, answer) == (200, {"results": [2.5, 3.5]})
    # serving_default has no input called "inputs" (TF Serving's check with the method-name
    # check off, its default).
    status, answer, _ = post_json(lab_server, "/v1/models/half_plus_two:regress", examples)
    assert status == 400 and answer["error"].startswith("No regression inputs found in SignatureDef: ")


def test_metadata_holds_the_signature_defs(lab_server):
    status, _, body = call(lab_server, "GET", "/v1/models/pooch_predictor/metadata")
    assert status == 200
    answer = json.loads(body)
    assert answer["model_spec"]["name"] == "pooch_predictor"
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(signature["inputs"]) == {"hashtags", "country", "followers"}
    assert signature["inputs"]["followers"]["dtype"] == "DT_INT64"
    assert set(signature["outputs"]) == {"likes"}


@pytest.mark.parametrize("path, payload, status, message", [
    ("/v1/models/nope:predict", {"instances": [[1.0]]}, 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/half_plus_two/versions/7:predict", {"instances": [[1.0]]}, 404,
     "Servable not found for request: Specific(half_plus_two, 7)"),
    ("/v1/models/half_plus_two/labels/canary:predict", {"instances": [[1.0]]}, 400,
     "Unrecognized servable version label: canary"),
    ("/v1/models/half_plus_two:predict", {"instances": [[1.0]], "inputs": [[1.0]]}, 400,
     "Only one of 'inputs' or 'instances'"),
    ("/v1/models/half_plus_two:predict", {"signature_name": "serving_default"}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("/v1/models/half_plus_two:predict", {"instances": []}, 400, "'instances'"),
    ("/v1/models/half_plus_two:predict", {"instances": [["a"]]}, 400, "'x'"),
    ("/v1/models/half_plus_two:predict", {"instances": [[1.0]], "signature_name": "nope"}, 400, "nope"),
    ("/v1/models/pooch_predictor:predict", {"instances": [{"hashtags": "#a", "country": "GB"}]}, 400,
     "Missing but required: {followers}"),
    ("/v1/models/pooch_predictor:predict",
     {"instances": [{"hashtags": "#a", "country": "GB", "followers": 1, "cats": 2}]}, 400, "Sent extra: {cats}"),
    ("/v1/models/pooch_predictor:predict",
     {"instances": [{"hashtags": "#a", "country": "GB", "followers": 1.5}]}, 400, "followers"),
])
def test_bad_requests_get_tf_serving_status_and_a_message(lab_server, path, payload, status, message):
    got_status, answer, _ = post_json(lab_server, path, payload)
    assert got_status == status
    assert message in answer["error"]


def test_malformed_json_names_the_offset(lab_server):
    status, _, body = call(lab_server, "POST", "/v1/models/half_plus_two:predict", '{"instances": [1.0,')
    assert status == 400
    assert re.match(r"JSON Parse error: .* at offset: \d+$", json.loads(body)["error"])


def test_models_without_a_name_is_a_bad_request(lab_server):
    status, _, body = call(lab_server, "GET", "/v1/models")
    assert status == 400 and "Malformed request" in json.loads(body)["error"]


def test_prometheus_metrics_use_tf_serving_names_without_total_series(lab_server):
    post_json(lab_server, "/v1/models/half_plus_two:predict", {"instances": [[1.0]]})
    post_json(lab_server, "/v1/models/nope:predict", {"instances": [[1.0]]})
    status, headers, body = call(lab_server, "GET", "/monitoring/prometheus/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert re.search(r'^:tensorflow:serving:request_count\{model_name="half_plus_two",status="OK"\} \d+$', text, re.M)
    assert re.search(r'^:tensorflow:serving:request_count\{model_name="nope",status="NOT_FOUND"\} \d+$', text, re.M)
    assert re.search(r'^:tensorflow:serving:request_latency_bucket\{model_name="half_plus_two",API="Predict",'
                     r'entrypoint="REST",le="\+Inf"\} \d+$', text, re.M)
    assert ":tensorflow:serving:runtime_latency_count" in text
    assert "_total" not in text and "_created" not in text
