"""The gRPC predictor: TF Serving's PredictionService with the tensorflow-serving-api protos.

One channel per predictor, created on the first call (so a process that forks after building
the predictor, like Locust's ``--processes``, gets a channel of its own) and re-created if the
process id changes. Every call carries a deadline. Requests are serialised and answers parsed
here, outside gRPC, so encode and decode time are measured apart from the wait.

Under gevent (Locust) either call it only from OS threads (what the lab's load generator does:
``experiments/load/thread_sender.py``), or run ``grpc.experimental.gevent.init_gevent()`` after
``gevent.monkey.patch_all()`` and before the first call builds the channel; otherwise a
blocking call stalls every greenlet of the process. Its locks are OS locks either way (held only
around counters and the channel's creation, never across a wait), so greenlets and OS threads
can share one predictor.

TF Serving's protos are loaded through ``serving_protos`` without importing TensorFlow (which
would cost ~7 s and ~600 MB in every load-generator process), when the predictor is built.
"""

from __future__ import annotations

import os
import time
from typing import Any

from poochlab.clients.config import ClientConfig
from poochlab.clients.os_lock import os_lock
from poochlab.clients.prediction import (
    KIND_BAD_RESPONSE,
    KIND_CONNECTION,
    KIND_TIMEOUT,
    PATH_MODEL,
    CallTiming,
    Prediction,
    PredictionError,
)
from poochlab.clients.server_timing import server_timing_from_metadata
from poochlab.clients.transport import Transport
from poochlab.models.pupdate import INPUT_COUNTRY, INPUT_FOLLOWERS, INPUT_HASHTAGS, OUTPUT_LIKES

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GRPCIO_MAX_RECEIVE_BYTES = 4 * 1024 * 1024  # grpcio's default cap on an answer
MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
# What grpc core says when no connection could be made (as opposed to a server answering
# UNAVAILABLE, e.g. a full batch queue).
_CONNECTION_FAILURE_HINTS = ("failed to connect", "connection refused", "connect failed", "socket closed",
                             "connection reset", "dns resolution failed", "no address")


def status_error(code: str, details: str, what: str) -> PredictionError:
    """A gRPC status (its name, e.g. "NOT_FOUND") as a PredictionError of kind timeout,
    connection or grpc_<CODE>: the one table both gRPC clients share."""
    if code == "DEADLINE_EXCEEDED":
        return PredictionError(KIND_TIMEOUT, f"{what}: {details}")
    if code == "UNAVAILABLE" and any(hint in details.lower() for hint in _CONNECTION_FAILURE_HINTS):
        return PredictionError(KIND_CONNECTION, f"{what}: {details}")
    return PredictionError(f"grpc_{code}", f"{what}: {details}")


def rpc_error(error: Any, what: str) -> PredictionError:
    """A grpc.RpcError as a PredictionError (see :func:`status_error`)."""
    return status_error(error.code().name, error.details() or "", what)


class GrpcPredictor(Transport):
    protocol = "grpc"

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        from poochlab.clients.serving_protos import load

        protos = load()  # TF Serving's own messages, without importing TensorFlow
        self._predict_pb2 = protos.predict_pb2
        self._status_pb2 = protos.get_model_status_pb2
        dtypes = self._predict_pb2.PredictRequest().inputs.get_or_create("x").DESCRIPTOR.fields_by_name["dtype"].enum_type
        self._dt_string = dtypes.values_by_name["DT_STRING"].number
        self._dt_int64 = dtypes.values_by_name["DT_INT64"].number
        self._dt_double = dtypes.values_by_name["DT_DOUBLE"].number
        self._channel: Any = None
        self._channel_pid = 0
        self._predict: Any = None
        self._model_status: Any = None
        # OS locks even in a gevent-patched process: a gevent lock taken from an OS thread
        # would try to block on a hub that thread does not run.
        self._channel_lock = os_lock()

    def _methods(self) -> tuple[Any, Any]:
        if self._channel is None or self._channel_pid != os.getpid():
            with self._channel_lock:
                if self._channel is None or self._channel_pid != os.getpid():
                    self._open_channel()
        return self._predict, self._model_status

    def _open_channel(self) -> None:
        import grpc

        options = []
        if self.config.grpc_max_send_bytes is not None:
            options.append(("grpc.max_send_message_length", self.config.grpc_max_send_bytes))
        if self.config.grpc_max_receive_bytes is not None:
            options.append(("grpc.max_receive_message_length", self.config.grpc_max_receive_bytes))
        channel = grpc.insecure_channel(self.config.grpc_target, options=options)
        # No serializers: requests go out as the bytes we made, answers come back as bytes.
        self._predict = channel.unary_unary(PREDICT_METHOD)
        self._model_status = channel.unary_unary(MODEL_STATUS_METHOD)
        self._channel, self._channel_pid = channel, os.getpid()

    def _model_spec(self, spec: Any, version: int | None) -> None:
        spec.name = self.config.model_name
        spec.signature_name = self.config.signature_name
        if version is not None:
            spec.version.value = version
        elif self.config.version is not None:
            spec.version.value = self.config.version
        elif self.config.version_label is not None:
            spec.version_label = self.config.version_label

    def encode_request(self, rows: list[dict[str, Any]], version: int | None = None) -> bytes:
        """A serialized PredictRequest holding ``rows`` as three rank-1 tensors."""
        request = self._predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, version)
        for name, dtype in ((INPUT_HASHTAGS, self._dt_string), (INPUT_COUNTRY, self._dt_string),
                            (INPUT_FOLLOWERS, self._dt_int64)):
            tensor = request.inputs[name]
            tensor.dtype = dtype
            tensor.tensor_shape.dim.add().size = len(rows)
            if dtype == self._dt_string:
                tensor.string_val.extend(row[name].encode("utf-8") for row in rows)
            else:
                tensor.int64_val.extend(row[name] for row in rows)
        return request.SerializeToString()

    def _encode(self, rows: list[dict[str, Any]], version: int | None) -> bytes:
        return self.encode_request(rows, version)

    def decode_response(self, data: bytes, expected_rows: int) -> tuple[list[float], int | None]:
        """The likes and the version that answered, from a serialized PredictResponse."""
        try:
            response = self._predict_pb2.PredictResponse.FromString(data)
        except Exception as error:  # protobuf's DecodeError; any parse failure means the same
            raise PredictionError(KIND_BAD_RESPONSE, f"PredictResponse does not parse: {error}") from None
        if OUTPUT_LIKES not in response.outputs:
            raise PredictionError(KIND_BAD_RESPONSE,
                                  f"answer has no {OUTPUT_LIKES!r} output (has {sorted(response.outputs)})")
        tensor = response.outputs[OUTPUT_LIKES]
        values: list[float] = list(tensor.float_val) or list(tensor.double_val)
        if not values and tensor.tensor_content:
            import numpy as np

            dtype = np.float64 if tensor.dtype == self._dt_double else np.float32
            values = np.frombuffer(tensor.tensor_content, dtype=dtype).astype(float).tolist()
        if len(values) != expected_rows:
            raise PredictionError(KIND_BAD_RESPONSE, f"expected {expected_rows} values of {OUTPUT_LIKES!r}, "
                                  f"got {len(values)}")
        version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return values, version

    def _call(self, rows: list[dict[str, Any]], timeout_s: float, version: int | None) -> Prediction:
        started = time.monotonic()
        body = self.request_bytes(rows, version)
        encoded = time.monotonic()
        data, trailers = self._predict_call(body, timeout_s)
        answered = time.monotonic()
        likes, answered_version = self.decode_response(data, len(rows))
        queue_us, compute_us = server_timing_from_metadata(trailers)
        decoded = time.monotonic()
        timing = CallTiming(encode_us=(encoded - started) * 1e6, wait_us=(answered - encoded) * 1e6,
                            decode_us=(decoded - answered) * 1e6, server_queue_us=queue_us,
                            server_compute_us=compute_us, sent_at=encoded, answered_at=answered)
        return Prediction(likes=likes, paths=(PATH_MODEL,) * len(rows), timing=timing,
                          model_version=answered_version)

    def _predict_call(self, body: bytes, timeout_s: float) -> tuple[bytes, Any]:
        """Send a serialized PredictRequest; the answer's bytes and its trailing metadata."""
        import grpc

        predict, _ = self._methods()
        try:
            data, call = predict.with_call(body, timeout=timeout_s)
        except grpc.RpcError as error:
            raise rpc_error(error, "Predict") from None
        return data, call.trailing_metadata()

    def _status_call(self, body: bytes, timeout_s: float) -> bytes:
        """Send a serialized GetModelStatusRequest; the answer's bytes."""
        import grpc

        _, model_status = self._methods()
        try:
            return model_status(body, timeout=timeout_s)
        except grpc.RpcError as error:
            raise rpc_error(error, "GetModelStatus") from None

    def model_versions(self, timeout_s: float | None = None) -> list[int]:
        """ModelService.GetModelStatus: the AVAILABLE versions (of the label, if one is set)."""
        request = self._status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec, None)
        request.model_spec.ClearField("signature_name")
        data = self._status_call(request.SerializeToString(), timeout_s or self.config.timeout_s)
        response = self._status_pb2.GetModelStatusResponse.FromString(data)
        available = self._status_pb2.ModelVersionStatus.AVAILABLE
        return sorted(status.version for status in response.model_version_status if status.state == available)

    def close(self) -> None:
        with self._channel_lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None


class LeanGrpcPredictor(GrpcPredictor):
    """The same calls on the lab's own HTTP/2 wire (``clients/grpc_wire.py``) instead of grpcio.

    grpcio's client machinery costs 0.3-0.4 ms of CPU per call on our machines, enough to make a
    load generator the bottleneck; this client sends the same bytes (TF Serving's protos, encoded
    and parsed by the methods it inherits) with a fraction of that. One call at a time per
    connection: a call takes an idle connection from the pool (or opens one) and gives it back
    when its answer is in, so concurrent callers (threads or greenlets) each hold their own.
    Errors map to the same kinds as grpcio's (:func:`status_error`).
    """

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        from poochlab.clients import grpc_wire

        self._wire = grpc_wire
        self._address = grpc_wire.address(config.grpc_target)
        self._predict_headers = grpc_wire.request_headers(PREDICT_METHOD, config.grpc_target)
        self._status_headers = grpc_wire.request_headers(MODEL_STATUS_METHOD, config.grpc_target)
        self._idle: list[Any] = []
        self._pool_pid = os.getpid()

    def _unary(self, headers: bytes, body: bytes, timeout_s: float,
               what: str) -> tuple[bytes, list[tuple[str, str]]]:
        """One call within ``timeout_s`` (connecting included, as grpcio's deadline does).

        A pooled connection the server closed while it sat idle (a restart, an idle timeout)
        fails before any of the answer arrives; the call then goes once more on a fresh
        connection, as grpcio reconnects a broken channel instead of failing the next call."""
        wire = self._wire
        deadline = time.monotonic() + timeout_s
        with self._channel_lock:
            if self._pool_pid != os.getpid():  # a forked child never shares its parent's sockets
                self._idle, self._pool_pid = [], os.getpid()
            connection = self._idle.pop() if self._idle else None
        reused = connection is not None
        while True:
            try:
                if connection is None:
                    connection = wire.Connection(*self._address, timeout_s)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise wire.WireError("timeout", "deadline passed while connecting")
                return connection.unary(headers, body, left)
            except wire.GrpcStatusError as error:
                raise status_error(error.code, error.details, what) from None
            except wire.WireError as error:
                # reused: the connection came from the pool, so it is set (only a new one can fail to be made)
                if reused and error.kind == "connection" and connection is not None and not connection.answer_started:
                    reused, connection = False, None  # once, on a fresh connection
                    continue
                raise PredictionError(KIND_TIMEOUT if error.kind == "timeout" else KIND_CONNECTION,
                                      f"{what}: {error}") from None
            except BaseException:
                if connection is not None:  # a half-written call: this connection is done
                    connection.close()
                raise
            finally:
                if connection is not None:
                    if connection.usable:
                        with self._channel_lock:
                            self._idle.append(connection)
                    else:
                        connection.close()

    def _predict_call(self, body: bytes, timeout_s: float) -> tuple[bytes, Any]:
        limit = self.config.grpc_max_send_bytes
        if limit is not None and len(body) > limit:  # grpcio's own check, before sending
            raise status_error("RESOURCE_EXHAUSTED", f"Sent message larger than max ({len(body)} vs. {limit})",
                               "Predict")
        data, trailers = self._unary(self._predict_headers, body, timeout_s, "Predict")
        limit = self.config.grpc_max_receive_bytes or GRPCIO_MAX_RECEIVE_BYTES
        if len(data) > limit:
            raise status_error("RESOURCE_EXHAUSTED", f"Received message larger than max ({len(data)} vs. {limit})",
                               "Predict")
        return data, trailers

    def _status_call(self, body: bytes, timeout_s: float) -> bytes:
        return self._unary(self._status_headers, body, timeout_s, "GetModelStatus")[0]

    def close(self) -> None:
        with self._channel_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
