"""Is the load generator itself keeping up? Its CPU, event-loop lag, late sends and CPU steal.

A generator that is short of CPU measures its own queueing instead of the server's latency.
The thresholds below decide when a trial is marked invalid; each failed check adds a reason
that says what was measured and what the limit is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Model Analyzer caps the generator's CPU at 80%.
MAX_GENERATOR_CPU_PERCENT = 80.0
# Open loop: p99 of (actual send - scheduled send) may be at most the larger of these.
MAX_LATENESS_P99_FLOOR_US = 2_000
MAX_LATENESS_P99_FRACTION = 0.10
# perf_analyzer flags a send more than 1 ms late and warns when over 1% are late.
LATE_SEND_US = 1_000
# p99 delay of a 10 ms timer in the generator's event loop beyond which it is overloaded.
MAX_LOOP_LAG_P99_US = 5_000
LOOP_LAG_PERIOD_S = 0.010
# Share of CPU time the hypervisor gave to other guests beyond which timings are suspect.
MAX_STEAL_PERCENT = 10.0
# More errors than this (timeouts included) and fast failures could flatter the percentiles.
MAX_ERROR_FRACTION = 0.01


@dataclass(frozen=True)
class CpuTimes:
    """Whole-machine CPU counters from /proc/stat (jiffies)."""

    total: int
    steal: int

    @classmethod
    def read(cls, path: Path = Path("/proc/stat")) -> "CpuTimes | None":
        try:
            first = path.read_text().splitlines()[0].split()
        except OSError:
            return None
        if first[0] != "cpu":
            raise ValueError(f"{path}: first line is not the aggregate 'cpu' line")
        values = [int(v) for v in first[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user.
        total = sum(values[:8])
        steal = values[7] if len(values) > 7 else 0
        return cls(total=total, steal=steal)


def steal_percent(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """Share of all CPU time stolen by the hypervisor between two readings (None if unknown)."""
    if before is None or after is None or after.total <= before.total:
        return None
    return 100.0 * (after.steal - before.steal) / (after.total - before.total)


def lateness_limit_us(measured_p99_us: float) -> float:
    """The largest p99 lateness an open-loop trial may have and still be valid."""
    return max(MAX_LATENESS_P99_FLOOR_US, MAX_LATENESS_P99_FRACTION * measured_p99_us)


def health_reasons(health: dict[str, Any], latency_p99_us: float | None) -> list[str]:
    """Why the generator could not be trusted in this trial (empty when it could)."""
    reasons = []
    for worker, cpu in enumerate(health.get("worker_cpu_percent", [])):
        if cpu > MAX_GENERATOR_CPU_PERCENT:
            reasons.append(f"load generator worker {worker} used {cpu:.0f}% CPU "
                           f"(limit {MAX_GENERATOR_CPU_PERCENT:.0f}%)")
    lag = health.get("loop_lag_p99_us")
    if lag is not None and lag > MAX_LOOP_LAG_P99_US:
        reasons.append(f"load generator event-loop lag p99 {lag / 1000:.1f} ms "
                       f"(limit {MAX_LOOP_LAG_P99_US / 1000:.1f} ms)")
    lateness = health.get("lateness_p99_us")
    if lateness is not None and latency_p99_us is not None:
        limit = lateness_limit_us(latency_p99_us)
        if lateness > limit:
            reasons.append(f"open-loop sends late: p99 lateness {lateness / 1000:.2f} ms "
                           f"> limit {limit / 1000:.2f} ms (max of 2 ms and 10% of p99)")
    steal = health.get("steal_percent")
    if steal is not None and steal > MAX_STEAL_PERCENT:
        reasons.append(f"CPU steal {steal:.1f}% (limit {MAX_STEAL_PERCENT:.0f}%)")
    return reasons
