"""The model_rollout fault: a new version folder rolled into the served base path under a lab
server's file-system polling, with and without warm-up records.

One dedicated server for this module (the shared one must not change its models), serving the
small export's versions from a copy the test owns; the rollouts add versions to that copy only.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from pathlib import Path

import pytest

from fixtures.lab_server import write_models_config

MODEL = "pooch_predictor"
CORGI = {"hashtags": "#corgi", "country": "GB", "followers": 1200}


def export_versions(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def export_base(pooch_exports) -> Path:
    return pooch_exports["small"] / MODEL


@pytest.fixture(scope="module")
def rollout_server(tmp_path_factory, export_base):
    """A lab server on a served copy of the small export (polling every second, the default)."""
    from poochlab.experiments.faults.rollout import served_copy
    from poochlab.processes.servers.launcher import ServerSpec, launch

    workdir = tmp_path_factory.mktemp("rollout_server")
    base = served_copy(export_base, workdir / "served" / MODEL)
    config = write_models_config(workdir / "models.config", {MODEL: base})
    server = launch(ServerSpec(model_config_file=config, file_system_poll_wait_seconds=1,
                               log_file=workdir / "server.log"))
    try:
        server.wait_until_available([MODEL], timeout_s=180)
        yield server, base
    finally:
        server.stop()


def grpc_version(server) -> int:
    """The version that answered a gRPC Predict (TF Serving echoes it in model_spec)."""
    from poochlab.clients import ClientConfig, build_predictor

    predictor = build_predictor(ClientConfig(protocol="grpc", grpc_target=server.grpc_target))
    try:
        answer = predictor.predict([CORGI])
    finally:
        predictor.close()
    assert answer.model_version is not None
    return int(answer.model_version)


def rest_states(server) -> dict[int, str]:
    with urllib.request.urlopen(f"{server.rest_url}/v1/models/{MODEL}", timeout=30) as answer:
        return {int(s["version"]): s["state"] for s in json.loads(answer.read())["model_version_status"]}


def roll(server, base: Path, warmup: bool, source: Path | None = None):
    from poochlab.experiments.faults.rollout import ModelRollout
    from poochlab.experiments.faults.runner import FaultRunner, RealClock
    from poochlab.experiments.faults.schedule import FaultSpec

    rollout = ModelRollout(base, [server.rest_url], [MODEL], source=source)
    spec = FaultSpec("model_rollout", at_s=0.0, params={"warmup": warmup})
    event = FaultRunner([spec], {"model_rollout": rollout}, RealClock()).run().events[0]
    assert "inject_error" not in event.detail and "clear_error" not in event.detail, event.detail
    return event


def test_a_rollout_without_warmup_serves_the_new_version_and_records_when_it_was_available(
        rollout_server, export_base) -> None:
    from poochlab.clients.rest_predictor import RestPredictor
    from poochlab.clients import ClientConfig
    from poochlab.clients.version_resolver import VersionResolver

    server, base = rollout_server
    exported = export_versions(export_base)
    latest = int(exported[-1])
    assert grpc_version(server) == latest  # the latest policy serves the highest version
    rest = RestPredictor(ClientConfig(rest_url=server.rest_url))
    resolver = VersionResolver(rest.model_versions, refresh_s=0.0)
    assert resolver.current() == latest

    event = roll(server, base, warmup=False)

    new = latest + 1
    assert event.detail["new_version"] == new and event.detail["previous_version"] == latest
    assert event.detail["warmup"] is False
    assert not (base / str(new) / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert (base / str(latest) / "assets.extra" / "tf_serving_warmup_requests").exists()  # not stripped
    # appeared <= AVAILABLE <= old version gone (= cleared), on the trial's clock
    assert event.injected_at_s == event.detail["appeared_at_s"]
    assert event.injected_at_s <= event.detail["available_at_s"] <= event.cleared_at_s
    assert event.cleared_at_s == event.detail["previous_gone_at_s"]
    assert rest_states(server)[new] == "AVAILABLE" and rest_states(server)[latest] != "AVAILABLE"
    # The answers now come from the new version; the clients' resolver follows the switch.
    assert grpc_version(server) == new
    assert resolver.current() == new and resolver.changes == 1
    rest.close()
    # The repository's export is untouched.
    assert export_versions(export_base) == exported


def warmed_folders(server) -> set[str]:
    """The version folders whose warm-up records the server replayed (from its log)."""
    found = set()
    for line in Path(server.log_path).read_text().splitlines():
        if "Finished reading warmup data for model at " in line:
            found.add(line.split("Finished reading warmup data for model at ")[1].split(". Number of warmup")[0])
    return found


def test_warmup_decides_whether_the_new_version_replays_warmup_records(rollout_server, export_base) -> None:
    server, base = rollout_server
    exported = export_base / export_versions(export_base)[-1]  # the folder with the records
    stripped = roll(server, base, warmup=False, source=exported).detail["new_version"]
    carried = roll(server, base, warmup=True, source=exported)
    assert carried.detail["new_version"] == stripped + 1 and carried.detail["warmup"] is True
    assert (base / str(stripped + 1) / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert grpc_version(server) == stripped + 1
    warmed = warmed_folders(server)
    assert str(base / str(stripped + 1)) in warmed and str(base / str(stripped)) not in warmed, warmed


def test_a_version_that_fails_to_load_is_recorded_as_a_failed_clear(tmp_path) -> None:
    from poochlab.experiments.faults.rollout import ModelRollout
    from poochlab.experiments.faults.runner import FakeClock, FaultRunner
    from poochlab.experiments.faults.schedule import FaultSpec

    base = tmp_path / MODEL
    (base / "1").mkdir(parents=True)

    class FailingStatus(ModelRollout):
        def states(self):  # the status API's answer when the new version's load failed
            return [{1: "AVAILABLE", 2: "END"}]

    rollout = FailingStatus(base, ["http://127.0.0.1:1"], [MODEL])
    spec = FaultSpec("model_rollout", at_s=0.0, params={"warmup": False})
    event = FaultRunner([spec], {"model_rollout": rollout}, FakeClock()).run().events[0]
    assert event.injected_at_s == 0.0 and event.cleared_at_s is None
    assert "version 2" in event.detail["clear_error"] and "failed to load" in event.detail["clear_error"]
    assert (base / "2").is_dir() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_warmup_true_on_a_version_without_records_is_refused(tmp_path) -> None:
    from poochlab.experiments.faults.rollout import ModelRollout
    from poochlab.experiments.faults.runner import FakeClock, FaultRunner
    from poochlab.experiments.faults.schedule import FaultSpec

    base = tmp_path / MODEL
    (base / "3" / "variables").mkdir(parents=True)
    rollout = ModelRollout(base, ["http://127.0.0.1:1"], [MODEL])
    spec = FaultSpec("model_rollout", at_s=0.0, params={"warmup": True})
    event = FaultRunner([spec], {"model_rollout": rollout}, FakeClock()).run().events[0]
    assert "3: no assets.extra/tf_serving_warmup_requests" in event.detail["inject_error"]
    assert "no version was rolled in" in event.detail["clear_error"]  # nothing to wait for
    assert event.injected_at_s is None and event.cleared_at_s is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL] and export_versions(base) == ["3"]


def test_the_schedule_checks_the_rollout_settings(tmp_path) -> None:
    from poochlab.experiments.faults.schedule import ScheduleError, parse_faults

    (spec,) = parse_faults([{"kind": "model_rollout", "at_s": 5, "warmup": False}], "s.toml")
    assert spec.params == {"warmup": False} and spec.duration_s == 0.0
    with pytest.raises(ScheduleError, match=r"s.toml: faults\[0\].warmup: expected bool, got 1"):
        parse_faults([{"kind": "model_rollout", "at_s": 5, "warmup": 1}], "s.toml")
    with pytest.raises(ScheduleError, match=r"faults\[0\].duration_s: a model_rollout lasts until"):
        parse_faults([{"kind": "model_rollout", "at_s": 5, "duration_s": 3}], "s.toml")


def test_the_rollout_warmup_factor_sets_the_faults_warmup() -> None:
    from poochlab.experiments.faults.schedule import FaultSpec
    from poochlab.experiments.sweep.fault_setup import with_rollout_warmup

    schedule = [FaultSpec("model_rollout", 5.0, params={"warmup": True}), FaultSpec("redis_outage", 1.0, 2.0)]
    off = with_rollout_warmup(schedule, {"rollout_warmup": "off"})
    assert off[0].params == {"warmup": False} and off[1] == schedule[1]
    assert with_rollout_warmup(schedule, {})[0].params == {"warmup": True}


SPEC = """
[sweep]
name = "r"
server_kind = "{kind}"
[controls]
users = 1
{external}
[[faults]]
kind = "model_rollout"
at_s = 5
"""


@pytest.mark.parametrize("kind", ["external", "docker"])
def test_a_sweep_refuses_a_rollout_on_a_server_it_does_not_serve_from_its_own_copy(tmp_path, kind) -> None:
    from poochlab.experiments.sweep.spec import SpecError, load_spec

    external = '[external]\nhost = "127.0.0.1"\nrest_port = 8501\ngrpc_port = 8500' if kind == "external" else ""
    path = tmp_path / "r.toml"
    path.write_text(SPEC.format(kind=kind, external=external))
    with pytest.raises(SpecError, match=rf"r.toml: faults\[0\].kind: a model_rollout .* not '{kind}'"):
        load_spec(path)


def test_a_sweep_refuses_the_warmup_factor_without_a_rollout(tmp_path) -> None:
    from poochlab.experiments.sweep.spec import SpecError, load_spec

    path = tmp_path / "r.toml"
    path.write_text('[sweep]\nname = "r"\n[factors]\nrollout_warmup = ["on", "off"]\n[controls]\nusers = 1\n')
    with pytest.raises(SpecError, match="rollout_warmup: sets a model_rollout's warmup"):
        load_spec(path)


def test_a_rollout_sweep_serves_a_copy_per_server_start_and_removes_it_when_the_server_stops(tmp_path) -> None:
    from poochlab.experiments.sweep.server_configs import ServerConfig
    from poochlab.experiments.sweep.servers import ServerPool
    from poochlab.experiments.sweep.spec import load_spec

    model_root = tmp_path / "servables"
    (model_root / "small" / MODEL / "1" / "variables").mkdir(parents=True)
    (model_root / "small" / MODEL / "1" / "saved_model.pb").write_bytes(b"graph")
    spec = load_spec(Path(__file__).resolve().parents[1] / "experiments" / "fault-model-rollout.toml")
    pool = ServerPool(spec, tmp_path / "run", model_root, manifest=None)  # type: ignore[arg-type]
    pool.starts = 3
    server = ServerConfig("small", 1, "off", 0, 1, rollout_warmup="off")
    served = pool._served_base_path(server)
    assert served == tmp_path / "run" / "served-models" / f"{server.config_id}-start3" / MODEL
    assert (served / "1" / "saved_model.pb").read_bytes() == b"graph"
    (served / "2").mkdir()  # what a rollout leaves
    pool.stop()
    assert not (tmp_path / "run" / "served-models" / f"{server.config_id}-start3").exists()
    assert export_versions(model_root / "small" / MODEL) == ["1"]
    # Without a model_rollout the export itself is served.
    plain = ServerPool(dataclasses.replace(spec, faults=()), tmp_path / "run2", model_root, manifest=None)  # type: ignore[arg-type]
    assert plain._served_base_path(server) == model_root / "small" / MODEL and plain.served_copy is None
