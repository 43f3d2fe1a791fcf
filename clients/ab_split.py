"""An online A/B test in the client: each request goes to one arm, drawn with a seeded RNG.

Arms are named predictors with a share of the traffic: the ``stable`` and ``canary`` versions
of one served model (pinned by version label in the request's model_spec), and optionally the
``baseline`` arm, the historical-average model the supervised fallback uses. The answer says
which arm gave it (``Prediction.arm``); a failed request's ``PredictionError`` carries ``arm``
too, so latency, errors and quality can be counted per arm.
"""

from __future__ import annotations

import random
import threading
import time
from bisect import bisect_right
from typing import Any, Sequence

from poochlab.clients.pupdate_rows import validated_rows
from poochlab.clients.prediction import PATH_FALLBACK, CallTiming, Prediction, PredictionError, PupdateLike
from poochlab.clients.supervised_fallback import baseline_likes
from poochlab.models.baseline import HistoricalBaseline
from poochlab.models.pupdate import INPUT_HASHTAGS

ARM_STABLE, ARM_CANARY, ARM_BASELINE = "stable", "canary", "baseline"


class BaselinePredictor:
    """The historical model as an arm: mean likes per known hashtag, else the overall mean."""

    def __init__(self, baseline: HistoricalBaseline) -> None:
        self.baseline = baseline

    def predict(self, pupdates: Sequence[PupdateLike], *, timeout_s: float | None = None) -> Prediction:
        started = time.perf_counter()
        rows = validated_rows(pupdates)
        likes = [baseline_likes(self.baseline, row[INPUT_HASHTAGS]) for row in rows]
        timing = CallTiming(encode_us=0.0, wait_us=0.0, decode_us=(time.perf_counter() - started) * 1e6)
        return Prediction(likes=likes, paths=(PATH_FALLBACK,) * len(rows), timing=timing)

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class ABSplit:
    """Sends each request to one of ``arms`` ({name: (share, predictor)}, shares summing to 1)."""

    def __init__(self, arms: dict[str, tuple[float, Any]], seed: int) -> None:
        if not arms:
            raise ValueError("an A/B split needs at least one arm")
        shares = [share for share, _ in arms.values()]
        if any(share < 0 for share in shares) or abs(sum(shares) - 1.0) > 1e-9:
            raise ValueError(f"A/B arm shares must be non-negative and sum to 1 (got {dict(zip(arms, shares))})")
        self.names = list(arms)
        self.predictors = [predictor for _, predictor in arms.values()]
        self._bounds: list[float] = []
        total = 0.0
        for share in shares[:-1]:
            total += share
            self._bounds.append(total)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # the gRPC thread sender draws from several threads
        self.sent = dict.fromkeys(self.names, 0)

    def choose(self) -> int:
        """The next request's arm (an index into ``names``)."""
        with self._lock:
            index = bisect_right(self._bounds, self._rng.random())
            self.sent[self.names[index]] += 1
        return index

    def predict(self, pupdates: Sequence[PupdateLike], *, timeout_s: float | None = None) -> Prediction:
        index = self.choose()
        name = self.names[index]
        try:
            answer = self.predictors[index].predict(pupdates, timeout_s=timeout_s)
        except PredictionError as error:
            error.arm = name  # type: ignore[attr-defined]
            raise
        return Prediction(likes=answer.likes, paths=answer.paths, timing=answer.timing,
                          model_version=answer.model_version, fallback_reason=answer.fallback_reason, arm=name)

    def stats(self) -> dict[str, Any]:
        """Every arm's counters added up (cache counts included), and requests per arm."""
        merged: dict[str, Any] = {}
        for predictor in self.predictors:
            for key, value in predictor.stats().items():
                if isinstance(value, dict):
                    into = merged.setdefault(key, {})
                    for sub, count in value.items():
                        into[sub] = into.get(sub, 0) + count if isinstance(count, (int, float)) else count
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    merged[key] = merged.get(key, 0) + value
                else:
                    merged.setdefault(key, value)
        with self._lock:
            merged["ab_sent"] = dict(self.sent)
        return merged

    def close(self) -> None:
        for predictor in self.predictors:
            predictor.close()
