"""Pupdates in, validated signature rows out; and the canonical text of a row for cache keys."""

from __future__ import annotations

import json
from typing import Any, Sequence

from poochlab.clients.prediction import PupdateLike
from poochlab.models.pupdate import prediction_inputs


def validated_rows(pupdates: Sequence[PupdateLike]) -> list[dict[str, Any]]:
    """Each pupdate as one signature row; ``ValueError`` names the pupdate and field at fault."""
    # A list passes at once: the check against typing's Sequence costs microseconds on every call.
    if type(pupdates) is not list and (isinstance(pupdates, (str, bytes)) or not isinstance(pupdates, Sequence)):
        raise ValueError(f"pupdates must be a sequence of pupdates, not {type(pupdates).__name__}")
    if not pupdates:
        raise ValueError("pupdates is empty: nothing to predict")
    rows = []
    for index, pupdate in enumerate(pupdates):
        try:
            rows.append(prediction_inputs(pupdate))
        except ValueError as error:
            raise ValueError(f"pupdates[{index}]: {error}") from None
    return rows


def canonical_row_json(row: dict[str, Any]) -> str:
    """One text per distinct input: sorted keys, no spaces, Unicode kept as is."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
