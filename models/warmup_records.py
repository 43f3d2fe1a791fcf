"""TF Serving warm-up records: ``assets.extra/tf_serving_warmup_requests``.

A TFRecord file of serialized ``PredictionLog`` messages, each holding a ``PredictRequest`` for
``serving_default`` built from representative pupdates. TF Serving (and the lab's server)
replays them when it loads the version, so the first real requests do not pay for graph
warm-up. TF Serving refuses a version with more than 1000 records.

TF Serving replays warm-up through the batching session when batching is on, and a record with
more rows than ``max_batch_size`` fails there, which fails the load: the server exits. So no
record is larger than ``MAX_WARMUP_BATCH``, the smallest ``max_batch_size`` the lab ships
(a test checks every shipped batching set against it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from poochlab.models.pupdate import (
    INPUT_COUNTRY,
    INPUT_FOLLOWERS,
    INPUT_HASHTAGS,
    MODEL_NAME,
    SIGNATURE_NAME,
    Pupdate,
)

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
MAX_WARMUP_BATCH = 32
# Mostly single pupdates (the common online request), plus the batch sizes batching produces,
# up to MAX_WARMUP_BATCH.
BATCH_SIZES = (1,) * 48 + (2, 4, 8, 16, 32)


def predict_request(pupdates: Sequence[Pupdate], model_name: str = MODEL_NAME) -> PredictRequest:
    """One ``PredictRequest`` for ``serving_default`` carrying ``pupdates`` as a batch."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE_NAME
    rows = [pupdate.signature_inputs() for pupdate in pupdates]
    request.inputs[INPUT_HASHTAGS].CopyFrom(
        tf.make_tensor_proto([row[INPUT_HASHTAGS].encode("utf-8") for row in rows], dtype=tf.string)
    )
    request.inputs[INPUT_COUNTRY].CopyFrom(
        tf.make_tensor_proto([row[INPUT_COUNTRY].encode("utf-8") for row in rows], dtype=tf.string)
    )
    request.inputs[INPUT_FOLLOWERS].CopyFrom(tf.make_tensor_proto([row[INPUT_FOLLOWERS] for row in rows], dtype=tf.int64))
    return request


def write_warmup_requests(version_dir: Path, pupdates: Sequence[Pupdate]) -> Path:
    """Write the warm-up file into ``version_dir`` from ``pupdates`` (taken in order, cycled)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    if not pupdates:
        raise ValueError("warm-up records need at least one representative pupdate")
    if len(BATCH_SIZES) > MAX_WARMUP_RECORDS:
        raise ValueError(f"TF Serving accepts at most {MAX_WARMUP_RECORDS} warm-up records")
    path = Path(version_dir) / WARMUP_DIR / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    cursor = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in BATCH_SIZES:
            batch = [pupdates[(cursor + i) % len(pupdates)] for i in range(size)]
            cursor += size
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(predict_request(batch))
            writer.write(log.SerializeToString())
    return path


def record_rows(version_dir: Path) -> list[int]:
    """The rows (dimension 0) of each warm-up record of an export ([] when it has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(version_dir) / WARMUP_DIR / WARMUP_FILE
    if not path.exists():
        return []
    rows = []
    for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        shapes = [tensor.tensor_shape.dim for tensor in log.predict_log.request.inputs.values()]
        rows.append(max((int(dims[0].size) for dims in shapes if dims), default=1))
    return rows


def oversized_warmup(version_dir: Path, limit: int = MAX_WARMUP_BATCH) -> str | None:
    """Why an export's warm-up would fail a batching server capped at ``limit`` rows (None: fine)."""
    largest = max(record_rows(version_dir), default=0)
    if largest > limit:
        return (f"{Path(version_dir) / WARMUP_DIR / WARMUP_FILE} holds a {largest}-row warm-up request, "
                f"more than max_batch_size {limit}: TF Serving with batching would fail to load it")
    return None
