"""docker/locustfile.py in Locust's distributed mode, configured the way compose.yaml does it
(Locust's own LOCUST_* variables), against the session's lab server: one master, one worker."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from poochlab.serving.launcher import free_port

REPO = Path(__file__).resolve().parents[1]
LOCUST = str(Path(sys.executable).parent / "locust")


def test_master_and_worker_drive_the_server_without_failures(lab_server: object, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LOCUST_LOCUSTFILE": "docker/locustfile.py", "POOCHLAB_INSTANCES": "2"}
    worker = subprocess.Popen(
        [LOCUST, "--worker"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**env, "LOCUST_MASTER_NODE_HOST": "127.0.0.1", "LOCUST_MASTER_NODE_PORT": str(port)},
    )
    try:
        master = subprocess.run(
            [LOCUST, "--master", "--headless", "--expect-workers=1", "--users=4", "--spawn-rate=4",
             "--run-time=3s", "--master-bind-host=127.0.0.1", f"--master-bind-port={port}",
             f"--csv={tmp_path / 'run'}", "--only-summary"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**env, "LOCUST_HOST": lab_server.rest_url},
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert master.returncode == 0, master.stderr[-2000:]
    with open(tmp_path / "run_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    predict = rows["pooch_predictor:predict"]
    assert int(predict["Request Count"]) > 0
    assert int(predict["Failure Count"]) == 0
