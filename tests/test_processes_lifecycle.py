"""ManagedProcess on tiny real children (``python -c``): readiness, failed starts, stopping.

No test waits for a sleep to be long enough: a child says it got somewhere by writing a file or
a line, and the test polls for that state (bounded by a generous limit that only a broken
machine reaches).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from poochlab.processes.lifecycle import ManagedProcess, ProcessStartError, poll_until
from poochlab.processes.servers.handle import ServerHandle
from poochlab.processes.servers.launcher import RunningServer, ServerSpec
from poochlab.processes.servers.replicas import ReplicaSet

STATE_LIMIT_S = 60.0  # how long a child may take to reach a state before the machine counts as broken


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def reached(path: Path) -> None:
    assert poll_until(path.exists, STATE_LIMIT_S), f"the child never wrote {path}"


def test_the_readiness_probe_returns_once_the_child_is_ready_and_stop_sends_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = ManagedProcess(python("import pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text('up'); "
                                  "time.sleep(600)", str(ready)), name="child",
                           endpoints={"rest": "http://127.0.0.1:1"})
    with child.start(ready.exists, timeout_s=STATE_LIMIT_S, what="writing its ready file"):
        assert child.alive and child.returncode is None and child.pid is not None
        assert child.endpoints == {"rest": "http://127.0.0.1:1"}
    assert not child.alive
    assert child.returncode == -signal.SIGTERM  # Python's default SIGTERM action ends it at once


def test_a_child_that_never_gets_ready_is_stopped_and_the_error_quotes_its_log(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = ManagedProcess(python("import sys, time; print('warming cache 3 of 7', flush=True); "
                                  "print('disk full', file=sys.stderr, flush=True); time.sleep(600)"),
                           name="slowpoke", log_path=log).start()
    try:
        # Wait for what it prints (state, not time), then give it no time at all to get ready.
        assert poll_until(lambda: "disk full" in child.log_tail(), STATE_LIMIT_S)
        with pytest.raises(ProcessStartError) as error:
            child.wait_ready(lambda: False, 0.0, what="answering PING")
    finally:
        child.stop()
    message = str(error.value)
    assert message.startswith("slowpoke was not answering PING after 0 s")
    assert "warming cache 3 of 7" in message and "disk full" in message and str(log) in message
    assert error.value.returncode is None
    assert not child.alive  # stopped before the error was raised
    assert child.returncode == -signal.SIGTERM


@pytest.mark.parametrize("capture", [True, False], ids=["captured", "log-file"])
def test_a_child_that_dies_during_start_is_reported_with_its_exit_code(tmp_path: Path, capture: bool) -> None:
    child = ManagedProcess(python("import sys; print('bad flag --model_config_file=/nope', file=sys.stderr); "
                                  "sys.exit(3)"), name="server",
                           log_path=None if capture else tmp_path / "server.log", capture=capture).start()
    with pytest.raises(ProcessStartError) as error:
        child.wait_ready(lambda: False, STATE_LIMIT_S)  # never ready: only the exit ends the wait
    assert str(error.value).startswith("server exited with code 3 before it was ready")
    assert "bad flag --model_config_file=/nope" in str(error.value)
    assert error.value.returncode == 3 and child.returncode == 3
    assert "bad flag" in error.value.log_tail


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    ignoring = tmp_path / "ignoring"
    child = ManagedProcess(python("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                  "pathlib.Path(sys.argv[1]).write_text('yes'); time.sleep(600)", str(ignoring)))
    with child:
        reached(ignoring)  # SIGTERM is ignored from here on
        code = child.stop(grace_s=0.1)
    assert code == -signal.SIGKILL and child.returncode == -signal.SIGKILL


def test_the_context_manager_stops_the_child_when_the_block_raises(tmp_path: Path) -> None:
    started = tmp_path / "started"
    child = ManagedProcess(python("import pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text('x'); "
                                  "time.sleep(600)", str(started)))
    with pytest.raises(KeyError):
        with child:
            reached(started)
            raise KeyError("the measurement failed")
    assert not child.alive and child.returncode == -signal.SIGTERM


def test_a_graceful_child_keeps_its_own_exit_code_and_stop_is_idempotent(tmp_path: Path) -> None:
    handler = tmp_path / "handler"
    child = ManagedProcess(python("import pathlib, signal, sys, time\n"
                                  "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
                                  "pathlib.Path(sys.argv[1]).write_text('x')\n"
                                  "time.sleep(600)", str(handler))).start()
    reached(handler)
    assert child.stop() == 7
    assert child.stop() == 7 and child.kill() == 7  # already gone: nothing more to do


def test_the_captured_log_tail_is_bounded_and_keeps_the_last_lines() -> None:
    child = ManagedProcess(python("for i in range(1000): print(f'line {i}')"), capture=True).start()
    assert child.wait() == 0
    child.stop()  # reaps it and lets the reader reach the end of the output
    assert child.log_tail(3) == "line 997\nline 998\nline 999"
    kept = child.output_lines()
    assert len(kept) < 1000 and kept[-1] == "line 999"


def test_every_server_kind_handle_satisfies_the_server_handle_protocol(tmp_path: Path) -> None:
    external = RunningServer(spec=ServerSpec(kind="external", rest_port=8501, grpc_port=8500), command=[],
                             rest_port=8501, grpc_port=8500, log_path=tmp_path / "none", process=None)
    replicas = ReplicaSet([external], None, {"replicas": 1})
    for handle in (external, replicas):
        assert isinstance(handle, ServerHandle)
    assert external.endpoints == {"rest": "http://127.0.0.1:8501", "grpc": "127.0.0.1:8500"}
    assert external.alive and external.pid is None and not external.behind_balancer
    assert replicas.kind == "replicas" and replicas.behind_balancer
    assert replicas.endpoints == {"rest": "http://127.0.0.1:8501", "grpc": "ipv4:127.0.0.1:8500"}


def test_with_log_stdout_off_only_stderr_reaches_the_tail(tmp_path: Path) -> None:
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"
    captured = ManagedProcess(python(code), capture=True, log_stdout=False).start()
    logged = ManagedProcess(python(code), log_path=tmp_path / "stderr.log", log_stdout=False).start()
    for child in (captured, logged):
        assert child.wait() == 0  # stdout went to /dev/null, not a closed pipe
        child.stop()
        assert child.log_tail() == "to stderr"


# A child that answers each line on stdin with it in capitals, after a "ready" line; its stderr
# is what the log tail should hold.
UPPERCASE = ("import sys\n"
             "print('loading the model', file=sys.stderr, flush=True)\n"
             "print('ready', flush=True)\n"
             "for line in sys.stdin:\n"
             "    print(line.strip().upper(), flush=True)\n")


def test_a_child_with_pipes_answers_lines_and_its_stderr_alone_reaches_the_tail() -> None:
    child = ManagedProcess(python(UPPERCASE), name="uppercase", capture=True, pipes=True).start()
    try:
        assert child.read_line(STATE_LIMIT_S, what="its ready line") == "ready"
        child.write_line("go")
        child.write_line("again")  # two requests in flight: each answer is one whole line
        assert child.read_line(STATE_LIMIT_S) == "GO"
        assert child.read_line(STATE_LIMIT_S) == "AGAIN"
        assert child.alive
    finally:
        code = child.stop()
    assert code == -signal.SIGTERM and child.log_tail() == "loading the model"


def test_a_piped_child_that_exits_instead_of_answering_is_reported_with_its_exit_code_and_stderr() -> None:
    child = ManagedProcess(python("import sys; print('no model version under /nope', file=sys.stderr); "
                                  "sys.exit(2)"), name="baseline", capture=True, pipes=True).start()
    with pytest.raises(ProcessStartError) as error:
        child.read_line(STATE_LIMIT_S, what="its ready line")
    assert str(error.value).startswith("baseline exited with code 2 before it wrote its ready line")
    assert error.value.returncode == 2 and "no model version under /nope" in error.value.log_tail


def test_a_piped_child_that_says_nothing_in_time_is_stopped_and_the_error_says_so(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    # It reads stdin and never writes stdout: no answer can come, however long the wait.
    child = ManagedProcess(python("import sys; print('waiting for input', file=sys.stderr, flush=True); "
                                  "sys.stdin.read()"), name="quiet", log_path=log, pipes=True).start()
    assert poll_until(lambda: "waiting for input" in child.log_tail(), STATE_LIMIT_S)
    with pytest.raises(ProcessStartError) as error:
        child.read_line(0.0, what="an answer")
    assert str(error.value).startswith("quiet did not write an answer within 0 s")
    assert error.value.returncode is None and "waiting for input" in str(error.value) and str(log) in str(error.value)
    assert not child.alive
