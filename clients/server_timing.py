"""The lab server's per-request queue and compute times, from REST headers or gRPC metadata.

The lab's server answers ``Server-Timing: queue;dur=<ms>, compute;dur=<ms>`` (the W3C header
syntax) on REST and puts the same text in gRPC trailing metadata under ``server-timing``.
Real TF Serving sends neither; absence (or anything unparseable) gives None, never an error:
the timing is a bonus, the prediction is what matters.
"""

from __future__ import annotations

from typing import Iterable

from poochlab.wire import SERVER_TIMING_COMPUTE, SERVER_TIMING_METADATA_KEY, SERVER_TIMING_QUEUE

GRPC_METADATA_KEY = SERVER_TIMING_METADATA_KEY


# The lab server's own header ("queue;dur=<ms>, compute;dur=<ms>", wire.server_timing_value) is
# read on every timed call: a short path for exactly that, the general parser for anything else.
_QUEUE_PREFIX = f"{SERVER_TIMING_QUEUE};dur="
_COMPUTE_PREFIX = f"{SERVER_TIMING_COMPUTE};dur="


def parse_server_timing(value: str | None) -> tuple[float | None, float | None]:
    """``(queue_us, compute_us)`` from a Server-Timing value; None for each missing metric."""
    if not value:
        return None, None
    queue, _, compute = value.partition(", ")
    if queue.startswith(_QUEUE_PREFIX) and compute.startswith(_COMPUTE_PREFIX):
        try:
            return float(queue[len(_QUEUE_PREFIX):]) * 1000.0, float(compute[len(_COMPUTE_PREFIX):]) * 1000.0
        except ValueError:
            pass  # the general parser keeps whatever it can
    durations: dict[str, float] = {}
    for metric in value.split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key.strip() == "dur":
                try:
                    durations[name.strip()] = float(number.strip().strip('"')) * 1000.0
                except ValueError:
                    pass
    return durations.get(SERVER_TIMING_QUEUE), durations.get(SERVER_TIMING_COMPUTE)


def server_timing_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[float | None, float | None]:
    """The same from gRPC trailing metadata (keys are lower-case there)."""
    for key, value in metadata or ():
        if key == GRPC_METADATA_KEY:
            return parse_server_timing(value.decode("latin-1") if isinstance(value, bytes) else value)
    return None, None
