"""half_plus_two, loaded with TensorFlow alone: the answers TF Serving's test model gives."""

from __future__ import annotations

from pathlib import Path

import pytest


def _example(x: float) -> bytes:
    import tensorflow as tf

    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_signatures_have_tf_serving_method_names(half_plus_two_base: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((half_plus_two_base / "half_plus_two" / "1" / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    assert signatures["serving_default"].method_name == "tensorflow/serving/predict"
    assert list(signatures["serving_default"].inputs) == ["x"]
    assert list(signatures["serving_default"].outputs) == ["y"]
    assert signatures["classify_x_to_y"].method_name == "tensorflow/serving/classify"
    assert list(signatures["classify_x_to_y"].outputs) == ["scores"]
    assert signatures["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    assert list(signatures["regress_x_to_y"].outputs) == ["outputs"]


def test_predict_classify_and_regress_compute_half_plus_two(half_plus_two_base: Path) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(str(half_plus_two_base / "half_plus_two" / "1"))
    y = model.signatures["serving_default"](x=tf.constant([[1.0], [2.0], [5.0]]))["y"]
    assert y.numpy().ravel().tolist() == [2.5, 3.0, 4.5]
    examples = tf.constant([_example(4.0), _example(-2.0)])
    scores = model.signatures["classify_x_to_y"](inputs=examples)["scores"]
    assert scores.numpy().ravel().tolist() == [4.0, 1.0]
    outputs = model.signatures["regress_x_to_y"](inputs=examples)["outputs"]
    assert outputs.numpy().ravel().tolist() == [4.0, 1.0]


def test_existing_version_is_never_overwritten(half_plus_two_base: Path) -> None:
    from poochlab.models.half_plus_two import export_half_plus_two

    saved = half_plus_two_base / "half_plus_two" / "1" / "saved_model.pb"
    before = saved.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        export_half_plus_two(half_plus_two_base, version=1)
    assert saved.read_bytes() == before
