"""The Locust command driver: Locust's own runner (one process, ``--processes N``) running a
locustfile that records the lab's way (``load/distributed_recording.py``), behind the driver
interface.

It runs ``locust --headless`` with ``--hdr-output`` and reads that file: the merged histogram of
every request name (microseconds, unrounded) and the errors by kind. Nothing about the recording
changes; Locust's own rounded statistics are never read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from poochlab.experiments.drivers.interface import DriverError, LoadRun
from poochlab.experiments.recording.windows import WindowData

LOCUST = Path(sys.executable).parent / "locust"


@dataclass(frozen=True)
class LocustCommandDriver:
    """``users`` Locust users of ``locustfile`` against ``host`` for ``seconds`` (whole seconds);
    ``processes`` > 1 forks that many Locust workers; ``warmup_s`` leaves the first seconds of each
    worker out of the histograms (``--hdr-warmup``)."""

    locustfile: Path
    host: str
    users: int = 1
    seconds: float = 3.0
    processes: int = 1
    warmup_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    def command(self, output: Path) -> list[str]:
        command = [str(LOCUST), "-f", str(self.locustfile), "--headless", "-u", str(self.users),
                   "-r", str(self.users), "-t", f"{max(1, round(self.seconds))}s", f"--host={self.host}",
                   f"--hdr-output={output}", "--exit-code-on-error=0"]
        if self.processes > 1:
            command.append(f"--processes={self.processes}")
        if self.warmup_s > 0:
            command.append(f"--hdr-warmup={self.warmup_s:g}")
        return command

    def run(self) -> LoadRun:
        with tempfile.TemporaryDirectory(prefix="locust-driver-") as tmp:
            output = Path(tmp) / "hdr.json"
            command = self.command(output)
            started = time.monotonic()
            done = subprocess.run(command, cwd=self.cwd, capture_output=True, text=True,
                                  timeout=self.seconds + 120, env={**os.environ, **self.env})
            wall = time.monotonic() - started
            if done.returncode != 0 or not output.is_file():
                raise DriverError(f"Locust wrote no result ({' '.join(command)}), exit {done.returncode}:\n"
                                  f"{done.stderr[-2000:]}")
            result = json.loads(output.read_text())
        aggregated = result["aggregated"]
        window = WindowData(index=0, requests=int(aggregated["count"]),
                            errors_by_kind={str(k): int(v) for k, v in aggregated["errors_by_kind"].items()},
                            histogram=aggregated["histogram"], corrected_histogram=None, lateness_histogram=None,
                            server_queue_histogram=None, server_compute_histogram=None, client_timing_sums_us={},
                            answer_paths={})
        # Locust's start and stop are not load: the reports say when requests ran (each worker's
        # clock, one machine), else the whole command's time stands in.
        spans = [(r["since"], r["until"]) for r in result["reports"] if "since" in r and "until" in r]
        if spans:
            wall = max(until for _, until in spans) - min(since for since, _ in spans)
        return LoadRun(window, wall, details={"result": result})
