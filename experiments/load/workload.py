"""What the load sends: pupdates from the model's facts, with a repeat rate the experiment states.

Three ways to draw requests (each request holds ``instances`` pupdates, the payload size):

* ``cache_hit_ratio=h``: a request is drawn from a hot set of ``hot_set_size`` requests that
  :meth:`Workload.prefill` puts into the cache before measuring, or is a request never sent
  before (a miss), so a cache experiment states its hit ratio instead of stumbling on it. The
  hits are stratified: every block of ``HIT_BLOCK`` requests holds the planned share of hits
  (carried over between blocks when it is fractional) in a seeded random order, so a stream's
  hit ratio is on plan within a block's worth of requests, not only on average.
* ``zipf_s=s``: requests are ranked and drawn with probability proportional to 1 / rank**s.
* neither: every request is new (no repeats), as in a cache-free serving path.

Never-repeated requests are built from the facts with distinct inputs (duplicates dropped);
once the facts are used up they are reused with one extra hashtag naming the reuse round
(``#round2``), so their inputs (and cache keys) stay unique across all streams of a trial.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from poochlab.models.pupdate import Pupdate


@dataclass(frozen=True)
class Workload:
    """A seeded description of the requests a trial sends."""

    pupdates: tuple[Pupdate, ...]
    instances: int = 1
    cache_hit_ratio: float | None = None
    zipf_s: float | None = None
    hot_set_size: int = 64
    seed: int = 0
    source: str = "generated"

    def __post_init__(self) -> None:
        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(f"workload: {message}")

        require(len(self.pupdates) > 0, "no pupdates to draw from")
        require(self.instances >= 1, f"instances must be at least 1 (got {self.instances})")
        require(self.cache_hit_ratio is None or self.zipf_s is None,
                "give at most one of cache_hit_ratio and zipf_s")
        if self.cache_hit_ratio is not None:
            require(0.0 <= self.cache_hit_ratio <= 1.0,
                    f"cache_hit_ratio must be within [0, 1] (got {self.cache_hit_ratio})")
            require(self.hot_set_size >= 1, f"hot_set_size must be at least 1 (got {self.hot_set_size})")
            require(len(self.pupdates) > self.hot_set_size * self.instances,
                    f"{len(self.pupdates)} pupdates cannot hold a hot set of {self.hot_set_size} "
                    f"requests x {self.instances} instances and leave room for misses")
        if self.zipf_s is not None:
            require(self.zipf_s > 0, f"zipf_s must be positive (got {self.zipf_s})")

    @classmethod
    def generated(cls, count: int = 10_000, seed: int = 0, **options: Any) -> "Workload":
        """Pupdates drawn from the model's ground-truth world (models.facts.generate_pupdates)."""
        from poochlab.models.facts import generate_pupdates

        return cls(tuple(generate_pupdates(count, seed)), seed=seed, source=f"generated:{count}:{seed}", **options)

    @classmethod
    def from_facts(cls, path: Path | str, **options: Any) -> "Workload":
        """Pupdates read from a facts file (models.facts.read_facts)."""
        from poochlab.models.facts import read_facts

        return cls(tuple(read_facts(Path(path))), source=str(path), **options)

    def describe(self) -> dict[str, Any]:
        """The workload's factors, for TrialRecord.load."""
        return {"source": self.source, "pupdates": len(self.pupdates), "instances": self.instances,
                "cache_hit_ratio": self.cache_hit_ratio, "zipf_s": self.zipf_s,
                "hot_set_size": self.hot_set_size if self.cache_hit_ratio is not None else None,
                "seed": self.seed}

    def hot_set(self) -> list[list[Pupdate]]:
        """The requests a hit-ratio workload repeats (empty otherwise)."""
        if self.cache_hit_ratio is None:
            return []
        k = self.instances
        return [list(self.pupdates[i * k:(i + 1) * k]) for i in range(self.hot_set_size)]

    def prefill(self, predictor: Any) -> int:
        """Send every hot-set request once so the cache holds them; returns how many were sent."""
        hot = self.hot_set()
        for request in hot:
            predictor.predict(request)
        return len(hot)

    def stream(self, stream_index: int, stream_count: int) -> Iterator[list[Pupdate]]:
        """Endless requests for one sender; streams of one trial never share a 'new' request."""
        if not 0 <= stream_index < stream_count:
            raise ValueError(f"stream {stream_index} of {stream_count} does not exist")
        rng = random.Random(f"{self.seed}:{stream_index}:{stream_count}")
        fresh = self._fresh(stream_index, stream_count)
        if self.cache_hit_ratio is not None:
            hot = self.hot_set()
            for is_hit in _stratified_hits(self.cache_hit_ratio, rng):
                yield hot[rng.randrange(len(hot))] if is_hit else next(fresh)
        elif self.zipf_s is not None:
            requests = self._zipf_universe()
            cumulative = _cumulative([1.0 / rank ** self.zipf_s for rank in range(1, len(requests) + 1)])
            total = cumulative[-1]
            while True:
                yield requests[bisect.bisect_right(cumulative, rng.random() * total)]
        else:
            yield from fresh

    def _zipf_universe(self) -> list[list[Pupdate]]:
        k = self.instances
        order = list(range(len(self.pupdates) // k or 1))
        random.Random(f"{self.seed}:zipf").shuffle(order)  # which request is popular: seeded
        return [list(self.pupdates[i * k:(i + 1) * k]) or list(self.pupdates[:k]) for i in order]

    def _fresh(self, stream_index: int, stream_count: int) -> Iterator[list[Pupdate]]:
        """Never-repeated requests: slot g = n * stream_count + stream_index of a global sequence."""
        hot = {_inputs(p) for request in self.hot_set() for p in request}
        pool, seen = [], set(hot)
        for pupdate in self.pupdates:
            if _inputs(pupdate) not in seen:
                seen.add(_inputs(pupdate))
                pool.append(pupdate)
        if not pool:
            raise ValueError("workload: no pupdates left for new requests after the hot set")
        n = 0
        while True:
            slot = n * stream_count + stream_index
            yield [_unique(pool, slot * self.instances + i) for i in range(self.instances)]
            n += 1


HIT_BLOCK = 20


def _stratified_hits(ratio: float, rng: random.Random) -> Iterator[bool]:
    """Endless hit/miss decisions: block k holds round((k+1)·B·ratio) − round(k·B·ratio) hits,
    shuffled, so after n decisions the hits are within one block of n·ratio."""
    block = 0
    while True:
        hits = round((block + 1) * HIT_BLOCK * ratio) - round(block * HIT_BLOCK * ratio)
        decisions = [True] * hits + [False] * (HIT_BLOCK - hits)
        rng.shuffle(decisions)
        yield from decisions
        block += 1


def _inputs(pupdate: Pupdate) -> tuple:
    return (pupdate.hashtags, pupdate.country, pupdate.followers)


def _unique(pool: Sequence[Pupdate], position: int) -> Pupdate:
    round_, index = divmod(position, len(pool))
    base = pool[index]
    if round_ == 0:
        return base
    return replace(base, id=f"{base.id}~{round_}", hashtags=(*base.hashtags, f"#round{round_ + 1}"))


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out
