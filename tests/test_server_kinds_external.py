"""Kind "external": a server the lab did not start, here the session's lab server."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import pytest

from poochlab.processes.servers.launcher import ServerSpec, ServerStartError, free_port, launch

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


def _spec_for(server: object) -> ServerSpec:
    return ServerSpec(kind="external", host="127.0.0.1", rest_port=server.rest_port, grpc_port=server.grpc_port)


def test_external_server_is_used_where_it_runs_and_left_running(lab_server: object) -> None:
    external = launch(_spec_for(lab_server))
    assert external.pid is None and external.command == []
    assert (external.rest_url, external.grpc_target) == (lab_server.rest_url, lab_server.grpc_target)
    external.wait_until_available(["pooch_predictor", "half_plus_two"], timeout_s=30)

    assert external.stop() is None
    # Stopping the handle must not stop someone else's server.
    assert lab_server.process.poll() is None
    request = urllib.request.Request(f"{external.rest_url}/v1/models/half_plus_two:predict",
                                     data=json.dumps({"instances": [[4.0]]}).encode())
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert json.loads(answer.read()) == {"predictions": [[4.0]]}


def test_unknown_model_on_external_server_times_out_with_a_clear_error(lab_server: object) -> None:
    external = launch(_spec_for(lab_server))
    with pytest.raises(ServerStartError, match="no_such_model not AVAILABLE after 1 s"):
        external.wait_until_available(["no_such_model"], timeout_s=1)


def test_nobody_listening_is_reported_not_hung() -> None:
    spec = ServerSpec(kind="external", host="127.0.0.1", rest_port=free_port(), grpc_port=free_port())
    with pytest.raises(ServerStartError, match="not AVAILABLE"):
        launch(spec).wait_until_available(["pooch_predictor"], timeout_s=1)


def test_external_needs_its_ports() -> None:
    with pytest.raises(ValueError, match="needs the server's REST and gRPC ports"):
        launch(dataclasses.replace(ServerSpec(kind="external"), grpc_port=8500))
