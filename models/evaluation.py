"""Held-out evaluation: the learned model against the historical baseline.

Prints the case study's "Historical vs Machine-Learned" table. Run it on an export to see the
table recorded in its model card::

    python -m poochlab.models.evaluation models/servables/small
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence


@dataclass(frozen=True)
class Scores:
    mae: float
    rmse: float
    mean_predicted_likes: float


@dataclass(frozen=True)
class Evaluation:
    rows: int  # held-out pupdates
    mean_actual_likes: float
    baseline: Scores  # the historical mean likes, predicted for every pupdate
    model: Scores

    @property
    def beats_baseline(self) -> bool:
        return self.model.mae < self.baseline.mae and self.model.rmse < self.baseline.rmse

    def as_dict(self) -> dict[str, Any]:
        return {
            "held_out_rows": self.rows,
            "mean_actual_likes": self.mean_actual_likes,
            "historical_baseline": asdict(self.baseline),
            "machine_learned": asdict(self.model),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        return cls(
            rows=int(data["held_out_rows"]),
            mean_actual_likes=float(data["mean_actual_likes"]),
            baseline=Scores(**data["historical_baseline"]),
            model=Scores(**data["machine_learned"]),
        )


def score(actual: Sequence[float], predicted: Sequence[float]) -> Scores:
    """MAE, RMSE and mean prediction of ``predicted`` against ``actual`` (same length, not empty)."""
    if len(actual) != len(predicted) or not actual:
        raise ValueError(f"need equally long, non-empty sequences (got {len(actual)} and {len(predicted)})")
    errors = [p - a for a, p in zip(actual, predicted)]
    return Scores(
        mae=sum(abs(e) for e in errors) / len(errors),
        rmse=math.sqrt(sum(e * e for e in errors) / len(errors)),
        mean_predicted_likes=sum(predicted) / len(predicted),
    )


def evaluate(actual: Sequence[float], predicted: Sequence[float], historical_mean: float) -> Evaluation:
    """Compare ``predicted`` and the constant ``historical_mean`` on the same held-out likes."""
    return Evaluation(
        rows=len(actual),
        mean_actual_likes=sum(actual) / len(actual),
        baseline=score(actual, [historical_mean] * len(actual)),
        model=score(actual, predicted),
    )


def format_table(evaluation: Evaluation, title: str = "Historical vs Machine-Learned") -> str:
    """The comparison as a fixed-width text table."""
    rows = [
        ("MAE (likes)", evaluation.baseline.mae, evaluation.model.mae),
        ("RMSE (likes)", evaluation.baseline.rmse, evaluation.model.rmse),
        ("Mean predicted likes", evaluation.baseline.mean_predicted_likes, evaluation.model.mean_predicted_likes),
    ]
    lines = [
        title,
        f"held-out pupdates: {evaluation.rows}, mean actual likes: {evaluation.mean_actual_likes:.1f}",
        f"{'':<22}{'Historical':>12}{'Machine-Learned':>17}",
    ]
    lines += [f"{name:<22}{historical:>12.1f}{learned:>17.1f}" for name, historical, learned in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of the newest export under each base path given (or of a version folder)."""
    from poochlab.models.export import latest_version_dir
    from poochlab.models.model_card import MODEL_CARD_FILE

    paths = list(sys.argv[1:] if argv is None else argv) or ["models/servables/small", "models/servables/large"]
    status = 0
    for name in paths:
        path = Path(name)
        version_dir = path if (path / "saved_model.pb").exists() else latest_version_dir(path)
        card_path = version_dir / MODEL_CARD_FILE if version_dir else None
        if card_path is None or not card_path.exists():
            print(f"{path}: no exported version with a model card", file=sys.stderr)
            status = 2
            continue
        card = json.loads(card_path.read_text(encoding="utf-8"))
        title = f"Historical vs Machine-Learned ({card['variant']}, {version_dir})"
        print(format_table(Evaluation.from_dict(card["evaluation"]), title=title))
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
