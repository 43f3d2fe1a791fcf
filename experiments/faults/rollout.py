"""A model rollout as a fault: a new version folder appears in the served base path under load.

TF Serving (and the lab's server) polls its base paths every ``--file_system_poll_wait_seconds``
(1 s by default), loads a numeric version folder it has not seen, warms it up from
``assets.extra/tf_serving_warmup_requests`` when the folder has that file, and then (latest
policy) unloads the older version. A folder must appear whole: it is copied beside the base path
first and renamed into it (one atomic step on one file system), so a poll never sees it half
written.

The served base path is always a copy the lab owns (:func:`served_copy`), made per server
start, so the repository's exports never gain a version.

    base = served_copy(export_base, run_dir / "served" / "pooch_predictor")
    ... start the server on ``base`` ...
    rollout = ModelRollout(base, [server.rest_url], ["pooch_predictor"])
    rollout.inject(spec, clock)    # the new version folder appears
    rollout.clear(spec, clock)     # returns once the new version is AVAILABLE, the old one gone
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from poochlab.experiments.faults.runner import Clock
from poochlab.experiments.faults.schedule import FaultSpec

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
DEFAULT_AVAILABLE_TIMEOUT_S = 120.0
# How often the status API is asked while a version loads: well inside one 1 s window.
STATUS_POLL_S = 0.02


def _link_or_copy(source: str, target: str) -> None:
    # Hard links: a copy of a large export costs no space; the server only reads them.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _numeric_folders(base: Path) -> dict[int, Path]:
    # TF Serving's rule (serving/model_manager.py version_folders): numeric names are versions.
    return {int(p.name): p for p in sorted(base.iterdir()) if p.name.isascii() and p.name.isdigit() and p.is_dir()}


def served_copy(export_base: Path, target: Path) -> Path:
    """A copy of ``export_base`` (its version folders) at ``target`` to serve from; returns it."""
    versions = _numeric_folders(export_base)
    if not versions:
        raise FileNotFoundError(f"{export_base}: no numeric version folder to serve")
    target.mkdir(parents=True, exist_ok=False)
    for folder in versions.values():
        shutil.copytree(folder, target / folder.name, copy_function=_link_or_copy)
    return target


class ModelRollout:
    """Roll a new version into ``base_path`` (a lab-owned copy) and wait for the servers at
    ``rest_urls`` to serve it under every name in ``model_names``.

    The new version is ``source`` (default: the latest version's folder) under the next number,
    copied in full (not linked: stripping its warm-up file must not touch the original). Recorded:
    ``new_version``, ``previous_version``, ``warmup`` (does it carry warm-up records),
    ``appeared_at_s`` (the rename; also ``injected_at_s``), ``available_at_s`` (every server
    reports it AVAILABLE), ``previous_gone_at_s`` (none reports the old one AVAILABLE any more;
    also ``cleared_at_s``) and ``status_polls``."""

    def __init__(self, base_path: Path, rest_urls: Sequence[str], model_names: Sequence[str],
                 timeout_s: float = 10.0, source: Path | None = None) -> None:
        self.base_path = Path(base_path)
        self.source = Path(source) if source is not None else None
        self.rest_urls = [url.rstrip("/") for url in rest_urls]
        self.model_names = list(model_names)
        self.timeout_s = timeout_s
        self.staged: Path | None = None
        self.new_version: int | None = None
        self.previous_version: int | None = None
        self.rolled_in = False

    def stage(self, warmup: bool) -> Path:
        """Copy the next version beside the base path (the server does not see it there)."""
        versions = _numeric_folders(self.base_path)
        if not versions:
            raise FileNotFoundError(f"{self.base_path}: no version to roll a new one from")
        self.previous_version = max(versions)
        self.new_version = self.previous_version + 1
        self.staged = self.base_path.parent / f".{self.base_path.name}-rollout-{self.new_version}"
        shutil.rmtree(self.staged, ignore_errors=True)
        shutil.copytree(self.source or versions[self.previous_version], self.staged)
        records = self.staged / WARMUP_FILE
        if not warmup and records.exists():
            records.unlink()
        return self.staged

    def inject(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        warmup = bool(spec.params.get("warmup", True))
        self.rolled_in = False
        staged = self.stage(warmup)
        carries = (staged / WARMUP_FILE).exists()
        if warmup and not carries:
            self.discard()
            source = self.source or self.base_path / str(self.previous_version)
            raise FileNotFoundError(f"{source}: no {WARMUP_FILE} to warm the new version up with (warmup = true)")
        os.rename(staged, self.base_path / str(self.new_version))
        appeared = clock.now()
        self.staged, self.rolled_in = None, True
        return {"injected_at_s": appeared, "appeared_at_s": appeared, "new_version": self.new_version,
                "previous_version": self.previous_version, "warmup": carries, "base_path": str(self.base_path)}

    def states(self) -> list[dict[int, str]]:
        """Each (server, model name)'s version -> state, from the REST status API."""
        found = []
        for url in self.rest_urls:
            for name in self.model_names:
                address = f"{url}/v1/models/{name}"
                try:
                    with urllib.request.urlopen(address, timeout=self.timeout_s) as answer:
                        body = json.loads(answer.read())
                except urllib.error.HTTPError as error:
                    raise RuntimeError(f"GET {address}: HTTP {error.code}: {error.read()[:300]!r}") from None
                found.append({int(s["version"]): s["state"] for s in body["model_version_status"]})
        return found

    def clear(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        if not self.rolled_in:
            raise RuntimeError("no version was rolled in (see inject_error): nothing to wait for")
        new, previous = self.new_version, self.previous_version
        assert new is not None and previous is not None
        timeout = float(spec.params.get("available_timeout_s", DEFAULT_AVAILABLE_TIMEOUT_S))
        deadline = time.monotonic() + timeout
        available_at = gone_at = None
        polls = 0
        while True:
            states = self.states()
            polls += 1
            now = clock.now()
            if available_at is None and all(s.get(new) == "AVAILABLE" for s in states):
                available_at = now
            if available_at is not None and all(s.get(previous) != "AVAILABLE" for s in states):
                gone_at = now
                break
            if any(s.get(new) == "END" for s in states) and available_at is None:
                raise RuntimeError(f"version {new} under {self.base_path} failed to load (state END); "
                                   "see the server log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"version {new} under {self.base_path} was not the only AVAILABLE "
                                   f"one within {timeout:.0f} s: {states}")
            time.sleep(STATUS_POLL_S)
        return {"available_at_s": available_at, "previous_gone_at_s": gone_at, "cleared_at_s": gone_at,
                "status_polls": polls}

    def discard(self) -> None:
        """Remove a staged copy that was never rolled in."""
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged = None
