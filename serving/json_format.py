"""TF Serving's JSON output: its float formatting and its pretty printing.

TF Serving writes REST answers with rapidjson's pretty writer (4-space indent, arrays kept on
one line) and formats floats like printf's ``%g`` with 6 significant digits, falling back to
9 (float32) or 17 (float64) digits when 6 do not read back as the same value, then appends
``.0`` when the text has neither ``.`` nor ``e`` (contract page, "REST API").

A quirk of TF Serving's writer is kept on purpose: the closing bracket of an array that is the
value of an object member goes on its own line, so ``{"predictions": [2.5, 3.0]}`` prints as::

    {
        "predictions": [2.5, 3.0
        ]
    }
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

_INDENT = "    "
_encode_string = json.encoder.encode_basestring_ascii
_FLOAT32 = struct.Struct("<f")


def _same_float32(a: float, b: float) -> bool:
    """Whether two doubles round to the same float32 (struct: ~5x cheaper than numpy scalars)."""
    try:
        return _FLOAT32.pack(a) == _FLOAT32.pack(b)
    except OverflowError:  # beyond float32's range: numpy rounds to infinity
        return bool(np.float32(a) == np.float32(b))


def format_float(value: float, float32: bool) -> str:
    """One float as TF Serving writes it (``NaN``/``Infinity`` for non-finite values)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = "%g" % value
    if float32:
        if not _same_float32(float(text), value):
            text = "%.9g" % value
    elif float(text) != value:
        text = "%.17g" % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _scalar(value: Any) -> str:
    # Order matters: bool is an int, numpy scalars are not Python floats.
    if isinstance(value, str):
        return _encode_string(value)
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, np.floating):
        return format_float(float(value), value.dtype == np.float32 or value.dtype == np.float16)
    if isinstance(value, float):
        return format_float(value, False)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Float32List(list):
    """A list of Python floats that came from float32 tensors (formatted with the float32 rule)."""


def _array(values: Any, float32: bool) -> str:
    parts = []
    for item in values:
        if isinstance(item, list):
            parts.append(_array(item, float32 or isinstance(item, Float32List)))
        elif isinstance(item, float):
            parts.append(format_float(item, float32))
        elif isinstance(item, dict):
            raise TypeError("objects inside arrays are written by write_json")
        else:
            parts.append(_scalar(item))
    return "[" + ", ".join(parts) + "]"


def _value(value: Any, level: int, member: bool) -> str:
    if isinstance(value, dict):
        return _object(value, level)
    if isinstance(value, np.ndarray):
        value = tensor_to_json(value)
    if isinstance(value, list):
        if any(isinstance(item, dict) for item in value):
            inner = ", ".join(_value(item, level + 1, False) for item in value)
            text = "[" + inner
        else:
            text = _array(value, isinstance(value, Float32List))[:-1]
        if member and value:
            return text + "\n" + _INDENT * level + "]"
        return text + "]"
    return _scalar(value)


def _object(obj: dict, level: int) -> str:
    if not obj:
        return "{}"
    pad = _INDENT * (level + 1)
    members = [f"{pad}{_encode_string(str(key))}: {_value(value, level + 1, True)}" for key, value in obj.items()]
    return "{\n" + ",\n".join(members) + "\n" + _INDENT * level + "}"


def write_json(obj: dict) -> bytes:
    """``obj`` (dicts, lists, numbers, strings, numpy arrays) as TF Serving's pretty JSON."""
    return _object(obj, 0).encode()


def tensor_to_json(array: np.ndarray, b64_strings: bool = False) -> Any:
    """A tensor as nested lists of JSON-ready values (strings decoded, or ``{"b64": ...}``)."""
    if array.dtype.kind == "f":
        values = array.astype(np.float64).tolist()
        if array.dtype.itemsize <= 4:
            return _mark_float32(values)
        return values
    if array.dtype.kind in ("O", "S"):
        return _strings_to_json(array.tolist(), b64_strings)
    return array.tolist()


def _mark_float32(values: Any) -> Any:
    if isinstance(values, list):
        return Float32List(_mark_float32(item) for item in values)
    return values


def _strings_to_json(values: Any, b64: bool) -> Any:
    if isinstance(values, list):
        return [_strings_to_json(item, b64) for item in values]
    if isinstance(values, str):
        values = values.encode()
    if b64:
        import base64

        return {"b64": base64.b64encode(values).decode("ascii")}
    try:
        return values.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        # TF Serving cannot write invalid UTF-8 as text either; base64 keeps the bytes intact.
        return {"b64": base64.b64encode(values).decode("ascii")}


def error_body(message: str) -> bytes:
    """TF Serving's REST error body."""
    return b'{ "error": ' + _encode_string(message).encode() + b" }"
