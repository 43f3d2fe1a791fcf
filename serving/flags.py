"""``tensorflow_model_server``'s command line: TF Serving's flag names, syntax and defaults.

Flags are written ``--name=value`` (booleans also ``--name``), as TF Serving's parser wants.
Real TF Serving flags the lab does not implement are accepted with a warning naming them;
anything else is an error. Flags of the lab's own start with ``--lab_``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from poochlab.serving.fault_injection import FaultPlan


class FlagError(ValueError):
    """A command line TF Serving would refuse (or the lab cannot honour)."""


def _cpus() -> int:
    # The machine's CPUs, as TF Serving counts them (not this process's affinity: a server
    # pinned to one core still gets TF Serving's thread counts).
    return os.cpu_count() or 1


@dataclass
class ServerOptions:
    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = field(default_factory=lambda: 4 * _cpus())
    grpc_max_threads: int = field(default_factory=lambda: 4 * _cpus())
    grpc_channel_arguments: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    enable_signature_method_name_check: bool = False
    version: bool = False
    # The lab's own flags (TF Serving has no equivalent).
    lab_bind_address: str = "127.0.0.1"
    lab_max_request_bytes: int = 64 * 1024 * 1024
    lab_max_queue: int = 0  # load shedding (serving/admission.py); 0: unbounded, as TF Serving
    # Fault injection (serving/fault_injection.py): off unless a delay or an error code is given.
    lab_fault_delay_ms: float = 0.0
    lab_fault_delay_fraction: float = 1.0
    lab_fault_error_code: str = ""
    lab_fault_error_fraction: float = 1.0
    lab_fault_seed: int = 0
    lab_fault_admin: bool = False
    ignored_flags: list[str] = field(default_factory=list)


# Real TF Serving flags the lab parses but does not act on (accepted with a warning).
UNIMPLEMENTED_TF_SERVING_FLAGS = frozenset({
    "grpc_socket_path", "rest_api_enable_cors_support", "enable_grpc_healthcheck_service",
    "allow_version_labels_for_unavailable_models", "max_num_load_retries", "load_retry_interval_micros",
    "num_load_threads", "num_unload_threads", "platform_config_file", "ssl_config_file",
    "per_process_gpu_memory_fraction", "saved_model_tags",
    "xla_cpu_compilation_enabled", "flush_filesystem_caches", "tensorflow_session_parallelism",
    "tensorflow_session_config_file", "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model",
    "num_tflite_pools", "num_tflite_interpreters_per_pool", "num_tflite_interpreters",
    "enable_profiler", "skip_initialize_tpu", "thread_pool_factory_config_file", "mixed_precision",
    "use_tflite_model", "use_alts_credentials", "model_base_path_prefix", "enable_cors",
    "enable_batching_for_tflite", "rest_api_num_threads_for_batching", "grpc_max_message_size",
})

HELP = """usage: tensorflow_model_server [--flag=value ...]   (the lab's TF-Serving-compatible server)

TF Serving's flags (defaults as in TF Serving):
  --port=8500                               gRPC port
  --rest_api_port=0                         REST port (0: REST off)
  --model_name=default --model_base_path=   one model (ignored with --model_config_file)
  --model_config_file=                      ModelServerConfig text proto (models.config)
  --model_config_file_poll_wait_seconds=0   re-read the config file every N s (0: once)
  --file_system_poll_wait_seconds=1         look for new version folders every N s (0: once)
  --enable_batching=false                   server-side batching
  --batching_parameters_file=               BatchingParameters text proto (needs --enable_batching)
  --monitoring_config_file=                 MonitoringConfig text proto (Prometheus on the REST port)
  --rest_api_timeout_in_ms=30000            REST deadline (504 when it passes)
  --rest_api_num_threads=4xCPUs             model threads for REST and gRPC requests
  --grpc_max_threads=4xCPUs                 concurrent gRPC calls before RESOURCE_EXHAUSTED
  --grpc_channel_arguments=                 key=value,key=value (grpc.* server options)
  --tensorflow_intra_op_parallelism=0       threads within one op (0: TensorFlow decides)
  --tensorflow_inter_op_parallelism=0       threads running independent ops of a graph
                                            (0: each run on the calling thread; in TF
                                            Serving, 0 lets TensorFlow size a pool)
  --enable_model_warmup=true                replay assets.extra/tf_serving_warmup_requests
  --num_request_iterations_for_warmup=1
  --enable_signature_method_name_check=false
                                            Classify/Regress only on signatures of
                                            that method (off: any with their inputs)
  --version                                 print the version and exit

The lab's own flags:
  --lab_bind_address=127.0.0.1              address for both ports (TF Serving: all interfaces;
                                            use 0.0.0.0 in containers)
  --lab_max_request_bytes=67108864          largest REST body, before or after gzip (413 above)
  --lab_max_queue=0                         refuse a request at once (UNAVAILABLE / 503) when this
                                            many wait for or run the model (0: unbounded)
  --lab_fault_delay_ms=0                    delay this many ms before the model runs ...
  --lab_fault_delay_fraction=1              ... for this fraction of Predict/Classify/Regress
  --lab_fault_error_code=                   fail with this TF status (e.g. UNAVAILABLE) ...
  --lab_fault_error_fraction=1              ... for this fraction of them
  --lab_fault_seed=0                        seed of the draws (same seed, same sequence)
  --lab_fault_admin=false                   GET/POST/DELETE /lab/faults on the REST port reads,
                                            sets or clears the faults while the server runs
"""


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "t", "yes"):
        return True
    if lowered in ("false", "0", "f", "no"):
        return False
    raise FlagError(f"Illegal value '{text}' specified for bool flag '{name}'")


def parse_flags(argv: Sequence[str]) -> ServerOptions:
    """TF Serving's flags into :class:`ServerOptions`; :class:`FlagError` on a bad command line."""
    options = ServerOptions()
    types = {f.name: f.type for f in fields(ServerOptions) if f.name != "ignored_flags"}
    for arg in argv:
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected argument {arg!r}: flags are written --name=value")
        body = arg.lstrip("-")
        name, has_value, text = body.partition("=")
        if name in ("help", "h", "helpfull"):
            raise FlagError(HELP)
        if name in UNIMPLEMENTED_TF_SERVING_FLAGS:
            options.ignored_flags.append(name)
            continue
        if name not in types:
            raise FlagError(f"Unknown command line flag '{name}' (see --help)")
        kind = types[name]
        if kind in (bool, "bool"):
            value: object = _parse_bool(name, text) if has_value else True
        elif not has_value:
            raise FlagError(f"flag '--{name}' needs a value: --{name}=...")
        elif kind in (int, "int"):
            try:
                value = int(text)
            except ValueError:
                raise FlagError(f"Illegal value '{text}' specified for int flag '{name}'") from None
        elif kind in (float, "float"):
            try:
                value = float(text)
            except ValueError:
                raise FlagError(f"Illegal value '{text}' specified for double flag '{name}'") from None
        else:
            value = text
        setattr(options, name, value)
    check_options(options)
    return options


def check_options(options: ServerOptions) -> None:
    """The start-up checks TF Serving makes (and the lab's own)."""
    if options.version:
        return
    if options.batching_parameters_file and not options.enable_batching:
        raise FlagError("--batching_parameters_file was given but --enable_batching is false; "
                        "batching parameters need --enable_batching=true")
    if not options.model_config_file and not options.model_base_path:
        raise FlagError("Both server_model_config and model_base_path are empty: give --model_base_path "
                        "(with --model_name) or --model_config_file")
    for name in ("port", "rest_api_port"):
        value = getattr(options, name)
        if not 0 <= value <= 65535:
            raise FlagError(f"--{name}={value} is not a port number")
    if options.rest_api_port and options.rest_api_port == options.port:
        raise FlagError("--port and --rest_api_port must be different (both are "
                        f"{options.port})")
    for name in ("rest_api_num_threads", "grpc_max_threads", "num_request_iterations_for_warmup",
                 "lab_max_request_bytes"):
        if getattr(options, name) <= 0:
            raise FlagError(f"--{name} must be positive, got {getattr(options, name)}")
    for name in ("lab_max_queue", "model_config_file_poll_wait_seconds", "file_system_poll_wait_seconds",
                 "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
        if getattr(options, name) < 0:
            raise FlagError(f"--{name} must not be negative, got {getattr(options, name)}")
    grpc_channel_arguments(options.grpc_channel_arguments)
    try:
        fault_plan(options)
    except ValueError as error:
        raise FlagError(str(error)) from None


def fault_plan(options: ServerOptions) -> "FaultPlan":
    """The ``--lab_fault_*`` flags as a plan (ValueError naming the flag when one is wrong)."""
    from poochlab.serving.fault_injection import FaultPlan, check_plan

    plan = FaultPlan(delay_ms=options.lab_fault_delay_ms, delay_fraction=options.lab_fault_delay_fraction,
                     error_code=options.lab_fault_error_code, error_fraction=options.lab_fault_error_fraction,
                     seed=options.lab_fault_seed)
    check_plan(plan, "--lab_fault_")
    return plan


def grpc_channel_arguments(text: str) -> list[tuple[str, object]]:
    """``key=value,key=value`` as gRPC options (integers where they parse)."""
    result: list[tuple[str, object]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FlagError(f"--grpc_channel_arguments: {item!r} is not key=value")
        result.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return result
