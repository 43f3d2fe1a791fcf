"""The factor registry: a point's factors become the trial's ServerConfig, ClientConfig, Workload
and LoadSettings, and each run's manifest keeps the registry's description for analysis.

Every expected object below is written out by hand from the spec text, not derived from the
registry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from poochlab.clients import CacheConfig, ClientConfig
from poochlab.experiments.load import CapacityCalibration, LoadSettings, Workload
from poochlab.experiments.sweep.factors import (FACTORS, STAGE_OBJECTS, describe_factors, factor_roles,
                                                factors_with_role)
from poochlab.experiments.sweep.plan import plan_trials
from poochlab.experiments.sweep.redis_service import ExistingRedis
from poochlab.experiments.sweep.server_configs import ServerConfig
from poochlab.experiments.sweep.spec import SpecError, load_spec
from poochlab.experiments.sweep.trial_execution import RunContext, client_config, load_settings, workload
from poochlab.models.facts import generate_pupdates

REDIS_URL = "redis://127.0.0.1:6399/0"
PUPDATES = tuple(generate_pupdates(1000, 3))
HEAD = """
[sweep]
name = "mapping"
repetitions = 1
seed = 5
profile = "quick"
[profile]
window_s = 1.5
warmup_s = 0.5
min_windows = 2
max_windows = 6
max_window_s = 4.0
"""


def spec_from(tmp_path: Path, body: str):
    path = tmp_path / "spec.toml"
    path.write_text(HEAD + body)
    return load_spec(path)


def context_for(spec, tmp_path: Path, calibration=None) -> RunContext:
    return RunContext(spec=spec, run_dir=tmp_path, manifest=None, servers=None,  # type: ignore[arg-type]
                      redis=ExistingRedis(REDIS_URL, "test"), facts_dir=tmp_path, model_root=tmp_path,
                      pupdates=PUPDATES, calibration=calibration)


def only_trial(spec):
    (trial,) = plan_trials(spec)
    return trial


def test_every_stage_object_is_built_from_a_points_factors(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, """
[factors]
protocol = ["rest"]
[controls]
client_library = "requests"
request_format = "columnar"
cache = "on"
cache_hit_ratio = 0.5
instances_per_request = 4
retries = 2
model_variant = "large"
models_served = 2
batching = "b32"
server_threads = 2
replicas = 3
users = 5
[batching.b32]
max_batch_size = 32
batch_timeout_micros = 500
""")
    trial = only_trial(spec)
    context = context_for(spec, tmp_path)
    assert trial.server == ServerConfig(model_variant="large", models_served=2, batching="b32",
                                        server_threads=2, replicas=3)
    assert client_config(context, trial.factors, "http://127.0.0.1:9001", "127.0.0.1:9002") == ClientConfig(
        protocol="rest", library="requests", rest_url="http://127.0.0.1:9001", grpc_target="127.0.0.1:9002",
        request_format="columnar", retries=2, cache=CacheConfig(redis_url=REDIS_URL))
    assert workload(context, trial.factors, seed=7) == Workload(PUPDATES, instances=4, cache_hit_ratio=0.5, seed=7,
                                                                source="generated:20000:5")
    assert load_settings(context, trial.factors, seed=7) == LoadSettings(
        mode="closed", users=5, window_s=1.5, warmup_s=0.5, min_windows=2, max_windows=6, seed=7)


def test_defaults_give_a_one_user_closed_loop_over_rest_without_a_cache(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, '[factors]\nmodel_variant = ["small"]\n')
    trial = only_trial(spec)
    context = context_for(spec, tmp_path)
    assert trial.factors["users"] == 1  # implied by the closed loop
    assert trial.server == ServerConfig("small", 1, "off", 0, 1)
    assert client_config(context, trial.factors, "http://h:1", "h:2") == ClientConfig(
        protocol="rest", library="lean", rest_url="http://h:1", grpc_target="h:2", request_format="row",
        retries=0, cache=None)
    assert workload(context, trial.factors, seed=1) == Workload(PUPDATES, instances=1, cache_hit_ratio=None, seed=1,
                                                                source="generated:20000:5")
    assert load_settings(context, trial.factors, seed=1) == LoadSettings(
        mode="closed", users=1, window_s=1.5, warmup_s=0.5, min_windows=2, max_windows=6, seed=1)


def test_grpc_keeps_lean_and_takes_grpcio_for_requests_with_one_format(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, '[factors]\nprotocol = ["grpc"]\nclient_library = ["lean", "requests"]\n')
    trials = plan_trials(spec)
    assert sorted((t.factors["client_library"], t.factors["request_format"]) for t in trials) == [
        ("grpcio", "protobuf"), ("lean", "protobuf")]
    grpcio = next(t for t in trials if t.factors["client_library"] == "grpcio")
    assert client_config(context_for(spec, tmp_path), grpcio.factors, "http://h:1", "h:2") == ClientConfig(
        protocol="grpc", library="grpcio", rest_url="http://h:1", grpc_target="h:2", request_format="row")
    (tmp_path / "b").mkdir()
    (both,) = plan_trials(spec_from(tmp_path / "b", '[factors]\nprotocol = ["grpc"]\n'
                                                    'client_library = ["requests", "grpcio"]\n'))
    assert both.factors["client_library"] == "grpcio"  # one configuration, not two


def test_an_open_loop_takes_its_rate_from_rate_rps_or_the_calibrated_load_level(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, '[factors]\nrate_rps = [150.0]\n[controls]\nload_mode = "open"\n')
    trial = only_trial(spec)
    # 5,000 requests per window at 150 req/s would take 33 s: capped at max_window_s.
    assert load_settings(context_for(spec, tmp_path), trial.factors, seed=3) == LoadSettings(
        mode="open", rate_rps=150.0, window_s=4.0, warmup_s=0.5, min_windows=2, max_windows=6, seed=3)

    spec = spec_from(tmp_path, '[factors]\nload_level = ["medium"]\n[controls]\nload_mode = "open"\n')
    trial = only_trial(spec)
    assert "users" not in trial.factors
    calibration = CapacityCalibration(reference="hand-made", capacity_rps=4000.0, steps=(),
                                      levels={"light": 0.25, "medium": 0.5, "high": 0.85})
    # medium = half of 4,000 req/s; 5,000 requests at 2,000 req/s fill 2.5 s.
    assert load_settings(context_for(spec, tmp_path, calibration), trial.factors, seed=3) == LoadSettings(
        mode="open", rate_rps=2000.0, window_s=2.5, warmup_s=0.5, min_windows=2, max_windows=6, seed=3)


def test_load_mode_is_read_an_open_loop_without_a_rate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="load_mode"):
        spec_from(tmp_path, '[factors]\nload_mode = ["open"]\n')
    spec = spec_from(tmp_path, '[factors]\nmodel_variant = ["small"]\n')
    with pytest.raises(ValueError, match="open loop needs an arrival rate"):
        load_settings(context_for(spec, tmp_path), {"load_mode": "open", "users": 4}, seed=1)


def test_retries_is_one_registry_entry_and_reaches_each_trials_client(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, "[factors]\nretries = [0, 3]\n")
    context = context_for(spec, tmp_path)
    clients = {t.factors["retries"]: client_config(context, t.factors, "http://h:1", "h:2") for t in plan_trials(spec)}
    assert {k: c.retries for k, c in clients.items()} == {0: 0, 3: 3}
    assert clients[3] == ClientConfig(library="lean", rest_url="http://h:1", grpc_target="h:2", retries=3)
    assert len({t.server for t in plan_trials(spec)}) == 1  # a client factor: one server for both
    for bad in ("-1", "11", '"3"'):
        with pytest.raises(SpecError, match=r"factors\.retries: got"):
            spec_from(tmp_path, f"[factors]\nretries = [{bad}]\n")


def test_every_factor_sets_a_real_field_of_its_stage_and_every_server_field_has_a_factor() -> None:
    from poochlab.experiments import load

    objects = {"server": ServerConfig, "client": ClientConfig, "workload": Workload, "load": load.LoadSettings}
    assert set(STAGE_OBJECTS) == set(objects)
    for factor in FACTORS.values():
        names = {f.name for f in dataclasses.fields(objects[factor.side])}
        assert factor.field in names, factor.name
    server_fields = {f.field for f in FACTORS.values() if f.side == "server"}
    assert server_fields == {f.name for f in dataclasses.fields(ServerConfig)}
    assert {n for n, f in FACTORS.items() if f.restarts_server} == {
        "model_variant", "models_served", "batching", "server_threads", "replicas", "rollout_warmup", "max_queue", "scaling"}


def test_roles_come_from_the_runs_manifest_or_the_registry_for_older_runs() -> None:
    assert factors_with_role("load") == ("load_mode", "load_level", "users", "rate_rps")
    assert set(factors_with_role("transfer")) == {"model_variant", "models_served", "instances_per_request",
                                                  "cache_hit_ratio"}
    saved = {"factor_registry": {"model_variant": {"role": "design"}, "users": {"role": "load"},
                                 "threads": {"role": "transfer"}}}
    assert factor_roles(saved) == {"model_variant": "design", "users": "load", "threads": "transfer"}
    assert factors_with_role("transfer", saved) == ("threads",)
    older = {"run_id": "before-the-registry", "spec": {}}
    assert factor_roles(older)["rate_rps"] == "load" and factor_roles(older)["protocol"] == "design"
    with pytest.raises(ValueError, match="unknown factor role"):
        factors_with_role("tuning")


def test_the_manifest_holds_the_registrys_description(tmp_path: Path) -> None:
    import json

    from poochlab.experiments.sweep.runner import SweepRunner

    spec = spec_from(tmp_path, "[factors]\nretries = [0, 1]\n")
    SweepRunner(spec, tmp_path / "run", show_progress_bar=False)._manifest()
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())["factor_registry"]
    assert saved == json.loads(json.dumps(describe_factors()))
    assert saved["retries"] == {
        "name": "retries", "side": "client", "default": 0, "allowed": "an integer from 0 to 10", "role": "design",
        "doc": FACTORS["retries"].doc, "sets": "ClientConfig.retries", "how": "", "restarts_server": False,
        "implied": None}
    assert saved["client_library"]["implied"] == (
        "'requests' becomes 'grpcio' when protocol = 'grpc' (the common gRPC library stands in for requests)")
    assert saved["replicas"]["restarts_server"] is True and saved["users"]["role"] == "load"
    assert factor_roles({"factor_registry": saved})["model_variant"] == "transfer"


def test_the_fallback_and_its_deadline_reach_each_trials_client(tmp_path: Path) -> None:
    from types import SimpleNamespace

    spec = spec_from(tmp_path, "[factors]\nfallback = [\"off\", \"on\"]\n[controls]\ndeadline_ms = 250\n")
    export = tmp_path / "small" / "pooch_predictor" / "4" / "assets.extra"
    export.mkdir(parents=True)
    context = context_for(spec, tmp_path)
    context.servers = SimpleNamespace(model_base_path=lambda variant: tmp_path / variant / "pooch_predictor")
    clients = {t.factors["fallback"]: client_config(context, t.factors, "http://h:1", "h:2") for t in plan_trials(spec)}
    # Off: the deadline is the client's timeout (250 ms); on: the fallback's deadline, with the
    # served export's historical baseline.
    assert clients["off"].fallback is None and clients["off"].timeout_s == 0.25
    assert clients["on"].fallback.deadline_s == 0.25
    assert clients["on"].fallback.baseline_path == str(export / "historical_baseline.json")


def test_the_breaker_settings_are_factors_that_reach_the_fallback(tmp_path: Path) -> None:
    from types import SimpleNamespace

    spec = spec_from(tmp_path, "[factors]\nbreaker_failures = [1, 20]\nbreaker_cooldown_ms = [0, 2500]\n"
                               "[controls]\nfallback = \"on\"\n")
    (tmp_path / "small" / "pooch_predictor" / "3").mkdir(parents=True)
    context = context_for(spec, tmp_path)
    context.servers = SimpleNamespace(model_base_path=lambda variant: tmp_path / variant / "pooch_predictor")
    breakers = {(t.factors["breaker_failures"], t.factors["breaker_cooldown_ms"]):
                client_config(context, t.factors, "http://h:1", "h:2").fallback for t in plan_trials(spec)}
    assert {k: (f.breaker_failures, f.cooldown_s) for k, f in breakers.items()} == {
        (1, 0.0): (1, 0.0), (1, 2500.0): (1, 2.5), (20, 0.0): (20, 0.0), (20, 2500.0): (20, 2.5)}
    assert len({t.server for t in plan_trials(spec)}) == 1  # client factors: one server for all four
    unset = spec_from(tmp_path, "[controls]\nfallback = \"on\"\n")
    fallback = client_config(context, only_trial(unset).factors, "http://h:1", "h:2").fallback
    assert (fallback.breaker_failures, fallback.cooldown_s) == (5, 5.0)  # FallbackConfig's own defaults
    with pytest.raises(SpecError, match=r"factors\.breaker_failures: got 0"):
        spec_from(tmp_path, "[factors]\nbreaker_failures = [0]\n")


def test_single_flight_is_one_registry_entry_and_reaches_the_cache_of_each_trials_client(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, '[factors]\nsingle_flight = ["off", "on"]\n[controls]\ncache = "on"\n')
    context = context_for(spec, tmp_path)
    clients = {t.factors["single_flight"]: client_config(context, t.factors, "http://h:1", "h:2")
               for t in plan_trials(spec)}
    assert clients["off"].cache == CacheConfig(redis_url=REDIS_URL, single_flight=False)
    assert clients["on"].cache == CacheConfig(redis_url=REDIS_URL, single_flight=True)
    assert len({t.server for t in plan_trials(spec)}) == 1  # a client factor: one server for both
    without_cache = spec_from(tmp_path, '[factors]\nsingle_flight = ["off"]\n')
    assert client_config(context_for(without_cache, tmp_path), only_trial(without_cache).factors,
                         "http://h:1", "h:2").cache is None
    with pytest.raises(SpecError, match=r"factors\.single_flight: got"):
        spec_from(tmp_path, '[factors]\nsingle_flight = ["maybe"]\n')


def test_max_queue_and_scaling_are_server_factors_that_reach_the_server_config(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, """
[factors]
max_queue = [0, 8]
scaling = ["fixed", "reactive"]
[scaling]
max_replicas = 3
p99_up_ms = 40
p99_down_ms = 5
cooldown_s = 4
""")
    servers = {(t.factors["max_queue"], t.factors["scaling"]): t.server for t in plan_trials(spec)}
    assert servers[(8, "reactive")] == ServerConfig("small", 1, "off", 0, 1, max_queue=8, scaling="reactive")
    assert servers[(0, "fixed")].config_id == "small-m1-boff-t0-r1"  # ids of older runs unchanged
    assert servers[(8, "reactive")].config_id == "small-m1-boff-t0-r1-q8-sreactive"
    assert (spec.scaling.max_replicas, spec.scaling.p99_up_ms, spec.scaling.cooldown_s) == (3, 40.0, 4.0)
    with pytest.raises(SpecError, match=r"factors\.max_queue: got -1"):
        spec_from(tmp_path, "[factors]\nmax_queue = [-1]\n")
    with pytest.raises(SpecError, match=r"spec\.toml: scaling: scaling\.p99_down_ms \(50\.0\) must be below"):
        spec_from(tmp_path, '[factors]\nscaling = ["reactive"]\n[scaling]\np99_up_ms = 20\np99_down_ms = 50\n')
    with pytest.raises(SpecError, match=r"scaling\.max_replicas: 1 leaves no room above replicas = 1"):
        spec_from(tmp_path, '[factors]\nscaling = ["reactive"]\n[scaling]\nmax_replicas = 1\n')
    with pytest.raises(SpecError, match=r"scaling\.step: unknown key"):
        spec_from(tmp_path, '[factors]\nscaling = ["reactive"]\n[scaling]\nstep = 1\n')
