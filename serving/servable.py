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
        self._call = _direct_call(self.function, self.inputs)

    def compute(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature; inputs already validated against :attr:`inputs`."""
        import tensorflow as tf

        try:
            if self._call is not None:
                return self._call(inputs)
            result = self.function(**{name: tf.constant(value) for name, value in inputs.items()})
        except tf.errors.OpError as error:
            raise ServingError(Code(error.error_code), error.message) from None
        except (TypeError, ValueError) as error:
            raise ServingError(Code.INVALID_ARGUMENT, str(error)) from None
        return {name: tensor.numpy() for name, tensor in result.items()}


def _direct_call(function: Any, inputs: dict[str, TensorSpec]) -> Any:
    """A call of the signature's function that skips TensorFlow's Python layers, or None.

    The public call (``function(**tensors)``) re-binds its keyword arguments, converts each
    input through ``tf.constant``'s wrappers, resolves the captured variables' handles and
    packs the outputs, on every call: about 80 us of Python on our machines, more than a third of
    the Pooch Predictor's whole compute. A served signature is called with the same shapes of
    arguments millions of times, so that work is done once here: the call runs the function's
    op directly on its inputs plus the captured handles, with the same function-call attributes
    the public call passes. These are TensorFlow internals; when anything is not as expected,
    None makes :meth:`Signature.compute` use the public call.
    """
    try:
        import tensorflow as tf
        from tensorflow.python.eager import context, execute
        from tensorflow.python.framework import ops

        atomic = function._inference_function  # noqa: SLF001
        op_name = atomic.name.decode() if isinstance(atomic.name, bytes) else str(atomic.name)
        order = [p.name for p in function.function_type.parameters.values()]
        captured = list(function.captured_inputs)
        outputs = function.structured_outputs
    except Exception:  # noqa: BLE001 (any surprise in the internals: use the public call)
        return None
    if sorted(order) != sorted(inputs) or not all(isinstance(c, ops.EagerTensor) for c in captured):
        return None
    # TF2 exports describe outputs with TensorSpecs, TF1 (wrapped) ones with graph tensors.
    if not isinstance(outputs, dict) or not all(isinstance(v, (tf.TensorSpec, tf.Tensor)) for v in outputs.values()):
        return None
    dtypes = [inputs[name].dtype for name in order]  # DataType enum values, as EagerTensor wants
    try:
        # EagerTensor casts whatever it gets (2**40 into an int32 input becomes 0); the public
        # call refuses a wrong dtype, and so does this one. Strings come as object or bytes arrays.
        typed = [(name, np.dtype(inputs[name].numpy_dtype)) for name in order if not inputs[name].is_string]
    except ServingError:  # an input dtype numpy has no match for: the public call decides
        return None
    keys = sorted(outputs)  # a dict's flat order (tf.nest sorts keys)
    ctx = context.context()
    ctx.ensure_initialized()
    options = ctx.function_call_options
    attrs = ("executor_type", options.executor_type or "", "config_proto", options.config_proto_serialized)
    count = len(keys)
    eager_tensor, quick_execute = ops.EagerTensor, execute.quick_execute

    def call(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, want in typed:
            if values[name].dtype != want:
                raise ServingError(Code.INVALID_ARGUMENT, f"input '{name}' has dtype {values[name].dtype} "
                                                          f"but the signature expects {want}")
        device = ctx.device_name
        tensors = [eager_tensor(values[name], device, dtype) for name, dtype in zip(order, dtypes)]
        flat = quick_execute(op_name, count, tensors + captured, attrs, ctx)
        answers = {}
        for key, tensor in zip(keys, flat):
            # A view of TensorFlow's own buffer (no copy): read-only, since a write could reach
            # a constant or variable inside the model.
            array = tensor._numpy()  # noqa: SLF001
            array.flags.writeable = False
            answers[key] = array
        return answers

    return call


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
