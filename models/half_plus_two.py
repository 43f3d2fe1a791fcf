"""TF Serving's classic test model, ``half_plus_two``: ``y = 0.5 * x + 2``.

The same shape as TensorFlow Serving's ``saved_model_half_plus_two_cpu`` test data, so the
lab's server can be checked against a model whose every answer is known in advance:

* ``serving_default`` (``tensorflow/serving/predict``): ``{"x": float32 [None, 1]}`` ->
  ``{"y": float32 [None, 1]}``;
* ``classify_x_to_y`` (``tensorflow/serving/classify``): ``inputs`` holds serialized
  ``tf.Example`` protos with a float feature ``x``; the output ``scores`` is ``y``;
* ``regress_x_to_y`` (``tensorflow/serving/regress``): same input, output ``outputs`` is ``y``.

It is built in a TF1-style graph with ``SavedModelBuilder`` because TF2's
``tf.saved_model.save`` writes every signature with the predict method name only; the
classify and regress method names are what TF Serving checks before running those APIs.
"""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "half_plus_two"


def export_half_plus_two(base_path: Path, version: int = 1) -> Path:
    """Write ``<base_path>/half_plus_two/<version>/`` and return that version folder.

    Refuses to overwrite an existing version folder (``FileExistsError``), like every export
    in the lab: a servable version, once written, never changes.
    """
    import tensorflow as tf

    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, not {version!r}")
    version_dir = Path(base_path) / MODEL_NAME / str(version)
    if version_dir.exists():
        raise FileExistsError(f"{version_dir} already exists; versions are never overwritten")
    version_dir.parent.mkdir(parents=True, exist_ok=True)

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        a = v1.Variable(0.5, name="a", dtype=tf.float32)
        b = v1.Variable(2.0, name="b", dtype=tf.float32)

        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")

        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        y_from_example = tf.add(tf.multiply(a, parsed["x"]), b, name="y_from_example")

        signatures = {
            "serving_default": v1.saved_model.predict_signature_def(inputs={"x": x}, outputs={"y": y}),
            "classify_x_to_y": v1.saved_model.classification_signature_def(
                examples=serialized, classes=None, scores=y_from_example
            ),
            "regress_x_to_y": v1.saved_model.regression_signature_def(
                examples=serialized, predictions=y_from_example
            ),
        }
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(version_dir))
            builder.add_meta_graph_and_variables(
                session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures
            )
            builder.save()
    return version_dir
