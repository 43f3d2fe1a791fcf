"""``poochlab bench batching``: what server-side batching does to throughput and latency.

For each variant and batching parameter set (``none`` = no ``--enable_batching``, or a file
``serving_configs/batching/<name>.config``) this starts the lab's server on the exported Pooch
Predictor, drives REST predict with ``wrk`` (C, closed loop: each connection waits for its answer
before sending the next request) at each concurrency, and prints a table of throughput and
p50/p90/p99 with the mean processed batch size read from the server's own Prometheus metrics.
It ends with the issue's checks: throughput at 16 clients with ``timeout1ms`` over ``none``
(target >= 2x) and p50 at 1 client with ``timeout0`` over ``none`` (target <= 1.1x).

``wrk`` keeps the load generator's own cost low on a small machine; its percentiles come from
its own microsecond histogram of every request. Results go to a JSON file beside the printout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from poochlab.cli import CommandError as BenchError  # one-line user errors
from poochlab.models.pupdate import MODEL_NAME

if TYPE_CHECKING:
    from poochlab.serving.launcher import RunningServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "serving_configs"
NO_BATCHING = "none"
DEFAULT_SETS = ("none", "timeout0", "timeout1ms", "timeout5ms", "padded1ms")
DEFAULT_CONCURRENCY = (1, 4, 16)
# One pupdate per request, as an app predicting one post at a time would send.
PREDICT_BODY = {"instances": [{"hashtags": "#corgi #adorable #puppy", "country": "US",
                               "followers": 1234}]}

# wrk prints one JSON line at the end; latencies in microseconds from its own histogram.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%(body)s]]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'POOCHLAB_WRK {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d, "mean_us": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass
class Point:
    variant: str
    parameter_set: str
    concurrency: int
    requests: int
    seconds: float
    throughput: float  # answered requests per second
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    errors: int
    mean_batch_size: float | None  # processed rows per batch, from the server's metrics
    load_average: float  # the machine's 1-minute load when the point started (noise indicator)


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
    from poochlab.serving.launcher import ServerSpec, ServerStartError, launch

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


def run_wrk(url: str, script: Path, concurrency: int, seconds: float) -> dict:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--timeout", "10s",
               "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("POOCHLAB_WRK "):
            return json.loads(line.split(" ", 1)[1])
    raise BenchError(f"wrk printed no result ({' '.join(command)}):\n{done.stdout}\n{done.stderr}")


def measure(server: "RunningServer", script: Path, variant: str, parameter_set: str, concurrency: int,
            seconds: float, warmup: float) -> Point:
    url = f"{server.rest_url}/v1/models/{MODEL_NAME}:predict"
    if warmup > 0:
        run_wrk(url, script, concurrency, warmup)
    load = os.getloadavg()[0]
    before = batch_totals(server.rest_url)
    result = run_wrk(url, script, concurrency, seconds)
    after = batch_totals(server.rest_url)
    mean_batch = None
    if before is not None and after is not None and after[1] > before[1]:
        mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    duration = result["duration_us"] / 1e6
    answered = result["requests"] - result["errors"]
    return Point(variant, parameter_set, concurrency, result["requests"], duration,
                 answered / duration, result["p50_us"], result["p90_us"], result["p99_us"],
                 result["max_us"], result["errors"], mean_batch, load)


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


def plan(args: argparse.Namespace) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """(variant, parameter set, concurrencies) in the order they run."""
    for name in args.sets:
        yield "large", name, tuple(args.concurrency)
    for name in args.small_sets:
        yield "small", name, tuple(args.small_concurrency)


def format_table(points: Sequence[Point]) -> str:
    lines = ["| variant | batching | clients | req/s | p50 ms | p90 ms | p99 ms | max ms | "
             "mean batch | errors | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        batch = f"{p.mean_batch_size:.1f}" if p.mean_batch_size is not None else "-"
        lines.append(f"| {p.variant} | {p.parameter_set} | {p.concurrency} | {p.throughput:.0f} | "
                     f"{p.p50_us / 1000:.2f} | {p.p90_us / 1000:.2f} | {p.p99_us / 1000:.2f} | "
                     f"{p.max_us / 1000:.1f} | {batch} | {p.errors} | {p.load_average:.1f} |")
    return "\n".join(lines)


def issue_checks(points: Sequence[Point]) -> list[str]:
    """The issue's two targets, as ratios (only those the run measured)."""
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
        ratio = batched.p50_us / plain.p50_us
        lines.append(f"large, 1 client: p50 timeout0 / none = {batched.p50_us / 1000:.3f} / "
                     f"{plain.p50_us / 1000:.3f} ms = {ratio:.2f}x "
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
    parser.add_argument("--duration", type=int, default=6, help="seconds measured per point")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each point")
    parser.add_argument("--servables", type=Path, default=REPO_ROOT / "models" / "servables",
                        help="folder holding <variant>/pooch_predictor/<version>/")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default: results/bench/batching-<UTC time>.json)")


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    points: list[Point] = []
    started = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        script = Path(tmp) / "predict.lua"
        script.write_text(WRK_SCRIPT % {"body": json.dumps(PREDICT_BODY)})
        # Resolve every file first: a typo fails now, not after minutes of measuring.
        runs = [(variant, name, concurrencies, servable_base(args.servables, variant),
                 parameter_file(name)) for variant, name, concurrencies in plan(args)]
        for variant, name, concurrencies, base, batching_file in runs:
            server = start_server(base, batching_file, Path(tmp) / f"{variant}-{name}.log")
            try:
                for clients in concurrencies:
                    point = measure(server, script, variant, name, clients, args.duration,
                                    args.warmup)
                    points.append(point)
                    print(f"  {variant:5} {name:11} c={clients:<3} {point.throughput:7.0f} req/s "
                          f"p50 {point.p50_us / 1000:6.2f} ms  p99 {point.p99_us / 1000:6.2f} ms",
                          file=sys.stderr, flush=True)
            finally:
                server.stop()
    print(format_table(points))
    checks = issue_checks(points)
    for line in checks:
        print(line)
    out = args.out or REPO_ROOT / "results" / "bench" / f"batching-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "batching",
        "started_utc": started.isoformat(),
        "argv": sys.argv,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "duration_s": args.duration, "warmup_s": args.warmup,
        "request_body": PREDICT_BODY,
        "points": [asdict(p) for p in points],
        "checks": checks,
    }, indent=2))
    print(f"results: {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poochlab bench batching", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except BenchError as error:
        print(f"bench batching: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
