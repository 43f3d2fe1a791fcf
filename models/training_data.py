"""The facts as training data: read or generated once per seed and size, split by time, as columns."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from poochlab.models.facts import DEFAULT_DATA_DIR, default_facts_path, generate_pupdates, read_facts, write_facts
from poochlab.models.pupdate import Pupdate

HELD_OUT_FRACTION = 0.2


def load_or_generate_facts(seed: int, rows: int, data_dir: Path = DEFAULT_DATA_DIR) -> tuple[Path, list[Pupdate]]:
    """The dataset for ``seed`` and ``rows``: read when it exists, otherwise generated and written once."""
    path = default_facts_path(seed, rows, data_dir)
    if path.exists():
        return path, read_facts(path)
    pupdates = generate_pupdates(rows, seed)
    write_facts(path, pupdates, seed=seed)
    return path, pupdates


def split_facts(pupdates: Sequence[Pupdate]) -> tuple[list[Pupdate], list[Pupdate]]:
    """``(training, held_out)``: the newest ``HELD_OUT_FRACTION`` of pupdates by timestamp are held out."""
    ordered = sorted((p for p in pupdates if p.likes is not None), key=lambda p: (p.timestamp, p.id))
    held_out = max(1, int(len(ordered) * HELD_OUT_FRACTION))
    if len(ordered) - held_out < 1:
        raise ValueError(f"need at least 2 pupdates with known likes to train and evaluate (got {len(ordered)})")
    return ordered[:-held_out], ordered[-held_out:]


def as_columns(pupdates: Sequence[Pupdate]) -> dict[str, np.ndarray]:
    return {
        "hashtags": np.array([p.hashtag_text.encode("utf-8") for p in pupdates], dtype=object),
        "country": np.array([p.country.encode("utf-8") for p in pupdates], dtype=object),
        "followers": np.array([p.followers for p in pupdates], dtype=np.int64),
        "likes": np.array([p.likes or 0 for p in pupdates], dtype=np.float32),
    }
