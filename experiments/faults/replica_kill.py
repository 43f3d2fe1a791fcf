"""One replica of a ReplicaSet killed behind the balancer, restarted by a supervisor (or not).

The balancer's own failover does the routing around it (processes/servers/nginx_config.py): a
request whose connection to the dead replica is refused goes to the next replica
(``proxy_next_upstream`` / ``grpc_next_upstream error timeout``), and the dead one is skipped
for 10 s at a time (nginx's ``max_fails=1 fail_timeout=10s``). A REST request the replica had
already taken when it died is resent too (``non_idempotent``: Predict has no side effects); a
gRPC call cannot be (grpc_pass streams the request body, nothing to resend) and fails with
UNAVAILABLE. The fault summary's ``errors_by_kind`` says how many did.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Sequence

from poochlab.experiments.faults.injectors import restart_timeline
from poochlab.experiments.faults.runner import Clock
from poochlab.experiments.faults.schedule import FaultSpec
from poochlab.experiments.faults.supervisor import ServerSupervisor


class ReplicaKill:
    """SIGKILL replica ``replica`` (param, default 0) of ``replica_set`` (anything with a
    ``replicas`` list of RunningServers). With ``restart`` (default true) a supervisor started
    just before the kill restarts it on the same ports and swaps it into the set; the fault is
    cleared when its models are AVAILABLE again. Without, it stays dead: never cleared.

    Recorded: ``replica``, ``killed_pid``, ``restart``, and with a restart ``died_at_s``,
    ``restarted_at_s``, ``ready_at_s`` (= ``cleared_at_s``), ``new_pid``, ``exit_code``."""

    def __init__(self, replica_set: Any, model_names: Sequence[str]) -> None:
        replicas = getattr(replica_set, "replicas", None)
        if not replicas or len(replicas) < 2:
            raise ValueError("a replica_kill needs at least 2 replicas behind a balancer (factor replicas >= 2)")
        self.replica_set = replica_set
        self.model_names = list(model_names)
        self.supervisors: list[ServerSupervisor] = []
        self._supervisor: ServerSupervisor | None = None

    def _index(self, spec: FaultSpec) -> int:
        index = int(spec.params.get("replica", 0))
        count = len(self.replica_set.replicas)
        if not 0 <= index < count:
            raise ValueError(f"replica_kill.replica: {index} is not a replica index (0 to {count - 1})")
        return index

    def inject(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        index = self._index(spec)
        server = self.replica_set.replicas[index]
        if server.pid is None:
            raise RuntimeError(f"replica {index} has no process to kill")
        restart = bool(spec.params.get("restart", True))
        self._supervisor = None
        if restart:
            def swap(fresh: Any) -> None:
                self.replica_set.replicas[index] = fresh

            self._supervisor = ServerSupervisor(server, self.model_names, on_restart=swap).start()
            self.supervisors.append(self._supervisor)
        pid = server.pid
        os.kill(pid, signal.SIGKILL)
        return {"injected_at_s": clock.now(), "replica": index, "killed_pid": pid, "restart": restart}

    def clear(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        if self._supervisor is None:
            # Left dead: the fault lasts to the end of the trial (the next trial gets a fresh set).
            return {"cleared_at_s": None}
        detail = restart_timeline(self._supervisor, 1, spec, clock, f"replica {self._index(spec)}")
        detail["ready_at_s"] = detail["cleared_at_s"]
        return detail

    def release(self) -> None:
        """Stop watching; restarted replicas keep serving (the set stops them with the rest)."""
        for supervisor in self.supervisors:
            supervisor.release()
