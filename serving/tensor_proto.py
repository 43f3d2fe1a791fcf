"""``TensorProto`` <-> numpy for gRPC and warm-up records.

Answers use the typed repeated fields (``float_val``, ``int64_val``, ...) as TF Serving does,
not ``tensor_content``; requests may use either (``tf.make_ndarray`` reads both).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from poochlab.serving.servable import NUMPY_DTYPES, TensorSpec
from poochlab.serving.status import Code, ServingError

# numpy kind+itemsize -> (DataType enum, repeated field name)
_FIELDS: dict[str, tuple[int, str]] = {
    "f4": (1, "float_val"), "f8": (2, "double_val"), "i4": (3, "int_val"), "u1": (4, "int_val"),
    "i2": (5, "int_val"), "i1": (6, "int_val"), "i8": (9, "int64_val"), "b1": (10, "bool_val"),
    "u2": (17, "int_val"), "f2": (19, "half_val"), "u4": (22, "uint32_val"), "u8": (23, "uint64_val"),
}


def array_to_proto(array: np.ndarray, proto: Any = None) -> Any:
    """A TensorProto with the array's values in its typed field; written into ``proto`` (an
    empty TensorProto, e.g. a response's map entry, which saves building one and copying it)."""
    if proto is None:
        from tensorflow.core.framework import tensor_pb2

        proto = tensor_pb2.TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add().size = int(size)
    if array.dtype.kind in ("O", "S", "U"):
        proto.dtype = 7
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist())
        return proto
    key = f"{array.dtype.kind}{array.dtype.itemsize}"
    try:
        dtype, field = _FIELDS[key]
    except KeyError:
        raise ServingError(Code.UNIMPLEMENTED, f"cannot send a tensor of dtype {array.dtype}") from None
    proto.dtype = dtype
    if field == "half_val":
        getattr(proto, field).extend(array.ravel().view(np.uint16).tolist())
    else:
        getattr(proto, field).extend(array.ravel().tolist())
    return proto


# DataType enum -> (typed repeated field, numpy dtype) read without tf.make_ndarray.
_TYPED_READS: dict[int, tuple[str, Any]] = {
    1: ("float_val", np.float32), 2: ("double_val", np.float64), 3: ("int_val", np.int32),
    9: ("int64_val", np.int64), 10: ("bool_val", np.bool_), 7: ("string_val", object),
}


def _typed_values(proto: Any) -> np.ndarray | None:
    """The common case (typed field, one value per element) in a few microseconds; None
    when ``tf.make_ndarray`` must handle it (tensor_content, broadcast fill, other dtypes)."""
    read = _TYPED_READS.get(proto.dtype)
    if read is None or proto.tensor_content:
        return None
    field, dtype = read
    values = getattr(proto, field)
    shape = [dim.size for dim in proto.tensor_shape.dim]
    count = 1
    for size in shape:
        if size < 0:
            return None
        count *= size
    if len(values) != count:
        return None
    if dtype is object:
        # From a list, numpy makes a 1-D array of the bytes objects (bytes are not sequences
        # to numpy); from the protobuf container it would probe it element by element.
        array = np.array(list(values), dtype=object) if count else np.empty(0, dtype=object)
    else:
        array = np.fromiter(values, dtype=dtype, count=count)  # half the time of np.array here
    return array.reshape(shape)


def proto_to_array(proto: Any, spec: TensorSpec) -> np.ndarray:
    """A request TensorProto as an array; INVALID_ARGUMENT on a dtype or content mismatch."""
    if proto.dtype != spec.dtype:
        import tensorflow as tf

        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"Expects arg[{spec.name}] to be {tf.dtypes.as_dtype(spec.dtype).name} "
            f"but {tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else 'invalid'} is provided",
        )
    fast = _typed_values(proto)
    if fast is not None:
        return fast
    import tensorflow as tf

    if not _allocatable(proto):
        # TF Serving's Tensor::FromProto fails on such a shape; answer as it does, before
        # numpy tries (and fails) to fill terabytes of broadcast values.
        raise ServingError(Code.INVALID_ARGUMENT, f"tensor parsing error: {spec.name}")
    try:
        return tf.make_ndarray(proto)
    except MemoryError:
        raise ServingError(Code.INVALID_ARGUMENT, f"tensor parsing error: {spec.name}") from None
    except (TypeError, ValueError) as error:
        raise ServingError(Code.INVALID_ARGUMENT, f"input '{spec.name}' is not a valid TensorProto: {error}") from None


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 62


_MEMORY_BYTES = _memory_bytes()


def _allocatable(proto: Any) -> bool:
    """Whether the declared shape is valid and its values fit the machine's memory.

    Checked only on the slow path (fewer values than elements, tensor_content, other dtypes):
    a tensor whose values all came in the request fits, since the request itself did."""
    count = 1
    for dim in proto.tensor_shape.dim:
        if dim.size < 0:
            return False
        count *= dim.size
    itemsize = 8 if proto.dtype == 7 else max(1, np.dtype(NUMPY_DTYPES.get(proto.dtype, np.float64)).itemsize)
    return count * itemsize <= _MEMORY_BYTES


def serialized_examples(input_proto: Any) -> list[bytes]:
    """The ``tf.Example``s of a classify/regress ``Input``, context features merged into each."""
    from tensorflow.core.example import example_pb2

    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = list(input_proto.example_list.examples)
        context = None
    elif kind == "example_list_with_context":
        examples = list(input_proto.example_list_with_context.examples)
        context = input_proto.example_list_with_context.context
    else:
        raise ServingError(Code.INVALID_ARGUMENT, "Input is empty: set example_list or example_list_with_context")
    if not examples:
        raise ServingError(Code.INVALID_ARGUMENT, "Input is empty: no examples")
    if context is None:
        return [example.SerializeToString() for example in examples]
    merged = []
    for example in examples:
        combined = example_pb2.Example()
        combined.CopyFrom(context)
        for name, feature in example.features.feature.items():
            combined.features.feature[name].CopyFrom(feature)
        merged.append(combined.SerializeToString())
    return merged
