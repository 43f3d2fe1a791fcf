"""In-process compute cost of a serving signature: what one call costs without any server.

A p50 over many calls, in microseconds; when two models are compared, their calls are
interleaved round by round in one process so that machine noise hits both alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping, Sequence

from poochlab.models.pupdate import Pupdate

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
