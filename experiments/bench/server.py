"""``poochlab bench server``: is the lab's server close to the sum of its parts?

In one run, with servers pinned to one core and clients to another (when there are two):

(a) the model-call baseline: the Pooch Predictor's ``serving_default`` called in-process
    (batch 1) through the same session call the lab server makes (Session::Run on the caller's
    thread) — p50 with one caller, CPU per call with 8 threads calling;
(b) minimal echo servers on two Python HTTP stacks (asyncio+httptools on uvloop, uvicorn) and
    two gRPC stacks (grpc sync thread pool, grpc.aio), driven by the same clients as the lab
    server; the first of each is the stack the lab server is built on (its "matching echo");
    and the matching echoes again, calling (a)'s model call once per request: the least any
    server on that stack that runs the model can cost;
(c) the lab's server end to end (REST and gRPC, no batching).

Clients: ``wrk`` (C) for REST, a raw grpcio channel (pre-serialized request bytes) for gRPC,
both load drivers (experiments/drivers/). This module is the orchestration: the model-call
baseline is ``model_baseline.py``, the rows ``server_results.py``, the verdicts
``server_verdicts.py``, CPU placement the trials' own (recording/placement.py), every child
process a ManagedProcess (processes/lifecycle.py) started on the server's cores.
At concurrency 1 the p50 latency; at concurrency 8 the server process's own CPU time per
request (psutil). Checks against its targets (``server_verdicts.py``):
p50(lab) <= 1.15 x (p50(echo of its stack) + p50(compute)) and
CPU/req(lab) <= 1.15 x (CPU/req(echo) + CPU/call(model, 8 threads)).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from poochlab.experiments.bench.model_baseline import PUPDATE, ModelCallBaseline, model_baseline_main, model_call
from poochlab.experiments.bench.echo_servers import MODEL_SUFFIX, start_echo
from poochlab.experiments.bench.keep_awake import KeepAwakeError, cpus_kept_awake
from poochlab.experiments.bench.server_results import LOAD_CALLERS, Results, Row
from poochlab.experiments.bench.server_verdicts import TARGET_RATIO, Check, checks, format_report, gap_split
from poochlab.experiments.drivers.grpc_calls import GrpcCallsDriver
from poochlab.experiments.drivers.interface import DriverError, LoadRun
from poochlab.experiments.drivers.wrk import WrkDriver, wrk_installed
from poochlab.experiments.recording.histograms import percentile_us
from poochlab.experiments.recording.placement import bench_placement
from poochlab.processes.lifecycle import ManagedProcess

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

# What tests and other modules import from here (the command's public names).
__all__ = ["DEFAULT_BASE", "LOAD_CALLERS", "PUPDATE", "REST_BODY", "TARGET_RATIO", "Check", "KeepAwakeError",
           "ModelCallBaseline", "Results", "Row", "add_arguments", "checks", "cpus_kept_awake", "format_report",
           "gap_split", "grpc_request_bytes", "model_baseline_main", "model_call", "run", "start_echo"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE = REPO_ROOT / "models" / "servables" / "small" / "pooch_predictor"
REST_BODY = json.dumps({"instances": [PUPDATE]}).encode()


def grpc_request_bytes() -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pooch_predictor"
    request.inputs["hashtags"].CopyFrom(tf.make_tensor_proto([str(PUPDATE["hashtags"]).encode()]))
    request.inputs["country"].CopyFrom(tf.make_tensor_proto([str(PUPDATE["country"]).encode()]))
    request.inputs["followers"].CopyFrom(tf.make_tensor_proto([PUPDATE["followers"]], dtype=tf.int64))
    return request.SerializeToString()


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and all its threads (user + system), from its own accounting."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _p50_ms(run: LoadRun) -> float:
    p50 = run.percentile_us(50)
    if p50 is None:
        raise DriverError("no request was answered")
    return p50 / 1e3


def _p50_ms_of(histogram: "HdrHistogram | None") -> float | None:
    p50 = None if histogram is None else percentile_us(histogram, 50)
    return None if p50 is None else p50 / 1e3


def _answered(run: LoadRun, url: str) -> LoadRun:
    failed = run.window.errors_by_kind.get("status")
    if failed:
        raise DriverError(f"{failed} failed requests at {url}")
    return run


def measure_rest(name: str, pid: int, url: str, seconds: float, server_timing: bool = False) -> Row:
    """``server_timing``: also read the server's Server-Timing compute, in a run of its own (the
    lab server only)."""
    wrk = WrkDriver(url, REST_BODY, connections=1, seconds=seconds)
    _answered(WrkDriver(url, REST_BODY, connections=1, seconds=1.0).run(), url)  # warm up connections and code paths
    p50 = _p50_ms(_answered(wrk.run(), url))
    compute = None
    if server_timing:
        timed = WrkDriver(url, REST_BODY, connections=1, seconds=1.0, server_timing=True).run().server_compute()
        compute = _p50_ms_of(timed)
    before = process_cpu(pid)
    started = time.monotonic()
    load = _answered(WrkDriver(url, REST_BODY, connections=LOAD_CALLERS, seconds=seconds).run(), url)
    elapsed = time.monotonic() - started
    cpu = process_cpu(pid) - before
    rate = load.requests / load.wall_s
    return Row(name, p50, cpu / (rate * elapsed) * 1e3, rate, server_compute_ms=compute)


def measure_grpc(name: str, pid: int, target: str, payload: bytes, calls: int, seconds: float) -> Row:
    single = GrpcCallsDriver(target, payload, callers=1, calls=calls).run()
    timed = single.server_compute()
    compute = _p50_ms_of(timed)
    before = process_cpu(pid)
    load = GrpcCallsDriver(target, payload, callers=LOAD_CALLERS, seconds=seconds).run()
    cpu = process_cpu(pid) - before
    return Row(name, _p50_ms(single), cpu / load.requests * 1e3, load.requests / load.wall_s,
               server_compute_ms=compute)


# ---- (b) echo servers and (c) the lab server -------------------------------------------

# (kind, row key); the first of each is the matching echo of the lab server's stack, and the
# "+model" one is that echo calling the model per request (see echo_servers).
REST_ECHOS = (("httptools", "rest_echo"), ("uvicorn", "rest_echo_uvicorn"), ("httptools+model", "rest_echo_model"))
GRPC_ECHOS = (("grpc-sync", "grpc_echo"), ("grpc-aio", "grpc_echo_aio"), ("grpc-sync+model", "grpc_echo_model"))


def _echo_name(kind: str) -> str:
    return kind.replace(MODEL_SUFFIX, " + model call per request")


def run_benchmark(base_path: Path, seconds: float, calls: int, rounds: int) -> Results:
    """All servers start once; each round measures every one of them in turn (drift hits all)."""
    from poochlab.processes.servers.launcher import ServerSpec, launch

    placement = bench_placement()
    results = Results()
    payload = grpc_request_bytes()
    # Whatever fails, every process started so far is stopped and this process unpinned.
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp, contextlib.ExitStack() as running:
        placement.pin_self()
        running.callback(placement.restore)
        workdir = Path(tmp)
        print(f"server cores {placement.cores('server')}, client cores {placement.cores('generator0')} "
              f"({placement.reason})", flush=True)
        baseline = ModelCallBaseline(placement, base_path, calls, seconds)
        running.callback(baseline.stop)
        # As many gRPC threads as closed-loop callers (TF Serving's default on our 2 cores): at the
        # limit, never beyond it.
        spec = ServerSpec(model_name="pooch_predictor", model_base_path=base_path, grpc_max_threads=LOAD_CALLERS,
                          log_file=workdir / "server.log")
        with placement.as_role("server"):
            server = launch(spec)
        running.callback(server.stop)
        server_pid = server.pid
        assert server_pid is not None  # a launched lab server is a process of ours
        echos = {}
        for kind, key in REST_ECHOS + GRPC_ECHOS:
            process, port = start_echo(placement, kind, base_path)
            running.callback(process.stop)
            echos[key] = (kind, process, port)
        server.wait_until_available(["pooch_predictor"], timeout_s=300)
        for number in range(1, rounds + 1):
            print(f"round {number}/{rounds}", flush=True)
            results.rounds.append({})
            results.add("compute", baseline.measure())  # the saved rows' key stays "compute"
            for kind, key in REST_ECHOS:
                _, process, port = echos[key]
                results.add(key, measure_rest(f"(b) REST echo: {_echo_name(kind)}", _pid(process),
                                              f"http://127.0.0.1:{port}/v1/models/pooch_predictor:predict",
                                              seconds))
            for kind, key in GRPC_ECHOS:
                _, process, port = echos[key]
                results.add(key, measure_grpc(f"(b) gRPC echo: {_echo_name(kind)}", _pid(process), f"127.0.0.1:{port}",
                                              payload, calls, seconds))
            results.add("lab_rest", measure_rest("(c) lab server, REST", server_pid,
                                                 f"{server.rest_url}/v1/models/pooch_predictor:predict",
                                                 seconds, server_timing=True))
            results.add("lab_grpc", measure_grpc("(c) lab server, gRPC", server_pid, server.grpc_target,
                                                 payload, calls, seconds))
    return results


def _pid(process: ManagedProcess) -> int:
    pid = process.pid
    assert pid is not None  # started before it is measured
    return pid


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
    if not wrk_installed():
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
