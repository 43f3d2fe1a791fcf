"""Resources a trial used: CPU time and peak memory of the server, generator and Redis; energy.

Energy comes from RAPL (``/sys/class/powercap/*/energy_uj``) when it is readable. Otherwise it is
an *estimate*: CPU seconds of the server, the generator and Redis times ``WATTS_PER_BUSY_CORE``,
always labelled ``energy_method = "estimate"``. That figure is the TDP of an AMD EPYC 7742
(225 W) divided by its 64 cores, about 3.5 W per fully busy core: it ignores idle power, memory
and uncore, so treat it as an order of magnitude for comparing configurations on one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from poochlab.experiments.records import ResourcesRecord

WATTS_PER_BUSY_CORE = 225.0 / 64  # AMD EPYC 7742 TDP per core; see the module docstring
RAPL_ROOT = Path("/sys/class/powercap")


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class ProcessWatch:
    """CPU seconds and peak RSS of one process between :meth:`start` and :meth:`stop`."""

    pid: int
    process: psutil.Process | None = None
    cpu_start: float = 0.0
    cpu_used: float | None = None
    peak_rss: int = 0

    def start(self) -> None:
        try:
            self.process = psutil.Process(self.pid)
            self.cpu_start = _cpu_seconds(self.process)
            self.sample()
        except psutil.Error:
            self.process = None

    def sample(self) -> None:
        if self.process is None:
            return
        try:
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
        except psutil.Error:
            pass

    def stop(self) -> None:
        if self.process is None:
            return
        self.sample()
        try:
            self.cpu_used = _cpu_seconds(self.process) - self.cpu_start
        except psutil.Error:
            self.cpu_used = None


def rapl_zones(root: Path = RAPL_ROOT) -> list[Path]:
    """Top-level RAPL package zones whose energy counter this user can read."""
    zones = []
    for zone in sorted(root.glob("intel-rapl:*")) if root.exists() else []:
        if zone.name.count(":") == 1 and os.access(zone / "energy_uj", os.R_OK):
            zones.append(zone)
    return zones


def _read_uj(zone: Path) -> tuple[int, int]:
    energy = int((zone / "energy_uj").read_text())
    try:
        wrap = int((zone / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        wrap = 0
    return energy, wrap


@dataclass
class ResourceMonitor:
    """Watches the server, generator workers and Redis over a trial's measurement phase."""

    server_pid: int | None
    generator_pids: list[int]
    redis_pid: int | None
    _server: ProcessWatch | None = None
    _generators: list[ProcessWatch] = field(default_factory=list)
    _redis: ProcessWatch | None = None
    _rapl_start: dict[Path, tuple[int, int]] = field(default_factory=dict)
    _wall_start: float = 0.0

    def start(self, now: float) -> None:
        self._wall_start = now
        self._server = ProcessWatch(self.server_pid) if self.server_pid else None
        self._redis = ProcessWatch(self.redis_pid) if self.redis_pid else None
        self._generators = [ProcessWatch(pid) for pid in self.generator_pids]
        for watch in self._watches():
            watch.start()
        for zone in rapl_zones():
            try:
                self._rapl_start[zone] = _read_uj(zone)
            except (OSError, ValueError):
                pass

    def _watches(self) -> list[ProcessWatch]:
        return [w for w in (self._server, self._redis, *self._generators) if w is not None]

    def sample(self) -> None:
        for watch in self._watches():
            watch.sample()

    def stop(self, now: float) -> ResourcesRecord:
        """The trial's resources (the fields of TrialRecord.resources this monitor owns)."""
        wall = max(now - self._wall_start, 1e-9)
        for watch in self._watches():
            watch.stop()
        generator_cpu = [w.cpu_used for w in self._generators if w.cpu_used is not None]
        result = ResourcesRecord(
            wall_s=wall,
            server_cpu_s=self._server.cpu_used if self._server else None,
            server_peak_rss_bytes=self._server.peak_rss if self._server else None,
            generator_cpu_s=sum(generator_cpu),
            generator_cpu_percent=[100.0 * c / wall for c in generator_cpu],
            redis_cpu_s=self._redis.cpu_used if self._redis else None,
        )
        joules = 0.0
        for zone, (start, wrap) in self._rapl_start.items():
            try:
                end, _ = _read_uj(zone)
            except (OSError, ValueError):
                continue
            joules += ((end - start) % wrap if wrap else end - start) / 1e6
        if self._rapl_start:
            result.energy_joules, result.energy_method = joules, "rapl"
        else:
            cpu = sum(v for v in (result.server_cpu_s, result.redis_cpu_s) if v) + sum(generator_cpu)
            result.energy_joules, result.energy_method = cpu * WATTS_PER_BUSY_CORE, "estimate"
            result.energy_watts_per_core = WATTS_PER_BUSY_CORE
        return result
