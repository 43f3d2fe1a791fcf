"""Kind "tfserving": TF Serving's own `tensorflow_model_server` binary, started with exactly the
flags and config files the lab's server gets (`launcher.tf_serving_flags`).

Note: real TF Serving listens on all interfaces (it has no bind-address flag); the lab's server
binds to 127.0.0.1. Run it on a trusted network or behind a firewall.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from poochlab.processes.servers.identify import DEFAULT_BINARY, ModelServerBinary, require_tfserving
from poochlab.processes.servers.launcher import RunningServer, ServerSpec, launch_command, tf_serving_flags

TFSERVING = "tfserving"
BINARY_ENV = "POOCHLAB_TFSERVING_BINARY"


@dataclasses.dataclass
class IdentifiedServer(RunningServer):
    """A RunningServer that also says which binary or image it runs (for the run's manifest)."""

    binary: dict[str, object] | None = None


def with_binary(server: RunningServer, binary: dict[str, object]) -> IdentifiedServer:
    fields = {f.name: getattr(server, f.name) for f in dataclasses.fields(RunningServer)}
    return IdentifiedServer(**fields, binary=binary)


def refuse_lab_flags(spec: ServerSpec, kind: str) -> None:
    """ValueError when ``spec`` passes flags only the lab's server has (``--lab_*``), above all
    fault injection: real TF Serving cannot slow down or fail on demand, and would exit with
    "Unknown command line flag" anyway."""
    lab_flags = [flag for flag in spec.extra_flags if flag.lstrip("-").startswith("lab_")]
    if not lab_flags:
        return
    faults = [flag for flag in lab_flags if flag.lstrip("-").startswith("lab_fault")]
    why = ("fault injection (--lab_fault_*) exists only in the lab's server; inject faults into real "
           "TF Serving from outside (a proxy, a crash), or use server kind 'lab'") if faults else \
        "these are the lab's server's own flags; TF Serving has no equivalent"
    raise ValueError(f"server kind {kind!r} runs real TF Serving, which cannot take {' '.join(lab_flags)}: {why}")


def tfserving_command_for(
    spec: ServerSpec, binary: ModelServerBinary
) -> Callable[[int, int], list[str]]:
    """spec -> command line for `binary` on given ports (the lab's flags, unchanged)."""
    refuse_lab_flags(spec, TFSERVING)
    if spec.host != "127.0.0.1":
        # TF Serving always binds to all interfaces; refuse rather than silently differ.
        raise ValueError(f"server kind {TFSERVING!r} cannot bind to {spec.host}: TF Serving has no bind-address flag")
    return lambda rest_port, grpc_port: [binary.path, *tf_serving_flags(spec, rest_port, grpc_port)]


def tfserving_binary() -> str:
    """The binary to look for: $POOCHLAB_TFSERVING_BINARY (a path or name), else the standard name."""
    return os.environ.get(BINARY_ENV) or DEFAULT_BINARY


def launch_tfserving(
    spec: ServerSpec, *, binary: str | None = None, allow_lab_standin: bool = False
) -> IdentifiedServer:
    """Start TF Serving for `spec` (does not wait for models; see wait_until_available).

    binary: a path, or a name looked up on PATH (the first real TF Serving wins); default
        tfserving_binary().
    allow_lab_standin: accept the lab's own `tensorflow_model_server` (tests only: a sweep
    labelled "tfserving" must have measured TF Serving).
    """
    refuse_lab_flags(spec, TFSERVING)  # before looking for the binary: the spec itself is wrong
    identity = require_tfserving(binary or tfserving_binary(), allow_lab_standin=allow_lab_standin)
    server = launch_command(spec, tfserving_command_for(spec, identity))
    return with_binary(server, {**identity.manifest(), "kind": TFSERVING})
