"""Kept checkpoints: ``<data>/trained/<variant>/<k>/``, the trained weights and the training record.

A new training run never overwrites an earlier one; an export can be made again from any of
them (``poochlab export``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poochlab.models.export import ExportError
from poochlab.models.facts import FactsError
from poochlab.models.variants import VariantSpec

TRAINED_SUBDIR = "trained"
TRAINING_FILE = "training.json"
CHECKPOINT_PREFIX = "checkpoint"


@dataclass(frozen=True)
class KeptTraining:
    """A kept checkpoint's training record, and what rebuilding its net takes."""

    record: dict[str, Any]
    spec: VariantSpec
    seed: int
    constants: dict[str, float]
    facts_path: Path


def _new_numbered_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(entry.name) for entry in parent.iterdir() if entry.name.isdigit()]
    number = max(taken, default=0) + 1
    while True:
        candidate = parent / str(number)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


def latest_trained_dir(data_dir: Path, variant: str) -> Path | None:
    """The newest kept checkpoint folder of ``variant`` under ``<data_dir>/trained/``, or ``None``."""
    parent = Path(data_dir) / TRAINED_SUBDIR / variant
    if not parent.is_dir():
        return None
    numbered = [int(e.name) for e in parent.iterdir() if e.name.isdigit() and (e / TRAINING_FILE).is_file()]
    return parent / str(max(numbered)) if numbered else None


def keep_trained(net: Any, record: dict[str, Any], data_dir: Path, variant: str) -> Path:
    import tensorflow as tf

    try:
        folder = _new_numbered_dir(Path(data_dir) / TRAINED_SUBDIR / variant)
    except OSError as error:
        raise FactsError(f"cannot keep the trained model under {data_dir}: {error.strerror}") from error
    tf.train.Checkpoint(net=net).write(str(folder / CHECKPOINT_PREFIX))
    (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def read_training_record(trained_dir: Path) -> KeptTraining:
    """The record of a kept checkpoint; ``ExportError`` when the folder holds none or it is unreadable."""
    record_path = trained_dir / TRAINING_FILE
    if not record_path.is_file():
        raise ExportError(f"{trained_dir} is not a trained model folder (no {TRAINING_FILE})")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        spec_fields = dict(record["spec"])
        spec_fields["deep_widths"] = tuple(spec_fields["deep_widths"])
        spec = VariantSpec(**spec_fields)
        seed, constants, facts_path = int(record["seed"]), record["constants"], Path(record["facts"])
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{record_path}: unreadable training record ({error})") from error
    return KeptTraining(record, spec, seed, constants, facts_path)


def restore_weights(net: Any, trained_dir: Path) -> None:
    """Read the kept weights into ``net`` (built with the record's spec, seed and constants)."""
    import tensorflow as tf

    try:
        tf.train.Checkpoint(net=net).read(str(trained_dir / CHECKPOINT_PREFIX)).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{trained_dir}: cannot restore the trained weights ({first_line})") from error
