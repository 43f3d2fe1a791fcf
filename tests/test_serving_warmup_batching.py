"""Warm-up runs through the batching queue, as in TF Serving: its limits fail the load.

TF Serving replays each warm-up record through the servable's batching session; a record with
more rows than max_batch_size is refused there and the version does not load (at start-up the
server exits). In-process manager with real TensorFlow (half_plus_two) and the real scheduler.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from poochlab.serving.status import Code


class BatchSizes:
    """Observer recording the rows of every batch the scheduler runs."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []

    def on_batch(self, queue_name, input_batch_size, processed_batch_size, padding_size) -> None:
        self.batches.append((queue_name, input_batch_size))

    def on_task_queued(self, queue_name, queue_us) -> None:
        pass


def predict_log(rows: int) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "half_plus_two"
    values = np.arange(rows, dtype=np.float32).reshape(rows, 1)
    log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))
    return log.SerializeToString()


def version_with_warmup(tmp_path: Path, half_plus_two_base: Path, rows: list[int]) -> Path:
    import tensorflow as tf

    base = tmp_path / "half_plus_two"
    shutil.copytree(half_plus_two_base / "half_plus_two" / "1", base / "1")
    path = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for count in rows:
            writer.write(predict_log(count))
    return base


@pytest.fixture()
def batching_manager():
    """A manager whose sessions are queues of a scheduler capped at 2 rows per batch."""
    from poochlab.serving.batching import BatchingParameters, SharedBatchScheduler
    from poochlab.serving.model_manager import ModelManager

    observer = BatchSizes()
    scheduler = SharedBatchScheduler(BatchingParameters(max_batch_size=2, num_batch_threads=1), observer)
    manager = ModelManager(lambda compute, name: scheduler.add_queue(compute, name))
    yield manager, observer
    manager.close()
    scheduler.close()


def load(manager, base: Path):
    from poochlab.serving.model_config import parse_model_config_text

    manager.apply_config(parse_model_config_text(
        f"model_config_list {{ config {{ name: 'half_plus_two' base_path: '{base}' "
        "model_platform: 'tensorflow' } }", "test.config"))
    (status,) = manager.status("half_plus_two")
    return status


def test_warmup_records_run_as_batches_of_the_queue_requests_then_use(tmp_path, half_plus_two_base,
                                                                        batching_manager):
    from poochlab.serving.inference_session import InferenceTask

    manager, observer = batching_manager
    status = load(manager, version_with_warmup(tmp_path, half_plus_two_base, [1, 2]))
    assert status.state == "AVAILABLE"
    assert observer.batches == [("half_plus_two/1/serving_default", 1), ("half_plus_two/1/serving_default", 2)]
    # A request after the load goes to the queue the warm-up filled, not a new one.
    session = manager.session(manager.resolve("half_plus_two"), "serving_default")
    answer = session.submit(InferenceTask({"x": np.array([[4.0]], np.float32)})).result()
    assert answer.outputs["y"].tolist() == [[4.0]]  # half_plus_two: 4 / 2 + 2
    assert observer.batches[-1] == ("half_plus_two/1/serving_default", 1)


def test_a_warmup_record_larger_than_max_batch_size_fails_the_load(tmp_path, half_plus_two_base,
                                                                     batching_manager):
    manager, observer = batching_manager
    status = load(manager, version_with_warmup(tmp_path, half_plus_two_base, [1, 3]))
    assert status.state == "END"
    assert status.error.code == Code.INVALID_ARGUMENT
    # TF Serving's batching message, with the record that failed.
    assert status.error.message == ("warmup record 1: Task size 3 is larger than maximum input "
                                    "batch size 2")
    assert observer.batches == [("half_plus_two/1/serving_default", 1)]


def test_the_server_exits_at_start_up_when_a_warmup_record_cannot_run(tmp_path: Path, half_plus_two_base: Path) -> None:
    import subprocess
    import sys

    base = version_with_warmup(tmp_path, half_plus_two_base, rows=[1, 3])
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 2 }\nbatch_timeout_micros { value: 0 }\n")
    done = subprocess.run(
        [sys.executable, "-m", "poochlab.serving", "--port=0", "--model_name=half_plus_two",
         f"--model_base_path={base}", "--enable_batching=true", f"--batching_parameters_file={batching}"],
        capture_output=True, text=True, timeout=300)
    # As TF Serving: the failed warm-up fails the load, and a failed first load stops the server.
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Failed to load the models at start-up: half_plus_two: version 1:" in done.stderr
    assert "larger than maximum input batch size 2" in done.stderr
