"""``poochlab bench generator``: can the load generator be trusted, and what does it cost?

Measured in one run, each printed and saved as JSON, with the server (echo or lab) and the
generator (this process and everything it starts: Locust workers, the bare loop, wrk) placed by
the trials' rule (recording/placement.py: cores of their own when one is left to spare), all at
the lab's raised priority where allowed. Load goes through the load drivers (experiments/drivers/):
wrk, the bare gRPC loop and the lab's Locust trial:

1. The open-loop floor per client path (REST lean, gRPC) against the echo server: at each rate
   (600, 1,200, 2,000 req/s and up, until a rate is invalid) the achieved rate, p50, p99, p99
   lateness, generator CPU per process, echo server CPU and the trial's validity with its
   reasons. Generator processes: "auto" (``load/settings.py`` ``workers_for``).
   Target: valid to at least 2,000 req/s.
2. The gRPC floor at 600 req/s next to a bare blocking grpcio call loop against the same echo
   server, back to back and paced alike (Poisson at 600 req/s, timed from its schedule), and
   next to the old gRPC path (grpcio under gevent, ``grpc-gevent``): ``--floor-rounds`` rounds
   in rotating order; the median of the rounds' p50 ratios, merged percentiles and CPU per
   request. Target: at most 1.3.
   ``--paths rest,grpc,grpc-gevent`` gives the old path rows at 600 and 1,200 req/s in part 1.
3. What recording costs: generator CPU per request in a closed loop against the echo server,
   with the full recorder and with a counter only, alternated ``--repeats`` times; the cost is
   the median of the pairs' ratios. Target: under 5%.
4. Concurrency 1 against the lab's server (Pooch Predictor, small): the lab's closed loop with
   one user against the leanest client of the protocol, alternated ``--repeats`` times, each
   side's histograms merged: REST (lean) against ``wrk`` (C), gRPC (lean) against the bare grpcio loop
   and the bare loop on the lean wire.
   Ratios of p50 and p99. Target: within 1.2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from poochlab.cli import CommandError
from poochlab.experiments.recording.cpu_wake import CpusAwake

REPO_ROOT = Path(__file__).resolve().parents[2]
# grpc: the lean gRPC client on OS threads (the lab's path); grpc-grpcio: grpcio on OS threads;
# grpc-gevent: grpcio under gevent (the first path), for comparison.
PATHS = ("rest", "grpc", "grpc-grpcio", "grpc-gevent")
TARGET_RATE_RPS = 2000.0
FLOOR_RATE_RPS = 600.0  # where the gRPC floor is compared with the bare loop
FLOOR_TARGET = 1.3
CONCURRENCY1_TARGET = 1.2


def _result(record: Any) -> dict[str, Any]:
    from poochlab.experiments.recording.histograms import merge_encoded

    chosen = record.result_windows()
    latency = merge_encoded(w.histogram for w in chosen)
    seconds = sum(w.duration_s for w in chosen)
    has = latency.get_total_count() > 0
    resources = record.resources
    wall = resources.wall_s or 0.0
    server_cpu = resources.server_cpu_s
    return {"throughput_rps": sum(w.requests for w in chosen) / seconds if seconds else 0.0,
            "p50_us": float(latency.get_value_at_percentile(50)) if has else None,
            "p99_us": float(latency.get_value_at_percentile(99)) if has else None,
            "lateness_p50_us": record.generator.lateness_p50_us,
            "lateness_p99_us": record.generator.lateness_p99_us,
            "generator_cpu_percent": resources.generator_cpu_percent,
            "server_cpu_percent": 100.0 * server_cpu / wall if server_cpu is not None and wall else None,
            "loop_lag_p99_us": record.generator.loop_lag_p99_us,
            "errors": sum(record.errors_by_kind.values()),
            "valid": record.validity.valid, "reasons": list(record.validity.reasons),
            "placement": (resources.placement or {}).get("cores")}


# -- placement -----------------------------------------------------------------------------------
class Pinning:
    """The server and this process (and so every generator it starts) placed by the trials' rule
    (``bench_placement``); this process at the lab's raised priority where allowed. ``server()``
    wraps a server's start: it inherits the server's cores from this process."""

    def __init__(self) -> None:
        from poochlab.experiments.recording.placement import ROLE_NICE, bench_placement

        self.placement = bench_placement()
        self.previous_nice = os.getpriority(os.PRIO_PROCESS, 0)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, ROLE_NICE)
            self.nice = ROLE_NICE
        except OSError:
            self.nice = self.previous_nice
        self.placement.pin_self()

    def server(self) -> contextlib.AbstractContextManager[None]:
        return self.placement.as_role("server")

    def describe(self) -> str:
        cores = (f"server on cores {sorted(self.placement.roles['server'])}, generator on "
                 f"{sorted(self.placement.roles['generator0'])}" if self.placement.pinned
                 else f"not pinned ({self.placement.reason})")
        return f"{cores}, nice {self.nice}"

    def restore(self) -> None:
        self.placement.restore()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, self.previous_nice)


# -- 1 and 2: the open-loop floor per path, and the bare grpcio loop ----------------------------
def _client(path: str, echo: Any) -> Any:
    from poochlab.clients.config import ClientConfig

    if path.startswith("grpc"):
        library = "lean" if path == "grpc" else "grpcio"
        return ClientConfig(protocol="grpc", grpc_target=echo.grpc_target, library=library)
    return ClientConfig(rest_url=echo.rest_url, library="lean")


@contextlib.contextmanager
def _grpc_sender(path: str) -> Iterator[None]:
    """``grpc-gevent``: the workers started inside send gRPC the old way (grpcio under gevent)."""
    from poochlab.experiments.load.settings import GRPC_SENDER_ENV

    if path == "grpc-gevent":
        os.environ[GRPC_SENDER_ENV] = "gevent"
    try:
        yield
    finally:
        os.environ.pop(GRPC_SENDER_ENV, None)


def open_loop_floor(args: argparse.Namespace, workload: Any, pinning: Pinning) -> dict[str, Any]:
    from poochlab.experiments.load.echo_server import start_echo_server

    report: dict[str, Any] = {}
    with pinning.server():
        echo = start_echo_server(grpc=True)
    with echo:
        if "grpc" in args.paths:
            report["grpc_at_floor_rate"] = grpc_floor_comparison(args, workload, echo)
        for path in args.paths:
            rows = report[path] = []
            with _grpc_sender(path):
                _floor_rates(args, path, _client(path, echo), workload, echo, rows,
                             stop_at=FLOOR_RATE_RPS * 2 if path == "grpc-gevent" else None)
    return report


BARE_BACK_TO_BACK, BARE_PACED = "bare loop, back to back", "bare loop, paced alike"


def grpc_floor_comparison(args: argparse.Namespace, workload: Any, echo: Any) -> dict[str, Any]:
    """At 600 req/s against the echo server: the lab's gRPC path (and the old gevent one) next to
    the bare blocking grpcio loop, back to back and paced alike; ``--repeats`` rounds, the order
    rotating, each side's histograms merged over the rounds."""
    from poochlab.experiments.drivers.grpc_loop import GrpcLoopDriver
    from poochlab.experiments.drivers.locust_trial import LocustTrialDriver
    from poochlab.experiments.load import LoadSettings
    from poochlab.experiments.recording.histograms import add_encoded, new_histogram

    sides = [BARE_BACK_TO_BACK, BARE_PACED, "grpc", "grpc-grpcio"]
    merged = {side: new_histogram() for side in sides}
    cpu = {side: [0.0, 0] for side in sides}  # CPU seconds, requests
    round_p50s: list[dict[str, float]] = []
    settings = LoadSettings(mode="open", rate_rps=FLOOR_RATE_RPS, window_s=args.window_s, warmup_s=1.0,
                            min_windows=3, max_windows=3)
    for repeat in range(args.floor_rounds):
        p50s: dict[str, float] = {}
        for side in sides[repeat % len(sides):] + sides[:repeat % len(sides)]:
            histogram = new_histogram()
            if side.startswith("bare"):
                bare = GrpcLoopDriver(echo.grpc_target, args.bare_seconds,
                                      None if side == BARE_BACK_TO_BACK else FLOOR_RATE_RPS).run()
                add_encoded(histogram, bare.window.histogram)
                cpu[side][0] += bare.cpu_s or 0.0
                cpu[side][1] += bare.requests
            else:
                with _grpc_sender(side):
                    record = LocustTrialDriver(settings, _client(side, echo), workload, f"{side}-{repeat}",
                                               "bench-generator", echo.pid).run().details["record"]
                # Every window, stable or not: the comparison is of what was sent.
                for window in record.windows:
                    add_encoded(histogram, window.histogram)
                cpu[side][0] += record.resources.generator_cpu_s or 0.0
                cpu[side][1] += sum(w.requests for w in record.windows)
            merged[side].add(histogram)
            p50s[side] = float(histogram.get_value_at_percentile(50))
        round_p50s.append(p50s)
    result: dict[str, Any] = {"rounds": round_p50s, "paired_p50_ratios": {
        # Per round, then the median: a neighbour's burst during one round moves one ratio only.
        f"{lab} / {bare}": statistics.median(r[lab] / r[bare] for r in round_p50s)
        for lab in ("grpc", "grpc-grpcio") for bare in (BARE_BACK_TO_BACK, BARE_PACED)}}
    for side in sides:
        histogram = merged[side]
        result[side] = {"p50_us": float(histogram.get_value_at_percentile(50)),
                        "p99_us": float(histogram.get_value_at_percentile(99)),
                        "requests": histogram.get_total_count(),
                        "cpu_us_per_request": 1e6 * cpu[side][0] / max(cpu[side][1], 1)}
        print(f"gRPC at {FLOOR_RATE_RPS:.0f}/s, {args.floor_rounds} rounds merged, {side:24}: p50 {_ms(result[side]['p50_us'])}  "
              f"p99 {_ms(result[side]['p99_us'])}  CPU {result[side]['cpu_us_per_request']:4.0f} us/request", flush=True)
    return result


def _floor_rates(args: argparse.Namespace, path: str, client: Any, workload: Any, echo: Any,
                 rows: list[dict[str, Any]], stop_at: float | None) -> None:
    from poochlab.experiments.drivers.locust_trial import LocustTrialDriver
    from poochlab.experiments.load import LoadSettings
    from poochlab.experiments.load.settings import workers_for

    for rate in args.rates:
        if stop_at is not None and rate > stop_at:
            break
        workers = workers_for(args.workers, protocol=client.protocol, library=client.resolved_library,
                              mode="open", rate_rps=rate)
        settings = LoadSettings(mode="open", rate_rps=rate, window_s=args.window_s, warmup_s=1.0,
                                min_windows=3, max_windows=args.max_windows, workers=workers)
        record = LocustTrialDriver(settings, client, workload, f"{path}-open-{rate:g}", "bench-generator",
                                   echo.pid).run().details["record"]
        row = {"path": path, "target_rps": rate, "workers": workers, **_result(record)}
        rows.append(row)
        print(_floor_line(row), flush=True)
        if not row["valid"] and rate >= TARGET_RATE_RPS:
            break  # invalid from here on: higher rates only cost time


def valid_through(rows: list[dict[str, Any]]) -> tuple[float, float, list[float]]:
    """The open-loop rates a path sustained: the highest rate below which every measured rate
    was valid too, the highest valid rate, and the rates below that one that were not valid.
    A rate is sustained when its trial is valid and achieved at least 95% of it."""
    def sustained(row: dict[str, Any]) -> bool:
        return bool(row["valid"]) and row["throughput_rps"] >= 0.95 * row["target_rps"]

    ordered = sorted(rows, key=lambda row: row["target_rps"])
    best = max((row["target_rps"] for row in ordered if sustained(row)), default=0.0)
    through = 0.0
    for row in ordered:
        if not sustained(row):
            break
        through = row["target_rps"]
    return through, best, [row["target_rps"] for row in ordered if row["target_rps"] < best and not sustained(row)]


def _floor_line(row: dict[str, Any]) -> str:
    cpu = "+".join(f"{c:.0f}" for c in row["generator_cpu_percent"] or []) or "-"
    echo_cpu = "-" if row["server_cpu_percent"] is None else f"{row['server_cpu_percent']:.0f}"
    verdict = "VALID" if row["valid"] else "INVALID: " + "; ".join(row["reasons"])
    return (f"{row['path']:4} open {row['target_rps']:5.0f}/s x{row['workers']}: achieved {row['throughput_rps']:7.1f}/s  "
            f"p50 {_ms(row['p50_us'])}  p99 {_ms(row['p99_us'])}  lateness p99 {_ms(row['lateness_p99_us'])}  "
            f"generator CPU {cpu}%  echo CPU {echo_cpu}%  {verdict}")


# -- 3: what recording costs -------------------------------------------------------------------------
def recording_cost(args: argparse.Namespace, workload: Any, pinning: Pinning) -> dict[str, Any]:
    """Generator CPU per answered request with the recorder and with a bare counter.

    On a shared machine throughput mostly measures the neighbours; CPU seconds per request are
    what bounds a CPU-bound generator's throughput, so the cost is judged on them (throughput is
    printed too).
    """
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.drivers.locust_trial import LocustTrialDriver
    from poochlab.experiments.load import LoadSettings
    from poochlab.experiments.load.echo_server import start_echo_server

    settings = LoadSettings(mode="closed", users=args.cost_users, window_s=args.window_s, warmup_s=1.0,
                            min_windows=3, max_windows=3)
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with pinning.server():
        echo = start_echo_server(grpc=False)
    with echo:
        client = ClientConfig(rest_url=echo.rest_url)
        for repeat in range(args.repeats):
            # Alternate which goes first, so that a drift within a pair favours neither.
            for recording in ((True, False) if repeat % 2 == 0 else (False, True)):
                record = LocustTrialDriver(settings, client, workload, f"cost-{recording}-{repeat}",
                                           "bench-generator", echo.pid, recording).run().details["record"]
                answered = sum(w.requests for w in record.windows)
                run = {"throughput_rps": answered / sum(w.duration_s for w in record.windows),
                       "cpu_us_per_request": 1e6 * (record.resources.generator_cpu_s or 0.0) / max(answered, 1)}
                runs[recording].append(run)
                print(f"closed loop {args.cost_users} users, recorder {'on ' if recording else 'off'}: "
                      f"{run['throughput_rps']:7.1f}/s, generator CPU {run['cpu_us_per_request']:6.1f} us/request",
                      flush=True)
    on = statistics.median(r["cpu_us_per_request"] for r in runs[True])
    off = statistics.median(r["cpu_us_per_request"] for r in runs[False])
    # Judged per pair (the two runs of one repeat are seconds apart): a neighbour's burst during
    # one run of one pair moves one ratio, where it would move a median of unpaired runs.
    paired = statistics.median(w["cpu_us_per_request"] / wo["cpu_us_per_request"]
                               for w, wo in zip(runs[True], runs[False]))
    return {"users": args.cost_users, "with_recorder": runs[True], "without_recorder": runs[False],
            "median_cpu_us_with": on, "median_cpu_us_without": off,
            "median_throughput_with": statistics.median(r["throughput_rps"] for r in runs[True]),
            "median_throughput_without": statistics.median(r["throughput_rps"] for r in runs[False]),
            "cost_percent": 100.0 * (paired - 1.0) / paired,
            "cost_percent_of_unpaired_medians": 100.0 * (on - off) / on}


# -- 4: concurrency 1 against the lab server ------------------------------------------------------
def concurrency_one(args: argparse.Namespace, pinning: Pinning) -> dict[str, Any]:
    """The lab's closed loop (1 user) against the leanest client of each protocol, alternated."""
    from poochlab.clients.config import ClientConfig
    from poochlab.clients.rest_predictor import encode_request
    from poochlab.experiments.bench.batching import servable_base, start_server
    from poochlab.experiments.drivers.grpc_loop import GrpcLoopDriver
    from poochlab.experiments.drivers.locust_trial import LocustTrialDriver
    from poochlab.experiments.drivers.wrk import WrkDriver
    from poochlab.experiments.load import LoadSettings, Workload
    from poochlab.experiments.recording.histograms import add_encoded, new_histogram
    from poochlab.models.facts import generate_pupdates
    from poochlab.models.pupdate import MODEL_NAME, SIGNATURE_NAME, prediction_inputs

    pupdate = generate_pupdates(1, seed=3)[0]  # the bare grpcio loop's request too
    workload = Workload((pupdate,), zipf_s=1.0, source="one fixed pupdate")  # the same request every time
    body = encode_request([prediction_inputs(pupdate)], SIGNATURE_NAME, "row").decode()
    workdir = Path(tempfile.mkdtemp(prefix="bench-generator-"))
    with pinning.server():
        server = start_server(servable_base(args.servables, "small"), None, workdir / "server.log")
    merged = {key: new_histogram() for key in ("wrk", "lab_rest", "bare_grpc", "bare_lean_grpc", "lab_grpc")}
    runs = []
    try:
        url = f"{server.rest_url}/v1/models/{MODEL_NAME}:predict"
        settings = LoadSettings(mode="closed", users=1, window_s=args.window_s, warmup_s=1.0, min_windows=3,
                                max_windows=3)
        clients = {"lab_rest": ClientConfig(rest_url=server.rest_url, library="lean"),
                   "lab_grpc": ClientConfig(protocol="grpc", grpc_target=server.grpc_target, library="lean")}
        wrk_driver = WrkDriver(url, body.encode(), connections=1, seconds=args.reference_seconds, timeout_s=10)
        wrk_driver_warmup = WrkDriver(url, body.encode(), connections=1, seconds=1, timeout_s=10)
        wrk_driver_warmup.run()  # warm-up, as the lab's trials and the bare loop have one
        for repeat in range(args.repeats):
            run: dict[str, Any] = {}
            wrk = wrk_driver.run().latency()
            merged["wrk"].add(wrk)
            bare = GrpcLoopDriver(server.grpc_target, args.reference_seconds).run().latency()
            merged["bare_grpc"].add(bare)
            bare_lean = GrpcLoopDriver(server.grpc_target, args.reference_seconds, wire="lean").run().latency()
            merged["bare_lean_grpc"].add(bare_lean)
            for key, client in clients.items():
                record = LocustTrialDriver(settings, client, workload, f"{key}-{repeat}", "bench-generator",
                                           server.pid).run().details["record"]
                if record.status != "ok":
                    raise CommandError(f"lab closed loop ({key}) failed: {record.failure_reason}")
                for window in record.result_windows():
                    add_encoded(merged[key], window.histogram)
                run[key] = _result(record)
            for key, histogram in (("wrk", wrk), ("bare_grpc", bare), ("bare_lean_grpc", bare_lean)):
                run[key] = {"p50_us": float(histogram.get_value_at_percentile(50)),
                            "p99_us": float(histogram.get_value_at_percentile(99)),
                            "requests": histogram.get_total_count()}
            runs.append(run)
            print(f"lab server, concurrency 1, round {repeat + 1}: "
                  f"REST wrk p50 {_ms(run['wrk']['p50_us'])} p99 {_ms(run['wrk']['p99_us'])} | "
                  f"lab p50 {_ms(run['lab_rest']['p50_us'])} p99 {_ms(run['lab_rest']['p99_us'])};  "
                  f"gRPC bare grpcio loop p50 {_ms(run['bare_grpc']['p50_us'])} p99 {_ms(run['bare_grpc']['p99_us'])}, "
                  f"bare lean loop p50 {_ms(run['bare_lean_grpc']['p50_us'])} p99 {_ms(run['bare_lean_grpc']['p99_us'])} | "
                  f"lab p50 {_ms(run['lab_grpc']['p50_us'])} p99 {_ms(run['lab_grpc']['p99_us'])}", flush=True)
    finally:
        server.stop()
    summary = {key: {"p50_us": float(h.get_value_at_percentile(50)), "p99_us": float(h.get_value_at_percentile(99)),
                     "requests": h.get_total_count()} for key, h in merged.items()}
    ratios = {f"{protocol}_{q}": summary[lab][f"{q}_us"] / summary[reference][f"{q}_us"]
              for protocol, lab, reference in (("rest", "lab_rest", "wrk"), ("grpc", "lab_grpc", "bare_grpc"),
                                               ("grpc_lean", "lab_grpc", "bare_lean_grpc"))
              for q in ("p50", "p99")}
    return {"runs": runs, "merged": summary, "ratios": ratios, "body": body}


def _ms(value: float | None) -> str:
    return "   -    " if value is None else f"{value / 1000:6.3f} ms"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def rates(text: str) -> list[float]:
        return [float(part) for part in text.split(",") if part]

    def workers(text: str) -> int | str:
        return text if text == "auto" else int(text)

    parser.add_argument("--rates", type=rates, default=[600.0, 1200.0, 2000.0, 2800.0, 3600.0],
                        help="open-loop rates against the echo server (comma separated); a path stops "
                             "at its first invalid rate from 2000 up")
    parser.add_argument("--paths", type=lambda t: [p for p in t.split(",") if p], default=["rest", "grpc"],
                        help="client paths for the open-loop floor: rest, grpc, grpc-gevent (comma separated)")
    parser.add_argument("--workers", type=workers, default="auto",
                        help='generator processes per open-loop trial: a number or "auto" (the sweeps\' rule)')
    parser.add_argument("--window-s", type=float, default=1.5, help="measurement window (seconds)")
    parser.add_argument("--max-windows", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternations for the paired comparisons")
    parser.add_argument("--floor-rounds", type=int, default=3,
                        help="rounds of the gRPC floor comparison at 600/s (median of the rounds' ratios)")
    parser.add_argument("--cost-users", type=int, default=4, help="closed-loop users for the recording cost")
    parser.add_argument("--bare-seconds", type=float, default=3.0, help="the bare grpcio loop against the echo")
    parser.add_argument("--reference-seconds", type=float, default=3.0,
                        help="wrk and the bare grpcio loop against the lab server, per round")
    parser.add_argument("--servables", type=Path, default=REPO_ROOT / "models" / "servables")
    parser.add_argument("--skip", action="append", default=[], choices=["open", "cost", "c1"],
                        help="leave out one part (repeatable)")
    parser.add_argument("--cpus-awake", action="store_true",
                        help="hold /dev/cpu_dma_latency at 0 for the run, as a spec's [load] cpus_awake does")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench" / "generator.json")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def measure_and_judge(args: argparse.Namespace, workload: Any, pinning: Pinning, report: dict[str, Any]) -> list[str]:
    """Run the parts ``args`` asks for into ``report``; one verdict line per check."""
    checks: list[str] = []
    if "open" not in args.skip:
        report["open_loop"] = floor = open_loop_floor(args, workload, pinning)
        for path in (p for p in args.paths if p in floor):
            through, best, failed = valid_through(floor[path])
            below = f"; invalid at {', '.join(f'{r:.0f}' for r in failed)}/s" if failed else ""
            checks.append(f"{path} open loop: valid at every rate through {through:.0f}/s (highest valid "
                          f"{best:.0f}/s{below}) (target >= {TARGET_RATE_RPS:.0f}/s at every rate): "
                          f"{_verdict(through >= TARGET_RATE_RPS)}")
        comparison = floor.get("grpc_at_floor_rate")
        if comparison:
            for path in ("grpc", "grpc-grpcio"):
                for bare in (BARE_BACK_TO_BACK, BARE_PACED):
                    ratio = comparison["paired_p50_ratios"][f"{path} / {bare}"]
                    checks.append(f"{path} floor p50 at {FLOOR_RATE_RPS:.0f}/s / {bare} p50 = {ratio:.2f} (median of "
                                  f"{args.floor_rounds} rounds' ratios; merged {comparison[path]['p50_us']:.0f} / "
                                  f"{comparison[bare]['p50_us']:.0f} us; target <= {FLOOR_TARGET}): "
                                  f"{_verdict(ratio <= FLOOR_TARGET)}")
            paced_cpu = comparison[BARE_PACED]["cpu_us_per_request"]
            checks.append(f"grpcio alone (the paced bare loop) costs {paced_cpu:.0f} us CPU per request here: one core "
                          f"at 80% sends at most {0.8e6 / paced_cpu:.0f} gRPC requests/s with any grpcio client")
    if "cost" not in args.skip:
        report["recording_cost"] = cost = recording_cost(args, workload, pinning)
        checks.append(f"recording cost {cost['cost_percent']:.1f}% of a CPU-bound generator's throughput "
                      f"(median of {args.repeats} pairs' ratios; medians {cost['median_cpu_us_without']:.0f} us "
                      f"CPU/request without, {cost['median_cpu_us_with']:.0f} us with; target < 5%): "
                      f"{_verdict(cost['cost_percent'] < 5)}")
    if "c1" not in args.skip:
        report["concurrency_one"] = c1 = concurrency_one(args, pinning)
        for protocol, reference in (("rest", "wrk"), ("grpc", "bare blocking grpcio loop"),
                                    ("grpc_lean", "bare blocking lean-wire loop")):
            for q in ("p50", "p99"):
                ratio = c1["ratios"][f"{protocol}_{q}"]
                checks.append(f"lab server, concurrency 1: lab {protocol} {q} / {reference} {q} = {ratio:.2f} "
                              f"(target <= {CONCURRENCY1_TARGET}): {_verdict(ratio <= CONCURRENCY1_TARGET)}")
    return checks


def run(args: argparse.Namespace) -> int:
    import platform

    from poochlab.experiments.load import Workload

    if args.repeats < 1:
        raise CommandError("--repeats must be at least 1")
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        raise CommandError(f"--paths: unknown {sorted(unknown)}; known: {', '.join(PATHS)}")
    workload = Workload.generated(5000, seed=1)
    report: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "load_average_at_start": os.getloadavg()}}
    checks: list[str] = []
    pinning = Pinning()
    report["placement"] = pinning.describe()
    print(f"placement: {pinning.describe()}", flush=True)
    try:
        with CpusAwake(args.cpus_awake) as awake:
            report["cpus_awake"] = awake.as_record()
            print(f"idle CPUs: {awake.detail}", flush=True)
            checks = measure_and_judge(args, workload, pinning, report)
    finally:
        pinning.restore()
    report["machine"]["load_average_at_end"] = os.getloadavg()
    checks.append("machine load average (1, 5, 15 min) at start {} and end {}: other processes share "
                  "these cores".format(*(tuple(round(x, 1) for x in report["machine"][k])
                                         for k in ("load_average_at_start", "load_average_at_end"))))
    report["checks"] = checks
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print("\n".join(checks))
    print(f"saved {args.out}")
    return 0
