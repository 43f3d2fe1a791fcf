"""One loaded model version: its SavedModel, its SignatureDefs and a compute per signature.

The SignatureDefs are read from ``saved_model.pb`` itself (the ``serve`` MetaGraph), so the
metadata the server answers, the method names it checks for classify/regress and the dtypes it
converts JSON to are exactly what TF Serving would see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from poochlab.serving.status import Code, ServingError

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# tensorflow.DataType enum value -> numpy dtype used to build request tensors.
_NUMPY_DTYPES: dict[int, Any] = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    7: object, 9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}
DT_STRING = 7


@dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: its dtype enum and shape (None for unknown dims)."""

    name: str
    dtype: int
    shape: tuple[int | None, ...] | None  # None: unknown rank

    @property
    def numpy_dtype(self) -> Any:
        try:
            return _NUMPY_DTYPES[self.dtype]
        except KeyError:
            raise ServingError(Code.UNIMPLEMENTED, f"tensor {self.name!r} has an unsupported dtype {self.dtype}") from None

    @property
    def is_string(self) -> bool:
        return self.dtype == DT_STRING


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    function: Any  # the loaded ConcreteFunction

    def __post_init__(self) -> None:
        # The public call (``function(**tensors)``) re-binds and re-checks its keyword
        # arguments against the structured signature on every call: ~90 us of Python on our
        # machines, a quarter of the Pooch Predictor's whole compute. Inputs here are already
        # validated, so call the flat function directly with the tensors in its own order.
        # Both are TensorFlow internals: without them the public call is used.
        function_type = getattr(self.function, "function_type", None)
        order = [p.name for p in function_type.parameters.values()] if function_type is not None else []
        flat_ok = hasattr(self.function, "_call_flat") and sorted(order) == sorted(self.inputs)
        self._flat_order: list[str] | None = order if flat_ok else None

    def compute(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature; inputs already validated against :attr:`inputs`."""
        import tensorflow as tf

        try:
            if self._flat_order is not None:
                result = self.function._call_flat(  # noqa: SLF001 (see __post_init__)
                    [tf.constant(inputs[name]) for name in self._flat_order], self.function.captured_inputs)
            else:
                result = self.function(**{name: tf.constant(value) for name, value in inputs.items()})
        except tf.errors.OpError as error:
            raise ServingError(Code(error.error_code), error.message) from None
        except (TypeError, ValueError) as error:
            raise ServingError(Code.INVALID_ARGUMENT, str(error)) from None
        return {name: tensor.numpy() for name, tensor in result.items()}


def _spec(name: str, info: Any) -> TensorSpec:
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if dim.size < 0 else int(dim.size) for dim in info.tensor_shape.dim)
    return TensorSpec(name=name, dtype=int(info.dtype), shape=shape)


class Servable:
    """A model version loaded with ``tf.saved_model.load``, ready to compute."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name = name
        self.version = version
        self.path = Path(path)
        proto = saved_model_pb2.SavedModel()
        pb_path = self.path / "saved_model.pb"
        try:
            proto.ParseFromString(pb_path.read_bytes())
        except OSError as error:
            raise ServingError(Code.NOT_FOUND, f"Could not find SavedModel .pb at {pb_path}: {error}") from None
        meta_graphs = [mg for mg in proto.meta_graphs if "serve" in mg.meta_info_def.tags]
        if not meta_graphs:
            raise ServingError(Code.NOT_FOUND, f"SavedModel at {self.path} has no MetaGraph tagged 'serve'")
        self.signature_defs = meta_graphs[0].signature_def
        self._loaded = tf.saved_model.load(str(self.path), tags=["serve"])
        self.signatures: dict[str, Signature] = {}
        for key, sig in self.signature_defs.items():
            if key not in self._loaded.signatures:
                continue  # e.g. __saver_def__ entries that are not callable
            self.signatures[key] = Signature(
                name=key,
                method_name=sig.method_name,
                inputs={k: _spec(k, v) for k, v in sig.inputs.items()},
                outputs={k: _spec(k, v) for k, v in sig.outputs.items()},
                function=self._loaded.signatures[key],
            )

    def signature(self, name: str) -> Signature:
        """The signature called ``name`` (empty: ``serving_default``); FAILED_PRECONDITION if absent."""
        key = name or "serving_default"
        try:
            return self.signatures[key]
        except KeyError:
            raise ServingError(
                Code.FAILED_PRECONDITION, f"Serving signature name: \"{key}\" not found in signature def"
            ) from None

    def signature_def_map_proto(self) -> Any:
        """The ``SignatureDefMap`` that GetModelMetadata returns."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        result = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in self.signature_defs.items():
            result.signature_def[key].CopyFrom(sig)
        return result
