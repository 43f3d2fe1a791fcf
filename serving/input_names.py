"""Checks shared by REST and gRPC: do a request's tensors fit the signature they call?

As in TF Serving, only the inputs' names (and, in ``Signature.compute``, their dtypes) are
checked against the signature. Shapes go to TensorFlow as they are: an op that cannot take one
fails with TensorFlow's own INVALID_ARGUMENT, and the batching queue checks dimension 0 itself.
"""

from __future__ import annotations

from typing import Iterable

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
