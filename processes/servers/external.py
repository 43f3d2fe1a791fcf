"""Kind "external": a TF Serving (or compatible) server someone else runs.

Nothing is started or stopped; the lab only checks readiness through the model status API.
The server is addressed by ServerSpec.host, rest_port and grpc_port. Server-side factors
(batching, threads, models served, replicas) cannot be applied to it; the sweep refuses them.
"""

from __future__ import annotations

import os
from pathlib import Path

from poochlab.processes.servers.launcher import RunningServer, ServerSpec

EXTERNAL = "external"


def connect_external(spec: ServerSpec) -> RunningServer:
    """A RunningServer handle for an external server (no process; stop() does nothing)."""
    if not spec.rest_port or not spec.grpc_port:
        raise ValueError(
            f"server kind {EXTERNAL!r} needs the server's REST and gRPC ports "
            f"(got rest_port={spec.rest_port}, grpc_port={spec.grpc_port} at host {spec.host})"
        )
    return RunningServer(spec=spec, command=[], rest_port=spec.rest_port, grpc_port=spec.grpc_port,
                         log_path=Path(os.devnull), process=None)
