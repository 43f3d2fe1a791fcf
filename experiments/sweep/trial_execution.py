"""What the runner does for the run as a whole (calibration, the generator's floor) and for one
trial (server, Redis, client, workload, load), turning factors into the load stage's objects."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypedDict

from poochlab.experiments.load.calibration import CalibrationError
from poochlab.experiments.records import TrialRecord
from poochlab.experiments.sweep.factors import stage_fields
from poochlab.experiments.sweep.fault_setup import fault_settings, fault_trial, reactive_client
from poochlab.experiments.sweep.manifest import Manifest, utc_now
from poochlab.experiments.sweep.plan import Trial, config_id, resolve_factors, server_config
from poochlab.experiments.sweep.redis_service import ExistingRedis, RedisServer
from poochlab.experiments.sweep.servers import ServerPool
from poochlab.experiments.sweep.spec import DEFAULT_LOAD_LEVELS as DEFAULT_LEVELS
from poochlab.experiments.sweep.spec import SweepSpec

if TYPE_CHECKING:  # the load and client stages import TensorFlow-heavy modules: lazily, at use
    from poochlab.clients import ABConfig
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.load.calibration import CapacityCalibration
    from poochlab.experiments.load.settings import LoadSettings
    from poochlab.experiments.load.workload import Workload
    from poochlab.models.pupdate import Pupdate

WORKLOAD_PUPDATES = 20_000  # drawn from the model's ground-truth world with the sweep's seed


class GeneratorFloor(TypedDict):
    """One measured generator floor, as the manifest's ``generator_floor`` keeps it (by floor key)."""

    factors: dict[str, Any]  # the configuration's factors (values as the spec gives them)
    record: str  # the floor's TrialRecord, relative to the run folder
    summary_us: dict[str, float]
    valid: bool
    reasons: list[str]


@dataclass
class RunContext:
    """What every trial of a run shares: the spec, the run folder and manifest, the servers and
    Redis, and what ``prepare_run`` measured once (pupdates, calibration, generator floors)."""

    spec: SweepSpec
    run_dir: Path
    manifest: Manifest
    servers: ServerPool
    redis: RedisServer | ExistingRedis | None
    facts_dir: Path
    model_root: Path
    pupdates: tuple[Pupdate, ...] = ()
    calibration: CapacityCalibration | None = None  # when the sweep uses load levels or rates
    floors: dict[str, GeneratorFloor] = field(default_factory=dict)  # by _floor_key


def trial_seed(spec: SweepSpec, trial_id: str) -> int:
    digest = hashlib.sha256(f"{spec.seed}/{trial_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def client_config(context: RunContext, factors: dict[str, Any], rest_url: str, grpc_target: str,
                  model_names: list[str] | None = None) -> ClientConfig:
    """The ClientConfig the registry's client factors describe, aimed at the trial's server."""
    from poochlab.clients import CacheConfig, ClientConfig

    fields = stage_fields("client", factors)
    # The fallback and its deadline are built from the served export (sweep/fault_setup.py).
    fields.pop("fallback", None)
    fields.pop("timeout_s", None)
    fields.pop("cache", None)  # set by two factors, cache and single_flight: built from both here
    if factors.get("cache", "off") == "on":
        if context.redis is None:
            raise RuntimeError("cache trial without a Redis server")
        fields["cache"] = CacheConfig(redis_url=context.redis.url,
                                      single_flight=factors.get("single_flight", "on") == "on")
    if context.spec.ab is not None:
        fields["ab"] = ab_client(context)
    fields.update(reactive_client(context, factors))  # fallback and deadline_ms (sweep/fault_setup.py)
    if model_names:  # several models served at once share the load equally
        fields.update(model_name=model_names[0], rotate_models=tuple(model_names[1:]))
    return ClientConfig(rest_url=rest_url, grpc_target=grpc_target, **fields)


def ab_client(context: RunContext) -> ABConfig:
    """The client side of ``[ab]``: the arms' shares, and the stable export's historical
    average for the baseline arm."""
    from poochlab.clients import ABConfig
    from poochlab.experiments.sweep.ab_serving import latest_version_dir

    ab = context.spec.ab
    assert ab is not None
    latest = latest_version_dir(context.servers.model_base_path(ab.stable_variant))
    return ABConfig(canary_share=ab.canary_share, baseline_share=ab.baseline_share,
                    baseline_path=str(latest / "assets.extra" / "historical_baseline.json"), seed=context.spec.seed)


def workload(context: RunContext, factors: dict[str, Any], seed: int) -> Workload:
    """The Workload the registry's workload factors describe, over the run's pupdates."""
    from poochlab.experiments.load import Workload

    return Workload(context.pupdates, **stage_fields("workload", factors), seed=seed,
                    source=f"generated:{WORKLOAD_PUPDATES}:{context.spec.seed}")


def load_settings(context: RunContext, factors: dict[str, Any], seed: int) -> LoadSettings:
    """The trial's LoadSettings: its load mode, with the rate from its load level (through the
    calibration) or rate_rps in an open loop, its users in a closed one; times from the profile."""
    from poochlab.experiments.load import LoadSettings
    from poochlab.experiments.load.settings import workers_for

    profile = context.spec.profile
    base: dict[str, Any] = dict(warmup_s=profile.warmup_s, min_windows=profile.min_windows, max_windows=profile.max_windows,
                seed=seed)
    path = dict(protocol=factors.get("protocol", "rest"), library=factors.get("client_library"))
    rate = None
    if "load_level" in factors:
        if context.calibration is None:
            raise ValueError(f"a load_level without a capacity calibration; factors: {factors}")
        rate = context.calibration.rate_for(factors["load_level"])
    elif "rate_rps" in factors:
        rate = float(factors["rate_rps"])
    elif context.spec.rate_schedule is not None:
        rate = context.spec.rate_schedule.peak_rps
    mode = factors.get("load_mode") or ("open" if rate is not None else "closed")
    if mode == "open":
        if rate is None:
            raise ValueError(f"an open loop needs an arrival rate (load_level or rate_rps); factors: {factors}")
        workers = workers_for(context.spec.load_workers, mode="open", rate_rps=rate, **path)
        return LoadSettings(mode="open", rate_rps=rate, window_s=profile.window_for(rate), workers=workers,
                            rate_schedule=context.spec.rate_schedule, **base)
    if rate is not None:
        raise ValueError(f"a closed loop is set by users, not an arrival rate; factors: {factors}")
    schedule = context.spec.users_schedule
    users = schedule.peak_users if schedule is not None else factors.get("users", 1)
    workers = workers_for(context.spec.load_workers, mode="closed", users=users, **path)
    if schedule is not None:  # each worker runs at least one user at every step
        workers = min(workers, min(u for _, u in schedule.steps))
    return LoadSettings(mode="closed", users=users, window_s=profile.window_s, workers=workers,
                        users_schedule=schedule, **base)


def prepare_run(context: RunContext, trials: list[Trial]) -> None:
    """Once per run: the workload's pupdates, the capacity calibration and the generator floors."""
    from poochlab.models.facts import generate_pupdates

    context.pupdates = tuple(generate_pupdates(WORKLOAD_PUPDATES, context.spec.seed))
    _calibrate(context, trials)
    _measure_floors(context, trials)


def client_path(factors: dict[str, Any]) -> str:
    """The generator path a configuration's requests take (protocol, library, format, size)."""
    return f"{factors['protocol']}-{factors['client_library']}-{factors['request_format']}" \
           f"-x{factors.get('instances_per_request', 1)}"


def sender_path(factors: dict[str, Any]) -> str:
    """What the generator runs per request: the client path, plus the cache client when the
    configuration has one (its CPU is the generator's, so it limits what the generator sends)."""
    return client_path(factors) + ("+cache" if factors.get("cache") == "on" else "")


def _redis_ready(context: RunContext) -> int | None:
    """A running, empty Redis for a cache measurement; its pid (None when not the lab's own)."""
    assert context.redis is not None
    if not context.redis.running:
        context.redis.start()
    context.redis.flush()
    return context.redis.pid


def _calibrate(context: RunContext, trials: list[Trial]) -> None:
    """Rates the rig can drive: every client path's own limit against the echo server, and the
    server's capacity for each protocol and cache setting of the sweep; load levels are
    fractions of the lowest. Explicit rates above a path's limit are refused before any trial."""
    from poochlab.experiments.load import CapacityCalibration
    from poochlab.experiments.load.calibration import combined, generator_limit, paths_only

    spec = context.spec
    path = context.run_dir / "calibration.json"
    if path.exists():  # a resumed run keeps the rates its first trials met
        context.calibration = CapacityCalibration.load(path)
        return
    window_s = max(spec.profile.calibration_s / 6, 0.5)
    warmup_s = min(spec.profile.warmup_s, 0.5)
    servers = _server_capacities(context, trials, window_s, warmup_s) if spec.needs_calibration() else {}
    levels = {**DEFAULT_LEVELS, **spec.load_levels}
    # The highest rate each path must send: its explicit rates, and the top load level.
    targets: dict[str, float] = {}
    paths: dict[str, dict[str, Any]] = {}
    for trial in trials:
        name = sender_path(trial.factors)
        paths.setdefault(name, trial.factors)
        rate = float(trial.factors.get("rate_rps") or 0.0)
        if spec.rate_schedule is not None and trial.factors.get("load_mode", "open") == "open":
            rate = max(rate, spec.rate_schedule.peak_rps)  # the path must send the schedule's peak
        if "load_level" in trial.factors and servers:
            rate = max(rate, levels[trial.factors["load_level"]] * min(c.capacity_rps for c in servers.values()))
        targets[name] = max(targets.get(name, 0.0), rate)
    limits = []
    for name, factors in paths.items():
        if targets[name] <= 0:
            continue  # closed-loop or searched trials only: nothing to check up front
        cached = factors.get("cache") == "on"
        client = client_config(context, factors, "http://127.0.0.1:1", "127.0.0.1:1")
        limits.append(generator_limit(client, workload(context, factors if cached else
                                                        {**factors, "cache_hit_ratio": None}, spec.seed),
                                      path=name, target_rps=targets[name], window_s=window_s, warmup_s=warmup_s,
                                      seed=spec.seed, progress=_calibration_progress,
                                      before_step=(lambda: _redis_ready(context)) if cached else None,
                                      workers_at=_open_loop_workers(spec.load_workers, factors["protocol"],
                                                                    factors.get("client_library"))))
    if not servers and not limits:
        return
    if servers:
        reference = ", ".join(f"{k}={v}" for k, v in spec.reference.items())
        calibration = combined(reference, servers, limits, levels)
    else:
        calibration = paths_only(limits)
    calibration.save(path)
    context.calibration = calibration
    context.manifest.update(calibration=asdict(calibration))
    _refuse_rates_beyond_paths(context, trials, calibration)


def _open_loop_workers(setting: int | str, protocol: str, library: str | None) -> Callable[[float], int]:
    """How many generator processes an open loop at a rate uses, on this client path."""
    from poochlab.experiments.load.settings import workers_for

    return lambda rate: workers_for(setting, mode="open", rate_rps=rate, protocol=protocol, library=library)


def _configuration_progress(name: str, step: dict[str, Any]) -> None:
    _calibration_progress({"configuration": name, **step})


def _calibration_progress(step: dict[str, Any]) -> None:
    import sys

    what = f"generator {step['path']} at {step['rate_rps']:.0f} req/s" if "path" in step else \
        f"server {step.get('configuration', '')} with {step['users']} users: {step['throughput_rps']:.0f} req/s"
    verdict = "valid" if step["valid"] else "not valid" + (f" ({step['reasons'][0]})" if step.get("reasons") else "")
    print(f"calibration: {what}: {verdict}", file=sys.stderr, flush=True)


def _server_capacities(context: RunContext, trials: list[Trial], window_s: float,
                       warmup_s: float) -> dict[str, CapacityCalibration]:
    """The reference configuration's capacity for each protocol and cache setting in the sweep."""
    from poochlab.experiments.load import calibrate_capacity

    spec = context.spec
    variants: dict[str, dict[str, Any]] = {}
    for trial in trials:
        factors = resolve_factors(spec, {**spec.reference, "load_level": "light",
                                         "protocol": trial.factors["protocol"], "cache": trial.factors["cache"]})
        factors.pop("load_level")
        if factors["cache"] == "on":
            factors["cache_hit_ratio"] = trial.factors.get("cache_hit_ratio")
        name = ", ".join(f"{k}={factors[k]}" for k in dict.fromkeys([*spec.reference, "protocol", "cache"]))
        variants.setdefault(name, factors)
    capacities: dict[str, CapacityCalibration] = {}
    for name, factors in variants.items():
        endpoints = context.servers.ensure(server_config(factors))
        redis_pid = _redis_ready(context) if factors["cache"] == "on" else None
        client = client_config(context, factors, endpoints.rest_url, endpoints.grpc_target)
        capacities[name] = calibrate_capacity(
            client, workload(context, factors, spec.seed), reference=name, window_s=window_s, warmup_s=warmup_s,
            seed=spec.seed, server_pid=endpoints.pid, redis_pid=redis_pid,
            progress=functools.partial(_configuration_progress, name))
    return capacities


def _refuse_rates_beyond_paths(context: RunContext, trials: list[Trial], calibration: CapacityCalibration) -> None:
    problems = []
    for trial in trials:
        limit = calibration.path_limit(sender_path(trial.factors))
        if limit is None:
            continue
        rates = []
        if "rate_rps" in trial.factors:
            rates.append(float(trial.factors["rate_rps"]))
        if "load_level" in trial.factors:
            rates.append(calibration.rate_for(trial.factors["load_level"]))
        peak = context.spec.rate_schedule.peak_rps if context.spec.rate_schedule is not None else None
        if peak is not None:
            rates.append(peak)
        for rate in rates:
            if rate > limit:
                problems.append(f"{rate:.0f} req/s{' (load.rate_schedule peak)' if rate == peak else ''} "
                                f"on path {sender_path(trial.factors)} "
                                f"(its measured limit on this machine is {limit:.0f} req/s)")
    if problems:
        unique = sorted(set(problems))
        raise CalibrationError(
            f"{context.spec.path}: the load generator cannot send these rates validly: {'; '.join(unique)}. "
            "Lower the rates (or use load_level), or give the load more generator processes ([load] workers).")


def _floor_load(context: RunContext, factors: dict[str, Any]) -> tuple[dict[str, Any], LoadSettings]:
    """The factors and load a configuration's generator floor is measured at: its own, except
    that every step of a rate search shares one floor, at the search's most demanding rate."""
    if context.spec.search is not None and "load_level" not in factors:
        factors = {**factors, "rate_rps": context.spec.search.high_rps}
    settings = load_settings(context, factors, context.spec.seed)
    # Two windows of the trial's length: a reference for the report, not a result to judge.
    return factors, replace(settings, min_windows=min(settings.min_windows, 2), max_windows=min(settings.min_windows, 2))


def _floor_key(factors: dict[str, Any], settings: LoadSettings) -> str:
    load = f"rate{settings.rate_rps:.0f}" if settings.mode == "open" else f"users{settings.users}"
    return f"{client_path(factors)}-{load}"


def _measure_floors(context: RunContext, trials: list[Trial]) -> None:
    """The same client path at the same loads against an echo server: the instrument's own share."""
    from poochlab.experiments.load import floor_summary, measure_generator_floor

    floors = context.manifest.data.get("generator_floor", {})
    for trial in trials:
        factors, settings = _floor_load(context, trial.factors)
        key = _floor_key(factors, settings)
        if key in floors:
            continue
        client = client_config(context, {**factors, "cache": "off"}, "http://127.0.0.1:1", "127.0.0.1:1")
        path = context.run_dir / "floor" / f"{key}.json"
        record = measure_generator_floor(settings, client, workload(context, {**factors, "cache_hit_ratio": None},
                                                                    context.spec.seed),
                                         run_id=context.run_dir.name, save_to=path)
        floors[key] = {"factors": record.factors, "record": str(path.relative_to(context.run_dir)),
                       "summary_us": floor_summary(record) if record.windows else {},
                       "valid": record.validity.valid, "reasons": record.validity.reasons}
        context.manifest.update(generator_floor=floors)
    context.floors = floors


def measure(context: RunContext, trial: Trial,
            progress: Callable[[dict[str, Any]], None] | None = None) -> TrialRecord:
    from poochlab.experiments.load import measure_trial

    seed = trial_seed(context.spec, trial.trial_id)
    record = TrialRecord(run_id=context.run_dir.name, trial_id=trial.trial_id, config_id=trial.config_id,
                         repetition=trial.repetition, factors=dict(trial.factors), seed=seed)
    endpoints = context.servers.ensure(trial.server)
    # A Redis that died in an earlier trial comes back, empty.
    redis_pid = _redis_ready(context) if trial.factors.get("cache") == "on" else None
    settings = load_settings(context, trial.factors, seed)
    with fault_trial(context, trial.factors, endpoints) as (endpoints, faults):
        if faults is not None:
            settings = fault_settings(settings)
        client = client_config(context, trial.factors, endpoints.rest_url, endpoints.grpc_target,
                               endpoints.model_names)
        scaler = _reactive_scaler(context, trial, endpoints)
        try:
            measure_trial(settings, client, workload(context, trial.factors, seed), record, server_pid=endpoints.pid,
                          metrics_url=endpoints.metrics_url, redis_pid=redis_pid,
                          progress=progress if scaler is None else scaler.progress(settings.window_s, progress),
                          faults=faults)
        finally:
            # Even after a failed trial the next one must start at the minimum replica count.
            if scaler is not None:
                try:
                    record.timeline.extend(scaler.back_to_minimum())
                except Exception:
                    context.servers.stop()  # the next trial starts a fresh set
                    raise
    floor = context.floors.get(_floor_key(*_floor_load(context, trial.factors)))
    if floor is not None:
        record.load.generator_floor = floor["record"]
    if record.resources.server_starts_so_far is None:
        record.resources.server_starts_so_far = context.servers.starts
    # Where the server's CPU, memory and energy figures come from, or why there are none.
    if "server_resources" in endpoints.notes:
        record.resources.server_resources = endpoints.notes["server_resources"]
    if endpoints.metrics_url is None and "server_metrics" in endpoints.notes:
        record.server_metrics.unavailable = endpoints.notes["server_metrics"]
    return record


def _reactive_scaler(context: RunContext, trial: Trial, endpoints: Any) -> Any:
    """A ReactiveScaler over the trial's replicas when its scaling factor is "reactive"."""
    if trial.server.scaling != "reactive":
        return None
    from poochlab.experiments.sweep.scaling import ReactiveScaler, replica_changes

    add, remove = replica_changes(context.servers.handle, context.servers.spec_for_replicas, endpoints.model_names)
    return ReactiveScaler(context.spec.scaling, trial.server.replicas, add, remove)


def meets_budget(record: TrialRecord, budget_ms: float) -> bool:
    """A search step passes when it is a valid measurement with p99 within the budget."""
    from poochlab.experiments.recording.histograms import merge_encoded

    if record.status != "ok" or not record.validity.valid or not record.windows:
        return False
    chosen = record.result_windows()
    merged = merge_encoded(w.histogram for w in chosen)
    return merged.get_total_count() > 0 and merged.get_value_at_percentile(99) <= budget_ms * 1000


def search_steps(context: RunContext, trial: Trial, measure_step: Callable[[Trial], TrialRecord],
                 saved: Callable[[str], TrialRecord | None]) -> Iterator[tuple[TrialRecord, bool]]:
    """The rate search of one configuration: bisect log(rate) between the spec's bounds.

    Each step is an ordinary trial with its rate as the ``rate_rps`` factor (so analysis finds
    the highest sustainable rate like any other); a step already saved (a resumed run) is
    read back instead of measured again, so the search takes the same path. Yields each step's
    record and whether it was measured now.
    """
    search, budget = context.spec.search, context.spec.p99_budget_ms
    assert search is not None and budget is not None
    low, high = math.log(search.low_rps), math.log(search.high_rps)
    for step in range(search.steps):
        rate = float(f"{math.exp((low + high) / 2):.3g}")
        factors = {**trial.factors, "rate_rps": rate}
        step_trial = replace(trial, trial_id=f"{trial.trial_id}-s{step}", config_id=config_id(factors),
                             factors=factors, search_steps=0)
        record = saved(step_trial.trial_id)
        measured_now = record is None
        if record is None:
            record = measure_step(step_trial)
        record.load.search = {"step": step, "of": search.steps, "budget_ms": budget,
                                 "bounds_rps": [math.exp(low), math.exp(high)],
                                 "configuration": trial.config_id}
        yield record, measured_now
        if meets_budget(record, budget):
            low = math.log(rate)
        else:
            high = math.log(rate)


def failed_record(context: RunContext, trial: Trial, reason: str) -> TrialRecord:
    record = TrialRecord(run_id=context.run_dir.name, trial_id=trial.trial_id, config_id=trial.config_id,
                         repetition=trial.repetition, factors=dict(trial.factors),
                         seed=trial_seed(context.spec, trial.trial_id), status="failed",
                         failure_reason=reason, started_at=utc_now(), ended_at=utc_now())
    record.validity.invalidate(f"trial failed: {reason.splitlines()[0]}", "failed")
    return record
