"""Just enough of protobuf's wire format to speak TF Serving's Predict without importing TensorFlow.

``tensorflow_serving.apis.predict_pb2`` imports all of TensorFlow (~7 s, 600 MB). The echo
server must start in a blink and cost nothing, so it reads the one number it needs from a
``PredictRequest`` (the batch size of the first input) and writes a constant
``PredictResponse`` / ``GetModelStatusResponse`` by hand. Field numbers are those of
tensorflow_serving/apis/{predict,model,get_model_status}.proto and
tensorflow/core/framework/{tensor,tensor_shape}.proto.
"""

from __future__ import annotations

import struct
from typing import Iterator

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
DT_FLOAT = 1
MODEL_STATE_AVAILABLE = 30


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of one serialized message."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
        elif wire == _LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated length-delimited field")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire == _I64:
            yield number, wire, data[pos:pos + 8]
            pos += 8
        elif wire == _I32:
            yield number, wire, data[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value)


def request_summary(request: bytes) -> tuple[str, int]:
    """(model name, batch size of the first input) of a serialized PredictRequest."""
    name, batch = "", 1
    for number, wire, value in fields(request):
        if number == 1 and wire == _LEN:  # model_spec
            for n, w, v in fields(value):  # type: ignore[arg-type]
                if n == 1 and w == _LEN:
                    name = v.decode("utf-8", "replace")  # type: ignore[union-attr]
        elif number == 2 and wire == _LEN:  # inputs map entry: key=1, value=2 (TensorProto)
            for n, w, v in fields(value):  # type: ignore[arg-type]
                if n == 2 and w == _LEN:
                    batch = _first_dim(v) or batch  # type: ignore[arg-type]
            break
    return name, batch


def _first_dim(tensor: bytes) -> int | None:
    for number, wire, value in fields(tensor):
        if number == 2 and wire == _LEN:  # tensor_shape
            for n, w, v in fields(value):  # type: ignore[arg-type]
                if n == 2 and w == _LEN:  # first dim
                    for dn, dw, dv in fields(v):  # type: ignore[arg-type]
                        if dn == 1 and dw == _VARINT:
                            return int(dv)
                    return 0
    return None


def model_spec(name: str, version: int, signature_name: str) -> bytes:
    return (_field(1, name.encode()) + _field(2, _varint_field(1, version))
            + _field(3, signature_name.encode()))


def predict_response(name: str, version: int, signature_name: str, output: str,
                     values: list[float]) -> bytes:
    """A PredictResponse with one float output of shape [len(values)]."""
    shape = _field(2, _varint_field(1, len(values)))
    tensor = (_varint_field(1, DT_FLOAT) + _field(2, shape)
              + _field(5, struct.pack(f"<{len(values)}f", *values)))
    entry = _field(1, output.encode()) + _field(2, tensor)
    return _field(1, entry) + _field(2, model_spec(name, version, signature_name))


def model_status_response(version: int) -> bytes:
    """A GetModelStatusResponse saying ``version`` is AVAILABLE with status OK."""
    status = _varint_field(1, version) + _varint_field(2, MODEL_STATE_AVAILABLE) + _field(3, b"")
    return _field(1, status)
