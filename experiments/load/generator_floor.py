"""The generator's own floor: the same client path at the same load against the echo server.

Saved once per sweep and shown next to every result, so a reader knows how much of a latency is
the instrument (client library, Locust, recorder, loopback) rather than the server. The floor
uses the trial's protocol, library and request format but neither cache nor fallback: those
are part of the system under test, not of the instrument.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from poochlab.clients.config import ClientConfig
from poochlab.experiments.load.echo_server import start_echo_server
from poochlab.experiments.load.settings import LoadSettings
from poochlab.experiments.load.trial import measure_trial
from poochlab.experiments.load.workload import Workload
from poochlab.experiments.recording.histograms import merge_encoded, summarize
from poochlab.experiments.records import TrialRecord


def measure_generator_floor(settings: LoadSettings, client: ClientConfig, workload: Workload, *,
                            run_id: str = "floor", save_to: Path | str | None = None,
                            progress: Callable[[dict[str, Any]], None] | None = None,
                            with_cache: bool = False, redis_pid: int | None = None) -> TrialRecord:
    """Measure ``settings`` with ``client``'s path against a fresh echo server.

    Returns the floor as a TrialRecord (factors: protocol, library, mode, load) and saves it to
    ``save_to`` when given. Its percentiles are what the generator adds at that load.
    ``with_cache``: keep the client's Redis cache and the workload's hit ratio, to learn what
    the generator can send when it also runs the cache client (its CPU is the generator's).
    """
    floor_workload = workload if with_cache else dataclasses.replace(workload, cache_hit_ratio=None, zipf_s=None)
    with start_echo_server(grpc=client.protocol == "grpc") as echo:
        floor_client = dataclasses.replace(
            client, rest_url=echo.rest_url, fallback=None, cache=client.cache if with_cache else None,
            grpc_target=echo.grpc_target if client.protocol == "grpc" else client.grpc_target)
        factors = {"protocol": client.protocol, "library": client.resolved_library, "mode": settings.mode,
                   "users": settings.users if settings.mode == "closed" else None,
                   "rate_rps": settings.rate_rps if settings.mode == "open" else None,
                   "instances": workload.instances}
        name = "-".join(f"{v}" for v in factors.values() if v is not None)
        record = TrialRecord(run_id=run_id, trial_id=f"floor-{name}", config_id=f"floor-{name}", repetition=0,
                             factors=factors, seed=settings.seed)
        measure_trial(settings, floor_client, floor_workload, record, server_pid=echo.pid, progress=progress,
                      redis_pid=redis_pid if with_cache else None)
    if save_to is not None:
        record.save(Path(save_to))
    return record


def floor_summary(record: TrialRecord) -> dict[str, float]:
    """The floor's latency percentiles (microseconds) over its result windows."""
    chosen = record.result_windows()
    return summarize(merge_encoded(w.histogram for w in chosen))
