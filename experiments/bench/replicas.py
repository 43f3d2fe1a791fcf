"""``poochlab bench replicas``: throughput and p99 with 1, 2 and 4 lab-server replicas behind nginx.

Each configuration serves the Pooch Predictor (small) with the lab's server, N replicas on this
machine behind Debian's nginx (serving/kinds/replicas.py), and is driven by ``wrk`` (C, REST,
a fixed number of keep-alive connections) for a few seconds after a warm-up. A first row drives
one replica directly, without nginx, so the balancer's own cost shows. The placement (cores per
replica) is printed with the numbers: on a machine with fewer cores than replicas, replicas
share cores and cannot add throughput.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from poochlab.experiments.bench.server import DEFAULT_BASE, wrk_script

MODEL = "pooch_predictor"
_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class ReplicaRow:
    setup: str
    replicas: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    replica_cores: list[list[int]]


def run_wrk_p99(url: str, script: Path, connections: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run with --latency; failed requests are an error."""
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr.strip()}")
    text = result.stdout
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if failed:
        raise RuntimeError(f"{failed.group(1)} failed requests at {url}:\n{text}")
    percentile = {p: re.search(rf"^\s+{p}%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M) for p in (50, 99)}
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    p50_match, p99_match = percentile[50], percentile[99]
    if rate is None or p50_match is None or p99_match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    p50, p99 = (float(m.group(1)) * _WRK_UNITS[m.group(2)] for m in (p50_match, p99_match))
    return float(rate.group(1)), p50, p99


def _spec(workdir: Path, base_path: Path, threads: int) -> Any:
    from poochlab.serving.launcher import ServerSpec

    config = workdir / "models.config"
    config.write_text(f"model_config_list {{\n  config {{\n    name: '{MODEL}'\n    base_path: '{base_path}'\n"
                      "    model_platform: 'tensorflow'\n  }\n}\n")
    return ServerSpec(model_config_file=config, tensorflow_intra_op_parallelism=threads,
                      tensorflow_inter_op_parallelism=threads, log_file=workdir / "server.log")


def measure(base_path: Path, counts: Sequence[int], connections: int, seconds: float, warmup: float,
            pin: bool, threads: int) -> tuple[list[ReplicaRow], dict[str, Any]]:
    from poochlab.serving.kinds.replicas import launch_replicas

    rows: list[ReplicaRow] = []
    placements: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        workdir = Path(tmp)
        script = wrk_script(workdir)
        spec = _spec(workdir, base_path, threads)
        for n in counts:
            with launch_replicas(spec, n, balancer="nginx", pin=pin) as replicas:
                replicas.wait_until_available([MODEL], timeout_s=300)
                targets = [("nginx", replicas.rest_url)]
                if n == 1:
                    targets.insert(0, ("direct", replicas.rest_urls[0]))
                for setup, base_url in targets:
                    url = f"{base_url}/v1/models/{MODEL}:predict"
                    run_wrk_p99(url, script, connections, warmup)
                    rate, p50, p99 = run_wrk_p99(url, script, connections, seconds)
                    rows.append(ReplicaRow(setup, n, rate, p50, p99, replicas.placement["replica_cores"]))
                placements[str(n)] = replicas.placement
    return rows, placements


def format_rows(rows: Sequence[ReplicaRow]) -> str:
    lines = [f"{'setup':<8} {'replicas':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  cores per replica"]
    for row in rows:
        lines.append(f"{row.setup:<8} {row.replicas:>8} {row.requests_per_s:>9.1f} {row.p50_ms:>8.2f} "
                     f"{row.p99_ms:>8.2f}  {row.replica_cores}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4], help="replica counts to measure")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let replicas use every core")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads per replica")
    parser.add_argument("--base-path", type=Path, default=DEFAULT_BASE, help="the model's base path")
    parser.add_argument("--json", type=Path, help="also write rows and placements here")


def run(args: argparse.Namespace) -> int:
    rows, placements = measure(args.base_path.resolve(), args.replicas, args.connections, args.seconds,
                               args.warmup, args.pin, args.threads)
    print(format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "placements": placements}, indent=1))
    return 0
