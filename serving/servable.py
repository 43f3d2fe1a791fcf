"""One loaded model version: its SavedModel, its SignatureDefs and a compute per signature.

The SignatureDefs are read from ``saved_model.pb`` itself (the ``serve`` MetaGraph), so the
metadata the server answers, the method names it checks for classify/regress and the dtypes it
converts JSON to are exactly what TF Serving would see.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from poochlab.serving.status import Code, ServingError

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# tensorflow.DataType enum value -> numpy dtype used to build request tensors.
NUMPY_DTYPES: dict[int, Any] = {
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
            return NUMPY_DTYPES[self.dtype]
        except KeyError:
            raise ServingError(Code.UNIMPLEMENTED, f"tensor {self.name!r} has an unsupported dtype {self.dtype}") from None

    @property
    def is_string(self) -> bool:
        return self.dtype == DT_STRING


Run = Callable[..., list]  # the session's callable: input arrays in feed order -> output arrays


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    run: Run  # from :func:`_session_run`: inputs in sorted-name order, outputs likewise

    def __post_init__(self) -> None:
        self._feed_order = sorted(self.inputs)
        self._fetch_order = sorted(self.outputs)
        # A session casts nothing: a wrong numeric dtype fails inside TensorFlow with a message
        # about the graph's placeholder. Checked here first, the error names the request's input.
        self._typed = [(name, np.dtype(spec.numpy_dtype)) for name, spec in self.inputs.items()
                       if not spec.is_string and spec.dtype in NUMPY_DTYPES]

    def compute(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature; inputs already validated against :attr:`inputs`."""
        import tensorflow as tf

        for name, want in self._typed:
            if inputs[name].dtype != want:
                raise ServingError(Code.INVALID_ARGUMENT, f"input '{name}' has dtype {inputs[name].dtype} "
                                                          f"but the signature expects {want}")
        try:
            arrays = self.run(*[inputs[name] for name in self._feed_order])
        except tf.errors.OpError as error:
            raise ServingError(Code(error.error_code), error.message) from None
        except (TypeError, ValueError) as error:
            raise ServingError(Code.INVALID_ARGUMENT, str(error)) from None
        answers = {}
        for name, array in zip(self._fetch_order, arrays):
            array = np.asarray(array)  # a rank-0 fetch comes as a numpy scalar
            # Read-only: a fetched tensor may share its buffer with a constant or variable of
            # the model, which a write must never reach.
            array.flags.writeable = False
            answers[name] = array
        return answers


def _session_config() -> Any:
    """The sessions' threads: TF Serving's flags, as ``main`` handed them to TensorFlow.

    Without ``--tensorflow_inter_op_parallelism`` the graph runs on the calling thread
    (ConfigProto's negative setting): a small model's whole run is shorter than the two thread
    hand-offs an inter-op pool costs per call. Its ops still use the intra-op pool.
    """
    import tensorflow as tf

    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return tf.compat.v1.ConfigProto(inter_op_parallelism_threads=inter if inter > 0 else -1,
                                    intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads())


def _session_run(session: Any, signature_def: Any) -> Run:
    """One callable per signature: Session::Run with its feeds and fetches bound once.

    ``_make_callable_from_options`` is TensorFlow's own lowest-cost entry (the one Keras uses):
    the arrays go to the C API's ``TF_SessionRunCallable`` as they are, so, as in TF Serving's
    C++ ``Session::Run``, a feed's shape is never checked against its placeholder and only an
    op that cannot take it fails (INVALID_ARGUMENT, TensorFlow's message). The public
    ``make_callable`` and ``Session.run`` refuse such feeds in Python first, and cost about
    three times the Pooch Predictor's whole run, so they are no fallback.
    """
    from tensorflow.core.protobuf import config_pb2

    feeds = [signature_def.inputs[name].name for name in sorted(signature_def.inputs)]
    fetches = [signature_def.outputs[name].name for name in sorted(signature_def.outputs)]
    make = getattr(session, "_make_callable_from_options", None)
    if make is None:
        import tensorflow as tf

        raise RuntimeError(f"TensorFlow {tf.__version__} has no Session._make_callable_from_options; "
                           "the lab's server needs it to run signatures as TF Serving does")
    return make(config_pb2.CallableOptions(feed=feeds, fetch=fetches))


def _unrunnable(key: str, reason: str) -> Run:
    # As in TF Serving, a signature the session cannot run fails the requests that call it,
    # not the whole version.
    def run(*arrays: Any) -> list:
        raise ServingError(Code.INVALID_ARGUMENT, f"signature {key!r} cannot be run: {reason}")

    return run


def _spec(name: str, info: Any) -> TensorSpec:
    # No tensor_shape at all (old TF 1.x exports) means an unknown shape, not a scalar.
    if not info.HasField("tensor_shape") or info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if dim.size < 0 else int(dim.size) for dim in info.tensor_shape.dim)
    return TensorSpec(name=name, dtype=int(info.dtype), shape=shape)


class Servable:
    """A model version loaded as TF Serving loads it: its ``serve`` MetaGraph in a session.

    ``tf.saved_model.load`` would give eager functions instead, whose every call crosses
    TensorFlow's eager dispatch and an inter-op thread: about 3x the Pooch Predictor's run.
    :meth:`close` releases the session once the runs in progress have ended (TF Serving keeps a
    servable until its last handle is released); a run that starts after it is UNAVAILABLE.
    """

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow.python.util import deprecation

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
        self._lock = threading.Lock()
        self._running = 0  # session runs in progress
        self._closing = False
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph, config=_session_config())
        try:
            with graph.as_default(), deprecation.silence():
                tf.compat.v1.saved_model.loader.load(self._session, ["serve"], str(self.path))
            self.signatures: dict[str, Signature] = {}
            for key, sig in self.signature_defs.items():
                if key.startswith("__"):
                    continue  # __saver_def__ and the like: bookkeeping, not a served signature
                try:
                    run = self._counted(_session_run(self._session, sig))
                except tf.errors.OpError as error:  # e.g. a sparse input, or a tensor not in the graph
                    run = _unrunnable(key, error.message)
                self.signatures[key] = Signature(
                    name=key,
                    method_name=sig.method_name,
                    inputs={k: _spec(k, v) for k, v in sig.inputs.items()},
                    outputs={k: _spec(k, v) for k, v in sig.outputs.items()},
                    run=run,
                )
        except BaseException:
            self._session.close()
            raise

    def _counted(self, run: Run) -> Run:
        """``run``, counted in :attr:`_running` so that :meth:`close` can wait for it."""
        def counted(*arrays: Any) -> list:
            with self._lock:
                if self._closing:
                    raise ServingError(Code.UNAVAILABLE, "Servable is being unloaded")
                self._running += 1
            try:
                return run(*arrays)
            finally:
                with self._lock:
                    self._running -= 1
                    last = self._closing and self._running == 0
                if last:
                    self._session.close()

        return counted

    def close(self) -> None:
        """Release the session (its variables and tables) when the runs in progress end; no
        run starts after this."""
        with self._lock:
            self._closing = True
            idle = self._running == 0
        if idle:
            self._session.close()

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
