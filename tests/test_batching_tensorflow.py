"""The batching scheduler running real TensorFlow functions, and the shipped server configs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from poochlab.serving.batching import BatchingParameters, SharedBatchScheduler
from poochlab.serving.inference_session import InferenceTask
from poochlab.serving.status import Code, ServingError

pytestmark = pytest.mark.timeout(120)

CONFIGS = Path(__file__).resolve().parents[1] / "serving_configs"


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def test_tf_function_batches_return_each_request_its_rows(tf):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32),
                                  tf.TensorSpec([None], tf.string)])
    def model(x, tag):
        return {"doubled": x * 2.0, "tagged": tf.strings.join([tag, "!"])}

    batch_sizes: list[int] = []

    def compute(inputs):
        batch_sizes.append(len(inputs["x"]))
        outputs = model(tf.constant(inputs["x"]), tf.constant(inputs["tag"]))
        return {name: value.numpy() for name, value in outputs.items()}

    scheduler = SharedBatchScheduler(BatchingParameters(
        max_batch_size=16, batch_timeout_micros=2000, num_batch_threads=2,
        allowed_batch_sizes=(4, 8, 16)))
    queue = scheduler.add_queue(compute, "double/1/serving_default")
    failures: list[str] = []

    def client(client_id: int) -> None:
        for request in range(15):
            count = 1 + request % 3
            x = np.arange(count * 3, dtype=np.float32).reshape(count, 3) + 100 * client_id + request
            tags = np.array([f"c{client_id}r{request}n{row}".encode() for row in range(count)],
                            dtype=object)
            result = queue.submit(InferenceTask({"x": x, "tag": tags})).result(60)
            if not np.array_equal(result.outputs["doubled"], x * 2):
                failures.append(f"client {client_id} request {request}: doubled")
            if list(result.outputs["tagged"]) != [tag + b"!" for tag in tags]:
                failures.append(f"client {client_id} request {request}: {result.outputs['tagged']}")

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        scheduler.close()
    assert failures == []
    assert set(batch_sizes) <= {4, 8, 16}  # every batch the model saw was padded to an allowed size


def test_tensorflow_errors_keep_their_status_code(tf):
    def compute(inputs):
        tf.debugging.assert_non_negative(tf.constant(inputs["x"]), message="x must be >= 0")
        return {"y": inputs["x"]}

    scheduler = SharedBatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1))
    try:
        queue = scheduler.add_queue(compute, "m")
        error = queue.submit(InferenceTask({"x": np.array([-1.0])})).exception(60)
    finally:
        scheduler.close()
    assert isinstance(error, ServingError)
    assert error.code is Code.INVALID_ARGUMENT
    assert "x must be >= 0" in error.message


@pytest.mark.parametrize("name", ["models.config", "models_small.config"])
def test_shipped_model_configs_parse_with_tf_servings_own_proto(tf, name: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((CONFIGS / name).read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "pooch_predictor"
    assert model.base_path.startswith("models/servables/")
    assert model.model_version_policy.latest.num_versions == 1
