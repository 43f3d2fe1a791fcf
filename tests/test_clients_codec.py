"""The clients' request and answer encoding, on its short paths and its general ones.

Expected values are written out by hand from TF Serving's REST contract and the W3C
Server-Timing syntax, not produced by the code under test.
"""

from __future__ import annotations

import json

import pytest

from poochlab.clients import ClientConfig, PredictionError
from poochlab.clients import transport
from poochlab.clients.rest_predictor import RestPredictor, decode_likes
from poochlab.clients.server_timing import parse_server_timing


@pytest.mark.parametrize(("body", "request_format", "rows", "likes"), [
    (b'{\n    "predictions": [12.8612118\n    ]\n}', "row", 1, [12.8612118]),  # the lab server's pretty print
    (b'{"predictions": [[1.5], [2.5]]}', "row", 2, [1.5, 2.5]),  # an output of shape [None, 1]
    (b'{"predictions": [3, 4.5]}', "row", 2, [3.0, 4.5]),  # whole numbers are numbers too
    (b'{"predictions": [{"likes": 1.0, "other": 2}]}', "row", 1, [1.0]),  # several outputs
    (b'{"outputs": {"likes": [[0.5]]}}', "columnar", 1, [0.5]),
    (b'  \r\n{"outputs": [0.25]}\t\n', "columnar", 1, [0.25]),  # JSON whitespace around the value
])
def test_answers_in_tf_servings_shapes_decode_to_likes(body: bytes, request_format: str, rows: int,
                                                       likes: list[float]) -> None:
    decoded = decode_likes(body, request_format, rows)
    assert decoded == likes and all(type(value) is float for value in decoded)


@pytest.mark.parametrize(("body", "message"), [
    (b"", "answer is not JSON"),
    (b"   ", "answer is not JSON"),
    (b'{"predictions": [1.0]} trailing', "answer is not JSON: extra data"),
    (b'{"predictions": [1.0]', "answer is not JSON"),
    (b"\xff\xfe", "answer is not JSON"),
    (b"<html>oops</html>", "answer is not JSON"),
    (b'{"outputs": [1.0]}', "answer has no 'predictions' key"),
    (b'{"predictions": [1.0, 2.0]}', "expected 1 values of 'likes'"),
    (b'{"predictions": [true]}', "'likes' value True is not a number"),
    (b'{"predictions": ["1.0"]}', "'likes' value '1.0' is not a number"),
])
def test_answers_that_are_not_tf_servings_are_bad_responses_naming_why(body: bytes, message: str) -> None:
    with pytest.raises(PredictionError) as caught:
        decode_likes(body, "row", 1)
    assert caught.value.kind == "bad_response"
    assert message in caught.value.message


@pytest.mark.parametrize(("value", "expected"), [
    ("queue;dur=0.121, compute;dur=0.647", (121.0, 647.0)),  # the lab server's header
    ("compute;dur=2, queue;dur=1", (1000.0, 2000.0)),  # any order
    ("queue;dur=1, compute;dur=2, total;dur=3", (1000.0, 2000.0)),  # other metrics ignored
    ('queue;desc="wait";dur="0.5", compute;dur=0.25', (500.0, 250.0)),  # W3C parameters and quotes
    ("queue;dur=abc, compute;dur=0.5", (None, 500.0)),  # what cannot be read is missing, never an error
    ("compute;dur=4", (None, 4000.0)),
    ("", (None, None)),
    (None, (None, None)),
])
def test_server_timing_is_read_in_any_shape_the_syntax_allows(value: str | None,
                                                              expected: tuple[float | None, float | None]) -> None:
    assert parse_server_timing(value) == expected


def test_a_one_row_requests_json_is_encoded_once_and_sent_again_byte_for_byte() -> None:
    predictor = RestPredictor(ClientConfig(rest_url="http://127.0.0.1:1", library="lean"))
    row = {"hashtags": "#corgi #adorable", "country": "US", "followers": 5}
    expected = (b'{"signature_name":"serving_default","instances":'
                b'[{"hashtags":"#corgi #adorable","country":"US","followers":5}]}')
    first, again = predictor.request_bytes([dict(row)], None), predictor.request_bytes([dict(row)], None)
    assert first == expected and again is first  # the kept bytes, not a new encoding
    # Equal keys of other types stay apart: 5.0 and True are == 5 in Python, not in JSON.
    assert json.loads(predictor.request_bytes([{**row, "followers": 5.0}], None))["instances"][0]["followers"] == 5.0
    assert b'"followers":true' in predictor.request_bytes([{**row, "followers": True}], None)
    # Two rows, or a row with more fields, are encoded every time and never kept.
    two = predictor.request_bytes([row, {**row, "country": "GB"}], None)
    assert json.loads(two)["instances"][1]["country"] == "GB"
    assert b'"extra":1' in predictor.request_bytes([{**row, "extra": 1}], None)
    assert len(predictor._kept) == 3


def test_a_one_row_predict_request_is_kept_per_version() -> None:
    from poochlab.clients.grpc_predictor import LeanGrpcPredictor

    predictor = LeanGrpcPredictor(ClientConfig(protocol="grpc", grpc_target="127.0.0.1:1", library="lean"))
    protos = predictor._predict_pb2
    row = {"hashtags": "#pug", "country": "GB", "followers": 12}
    latest, pinned = predictor.request_bytes([row], None), predictor.request_bytes([row], 3)
    assert predictor.request_bytes([dict(row)], 3) is pinned
    parsed = protos.PredictRequest.FromString(pinned)
    assert parsed.model_spec.version.value == 3 and not protos.PredictRequest.FromString(latest).model_spec.HasField("version")
    assert list(parsed.inputs["hashtags"].string_val) == [b"#pug"]
    assert list(parsed.inputs["followers"].int64_val) == [12]


def test_the_kept_requests_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "KEPT_REQUESTS", 2)
    predictor = RestPredictor(ClientConfig(rest_url="http://127.0.0.1:1", library="lean"))
    bodies = [predictor.request_bytes([{"hashtags": "#pug", "country": "US", "followers": n}], None) for n in range(5)]
    assert [json.loads(body)["instances"][0]["followers"] for body in bodies] == [0, 1, 2, 3, 4]
    assert len(predictor._kept) == 2
