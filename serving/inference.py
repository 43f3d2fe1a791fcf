"""What REST and gRPC share once a request is decoded: run a signature, shape its answer."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Mapping

import numpy as np

from poochlab.serving.direct_session import DirectSession
from poochlab.serving.inputs import validate
from poochlab.serving.model_manager import ModelManager, VersionState
from poochlab.serving.servable import CLASSIFY_METHOD, Signature
from poochlab.serving.session import InferenceResult, InferenceTask
from poochlab.serving.status import Code, ServingError


async def run_signature(manager: ModelManager, state: VersionState, signature: Signature,
                        inputs: Mapping[str, np.ndarray], deadline: float | None,
                        alone: bool = False) -> InferenceResult:
    """Validate ``inputs`` and run them through the version's session for ``signature``.

    ``alone``: no other request is being answered on this loop, so a quick model without
    batching runs right here instead of on a model thread (see ``direct_session``).
    """
    validate(signature, inputs)
    session = manager.session(state, signature.name)
    task = InferenceTask(inputs=inputs, deadline=deadline)
    if isinstance(session, DirectSession):
        if alone and session.runs_quickly:
            return session.run(task)
        return await session.submit_to_loop(task, asyncio.get_running_loop())
    return await asyncio.wrap_future(session.submit(task))


def run_signature_blocking(manager: ModelManager, state: VersionState, signature: Signature,
                           inputs: Mapping[str, np.ndarray], deadline: float | None) -> InferenceResult:
    """:func:`run_signature` for a worker thread that may block (the gRPC server's threads).

    Without batching the model runs right here, on the caller's thread: no hand-off to a pool.
    """
    validate(signature, inputs)
    session = manager.session(state, signature.name)
    task = InferenceTask(inputs=inputs, deadline=deadline)
    if isinstance(session, DirectSession):
        return session.run(task)
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return session.submit(task).result(timeout)
    except FutureTimeout:
        raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded") from None


def check_method(signature: Signature, method: str) -> None:
    """Classify/Regress need a signature of that kind (FAILED_PRECONDITION otherwise)."""
    if signature.method_name != method:
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}",
        )


def examples_input(signature: Signature, examples: list[bytes]) -> dict[str, np.ndarray]:
    """The string input of a classify/regress signature, fed with serialized examples."""
    if len(signature.inputs) != 1:
        raise ServingError(Code.INVALID_ARGUMENT, f"Expected one input Tensor in signature {signature.name!r}")
    (name,) = signature.inputs
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return {name: array}


def classification_results(outputs: dict[str, np.ndarray], count: int) -> list[list[tuple[str, np.floating]]]:
    """Per example, its (label, score) pairs; labels are empty when the model has no classes.

    Scores stay numpy scalars so JSON writes float32 scores with the float32 rule."""
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is None and scores is None:
        raise ServingError(Code.INVALID_ARGUMENT, "Expected classification signature outputs 'classes' or 'scores'")
    reference = scores if scores is not None else classes
    if reference.shape[0] != count:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Expected output batch size of {count}, got {reference.shape[0]}")
    results = []
    for i in range(count):
        row_scores = list(scores[i].reshape(-1)) if scores is not None else None
        row_classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                       for c in classes[i].reshape(-1).tolist()] if classes is not None else None
        width = len(row_scores) if row_scores is not None else len(row_classes)
        results.append([
            (row_classes[k] if row_classes is not None else "",
             row_scores[k] if row_scores is not None else np.float32(0.0))
            for k in range(width)
        ])
    return results


def regression_results(outputs: dict[str, np.ndarray], count: int) -> list[np.floating]:
    """One value per example from the ``outputs`` tensor ([N] or [N, 1])."""
    values = outputs.get("outputs")
    if values is None:
        raise ServingError(Code.INVALID_ARGUMENT, "Expected regression signature output 'outputs'")
    if values.shape[0] != count or values.size != count:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Expected output Tensor shape to be [{count}] or [{count}, 1], got {list(values.shape)}")
    return list(values.reshape(-1))
