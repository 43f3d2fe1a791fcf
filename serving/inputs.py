"""Checks shared by REST and gRPC: do a request's tensors fit the signature they call?"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from poochlab.serving.servable import Signature, TensorSpec
from poochlab.serving.status import Code, ServingError


def check_input_names(expected_names: Iterable[str], names: set[str]) -> None:
    """INVALID_ARGUMENT naming the extra and missing inputs, TF Serving's wording."""
    expected = set(expected_names)
    if names == expected:
        return
    extra = sorted(names - expected)
    missing = sorted(expected - names)
    raise ServingError(
        Code.INVALID_ARGUMENT,
        f"input size does not match signature: {len(names)}!={len(expected)} "
        f"len({{{','.join(sorted(names))}}}) != len({{{','.join(sorted(expected))}}}). "
        f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.",
    )


def check_shape(spec: TensorSpec, array: np.ndarray) -> None:
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape) or any(
        want is not None and want != got for want, got in zip(spec.shape, array.shape)
    ):
        want_text = "[" + ",".join("?" if d is None else str(d) for d in spec.shape) + "]"
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"input '{spec.name}' has shape {list(array.shape)} but the signature expects {want_text}",
        )


def check_batch(signature: Signature, inputs: Mapping[str, np.ndarray]) -> int:
    """Every input must have the same, non-zero dimension 0; returns it."""
    sizes = {name: (array.shape[0] if array.ndim else None) for name, array in inputs.items()}
    if any(size is None for size in sizes.values()):
        scalar = next(name for name, size in sizes.items() if size is None)
        raise ServingError(Code.INVALID_ARGUMENT, f"input '{scalar}' is a scalar; inputs need a batch dimension")
    distinct = set(sizes.values())
    if len(distinct) > 1:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            "inputs must share dimension 0 (batch size), got "
            + ", ".join(f"{name}: {size}" for name, size in sorted(sizes.items())),
        )
    return int(distinct.pop()) if distinct else 0


def validate(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """Names, shapes and a shared batch dimension; raises INVALID_ARGUMENT otherwise."""
    check_input_names(signature.inputs, set(inputs))
    for name, array in inputs.items():
        check_shape(signature.inputs[name], array)
    check_batch(signature, inputs)
