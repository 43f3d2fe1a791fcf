"""What the trial process tells a load-generator worker (kept apart from the worker module,
which monkey-patches with gevent the moment it is imported)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Fault injection for the proof tests: the share of the time a planted greenlet burns CPU.
PLANT_BURNER_ENV = "POOCHLAB_PLANT_GENERATOR_BURNER"


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    settings: Any  # LoadSettings
    client: Any  # ClientConfig
    workload: Any  # Workload
    prefill: bool  # worker 0 fills the cache with the workload's hot set before measuring
    record: bool = True  # False only to measure what recording costs (benchmark)
