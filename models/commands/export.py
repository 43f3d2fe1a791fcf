"""``poochlab export``: export the newest trained checkpoint of a variant again, as the next version.

``poochlab train`` keeps every trained model under ``models/data/trained/<variant>/<k>/``.
Exporting one again writes a new, numbered version with the same weights (re-evaluated, with
fresh warm-up records and cost measurements): the way to make a server load a new version, for
example to watch what a version switch does to tail latency, without training again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from poochlab.cli import CommandError
from poochlab.models.variants import VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=tuple(VARIANTS), help="export the newest trained model of this variant")
    parser.add_argument("--trained", type=Path, help="export this trained-model folder instead (models/data/trained/<variant>/<k>)")
    parser.add_argument(
        "--base-path", type=Path, help="TF Serving base path holding pooch_predictor/<version>/ "
        "(default: models/servables/<variant>)"
    )
    parser.add_argument("--data-dir", type=Path, help="where trained checkpoints live (default: models/data)")


def run(args: argparse.Namespace) -> int:
    import json

    from poochlab.models.export import ExportError, default_base_path
    from poochlab.models.facts import DEFAULT_DATA_DIR, FactsError
    from poochlab.models.checkpoints import TRAINED_SUBDIR, TRAINING_FILE, latest_trained_dir

    data_dir = args.data_dir or DEFAULT_DATA_DIR
    if args.trained is not None:
        trained = args.trained
        if not (trained / TRAINING_FILE).is_file():
            raise CommandError(f"{trained} is not a trained model folder (no {TRAINING_FILE})")
        try:
            variant = json.loads((trained / TRAINING_FILE).read_text(encoding="utf-8"))["spec"]["name"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CommandError(f"{trained / TRAINING_FILE}: unreadable training record ({error})") from None
        if args.variant is not None and args.variant != variant:
            raise CommandError(f"{trained} holds a {variant} model, not {args.variant}")
    elif args.variant is None:
        raise CommandError("give --variant (newest trained model of it) or --trained DIR")
    else:
        variant = args.variant
        found = latest_trained_dir(data_dir, variant)
        if found is None:
            raise CommandError(
                f"no trained {variant} model under {Path(data_dir) / TRAINED_SUBDIR / variant}; "
                f"run `poochlab train --variant {variant}` first"
            )
        trained = found

    from poochlab.models.commands.train import print_export
    from poochlab.models.training import export_trained

    try:
        result = export_trained(trained, args.base_path or default_base_path(variant))
    except (ExportError, FactsError, ValueError) as error:
        raise CommandError(str(error)) from None
    print_export(result)
    return 0
