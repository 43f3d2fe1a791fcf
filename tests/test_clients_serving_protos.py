"""Load generators build TF Serving messages without paying for TensorFlow."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from poochlab.clients import serving_protos
protos = serving_protos.load()
request = protos.predict_pb2.PredictRequest()
request.model_spec.name = "pooch_predictor"
request.inputs["country"].dtype = 7
request.inputs["country"].string_val.append(b"US")
data = request.SerializeToString()
print("tensorflow" in sys.modules)
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
again = predict_pb2.PredictRequest.FromString(data)
print(again.inputs["country"].string_val[0].decode(), predict_pb2 is protos.predict_pb2, tf.constant(2).numpy())
"""


def test_protos_load_without_tensorflow_and_tensorflow_still_imports_after() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split()
    assert lines[0] == "False"  # TensorFlow itself was not imported for the messages
    assert lines[1:] == ["US", "True", "2"]
