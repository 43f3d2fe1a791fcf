"""`poochlab train` / `poochlab export` refuse bad paths with one line and touch nothing exported."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import pytest

from poochlab.cli import CommandError


def _run(command: str, argv: list[str]) -> int:
    module = importlib.import_module(f"poochlab.models.commands.{command}")
    parser = argparse.ArgumentParser(prog=f"poochlab {command}")
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def exported_base(tmp_path: Path) -> Path:
    """A base path that already holds version 1 (its content stands in for a real export)."""
    version = tmp_path / "base" / "pooch_predictor" / "1"
    (version / "variables").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"precious version 1")
    (version / "variables" / "variables.index").write_bytes(b"weights")
    return tmp_path / "base"


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_train_refuses_a_non_numeric_folder_in_the_way(exported_base: Path, tmp_path: Path) -> None:
    (exported_base / "pooch_predictor" / "latest").mkdir()
    before = _snapshot(exported_base)
    with pytest.raises(CommandError) as error:
        _run("train", ["--variant", "small", "--base-path", str(exported_base), "--data-dir", str(tmp_path / "data")])
    assert "pooch_predictor/latest is in the way" in _one_line(error)
    assert _snapshot(exported_base) == before
    assert not (tmp_path / "data").exists()  # refused before generating facts or training


def test_train_refuses_an_unwritable_base_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CommandError) as error:
        _run("train", ["--variant", "large", "--base-path", str(blocker / "base"), "--data-dir", str(tmp_path / "data")])
    assert f"cannot create {blocker / 'base' / 'pooch_predictor'}" in _one_line(error)
    assert blocker.read_text() == "not a folder"


def test_train_names_a_missing_facts_file(exported_base: Path, tmp_path: Path) -> None:
    before = _snapshot(exported_base)
    missing = tmp_path / "nowhere" / "facts.jsonl"
    with pytest.raises(CommandError) as error:
        _run("train", ["--variant", "small", "--base-path", str(exported_base), "--facts", str(missing)])
    assert str(missing) in _one_line(error)
    assert _snapshot(exported_base) == before


def test_train_if_missing_keeps_the_existing_version(exported_base: Path, capsys: pytest.CaptureFixture) -> None:
    before = _snapshot(exported_base)
    assert _run("train", ["--variant", "small", "--base-path", str(exported_base), "--if-missing"]) == 0
    assert "version 1 already exported" in capsys.readouterr().out
    assert _snapshot(exported_base) == before


def test_export_without_a_trained_model_names_where_it_looked(exported_base: Path, tmp_path: Path) -> None:
    before = _snapshot(exported_base)
    with pytest.raises(CommandError) as error:
        _run("export", ["--variant", "large", "--base-path", str(exported_base), "--data-dir", str(tmp_path / "empty")])
    assert f"no trained large model under {tmp_path / 'empty' / 'trained' / 'large'}" in _one_line(error)
    assert _snapshot(exported_base) == before


def test_export_names_a_missing_trained_folder(exported_base: Path, tmp_path: Path) -> None:
    with pytest.raises(CommandError) as error:
        _run("export", ["--trained", str(tmp_path / "gone"), "--base-path", str(exported_base)])
    assert f"{tmp_path / 'gone'} is not a trained model folder" in _one_line(error)


def test_export_needs_a_variant_or_a_folder() -> None:
    with pytest.raises(CommandError, match="--variant"):
        _run("export", [])


def test_export_of_a_trained_folder_without_weights_is_refused(exported_base: Path, tmp_path: Path) -> None:
    from poochlab.models.facts import generate_pupdates, write_facts
    from poochlab.models.checkpoints import TRAINING_FILE

    broken = tmp_path / "trained-without-weights"
    broken.mkdir()
    record = {
        "spec": {"name": "small", "hashtag_dim": 8, "country_dim": 4, "deep_widths": [32], "epochs": 1,
                 "batch_size": 8, "wide_learning_rate": 0.1, "deep_learning_rate": 0.1},
        "seed": 1,
        "constants": {"mean_likes": 10.0, "followers_center": 1.0, "log_likes_ceiling": 5.0},
        "facts": str(tmp_path / "facts.jsonl"),
    }
    write_facts(tmp_path / "facts.jsonl", generate_pupdates(50, seed=1), seed=1)
    (broken / TRAINING_FILE).write_text(json.dumps(record))
    before = _snapshot(exported_base)
    with pytest.raises(CommandError) as error:
        _run("export", ["--trained", str(broken), "--base-path", str(exported_base)])
    assert f"{broken}: cannot restore the trained weights" in _one_line(error)
    assert _snapshot(exported_base) == before


def test_poochlab_command_exits_2_with_one_line_naming_the_folder(exported_base: Path, capsys: pytest.CaptureFixture) -> None:
    from poochlab.cli import main

    (exported_base / "pooch_predictor" / "old").mkdir()
    before = _snapshot(exported_base)
    assert main(["train", "--variant", "small", "--base-path", str(exported_base)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poochlab train: error: ") and "pooch_predictor/old" in lines[0]
    assert _snapshot(exported_base) == before
