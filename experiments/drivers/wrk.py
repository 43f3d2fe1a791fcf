"""The wrk driver: REST load from ``wrk`` (C, closed loop: each connection waits for its answer).

One Lua script serves every bench: it posts a fixed body and, when wrk is done, prints one JSON
line with the request and error counts and wrk's whole latency histogram (microseconds, every
timed response), which becomes the run's HdrHistogram, so percentiles are read the lab's one way
(``recording/histograms.py``) and never from wrk's rounded summary. wrk times non-2xx answers
too: they are in the histogram and counted in ``errors_by_kind["status"]``; callers decide.

wrk corrects its latency histogram for coordinated omission before it reports anything (its
``stats_correct``: values at the mean interval per connection are added for each slow response),
so the histogram can hold more values than ``requests``; its ``--latency`` percentiles come from
the same corrected histogram, so benches that read those before read the same data now.

``server_timing``: also collect each response's ``Server-Timing: compute;dur=`` (the lab
server's own compute) into the window's server-compute histogram. A Lua ``response`` hook slows
wrk's own timing, so a bench runs this apart from the run whose latency it reports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poochlab.experiments.drivers.interface import DriverError, LoadRun, one_window
from poochlab.experiments.recording.histograms import histogram_of, histogram_of_counts

RESULT_PREFIX = "POOCHLAB_WRK "
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")

_DONE_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local e = summary.errors
  local bins = {}
  for i = 1, #latency do
    local value, count = latency(i)
    bins[#bins + 1] = string.format("[%d,%d]", value, count)
  end
  local computes = {}
  for _, thread in ipairs(threads) do
    local mine = thread:get("computes")
    if mine then
      for _, dur in ipairs(mine) do computes[#computes + 1] = string.format("%.6f", dur) end
    end
  end
  io.write(string.format(
    'POOCHLAB_WRK {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d}, "latency_us": [%s], "server_compute_ms": [%s]}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(bins, ","), table.concat(computes, ",")))
end
"""

# Per thread: the compute durations of the lab server's Server-Timing header, read by done().
_SERVER_TIMING_LUA = """
function init(args) computes = {} end
function response(status, headers, body)
  local value = headers["Server-Timing"]
  local dur = value and value:match("compute;dur=([0-9.]+)")
  if dur then computes[#computes + 1] = tonumber(dur) end
end
"""


def _lua_string(text: str) -> str:
    """``text`` as a Lua long string whose brackets cannot occur inside it."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(body: bytes, server_timing: bool = False) -> str:
    """The Lua script that posts ``body`` as JSON and prints the run's result."""
    request = (f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
               f"wrk.body = {_lua_string(body.decode())}\n")
    return request + (_SERVER_TIMING_LUA if server_timing else "") + _DONE_LUA


def wrk_installed() -> bool:
    return shutil.which("wrk") is not None


@dataclass(frozen=True)
class WrkDriver:
    """``connections`` keep-alive connections on ``threads`` wrk threads, posting ``body`` to
    ``url`` for ``seconds`` (whole seconds, at least 1: wrk's unit)."""

    url: str
    body: bytes
    connections: int = 1
    seconds: float = 1.0
    threads: int = 1
    timeout_s: float | None = None  # wrk's own default (2 s) when None
    cpus: frozenset[int] | None = None  # run wrk on these CPUs only (taskset)
    server_timing: bool = False

    def command(self, script: Path) -> list[str]:
        command = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(self.seconds))}s"]
        if self.timeout_s is not None:
            command += ["--timeout", f"{self.timeout_s:g}s"]
        command += ["-s", str(script), self.url]
        if self.cpus:
            command = ["taskset", "-c", ",".join(map(str, sorted(self.cpus)))] + command
        return command

    def run(self) -> LoadRun:
        with tempfile.TemporaryDirectory(prefix="wrk-driver-") as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(wrk_script(self.body, self.server_timing))
            command = self.command(script)
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.seconds + 60)
        return parse_result(done.stdout, done.stderr, command)


def parse_result(stdout: str, stderr: str, command: list[str]) -> LoadRun:
    """The run from wrk's output (the script's one result line)."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
            break
    else:
        raise DriverError(f"wrk printed no result ({' '.join(command)}):\n{stdout}\n{stderr.strip()[:2000]}")
    computes = result["server_compute_ms"]
    errors = {kind: int(result["errors"][kind]) for kind in ERROR_KINDS if result["errors"][kind]}
    window = one_window(histogram_of_counts(result["latency_us"]), int(result["requests"]), errors,
                        histogram_of(ms * 1e3 for ms in computes) if computes else None)
    return LoadRun(window, int(result["duration_us"]) / 1e6, details={"latency_us": result["latency_us"]})
