"""TF Serving's REST API over the model manager, independent of the HTTP transport.

``RestApi.handle(method, path, headers, body)`` returns a :class:`Response`; the transport
(``http_server``) only parses HTTP. Paths are matched case-insensitively, as TF Serving does.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass, field

from poochlab.serving import rest_codec
from poochlab.serving.admission import Admission
from poochlab.serving.fault_injection import ADMIN_PATH, FaultInjector, LabFaults
from poochlab.serving.http_server import RequestGauge
from poochlab.serving.inference import (
    classification_results, examples_input, examples_signature, regression_results, run_signature,
)
from poochlab.serving.json_format import error_body, write_json
from poochlab.serving.metrics import ServerMetrics
from poochlab.serving.model_manager import ModelManager
from poochlab.serving.servable import CLASSIFY_METHOD, REGRESS_METHOD
from poochlab.serving.status import Code, ServingError
from poochlab.wire import SERVER_TIMING_HEADER, server_timing_value

# TF Serving caps nothing itself; the lab refuses bodies above this (documented, --lab_max_request_bytes).
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?/?$",
    re.IGNORECASE,
)
_JSON = b"application/json"
_API_NAMES = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = _JSON


class BodyTooLarge(ServingError):
    """A body past ``--lab_max_request_bytes`` (after gzip too): HTTP 413, as the README says.

    Its code stays RESOURCE_EXHAUSTED for metrics; only the HTTP status is the lab's own."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, message)

    @property
    def http_status(self) -> int:
        return 413


def _error(error: ServingError) -> Response:
    return Response(error.http_status, error_body(error.message))


def server_timing(queue_us: float, compute_us: float) -> str:
    """The Server-Timing value every inference answer carries (milliseconds)."""
    return server_timing_value(queue_us, compute_us)


class RestApi:
    def __init__(self, manager: ModelManager, metrics: ServerMetrics, timeout_ms: int,
                 prometheus_path: str | None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 check_method_name: bool = False) -> None:
        self.manager = manager
        self.check_method_name = check_method_name  # --enable_signature_method_name_check
        self.metrics = metrics
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self.prometheus_path = prometheus_path
        self.max_body_bytes = max_body_bytes
        # Requests being answered; the HTTP server counts them (pass it to start_http_server).
        self.gauge = RequestGauge()
        self.fault: FaultInjector | None = None  # --lab_fault_* (set through LabFaults)
        self.admission = Admission()  # --lab_max_queue (main.py shares one with gRPC)
        self.fault_admin: LabFaults | None = None  # --lab_fault_admin: serves /lab/faults

    def decode_body(self, headers: dict[str, str], body: bytes) -> bytes:
        """The body, gunzipped when ``Content-Encoding: gzip`` (bounded by the size limit)."""
        encoding = headers.get("content-encoding", "").strip().lower()
        if not encoding or encoding == "identity":
            return body
        if encoding not in ("gzip", "deflate"):
            raise ServingError(Code.INVALID_ARGUMENT, f"Unsupported Content-Encoding: {encoding}")
        inflater = zlib.decompressobj(47 if encoding == "gzip" else 15)  # 47: gzip or zlib header
        try:
            data = inflater.decompress(body, self.max_body_bytes + 1)
        except zlib.error as error:
            raise ServingError(Code.INVALID_ARGUMENT, f"Failed to decompress the {encoding} request body: {error}") from None
        if len(data) > self.max_body_bytes:
            raise BodyTooLarge(body_too_large_message(self.max_body_bytes, "decompressed "))
        return data

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        path = path.split("?", 1)[0]
        if self.prometheus_path is not None and method == "GET" and path == self.prometheus_path:
            return Response(200, self.metrics.exposition().encode(), content_type=b"text/plain; version=0.0.4")
        match = _MODEL_PATH.match(path)
        if match is None:
            if self.fault_admin is not None and path == ADMIN_PATH:
                return Response(*self.fault_admin.handle_admin(method, body))
            status = 400 if path.lower().startswith("/v1/") else 404
            return Response(status, error_body(f"Malformed request: {method} {path}"))
        name, version_text, label = match["name"], match["version"], match["label"]
        version = None
        if version_text is not None:
            if not version_text.isdigit() or len(version_text) > 19:
                return Response(400, error_body(f"Failed to convert version: {version_text} to numeric."))
            version = int(version_text)
        verb = match["verb"].lower() if match["verb"] else None
        try:
            if method == "GET" and verb is None:
                if match["metadata"]:
                    return self._metadata(name, version, label)
                return self._status(name, version, label)
            if method == "POST" and verb in _API_NAMES:
                return await self._inference(verb, name, version, label, self.decode_body(headers, body))
        except ServingError as error:
            return _error(error)
        return Response(400, error_body(f"Malformed request: {method} {path}"))

    def _status(self, name: str, version: int | None, label: str | None) -> Response:
        from google.protobuf import json_format

        from poochlab.serving.model_protos import model_status_response

        proto = model_status_response(self.manager, name, version, label)
        text = json_format.MessageToJson(proto, preserving_proto_field_name=True, indent=1,
                                         always_print_fields_with_no_presence=True)
        return Response(200, text.encode())

    def _metadata(self, name: str, version: int | None, label: str | None) -> Response:
        import json

        from google.protobuf import json_format

        state = self.manager.resolve(name, version, label)
        assert state.servable is not None
        # TF Serving prints fields that have no presence even at their defaults ("defaults": {},
        # "name": "" on dims, "unknown_rank": false): clients compare these answers field by field.
        signature_map = json_format.MessageToDict(state.servable.signature_def_map_proto(),
                                                  preserving_proto_field_name=True,
                                                  always_print_fields_with_no_presence=True)
        answer = {
            "model_spec": {"name": name, "signature_name": "", "version": str(state.version)},
            "metadata": {"signature_def": signature_map},
        }
        return Response(200, json.dumps(answer, indent=1).encode())

    async def _inference(self, verb: str, name: str, version: int | None, label: str | None,
                         body: bytes) -> Response:
        started = time.monotonic()
        api = _API_NAMES[verb]
        compute_us = None
        try:
            state = self.manager.resolve(name, version, label)
            self.admission.refuse_if_full()  # before the body is parsed: refusing stays cheap
            request = rest_codec.parse_json(body)
            signature_name = request.get("signature_name", "") if isinstance(request, dict) else ""
            if not isinstance(signature_name, str):
                raise ServingError(Code.INVALID_ARGUMENT, "'signature_name' must be a string")
            assert state.servable is not None
            if verb == "predict":
                signature = state.servable.signature(signature_name)
                inputs, request_format = rest_codec.predict_inputs(request, signature)
            else:
                signature = examples_signature(state.servable, signature_name,
                                               CLASSIFY_METHOD if verb == "classify" else REGRESS_METHOD,
                                               self.check_method_name)
                examples = rest_codec.examples_from_json(request)
                inputs = examples_input(signature, examples)
            deadline = started + self.timeout_s if self.timeout_s else None
            with self.admission.admit():  # --lab_max_queue: shed at once when full
                if self.fault is not None:
                    await self.fault.before_model()
                # Both sessions answer DEADLINE_EXCEEDED (504) for a task whose deadline passes
                # before the model starts on it, so no per-request timer is needed here.
                result = await run_signature(self.manager, state, signature, inputs, deadline,
                                             alone=self.gauge.alone)
            compute_us = result.compute_us
            if verb == "predict":
                answer = rest_codec.predict_response(result.outputs, request_format)
            elif verb == "classify":
                answer = {"results": [[[label_, score] for label_, score in row]
                                      for row in classification_results(result.outputs, len(examples))]}
            else:
                answer = {"results": regression_results(result.outputs, len(examples))}
            response = Response(200, write_json(answer),
                                [(SERVER_TIMING_HEADER.encode(), server_timing(result.queue_us, result.compute_us).encode())])
            status = "OK"
        except ServingError as error:
            response, status = _error(error), error.code.name
        self.metrics.record_request(name, api, "REST", status, (time.monotonic() - started) * 1e6, compute_us)
        return response


def body_too_large_message(limit: int, what: str = "") -> str:
    return (f"Request {what}body exceeds the server's limit of {limit} bytes "
            "(the lab's server: --lab_max_request_bytes)")
