"""Training end to end on a small dataset: reproducible, versioned, never overwriting, re-exportable."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from poochlab.models.facts import default_facts_path
from poochlab.models.training import train_and_export

ROWS = 2000
SEED = 31


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _predict(version_dir: Path) -> np.ndarray:
    import tensorflow as tf

    from poochlab.models.facts import generate_pupdates

    model = tf.saved_model.load(str(version_dir))
    probe = generate_pupdates(200, seed=999)
    return model.signatures["serving_default"](
        hashtags=tf.constant([p.hashtag_text for p in probe]),
        country=tf.constant([p.country for p in probe]),
        followers=tf.constant([p.followers for p in probe], tf.int64),
    )["likes"].numpy()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory):
    """The same seed trained twice into one base path, each run with its own data folder."""
    root = tmp_path_factory.mktemp("repro")
    base = root / "servables" / "small"
    first = train_and_export("small", base, seed=SEED, rows=ROWS, data_dir=root / "data-1")
    first_files = _snapshot(first.version_dir)
    second = train_and_export("small", base, seed=SEED, rows=ROWS, data_dir=root / "data-2")
    return root, first, first_files, second


def test_same_seed_gives_identical_facts_bytes(two_runs) -> None:
    root, *_ = two_runs
    first = default_facts_path(SEED, ROWS, root / "data-1").read_bytes()
    assert first == default_facts_path(SEED, ROWS, root / "data-2").read_bytes()


def test_same_seed_gives_identical_metrics_and_predictions(two_runs) -> None:
    _, first, _, second = two_runs
    assert first.evaluation == second.evaluation
    assert np.array_equal(_predict(first.version_dir), _predict(second.version_dir))


def test_second_export_is_the_next_version_and_the_first_is_untouched(two_runs) -> None:
    _, first, first_files, second = two_runs
    assert first.version_dir.name == "1" and second.version_dir.name == "2"
    assert _snapshot(first.version_dir) == first_files


def test_model_trained_on_small_data_still_beats_baseline(two_runs) -> None:
    _, first, _, _ = two_runs
    assert first.evaluation.beats_baseline


def test_export_command_re_exports_the_newest_trained_model(two_runs, capsys: pytest.CaptureFixture) -> None:
    from poochlab.models.commands import export

    root, first, first_files, second = two_runs
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    args = parser.parse_args(["--variant", "small", "--data-dir", str(root / "data-2"), "--base-path", str(root / "servables" / "small")])
    assert export.run(args) == 0
    third = root / "servables" / "small" / "pooch_predictor" / "3"
    assert str(third) in capsys.readouterr().out
    assert np.array_equal(_predict(third), _predict(second.version_dir))
    assert _snapshot(first.version_dir) == first_files
