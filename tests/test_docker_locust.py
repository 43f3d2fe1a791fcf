"""docker/locustfile.py in Locust's distributed mode, configured the way compose.yaml does it
(Locust's own LOCUST_* variables), against the session's lab server: one master, one worker.
The lab's recording rides along: the master writes the merged HdrHistogram (LOCUST_HDR_OUTPUT)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poochlab.processes.servers.launcher import free_port

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

REPO = Path(__file__).resolve().parents[1]
LOCUST = str(Path(sys.executable).parent / "locust")


def test_master_and_worker_drive_the_server_without_failures(lab_server: object, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LOCUST_LOCUSTFILE": "docker/locustfile.py", "POOCHLAB_INSTANCES": "2"}
    env.pop("POOCHLAB_GRPC_TARGET", None)  # REST only, as compose runs it by default
    worker = subprocess.Popen(
        [LOCUST, "--worker"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**env, "LOCUST_MASTER_NODE_HOST": "127.0.0.1", "LOCUST_MASTER_NODE_PORT": str(port)},
    )
    output = tmp_path / "locust-hdr.json"
    try:
        master = subprocess.run(
            [LOCUST, "--master", "--headless", "--expect-workers=1", "--users=4", "--spawn-rate=4",
             "--run-time=3s", "--master-bind-host=127.0.0.1", f"--master-bind-port={port}",
             f"--json-file={tmp_path / 'run'}"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**env, "LOCUST_HOST": lab_server.rest_url, "LOCUST_HDR_OUTPUT": str(output)},
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert master.returncode == 0, master.stderr[-2000:]
    # Locust's JSON (written at shutdown, unlike its CSV) for its counts only.
    stats = {entry["name"]: entry for entry in json.loads((tmp_path / "run.json").read_text())}
    assert set(stats) == {"pooch_predictor:predict"}
    predict = stats["pooch_predictor:predict"]
    assert predict["num_requests"] > 0
    assert predict["num_failures"] == 0
    recorded = json.loads(output.read_text())
    assert recorded["by_name"]["pooch_predictor:predict"]["count"] == predict["num_requests"]
    assert recorded["aggregated"]["errors_by_kind"] == {}
