"""``poochlab bench server``: is the lab's server close to the floor of its parts?

In one run, with servers pinned to one core and clients to another (when there are two):

(a) the model's compute floor: the Pooch Predictor's ``serving_default`` called in-process
    (batch 1) through the same session call the lab server makes (Session::Run on the caller's
    thread) — p50 with one caller, CPU per call with 8 threads calling;
(b) minimal echo servers on two Python HTTP stacks (asyncio+httptools on uvloop, uvicorn) and
    two gRPC stacks (grpc sync thread pool, grpc.aio), driven by the same clients as the lab
    server; the first of each is the stack the lab server is built on (its "matching echo");
    and the matching echoes again, calling (a)'s model call once per request: the floor of
    any server on that stack that runs the model;
(c) the lab's server end to end (REST and gRPC, no batching).

Clients: ``wrk`` (C) for REST, a raw grpcio channel (pre-serialized request bytes) for gRPC.
At concurrency 1 the p50 latency; at concurrency 8 the server process's own CPU time per
request (psutil). Checks against issue 3's targets:
p50(lab) <= 1.15 x (p50(echo of its stack) + p50(compute)) and
CPU/req(lab) <= 1.15 x (CPU/req(echo) + CPU/call(model, 8 threads)).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE = REPO_ROOT / "models" / "servables" / "small" / "pooch_predictor"
PUPDATE: dict[str, Any] = {"hashtags": "#corgi #adorable #puppy", "country": "GB", "followers": 1200}
REST_BODY = json.dumps({"instances": [PUPDATE]}).encode()
TARGET_RATIO = 1.15
# Concurrency of the CPU-per-request measurements (the "concurrency 8").
LOAD_CALLERS = 8


@dataclass
class Row:
    """One line of the table: a p50 at concurrency 1 and a server CPU per request at 8."""

    name: str
    p50_ms: float | None = None
    cpu_ms_per_request: float | None = None
    throughput: float | None = None
    notes: str = ""
    # The lab server only: its own Server-Timing compute p50 at c=1, next to the floor's (a).
    server_compute_ms: float | None = None


@dataclass
class Placement:
    server: set[int] | None
    client: set[int] | None

    @classmethod
    def detect(cls) -> "Placement":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)
        return cls({cpus[0]}, set(cpus[1:]))

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process whose every thread runs on the server core(s)."""
        return _pinned(self.server, self.client, lambda: subprocess.Popen(command, **kwargs))


def _pinned(start_cpus: set[int] | None, back_cpus: set[int] | None, start: Callable[[], Any]) -> Any:
    # Children inherit the parent's affinity, threads included: pin ourselves, start, pin back.
    if start_cpus is None:
        return start()
    os.sched_setaffinity(0, start_cpus)
    try:
        return start()
    finally:
        os.sched_setaffinity(0, back_cpus or start_cpus)


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


# ---- (a) compute floor, in a pinned child process -------------------------------------

def model_call(base_path: str) -> Callable[[], object]:
    """The latest version's ``serving_default`` called on :data:`PUPDATE`, warmed up: the one
    call that the floor (a) and the echo + model call servers (b) both time, and the one the
    lab server makes (:class:`~poochlab.serving.servable.Servable`)."""
    import numpy as np

    from poochlab.serving.model_manager import version_folders
    from poochlab.serving.servable import Servable

    folders = version_folders(base_path)
    if not folders:
        raise SystemExit(f"no model version under {base_path} (expected <base>/<version>/saved_model.pb)")
    version = max(folders)  # read from the folder found: its name may carry leading zeros
    signature = Servable("pooch_predictor", version, folders[version]).signature("serving_default")
    inputs = {
        "hashtags": np.array([PUPDATE["hashtags"].encode()], dtype=object),
        "country": np.array([PUPDATE["country"].encode()], dtype=object),
        "followers": np.array([PUPDATE["followers"]], dtype=np.int64),
    }
    for _ in range(50):  # the first calls build TensorFlow's kernels
        signature.compute(inputs)
    return lambda: signature.compute(inputs)


def compute_floor_main(base_path: str, calls: int, seconds: float) -> None:
    """Child process: for each line on stdin, print JSON with the signature's p50 (one caller)
    and its CPU per call with 8 threads calling."""
    call = model_call(base_path)
    print("ready", flush=True)
    for _ in sys.stdin:
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        before = os.times()
        completed = closed_loop(call, LOAD_CALLERS, seconds)
        after = os.times()
        cpu = (after.user - before.user) + (after.system - before.system)
        print(json.dumps({"p50_ms": statistics.median(samples) * 1e3, "cpu_ms_per_call": cpu / completed * 1e3,
                          "calls_per_s": completed / seconds}), flush=True)


class ComputeFloor:
    """The pinned child process that measures the compute floor once per round."""

    def __init__(self, placement: Placement, base_path: Path, calls: int, seconds: float) -> None:
        code = (f"from poochlab.experiments.bench.server import compute_floor_main; "
                f"compute_floor_main({str(base_path)!r}, {calls}, {seconds})")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = placement.start([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, env=env)
        if self._line() != "ready":
            raise RuntimeError("the compute floor process did not start")

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError(f"the compute floor process exited ({self.process.poll()})")
        return line

    def measure(self) -> Row:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()
        result = json.loads(self._line())
        return Row("(a) model compute, in-process signature call", result["p50_ms"], result["cpu_ms_per_call"],
                   result["calls_per_s"], "CPU per call with 8 threads calling")

    def stop(self) -> None:
        stop(self.process)


# ---- clients --------------------------------------------------------------------------

def wrk_script(workdir: Path) -> Path:
    path = workdir / "post.lua"
    path.write_text('wrk.method = "POST"\nwrk.body = ' + json.dumps(REST_BODY.decode()) + "\n"
                    'wrk.headers["Content-Type"] = "application/json"\n')
    return path


# Collects the compute durations of the lab server's Server-Timing header; done() prints their
# median (each wrk thread keeps its own table: done() reads them through the thread objects).
_COMPUTE_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) computes = {} end
function response(status, headers, body)
  local value = headers["Server-Timing"]
  local dur = value and value:match("compute;dur=([0-9.]+)")
  if dur then computes[#computes + 1] = tonumber(dur) end
end
function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    for _, dur in ipairs(thread:get("computes")) do all[#all + 1] = dur end
  end
  table.sort(all)
  if #all > 0 then io.write(string.format("SERVER_COMPUTE_P50_MS %f\\n", all[math.floor((#all + 1) / 2)])) end
end
"""


def compute_script(script: Path) -> Path:
    """``script`` (a wrk request script) plus the Server-Timing collector."""
    path = script.with_name("compute.lua")
    path.write_text(script.read_text() + _COMPUTE_LUA)
    return path


def server_compute_p50(url: str, collecting: Path, seconds: float) -> float | None:
    """The lab server's in-server compute p50 (ms) at concurrency 1, from its Server-Timing
    headers, with :func:`compute_script`'s script (a separate wrk run: a Lua ``response`` hook
    slows wrk's own timing)."""
    result = subprocess.run(["wrk", "-t1", "-c1", f"-d{max(1, round(seconds))}s", "-s", str(collecting), url],
                            capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^SERVER_COMPUTE_P50_MS ([0-9.]+)$", result.stdout, re.M)
    return float(match.group(1)) if match else None


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> tuple[float, float]:
    """(p50 ms, requests/s) from wrk (one client thread)."""
    result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
                            capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr.strip()}")
    text = result.stdout
    match = re.search(r"^\s+50%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if match is None or rate is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests at {url}:\n{text}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]
    return float(match.group(1)) * scale, float(rate.group(1))


def grpc_request_bytes() -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pooch_predictor"
    request.inputs["hashtags"].CopyFrom(tf.make_tensor_proto([PUPDATE["hashtags"].encode()]))
    request.inputs["country"].CopyFrom(tf.make_tensor_proto([PUPDATE["country"].encode()]))
    request.inputs["followers"].CopyFrom(tf.make_tensor_proto([PUPDATE["followers"]], dtype=tf.int64))
    return request.SerializeToString()


def grpc_p50(target: str, payload: bytes, calls: int) -> tuple[float, float | None]:
    """(p50 ms, the server-timing trailer's compute p50 ms or None) at concurrency 1."""
    import grpc

    from poochlab.clients.server_timing import server_timing_from_metadata

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        for _ in range(100):
            call(payload, timeout=30)
        samples, computes = [], []
        for _ in range(calls):
            started = time.perf_counter()
            _, rpc = call.with_call(payload, timeout=30)
            samples.append(time.perf_counter() - started)
            compute_us = server_timing_from_metadata(rpc.trailing_metadata())[1]
            if compute_us is not None:
                computes.append(compute_us / 1e3)
    return statistics.median(samples) * 1e3, statistics.median(computes) if computes else None


def grpc_load(target: str, payload: bytes, threads: int, seconds: float) -> int:
    """Closed-loop calls from ``threads`` threads for ``seconds``; returns how many completed."""
    import grpc

    failures: list[str] = []
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

        def predict() -> bool:
            try:
                call(payload, timeout=30)
                return True
            except grpc.RpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")
                return False

        completed = closed_loop(predict, threads, seconds)
    if failures:
        raise RuntimeError(f"{len(failures)} failed calls at {target}, first: {failures[0]}")
    return completed


def closed_loop(call: Callable[[], Any], threads: int, seconds: float) -> int:
    """``call`` back to back from ``threads`` threads for ``seconds``; how many calls completed
    (a call returning False failed and is not counted)."""
    counts = [0] * threads
    stop = threading.Event()

    def worker(index: int) -> None:
        while not stop.is_set():
            if call() is not False:
                counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    return sum(counts)


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and all its threads (user + system), from its own accounting."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure_rest(name: str, pid: int, url: str, script: Path, seconds: float,
                 timing_script: Path | None = None) -> Row:
    """``timing_script`` (from :func:`compute_script`): also read the server's Server-Timing
    compute (the lab server only)."""
    run_wrk(url, script, 1, 1.0)  # warm up connections and code paths
    p50, _ = run_wrk(url, script, 1, seconds)
    compute = server_compute_p50(url, timing_script, 1.0) if timing_script is not None else None
    before = process_cpu(pid)
    started = time.monotonic()
    _, rate = run_wrk(url, script, LOAD_CALLERS, seconds)
    elapsed = time.monotonic() - started
    cpu = process_cpu(pid) - before
    return Row(name, p50, cpu / (rate * elapsed) * 1e3, rate, server_compute_ms=compute)


def measure_grpc(name: str, pid: int, target: str, payload: bytes, calls: int, seconds: float) -> Row:
    p50, compute = grpc_p50(target, payload, calls)
    before = process_cpu(pid)
    started = time.monotonic()
    count = grpc_load(target, payload, LOAD_CALLERS, seconds)
    elapsed = time.monotonic() - started
    cpu = process_cpu(pid) - before
    return Row(name, p50, cpu / count * 1e3, count / elapsed, server_compute_ms=compute)


# ---- (b) echo servers and (c) the lab server -------------------------------------------

def start_echo(placement: Placement, kind: str, base_path: Path) -> tuple[subprocess.Popen, int]:
    from poochlab.experiments.bench.echo_servers import MODEL_SUFFIX
    from poochlab.serving.launcher import free_port

    port = free_port()
    command = [sys.executable, "-m", "poochlab.experiments.bench.echo_servers", kind, str(port)]
    if kind.endswith(MODEL_SUFFIX):
        command.append(str(base_path))
    process = placement.start(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        raise RuntimeError(f"echo server {kind} did not start")
    time.sleep(0.3)
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@dataclass
class Results:
    """Every round's rows; the table shows each row's median over rounds."""

    rounds: list[dict[str, Row]] = field(default_factory=list)

    def add(self, key: str, row: Row) -> None:
        self.rounds[-1][key] = row
        print(f"  {row.name}: p50 {_fmt(row.p50_ms)} ms, CPU/req {_fmt(row.cpu_ms_per_request)} ms", flush=True)

    def spread(self, key: str, attribute: str) -> float:
        """max / min of one row's value over the rounds (1.0 when only one round has it)."""
        values = [getattr(r[key], attribute) for r in self.rounds if key in r]
        values = [v for v in values if v is not None and v > 0]
        return max(values) / min(values) if values else 1.0

    @property
    def rows(self) -> dict[str, Row]:
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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# (kind, row key); the first of each is the matching echo of the lab server's stack, and the
# "+model" one is that echo calling the model per request (see echo_servers).
REST_ECHOS = (("httptools", "rest_echo"), ("uvicorn", "rest_echo_uvicorn"), ("httptools+model", "rest_echo_model"))
GRPC_ECHOS = (("grpc-sync", "grpc_echo"), ("grpc-aio", "grpc_echo_aio"), ("grpc-sync+model", "grpc_echo_model"))


def _echo_name(kind: str) -> str:
    from poochlab.experiments.bench.echo_servers import MODEL_SUFFIX

    return kind.replace(MODEL_SUFFIX, " + model call per request")


def run_benchmark(base_path: Path, seconds: float, calls: int, rounds: int) -> Results:
    """All servers start once; each round measures every one of them in turn (drift hits all)."""
    from poochlab.serving.launcher import ServerSpec, launch

    placement = Placement.detect()
    results = Results()
    payload = grpc_request_bytes()
    started: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        workdir = Path(tmp)
        script = wrk_script(workdir)
        collecting = compute_script(script)
        print(f"server cores {placement.server}, client cores {placement.client}", flush=True)
        floor = ComputeFloor(placement, base_path, calls, seconds)
        # As many gRPC threads as closed-loop callers (TF Serving's default on our 2 cores): at the
        # limit, never beyond it.
        spec = ServerSpec(model_name="pooch_predictor", model_base_path=base_path, grpc_max_threads=LOAD_CALLERS,
                          log_file=workdir / "server.log")
        server = _pinned(placement.server, placement.client, lambda: launch(spec))
        try:
            echos = {}
            for kind, key in REST_ECHOS + GRPC_ECHOS:
                process, port = start_echo(placement, kind, base_path)
                started.append(process)
                echos[key] = (kind, process, port)
            server.wait_until_available(["pooch_predictor"], timeout_s=300)
            for number in range(1, rounds + 1):
                print(f"round {number}/{rounds}", flush=True)
                results.rounds.append({})
                results.add("compute", floor.measure())
                for kind, key in REST_ECHOS:
                    _, process, port = echos[key]
                    results.add(key, measure_rest(f"(b) REST echo: {_echo_name(kind)}", process.pid,
                                                  f"http://127.0.0.1:{port}/v1/models/pooch_predictor:predict",
                                                  script, seconds))
                for kind, key in GRPC_ECHOS:
                    _, process, port = echos[key]
                    results.add(key, measure_grpc(f"(b) gRPC echo: {_echo_name(kind)}", process.pid, f"127.0.0.1:{port}",
                                                  payload, calls, seconds))
                results.add("lab_rest", measure_rest("(c) lab server, REST", server.pid,
                                                     f"{server.rest_url}/v1/models/pooch_predictor:predict",
                                                     script, seconds, collecting))
                results.add("lab_grpc", measure_grpc("(c) lab server, gRPC", server.pid, server.grpc_target,
                                                     payload, calls, seconds))
        finally:
            server.stop()
            floor.stop()
            for process in started:
                stop(process)
    return results


# Rounds of one row further apart than this (max / min) make a verdict from it untrustworthy:
# a neighbour's burst hit some rounds, and the median may sit on either side of the limit.
NOISY_SPREAD = 1.2
# The two figures every target and ratio is about: (what, Row attribute).
MEASURES = (("p50 at c=1", "p50_ms"), ("server CPU/request at c=8", "cpu_ms_per_request"))


@dataclass
class Check:
    """One of the issue's targets: the lab's value, its limit, and how much the rounds agreed."""

    what: str
    measured: float
    limit: float
    spread: float  # the largest max/min over rounds among the rows it is computed from

    @property
    def met(self) -> bool:
        return self.measured <= self.limit

    @property
    def trusted(self) -> bool:
        return self.spread <= NOISY_SPREAD

    @property
    def verdict(self) -> str:
        text = "yes" if self.met else "NO"
        if not self.trusted:
            text += f" (rounds differ by up to {(self.spread - 1) * 100:.0f}%: rerun when the machine is quiet)"
        return text


def checks(results: Results) -> list[Check]:
    """The issue's four targets: lab <= 1.15 x (matching echo + compute), p50 and CPU."""
    rows = results.rows
    compute = rows["compute"]
    out = []
    for api in ("rest", "grpc"):
        lab, echo = rows[f"lab_{api}"], rows[f"{api}_echo"]
        for what, attribute in MEASURES:
            lab_value, echo_value, compute_value = (getattr(row, attribute) for row in (lab, echo, compute))
            assert lab_value is not None and echo_value is not None and compute_value is not None
            spread = max(results.spread(key, attribute) for key in (f"lab_{api}", f"{api}_echo", "compute"))
            out.append(Check(f"{api.upper()} {what} (ms)", lab_value, TARGET_RATIO * (echo_value + compute_value),
                             spread))
    return out


def gap_split(results: Results) -> list[tuple[str, float, float]]:
    """(what, floor / (echo + compute), lab / floor) with floor = the echo calling the model.

    The first ratio is what doing both in one process costs on this machine (no lab code in
    it); the second is the lab server's own work beyond that. Their product is the target's
    ratio, so this says which of the two keeps a target out of reach.
    """
    rows = results.rows
    compute = rows["compute"]
    out = []
    for api in ("rest", "grpc"):
        lab, echo, floor = rows[f"lab_{api}"], rows[f"{api}_echo"], rows[f"{api}_echo_model"]
        for what, attribute in MEASURES:
            parts = [getattr(row, attribute) for row in (lab, echo, floor, compute)]
            if any(part is None for part in parts):
                continue
            lab_value, echo_value, floor_value, compute_value = parts
            out.append((f"{api.upper()} {what}", floor_value / (echo_value + compute_value), lab_value / floor_value))
    return out


def format_report(results: Results) -> str:
    lines = ["| what | p50 at c=1 (ms) | server CPU/request at c=8 (ms) | throughput at c=8 (/s) "
             "| in-server compute p50 at c=1 (ms) |",
             "|---|---|---|---|---|"]
    for row in results.rows.values():
        rate = "-" if row.throughput is None else f"{row.throughput:.0f}"
        lines.append(f"| {row.name} | {_fmt(row.p50_ms)} | {_fmt(row.cpu_ms_per_request)} | {rate} "
                     f"| {_fmt(row.server_compute_ms)} |")
    lines += ["", "In-server compute: the lab server's own Server-Timing / server-timing trailer, to set "
              "beside (a): the same signature call, run between requests instead of back to back."]
    lines += ["", f"| target (issue 3: <= {TARGET_RATIO} x floor) | lab | limit | met |", "|---|---|---|---|"]
    for check in checks(results):
        lines.append(f"| {check.what} | {check.measured:.3f} | {check.limit:.3f} | {check.verdict} |")
    if len(results.rounds) < 2:
        lines += ["", "One round: nothing shows whether a neighbour's burst moved these verdicts; "
                  f"use --rounds 3 (rows whose rounds differ by more than {(NOISY_SPREAD - 1) * 100:.0f}% "
                  "are flagged)."]
    lines += ["", "| where the ratio comes from | echo + model call server / (echo + compute) "
              "| lab / echo + model call server |", "|---|---|---|"]
    for what, machine, lab in gap_split(results):
        lines.append(f"| {what} | {machine:.2f} | {lab:.2f} |")
    lines += ["", "The echo + model call servers run the same signature call once per request and nothing "
              "else: the first column is what combining the two costs on this machine with no lab code; "
              "the second is the lab server's own handler work beyond that."]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-path", type=Path, default=DEFAULT_BASE,
                        help="the Pooch Predictor's base path (holding <version>/); default: the small variant")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load phase")
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls for each Python-client p50")
    parser.add_argument("--rounds", type=int, default=3, help="measure everything this many times; medians shown")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--keep-cpus-awake", action="store_true",
                        help="hold /dev/cpu_dma_latency at 0 during the run, so idle CPUs poll instead of "
                             "halting (root); takes the VM's wake-up latency out of every row")


def run(args: argparse.Namespace) -> int:
    from poochlab.cli import CommandError
    from poochlab.serving.model_manager import scan_versions

    if not scan_versions(str(args.base_path)):
        raise CommandError(f"{args.base_path} holds no model version: run `poochlab train` first "
                           "or pass --base-path")
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        raise CommandError("wrk is not installed (Debian: apt-get install wrk)")
    awake = cpus_kept_awake() if args.keep_cpus_awake else contextlib.nullcontext()
    try:
        with awake:
            results = run_benchmark(args.base_path, args.seconds, args.calls, args.rounds)
    except KeepAwakeError as error:
        raise CommandError(str(error)) from None
    print()
    print("CPU idle states: " + ("polling only (/dev/cpu_dma_latency held at 0)" if args.keep_cpus_awake
                                 else "the machine's own (halting idle CPUs wake up slower)"))
    print(format_report(results))
    if args.out:
        args.out.write_text(json.dumps({"median": {k: vars(v) for k, v in results.rows.items()},
                                        "rounds": [{k: vars(v) for k, v in r.items()} for r in results.rounds]},
                                       indent=2))
    return 0
