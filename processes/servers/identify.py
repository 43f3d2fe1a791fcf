"""Which `tensorflow_model_server` is this? Real TF Serving, or the lab's entry point of that name.

The lab installs a console script called `tensorflow_model_server` so that the very same command
lines run both servers. The cost is that the name alone proves nothing: a run labelled
"tfserving" must have run TF Serving's C++ binary. Real TF Serving is a native executable whose
`--version` prints `TensorFlow ModelServer: <version>`; the lab's entry point is a Python script
whose `--version` names the lab's server.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from poochlab.serving.main import LAB_SERVER_ID

DEFAULT_BINARY = "tensorflow_model_server"
_ELF_MAGIC = b"\x7fELF"
_TFSERVING_BANNER = "TensorFlow ModelServer:"


class NotTFServingError(RuntimeError):
    """The binary is not TF Serving (the lab's stand-in, say), and no stand-in was allowed."""


@dataclass(frozen=True)
class ModelServerBinary:
    """What a run records about the server binary it started."""

    path: str  # absolute, symlinks resolved
    version: str  # `--version` output, stripped
    native: bool  # a native executable (ELF), as TF Serving's binary is
    is_tfserving: bool  # native and announcing itself as TF Serving

    def describe(self) -> str:
        if self.is_tfserving:
            return self.version.splitlines()[0]
        kind = "a native binary" if self.native else "a script (the lab's own server)"
        return f"{kind}, --version: {self.version.splitlines()[0] if self.version else 'nothing'!r}"

    def manifest(self) -> dict[str, object]:
        return asdict(self)


def _candidates(binary: str) -> list[Path]:
    """`binary` itself when it is a path, else every file of that name on PATH, in PATH order."""
    if os.sep in binary:
        return [Path(binary)] if Path(binary).is_file() else []
    found = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / binary
        if candidate.is_file() and os.access(candidate, os.X_OK) and candidate not in found:
            found.append(candidate)
    return found


def identify_model_server(binary: str = DEFAULT_BINARY, timeout: float = 60.0) -> ModelServerBinary:
    """Identify one binary (a path, or the first of that name on PATH)."""
    candidates = _candidates(binary)
    if not candidates:
        raise FileNotFoundError(
            f"{binary}: no such TF Serving binary (install tensorflow-model-server, or use server_kind \"docker\")"
        )
    return _identify(candidates[0], timeout)


def _identify(path: Path, timeout: float) -> ModelServerBinary:
    path = path.resolve()
    with open(path, "rb") as handle:
        native = handle.read(4) == _ELF_MAGIC
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=timeout)
    version = (result.stdout + result.stderr).strip()
    # The lab's server prints TF Serving's banner too (clients parse it), with its own id inside.
    is_tfserving = native and _TFSERVING_BANNER in version and LAB_SERVER_ID not in version
    return ModelServerBinary(str(path), version, native, is_tfserving)


def require_tfserving(binary: str = DEFAULT_BINARY, *, allow_lab_standin: bool = False) -> ModelServerBinary:
    """The TF Serving binary to run: a path, or the first real TF Serving of that name on PATH
    (the lab's virtual environment puts its own `tensorflow_model_server` first).

    The lab's server is refused unless `allow_lab_standin` (tests that check the flags and config
    files the launcher writes are accepted); the run records which binary it was either way.
    """
    candidates = _candidates(binary)
    if not candidates:
        raise FileNotFoundError(
            f"{binary}: no such TF Serving binary (install tensorflow-model-server, or use server_kind \"docker\")"
        )
    identities = [_identify(path, 60.0) for path in candidates]
    for identity in identities:
        if identity.is_tfserving:
            return identity
    if allow_lab_standin:
        return identities[0]
    refused = "; ".join(f"{i.path} ({i.describe()})" for i in identities)
    raise NotTFServingError(
        f"no TensorFlow Serving binary named {binary}: {refused}. Install TF Serving's "
        "tensorflow_model_server (or give its path), or use server_kind \"docker\" or \"lab\""
    )
