"""Feature extraction inside the graph: raw pupdate fields in, hashed ids and numbers out.

These functions run inside the exported serving signature, so a server or client can only ever
hand the model raw text and counts; it cannot feed features the model was not trained on.
Every step is total: any bytes (invalid UTF-8 included), any number of tags, any country and
any int64 follower count produce valid features.
"""

from __future__ import annotations

import tensorflow as tf

# The hashing trick: ~85 known spellings spread over 16k buckets leaves room for unseen tags
# with few collisions; an unseen tag lands in a bucket whose weight is (near) zero.
HASHTAG_BUCKETS = 1 << 14
COUNTRY_BUCKETS = 1 << 10


def hashtag_ids(hashtags: tf.Tensor) -> tf.RaggedTensor:
    """``[batch]`` space-separated tag text -> ``[batch, (tags)]`` bucket ids.

    Lower-casing is ASCII-only on purpose: it works on any bytes, while UTF-8 case folding
    fails on invalid UTF-8, which a serving signature must survive.
    """
    tokens = tf.strings.split(tf.strings.lower(hashtags))
    return tf.ragged.map_flat_values(tf.strings.to_hash_bucket_fast, tokens, HASHTAG_BUCKETS)


def country_ids(country: tf.Tensor) -> tf.Tensor:
    """``[batch]`` country codes -> ``[batch]`` bucket ids (case and surrounding spaces ignored)."""
    return tf.strings.to_hash_bucket_fast(tf.strings.upper(tf.strings.strip(country)), COUNTRY_BUCKETS)


def log_followers(followers: tf.Tensor) -> tf.Tensor:
    """``[batch]`` int64 follower counts -> ``log1p`` as float32; negative counts count as zero."""
    return tf.math.log1p(tf.cast(tf.maximum(followers, tf.constant(0, tf.int64)), tf.float32))
