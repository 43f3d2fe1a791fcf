"""``poochlab bench <target>``: micro-benchmarks, one module per target under experiments/bench/.

This module only dispatches: the target's module (``poochlab.experiments.bench.<target>``,
exposing ``add_arguments(parser)`` and ``run(args) -> int``) is imported when it runs, so
``poochlab --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib

# target -> one-line help; the module is poochlab.experiments.bench.<target>
TARGETS: dict[str, str] = {
    "server": "the lab server against its floor: model compute, echo servers, REST and gRPC end to end",
    "clients": "each client's cost next to the floor of its protocol",
    "batching": "throughput and latency of server-side batching parameter sets",
    "generator": "the load generator's own floor",
    "replicas": "throughput and p99 with 1, 2, 4 lab-server replicas behind nginx",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=sorted(TARGETS),
                        help="; ".join(f"{name}: {text}" for name, text in TARGETS.items()))
    parser.add_argument("target_args", nargs=argparse.REMAINDER, help="the target's own options (see --help after it)")


def run(args: argparse.Namespace) -> int:
    from poochlab.cli import CommandError

    try:
        module = importlib.import_module(f"poochlab.experiments.bench.{args.target}")
    except ModuleNotFoundError as error:
        if error.name == f"poochlab.experiments.bench.{args.target}":
            raise CommandError(f"bench target {args.target!r} is not available yet") from None
        raise
    parser = argparse.ArgumentParser(prog=f"poochlab bench {args.target}", description=TARGETS[args.target])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(args.target_args)) or 0)
