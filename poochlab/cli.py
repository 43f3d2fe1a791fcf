"""The ``poochlab`` console command: one subcommand per stage.

Each subcommand lives in its stage's own ``commands`` module, which exposes
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import nothing heavy
at module level (TensorFlow costs ~7 s), so ``poochlab --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# name -> (module holding add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("poochlab.models.commands.train", "generate facts, train, evaluate and export a model version"),
    "export": ("poochlab.models.commands.export", "export the newest trained model as the next version"),
    "serve": ("poochlab.serving.commands.serve", "run the lab's TF-Serving-compatible server (TF Serving's flags)"),
    "predict": ("poochlab.clients.commands.predict", "ask a running server for one prediction, with its timing"),
    "bench": ("poochlab.experiments.commands.bench", "micro-benchmarks of the server, clients and generator"),
    "sweep": ("poochlab.experiments.commands.sweep", "run a sweep spec (experiments/*.toml) into results/<run>/"),
    "report": ("poochlab.experiments.commands.report", "rebuild tables, plots and the report of a saved run"),
    "compare": ("poochlab.experiments.commands.compare", "compare two saved runs, with confidence intervals"),
}


class CommandError(Exception):
    """A user mistake a subcommand reports as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poochlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `serve` takes TF Serving's own flag syntax, parsed by the server itself.
    if argv[:1] == ["serve"]:
        from poochlab.serving.main import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CommandError as error:
        print(f"poochlab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"poochlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
