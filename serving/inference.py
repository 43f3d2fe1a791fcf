"""What REST and gRPC share once a request is decoded: run a signature, shape its answer."""

from __future__ import annotations

import asyncio
from typing import Mapping

import numpy as np

from poochlab.serving.model_manager import ModelManager, VersionState
from poochlab.serving.servable import CLASSIFY_METHOD, REGRESS_METHOD, Servable, Signature
from poochlab.serving.inference_session import InferenceResult, InferenceTask
from poochlab.serving.status import Code, ServingError

# The one input of a Classify/Regress signature (TF Serving's kClassifyInputs, kRegressInputs).
EXAMPLES_INPUT = "inputs"


async def run_signature(manager: ModelManager, state: VersionState, signature: Signature,
                        inputs: Mapping[str, np.ndarray], deadline: float | None,
                        alone: bool = False) -> InferenceResult:
    """Run ``inputs`` (names already checked) through the version's session for ``signature``.

    ``alone``: no other request is being answered on this loop, so a quick model without
    batching runs right here instead of on a model thread (see ``direct_session``).
    """
    session = manager.session(state, signature.name)
    task = InferenceTask(inputs=inputs, deadline=deadline)
    if alone and session.runs_quickly:
        return session.run(task)
    return await session.submit_to_loop(task, asyncio.get_running_loop())


def run_signature_blocking(manager: ModelManager, state: VersionState, signature: Signature,
                           inputs: Mapping[str, np.ndarray], deadline: float | None) -> InferenceResult:
    """:func:`run_signature` for a thread that may block (the gRPC server's handler threads).

    Without batching the model runs right here, on the caller's thread: no hand-off to a pool.
    """
    return manager.session(state, signature.name).run(InferenceTask(inputs=inputs, deadline=deadline))


_EXAMPLES_KIND = {CLASSIFY_METHOD: "classification", REGRESS_METHOD: "regression"}


def examples_signature(servable: Servable, signature_name: str, method: str,
                       check_method_name: bool) -> Signature:
    """The signature a Classify or Regress request runs, checked as TF Serving checks it.

    With ``--enable_signature_method_name_check`` (off by default, as in TF Serving) its method
    must be ``method``; otherwise any signature with one input ``inputs`` and the outputs the
    API reads will do, e.g. those ``tf.saved_model.save`` writes, whose method is always
    ``tensorflow/serving/predict``. Every failure is INVALID_ARGUMENT with TF Serving's words.
    """
    key = signature_name or "serving_default"
    signature = servable.signatures.get(key)
    if signature is None:
        raise ServingError(Code.INVALID_ARGUMENT, f"No signature was found with the name: {key}")
    kind = _EXAMPLES_KIND[method]
    if check_method_name:
        if signature.method_name != method:
            raise ServingError(Code.INVALID_ARGUMENT, f"Expected {kind} signature method_name to be {method}. "
                                                      f"Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise ServingError(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    outputs = set(signature.outputs)
    if method == CLASSIFY_METHOD:
        if len(outputs) not in (1, 2):
            raise ServingError(Code.INVALID_ARGUMENT, f"Expected one or two output Tensors, found {len(outputs)}")
    elif len(outputs) != 1:
        raise ServingError(Code.INVALID_ARGUMENT, "Expected one output Tensor.")
    if EXAMPLES_INPUT not in signature.inputs:
        raise ServingError(Code.INVALID_ARGUMENT, f"No {kind} inputs found in SignatureDef: "
                                                  f"{servable.signature_defs[key]}")
    if method == CLASSIFY_METHOD and not outputs & {"classes", "scores"}:
        raise ServingError(Code.INVALID_ARGUMENT,
                           'Expected classification signature outputs to contain at least one of "classes" '
                           f'or "scores". Signature was: {servable.signature_defs[key]}')
    if method == REGRESS_METHOD and "outputs" not in outputs:
        raise ServingError(Code.INVALID_ARGUMENT, f"No regression outputs found in SignatureDef: "
                                                  f"{servable.signature_defs[key]}")
    return signature


def examples_input(signature: Signature, examples: list[bytes]) -> dict[str, np.ndarray]:
    """The ``inputs`` tensor of a classify/regress signature: the serialized examples, [N]."""
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return {EXAMPLES_INPUT: array}


def classification_results(outputs: dict[str, np.ndarray], count: int) -> list[list[tuple[str, np.floating]]]:
    """Per example, its (label, score) pairs; labels are empty when the model has no classes.

    Scores stay numpy scalars so JSON writes float32 scores with the float32 rule."""
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is None and scores is None:
        raise ServingError(Code.INVALID_ARGUMENT, "Expected classification signature outputs 'classes' or 'scores'")
    reference = scores if scores is not None else classes
    assert reference is not None  # one of the two: neither raised above
    if reference.shape[0] != count:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Expected output batch size of {count}, got {reference.shape[0]}")
    results = []
    for i in range(count):
        row_scores = list(scores[i].reshape(-1)) if scores is not None else None
        row_classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                       for c in classes[i].reshape(-1).tolist()] if classes is not None else None
        width = len(row_scores) if row_scores is not None else len(row_classes or ())
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
