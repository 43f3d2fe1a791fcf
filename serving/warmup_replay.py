"""Warm-up: replay ``assets.extra/tf_serving_warmup_requests`` when a version loads.

The file is a TFRecord of serialized ``PredictionLog`` protos (TF Serving's format). More
than 1000 records or a record that does not parse fails the load of that version only; a
missing file is fine.

As in TF Serving (``saved_model_warmup_util``), each record runs through the session requests
will use: with batching on, the version's batching queue, whose limits apply. A record with more
rows than ``max_batch_size`` is refused there ("Task size ... is larger than maximum input batch
size") and the version fails to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from poochlab.serving.servable import Servable
from poochlab.serving.inference_session import InferenceSession, InferenceTask
from poochlab.serving.status import Code, ServingError

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000


def read_warmup_logs(version_dir: Path) -> list[Any]:
    """The PredictionLogs of a version's warm-up file ([] when there is none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(version_dir) / WARMUP_FILE
    if not path.exists():
        return []
    logs = []
    try:
        for index, record in enumerate(tf.compat.v1.io.tf_record_iterator(str(path))):
            if index >= MAX_RECORDS:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                )
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception:  # protobuf's DecodeError and friends
                raise ServingError(Code.DATA_LOSS, f"Failed to parse warmup record {index} of {path}") from None
            logs.append(log)
    except tf.errors.OpError as error:
        raise ServingError(Code.DATA_LOSS, f"Corrupt warmup file {path}: {error.message}") from None
    return logs


def replay(servable: Servable, logs: list[Any], iterations: int,
           examples_tensor: Callable[[Any], list[bytes]],
           session_for: Callable[[str], InferenceSession]) -> None:
    """Run each logged request ``iterations`` times through ``session_for(signature name)``;
    any failure fails the version's load, with the record's index in the message."""
    from poochlab.serving.tensor_proto import proto_to_array

    for index, log in enumerate(logs):
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            signature = servable.signature(request.model_spec.signature_name)
            inputs = {}
            for name, proto in request.inputs.items():
                if name not in signature.inputs:
                    raise ServingError(Code.INVALID_ARGUMENT, f"warmup record {index}: unknown input {name!r}")
                inputs[name] = proto_to_array(proto, signature.inputs[name])
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log, kind).request
            signature = servable.signature(request.model_spec.signature_name)
            (input_name,) = signature.inputs
            inputs = {input_name: np.array(examples_tensor(request.input), dtype=object)}
        else:
            raise ServingError(Code.UNIMPLEMENTED, f"warmup record {index}: unsupported log type {kind!r}")
        session = session_for(signature.name)
        for _ in range(iterations):
            try:
                session.submit(InferenceTask(inputs)).result()
            except ServingError as error:
                raise ServingError(error.code, f"warmup record {index}: {error.message}") from None
