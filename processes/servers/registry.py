"""Which function starts (or connects to) each server kind other than the lab's own."""

from __future__ import annotations

from poochlab.processes.servers.launcher import RunningServer, ServerSpec

KINDS = ("lab", "tfserving", "docker", "external")


def launch_kind(spec: ServerSpec) -> RunningServer:
    """Start `spec.kind`'s server (or, for "external", connect to it); does not wait for models."""
    if spec.kind == "tfserving":
        from poochlab.processes.servers.tfserving import launch_tfserving

        return launch_tfserving(spec)
    if spec.kind == "docker":
        from poochlab.processes.servers.docker_run import launch_docker

        return launch_docker(spec)
    if spec.kind == "external":
        from poochlab.processes.servers.external import connect_external

        return connect_external(spec)
    if spec.kind == "lab":
        from poochlab.processes.servers.launcher import launch

        return launch(spec)
    raise ValueError(f"unknown server kind {spec.kind!r}; known kinds: {', '.join(KINDS)}")
