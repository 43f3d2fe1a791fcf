"""Reading a saved run folder: ``manifest.json`` and ``trials/*.json``, nothing else.

A corrupt or foreign trial file does not stop the analysis: it is listed as unreadable, with
the file and the reason, skipped, and the report shows the list among its validity warnings.
A missing or unreadable manifest is an error, since without it nothing says what was measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poochlab.experiments.records import TrialRecord


class RunFolderError(ValueError):
    """The folder is not a readable saved run; the message names the file at fault."""


@dataclass
class SavedRun:
    path: Path
    manifest: dict[str, Any]
    trials: list[TrialRecord]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    def spec_factor_names(self) -> list[str]:
        """Factors named by the resolved spec, in its order, then any other trial key not a control.

        Trials carry the controls in their factors too (every setting of the trial); those are
        columns of the tables but not independent variables.
        """
        spec = self.manifest.get("spec") or {}
        declared = spec.get("factors")
        names: list[str] = list(declared) if isinstance(declared, dict) else []
        controls = self.controls()
        for trial in self.trials:
            for name in trial.factors:
                if name not in names and name not in controls:
                    names.append(name)
        return names

    def control_columns(self) -> list[str]:
        """Controls that the trials record, in the spec's order."""
        seen = {name for trial in self.trials for name in trial.factors}
        return [name for name in self.controls() if name in seen and name not in self.spec_factor_names()]

    def controls(self) -> dict[str, Any]:
        spec = self.manifest.get("spec") or {}
        controls = spec.get("controls")
        return dict(controls) if isinstance(controls, dict) else {}


def load_run(path: Path | str) -> SavedRun:
    """Load a run folder written by the sweep runner."""
    folder = Path(path)
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder")
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise RunFolderError(f"{manifest_path}: missing; is {folder} a run folder (results/<run>)?")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise RunFolderError(f"{manifest_path}: expected a JSON object, found {type(manifest).__name__}")

    trials: list[TrialRecord] = []
    unreadable: list[tuple[Path, str]] = []
    for trial_path in sorted((folder / "trials").glob("*.json")):
        try:
            trials.append(TrialRecord.read(trial_path))
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            # TrialRecord.read names the file for JSON and schema errors; TypeError comes from
            # a wrong field shape, so name the file here.
            message = str(error)
            unreadable.append((trial_path, message if str(trial_path) in message else f"{trial_path}: {message}"))
    return SavedRun(path=folder, manifest=manifest, trials=trials, unreadable=unreadable)
