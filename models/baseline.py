"""The historical baseline: what Sniffable predicted before machine learning (averages of past likes).

Written next to every export as ``assets.extra/historical_baseline.json``; the supervised
fallback in ``clients/`` answers from it when the model cannot, and the evaluation compares the
model against its overall mean.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from poochlab.models.pupdate import Pupdate


@dataclass(frozen=True)
class HistoricalBaseline:
    mean_likes: float
    per_hashtag: dict[str, float] = field(default_factory=dict)  # tag as written -> mean likes of pupdates carrying it
    max_plausible_likes: float = 0.0  # the most likes any historical pupdate received

    @classmethod
    def fit(cls, pupdates: Iterable[Pupdate]) -> "HistoricalBaseline":
        """Averages over pupdates whose likes are known; ``ValueError`` if there are none."""
        likes_by_tag: dict[str, list[int]] = defaultdict(list)
        likes = []
        for pupdate in pupdates:
            if pupdate.likes is None:
                continue
            likes.append(pupdate.likes)
            for tag in set(pupdate.hashtags):
                likes_by_tag[tag].append(pupdate.likes)
        if not likes:
            raise ValueError("a historical baseline needs at least one pupdate with known likes")
        return cls(
            mean_likes=sum(likes) / len(likes),
            per_hashtag={tag: sum(values) / len(values) for tag, values in sorted(likes_by_tag.items())},
            max_plausible_likes=float(max(likes)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean_likes": self.mean_likes,
            "per_hashtag": dict(sorted(self.per_hashtag.items())),
            "max_plausible_likes": self.max_plausible_likes,
        }

    def write(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def read(cls, path: Path | str) -> "HistoricalBaseline":
        """Read ``historical_baseline.json``; ``ValueError`` naming the file and the bad key."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read the historical baseline: {error}") from error
        for key in ("mean_likes", "per_hashtag", "max_plausible_likes"):
            if key not in data:
                raise ValueError(f"{path}: key {key!r} is missing")
        if not isinstance(data["per_hashtag"], dict):
            raise ValueError(f"{path}: key 'per_hashtag' must be an object of tag -> mean likes")
        return cls(
            mean_likes=float(data["mean_likes"]),
            per_hashtag={str(tag): float(value) for tag, value in data["per_hashtag"].items()},
            max_plausible_likes=float(data["max_plausible_likes"]),
        )
