"""TF Serving's REST JSON <-> tensors: predict (row and columnar, ``b64``), classify, regress.

Messages follow TF Serving's ``util/json_tensor.cc`` where clients are known to match on them
(``Missing 'inputs' or 'instances' key``, ``JSON Parse error: ... at offset: N``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from poochlab.serving.input_names import check_input_names
from poochlab.serving.json_format import tensor_to_json
from poochlab.serving.servable import Signature, TensorSpec
from poochlab.serving.status import Code, ServingError

ROW = "row"
COLUMNAR = "columnar"


def _bad(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def parse_json(body: bytes) -> Any:
    """The request body as JSON; INVALID_ARGUMENT with TF Serving's parse-error wording."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _bad(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(f"JSON Parse error: {error.msg} at offset: {error.pos}") from None
    except RecursionError:
        raise _bad("JSON Parse error: nesting too deep at offset: 0") from None


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decode_b64(value: dict, name: str) -> bytes:
    encoded = value["b64"]
    if not isinstance(encoded, str):
        raise _bad(f"'b64' value of input '{name}' must be a string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"Unable to base64 decode the value of input '{name}'") from None


def _string_leaves(value: Any, name: str, shape: list[int], depth: int, flat: list[bytes]) -> None:
    if isinstance(value, list):
        if len(shape) <= depth:
            if flat:
                raise _bad(f"input '{name}' has lists of unequal nesting (not a rectangular tensor)")
            shape.append(len(value))
        elif shape[depth] != len(value):
            raise _bad(f"input '{name}' has lists of unequal length at depth {depth} (not a rectangular tensor)")
        for item in value:
            _string_leaves(item, name, shape, depth + 1, flat)
        return
    if len(shape) != depth:
        raise _bad(f"input '{name}' has lists of unequal nesting (not a rectangular tensor)")
    if isinstance(value, str):
        flat.append(value.encode("utf-8"))
    elif _is_b64(value):
        flat.append(_decode_b64(value, name))
    else:
        raise _bad(f"input '{name}' expects strings (or {{\"b64\": ...}}), got {json.dumps(value)[:80]}")


def json_to_tensor(value: Any, spec: TensorSpec) -> np.ndarray:
    """One input's JSON value as an array of the signature's dtype, or INVALID_ARGUMENT."""
    if spec.is_string:
        if isinstance(value, list) and all(type(item) is str for item in value):
            flat_text = [item.encode("utf-8") for item in value]  # the common case: one string per row
            array = np.empty(len(flat_text), dtype=object)
            array[:] = flat_text
            return array
        shape: list[int] = []
        flat: list[bytes] = []
        _string_leaves(value, spec.name, shape, 0, flat)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    dtype = spec.numpy_dtype
    try:
        raw = np.array(value)
    except (ValueError, OverflowError):
        raise _bad(f"input '{spec.name}' is not a rectangular tensor of numbers") from None
    kind = raw.dtype.kind
    want = np.dtype(dtype).kind
    if want == "b":
        ok = kind == "b"
    elif want in "iu":
        ok = kind in "iu"
    else:
        ok = kind in "iuf"
    if not ok:
        if kind == "O":
            raise _bad(f"input '{spec.name}' is not a rectangular tensor of {np.dtype(dtype).name} values")
        raise _bad(f"input '{spec.name}' expects {np.dtype(dtype).name} values, got {raw.dtype.name if kind in 'iufb' else 'non-numbers'}")
    if want in "iu" and raw.dtype != dtype:
        info = np.iinfo(dtype)
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise _bad(f"input '{spec.name}' has values out of range for {np.dtype(dtype).name}")
    return raw.astype(dtype, copy=False)


def predict_inputs(request: Any, signature: Signature) -> tuple[dict[str, np.ndarray], str]:
    """The tensors of a predict request and its format (``ROW`` or ``COLUMNAR``)."""
    if not isinstance(request, dict):
        raise _bad("Request body must be a JSON object")
    has_instances = "instances" in request
    has_inputs = "inputs" in request
    if has_instances and has_inputs:
        raise _bad("Not a valid JSON input, Only one of 'inputs' or 'instances' may exist in the request")
    if not has_instances and not has_inputs:
        raise _bad("Missing 'inputs' or 'instances' key")
    extra = set(request) - {"instances", "inputs", "signature_name"}
    if extra:
        raise _bad(f"Unexpected key(s) in request: {', '.join(sorted(extra))}")
    specs = signature.inputs
    if has_instances:
        instances = request["instances"]
        if not isinstance(instances, list):
            raise _bad("Expecting 'instances' to be an list/array")
        if not instances:
            raise _bad("No values in 'instances' list")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not named:
            if len(specs) != 1:
                raise _bad(
                    f"Expecting object but got list at item 0 of input list: the signature has {len(specs)} "
                    f"inputs ({', '.join(sorted(specs))}), so each instance must be an object keyed by them"
                )
            (spec,) = specs.values()
            return {spec.name: json_to_tensor(instances, spec)}, ROW
        keys = set(instances[0])
        columns: dict[str, list] = {key: [] for key in keys}
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict) or _is_b64(instance):
                raise _bad(f"Expecting object but got {type(instance).__name__} at item {index} of input list")
            if set(instance) != keys:
                raise _bad(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Keys {sorted(instance)} differ from item 0's keys {sorted(keys)}"
                )
            for key, value in instance.items():
                columns[key].append(value)
        check_input_names(specs, keys)
        return {key: json_to_tensor(values, specs[key]) for key, values in columns.items()}, ROW
    inputs = request["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        check_input_names(specs, set(inputs))
        return {key: json_to_tensor(value, specs[key]) for key, value in inputs.items()}, COLUMNAR
    if len(specs) != 1:
        raise _bad(
            f"'inputs' must be an object keyed by input name: the signature has {len(specs)} inputs "
            f"({', '.join(sorted(specs))})"
        )
    (spec,) = specs.values()
    return {spec.name: json_to_tensor(inputs, spec)}, COLUMNAR


def predict_response(outputs: dict[str, np.ndarray], request_format: str) -> dict[str, Any]:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), TF Serving's shapes."""
    def to_json(name: str, array: np.ndarray) -> Any:
        return tensor_to_json(array, b64_strings=name.endswith("_bytes"))

    if request_format == COLUMNAR:
        if len(outputs) == 1:
            ((name, array),) = outputs.items()
            return {"outputs": to_json(name, array)}
        return {"outputs": {name: to_json(name, array) for name, array in outputs.items()}}
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return {"predictions": to_json(name, array)}
    sizes = {array.shape[0] if array.ndim else None for array in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise _bad("Tensors of the outputs have different sizes of dimension 0; use the columnar ('inputs') format")
    columns = {name: to_json(name, array) for name, array in outputs.items()}
    (rows,) = sizes
    assert rows is not None  # a dimension-less output raised above
    return {"predictions": [{name: column[i] for name, column in columns.items()} for i in range(rows)]}


def _feature(value: Any, name: str) -> Any:
    from tensorflow.core.example import feature_pb2

    values = value if isinstance(value, list) else [value]
    feature = feature_pb2.Feature()
    if not values:
        return feature
    first = values[0]
    try:
        if isinstance(first, bool):
            raise TypeError
        if isinstance(first, int):
            feature.int64_list.value.extend(values)
        elif isinstance(first, float):
            feature.float_list.value.extend(values)
        elif isinstance(first, str) or _is_b64(first):
            feature.bytes_list.value.extend(
                _decode_b64(v, name) if _is_b64(v) else v.encode("utf-8") for v in values
            )
        else:
            raise TypeError
    except (TypeError, AttributeError, ValueError):
        raise _bad(f"feature '{name}' must be a number, a string, {{\"b64\": ...}} or a list of one kind") from None
    return feature


def examples_from_json(request: Any) -> list[bytes]:
    """Serialized ``tf.Example`` protos of a classify/regress request (``context`` merged in)."""
    from tensorflow.core.example import example_pb2

    if not isinstance(request, dict):
        raise _bad("Request body must be a JSON object")
    extra = set(request) - {"examples", "context", "signature_name"}
    if extra:
        raise _bad(f"Unexpected key(s) in request: {', '.join(sorted(extra))}")
    examples = request.get("examples")
    if not isinstance(examples, list) or not examples:
        raise _bad("'examples' must be a non-empty list of objects")
    context = request.get("context", {})
    if not isinstance(context, dict):
        raise _bad("'context' must be an object")
    serialized = []
    for index, example_json in enumerate(examples):
        if not isinstance(example_json, dict):
            raise _bad(f"Example {index} of 'examples' must be an object")
        example = example_pb2.Example()
        for name, value in {**context, **example_json}.items():
            example.features.feature[name].CopyFrom(_feature(value, name))
        serialized.append(example.SerializeToString())
    return serialized
