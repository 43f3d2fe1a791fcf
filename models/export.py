"""TF Serving's base-path layout: ``<base>/pooch_predictor/<version>/``, versions never overwritten.

A new version is built in a hidden staging folder beside the versions (TF Serving ignores
non-numeric entries) and renamed into place only when complete, so a server polling the folder
never sees half a model and a failed export leaves every existing version untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from poochlab.models.pupdate import MODEL_NAME

STAGING_PREFIX = ".staging-"
DEFAULT_SERVABLES_DIR = Path(__file__).resolve().parent / "servables"


def default_base_path(variant: str) -> Path:
    """``models/servables/<variant>``: TF Serving's ``base_path`` is this plus ``/pooch_predictor``."""
    return DEFAULT_SERVABLES_DIR / variant


class ExportError(Exception):
    """An export that cannot be written; the one-line message names the path at fault."""


def _is_version_name(name: str) -> bool:
    return name.isascii() and name.isdigit()


def latest_version_dir(base_path: Path, model_name: str = MODEL_NAME) -> Path | None:
    """The highest numeric version folder holding a ``saved_model.pb``, or ``None``.

    Like TF Serving, this ignores non-numeric entries; only a new export refuses them.
    """
    model_dir = Path(base_path) / model_name
    if not model_dir.is_dir():
        return None
    versions = {
        int(entry.name): entry  # the folder as found: its name may carry leading zeros
        for entry in sorted(model_dir.iterdir(), reverse=True)  # the first name sorting wins, as in serving
        if _is_version_name(entry.name) and (entry / "saved_model.pb").is_file()
    }
    return versions[max(versions)] if versions else None


def prepare_model_dir(base_path: Path, model_name: str = MODEL_NAME) -> tuple[Path, int]:
    """Check ``<base>/<model>`` can take a new version; return it and the next version number.

    Raises :class:`ExportError` for a base path that is not a writable folder and for any
    visible entry that is not a version number (a folder like ``3.bak`` or ``latest`` in the
    way means someone is managing versions by hand: better to stop than guess).
    """
    base_path = Path(base_path)
    model_dir = base_path / model_name
    for path in (base_path, model_dir):
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path} exists but is not a folder")
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create {model_dir}: {error.strerror}") from error
    if not os.access(model_dir, os.W_OK | os.X_OK):
        raise ExportError(f"{model_dir} is not writable")
    versions = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not _is_version_name(entry.name) or not entry.is_dir():
            raise ExportError(f"{entry} is in the way: only numeric version folders may live in {model_dir}")
        versions.append(int(entry.name))
    return model_dir, max(versions, default=0) + 1


def publish_version(base_path: Path, build: Callable[[Path, int], None], model_name: str = MODEL_NAME) -> Path:
    """Call ``build(staging_dir, version)`` and rename the result to the next version; return its folder."""
    model_dir, version = prepare_model_dir(base_path, model_name)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=model_dir))
    except OSError as error:
        raise ExportError(f"cannot write in {model_dir}: {error.strerror}") from error
    target = model_dir / str(version)
    try:
        build(staging, version)
        if target.exists():
            raise ExportError(f"{target} appeared while exporting; not overwriting it")
        # mkdtemp makes the folder private (0700); a server running as another user must read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
