"""Train a Pooch Predictor variant on the facts, evaluate it, and export it the TF Serving way.

``train_and_export`` is the whole path: facts (generated once per seed and size, then only
read), a time-ordered split (the newest 20% of pupdates are held out, as a deployed model only
ever predicts the future), Poisson training, a kept checkpoint under ``<data>/trained/<variant>/
<k>/`` and a new SavedModel version. ``export_trained`` exports a kept checkpoint again as the
next version (what ``poochlab export`` does), re-evaluated the same way.

The same seed gives the same facts, the same weights and the same metrics: initial weights come
from stateless random ops, batches from a seeded NumPy generator, and TensorFlow runs with op
determinism enabled.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from poochlab.models.baseline import HistoricalBaseline
from poochlab.models.checkpoints import keep_trained, read_training_record, restore_weights
from poochlab.models.evaluation import Evaluation, evaluate
from poochlab.models.export import prepare_model_dir, publish_version
from poochlab.models.facts import DEFAULT_DATA_DIR, DEFAULT_ROWS, read_facts
from poochlab.models.fitting import fit, make_deterministic, parameter_count
from poochlab.models.pupdate import SIGNATURE_NAME, Pupdate
from poochlab.models.training_data import as_columns, load_or_generate_facts, split_facts
from poochlab.models.variants import VariantSpec, variant_spec

DEFAULT_SEED = 7
EVALUATION_BATCH = 1024
# The output ceiling: twice the most likes ever seen, so no prediction is absurd.
CEILING_FACTOR = 2.0


@dataclass(frozen=True)
class ExportResult:
    variant: str
    version_dir: Path
    evaluation: Evaluation
    model_card: dict[str, Any]
    trained_dir: Path


def _predict(signature: Any, pupdates: Sequence[Pupdate]) -> list[float]:
    import tensorflow as tf

    columns = as_columns(pupdates)
    predictions: list[float] = []
    for start in range(0, len(pupdates), EVALUATION_BATCH):
        part = slice(start, start + EVALUATION_BATCH)
        outputs = signature(
            hashtags=tf.constant(columns["hashtags"][part], tf.string),
            country=tf.constant(columns["country"][part], tf.string),
            followers=tf.constant(columns["followers"][part], tf.int64),
        )
        predictions.extend(float(x) for x in outputs["likes"].numpy())
    return predictions


def _export(
    net: Any,
    spec: VariantSpec,
    training_record: dict[str, Any],
    baseline: HistoricalBaseline,
    held_out: Sequence[Pupdate],
    base_path: Path,
    compare_base: Path | None,
    trained_dir: Path,
) -> ExportResult:
    import tensorflow as tf

    from poochlab.models.compute_cost import cost_section
    from poochlab.models.model_card import BASELINE_FILE, model_card, write_model_card
    from poochlab.models.network import serving_function
    from poochlab.models.warmup_records import write_warmup_requests

    outcome: dict[str, Any] = {}

    def build(staging: Path, version: int) -> None:
        tf.saved_model.save(net, str(staging), signatures={SIGNATURE_NAME: serving_function(net)})
        loaded = tf.saved_model.load(str(staging))
        signature = loaded.signatures[SIGNATURE_NAME]
        evaluation = evaluate([float(p.likes or 0) for p in held_out], _predict(signature, held_out), baseline.mean_likes)
        cost, ratio = cost_section(spec.name, signature, held_out, compare_base)
        card = model_card(spec.name, version, training_record, evaluation, cost, ratio)
        write_warmup_requests(staging, held_out)
        baseline.write(staging / BASELINE_FILE)
        write_model_card(staging, card)
        outcome.update(evaluation=evaluation, card=card)

    version_dir = publish_version(base_path, build)
    return ExportResult(spec.name, version_dir, outcome["evaluation"], outcome["card"], trained_dir)


def _default_compare_base(base_path: Path, variant: str) -> Path:
    other = "large" if variant == "small" else "small"
    return Path(base_path).parent / other


def _net_constants(baseline: HistoricalBaseline, training: Sequence[Pupdate]) -> dict[str, float]:
    return {
        "mean_likes": baseline.mean_likes,
        "followers_center": float(np.mean(np.log1p([p.followers for p in training]))),
        "log_likes_ceiling": math.log(CEILING_FACTOR * max(baseline.max_plausible_likes, 1.0)),
    }


def train_and_export(
    variant: str,
    base_path: Path,
    seed: int = DEFAULT_SEED,
    rows: int = DEFAULT_ROWS,
    data_dir: Path = DEFAULT_DATA_DIR,
    compare_base: Path | None = None,
    facts_path: Path | None = None,
) -> ExportResult:
    """Train ``variant`` on the facts for ``seed``/``rows`` and export it as the next version under ``base_path``.

    ``compare_base`` (default: the sibling folder named after the other variant) is where an
    export of the other variant is looked for, to record a cost ratio measured in one process.
    Raises ``ValueError`` for an unknown variant, :class:`ExportError` / :class:`FactsError`
    for paths that cannot be used; the base path is checked before any training.
    ``facts_path`` trains on an existing dataset instead (``rows`` is then its size).
    """
    spec = variant_spec(variant)
    if rows < 10:
        raise ValueError(f"--rows must be at least 10 (got {rows})")
    if seed < 0:
        raise ValueError(f"--seed must be a non-negative integer (got {seed})")
    prepare_model_dir(base_path)  # fail fast, before importing TensorFlow and training

    from poochlab.models.network import PoochNet
    if facts_path is None:
        facts_path, pupdates = load_or_generate_facts(seed, rows, data_dir)
    else:
        pupdates = read_facts(facts_path)
        rows = len(pupdates)
    training, held_out = split_facts(pupdates)
    baseline = HistoricalBaseline.fit(training)
    constants = _net_constants(baseline, training)

    make_deterministic(seed)
    net = PoochNet(spec, seed, **constants)
    started = time.perf_counter()
    fit(net, spec, training, seed)
    training_seconds = round(time.perf_counter() - started, 2)

    record = {
        "seed": seed,
        "rows": rows,
        "facts": str(facts_path),
        "training_rows": len(training),
        "held_out_rows": len(held_out),
        "training_seconds": training_seconds,
        "spec": spec.as_dict(),
        "constants": constants,
        "parameters": parameter_count(net),
    }
    trained_dir = keep_trained(net, record, data_dir, variant)
    record["trained_checkpoint"] = str(trained_dir)
    compare = compare_base if compare_base is not None else _default_compare_base(base_path, variant)
    return _export(net, spec, record, baseline, held_out, base_path, compare, trained_dir)


def export_trained(trained_dir: Path, base_path: Path, compare_base: Path | None = None) -> ExportResult:
    """Export a kept checkpoint (from ``train_and_export``) again, as the next version under ``base_path``.

    The facts it was trained on must still exist: the export re-evaluates on the same held-out
    pupdates and rebuilds the warm-up records from them.
    """
    trained_dir = Path(trained_dir)
    kept = read_training_record(trained_dir)
    spec = kept.spec
    prepare_model_dir(base_path)
    training, held_out = split_facts(read_facts(kept.facts_path))
    baseline = HistoricalBaseline.fit(training)

    from poochlab.models.network import PoochNet

    net = PoochNet(spec, kept.seed, **kept.constants)
    restore_weights(net, trained_dir)
    record = {**kept.record, "trained_checkpoint": str(trained_dir)}
    compare = compare_base if compare_base is not None else _default_compare_base(base_path, spec.name)
    return _export(net, spec, record, baseline, held_out, base_path, compare, trained_dir)
