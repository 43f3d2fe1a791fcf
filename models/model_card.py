"""The model card: ``assets.extra/model_card.json``, what a version is and how well and fast it ran."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

MODEL_CARD_FILE = "assets.extra/model_card.json"
BASELINE_FILE = "assets.extra/historical_baseline.json"


def software_versions() -> dict[str, str]:
    import numpy
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "numpy": numpy.__version__}


def write_model_card(version_dir: Path, card: dict[str, Any]) -> Path:
    path = Path(version_dir) / MODEL_CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_model_card(version_dir: Path) -> dict[str, Any]:
    return json.loads((Path(version_dir) / MODEL_CARD_FILE).read_text(encoding="utf-8"))
