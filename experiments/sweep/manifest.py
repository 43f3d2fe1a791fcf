"""Everything a reader needs to know about the conditions of a run, in manifest.json.

Among them ``factor_registry``: the factor registry's description (sweep/factors.py
``describe_factors``) as it was when the run started; ``factors.factor_roles`` reads it back.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from poochlab.experiments.records import write_atomically

PACKAGES = ("poochlab", "tensorflow", "tensorflow-serving-api", "grpcio", "locust", "redis",
            "hdrhistogram", "pandas", "matplotlib", "numpy", "protobuf", "gevent", "geventhttpclient",
            "requests", "urllib3", "httptools", "uvloop")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_state(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def platform_facts() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model or platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "system": platform.platform(),
        "hostname": platform.node(),
        "python": platform.python_version(),
    }


class Manifest:
    """manifest.json of one run, rewritten atomically whenever something is added."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(cls, run_dir: Path, repo: Path, **fields: Any) -> "Manifest":
        data = {
            "run_id": run_dir.name,
            "started_at": utc_now(),
            "ended_at": None,
            "git": git_state(repo),
            "versions": package_versions(),
            "python": platform.python_version(),
            "platform": platform_facts(),
            "server_commands": [],
            "resumed_at": [],
            **fields,
        }
        manifest = cls(run_dir / "manifest.json", data)
        manifest.save()
        return manifest

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        path = run_dir / "manifest.json"
        try:
            return cls(path, json.loads(path.read_text()))
        except FileNotFoundError:
            raise ValueError(f"{path}: no manifest: is {run_dir} a run folder?") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: unreadable manifest ({error})") from None

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def add_server_command(self, config_id: str, kind: str, command: list[str], binary: dict | None = None) -> None:
        self.data["server_commands"].append({"server_config": config_id, "kind": kind, "command": command,
                                             "binary": binary, "at": utc_now()})
        self.save()

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.data, indent=1, sort_keys=True, default=str))
