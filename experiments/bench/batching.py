"""``poochlab bench batching``: what server-side batching does to throughput and latency.

For each variant and batching parameter set (``none`` = no ``--enable_batching``, or a file
``serving_configs/batching/<name>.config``) this starts the lab's server on the exported Pooch
Predictor and drives REST predict with ``wrk`` (C, closed loop: each connection waits for its
answer before sending the next request) at each concurrency. It prints a table of throughput and
p50/p90/p99 with the mean processed batch size read from the server's own Prometheus metrics,
then its checks: throughput at 16 clients with ``timeout1ms`` over ``none`` (target
>= 2x) and p50 at 1 client with ``timeout0`` over ``none`` (target <= 1.1x).

Our machines are shared and noisy, so the servers of one variant run side by side and the
measurements are interleaved: in each round every parameter set gets one slice at each
concurrency, in a rotated order, and a point merges its slices. wrk (the wrk load driver,
experiments/drivers/wrk.py) hands over its whole latency histogram (microseconds, every request),
so percentiles are read from the merged HdrHistogram, never averaged. Results, with every slice, go to a JSON file beside the printout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from poochlab.cli import CommandError as BenchError  # one-line user errors
from poochlab.experiments.drivers.interface import DriverError
from poochlab.experiments.drivers.wrk import WrkDriver, wrk_installed
from poochlab.models.pupdate import MODEL_NAME

if TYPE_CHECKING:
    from poochlab.processes.servers.launcher import RunningServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "serving_configs"
NO_BATCHING = "none"
DEFAULT_SETS = ("none", "timeout0", "timeout1ms", "timeout5ms", "padded1ms")
DEFAULT_CONCURRENCY = (1, 4, 16)
# One pupdate per request, as an app predicting one post at a time would send.
PREDICT_BODY = {"instances": [{"hashtags": "#corgi #adorable #puppy", "country": "US",
                               "followers": 1234}]}

@dataclass
class Slice:
    """One wrk run against one server: a share of one point."""

    requests: int
    errors: int
    duration_us: int
    latency_us: dict[int, int]  # latency -> how many requests took it
    batch_sum: float  # processed rows and batches during the slice (server metrics)
    batch_count: float
    load_average: float  # the machine's 1-minute load when it started (noise indicator)


@dataclass
class Point:
    variant: str
    parameter_set: str
    concurrency: int
    slices: list[Slice] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(s.requests - s.errors for s in self.slices)

    @property
    def throughput(self) -> float:
        """Answered requests per second over all slices."""
        seconds = sum(s.duration_us for s in self.slices) / 1e6
        return self.answered / seconds if seconds else 0.0

    def percentile_us(self, percent: float) -> int:
        """From the histogram of every slice's requests merged (HdrHistogram's rule); 0 when empty."""
        from poochlab.experiments.recording.histograms import histogram_of_counts, percentile_us

        merged = histogram_of_counts((value, count) for piece in self.slices for value, count in piece.latency_us.items())
        value = percentile_us(merged, percent)
        return 0 if value is None else int(value)

    @property
    def mean_batch_size(self) -> float | None:
        count = sum(s.batch_count for s in self.slices)
        return sum(s.batch_sum for s in self.slices) / count if count else None

    def summary(self) -> dict:
        return {"variant": self.variant, "parameter_set": self.parameter_set,
                "concurrency": self.concurrency, "throughput": self.throughput,
                "p50_us": self.percentile_us(50), "p90_us": self.percentile_us(90),
                "p99_us": self.percentile_us(99), "max_us": self.percentile_us(100),
                "errors": sum(s.errors for s in self.slices), "mean_batch_size": self.mean_batch_size,
                "max_load_average": max(s.load_average for s in self.slices)}


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def batch_totals(rest_url: str) -> tuple[float, float] | None:
    """(sum, count) of the server's processed-batch-size histogram; None when it has none."""
    try:
        text = _get(f"{rest_url}/monitoring/prometheus/metrics").decode()
    except OSError:
        return None
    totals = {"_sum": 0.0, "_count": 0.0}
    found = False
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for suffix in totals:
            if name == f":tensorflow:serving:batching_session:processed_batch_size{suffix}":
                totals[suffix] += float(line.rsplit(" ", 1)[1])
                found = True
    return (totals["_sum"], totals["_count"]) if found else None


def start_server(base_path: Path, batching_file: Path | None, log_path: Path) -> "RunningServer":
    """The lab's server with the one model at ``base_path``, AVAILABLE when this returns."""
    from poochlab.processes.servers.launcher import ServerSpec, ServerStartError, launch

    server = launch(ServerSpec(
        model_name=MODEL_NAME, model_base_path=base_path / MODEL_NAME,
        batching_parameters_file=batching_file,
        monitoring_config_file=CONFIGS / "monitoring.config",
        file_system_poll_wait_seconds=0, log_file=log_path))
    try:
        server.wait_until_available([MODEL_NAME], timeout_s=180)
    except ServerStartError as error:
        server.stop()
        raise BenchError(str(error)) from None
    return server


def measure(server: "RunningServer", body: bytes, concurrency: int, seconds: int,
            warmup: int) -> Slice:
    url = f"{server.rest_url}/v1/models/{MODEL_NAME}:predict"
    wrk = WrkDriver(url, body, connections=concurrency, seconds=seconds, timeout_s=10)
    try:
        if warmup > 0:
            replace(wrk, seconds=warmup).run()
        load = os.getloadavg()[0]
        before = batch_totals(server.rest_url) or (0.0, 0.0)
        run = wrk.run()
    except DriverError as error:
        raise BenchError(str(error)) from None
    after = batch_totals(server.rest_url) or (0.0, 0.0)
    return Slice(run.requests, run.errors, round(run.wall_s * 1e6),
                 {int(value): int(count) for value, count in run.details["latency_us"]},
                 after[0] - before[0], after[1] - before[1], load)


def parameter_file(name: str) -> Path | None:
    if name == NO_BATCHING:
        return None
    path = CONFIGS / "batching" / f"{name}.config"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / "batching").glob("*.config"))
        raise BenchError(f"no batching parameter set {name!r}: expected {path} "
                         f"(known: {', '.join([NO_BATCHING, *known])})")
    return path


def servable_base(servables: Path, variant: str) -> Path:
    base = servables / variant
    if not any((base / MODEL_NAME).glob("*/saved_model.pb")):
        raise BenchError(f"no exported model under {base / MODEL_NAME}: run "
                         f"`poochlab train --variant {variant}` first")
    return base.resolve()


def plan(args: argparse.Namespace) -> list[tuple[str, list[str], list[int]]]:
    """(variant, parameter sets, concurrencies), in the order they run."""
    groups = [("large", args.sets, args.concurrency), ("small", args.small_sets, args.small_concurrency)]
    return [(variant, sets, counts) for variant, sets, counts in groups if sets and counts]


def measure_variant(variant: str, sets: list[str], concurrencies: list[int], base: Path,
                    args: argparse.Namespace, body: bytes, logs: Path) -> list[Point]:
    """Every set's server up at once; ``args.rounds`` interleaved slices per point."""
    points = {(name, clients): Point(variant, name, clients) for name in sets for clients in concurrencies}
    servers: dict[str, "RunningServer"] = {}
    try:
        for name in sets:
            servers[name] = start_server(base, parameter_file(name), logs / f"{variant}-{name}.log")
        for round_index in range(args.rounds):
            shift = round_index % len(sets)
            order = sets[shift:] + sets[:shift]  # no set always goes first (or last)
            for clients in concurrencies:
                for name in order:
                    piece = measure(servers[name], body, clients, args.duration, args.warmup)
                    points[name, clients].slices.append(piece)
                    print(f"  round {round_index + 1} {variant:5} {name:11} c={clients:<3} "
                          f"{(piece.requests - piece.errors) / (piece.duration_us / 1e6):7.0f} req/s "
                          f"load {piece.load_average:4.1f}", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return list(points.values())


def format_table(points: Sequence[Point]) -> str:
    lines = ["| variant | batching | clients | req/s | p50 ms | p90 ms | p99 ms | max ms | "
             "mean batch | errors | max load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for point in points:
        row = point.summary()
        batch = f"{row['mean_batch_size']:.1f}" if row["mean_batch_size"] is not None else "-"
        lines.append(
            f"| {point.variant} | {point.parameter_set} | {point.concurrency} | "
            f"{row['throughput']:.0f} | {row['p50_us'] / 1000:.2f} | {row['p90_us'] / 1000:.2f} | "
            f"{row['p99_us'] / 1000:.2f} | {row['max_us'] / 1000:.1f} | {batch} | {row['errors']} | "
            f"{row['max_load_average']:.1f} |")
    return "\n".join(lines)


def target_checks(points: Sequence[Point]) -> list[str]:
    """The two targets (batching's throughput gain at 16 clients, its p50 cost at 1), as ratios
    (only those the run measured)."""
    def find(variant: str, name: str, clients: int) -> Point | None:
        return next((p for p in points if (p.variant, p.parameter_set, p.concurrency)
                     == (variant, name, clients)), None)

    lines = []
    for variant in ("large", "small"):
        batched, plain = find(variant, "timeout1ms", 16), find(variant, NO_BATCHING, 16)
        if batched and plain and plain.throughput > 0:
            ratio = batched.throughput / plain.throughput
            lines.append(f"{variant}, 16 clients: throughput timeout1ms / none = "
                         f"{batched.throughput:.0f} / {plain.throughput:.0f} = {ratio:.2f}x "
                         f"(target >= 2x: {'met' if ratio >= 2 else 'NOT met'})")
    batched, plain = find("large", "timeout0", 1), find("large", NO_BATCHING, 1)
    if batched and plain:
        fast, slow = batched.percentile_us(50), plain.percentile_us(50)
        ratio = fast / slow
        lines.append(f"large, 1 client: p50 timeout0 / none = {fast / 1000:.3f} / "
                     f"{slow / 1000:.3f} ms = {ratio:.2f}x "
                     f"(target <= 1.1x: {'met' if ratio <= 1.1 else 'NOT met'})")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def names(text: str) -> list[str]:
        return [item for item in text.split(",") if item]

    def counts(text: str) -> list[int]:
        return [int(item) for item in text.split(",") if item]

    parser.add_argument("--sets", type=names, default=",".join(DEFAULT_SETS),
                        help="batching parameter sets for the large variant: 'none' or names of "
                             "serving_configs/batching/*.config (default: %(default)s)")
    parser.add_argument("--concurrency", type=counts, default=",".join(map(str, DEFAULT_CONCURRENCY)),
                        help="closed-loop clients for the large variant (default: %(default)s)")
    parser.add_argument("--small-sets", type=names, default=f"{NO_BATCHING},timeout1ms",
                        help="parameter sets for the small variant (default: %(default)s)")
    parser.add_argument("--small-concurrency", type=counts, default="16",
                        help="clients for the small variant (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved slices per point (default: %(default)s)")
    parser.add_argument("--duration", type=int, default=3,
                        help="seconds measured per slice (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of unmeasured load before each slice (default: %(default)s)")
    parser.add_argument("--servables", type=Path, default=REPO_ROOT / "models" / "servables",
                        help="folder holding <variant>/pooch_predictor/<version>/")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default: results/bench/batching-<UTC time>.json)")


def run(args: argparse.Namespace) -> int:
    if not wrk_installed():
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    if args.rounds < 1 or args.duration < 1:
        raise BenchError("--rounds and --duration must be at least 1")
    groups = plan(args)
    # Resolve every file first: a typo fails now, not after minutes of measuring.
    bases = {variant: servable_base(args.servables, variant) for variant, _, _ in groups}
    for _, sets, _ in groups:
        for name in sets:
            parameter_file(name)
    points: list[Point] = []
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        body = json.dumps(PREDICT_BODY).encode()
        for variant, sets, concurrencies in groups:
            points += measure_variant(variant, sets, concurrencies, bases[variant], args, body,
                                      Path(tmp))
    print(format_table(points))
    checks = target_checks(points)
    for line in checks:
        print(line)
    out = args.out or REPO_ROOT / "results" / "bench" / f"batching-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "batching",
        "started_utc": started.isoformat(),
        "argv": sys.argv,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
        "request_body": PREDICT_BODY,
        "points": [dict(point.summary(), slices=[asdict(piece) for piece in point.slices])
                   for point in points],
        "checks": checks,
    }, indent=1))
    print(f"results: {out}")
    return 0
