"""The ``scaling = "reactive"`` policy: add a lab-server replica behind the balancer when the last
window ran hot, remove one when load fell, with hysteresis and a cool-down.

:func:`decide` is the pure rule (tested with synthetic windows). :class:`ReactiveScaler` applies
it during a trial: it is fed each merged window (the trial's progress callback), starts a replica
on a background thread (a model load takes seconds: the measurement must not wait for it), and
only once the new replica's models are AVAILABLE rewrites nginx's upstreams and reloads nginx
(SIGHUP: old workers finish their requests, none is dropped). Removing a replica reloads nginx
first, then stops the replica. Every change is a timeline entry of the trial record.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Decision = Literal["add", "remove", "hold"]


@dataclass(frozen=True)
class ScalingSettings:
    """The spec's ``[scaling]`` table. Up when a window's p99 exceeds ``p99_up_ms`` (or the server's
    mean queue time exceeds ``queue_up_ms``, when given); down when p99 stays below ``p99_down_ms``
    for ``down_windows`` windows in a row; no change within ``cooldown_s`` of the last one."""

    max_replicas: int = 2
    p99_up_ms: float = 50.0
    p99_down_ms: float = 10.0
    queue_up_ms: float | None = None
    down_windows: int = 3
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if self.p99_down_ms >= self.p99_up_ms:
            raise ValueError(f"scaling.p99_down_ms ({self.p99_down_ms}) must be below scaling.p99_up_ms "
                             f"({self.p99_up_ms}): the gap is the hysteresis")


@dataclass(frozen=True)
class WindowSignal:
    """What the policy sees of one closed window."""

    end_s: float  # since the measurement start
    p99_ms: float | None
    queue_ms: float | None = None  # the server's mean queue time in the window (None: not known)


def decide(history: list[WindowSignal], replicas: int, min_replicas: int, settings: ScalingSettings,
           last_change_s: float | None) -> Decision:
    """Add, remove or hold, from the windows so far (the last one decides, earlier ones only for
    the down rule) and when the replica count last changed."""
    if not history:
        return "hold"
    now = history[-1]
    if last_change_s is not None and now.end_s - last_change_s < settings.cooldown_s:
        return "hold"
    hot = (now.p99_ms is not None and now.p99_ms > settings.p99_up_ms) or \
        (settings.queue_up_ms is not None and now.queue_ms is not None and now.queue_ms > settings.queue_up_ms)
    if hot:
        return "add" if replicas < settings.max_replicas else "hold"
    recent = history[-settings.down_windows:]
    since_change = [w for w in recent if last_change_s is None or w.end_s > last_change_s]
    cool = len(since_change) == settings.down_windows and all(
        w.p99_ms is not None and w.p99_ms < settings.p99_down_ms for w in since_change)
    return "remove" if cool and replicas > min_replicas else "hold"


@dataclass
class ReactiveScaler:
    """Applies :func:`decide` to a running replica set during one trial.

    ``add_replica()`` starts one replica, waits until it serves and puts it behind the balancer;
    ``remove_replica()`` takes the newest out of the balancer and stops it. Both return a dict
    of details for the timeline (e.g. the replica's port). ``clock`` gives seconds since the
    measurement start (for the timeline's ``at_s``)."""

    settings: ScalingSettings
    min_replicas: int
    add_replica: Callable[[], dict[str, Any]]
    remove_replica: Callable[[], dict[str, Any]]
    # Seconds since the measurement start; None: timed from the first window's arrival.
    clock: Callable[[], float] | None = None
    replicas: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)
    history: list[WindowSignal] = field(default_factory=list)
    _last_change_s: float | None = None
    _busy: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.replicas = self.replicas or self.min_replicas

    def _now(self) -> float:
        assert self.clock is not None
        return self.clock()

    def on_window(self, signal: WindowSignal) -> Decision:
        """Feed one closed window; acts on the decision (in the background) and returns it."""
        if self.clock is None:
            self.clock = seconds_since(time.monotonic() - signal.end_s)
        self.history.append(signal)
        if self._busy is not None and self._busy.is_alive():
            return "hold"  # one change at a time
        decision = decide(self.history, self.replicas, self.min_replicas, self.settings, self._last_change_s)
        if decision == "hold":
            return decision
        self._last_change_s = signal.end_s
        self.timeline.append({"at_s": self._now(), "event": f"scale_{decision}_decided", "window_end_s": signal.end_s,
                              "p99_ms": signal.p99_ms, "replicas": self.replicas})
        self._busy = threading.Thread(target=self._apply, args=(decision,), daemon=True)
        self._busy.start()
        return decision

    def _apply(self, decision: Decision) -> None:
        try:
            details = self.add_replica() if decision == "add" else self.remove_replica()
        except Exception as error:  # a failed start is the trial's finding, never a crash of it
            self.timeline.append({"at_s": self._now(), "event": f"replica_{decision}_failed", "error": str(error)})
            return
        self.replicas += 1 if decision == "add" else -1
        # Counted from when the replica took (or stopped taking) requests, not from the decision.
        self._last_change_s = max(self._last_change_s or 0.0, self._now())
        self.timeline.append({"at_s": self._now(), "event": "replica_joined" if decision == "add" else "replica_left",
                              "replicas": self.replicas, **details})

    def progress(self, window_s: float,
                 inner: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
        """A trial progress callback (load/trial.py's, once per merged window) that feeds this
        scaler and then ``inner``."""
        def on_progress(info: dict[str, Any]) -> None:
            p99, queue = info.get("p99_us"), info.get("server_queue_p99_us")
            self.on_window(WindowSignal(end_s=(info["window"] + 1) * window_s,
                                        p99_ms=None if p99 is None else p99 / 1000,
                                        queue_ms=None if queue is None else queue / 1000))
            if inner is not None:
                inner(info)
        return on_progress

    def finish(self, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Wait for a change in progress; the timeline."""
        if self._busy is not None:
            self._busy.join(timeout_s)
        return self.timeline

    def back_to_minimum(self) -> list[dict[str, Any]]:
        """After the trial: wait for a change in progress, remove the replicas added (so the next
        trial starts at the minimum; entries marked ``after_trial``); the whole timeline."""
        self.finish()
        while self.replicas > self.min_replicas:
            details = self.remove_replica()
            self.replicas -= 1
            self.timeline.append({"at_s": self._now() if self.clock else None, "event": "replica_left",
                                  "replicas": self.replicas, "after_trial": True, **details})
        return self.timeline


def seconds_since(start: float) -> Callable[[], float]:
    return lambda: time.monotonic() - start


def replica_changes(replica_set: Any, spec: Any, model_names: list[str],
                    ready_timeout_s: float = 180.0) -> tuple[Callable[[], dict[str, Any]], Callable[[], dict[str, Any]]]:
    """(add, remove) for :class:`ReactiveScaler` over a running ``ReplicaSet`` of lab servers
    behind nginx, each replica started from ``spec`` on its own ports."""
    import dataclasses

    from poochlab.processes.servers.nginx_config import Backend
    from poochlab.processes.servers.launcher import launch_command, server_command

    if replica_set.balancer is None:
        raise ValueError("reactive scaling needs the nginx balancer in front of the replicas")

    def backends(replicas: list[Any]) -> list[Any]:
        return [Backend("127.0.0.1", r.rest_port, r.grpc_port) for r in replicas]

    def add() -> dict[str, Any]:
        index = len(replica_set.replicas)
        log_file = spec.log_file.with_name(f"{spec.log_file.stem}-replica{index}{spec.log_file.suffix}") \
            if spec.log_file else None
        replica_spec = dataclasses.replace(spec, rest_port=0, grpc_port=0, log_file=log_file)
        replica = launch_command(replica_spec, lambda rest, grpc: server_command(replica_spec, rest, grpc))
        try:
            replica.wait_until_available(model_names, ready_timeout_s)  # serves before it gets traffic
            replica_set.balancer.reload(backends([*replica_set.replicas, replica]))
        except BaseException:
            replica.stop()
            raise
        replica_set.replicas.append(replica)
        return {"replica": index, "pid": replica.pid, "rest_port": replica.rest_port, "grpc_port": replica.grpc_port}

    def remove() -> dict[str, Any]:
        replica = replica_set.replicas[-1]
        drained = replica_set.balancer.reload(backends(replica_set.replicas[:-1]))
        replica_set.replicas.pop()
        replica.stop()
        return {"replica": len(replica_set.replicas), "pid": replica.pid, "drained": drained}

    return add, remove
