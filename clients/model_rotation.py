"""Requests spread over several models served at once (the course brief's "models running at once").

Each model keeps its own composed predictor (transport, cache keys, supervisor), so nothing of one
model's answers can leak into another's; requests take the models in turn.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from poochlab.clients.prediction import Prediction, Predictor, PupdateLike


# Numbers that describe one model's state, not counts: summing them means nothing (versions
# 3 and 4 are not 7), and one may still be None while another is known.
PER_MODEL_KEYS = frozenset({"resolved_version"})


class ModelRotation:
    """A predictor over ``predictors`` (one per model), round robin per request."""

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        if not predictors:
            raise ValueError("ModelRotation needs at least one predictor")
        self.predictors = list(predictors)
        self._turn = itertools.count()  # next() on a count is atomic under the GIL

    def predict(self, pupdates: Sequence[PupdateLike], *, timeout_s: float | None = None) -> Prediction:
        predictor = self.predictors[next(self._turn) % len(self.predictors)]
        return predictor.predict(pupdates, timeout_s=timeout_s)

    def stats(self) -> dict[str, Any]:
        """Counters summed over the models (numbers and per-kind tables); a model's state
        (:data:`PER_MODEL_KEYS`) as a list, one entry per model in order; the rest from the first."""
        merged: dict[str, Any] = {}
        for stats in (p.stats() for p in self.predictors):
            for key, value in stats.items():
                if key in PER_MODEL_KEYS:
                    merged.setdefault(key, []).append(value)
                elif key not in merged:
                    merged[key] = dict(value) if isinstance(value, dict) else value
                elif isinstance(value, bool) or not isinstance(value, (int, float, dict)):
                    continue
                elif isinstance(value, dict):
                    for kind, count in value.items():
                        if isinstance(count, (int, float)) and not isinstance(count, bool):
                            merged[key][kind] = merged[key].get(kind, 0) + count
                else:
                    merged[key] += value
        return merged

    def close(self) -> None:
        for predictor in self.predictors:
            predictor.close()
