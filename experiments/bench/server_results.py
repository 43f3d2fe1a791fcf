"""``bench server``'s rows: each measured thing's p50 at concurrency 1 and server CPU per request
at concurrency 8, per round, and the median over rounds that the table shows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

# Concurrency of the CPU-per-request measurements ("concurrency 8" in the targets).
LOAD_CALLERS = 8


@dataclass
class Row:
    """One line of the table: a p50 at concurrency 1 and a server CPU per request at 8."""

    name: str
    p50_ms: float | None = None
    cpu_ms_per_request: float | None = None
    throughput: float | None = None
    notes: str = ""
    # The lab server only: its own Server-Timing compute p50 at c=1, next to the model-call baseline (a).
    server_compute_ms: float | None = None


@dataclass
class Results:
    """Every round's rows; the table shows each row's median over rounds."""

    rounds: list[dict[str, Row]] = field(default_factory=list)

    def add(self, key: str, row: Row) -> None:
        self.rounds[-1][key] = row
        print(f"  {row.name}: p50 {fmt(row.p50_ms)} ms, CPU/req {fmt(row.cpu_ms_per_request)} ms", flush=True)

    def spread(self, key: str, attribute: str) -> float:
        """max / min of one row's value over the rounds (1.0 when only one round has it)."""
        values = [getattr(r[key], attribute) for r in self.rounds if key in r]
        values = [v for v in values if v is not None and v > 0]
        return max(values) / min(values) if values else 1.0

    @property
    def rows(self) -> dict[str, Row]:
        # A median over a few rounds' figures (each round's p50 itself comes from a histogram):
        # the round a neighbour's burst hit does not move it.
        def median(values: list[float | None]) -> float | None:
            present = [v for v in values if v is not None]
            return statistics.median(present) if present else None

        merged = {}
        for key, first in self.rounds[0].items():
            rows = [r[key] for r in self.rounds if key in r]
            merged[key] = Row(first.name, median([r.p50_ms for r in rows]),
                              median([r.cpu_ms_per_request for r in rows]), median([r.throughput for r in rows]),
                              first.notes, median([r.server_compute_ms for r in rows]))
        return merged


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
