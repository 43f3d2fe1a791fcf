"""The catalogue of factors a sweep may vary or hold fixed, and what each value may be.

A factor belongs to one side of the measurement: ``server`` factors need a server (re)start,
``client`` and ``workload`` factors change what the load generator sends, ``load`` factors
how hard it sends. The runner groups trials into blocks by their server-side values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

Side = Literal["server", "client", "workload", "load"]


def _choice(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"got {value!r}, allowed: {', '.join(allowed)}")
        return value

    check.allowed = allowed  # type: ignore[attr-defined]
    return check


def _integer(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"got {value!r}, allowed: an integer from {low} to {high}")
        return value

    return check


def _number(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (low < value if open_low else low <= value) and value <= high
        if not ok:
            bound = "above" if open_low else "from"
            raise ValueError(f"got {value!r}, allowed: a number {bound} {low} to {high}")
        return float(value)

    return check


@dataclass(frozen=True)
class Factor:
    name: str
    side: Side
    default: Any
    check: Callable[[Any], Any]  # returns the normalised value or raises ValueError
    doc: str


LOAD_LEVELS = ("light", "medium", "high")

FACTORS: dict[str, Factor] = {
    f.name: f
    for f in [
        Factor("protocol", "client", "rest", _choice("rest", "grpc"), "REST (JSON over HTTP/1.1) or gRPC (protobuf over HTTP/2)"),
        Factor("client_library", "client", "lean", _choice("lean", "requests"),
               "REST client library (gRPC always uses grpcio)"),
        Factor("request_format", "client", "row", _choice("row", "columnar"), "REST body: instances (row) or inputs (columnar)"),
        Factor("instances_per_request", "workload", 1, _integer(1, 10_000), "pupdates per request (payload size)"),
        Factor("cache", "client", "off", _choice("off", "on"), "Redis cache-aside in front of the model"),
        Factor("fallback", "client", "off", _choice("off", "on"), "the supervised fallback: deadline, circuit breaker, historical baseline"),
        Factor("deadline_ms", "client", None, _number(0.0, 600_000.0, open_low=True), "per-request deadline: the fallback's (default 100 ms), else the client timeout (default 5 s)"),
        Factor("cache_hit_ratio", "workload", 0.0, _number(0.0, 1.0), "share of requests drawn from a pre-cached hot set"),
        Factor("model_variant", "server", "small", _choice("small", "large"), "size of the Pooch Predictor"),
        Factor("models_served", "server", 1, _integer(1, 16), "copies of the model loaded by the server at once"),
        Factor("batching", "server", "off", lambda v: v, "'off' or the name of a [batching.<name>] set"),
        Factor("server_threads", "server", 0, _integer(0, 64),
               "TensorFlow intra- and inter-op threads of the server (0: the server's default; the "
               "lab's runs each graph on the calling thread)"),
        Factor("replicas", "server", 1, _integer(1, 8), "server replicas behind a load balancer"),
        Factor("load_mode", "load", "closed", _choice("closed", "open"),
               "closed loop (users wait for answers) or open loop (Poisson arrivals)"),
        Factor("load_level", "load", None, _choice(*LOAD_LEVELS),
               "fraction of the reference configuration's calibrated capacity (open loop)"),
        Factor("users", "load", None, _integer(1, 1024), "concurrent closed-loop users"),
        Factor("rate_rps", "load", None, _number(0.0, 1e6, open_low=True), "open-loop arrival rate, requests/s"),
    ]
}

SERVER_FACTORS = tuple(name for name, f in FACTORS.items() if f.side == "server")


def allowed_factor_names() -> str:
    return ", ".join(FACTORS)
