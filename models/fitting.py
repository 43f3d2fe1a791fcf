"""The fit loop: Poisson loss, one Adam per part of the net, seeded batches, deterministic ops."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from poochlab.models.pupdate import Pupdate
from poochlab.models.training_data import as_columns
from poochlab.models.variants import VariantSpec


def make_deterministic(seed: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit(net: Any, spec: VariantSpec, training: Sequence[Pupdate], seed: int) -> None:
    """Minimise the Poisson loss ``exp(z) - likes * z`` (z: log expected likes) with Adam."""
    import tensorflow as tf

    from poochlab.models.network import TRAINING_MAX_LOG_LIKES

    wide, deep = net.wide_variables, net.deep_variables
    wide_optimizer = tf.keras.optimizers.Adam(spec.wide_learning_rate)
    deep_optimizer = tf.keras.optimizers.Adam(spec.deep_learning_rate)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.float32),
        ]
    )
    def step(hashtags: tf.Tensor, country: tf.Tensor, followers: tf.Tensor, likes: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            z = tf.minimum(net.log_rate(hashtags, country, followers), TRAINING_MAX_LOG_LIKES)
            loss = tf.reduce_mean(tf.exp(z) - likes * z)
        gradients = tape.gradient(loss, wide + deep)
        wide_optimizer.apply_gradients(zip(gradients[: len(wide)], wide))
        deep_optimizer.apply_gradients(zip(gradients[len(wide) :], deep))
        return loss

    columns = as_columns(training)
    rng = np.random.default_rng(seed)
    for _ in range(spec.epochs):
        order = rng.permutation(len(training))
        for start in range(0, len(order), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            step(columns["hashtags"][batch], columns["country"][batch], columns["followers"][batch], columns["likes"][batch])


def parameter_count(net: Any) -> dict[str, int]:
    def count(variables: Sequence[Any]) -> int:
        return int(sum(int(np.prod(v.shape)) for v in variables))

    return {"total": count(net.wide_variables + net.deep_variables), "deep_tower": count(net.deep_kernels + [net.deep_output])}
