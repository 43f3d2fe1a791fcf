"""The factor registry: the one place a factor's meaning lives.

Each entry says which values it takes, which stage of a trial it configures and how (the
``ServerConfig``, ``ClientConfig`` or ``Workload`` field it sets, or the ``LoadSettings`` it
decides), what value other factors imply for it, and its role in analysis. Planning
(sweep/plan.py), trial execution (sweep/trial_execution.py) and analysis read it from here;
each run's manifest keeps a copy (``describe_factors``) so an old run is analysed by the
meaning its factors had when it ran (``factor_roles``).

Sides: ``server`` factors need a server (re)start, so the runner groups trials into blocks by
their server-side values; ``client`` and ``workload`` factors change what the load generator
sends; ``load`` factors how hard it sends.
Analysis roles: ``load`` factors are compared within and never optimised over (the lightest
load always has the lowest p99); ``transfer`` factors are those across which the report asks
whether the best configuration of the others transfers; every other factor is ``design``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

Side = Literal["server", "client", "workload", "load"]
Role = Literal["design", "load", "transfer"]
SIDES: tuple[str, ...] = ("server", "client", "workload", "load")
ROLES: tuple[str, ...] = ("design", "load", "transfer")
# The object each side's ``field`` names a field of.
STAGE_OBJECTS = {"server": "ServerConfig", "client": "ClientConfig", "workload": "Workload", "load": "LoadSettings"}


def _choice(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"got {value!r}, allowed: {', '.join(allowed)}")
        return value

    check.allowed = allowed  # type: ignore[attr-defined]
    check.text = ", ".join(allowed)  # type: ignore[attr-defined]
    return check


def _integer(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"got {value!r}, allowed: {check.text}")  # type: ignore[attr-defined]
        return value

    check.text = f"an integer from {low} to {high}"  # type: ignore[attr-defined]
    return check


def _number(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (low < value if open_low else low <= value) and value <= high
        if not ok:
            raise ValueError(f"got {value!r}, allowed: {check.text}")  # type: ignore[attr-defined]
        return float(value)

    check.text = f"a number {'above' if open_low else 'from'} {low} to {high}"  # type: ignore[attr-defined]
    return check


def _batching_set(value: Any) -> Any:
    return value  # the spec checks the name against its own [batching.<name>] sets


_batching_set.text = "'off' or the name of a [batching.<name>] set of the spec"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Implied:
    """A fact that fixes this factor's value when another factor has a given value, e.g. gRPC
    has one client library. ``unless_given``: only a default, a value the spec gives stands."""

    factor: str
    value: Any
    then: Any  # the value; a dict: {this factor's value: the value it becomes}
    why: str
    unless_given: bool = False

    def text(self) -> str:
        if isinstance(self.then, dict):
            mapped = ", ".join(f"{before!r} becomes {after!r}" for before, after in self.then.items())
            return f"{mapped} when {self.factor} = {self.value!r} ({self.why})"
        kind = "defaults to" if self.unless_given else "is"
        return f"{kind} {self.then!r} when {self.factor} = {self.value!r} ({self.why})"

    def apply(self, current: Any) -> Any:
        return self.then.get(current, current) if isinstance(self.then, dict) else self.then


@dataclass(frozen=True)
class Factor:
    name: str
    side: Side
    default: Any  # None: unset unless the spec gives it (or a rule implies it)
    check: Callable[[Any], Any]  # returns the normalised value or raises ValueError
    doc: str
    # The field of the side's object (STAGE_OBJECTS) this factor sets, and how its value becomes
    # that field's value (None: unchanged).
    field: str = ""
    to_field: Callable[[Any], Any] | None = None
    how: str = ""  # in words, when to_field or the stage does more than copy the value
    role: Role = "design"
    implied: Implied | None = None

    @property
    def restarts_server(self) -> bool:
        """A new value needs a new server process (trials are blocked by these)."""
        return self.side == "server"

    @property
    def allowed(self) -> str:
        return getattr(self.check, "text", "any value")

    def field_value(self, value: Any) -> Any:
        return self.to_field(value) if self.to_field is not None else value

    def describe(self) -> dict[str, Any]:
        """The entry as plain data, for a run's manifest."""
        return {"name": self.name, "side": self.side, "default": self.default, "allowed": self.allowed,
                "role": self.role, "doc": self.doc, "sets": f"{STAGE_OBJECTS[self.side]}.{self.field}",
                "how": self.how, "restarts_server": self.restarts_server,
                "implied": self.implied.text() if self.implied else None}


LOAD_LEVELS = ("light", "medium", "high")

FACTORS: dict[str, Factor] = {
    f.name: f
    for f in [
        Factor("protocol", "client", "rest", _choice("rest", "grpc"),
               "REST (JSON over HTTP/1.1) or gRPC (protobuf over HTTP/2)", field="protocol"),
        Factor("client_library", "client", "lean", _choice("lean", "requests", "grpcio"),
               "client library: lean (the lab's own lean client, REST or gRPC), or the common one "
               "(requests for REST, grpcio for gRPC)", field="library",
               implied=Implied("protocol", "grpc", {"requests": "grpcio"},
                               "the common gRPC library stands in for requests")),
        Factor("request_format", "client", "row", _choice("row", "columnar"),
               "REST body: instances (row) or inputs (columnar)", field="request_format",
               # gRPC ignores the REST body format; ClientConfig still wants a valid one.
               to_field=lambda v: "row" if v == "protobuf" else v, how="'protobuf' (gRPC) sets 'row', which gRPC ignores",
               implied=Implied("protocol", "grpc", "protobuf", "gRPC has one message format")),
        Factor("instances_per_request", "workload", 1, _integer(1, 10_000), "pupdates per request (payload size)",
               field="instances", role="transfer"),
        Factor("cache", "client", "off", _choice("off", "on"), "Redis cache-aside in front of the model",
               field="cache", how="'on' sets a CacheConfig on the run's Redis, 'off' none"),
        Factor("single_flight", "client", "on", _choice("off", "on"),
               "with the cache on: concurrent identical misses in one process share one model call",
               field="cache", how="sets CacheConfig.single_flight of the cache the 'cache' factor builds "
                                  "(sweep/trial_execution.py client_config); no effect with the cache off"),
        Factor("fallback", "client", "off", _choice("off", "on"),
               "the supervised fallback: deadline, circuit breaker, historical baseline", field="fallback",
               how="'on' sets a FallbackConfig with the served export's historical_baseline.json "
                   "(sweep/fault_setup.py reactive_client)"),
        Factor("deadline_ms", "client", None, _number(0.0, 600_000.0, open_low=True),
               "per-request deadline: the fallback's (default 100 ms), else the client timeout (default 5 s)",
               field="timeout_s", to_field=lambda ms: ms / 1000, how="the fallback's deadline_s when the fallback is on, else ClientConfig.timeout_s "
                   "(sweep/fault_setup.py reactive_client)"),
        Factor("breaker_failures", "client", None, _integer(1, 1000),
               "the fallback's circuit breaker: consecutive failed model calls that open it (default 5)",
               field="fallback", how="FallbackConfig.breaker_failures when the fallback is on "
                                     "(sweep/fault_setup.py reactive_client); no effect with it off"),
        Factor("breaker_cooldown_ms", "client", None, _number(0.0, 600_000.0),
               "the fallback's circuit breaker: how long it stays open before one probe (default 5,000 ms)",
               field="fallback", how="FallbackConfig.cooldown_s when the fallback is on "
                                     "(sweep/fault_setup.py reactive_client); no effect with it off"),
        Factor("cache_hit_ratio", "workload", 0.0, _number(0.0, 1.0), "share of requests drawn from a pre-cached hot set",
               field="cache_hit_ratio", to_field=lambda v: v or None, how="0 sets None (no hot set)",
               role="transfer"),
        Factor("retries", "client", 0, _integer(0, 10),
               "extra attempts after a connection error or an 'unavailable' answer (0 keeps measurements honest)",
               field="retries"),
        Factor("model_variant", "server", "small", _choice("small", "large"), "size of the Pooch Predictor",
               field="model_variant", role="transfer"),
        Factor("models_served", "server", 1, _integer(1, 16), "copies of the model loaded by the server at once",
               field="models_served", role="transfer"),
        Factor("batching", "server", "off", _batching_set, "'off' or the name of a [batching.<name>] set",
               field="batching"),
        Factor("server_threads", "server", 0, _integer(0, 64),
               "TensorFlow intra- and inter-op threads of the server (0: the server's default; the "
               "lab's runs each graph on the calling thread)", field="server_threads"),
        Factor("replicas", "server", 1, _integer(1, 8), "server replicas behind a load balancer", field="replicas"),
        Factor("rollout_warmup", "server", None, _choice("on", "off"),
               "whether a model_rollout fault's new version carries warm-up records", field="rollout_warmup",
               how="sets the warmup of the spec's model_rollout faults (sweep/fault_setup.py with_rollout_warmup)"),
        Factor("max_queue", "server", 0, _integer(0, 100_000),
               "load shedding: requests the lab server lets wait for or run the model before it refuses "
               "the next at once (UNAVAILABLE / 503); 0: unbounded, as TF Serving", field="max_queue",
               how="the lab server's --lab_max_queue flag (server_kind = \"lab\" only)"),
        Factor("scaling", "server", "fixed", _choice("fixed", "reactive"),
               "replicas: fixed, or reactive (starts with `replicas`, adds a lab-server replica behind nginx "
               "when a window's p99 runs hot, removes it when load falls; the spec's [scaling] table)",
               field="scaling", how="'reactive' runs the replicas behind nginx and a ReactiveScaler during "
                                    "each trial (sweep/scaling.py)"),
        Factor("load_mode", "load", "closed", _choice("closed", "open"),
               "closed loop (users wait for answers) or open loop (Poisson arrivals)", field="mode", role="load"),
        Factor("load_level", "load", None, _choice(*LOAD_LEVELS),
               "fraction of the reference configuration's calibrated capacity (open loop)", field="rate_rps",
               how="the spec's [load] levels fraction of the calibrated capacity", role="load"),
        Factor("users", "load", None, _integer(1, 1024), "concurrent closed-loop users", field="users", role="load",
               implied=Implied("load_mode", "closed", 1, "a closed loop needs a user count", unless_given=True)),
        Factor("rate_rps", "load", None, _number(0.0, 1e6, open_low=True), "open-loop arrival rate, requests/s",
               field="rate_rps", role="load"),
    ]
}

SERVER_FACTORS = tuple(name for name, f in FACTORS.items() if f.side == "server")


def allowed_factor_names() -> str:
    return ", ".join(FACTORS)


def apply_implied(factors: dict[str, Any]) -> dict[str, Any]:
    """``factors`` with every value another factor implies made explicit (a new dict)."""
    resolved = dict(factors)
    for factor in FACTORS.values():
        rule = factor.implied
        if rule is None or resolved.get(rule.factor) != rule.value:
            continue
        if rule.unless_given and resolved.get(factor.name) is not None:
            continue
        resolved[factor.name] = rule.apply(resolved.get(factor.name, factor.default))
    return resolved


def stage_fields(side: Side, factors: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``side``'s object (STAGE_OBJECTS) that ``factors`` set: {field: value}.
    A factor of that side absent from ``factors`` is left out (the object's own default)."""
    return {f.field: f.field_value(factors[f.name]) for f in FACTORS.values()
            if f.side == side and f.field and factors.get(f.name) is not None}


def describe_factors() -> dict[str, dict[str, Any]]:
    """The registry as plain data (name, side, default, allowed values, role, doc, ...)."""
    return {name: factor.describe() for name, factor in FACTORS.items()}


def factor_roles(manifest: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Each factor's analysis role ("design", "load" or "transfer") as the run recorded it in its
    manifest; a run saved before manifests held the registry gets the current registry's."""
    saved = (manifest or {}).get("factor_registry")
    if isinstance(saved, dict) and saved:
        return {name: str(entry.get("role", "design")) for name, entry in saved.items() if isinstance(entry, dict)}
    return {name: factor.role for name, factor in FACTORS.items()}


def factors_with_role(role: str, manifest: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The factors of ``role`` (see ``factor_roles``), in registry order."""
    if role not in ROLES:
        raise ValueError(f"unknown factor role {role!r}; allowed: {', '.join(ROLES)}")
    return tuple(name for name, r in factor_roles(manifest).items() if r == role)
