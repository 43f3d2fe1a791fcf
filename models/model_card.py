"""The model card: ``assets.extra/model_card.json``, what a version is and how well and fast it ran."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from poochlab.models.evaluation import Evaluation
from poochlab.models.pupdate import MODEL_NAME

MODEL_CARD_FILE = "assets.extra/model_card.json"
BASELINE_FILE = "assets.extra/historical_baseline.json"


def software_versions() -> dict[str, str]:
    import numpy
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "numpy": numpy.__version__}


def model_card(
    variant: str,
    version: int,
    training_record: dict[str, Any],
    evaluation: Evaluation,
    cost: dict[str, Any],
    ratio: dict[str, Any] | None,
) -> dict[str, Any]:
    """The card of a new version: what was trained on what, how well it did and what a call costs."""
    return {
        "model_name": MODEL_NAME,
        "variant": variant,
        "version": version,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **training_record,
        "evaluation": evaluation.as_dict(),
        "beats_historical_baseline": evaluation.beats_baseline,
        "compute_cost": cost,
        "cost_ratio_large_to_small": ratio,
        "software": software_versions(),
    }


def write_model_card(version_dir: Path, card: dict[str, Any]) -> Path:
    path = Path(version_dir) / MODEL_CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_model_card(version_dir: Path) -> dict[str, Any]:
    return json.loads((Path(version_dir) / MODEL_CARD_FILE).read_text(encoding="utf-8"))
