"""Merging requests' tensors into one batch along dimension 0, and splitting the answer back.

Follows TF Serving's ``BatchingSession``: inputs are concatenated in task order, padding rows
repeat the first row of the last task, ``pad_variable_length_inputs`` pads the other dimensions
with each tensor's first element, and outputs are cut back at the tasks' row offsets (the
padding rows are never handed to anyone).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from poochlab.serving.status import Code, ServingError

Tensors = Mapping[str, np.ndarray]


def task_rows(inputs: Tensors) -> int:
    """Rows along dimension 0 shared by every input (TF Serving's checks and messages)."""
    if not inputs:
        raise ServingError(Code.INVALID_ARGUMENT,
                           "Batching Run() must have at least one input tensor")
    rows: int | None = None
    for tensor in inputs.values():
        if np.ndim(tensor) == 0:
            raise ServingError(Code.INVALID_ARGUMENT,
                               "Batching Run() input tensors must have at least one dimension")
        if rows is None:
            rows = int(tensor.shape[0])
        elif tensor.shape[0] != rows:
            raise ServingError(Code.INVALID_ARGUMENT,
                               "Batching Run() input tensors must have equal 0th-dimension size")
    assert rows is not None
    return rows


def slice_rows(inputs: Tensors, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` of every input (views, no copy)."""
    return {name: tensor[start:stop] for name, tensor in inputs.items()}


def _same_kind(a: np.dtype, b: np.dtype) -> bool:
    # Fixed-width strings of different widths concatenate losslessly.
    return a == b or (a.kind == b.kind and a.kind in "SU")


def incompatibility(reference: Tensors, inputs: Tensors, pad_variable_length: bool) -> str | None:
    """Why ``inputs`` cannot join a batch whose first task is ``reference`` (None: it can)."""
    if set(inputs) != set(reference):
        return (f"inputs {sorted(inputs)} differ from the inputs {sorted(reference)} of the "
                "batch's other requests")
    for name, tensor in inputs.items():
        first = reference[name]
        if not _same_kind(tensor.dtype, first.dtype):
            return (f"Tensors with name '{name}' from different tasks have different dtypes "
                    f"({tensor.dtype} and {first.dtype})")
        if pad_variable_length:
            if tensor.ndim != first.ndim:
                return (f"Tensors with name '{name}' from different tasks have different ranks "
                        f"({tensor.ndim} and {first.ndim}); padding cannot make them equal")
        elif tensor.shape[1:] != first.shape[1:]:
            return (f"Tensors with name '{name}' from different tasks have different shapes "
                    f"({list(tensor.shape)} and {list(first.shape)}) and padding is turned off. "
                    "Set pad_variable_length_inputs to true, or ensure that all tensors with "
                    "the same name have equal dimensions starting with the first dim.")
    return None


def _pad_to(tensor: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """Pad dimensions 1.. of ``tensor`` up to ``dims`` with its first element (TF Serving)."""
    widths = [(0, 0)] + [(0, target - have) for have, target in zip(tensor.shape[1:], dims)]
    if all(after == 0 for _, after in widths):
        return tensor
    if tensor.size == 0:
        raise ServingError(Code.INVALID_ARGUMENT,
                           "Cannot pad an empty tensor: it has no element to pad with")
    return np.pad(tensor, widths, mode="constant", constant_values=tensor.flat[0])


def merge_inputs(tasks: Sequence[Tensors], padded_rows: int,
                 pad_variable_length: bool) -> dict[str, np.ndarray]:
    """Concatenate ``tasks`` (already checked with :func:`incompatibility`) along dimension 0,
    then repeat one real row until the batch holds ``padded_rows`` rows."""
    merged: dict[str, np.ndarray] = {}
    for name in tasks[0]:
        parts = [task[name] for task in tasks]
        if pad_variable_length:
            dims = [max(part.shape[axis] for part in parts) for axis in range(1, parts[0].ndim)]
            parts = [_pad_to(part, dims) for part in parts]
        rows = sum(part.shape[0] for part in parts)
        if padded_rows > rows:
            source = next((part for part in reversed(parts) if part.shape[0] > 0), None)
            if source is not None:
                parts.append(np.repeat(source[:1], padded_rows - rows, axis=0))
        merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return merged


def split_outputs(outputs: Mapping[str, np.ndarray], row_counts: Sequence[int],
                  padded_rows: int) -> list[dict[str, np.ndarray]]:
    """Cut the batch's ``outputs`` into one dict per task, in order; drop the padding rows."""
    for name, tensor in outputs.items():
        if np.ndim(tensor) == 0:
            raise ServingError(Code.FAILED_PRECONDITION,
                               f"Batched output tensor '{name}' has 0 dimensions")
        if tensor.shape[0] != padded_rows:
            raise ServingError(
                Code.FAILED_PRECONDITION,
                f"Batched output tensor '{name}''s 0th dimension ({tensor.shape[0]}) does not "
                f"equal the sum of the 0th dimension sizes of the input tensors ({padded_rows})")
    pieces: list[dict[str, np.ndarray]] = []
    start = 0
    for rows in row_counts:
        pieces.append({name: tensor[start:start + rows] for name, tensor in outputs.items()})
        start += rows
    return pieces


def concat_pieces(pieces: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Reassemble the outputs of a task that was split across batches."""
    if len(pieces) == 1:
        return dict(pieces[0])
    return {name: np.concatenate([piece[name] for piece in pieces], axis=0)
            for name in pieces[0]}
