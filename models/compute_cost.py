"""In-process compute cost of a serving signature: what one call costs without any server.

A p50 over many calls, in microseconds; when two models are compared, their calls are
interleaved round by round in one process so that machine noise hits both alike. An export
records its own cost in its model card (``cost_section``), and the large/small ratio when the
other variant is already exported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from poochlab.models.export import latest_version_dir
from poochlab.models.pupdate import SIGNATURE_NAME, Pupdate
from poochlab.models.variants import VARIANTS

BATCH_SIZES = (1, 32)
WARMUP_CALLS = 10
ROUNDS = 6
CALLS_PER_ROUND = {1: 40, 32: 8}


def signature_batch(pupdates: Sequence[Pupdate], size: int) -> dict[str, Any]:
    """The first ``size`` pupdates (cycled) as one batch of signature inputs (TF tensors)."""
    import tensorflow as tf

    rows = [pupdates[i % len(pupdates)].signature_inputs() for i in range(size)]
    return {
        "hashtags": tf.constant([row["hashtags"] for row in rows], tf.string),
        "country": tf.constant([row["country"] for row in rows], tf.string),
        "followers": tf.constant([row["followers"] for row in rows], tf.int64),
    }


def _time_calls(function: Callable[..., Any], inputs: Mapping[str, Any], calls: int) -> list[float]:
    durations = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        outputs = function(**inputs)
        for tensor in outputs.values():
            tensor.numpy()  # wait for the result, as a server must before answering
        durations.append((time.perf_counter_ns() - start) / 1000.0)
    return durations


def measure_p50_micros(
    signatures: Mapping[str, Callable[..., Any]], pupdates: Sequence[Pupdate]
) -> dict[str, dict[str, float]]:
    """``{name: {"batch_1_p50_us": ..., "batch_32_p50_us": ...}}`` for each signature, interleaved."""
    results: dict[str, dict[str, float]] = {name: {} for name in signatures}
    for size in BATCH_SIZES:
        inputs = signature_batch(pupdates, size)
        samples: dict[str, list[float]] = {name: [] for name in signatures}
        for function in signatures.values():
            _time_calls(function, inputs, WARMUP_CALLS)
        for _ in range(ROUNDS):
            for name, function in signatures.items():
                samples[name] += _time_calls(function, inputs, CALLS_PER_ROUND[size])
        for name in signatures:
            results[name][f"batch_{size}_p50_us"] = round(statistics.median(samples[name]), 1)
    return results


# The model card's cost section: this export's cost and, beside the other variant's export, the ratio.
COST_PUPDATES = 64  # held-out pupdates whose calls are timed for the compute cost


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


def cost_section(
    variant: str, signature: Any, held_out: Sequence[Pupdate], compare_base: Path | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """This export's per-call cost and, when the other variant is exported, the large/small ratio."""
    signatures = {variant: signature}
    other = _load_other_variant(variant, compare_base)
    if other is not None:
        signatures[other[0]] = other[1].signatures[SIGNATURE_NAME]
    measured = measure_p50_micros(signatures, held_out[:COST_PUPDATES])
    cost: dict[str, Any] = dict(measured[variant])
    cost["method"] = (
        "in-process call of the exported serving_default signature (tf.saved_model.load), "
        f"p50 over {ROUNDS} interleaved rounds per batch size"
    )
    ratio: dict[str, Any] | None = None
    if other is not None and {"small", "large"} <= set(measured):
        ratio = {
            f"batch_{size}": round(measured["large"][f"batch_{size}_p50_us"] / measured["small"][f"batch_{size}_p50_us"], 2)
            for size in BATCH_SIZES
        }
        ratio["measured_together_with"] = str(other[2])
        ratio["p50_us"] = measured
    return cost, ratio
