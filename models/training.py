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

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from poochlab.models.baseline import HistoricalBaseline
from poochlab.models.evaluation import Evaluation, evaluate
from poochlab.models.export import ExportError, latest_version_dir, prepare_model_dir, publish_version
from poochlab.models.facts import DEFAULT_DATA_DIR, DEFAULT_ROWS, FactsError, default_facts_path, generate_pupdates, read_facts, write_facts
from poochlab.models.pupdate import MODEL_NAME, SIGNATURE_NAME, Pupdate
from poochlab.models.variants import VARIANTS, VariantSpec, variant_spec

DEFAULT_SEED = 7
HELD_OUT_FRACTION = 0.2
TRAINED_SUBDIR = "trained"
TRAINING_FILE = "training.json"
CHECKPOINT_PREFIX = "checkpoint"
EVALUATION_BATCH = 1024
COST_PUPDATES = 64  # held-out pupdates whose calls are timed for the compute cost
# The output ceiling: twice the most likes ever seen, so no prediction is absurd.
CEILING_FACTOR = 2.0


@dataclass(frozen=True)
class ExportResult:
    variant: str
    version_dir: Path
    evaluation: Evaluation
    model_card: dict[str, Any]
    trained_dir: Path


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


def _columns(pupdates: Sequence[Pupdate]) -> dict[str, np.ndarray]:
    return {
        "hashtags": np.array([p.hashtag_text.encode("utf-8") for p in pupdates], dtype=object),
        "country": np.array([p.country.encode("utf-8") for p in pupdates], dtype=object),
        "followers": np.array([p.followers for p in pupdates], dtype=np.int64),
        "likes": np.array([p.likes or 0 for p in pupdates], dtype=np.float32),
    }


def _make_deterministic(seed: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _fit(net: Any, spec: VariantSpec, training: Sequence[Pupdate], seed: int) -> None:
    """Minimise the Poisson loss ``exp(z) - likes * z`` (z: log expected likes) with Adam."""
    import tensorflow as tf

    from poochlab.models.network import TRAINING_MAX_LOG_LIKES

    wide, deep = net.wide_variables, net.deep_variables
    wide_optimizer = tf.keras.optimizers.Adam(spec.wide_learning_rate)
    deep_optimizer = tf.keras.optimizers.Adam(spec.deep_learning_rate)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.float32),
        ]
    )
    def step(hashtags: tf.Tensor, country: tf.Tensor, followers: tf.Tensor, likes: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            z = tf.minimum(net.log_rate(hashtags, country, followers), TRAINING_MAX_LOG_LIKES)
            loss = tf.reduce_mean(tf.exp(z) - likes * z)
        gradients = tape.gradient(loss, wide + deep)
        wide_optimizer.apply_gradients(zip(gradients[: len(wide)], wide))
        deep_optimizer.apply_gradients(zip(gradients[len(wide) :], deep))
        return loss

    columns = _columns(training)
    rng = np.random.default_rng(seed)
    for _ in range(spec.epochs):
        order = rng.permutation(len(training))
        for start in range(0, len(order), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            step(columns["hashtags"][batch], columns["country"][batch], columns["followers"][batch], columns["likes"][batch])


def _parameter_count(net: Any) -> dict[str, int]:
    def count(variables: Sequence[Any]) -> int:
        return int(sum(int(np.prod(v.shape)) for v in variables))

    return {"total": count(net.wide_variables + net.deep_variables), "deep_tower": count(net.deep_kernels + [net.deep_output])}


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


def _predict(signature: Any, pupdates: Sequence[Pupdate]) -> list[float]:
    import tensorflow as tf

    columns = _columns(pupdates)
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


def _load_other_variant(variant: str, compare_base: Path | None) -> tuple[str, Any, Path] | None:
    """The newest export of the other variant under ``compare_base``, loaded, for a fair cost ratio."""
    import tensorflow as tf

    from poochlab.models.model_card import read_model_card

    if compare_base is None:
        return None
    other_dir = latest_version_dir(compare_base)
    if other_dir is None:
        return None
    try:
        other_variant = read_model_card(other_dir).get("variant")
    except (OSError, ValueError):
        return None
    if other_variant == variant or other_variant not in VARIANTS:
        return None
    # Return the loaded object, not only its signature: the variables live as long as it does.
    return other_variant, tf.saved_model.load(str(other_dir)), other_dir


def _cost_section(
    variant: str, signature: Any, held_out: Sequence[Pupdate], compare_base: Path | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """This export's per-call cost and, when the other variant is exported, the large/small ratio."""
    from poochlab.models import compute_cost

    signatures = {variant: signature}
    other = _load_other_variant(variant, compare_base)
    if other is not None:
        signatures[other[0]] = other[1].signatures[SIGNATURE_NAME]
    measured = compute_cost.measure_p50_micros(signatures, held_out[:COST_PUPDATES])
    cost: dict[str, Any] = dict(measured[variant])
    cost["method"] = (
        "in-process call of the exported serving_default signature (tf.saved_model.load), "
        f"p50 over {compute_cost.ROUNDS} interleaved rounds per batch size"
    )
    ratio: dict[str, Any] | None = None
    if other is not None and {"small", "large"} <= set(measured):
        ratio = {
            f"batch_{size}": round(measured["large"][f"batch_{size}_p50_us"] / measured["small"][f"batch_{size}_p50_us"], 2)
            for size in compute_cost.BATCH_SIZES
        }
        ratio["measured_together_with"] = str(other[2])
        ratio["p50_us"] = measured
    return cost, ratio


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

    from poochlab.models.model_card import BASELINE_FILE, software_versions, write_model_card
    from poochlab.models.network import serving_function
    from poochlab.models.warmup import write_warmup_requests

    outcome: dict[str, Any] = {}

    def build(staging: Path, version: int) -> None:
        tf.saved_model.save(net, str(staging), signatures={SIGNATURE_NAME: serving_function(net)})
        loaded = tf.saved_model.load(str(staging))
        signature = loaded.signatures[SIGNATURE_NAME]
        evaluation = evaluate([float(p.likes or 0) for p in held_out], _predict(signature, held_out), baseline.mean_likes)
        cost, ratio = _cost_section(spec.name, signature, held_out, compare_base)
        card = {
            "model_name": MODEL_NAME,
            "variant": spec.name,
            "version": version,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **training_record,
            "evaluation": evaluation.as_dict(),
            "beats_historical_baseline": evaluation.beats_baseline,
            "compute_cost": cost,
            "cost_ratio_large_to_small": ratio,
            "software": software_versions(),
        }
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

    _make_deterministic(seed)
    net = PoochNet(spec, seed, **constants)
    started = time.perf_counter()
    _fit(net, spec, training, seed)
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
        "parameters": _parameter_count(net),
    }
    trained_dir = _keep_trained(net, record, data_dir, variant)
    record["trained_checkpoint"] = str(trained_dir)
    compare = compare_base if compare_base is not None else _default_compare_base(base_path, variant)
    return _export(net, spec, record, baseline, held_out, base_path, compare, trained_dir)


def _keep_trained(net: Any, record: dict[str, Any], data_dir: Path, variant: str) -> Path:
    import tensorflow as tf

    try:
        folder = _new_numbered_dir(Path(data_dir) / TRAINED_SUBDIR / variant)
    except OSError as error:
        raise FactsError(f"cannot keep the trained model under {data_dir}: {error.strerror}") from error
    tf.train.Checkpoint(net=net).write(str(folder / CHECKPOINT_PREFIX))
    (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def export_trained(trained_dir: Path, base_path: Path, compare_base: Path | None = None) -> ExportResult:
    """Export a kept checkpoint (from ``train_and_export``) again, as the next version under ``base_path``.

    The facts it was trained on must still exist: the export re-evaluates on the same held-out
    pupdates and rebuilds the warm-up records from them.
    """
    trained_dir = Path(trained_dir)
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
    prepare_model_dir(base_path)
    training, held_out = split_facts(read_facts(facts_path))
    baseline = HistoricalBaseline.fit(training)

    import tensorflow as tf

    from poochlab.models.network import PoochNet

    net = PoochNet(spec, seed, **constants)
    try:
        tf.train.Checkpoint(net=net).read(str(trained_dir / CHECKPOINT_PREFIX)).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{trained_dir}: cannot restore the trained weights ({first_line})") from error
    record = {**record, "trained_checkpoint": str(trained_dir)}
    compare = compare_base if compare_base is not None else _default_compare_base(base_path, spec.name)
    return _export(net, spec, record, baseline, held_out, base_path, compare, trained_dir)
