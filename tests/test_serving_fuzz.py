"""Random REST requests never crash or hang the server: every answer is JSON with a sane status."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

MODELS = st.sampled_from(["half_plus_two", "pooch_predictor", "nope", "HALF_PLUS_TWO", "a%20b", "%00", ""])
SUFFIXES = st.sampled_from(["", ":predict", ":classify", ":regress", ":explode", "/metadata", "/versions/1",
                            "/versions/1:predict", "/versions/x:predict", "/labels/stable:predict", "/", "//"])
PATHS = st.one_of(
    st.builds(lambda m, s: f"/v1/models/{m}{s}", MODELS, SUFFIXES),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?%"),
            max_size=40).map(lambda t: "/" + t),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["instances", "inputs", "x", "hashtags", "country", "followers", "b64",
                        "signature_name", "examples", "context"]) | st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)
BODIES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda v: json.dumps({"instances": v}).encode(), JSON_VALUES),
    st.builds(lambda v: json.dumps({"inputs": v}).encode(), JSON_VALUES),
    st.binary(max_size=64),
)
EXPECTED_STATUS = {200, 400, 404, 405, 413, 429, 500, 501, 503, 504}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), path=PATHS, body=BODIES)
def test_random_requests_get_json_answers(lab_server, method, path, body):
    request = urllib.request.Request(lab_server.rest_url + path, data=body if method != "GET" else None,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, payload = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    assert status in EXPECTED_STATUS
    decoded = json.loads(payload)
    if status != 200:
        assert isinstance(decoded, dict) and isinstance(decoded.get("error"), str) and decoded["error"]
    assert status != 500, decoded  # a 500 is a server bug, not a bad request


def test_the_server_still_serves_after_garbage_and_oversized_bodies(lab_server):
    host, port = lab_server.rest_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 67108865\r\n\r\n{\"instances\"")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"67108864" in answer and b'"error"' in answer
    with urllib.request.urlopen(lab_server.rest_url + "/v1/models/half_plus_two") as answer:
        assert answer.status == 200
