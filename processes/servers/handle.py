"""What every server kind hands back (ServerHandle): the sweep treats them all alike through it.

RunningServer (lab, tfserving, external), RunningContainer (docker) and ReplicaSet (replicas
behind nginx or client-side round robin) satisfy it; a new kind does too, so the sweep's
ServerPool needs no special case for it.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable


@runtime_checkable
class ServerHandle(Protocol):
    """A started (or, for kind "external", connected) model server."""

    @property
    def kind(self) -> str:
        """The server kind ("lab", "tfserving", "docker", "external", "replicas")."""
        ...

    @property
    def endpoints(self) -> dict[str, str]:
        """Where clients go, by protocol: {"rest": URL, "grpc": target}."""
        ...

    @property
    def rest_url(self) -> str: ...

    @property
    def grpc_target(self) -> str: ...

    @property
    def pid(self) -> int | None:
        """The process whose CPU and memory stand for the server's (None: none the lab can see)."""
        ...

    @property
    def alive(self) -> bool:
        """Whether every process of it still runs."""
        ...

    @property
    def behind_balancer(self) -> bool:
        """Whether requests spread over several servers (Prometheus deltas would mix them)."""
        ...

    @property
    def placement(self) -> dict[str, Any] | None:
        """Where its processes run, for the manifest (None: one server, nothing to say)."""
        ...

    def launches(self) -> list[tuple[list[str], dict[str, object] | None]]:
        """Each server process's command line and the binary or image it ran, for the manifest."""
        ...

    def resource_note(self) -> str:
        """What the lab's CPU and memory figures for this server come from, for the record."""
        ...

    def wait_until_available(self, model_names: Sequence[str], timeout_s: float = ...) -> None: ...

    def log_tail(self, lines: int = ...) -> str: ...

    def stop(self) -> object: ...
