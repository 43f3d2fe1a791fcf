"""The TF Serving base-path layout: next version, nothing overwritten, nothing touched on failure."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from poochlab.models.export import ExportError, latest_version_dir, prepare_model_dir, publish_version


def _fake_version(base: Path, version: str) -> Path:
    folder = base / "pooch_predictor" / version
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"version " + version.encode())
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_marker(staging: Path, version: int) -> None:
    (staging / "saved_model.pb").write_text(f"built as {version}")


def test_latest_version_ignores_non_numeric_entries_and_incomplete_folders(tmp_path: Path) -> None:
    assert latest_version_dir(tmp_path) is None
    _fake_version(tmp_path, "2")
    _fake_version(tmp_path, "10")
    (tmp_path / "pooch_predictor" / "11").mkdir()  # no saved_model.pb: not a servable
    (tmp_path / "pooch_predictor" / "notes").mkdir()
    assert latest_version_dir(tmp_path) == tmp_path / "pooch_predictor" / "10"


def test_new_export_takes_the_next_number_and_keeps_old_versions(tmp_path: Path) -> None:
    old = _fake_version(tmp_path, "1")
    _fake_version(tmp_path, "7")
    before = _snapshot(tmp_path)
    target = publish_version(tmp_path, _write_marker)
    assert target == tmp_path / "pooch_predictor" / "8"
    assert (target / "saved_model.pb").read_text() == "built as 8"
    assert {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("pooch_predictor/8/")} == before
    assert old.is_dir()
    # Readable by a server running as another user (mkdtemp alone would leave it 0700).
    assert target.stat().st_mode & stat.S_IROTH and target.stat().st_mode & stat.S_IXOTH


def test_first_export_creates_the_layout(tmp_path: Path) -> None:
    target = publish_version(tmp_path / "fresh" / "base", _write_marker)
    assert target == tmp_path / "fresh" / "base" / "pooch_predictor" / "1"


def test_failed_build_leaves_no_trace(tmp_path: Path) -> None:
    _fake_version(tmp_path, "1")
    before = _snapshot(tmp_path)

    def broken(staging: Path, version: int) -> None:
        (staging / "saved_model.pb").write_text("half written")
        raise RuntimeError("training blew up")

    with pytest.raises(RuntimeError, match="blew up"):
        publish_version(tmp_path, broken)
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "pooch_predictor").iterdir()) == ["1"]


@pytest.mark.parametrize("intruder", ["latest", "3.bak", "v2"])
def test_non_numeric_entry_in_the_way_is_named(tmp_path: Path, intruder: str) -> None:
    _fake_version(tmp_path, "1")
    (tmp_path / "pooch_predictor" / intruder).mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError, match=rf"{intruder} is in the way"):
        publish_version(tmp_path, _write_marker)
    assert _snapshot(tmp_path) == before


def test_stray_file_among_versions_is_named(tmp_path: Path) -> None:
    _fake_version(tmp_path, "1")
    (tmp_path / "pooch_predictor" / "2").write_text("a file, not a version folder")
    with pytest.raises(ExportError, match=r"pooch_predictor/2 is in the way"):
        prepare_model_dir(tmp_path)


def test_base_path_that_is_a_file_or_under_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ExportError, match=r"plain.txt exists but is not a folder"):
        prepare_model_dir(a_file)
    with pytest.raises(ExportError, match=r"cannot create .*plain.txt/base/pooch_predictor"):
        prepare_model_dir(a_file / "base")
    assert a_file.read_text() == "not a folder"
