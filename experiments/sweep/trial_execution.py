"""What the runner does for the run as a whole (calibration, the generator's floor) and for one
trial (server, Redis, client, workload, load), turning factors into the load stage's objects."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from poochlab.experiments.records import TrialRecord
from poochlab.experiments.sweep.manifest import Manifest, utc_now
from poochlab.experiments.sweep.plan import Trial, config_id, resolve_factors, server_config
from poochlab.experiments.sweep.redis_service import RedisServer
from poochlab.experiments.sweep.servers import ServerPool
from poochlab.experiments.sweep.spec import SweepSpec

WORKLOAD_PUPDATES = 20_000  # drawn from the model's ground-truth world with the sweep's seed


@dataclass
class RunContext:
    spec: SweepSpec
    run_dir: Path
    manifest: Manifest
    servers: ServerPool
    redis: RedisServer | None
    facts_dir: Path
    model_root: Path
    pupdates: tuple = ()
    calibration: Any = None  # CapacityCalibration when the sweep uses load levels
    floors: dict[str, Any] = field(default_factory=dict)


def trial_seed(spec: SweepSpec, trial_id: str) -> int:
    digest = hashlib.sha256(f"{spec.seed}/{trial_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def client_config(context: RunContext, factors: dict[str, Any], rest_url: str, grpc_target: str,
                  model_names: list[str] | None = None) -> Any:
    from poochlab.clients import CacheConfig, ClientConfig

    cache = None
    if factors.get("cache") == "on":
        if context.redis is None:
            raise RuntimeError("cache trial without a Redis server")
        cache = CacheConfig(redis_url=context.redis.url)
    rest = factors["protocol"] == "rest"
    return ClientConfig(
        protocol=factors["protocol"], library=factors["client_library"] if rest else "grpcio",
        rest_url=rest_url, grpc_target=grpc_target,
        request_format=factors["request_format"] if rest else "row", cache=cache,
        # Several models served at once share the load equally.
        **({"model_name": model_names[0], "rotate_models": tuple(model_names[1:])} if model_names else {}),
    )


def workload(context: RunContext, factors: dict[str, Any], seed: int) -> Any:
    from poochlab.experiments.load import Workload

    ratio = factors.get("cache_hit_ratio") or None
    return Workload(context.pupdates, instances=factors.get("instances_per_request", 1),
                    cache_hit_ratio=ratio, seed=seed, source=f"generated:{WORKLOAD_PUPDATES}:{context.spec.seed}")


def load_settings(context: RunContext, factors: dict[str, Any], seed: int) -> Any:
    from poochlab.experiments.load import LoadSettings
    from poochlab.experiments.load.settings import workers_for

    profile = context.spec.profile
    base = dict(window_s=profile.window_s, warmup_s=profile.warmup_s, min_windows=profile.min_windows,
                max_windows=profile.max_windows, seed=seed)
    path = dict(protocol=factors["protocol"], library=factors.get("client_library"))
    if "load_level" in factors or "rate_rps" in factors:
        rate = (context.calibration.rate_for(factors["load_level"]) if "load_level" in factors
                else factors["rate_rps"])
        workers = workers_for(context.spec.load_workers, mode="open", rate_rps=rate, **path)
        return LoadSettings(mode="open", rate_rps=rate, workers=workers, **base)
    users = factors.get("users", 1)
    workers = workers_for(context.spec.load_workers, mode="closed", users=users, **path)
    return LoadSettings(mode="closed", users=users, workers=workers, **base)


def prepare_run(context: RunContext, trials: list[Trial]) -> None:
    """Once per run: the workload's pupdates, the capacity calibration and the generator floors."""
    from poochlab.models.facts import generate_pupdates

    context.pupdates = tuple(generate_pupdates(WORKLOAD_PUPDATES, context.spec.seed))
    _calibrate(context)
    _measure_floors(context, trials)


def _calibrate(context: RunContext) -> None:
    from poochlab.experiments.load import CapacityCalibration, calibrate_capacity

    spec = context.spec
    if not spec.needs_calibration():
        return
    path = context.run_dir / "calibration.json"
    if path.exists():  # a resumed run keeps the rates its first trials met
        context.calibration = CapacityCalibration.load(path)
        return
    factors = resolve_factors(spec, {**spec.reference, "load_level": "light"})
    factors.pop("load_level")
    endpoints = context.servers.ensure(server_config(factors))
    client = client_config(context, {**factors, "cache": "off"}, endpoints.rest_url, endpoints.grpc_target)
    reference = ", ".join(f"{k}={v}" for k, v in spec.reference.items())
    calibration = calibrate_capacity(client, workload(context, {**factors, "cache_hit_ratio": None}, spec.seed),
                                     reference=reference, window_s=max(spec.profile.calibration_s / 3, 0.5),
                                     warmup_s=spec.profile.warmup_s, seed=spec.seed, server_pid=endpoints.pid)
    calibration = replace(calibration, levels={**calibration.levels, **spec.load_levels})
    calibration.save(path)
    context.calibration = calibration
    context.manifest.update(calibration=asdict(calibration))


def _floor_load(context: RunContext, factors: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The factors and load a configuration's generator floor is measured at: its own, except
    that every step of a rate search shares one floor, at the search's most demanding rate."""
    if context.spec.search is not None and "load_level" not in factors:
        factors = {**factors, "rate_rps": context.spec.search.high_rps}
    return factors, load_settings(context, factors, context.spec.seed)


def _floor_key(factors: dict[str, Any], settings: Any) -> str:
    load = f"rate{settings.rate_rps:.0f}" if settings.mode == "open" else f"users{settings.users}"
    return f"{factors['protocol']}-{factors['client_library']}-{factors['request_format']}" \
           f"-x{factors.get('instances_per_request', 1)}-{load}"


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


def measure(context: RunContext, trial: Trial) -> TrialRecord:
    from poochlab.experiments.load import measure_trial

    seed = trial_seed(context.spec, trial.trial_id)
    record = TrialRecord(run_id=context.run_dir.name, trial_id=trial.trial_id, config_id=trial.config_id,
                         repetition=trial.repetition, factors=dict(trial.factors), seed=seed)
    endpoints = context.servers.ensure(trial.server)
    redis_pid = None
    if trial.factors.get("cache") == "on":
        assert context.redis is not None
        if not context.redis.running:  # a Redis that died in an earlier trial comes back empty
            context.redis.start()
        context.redis.flush()
        redis_pid = context.redis.pid
    settings = load_settings(context, trial.factors, seed)
    client = client_config(context, trial.factors, endpoints.rest_url, endpoints.grpc_target, endpoints.model_names)
    measure_trial(settings, client, workload(context, trial.factors, seed), record, server_pid=endpoints.pid,
                  metrics_url=endpoints.metrics_url, redis_pid=redis_pid)
    floor = context.floors.get(_floor_key(*_floor_load(context, trial.factors)))
    if floor is not None:
        record.load["generator_floor"] = floor["record"]
    record.resources.setdefault("server_starts_so_far", context.servers.starts)
    return record


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
        record.load["search"] = {"step": step, "of": search.steps, "budget_ms": budget,
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
