"""What the trial process tells a load-generator worker (kept apart from the worker module,
which monkey-patches with gevent the moment it is imported)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the worker imports this module before gevent patches: nothing heavy at run time
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.load.settings import LoadSettings
    from poochlab.experiments.load.workload import Workload

# Fault injection for the proof tests: the share of the time a planted greenlet burns CPU.
PLANT_BURNER_ENV = "POOCHLAB_PLANT_GENERATOR_BURNER"
# ... and "stall_ms,every_ms,until_s": the generator's hub blocks for stall_ms every every_ms from
# the measurement start until until_s after it (the host taking the CPU, on demand).
PLANT_STALL_ENV = "POOCHLAB_PLANT_GENERATOR_STALL"


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    settings: LoadSettings
    client: ClientConfig
    workload: Workload
    prefill: bool  # worker 0 fills the cache with the workload's hot set before measuring
    record: bool = True  # False only to measure what recording costs (benchmark)


# The worker's command-line word for how it sends: decided by the trial process, so the worker
# patches with gevent before it imports anything (a lock or event created by a module imported
# before the patch stays an OS primitive and, waited on in a greenlet, stalls the whole hub).
SENDS_ON_THREADS = "threads"
SENDS_ON_GREENLETS = "greenlets"


def sends_on_threads(client: ClientConfig, closed_loop: bool = False) -> bool:
    """gRPC, with or without its Redis cache, goes out on OS threads (thread_sender.py), except a
    closed loop on the lean client: its users' greenlets call it on gevent's sockets, with no
    hand-off to a thread and back on each call (what a concurrency-1 comparison with a bare loop
    measures). The supervised predictor (deadline threads, breaker) keeps the gevent path.
    ``POOCHLAB_GRPC_SENDER``: "threads" always sends gRPC on threads, "gevent" on grpcio's gevent
    integration (both for ``poochlab bench generator``'s comparisons)."""
    from poochlab.experiments.load.settings import GRPC_SENDER_ENV

    if client.protocol != "grpc" or client.fallback is not None:
        return False
    setting = os.environ.get(GRPC_SENDER_ENV, "auto")
    if setting in ("threads", "gevent"):
        return setting == "threads"
    return not (closed_loop and client.resolved_library == "lean")
