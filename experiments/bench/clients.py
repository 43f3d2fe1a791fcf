"""``poochlab bench clients``: what each client costs, next to the floor of its protocol.

At concurrency 1 (one request in flight) against the lab's server on the exported Pooch
Predictor, in one run:

- ``wrk`` (C) posting the very body the REST clients send: the floor of an HTTP round trip;
- every REST library (row format, and the lean library in columnar format) and gRPC (grpcio and
  the lean client on the lab's own HTTP/2 wire);
- a minimal gRPC echo server (``echo_servers.py``'s grpc-sync server, the lab server's own gRPC
  stack: grpc's thread-pool server, answering the request bytes) called with the same PredictRequest bytes: the floor of
  a Python gRPC round trip;
- a bare redis-py GET, and the REST cache-aside client answering from Redis (every call a hit).

The Python clients take turns in blocks of 50 calls, and each round also runs wrk, so that a noisy
neighbour on a shared machine hits them all alike; a figure is the median over rounds of each
round's p50 (a round's p50 read from its samples' HdrHistogram, wrk's from its own whole
histogram); p90/p99 pool all of a client's samples. Server and echo server, Redis, and this
process with wrk get cores of their own when the machine has a core to spare for each (the
trials' placement rule, recording/placement.py). The checks: lean REST p50 within 1.25x of wrk's
(judged on the median of the rounds' paired ratios, which the host's drift between rounds cannot
bias); a cache
hit's p50 within 1.5x of a bare GET plus the client's own encode and decode.
Results are printed and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from poochlab.cli import CommandError
from poochlab.experiments.drivers.interface import DriverError
from poochlab.experiments.drivers.wrk import WrkDriver
from poochlab.experiments.recording.histograms import histogram_of, percentile_us
from poochlab.experiments.recording.placement import bench_placement

REPO_ROOT = Path(__file__).resolve().parents[2]
ROW = {"hashtags": "#corgi #adorable #puppy", "country": "US", "followers": 1234}
REST_LIBRARIES = ("requests", "urllib3", "http.client", "geventhttpclient", "httptools")
ECHO_KIND = "grpc-sync"  # the lab server's own gRPC stack (grpc's thread-pool server), from echo_servers.py
ECHO_NAME = f"grpc echo ({ECHO_KIND} echo server)"


@dataclass
class Series:
    """One measured thing: its per-round p50s and, for Python clients, every sample."""

    name: str
    round_p50_us: list[float] = field(default_factory=list)
    samples_us: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)  # encode + decode, from CallTiming
    cpu_us: float = 0.0  # this process's CPU time spent in the calls (less noisy than latency)
    round_p99_us: list[float] = field(default_factory=list)  # wrk's own p99 per round (no samples)

    @property
    def p50_us(self) -> float:
        return statistics.median(self.round_p50_us)

    def quantile(self, q: float) -> float | None:
        return percentile_us(histogram_of(self.samples_us), q * 100) if self.samples_us else None

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "p50_us": round(self.p50_us, 1),
                "p90_us": _round(self.quantile(0.90)),
                "p99_us": _round(self.quantile(0.99) if self.samples_us else statistics.median(self.round_p99_us)),
                "client_encode_decode_p50_us": _round(_p50(self.client_us) if self.client_us else None),
                "client_cpu_us_per_call": round(self.cpu_us / len(self.samples_us), 1) if self.samples_us else None,
                "samples": len(self.samples_us), "round_p50_us": [round(v, 1) for v in self.round_p50_us]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def interleaved_round(calls: dict[str, Callable[[], Any]], count: int,
                      block: int = 50) -> dict[str, tuple[list[float], list[Any], float]]:
    """``count`` calls of each, taking turns in blocks of ``block`` calls, so that a noisy
    neighbour hits them all alike while each block still runs with warm caches (taking turns
    call by call measured every client slower, the bare Redis GET nearly 3x): per name, the
    latencies (us), the answers and the CPU time spent in the calls (us)."""
    results: dict[str, tuple[list[float], list[Any], float]] = {name: ([], [], 0.0) for name in calls}
    clock, cpu_clock = time.perf_counter, time.process_time
    done = 0
    while done < count:
        size = min(block, count - done)
        for name, call in calls.items():
            samples, answers, cpu_us = results[name]
            cpu_started = cpu_clock()
            for _ in range(size):
                started = clock()
                answer = call()
                samples.append((clock() - started) * 1e6)
                answers.append(answer)
            results[name] = (samples, answers, cpu_us + (cpu_clock() - cpu_started) * 1e6)
        done += size
    return results


def _p50(samples_us: list[float]) -> float:
    return percentile_us(histogram_of(samples_us), 50) or 0.0


def run_wrk(url: str, body: bytes, seconds: float, cpus: set[int] | None) -> dict[str, Any]:
    """One wrk run at one connection: its request count, p50 and p99 (us); any error is fatal."""
    try:
        run = WrkDriver(url, body, connections=1, seconds=seconds, timeout_s=5,
                        cpus=frozenset(cpus) if cpus else None).run()
    except DriverError as error:
        raise CommandError(str(error)) from None
    if run.errors:
        raise CommandError(f"wrk saw {run.errors} errors posting to {url}")
    return {"requests": run.requests, "p50_us": run.percentile_us(50) or 0.0, "p99_us": run.percentile_us(99) or 0.0,
            "errors": run.errors}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default="small", help="model variant to serve (default: small)")
    parser.add_argument("--base-path", type=Path, help="TF Serving base path holding pooch_predictor/<version>/ "
                        "(default: models/servables/<variant>)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default: 7)")
    parser.add_argument("--calls", type=int, default=400, help="calls per client per round (default: 400)")
    parser.add_argument("--wrk-seconds", type=float, default=2.0, help="wrk run per round (default: 2)")
    parser.add_argument("--out", type=Path, help="JSON results (default: results/bench/clients-<UTC time>.json)")


def run(args: argparse.Namespace) -> int:
    from poochlab.models.export import default_base_path, latest_version_dir

    base = args.base_path or default_base_path(args.variant)
    if latest_version_dir(base) is None:
        raise CommandError(f"{base}: no exported pooch_predictor version; run `poochlab train --variant {args.variant}`")
    if args.rounds < 1 or args.calls < 10:
        raise CommandError("--rounds must be at least 1 and --calls at least 10")
    out = args.out or REPO_ROOT / "results" / "bench" / f"clients-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    with tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp:
        report = measure_all(base, Path(tmp), args.rounds, args.calls, args.wrk_seconds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"\nwritten: {out}")
    return 0


def measure_all(base: Path, workdir: Path, rounds: int, calls: int, wrk_seconds: float) -> dict[str, Any]:
    import grpc
    import redis

    from poochlab.clients import CacheConfig, ClientConfig, build_transport
    from poochlab.clients.cache_aside import CachedPredictor
    from poochlab.clients.grpc_predictor import GrpcPredictor
    from poochlab.clients.rest_predictor import encode_request
    from poochlab.experiments.bench.echo_servers import GRPC_METHOD as ECHO_METHOD
    from poochlab.experiments.bench.echo_servers import start_echo
    from poochlab.experiments.sweep.redis_service import RedisServer
    from poochlab.processes.lifecycle import ManagedProcess
    from poochlab.processes.servers.launcher import ServerSpec, launch

    placement = bench_placement(redis=True)
    server_cpus, redis_cpus, client_cpus = (placement.cores(role) for role in ("server", "redis", "generator0"))
    spec = ServerSpec(model_name="pooch_predictor", model_base_path=base / "pooch_predictor",
                      log_file=workdir / "server.log")
    redis_server = RedisServer.on_free_port(workdir / "redis")
    echo: ManagedProcess | None = None
    predictors: dict[str, Any] = {}
    try:
        # Each process starts on its role's cores, so all its threads inherit them.
        with placement.as_role("server"):
            server = launch(spec)
        with server:
            with placement.as_role("redis"):
                redis_server.start()
            # Started on the server's cores (and so are its threads); waits until it serves.
            echo, echo_port = start_echo(placement, ECHO_KIND)
            placement.pin_self()
            server.wait_until_available(["pooch_predictor"], timeout_s=180)
            rest: dict[str, Any] = {"rest_url": server.rest_url}
            for library in REST_LIBRARIES:
                predictors[f"rest {library} row"] = build_transport(ClientConfig(library=library, **rest))
            predictors["rest lean columnar"] = build_transport(ClientConfig(library="lean", request_format="columnar", **rest))
            grpc_predictor = build_transport(ClientConfig(protocol="grpc", grpc_target=server.grpc_target))
            assert isinstance(grpc_predictor, GrpcPredictor)  # grpc with the default library: grpcio
            predictors["grpc grpcio"] = grpc_predictor
            predictors["grpc lean"] = build_transport(ClientConfig(protocol="grpc", library="lean",
                                                                   grpc_target=server.grpc_target))
            cache = CachedPredictor(build_transport(ClientConfig(library="lean", **rest)),
                                    CacheConfig(redis_url=redis_server.url, version_refresh_s=3600.0))
            predictors["rest lean + Redis hit"] = cache
            version = grpc_predictor.model_versions()[-1]
            redis_client = redis.Redis.from_url(redis_server.url)
            hit_key = cache.key_for(ROW, version)
            channel = grpc.insecure_channel(f"127.0.0.1:{echo_port}")
            echo_call = channel.unary_unary(ECHO_METHOD)  # no serializers: bytes in, bytes out
            grpc.channel_ready_future(channel).result(timeout=30)
            echo_body = grpc_predictor.encode_request([ROW])
            extra: dict[str, Callable[[], Any]] = {
                ECHO_NAME: lambda: echo_call(echo_body, timeout=5),
                "redis-py GET (bare)": lambda: redis_client.get(hit_key),
            }
            series = {name: Series(name) for name in ["wrk (C, 1 connection)", *predictors, *extra]}
            calls_by_name: dict[str, Callable[[], Any]] = {
                name: functools.partial(predictor.predict, [ROW]) for name, predictor in predictors.items()}
            calls_by_name.update(extra)
            interleaved_round(calls_by_name, 100)  # warm up: connections, the version, the cache entry
            body = encode_request([ROW], "serving_default", "row")
            url = f"{server.rest_url}/v1/models/pooch_predictor:predict"
            for _ in range(rounds):
                wrk = run_wrk(url, body, wrk_seconds, client_cpus)
                series["wrk (C, 1 connection)"].round_p50_us.append(float(wrk["p50_us"]))
                series["wrk (C, 1 connection)"].round_p99_us.append(float(wrk["p99_us"]))
                for name, (samples, answers, cpu_us) in interleaved_round(calls_by_name, calls).items():
                    _record(series[name], samples, cpu_us)
                    if name in predictors:
                        series[name].client_us.extend(a.timing.encode_us + a.timing.decode_us for a in answers)
                    if name.endswith("Redis hit") and any(a.path != "cache" for a in answers):
                        raise CommandError("the cache benchmark saw a miss: Redis lost the entry")
            channel.close()
            log_tail = server.log_tail(5)
    finally:
        for predictor in predictors.values():
            predictor.close()
        redis_server.stop()
        if echo is not None:
            echo.stop()
        placement.restore()
    return _report(series, base, (server_cpus or set()) | (redis_cpus or set()), client_cpus, rounds, calls,
                   wrk_seconds, log_tail)


def _record(series: Series, samples: list[float], cpu_us: float) -> None:
    series.round_p50_us.append(_p50(samples))
    series.samples_us.extend(samples)
    series.cpu_us += cpu_us


def _report(series: dict[str, Series], base: Path, server_cpus: set[int] | None, client_cpus: set[int] | None,
            rounds: int, calls: int, wrk_seconds: float, log_tail: str) -> dict[str, Any]:
    import importlib.metadata as metadata

    wrk = series["wrk (C, 1 connection)"].p50_us
    from poochlab.clients.http_libraries import LEAN_LIBRARY

    lean = series[f"rest {LEAN_LIBRARY} row"].p50_us
    hit = series["rest lean + Redis hit"]
    floor = series["redis-py GET (bare)"].p50_us + _p50(hit.client_us)
    versions = {name: metadata.version(name) for name in ("grpcio", "redis", "requests", "urllib3", "geventhttpclient")}
    return {
        "when_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "versions": versions,
        "load_average": os.getloadavg(),
        "export": str(base), "concurrency": 1, "rounds": rounds, "calls_per_round": calls,
        "wrk_seconds_per_round": wrk_seconds,
        "placement": {"servers_cpus": sorted(server_cpus or []), "client_and_wrk_cpus": sorted(client_cpus or [])},
        "series": [s.summary() for s in series.values()],
        "checks": {
            "lean_rest_over_wrk": round(lean / wrk, 3), "lean_rest_over_wrk_target": 1.25,
            # wrk and the clients of one round share that round's neighbours: the per-round ratio
            # is the steadier figure on a shared machine.
            "lean_rest_over_wrk_median_of_rounds": round(statistics.median(
                c / w for c, w in zip(series[f"rest {LEAN_LIBRARY} row"].round_p50_us,
                                      series["wrk (C, 1 connection)"].round_p50_us)), 3),
            "cache_hit_over_get_plus_client": round(hit.p50_us / floor, 3), "cache_hit_target": 1.5,
            "grpc_over_echo": round(series["grpc grpcio"].p50_us / series[ECHO_NAME].p50_us, 3),
        },
        "server_log_tail": log_tail,
    }


def format_report(report: dict[str, Any]) -> str:
    wrk = next(s for s in report["series"] if s["name"].startswith("wrk"))["p50_us"]
    lines = [f"concurrency 1, {report['rounds']} rounds x {report['calls_per_round']} calls; "
             f"placement {report['placement']}",
             f"{'client':38} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} {'enc+dec':>8} {'cpu/call':>8} {'x wrk':>6}"]
    for s in report["series"]:
        cells = [f"{v:9.1f}" if v is not None else f"{'-':>9}" for v in (s["p50_us"], s["p90_us"], s["p99_us"])]
        client = s["client_encode_decode_p50_us"]
        cpu = s["client_cpu_us_per_call"]
        lines.append(f"{s['name']:38} {' '.join(cells)} {client if client is not None else '-':>8} "
                     f"{cpu if cpu is not None else '-':>8} {s['p50_us'] / wrk:6.2f}")
    checks = report["checks"]
    lines.append("")
    # The check is the paired statistic: wrk and the client of one round ran minutes apart at
    # most, so the host's drift between rounds cancels out of each round's ratio.
    paired = checks["lean_rest_over_wrk_median_of_rounds"]
    lines.append(f"lean REST p50 / wrk p50, median of the rounds' ratios = {paired} (target <= 1.25): "
                 f"{'PASS' if paired <= 1.25 else 'FAIL'}")
    lines.append(f"  (median of the client's round p50s / median of wrk's = {checks['lean_rest_over_wrk']})")
    lines.append(f"cache hit p50 / (bare GET p50 + client encode/decode) = {checks['cache_hit_over_get_plus_client']} "
                 f"(target <= 1.5): {'PASS' if checks['cache_hit_over_get_plus_client'] <= 1.5 else 'FAIL'}")
    lines.append(f"gRPC p50 / gRPC echo p50 = {checks['grpc_over_echo']}")
    return "\n".join(lines)
