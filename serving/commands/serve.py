"""``poochlab serve``: the lab's TF-Serving-compatible server, with TF Serving's own flags.

``poochlab.cli`` hands ``serve``'s arguments straight to ``poochlab.serving.main:main``
(TF Serving's ``--flag=value`` syntax is not argparse's); this module only describes the
command for ``poochlab --help``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("flags", nargs=argparse.REMAINDER,
                        help="TF Serving's flags, e.g. --rest_api_port=8501 --model_config_file=models.config")


def run(args: argparse.Namespace) -> int:
    from poochlab.serving.main import main

    return main(list(args.flags))
