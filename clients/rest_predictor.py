"""The REST predictor: TF Serving's JSON predict API over HTTP/1.1 keep-alive connections.

Row format sends ``{"instances": [{...}, ...]}`` and reads ``predictions``; columnar sends
``{"inputs": {name: [...]}}`` and reads ``outputs``. Both follow TF Serving's REST contract, so
the same client works against real TF Serving; the lab server's ``Server-Timing`` header is
read when present.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from poochlab.clients.config import ClientConfig
from poochlab.clients.http_connection_pool import HttpConnectionPool
from poochlab.clients.prediction import KIND_BAD_RESPONSE, PATH_MODEL, CallTiming, Prediction, PredictionError
from poochlab.clients.server_timing import parse_server_timing
from poochlab.clients.transport import Transport
from poochlab.models.pupdate import INPUT_COUNTRY, INPUT_FOLLOWERS, INPUT_HASHTAGS, OUTPUT_LIKES

_JSON_HEADERS = {"Content-Type": "application/json"}
# One encoder for all calls: json.dumps with options builds a new one every time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_INPUT_NAMES = (INPUT_HASHTAGS, INPUT_COUNTRY, INPUT_FOLLOWERS)
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # the C scanner json.loads ends in
_JSON_SPACE = " \t\n\r"


def encode_request(rows: list[dict[str, Any]], signature_name: str, request_format: str) -> bytes:
    """The JSON body of a predict request for ``rows`` in row or columnar format."""
    if request_format == "row":
        payload: dict[str, Any] = {"signature_name": signature_name, "instances": rows}
    else:
        payload = {"signature_name": signature_name,
                   "inputs": {name: [row[name] for row in rows] for name in _INPUT_NAMES}}
    return _ENCODER.encode(payload).encode("utf-8")


def _parse_json(body: bytes) -> Any:
    """``json.loads`` for an answer: UTF-8 (JSON over HTTP is), without json.loads's Python
    layers (encoding detection, decode, raw_decode) on the timed path."""
    text = body.decode("utf-8")
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    value, end = _SCAN(text, start)
    if text[end:].strip(_JSON_SPACE):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value


def decode_likes(body: bytes, request_format: str, expected_rows: int) -> list[float]:
    """The predicted likes from a 200 answer; ``bad_response`` when it is not TF Serving's shape."""
    try:
        answer = _parse_json(body)
    except StopIteration as stop:  # the scanner's way to say "no JSON value here"
        raise PredictionError(KIND_BAD_RESPONSE, f"answer is not JSON: nothing to parse at character {stop.value}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise PredictionError(KIND_BAD_RESPONSE, f"answer is not JSON: {error}") from None
    key = "predictions" if request_format == "row" else "outputs"
    if not isinstance(answer, dict) or key not in answer:
        raise PredictionError(KIND_BAD_RESPONSE, f"answer has no {key!r} key: {body[:200]!r}")
    values = answer[key]
    # Several outputs: columnar answers an object of outputs, row answers a list of objects.
    if isinstance(values, dict):
        values = values.get(OUTPUT_LIKES)
    elif isinstance(values, list) and values and isinstance(values[0], dict):
        values = [item.get(OUTPUT_LIKES) if isinstance(item, dict) else None for item in values]
    if not isinstance(values, list) or len(values) != expected_rows:
        raise PredictionError(KIND_BAD_RESPONSE,
                              f"expected {expected_rows} values of {OUTPUT_LIKES!r} in {key!r}, got {body[:200]!r}")
    if all(type(value) is float for value in values):  # the usual answer, checked in one step
        return values
    likes = []
    for value in values:
        if isinstance(value, list) and len(value) == 1:  # an output of shape [None, 1]
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PredictionError(KIND_BAD_RESPONSE, f"{OUTPUT_LIKES!r} value {value!r} is not a number")
        likes.append(float(value))
    return likes


def _error_message(body: bytes) -> str:
    try:
        answer = json.loads(body)
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            return answer["error"]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")


class RestPredictor(Transport):
    protocol = "rest"

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self.library = config.resolved_library
        self._http = HttpConnectionPool(config.rest_url, self.library, config.timeout_s)
        self._model_path = f"/v1/models/{quote(config.model_name, safe='')}"
        self._predict_path = self._address(None) + ":predict"  # the configured addressing

    def _address(self, version: int | None) -> str:
        if version is not None:
            return f"{self._model_path}/versions/{version}"
        if self.config.version is not None:
            return f"{self._model_path}/versions/{self.config.version}"
        if self.config.version_label is not None:
            return f"{self._model_path}/labels/{quote(self.config.version_label, safe='')}"
        return self._model_path

    def _call(self, rows: list[dict[str, Any]], timeout_s: float, version: int | None) -> Prediction:
        started = time.monotonic()
        body = self.request_bytes(rows, version)
        encoded = time.monotonic()
        path = self._predict_path if version is None else self._address(version) + ":predict"
        answer = self._http.request("POST", path, body, _JSON_HEADERS, timeout_s)
        answered = time.monotonic()
        if answer.status != 200:
            raise PredictionError(f"http_{answer.status}", _error_message(answer.body))
        likes = decode_likes(answer.body, self.config.request_format, len(rows))
        queue_us, compute_us = parse_server_timing(answer.server_timing)
        decoded = time.monotonic()
        timing = CallTiming(encode_us=(encoded - started) * 1e6, wait_us=(answered - encoded) * 1e6,
                            decode_us=(decoded - answered) * 1e6, server_queue_us=queue_us,
                            server_compute_us=compute_us,
                            # The library's own stamps at the socket when it has them (the lean client).
                            sent_at=encoded if answer.sent_at is None else answer.sent_at,
                            answered_at=answered if answer.received_at is None else answer.received_at)
        pinned = version if version is not None else self.config.version
        return Prediction(likes=likes, paths=(PATH_MODEL,) * len(rows), timing=timing, model_version=pinned)

    def _encode(self, rows: list[dict[str, Any]], version: int | None) -> bytes:
        return encode_request(rows, self.config.signature_name, self.config.request_format)  # version: in the URL

    def model_versions(self, timeout_s: float | None = None) -> list[int]:
        """GET /v1/models/<name>[/labels/<label>|/versions/<n>]: the AVAILABLE versions."""
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        answer = self._http.request("GET", self._address(None), None, {}, timeout)
        if answer.status != 200:
            raise PredictionError(f"http_{answer.status}", _error_message(answer.body))
        try:
            statuses = json.loads(answer.body)["model_version_status"]
            return sorted(int(status["version"]) for status in statuses if status.get("state") == "AVAILABLE")
        except (ValueError, KeyError, TypeError) as error:
            raise PredictionError(KIND_BAD_RESPONSE, f"model status answer not understood ({error!r}): "
                                  f"{answer.body[:200]!r}") from None

    def close(self) -> None:
        self._http.close()
