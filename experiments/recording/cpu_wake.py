"""Keeping idle CPUs from halting while the lab measures: a PM QoS CPU latency request.

On our machines (firecracker VMs whose idle vCPUs halt, cpuidle driver haltpoll) a halted vCPU
waits for the host to run it again. Measured with a Python loop that only sleeps until the next
0.5 ms slot on the generator's core: with 10-30% of the core busy it woke late by p99 2.2-2.9 ms
and the host counted 11-14% of the core's time as steal; with `/dev/cpu_dma_latency` held at 0
the same loop woke late by p99 0.11-0.13 ms at every load and steal vanished. Light load is where
it hurts: a generator sending 90 requests/s is idle most of the time, so its sends go late and its
trials read as generator-limited or stolen.

Linux keeps a CPU out of idle states slower to leave than N us for as long as some process holds
``/dev/cpu_dma_latency`` open with N written to it (tuned's latency-performance profile does the
same); with 0, idle CPUs poll. It covers every CPU, so the server's core stays awake too: the
latencies then hold no host wake-ups, which is what a benchmark of serving choices wants, and
the vCPUs spin while the run lasts, which a shared host pays for. Closing the file (or the process
ending) releases it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CPU_LATENCY_DEVICE = Path("/dev/cpu_dma_latency")


@dataclass(frozen=True)
class CpuWakeState:
    """Whether the CPUs were kept awake, and why not when they were asked to be."""

    asked: bool
    held: bool
    detail: str

    def as_record(self) -> dict[str, object]:
        return {"asked": self.asked, "held": self.held, "detail": self.detail}


class CpusAwake:
    """``with CpusAwake(wanted) as state:`` holds the request while the block runs (when
    ``wanted``); ``state`` says what was held. A machine that cannot hold it (no such device, not
    root) runs as it is, and ``state.detail`` says why."""

    def __init__(self, wanted: bool, device: Path = CPU_LATENCY_DEVICE) -> None:
        self.wanted = wanted
        self.device = device
        self._fd = -1
        self.state = CpuWakeState(False, False, "not asked: idle CPUs may halt")

    def __enter__(self) -> CpuWakeState:
        if not self.wanted:
            return self.state
        try:
            fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as error:
            self.state = CpuWakeState(True, False, f"not held: cannot open {self.device}: {error.strerror}")
            return self.state
        try:
            os.write(fd, struct.pack("i", 0))  # the kernel reads a 32-bit latency in microseconds
        except OSError as error:
            os.close(fd)
            self.state = CpuWakeState(True, False, f"not held: writing 0 to {self.device}: {error.strerror}")
            return self.state
        self._fd = fd
        self.state = CpuWakeState(True, True, f"held: {self.device} at 0 us, idle CPUs poll instead of halting")
        return self.state

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def current_cpu_latency_us(device: Path = CPU_LATENCY_DEVICE) -> int | None:
    """The latency every CPU is held to now (the strictest request of all holders), or None
    where it cannot be read."""
    try:
        with open(device, "rb") as file:
            raw = file.read(4)
    except OSError:
        return None
    return struct.unpack("i", raw)[0] if len(raw) == 4 else None
