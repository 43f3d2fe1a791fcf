"""A pupdate: one post on Sniffable, the fact every stage of the lab speaks about.

The serving signature takes the raw fields a client knows before the post has any likes
(``hashtags`` as text, ``country``, ``followers``); feature extraction happens inside the
exported graph, so features and model can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MODEL_NAME = "pooch_predictor"
SIGNATURE_NAME = "serving_default"
# Signature inputs: hashtags tf.string [None] ("#corgi #adorable"), country tf.string [None]
# (ISO 3166 alpha-2, any string accepted), followers tf.int64 [None]. Output: likes float32 [None].
INPUT_HASHTAGS = "hashtags"
INPUT_COUNTRY = "country"
INPUT_FOLLOWERS = "followers"
OUTPUT_LIKES = "likes"


@dataclass(frozen=True)
class Pupdate:
    id: str
    user_id: str
    timestamp: int  # seconds since the epoch, UTC
    hashtags: tuple[str, ...]  # each starts with '#'
    country: str
    followers: int
    likes: int | None = None  # known for historical facts, None for a post being predicted

    @property
    def hashtag_text(self) -> str:
        """The signature's ``hashtags`` input: the tags joined by single spaces."""
        return " ".join(self.hashtags)

    def signature_inputs(self) -> dict[str, Any]:
        """This pupdate as one row of the serving signature's inputs."""
        return {INPUT_HASHTAGS: self.hashtag_text, INPUT_COUNTRY: self.country, INPUT_FOLLOWERS: self.followers}


def prediction_inputs(pupdate: Pupdate | Mapping[str, Any]) -> dict[str, Any]:
    """Validate one pupdate to predict and return its signature row.

    Accepts a :class:`Pupdate` or a mapping with ``hashtags`` (text or list of tags),
    ``country`` and ``followers``. Raises ``ValueError`` naming the missing or mistyped field,
    before anything touches the network.
    """
    if isinstance(pupdate, Pupdate):
        return pupdate.signature_inputs()
    if not isinstance(pupdate, Mapping):
        raise ValueError(f"a pupdate must be a Pupdate or a mapping, not {type(pupdate).__name__}")
    for name in (INPUT_HASHTAGS, INPUT_COUNTRY, INPUT_FOLLOWERS):
        if name not in pupdate:
            raise ValueError(f"pupdate field {name!r} is missing")
    hashtags = pupdate[INPUT_HASHTAGS]
    if isinstance(hashtags, (list, tuple)):
        if not all(isinstance(tag, str) for tag in hashtags):
            raise ValueError("pupdate field 'hashtags' must be text or a list of strings")
        hashtags = " ".join(hashtags)
    elif not isinstance(hashtags, str):
        raise ValueError(f"pupdate field 'hashtags' must be text, not {type(hashtags).__name__}")
    country = pupdate[INPUT_COUNTRY]
    if not isinstance(country, str):
        raise ValueError(f"pupdate field 'country' must be a string, not {type(country).__name__}")
    followers = pupdate[INPUT_FOLLOWERS]
    if isinstance(followers, bool) or not isinstance(followers, int):
        raise ValueError(f"pupdate field 'followers' must be an integer, not {type(followers).__name__}")
    if followers < 0:
        raise ValueError(f"pupdate field 'followers' must not be negative (got {followers})")
    return {INPUT_HASHTAGS: hashtags, INPUT_COUNTRY: country, INPUT_FOLLOWERS: followers}
