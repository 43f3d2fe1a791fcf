"""Keeping idle CPUs polling during a bench (``--keep-cpus-awake``), through the kernel's PM QoS."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Iterator

CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")


class KeepAwakeError(RuntimeError):
    """The CPU latency request could not be made (not root, or no PM QoS device)."""


@contextlib.contextmanager
def cpus_kept_awake(device: Path = CPU_DMA_LATENCY) -> Iterator[None]:
    """Hold the kernel's PM QoS CPU latency request at 0 us: idle CPUs poll instead of halting.

    On our VMs an idle vCPU halts (cpuidle ``haltpoll``), and each wake-up on a request's arrival
    costs tens of microseconds: the REST echo's p50 at one client is 0.07 ms with halting and
    0.02 ms without. The request holds only while the file stays open (root only), as in
    tuned's latency-performance profile; every row of the run is measured under it alike.
    """
    try:
        handle = os.open(device, os.O_WRONLY)
    except OSError as error:
        raise KeepAwakeError(f"--keep-cpus-awake: cannot open {device}: {error.strerror} "
                             "(it needs root and a kernel with PM QoS)") from None
    try:
        try:
            os.write(handle, struct.pack("i", 0))
        except OSError as error:
            raise KeepAwakeError(f"--keep-cpus-awake: cannot write to {device}: {error.strerror}") from None
        yield
    finally:
        os.close(handle)
