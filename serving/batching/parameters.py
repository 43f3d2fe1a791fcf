"""TF Serving's ``BatchingParameters``: read from its text-proto file, defaulted, validated.

``tensorflow-serving-api`` does not ship this message, so the schema is declared here (same
package, names, wrapper types and field numbers as ``session_bundle_config.proto``) and the
file is read by protobuf's own text-format parser: comments, any field order, ``field: value``
or ``field { value: ... }`` and repeated fields behave exactly as they do for TF Serving.
Defaults and validation follow TF Serving's ``SharedBatchScheduler`` and
``bundle_factory_util``; every error names the file and the field.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

# TF Serving's defaults (SharedBatchScheduler::QueueOptions / Options).
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_THREAD_POOL_NAME = "batch_threads"


def default_num_batch_threads() -> int:
    """TF Serving's default: ``port::MaxParallelism()``, the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BatchingParameters:
    """The resolved batching policy (TF Serving's defaults filled in).

    ``max_execution_batch_size`` is the largest batch that runs: ``max_batch_size`` unless
    ``enable_large_batch_splitting`` is on, exactly as TF Serving ignores the field otherwise.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = 0  # 0 here means "not given": see __post_init__
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: same as max_batch_size

    def __post_init__(self) -> None:
        if self.num_batch_threads == 0:
            object.__setattr__(self, "num_batch_threads", default_num_batch_threads())
        if self.max_execution_batch_size == 0 or not self.enable_large_batch_splitting:
            object.__setattr__(self, "max_execution_batch_size", self.max_batch_size)
        object.__setattr__(self, "allowed_batch_sizes", tuple(self.allowed_batch_sizes))
        _validate(self, source="BatchingParameters")

    def padded_size(self, rows: int) -> int:
        """The smallest allowed batch size holding ``rows`` (``rows`` when none are set)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= rows:
                return allowed
        return rows


def _fail(source: str, field: str, message: str) -> ValueError:
    return ValueError(f"{source}: field '{field}': {message}")


def _validate(params: BatchingParameters, source: str) -> None:
    """TF Serving's start-up checks, plus the ones it documents but does not enforce."""
    if params.max_batch_size <= 0:
        raise _fail(source, "max_batch_size", f"must be positive; was {params.max_batch_size}")
    if params.batch_timeout_micros < 0:
        raise _fail(source, "batch_timeout_micros",
                    f"must be non-negative; was {params.batch_timeout_micros}")
    if params.max_enqueued_batches <= 0:
        raise _fail(source, "max_enqueued_batches",
                    f"must be positive; was {params.max_enqueued_batches}")
    if params.num_batch_threads <= 0:
        raise _fail(source, "num_batch_threads",
                    f"must be positive; was {params.num_batch_threads}")
    if params.enable_large_batch_splitting:
        if params.max_execution_batch_size <= 0:
            raise _fail(source, "max_execution_batch_size",
                        f"must be positive; was {params.max_execution_batch_size}")
        if params.max_execution_batch_size > params.max_batch_size:
            raise _fail(source, "max_execution_batch_size",
                        "when enable_large_batch_splitting is true, max_batch_size must be "
                        "greater than or equal to max_execution_batch_size; got "
                        f"max_batch_size {params.max_batch_size} and max_execution_batch_size "
                        f"{params.max_execution_batch_size}")
    sizes = params.allowed_batch_sizes
    if sizes:
        for size in sizes:
            if size <= 0:
                raise _fail(source, "allowed_batch_sizes", f"entries must be positive; got {size}")
        for before, after in zip(sizes, sizes[1:]):
            if after <= before:
                raise _fail(source, "allowed_batch_sizes",
                            f"entries must be monotonically increasing; got {list(sizes)}")
        if params.enable_large_batch_splitting:
            if sizes[-1] != params.max_execution_batch_size:
                raise _fail(source, "allowed_batch_sizes",
                            "last entry must be equal to max_execution_batch_size; last entry "
                            f"was {sizes[-1]}; expected {params.max_execution_batch_size}")
        elif sizes[-1] != params.max_batch_size:
            raise _fail(source, "allowed_batch_sizes",
                        "last entry must match max_batch_size; last entry was "
                        f"{sizes[-1]}; expected {params.max_batch_size}")


@lru_cache(maxsize=1)
def _message_class() -> type:
    """``tensorflow.serving.BatchingParameters`` built in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf import wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="poochlab/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    # (name, number, type, wrapper message or None, repeated)
    for name, number, kind, wrapper, repeated in (
        ("max_batch_size", 1, field.TYPE_MESSAGE, "Int64Value", False),
        ("batch_timeout_micros", 2, field.TYPE_MESSAGE, "Int64Value", False),
        ("max_enqueued_batches", 3, field.TYPE_MESSAGE, "Int64Value", False),
        ("num_batch_threads", 4, field.TYPE_MESSAGE, "Int64Value", False),
        ("thread_pool_name", 5, field.TYPE_MESSAGE, "StringValue", False),
        ("allowed_batch_sizes", 6, field.TYPE_INT64, None, True),
        ("pad_variable_length_inputs", 7, field.TYPE_BOOL, None, False),
        ("enable_large_batch_splitting", 8, field.TYPE_MESSAGE, "BoolValue", False),
        ("max_execution_batch_size", 9, field.TYPE_MESSAGE, "Int64Value", False),
    ):
        message.field.add(
            name=name, number=number, type=kind,
            type_name=f".google.protobuf.{wrapper}" if wrapper else None,
            label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL,
        )
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def parse_batching_parameters(text: str, source: str) -> BatchingParameters:
    """Parse a ``BatchingParameters`` text proto; ``source`` names it in errors.

    Raises ``ValueError`` naming ``source`` and the field for a syntax error, an unknown field,
    a value of the wrong type and every rule TF Serving checks at start-up.
    """
    from google.protobuf import text_format

    proto = _message_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as error:
        # protobuf's message names line:column and the field ("... has no field named x").
        hint = ""
        if 'Expected "{"' in str(error):
            hint = " (scalar fields are wrapper messages: write max_batch_size { value: 32 })"
        raise ValueError(f"{source}: {error}{hint}") from None

    def wrapped(name: str, default):
        return getattr(proto, name).value if proto.HasField(name) else default

    kwargs = dict(
        max_batch_size=wrapped("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
        batch_timeout_micros=wrapped("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS),
        max_enqueued_batches=wrapped("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
        num_batch_threads=wrapped("num_batch_threads", None),
        thread_pool_name=wrapped("thread_pool_name", DEFAULT_THREAD_POOL_NAME),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
        pad_variable_length_inputs=proto.pad_variable_length_inputs,
        enable_large_batch_splitting=wrapped("enable_large_batch_splitting", False),
        max_execution_batch_size=wrapped("max_execution_batch_size", None),
    )
    # A zero written in the file is an error, not "use the default".
    if kwargs["num_batch_threads"] is None:
        kwargs["num_batch_threads"] = default_num_batch_threads()
    elif kwargs["num_batch_threads"] <= 0:
        raise _fail(source, "num_batch_threads",
                    f"must be positive; was {kwargs['num_batch_threads']}")
    if kwargs["max_execution_batch_size"] is None:
        kwargs["max_execution_batch_size"] = 0
    elif not kwargs["enable_large_batch_splitting"]:
        log.warning("%s: max_execution_batch_size is ignored without "
                    "enable_large_batch_splitting { value: true } (as in TF Serving)", source)
        kwargs["max_execution_batch_size"] = 0
    elif kwargs["max_execution_batch_size"] <= 0:
        raise _fail(source, "max_execution_batch_size",
                    f"must be positive; was {kwargs['max_execution_batch_size']}")
    if kwargs["max_enqueued_batches"] == 0 and not kwargs["enable_large_batch_splitting"]:
        # TF Serving rewrites 0 to 1 here, for old low-traffic models that rely on it.
        kwargs["max_enqueued_batches"] = 1
    return _build(kwargs, source)


def _build(kwargs: dict, source: str) -> BatchingParameters:
    """Like the constructor, but validation errors name ``source`` (the file)."""
    params = object.__new__(BatchingParameters)
    for name, value in kwargs.items():
        object.__setattr__(params, name, value)
    if not params.enable_large_batch_splitting or params.max_execution_batch_size == 0:
        object.__setattr__(params, "max_execution_batch_size", params.max_batch_size)
    _validate(params, source)
    return params


def load_batching_parameters(path: Path | None) -> BatchingParameters:
    """Read ``--batching_parameters_file``; ``None`` gives TF Serving's defaults."""
    if path is None:
        return BatchingParameters()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"{path}: cannot read batching parameters: {error.strerror}") from None
    return parse_batching_parameters(text, str(path))
