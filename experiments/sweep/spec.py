"""Sweep specs: a design space described once in TOML, validated before anything runs.

Layout of ``experiments/*.toml``::

    [sweep]          name, question, design ("full_factorial" | "random"), samples (random),
                     repetitions (default 3), seed, profile ("quick" | "standard"),
                     server_kind ("lab"), p99_budget_ms, redis_url (a Redis that already runs,
                     for cache trials; default $POOCHLAB_REDIS_URL, else the lab starts its own)
    [factors]        factor = [values...]          the independent variables
    [controls]       factor = value                held fixed (unlisted factors take defaults)
    [batching.NAME]  TF Serving BatchingParameters fields, e.g. max_batch_size = 32
    [batching_grid]  field = [values...]           expands into sets named "grid-<field><v>-..."
    [load]           levels = {light = 0.25, ...}; reference = {factor = value, ...};
                     workers = N | "auto" (generator processes; "auto": load/settings.py workers_for);
                     cpus_awake = true (hold /dev/cpu_dma_latency at 0 while the run measures:
                     experiments/recording/cpu_wake.py)
    [profile]        window_s, warmup_s, min_windows, max_windows overriding the profile
    [external]       host, rest_port, grpc_port of a server someone else runs (server_kind "external");
                     behind_balancer = true when that address is a balancer over several servers
    [search]         rate_rps = {low, high, steps}: per configuration, bisect the open-loop rate for
                     the highest one that meets sweep.p99_budget_ms (a rate search)
    [[faults]]       kind, at_s, duration_s, settings: a fault planted in every trial's measurement
                     (experiments/faults/schedule.py); a fault trial uses windows of at most 1 s

Every error names the file, the key and what was expected.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from poochlab.experiments.load.rate_schedule import (RateSchedule, RateScheduleError, UsersSchedule, parse_schedule,
                                                     parse_users_schedule)
from poochlab.experiments.load.settings import AUTO_WORKERS
from poochlab.experiments.sweep.factors import FACTORS, LOAD_LEVELS, allowed_factor_names
from poochlab.experiments.sweep.scaling import ScalingSettings

DESIGNS = ("full_factorial", "random")
SERVER_KINDS = ("lab", "tfserving", "docker", "external")
BATCHING_FIELDS = (
    "max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
    "allowed_batch_sizes", "pad_variable_length_inputs", "enable_large_batch_splitting",
    "max_execution_batch_size",
)


class SpecError(ValueError):
    """A sweep spec that cannot run; the message names file, key and what was expected."""


@dataclass(frozen=True)
class Profile:
    """How long each trial measures. `quick` is for the default run and CI-sized sweeps."""

    name: str
    window_s: float
    warmup_s: float
    min_windows: int
    max_windows: int
    calibration_s: float
    # Open loop: a window lasts long enough to hold this many requests at the trial's rate
    # (so its p99 rests on ~window_requests/100 requests above it), from window_s up to
    # max_window_s. 5,000 is where the stability rule detects a +25% p99 in one window 9 times
    # in 10 (tests/test_recording_stability.py). None: every window lasts window_s.
    window_requests: int | None = None
    max_window_s: float | None = None

    def window_for(self, rate_rps: float | None) -> float:
        """The window length of a trial at ``rate_rps`` (None: a closed loop)."""
        if rate_rps is None or not self.window_requests:
            return self.window_s
        return min(max(self.window_requests / rate_rps, self.window_s), self.max_window_s or self.window_s)

    @property
    def trial_bounds_s(self) -> tuple[float, float]:
        longest = max(self.window_s, self.max_window_s or 0.0) if self.window_requests else self.window_s
        return (self.warmup_s + self.min_windows * self.window_s,
                self.warmup_s + self.max_windows * longest)


PROFILES = {
    "quick": Profile("quick", window_s=2.0, warmup_s=2.0, min_windows=3, max_windows=7, calibration_s=6.0,
                     window_requests=5_000, max_window_s=3.0),
    "standard": Profile("standard", window_s=5.0, warmup_s=5.0, min_windows=3, max_windows=10, calibration_s=20.0,
                        window_requests=8_000, max_window_s=20.0),
}

MAX_WORKERS = 64  # generator processes per trial
DEFAULT_LOAD_LEVELS = {"light": 0.25, "medium": 0.5, "high": 0.85}


@dataclass(frozen=True)
class RateSearch:
    """Bisect the open-loop rate (geometrically) between low and high in `steps` trials."""

    low_rps: float
    high_rps: float
    steps: int


@dataclass(frozen=True)
class ABSpec:
    """``[ab]``: the server serves ``stable_variant`` as version 1 (label ``stable``) and
    ``canary_variant`` as version 2 (label ``canary``) under one model name; the client sends
    ``canary_share`` of the requests to the canary, ``baseline_share`` to the historical
    average, the rest to the stable version."""

    canary_share: float
    baseline_share: float = 0.0
    stable_variant: str = "small"
    canary_variant: str = "large"


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    question: str
    design: str
    samples: int | None
    repetitions: int
    seed: int
    profile: Profile
    server_kind: str
    p99_budget_ms: float | None
    factors: dict[str, list[Any]]  # varied, in file order
    controls: dict[str, Any]  # every other factor, explicit or default
    batching_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_levels: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOAD_LEVELS))
    reference: dict[str, Any] = field(default_factory=dict)
    external: dict[str, Any] | None = None  # {"host", "rest_port", "grpc_port", "behind_balancer"}
    search: "RateSearch | None" = None
    redis_url: str | None = None  # an existing Redis for cache trials (None: env var or the lab's own)
    faults: tuple = ()  # FaultSpec each: planted in every trial (experiments/faults/schedule.py)
    rate_schedule: RateSchedule | None = None  # [load] rate_schedule: every open-loop trial's arrivals
    users_schedule: UsersSchedule | None = None  # [load] users_schedule: every closed-loop trial's users
    scaling: ScalingSettings = field(default_factory=ScalingSettings)  # [scaling]: the reactive policy
    load_workers: int | str = "auto"  # generator processes per trial, or "auto"
    cpus_awake: bool = False  # [load] cpus_awake: idle CPUs poll while the run measures
    ab: "ABSpec | None" = None  # an online A/B test between two served versions ([ab])

    def needs_calibration(self) -> bool:
        return "load_level" in self.factors or self.controls.get("load_level") is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "name": self.name, "question": self.question,
            "design": self.design, "samples": self.samples, "repetitions": self.repetitions,
            "seed": self.seed, "profile": vars(self.profile), "server_kind": self.server_kind,
            "p99_budget_ms": self.p99_budget_ms, "factors": self.factors, "controls": self.controls,
            "batching_sets": self.batching_sets, "load_levels": self.load_levels,
            "reference": self.reference, "external": self.external,
            "search": vars(self.search) if self.search else None, "redis_url": self.redis_url,
            **({"faults": [vars(f) | {"params": dict(f.params)} for f in self.faults]} if self.faults else {}),
            "load_workers": self.load_workers, "cpus_awake": self.cpus_awake,
            **({"ab": vars(self.ab)} if self.ab else {}),
            **({"rate_schedule": self.rate_schedule.as_record()} if self.rate_schedule else {}),
            **({"users_schedule": self.users_schedule.as_record()} if self.users_schedule else {}),
            "scaling": vars(self.scaling),
        }


def load_spec(path: Path | str) -> SweepSpec:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep spec") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    return parse_spec(data, path)


def parse_spec(data: dict[str, Any], path: Path) -> SweepSpec:
    where = _Where(path)
    where.only_keys("", data, ("sweep", "factors", "controls", "batching", "batching_grid", "load", "profile",
                                  "external", "search", "faults", "ab", "scaling"))
    sweep = data.get("sweep", {})
    where.only_keys("sweep", sweep, ("name", "question", "design", "samples", "repetitions", "seed",
                                     "profile", "server_kind", "p99_budget_ms", "redis_url"))
    design = where.choice("sweep.design", sweep.get("design", "full_factorial"), DESIGNS)
    repetitions = where.integer("sweep.repetitions", sweep.get("repetitions", 3), 1, 100)
    seed = where.integer("sweep.seed", sweep.get("seed", 1), 0, 2**63 - 1)
    samples = sweep.get("samples")
    if design == "random":
        samples = where.integer("sweep.samples", samples, 1, 100_000)
    elif samples is not None:
        raise SpecError(f"{path}: sweep.samples: only used with design = \"random\"")
    profile = PROFILES[where.choice("sweep.profile", sweep.get("profile", "standard"), tuple(PROFILES))]
    profile = _profile_overrides(where, profile, data.get("profile", {}))
    server_kind = where.choice("sweep.server_kind", sweep.get("server_kind", "lab"), SERVER_KINDS)
    budget = sweep.get("p99_budget_ms")
    if budget is not None and (not isinstance(budget, (int, float)) or budget <= 0):
        raise SpecError(f"{path}: sweep.p99_budget_ms: expected a positive number of milliseconds, got {budget!r}")

    batching_sets = _batching_sets(where, data.get("batching", {}), data.get("batching_grid", {}))
    factors = _factors(where, data.get("factors", {}), batching_sets, data.get("batching_grid"))
    controls = _controls(where, data.get("controls", {}), factors, batching_sets)
    load = data.get("load", {})
    where.only_keys("load", load, ("levels", "reference", "workers", "rate_schedule", "users_schedule", "cpus_awake"))
    levels = dict(DEFAULT_LOAD_LEVELS)
    for level, fraction in load.get("levels", {}).items():
        where.choice("load.levels", level, LOAD_LEVELS)
        levels[level] = where.number(f"load.levels.{level}", fraction, 0.0, 1.0)
    spec = SweepSpec(
        path=path, name=str(sweep.get("name", path.stem)), question=str(sweep.get("question", "")),
        design=design, samples=samples, repetitions=repetitions, seed=seed, profile=profile,
        server_kind=server_kind, p99_budget_ms=float(budget) if budget is not None else None,
        factors=factors, controls=controls, batching_sets=batching_sets, load_levels=levels,
        external=_external(where, data.get("external"), server_kind),
        search=_search(where, data.get("search")),
        redis_url=_redis_url(where, sweep.get("redis_url")),
        faults=_faults(where, data.get("faults", []), server_kind, sweep.get("redis_url")),
        load_workers=_load_workers(where, load.get("workers", AUTO_WORKERS)),
        cpus_awake=_flag(where, "load.cpus_awake", load.get("cpus_awake", False)),
        ab=_ab(where, data.get("ab")),
        rate_schedule=_rate_schedule(where, load.get("rate_schedule")),
        users_schedule=_users_schedule(where, load.get("users_schedule")),
        scaling=_scaling(where, data.get("scaling")),
    )
    reference = _reference(where, load.get("reference", {}), spec)
    spec = replace(spec, reference=reference)
    _check_combinations(where, spec)
    return spec


def _rate_schedule(where: "_Where", entries: Any) -> RateSchedule | None:
    if entries is None:
        return None
    try:
        return parse_schedule(entries, f"{where.path}: load.rate_schedule")
    except RateScheduleError as error:
        raise SpecError(str(error)) from None


def _users_schedule(where: "_Where", entries: Any) -> UsersSchedule | None:
    if entries is None:
        return None
    try:
        return parse_users_schedule(entries, f"{where.path}: load.users_schedule")
    except RateScheduleError as error:
        raise SpecError(str(error)) from None


def _scaling(where: "_Where", table: Any) -> ScalingSettings:
    if table is None:
        return ScalingSettings()
    keys = ("max_replicas", "p99_up_ms", "p99_down_ms", "queue_up_ms", "down_windows", "cooldown_s")
    where.only_keys("scaling", table, keys)
    values: dict[str, Any] = {}
    for key in keys:
        if key not in table:
            continue
        if key in ("max_replicas", "down_windows"):
            values[key] = where.integer(f"scaling.{key}", table[key], 1, 8 if key == "max_replicas" else 100)
        else:
            values[key] = where.number(f"scaling.{key}", table[key], 0.0, 600_000.0)
    try:
        return ScalingSettings(**values)
    except ValueError as error:
        raise where.fail("scaling", str(error)) from None


def _load_workers(where: "_Where", value: Any) -> int | str:
    if value == AUTO_WORKERS:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise where.fail("load.workers", f'expected an integer from 1 to {MAX_WORKERS} or "{AUTO_WORKERS}", got {value!r}')
    return value


class _Where:
    """Builds error messages that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {problem}")

    def only_keys(self, table: str, data: Any, allowed: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise self.fail(table or "(top level)", f"expected a table, got {data!r}")
        for key in data:
            if key not in allowed:
                name = f"{table}.{key}" if table else key
                raise self.fail(name, f"unknown key; allowed: {', '.join(allowed)}")

    def choice(self, key: str, value: Any, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(key, f"got {value!r}, allowed: {', '.join(allowed)}")
        return value

    def integer(self, key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"expected an integer from {low} to {high}, got {value!r}")
        return value

    def number(self, key: str, value: Any, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(key, f"expected a number from {low} to {high}, got {value!r}")
        return float(value)


def _profile_overrides(where: _Where, profile: Profile, table: dict[str, Any]) -> Profile:
    where.only_keys("profile", table, ("window_s", "warmup_s", "min_windows", "max_windows", "calibration_s",
                                       "window_requests", "max_window_s"))
    changes: dict[str, Any] = {}
    if "window_requests" in table:
        changes["window_requests"] = where.integer("profile.window_requests", table["window_requests"], 0, 10**8) or None
    for key in ("window_s", "warmup_s", "calibration_s", "max_window_s"):
        if key in table:
            changes[key] = where.number(f"profile.{key}", table[key], 0.0 if key == "warmup_s" else 0.05, 3600.0)
    for key in ("min_windows", "max_windows"):
        if key in table:
            changes[key] = where.integer(f"profile.{key}", table[key], 1, 1000)
    if "window_s" in changes and "max_window_s" not in changes and profile.max_window_s is not None:
        changes["max_window_s"] = max(profile.max_window_s, changes["window_s"])  # longer windows stay allowed
    profile = replace(profile, **changes)
    if profile.max_windows < profile.min_windows:
        raise where.fail("profile.max_windows", f"must be at least min_windows ({profile.min_windows})")
    if profile.window_requests and profile.max_window_s is not None and profile.max_window_s < profile.window_s:
        raise where.fail("profile.max_window_s", f"must be at least window_s ({profile.window_s})")
    return profile


def _batching_sets(where: _Where, sets: dict[str, Any], grid: dict[str, Any]) -> dict[str, dict[str, Any]]:
    where.only_keys("batching", sets, tuple(sets))
    result: dict[str, dict[str, Any]] = {}
    for name, fields_ in sets.items():
        if name == "off":
            raise where.fail("batching.off", "'off' means no batching and cannot name a set")
        where.only_keys(f"batching.{name}", fields_, BATCHING_FIELDS)
        result[name] = dict(fields_)
    if grid:
        where.only_keys("batching_grid", grid, BATCHING_FIELDS)
        names = list(grid)
        for key in names:
            if not isinstance(grid[key], list) or not grid[key]:
                raise where.fail(f"batching_grid.{key}", "expected a non-empty list of values")
        for values in itertools.product(*(grid[k] for k in names)):
            set_name = "grid-" + "-".join(f"{_short(k)}{v}" for k, v in zip(names, values))
            result[set_name] = dict(zip(names, values))
    for name, fields_ in result.items():
        _validate_batching_set(where, name, fields_)
    return result


def _short(field_name: str) -> str:
    return "".join(part[0] for part in field_name.split("_"))


def _validate_batching_set(where: _Where, name: str, fields_: dict[str, Any]) -> None:
    """Refuse what TF Serving would refuse, by parsing the very text it would be given."""
    from poochlab.experiments.sweep.server_configs import batching_parameters_text

    try:
        from poochlab.serving.batching import parse_batching_parameters
    except ImportError:  # the batching package is optional until it lands
        return
    try:
        parse_batching_parameters(batching_parameters_text(fields_), source=f"batching.{name}")
    except ValueError as error:
        raise where.fail(f"batching.{name}", f"TF Serving would refuse this set: {error}") from None
    from poochlab.models.warmup_records import MAX_WARMUP_BATCH

    # TF Serving replays the exports' warm-up through the batching queue: a smaller cap fails the load.
    if int(fields_.get("max_batch_size", 1000)) < MAX_WARMUP_BATCH:
        raise where.fail(f"batching.{name}.max_batch_size",
                         f"got {fields_['max_batch_size']}, but the exports' warm-up requests hold up to "
                         f"{MAX_WARMUP_BATCH} rows and TF Serving fails to load a model whose warm-up "
                         f"request is larger than max_batch_size; use at least {MAX_WARMUP_BATCH}")


def _factors(where: _Where, table: dict[str, Any], batching_sets: dict[str, Any],
             grid: dict[str, Any] | None) -> dict[str, list[Any]]:
    factors: dict[str, list[Any]] = {}
    for name, values in table.items():
        if name not in FACTORS:
            raise where.fail(f"factors.{name}", f"unknown factor; allowed: {allowed_factor_names()}")
        if not isinstance(values, list) or not values:
            raise where.fail(f"factors.{name}", f"expected a non-empty list of values, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise where.fail(f"factors.{name}", f"values repeat: {values!r}")
        factors[name] = [_check_value(where, f"factors.{name}", name, v, batching_sets) for v in values]
    if grid:
        grid_names = [n for n in batching_sets if n.startswith("grid-")]
        listed = factors.get("batching", [])
        factors["batching"] = listed + [n for n in grid_names if n not in listed]
    return factors


def _check_value(where: _Where, key: str, name: str, value: Any, batching_sets: dict[str, Any]) -> Any:
    if name == "batching":
        allowed = ("off", *batching_sets)
        if value not in allowed:
            raise where.fail(key, f"got {value!r}, allowed: {', '.join(allowed)} (define sets as [batching.NAME])")
        return value
    try:
        return FACTORS[name].check(value)
    except ValueError as error:
        raise where.fail(key, str(error)) from None


def _controls(where: _Where, table: dict[str, Any], factors: dict[str, list[Any]],
              batching_sets: dict[str, Any]) -> dict[str, Any]:
    controls: dict[str, Any] = {}
    for name, value in table.items():
        if name not in FACTORS:
            raise where.fail(f"controls.{name}", f"unknown factor; allowed: {allowed_factor_names()}")
        if name in factors:
            raise where.fail(f"controls.{name}", "is also listed under [factors]; a factor is varied or held, not both")
        controls[name] = _check_value(where, f"controls.{name}", name, value, batching_sets)
    for name, factor in FACTORS.items():
        if name not in factors and name not in controls and factor.default is not None:
            controls[name] = factor.default
    return controls


def _reference(where: _Where, table: dict[str, Any], spec: SweepSpec) -> dict[str, Any]:
    """The configuration whose calibrated capacity defines the load levels."""
    if not spec.needs_calibration():
        if table:
            raise where.fail("load.reference", "only used when load_level is a factor or control")
        return {}
    reference = {name: values[0] for name, values in spec.factors.items() if name != "load_level"}
    for name, value in table.items():
        if name not in FACTORS or FACTORS[name].side == "load":
            raise where.fail(f"load.reference.{name}", "expected a non-load factor of this sweep")
        reference[name] = _check_value(where, f"load.reference.{name}", name, value, spec.batching_sets)
    return reference


def _external(where: _Where, table: dict[str, Any] | None, server_kind: str) -> dict[str, Any] | None:
    if server_kind != "external":
        if table is not None:
            raise where.fail("external", 'only used with server_kind = "external"')
        return None
    if table is None:
        raise where.fail("external", 'server_kind = "external" needs [external] host, rest_port, grpc_port')
    where.only_keys("external", table, ("host", "rest_port", "grpc_port", "behind_balancer"))
    host = table.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise where.fail("external.host", f"expected a host name or address, got {host!r}")
    return {"host": host, "rest_port": where.integer("external.rest_port", table.get("rest_port"), 1, 65535),
            "grpc_port": where.integer("external.grpc_port", table.get("grpc_port"), 1, 65535),
            "behind_balancer": _flag(where, "external.behind_balancer", table.get("behind_balancer", False))}


def _flag(where: _Where, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise where.fail(key, f"expected true or false, got {value!r}")
    return value


def _redis_url(where: _Where, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise where.fail("sweep.redis_url", f"expected a Redis URL like redis://redis:6379/0, got {value!r}")
    return value


def _faults(where: _Where, tables: Any, server_kind: str, redis_url: Any) -> tuple:
    from poochlab.experiments.faults.schedule import (
        MODEL_ROLLOUT, REDIS_OUTAGE, REPLICA_KILL, SERVER_CRASH, SLOW_MODEL, ScheduleError, parse_faults)

    try:
        schedule = parse_faults(tables, str(where.path))
    except ScheduleError as error:
        raise SpecError(str(error)) from None
    for index, fault in enumerate(schedule):
        key = f"faults[{index}].kind"
        if fault.kind == SLOW_MODEL and server_kind != "lab":
            raise where.fail(key, 'a slow_model is set through the lab server\'s /lab/faults: needs server_kind = "lab"')
        if fault.kind == SERVER_CRASH and server_kind not in ("lab", "tfserving"):
            raise where.fail(key, f'the lab can crash and restart only a server it runs as a process (server_kind '
                                  f'"lab" or "tfserving"), not {server_kind!r}')
        if fault.kind == MODEL_ROLLOUT and server_kind not in ("lab", "tfserving"):
            raise where.fail(key, f'a model_rollout writes a version folder into the base path the server polls; the lab '
                                  f'can do that only for a server it runs from its own copy (server_kind "lab" or '
                                  f'"tfserving"), not {server_kind!r}')
        if fault.kind == REPLICA_KILL and server_kind not in ("lab", "tfserving"):
            raise where.fail(key, f'the lab can kill and restart only replicas it runs as processes (server_kind '
                                  f'"lab" or "tfserving"), not {server_kind!r}')
        if fault.kind == REDIS_OUTAGE and redis_url is not None:
            raise where.fail(key, "a redis_outage stops the lab's own redis-server; sweep.redis_url names a Redis "
                                  "someone else runs")
    return tuple(schedule)


def _ab(where: _Where, table: dict[str, Any] | None) -> ABSpec | None:
    if table is None:
        return None
    where.only_keys("ab", table, ("canary_share", "baseline_share", "stable_variant", "canary_variant"))
    if "canary_share" not in table:
        raise where.fail("ab.canary_share", "missing: the share of requests the canary version answers")
    canary = where.number("ab.canary_share", table["canary_share"], 0.0, 1.0)
    baseline = where.number("ab.baseline_share", table.get("baseline_share", 0.0), 0.0, 1.0 - canary)
    stable_variant = where.choice("ab.stable_variant", table.get("stable_variant", "small"), ("small", "large"))
    canary_variant = where.choice("ab.canary_variant", table.get("canary_variant", "large"), ("small", "large"))
    return ABSpec(canary, baseline, stable_variant, canary_variant)


def _search(where: _Where, table: dict[str, Any] | None) -> RateSearch | None:
    if table is None:
        return None
    where.only_keys("search", table, ("rate_rps",))
    rate = table.get("rate_rps")
    if not isinstance(rate, dict):
        raise where.fail("search.rate_rps", "expected a table {low = ..., high = ..., steps = ...}")
    where.only_keys("search.rate_rps", rate, ("low", "high", "steps"))
    low = where.number("search.rate_rps.low", rate.get("low"), 0.001, 1e6)
    high = where.number("search.rate_rps.high", rate.get("high"), 0.001, 1e6)
    if high <= low:
        raise where.fail("search.rate_rps.high", f"must be above low ({low})")
    return RateSearch(low, high, where.integer("search.rate_rps.steps", rate.get("steps", 5), 1, 30))


def _check_combinations(where: _Where, spec: SweepSpec) -> None:
    varied_or_held = {**{k: v for k, v in spec.controls.items() if v is not None}, **spec.factors}
    intensity: list[str] = [name for name in ("load_level", "users", "rate_rps") if name in varied_or_held]
    modes = spec.factors.get("load_mode", [spec.controls.get("load_mode")])
    if spec.search is not None:
        if spec.p99_budget_ms is None:
            raise where.fail("search", "a rate search looks for the highest rate within sweep.p99_budget_ms: set it")
        if intensity:
            raise where.fail("search", f"the search sets the rate itself; remove {', '.join(intensity)}")
        if "closed" in modes:
            raise where.fail("search", 'a rate search is an open loop: set load_mode = "open"')
    if spec.rate_schedule is not None:
        if intensity or spec.search is not None:
            raise where.fail("load.rate_schedule", f"the schedule sets the rate itself; remove "
                                                   f"{', '.join(intensity) or '[search]'}")
        if "closed" in modes:
            raise where.fail("load.rate_schedule", 'a rate schedule is an open loop: set load_mode = "open"')
        intensity = ["rate_schedule"]
    if spec.users_schedule is not None:
        if intensity or spec.search is not None:
            raise where.fail("load.users_schedule", f"the schedule sets the users itself; remove "
                                                    f"{', '.join(intensity) or '[search]'}")
        if "open" in modes:
            raise where.fail("load.users_schedule", 'a users schedule is a closed loop: set load_mode = "closed"')
    if len(intensity) > 1:
        raise where.fail("factors", f"give one of load_level, users, rate_rps; this spec gives {', '.join(intensity)}")
    if "rate_rps" in varied_or_held and "closed" in modes:
        raise where.fail("rate_rps", "an arrival rate needs load_mode = \"open\" (a closed loop is set by users)")
    if "load_level" in varied_or_held and "closed" in modes:
        raise where.fail("load_level", "load levels are arrival rates: they need load_mode = \"open\"")
    if "users" in varied_or_held and "open" in modes:
        raise where.fail("users", "users set a closed loop: they need load_mode = \"closed\"")
    if ("open" in modes and spec.search is None and spec.rate_schedule is None
            and not {"rate_rps", "load_level"} & set(varied_or_held)):
        # An open loop is set by its arrival rate; without one the lab would run something else.
        raise where.fail("load_mode", 'an open loop needs an arrival rate: give rate_rps or load_level '
                                      '(or [search]), or use load_mode = "closed" with users')
    if spec.faults and spec.search is not None:
        raise where.fail("faults", "a rate search judges each step by its p99; leave [[faults]] out of a [search] sweep")
    kinds = {f.kind for f in spec.faults}
    if "replica_kill" in kinds:
        counts = spec.factors.get("replicas", [spec.controls.get("replicas") or 1])
        if min(counts) < 2:
            raise where.fail("replicas", f"a replica_kill kills one of several replicas: every trial needs replicas >= 2, "
                                         f"got {min(counts)}")
        for index, fault in enumerate(spec.faults):
            if fault.kind == "replica_kill" and fault.params.get("replica", 0) >= min(counts):
                raise where.fail(f"faults[{index}].replica", f"replica {fault.params['replica']} of {min(counts)} "
                                                             f"(indexes 0 to {min(counts) - 1})")
    if "rollout_warmup" in varied_or_held and "model_rollout" not in kinds:
        raise where.fail("rollout_warmup", "sets a model_rollout's warmup: add a [[faults]] of kind \"model_rollout\"")
    if spec.ab is not None:
        given = [n for n in ("model_variant", "models_served") if n in spec.factors]
        if given:
            raise where.fail("ab", f"an A/B test serves [ab]'s two variants under one name; do not vary {', '.join(given)}")
        if spec.server_kind == "external":
            raise where.fail("ab", "an A/B test writes its own model config: needs a server the lab starts")
        if (spec.controls.get("models_served") or 1) != 1:
            raise where.fail("ab", "an A/B test serves one model name: models_served must be 1")
    scaling = spec.factors.get("scaling", [spec.controls.get("scaling")])
    if "reactive" in scaling:
        if spec.server_kind != "lab":
            raise where.fail("scaling", f"reactive scaling starts lab-server replicas; server_kind = \"{spec.server_kind}\"")
        low = max(spec.factors.get("replicas", [spec.controls.get("replicas") or 1]))
        if spec.scaling.max_replicas <= low:
            raise where.fail("scaling.max_replicas", f"{spec.scaling.max_replicas} leaves no room above replicas = {low}")
        if spec.faults:
            raise where.fail("scaling", "reactive scaling and [[faults]] in one trial would change the server "
                                        "under each other; run them apart")
    if spec.server_kind != "lab" and any(v for v in spec.factors.get("max_queue", [spec.controls.get("max_queue")])):
        raise where.fail("max_queue", f"load shedding is the lab server's --lab_max_queue; server_kind = "
                                      f"\"{spec.server_kind}\" has no such flag (use 0)")
    if spec.server_kind == "external":
        server_side = [n for n in spec.factors if FACTORS[n].side == "server"]
        if server_side:
            raise where.fail("factors", f"server_kind = \"external\" cannot apply server-side factors: {', '.join(server_side)}")
    if spec.design == "random" and spec.samples is not None:
        total = 1
        for values in spec.factors.values():
            total *= len(values)
        if spec.samples > total:
            raise where.fail("sweep.samples", f"{spec.samples} samples but the design space has only {total} points")
