"""The Pooch Predictor network: a wide-and-deep Poisson regression over raw pupdate fields.

``log_rate`` is the log of the expected likes:

* wide part: a learned weight per hashtag bucket (summed over the pupdate's tags), per country
  bucket, and for centred ``log1p(followers)``; this mirrors how likes really arise and learns in
  a few hundred steps;
* deep part: mean hashtag embedding, country embedding, followers and tag count through a dense
  ReLU tower (its width is the variant's knob); its output layer starts at zero, so training
  starts from the wide model and the tower adds what the wide part cannot express.

``likes`` is ``exp`` of the log-rate clipped to ``[MIN_LOG_LIKES, log_likes_ceiling]`` with any
NaN replaced by the bias: finite and non-negative for every input by construction (the bug that
sank Pooch Predictor 1.1 cannot come back through unseen countries or tags).
"""

from __future__ import annotations

import math

import tensorflow as tf

from poochlab.models import features
from poochlab.models.pupdate import INPUT_COUNTRY, INPUT_FOLLOWERS, INPUT_HASHTAGS, OUTPUT_LIKES
from poochlab.models.variants import VariantSpec

MIN_LOG_LIKES = -10.0
# Training clamps the log-rate here so exp() cannot overflow in the loss on an early bad step.
TRAINING_MAX_LOG_LIKES = 20.0


def _normal(shape: list[int], stddev: float, seed: int, stream: int) -> tf.Tensor:
    return tf.random.stateless_normal(shape, seed=[seed, stream], stddev=stddev)


class PoochNet(tf.Module):
    def __init__(
        self,
        spec: VariantSpec,
        seed: int,
        mean_likes: float = 1.0,
        followers_center: float = 0.0,
        log_likes_ceiling: float = 16.0,
    ) -> None:
        super().__init__(name="pooch_net")
        # Fitted constants live in non-trainable variables so checkpoints and SavedModels carry them.
        self.followers_center = tf.Variable(followers_center, trainable=False, name="followers_center")
        self.log_likes_ceiling = tf.Variable(log_likes_ceiling, trainable=False, name="log_likes_ceiling")

        self.bias = tf.Variable(math.log(max(mean_likes, 1e-3)), name="bias")
        self.hashtag_wide = tf.Variable(tf.zeros([features.HASHTAG_BUCKETS]), name="hashtag_wide")
        self.country_wide = tf.Variable(tf.zeros([features.COUNTRY_BUCKETS]), name="country_wide")
        self.followers_wide = tf.Variable(0.0, name="followers_wide")

        self.hashtag_embedding = tf.Variable(
            _normal([features.HASHTAG_BUCKETS, spec.hashtag_dim], 0.05, seed, 1), name="hashtag_embedding"
        )
        self.country_embedding = tf.Variable(
            _normal([features.COUNTRY_BUCKETS, spec.country_dim], 0.05, seed, 2), name="country_embedding"
        )
        width = spec.hashtag_dim + spec.country_dim + 2
        self.deep_kernels = []
        self.deep_biases = []
        for layer, hidden in enumerate(spec.deep_widths):
            he = math.sqrt(2.0 / width)
            self.deep_kernels.append(tf.Variable(_normal([width, hidden], he, seed, 10 + layer), name=f"deep_{layer}"))
            self.deep_biases.append(tf.Variable(tf.zeros([hidden]), name=f"deep_bias_{layer}"))
            width = hidden
        self.deep_output = tf.Variable(tf.zeros([width, 1]), name="deep_output")

    @property
    def wide_variables(self) -> list[tf.Variable]:
        return [self.bias, self.hashtag_wide, self.country_wide, self.followers_wide]

    @property
    def deep_variables(self) -> list[tf.Variable]:
        return [self.hashtag_embedding, self.country_embedding, *self.deep_kernels, *self.deep_biases, self.deep_output]

    def log_rate(self, hashtags: tf.Tensor, country: tf.Tensor, followers: tf.Tensor) -> tf.Tensor:
        """Unclipped log expected likes, ``[batch]`` float32."""
        tag_ids = features.hashtag_ids(hashtags)
        country_id = features.country_ids(country)
        log_f = features.log_followers(followers) - self.followers_center

        tag_count = tf.cast(tag_ids.row_lengths(), tf.float32)
        wide = (
            self.bias
            + tf.reduce_sum(tf.ragged.map_flat_values(tf.gather, self.hashtag_wide, tag_ids), axis=1)
            + tf.gather(self.country_wide, country_id)
            + self.followers_wide * log_f
        )

        tag_vectors = tf.ragged.map_flat_values(tf.gather, self.hashtag_embedding, tag_ids)
        # Sum over tags divided by max(count, 1): a ragged mean would be NaN for a tagless pupdate.
        mean_tag = tf.reduce_sum(tag_vectors, axis=1) / tf.maximum(tag_count, 1.0)[:, tf.newaxis]
        hidden = tf.concat(
            [mean_tag, tf.gather(self.country_embedding, country_id), log_f[:, tf.newaxis],
             tf.math.log1p(tag_count)[:, tf.newaxis]],
            axis=1,
        )
        for kernel, bias in zip(self.deep_kernels, self.deep_biases):
            hidden = tf.nn.relu(tf.matmul(hidden, kernel) + bias)
        deep = tf.squeeze(tf.matmul(hidden, self.deep_output), axis=1)
        return wide + deep

    def likes(self, hashtags: tf.Tensor, country: tf.Tensor, followers: tf.Tensor) -> tf.Tensor:
        """Expected likes, ``[batch]`` float32, finite and >= 0 for any input."""
        z = self.log_rate(hashtags, country, followers)
        z = tf.where(tf.math.is_nan(z), tf.fill(tf.shape(z), self.bias), z)
        return tf.exp(tf.clip_by_value(z, MIN_LOG_LIKES, self.log_likes_ceiling))


def serving_function(net: PoochNet) -> tf.types.experimental.ConcreteFunction:
    """The ``serving_default`` signature: raw fields in, ``{"likes": [batch]}`` out."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=INPUT_HASHTAGS),
            tf.TensorSpec([None], tf.string, name=INPUT_COUNTRY),
            tf.TensorSpec([None], tf.int64, name=INPUT_FOLLOWERS),
        ]
    )
    def serve(hashtags: tf.Tensor, country: tf.Tensor, followers: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_LIKES: net.likes(hashtags, country, followers)}

    return serve.get_concrete_function()
