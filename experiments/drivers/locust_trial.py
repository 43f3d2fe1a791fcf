"""The Locust driver: the lab's own load generator (Locust workers, the open-loop or closed-loop
sender, the window recorder), exactly as a sweep's trial runs it, behind the driver interface.

It only calls :func:`~poochlab.experiments.load.trial.measure_trial` and merges the windows the
trial keeps for its result (the stable ones) into one: nothing about how the trial sends, records
or judges changes. The whole :class:`~poochlab.experiments.records.TrialRecord` (validity,
generator health, resources, every window) is in ``LoadRun.details["record"]``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from poochlab.experiments.drivers.interface import LoadRun
from poochlab.experiments.recording.histograms import encode, merge_encoded
from poochlab.experiments.recording.merge import merged_histogram_text
from poochlab.experiments.recording.windows import WindowData

if TYPE_CHECKING:
    from poochlab.experiments.load.settings import LoadSettings
    from poochlab.experiments.load.workload import Workload
    from poochlab.experiments.records import TrialRecord


def bench_record(name: str, run_id: str = "bench") -> "TrialRecord":
    """An empty record for a trial a bench runs outside any sweep."""
    from poochlab.experiments.records import TrialRecord

    return TrialRecord(run_id=run_id, trial_id=name, config_id=name, repetition=0, factors={}, seed=0)


@dataclass(frozen=True)
class LocustTrialDriver:
    """One trial of ``settings`` (mode, rate or users, windows) with ``client`` and ``workload``;
    its length is the trial's own (warm-up plus windows until stable)."""

    settings: "LoadSettings"
    client: Any  # a ClientConfig
    workload: "Workload"
    name: str
    run_id: str = "bench"
    server_pid: int | None = None
    record_requests: bool = True  # False: workers count answers only (what recording costs)

    def run(self) -> LoadRun:
        from poochlab.experiments.load.trial import measure_trial

        record = measure_trial(self.settings, self.client, self.workload, bench_record(self.name, self.run_id),
                               server_pid=self.server_pid, _record_requests=self.record_requests)
        return run_of_record(record)


def run_of_record(record: "TrialRecord") -> LoadRun:
    """A trial's result windows as one run (its errors are the trial's, by kind)."""
    chosen = record.result_windows()
    window = WindowData(
        index=0, requests=sum(w.requests for w in chosen), errors_by_kind=dict(Counter(record.errors_by_kind)),
        histogram=encode(merge_encoded(w.histogram for w in chosen)),
        corrected_histogram=merged_histogram_text(w.corrected_histogram for w in chosen),
        lateness_histogram=None, server_queue_histogram=None, server_compute_histogram=None,
        client_timing_sums_us={}, answer_paths=dict(record.answer_paths or {}))
    wall = sum(w.duration_s for w in chosen)
    cpu = record.resources.generator_cpu_s
    return LoadRun(window, wall, cpu, details={"record": record})
