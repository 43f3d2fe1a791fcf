"""The hidden truth behind Sniffable's synthetic pupdates: what really earns a pupdate its likes.

The generator in :mod:`poochlab.models.facts` samples from this world; the model never sees it,
only the facts. The world is fixed (it does not depend on the seed); the seed only decides which
pupdates are drawn from it.

Hashtags
    A vocabulary of ideas (``CONCEPTS``), each written several ways: ``#adorable``,
    ``#adorabull`` and ``#adorbs`` mean the same thing and carry the same effect on likes. Tag
    popularity follows a Zipf law (weight of the tag at rank k is ``1 / k**ZIPF_EXPONENT``) over the
    whole vocabulary, ranked so that every idea's usual spelling comes before all second
    spellings, which come before all third spellings: variants are the long tail, seen rarely, so a
    model that learns each spelling separately cannot learn them all well. A pupdate carries
    ``min(Poisson(TAGS_PER_PUPDATE), MAX_TAGS)`` distinct tags (possibly none).

Posters
    Pupdates come from users; a user has a country (``COUNTRIES``, with a share of users and an
    effect on likes) and a follower count drawn from a log-normal law (median
    ``FOLLOWERS_MEDIAN``, log-sigma ``FOLLOWERS_LOG_SIGMA``).

Likes
    The expected likes of a pupdate are

        mu = exp(BASE_LOG_LIKES + FOLLOWERS_ELASTICITY * log1p(followers) + country effect
                 + sum of the effects of the distinct ideas among its tags
                 - SPAM_PENALTY * max(0, number of tags - SPAM_FREE_TAGS))

    and the observed likes are negative-binomial count noise around mu (dispersion
    ``LIKES_DISPERSION``: variance = mu + mu**2 / LIKES_DISPERSION). The noise is what keeps any
    model from being perfect; the structure is what lets a learned model beat the historical mean.
"""

from __future__ import annotations

import math
from typing import Sequence

# (idea, spellings from most to least common, effect on log expected likes)
CONCEPTS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("adorable", ("#adorable", "#adorabull", "#adorbs"), 0.45),
    ("puppy", ("#puppy", "#pupper", "#puppi"), 0.35),
    ("dog", ("#dog", "#doggo", "#doge"), 0.05),
    ("cute", ("#cute", "#cuteness", "#kute"), 0.25),
    ("corgi", ("#corgi", "#corgilife", "#korgi"), 0.55),
    ("goodboy", ("#goodboy", "#goodboi", "#gudboi"), 0.30),
    ("fluffy", ("#fluffy", "#floof", "#fluff"), 0.40),
    ("walk", ("#walkies", "#walk"), -0.10),
    ("zoomies", ("#zoomies", "#zooms"), 0.50),
    ("sleepy", ("#sleepy", "#nap", "#sleepypup"), 0.15),
    ("treats", ("#treats", "#snacc", "#treat"), 0.10),
    ("bath", ("#bathtime", "#bath"), 0.20),
    ("beach", ("#beach", "#beachdog"), 0.05),
    ("snow", ("#snow", "#snowdog"), 0.25),
    ("birthday", ("#birthday", "#pupday", "#bday"), 0.35),
    ("rescue", ("#rescue", "#adoptdontshop", "#rescuedog"), 0.30),
    ("smol", ("#smol", "#tiny", "#smolboi"), 0.45),
    ("bork", ("#woof", "#bork", "#borkbork"), 0.10),
    ("husky", ("#husky", "#huskies", "#huskie"), 0.35),
    ("labrador", ("#labrador", "#lab", "#labradorretriever"), 0.10),
    ("frenchie", ("#frenchie", "#frenchbulldog", "#frenchy"), 0.30),
    ("pug", ("#pug", "#puglife", "#pugs"), 0.25),
    ("shiba", ("#shiba", "#shibainu", "#shibe"), 0.50),
    ("dachshund", ("#dachshund", "#sausagedog", "#doxie"), 0.30),
    ("golden", ("#goldenretriever", "#golden", "#goldie"), 0.20),
    ("training", ("#training", "#sit", "#obedience"), -0.15),
    ("vet", ("#vet", "#vetvisit"), -0.20),
    ("monday", ("#monday", "#mondays"), -0.25),
    ("throwback", ("#tbt", "#throwback"), 0.00),
    ("ad", ("#ad", "#sponsored", "#promo"), -0.60),
    ("spam", ("#like4like", "#f4f", "#followforfollow"), -0.50),
)

# (ISO 3166 alpha-2 code, share of users, effect on log expected likes)
COUNTRIES: tuple[tuple[str, float, float], ...] = (
    ("US", 0.28, 0.00),
    ("GB", 0.10, 0.10),
    ("DE", 0.08, -0.15),
    ("JP", 0.08, 0.30),
    ("BR", 0.08, 0.20),
    ("IN", 0.07, -0.25),
    ("FR", 0.06, -0.05),
    ("CA", 0.05, 0.05),
    ("AU", 0.05, 0.15),
    ("KR", 0.04, 0.35),
    ("MX", 0.04, 0.10),
    ("NG", 0.03, -0.35),
    ("SE", 0.02, 0.00),
    ("PH", 0.02, 0.25),
)

ZIPF_EXPONENT = 1.1
TAGS_PER_PUPDATE = 2.5
MAX_TAGS = 12
FOLLOWERS_MEDIAN = 300.0
FOLLOWERS_LOG_SIGMA = 1.6
MAX_FOLLOWERS = 20_000_000
BASE_LOG_LIKES = 0.6
FOLLOWERS_ELASTICITY = 0.55
SPAM_FREE_TAGS = 5
SPAM_PENALTY = 0.08
LIKES_DISPERSION = 3.0
PUPDATES_PER_USER = 8
FIRST_TIMESTAMP = 1_451_606_400  # 2016-01-01T00:00:00Z
SECONDS_PER_PUPDATE = 600  # mean gap between consecutive pupdates on the platform


def tags_by_popularity() -> tuple[str, ...]:
    """Every spelling in the vocabulary, most popular first (the Zipf ranking)."""
    ranked: list[str] = []
    longest = max(len(spellings) for _, spellings, _ in CONCEPTS)
    for position in range(longest):
        ranked.extend(spellings[position] for _, spellings, _ in CONCEPTS if position < len(spellings))
    return tuple(ranked)


def zipf_weights(count: int) -> list[float]:
    """Probabilities of ranks 1..count under the Zipf law, summing to 1."""
    raw = [1.0 / rank**ZIPF_EXPONENT for rank in range(1, count + 1)]
    total = sum(raw)
    return [weight / total for weight in raw]


_IDEA_OF_TAG = {tag: idea for idea, spellings, _ in CONCEPTS for tag in spellings}
_EFFECT_OF_IDEA = {idea: effect for idea, _, effect in CONCEPTS}
_EFFECT_OF_COUNTRY = {code: effect for code, _, effect in COUNTRIES}


def expected_likes(hashtags: Sequence[str], country: str, followers: int) -> float:
    """The true mean likes ``mu`` of a pupdate (see the module docstring)."""
    ideas = {_IDEA_OF_TAG[tag] for tag in hashtags if tag in _IDEA_OF_TAG}
    log_mu = (
        BASE_LOG_LIKES
        + FOLLOWERS_ELASTICITY * math.log1p(followers)
        + _EFFECT_OF_COUNTRY.get(country, 0.0)
        + sum(_EFFECT_OF_IDEA[idea] for idea in ideas)
        - SPAM_PENALTY * max(0, len(hashtags) - SPAM_FREE_TAGS)
    )
    return math.exp(log_mu)
