"""One lifecycle for every process the lab starts: start, wait until ready, stop, say why it failed.

    with ManagedProcess(["redis-server", "--port", "6390"], name="redis-server") as redis:
        redis.wait_ready(lambda: answers_ping(6390), timeout_s=10, what="answering PING on port 6390")
        ...                                     # leaving the block stops it, on errors too

Readiness is a probe (a callable returning True once the process is ready) polled until a
deadline, while the process is watched: a process that exits first is reported with its exit
code, one that never gets ready is stopped; both errors quote the last lines of its output.
Stopping asks first (SIGTERM) and SIGKILLs after a grace period, so a hung process cannot hold
up a sweep. Output goes to a log file (kept, named in errors) or, with ``capture=True``, into a
bounded in-memory tail; otherwise it is discarded. A child that talks over stdin/stdout
(``pipes=True``) keeps them as pipes: write_line() and read_line() (with a deadline, and the
log tail of stderr when it exits instead of answering).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

Probe = Callable[[], bool]

DEFAULT_GRACE_S = 10.0  # between SIGTERM and SIGKILL
TAIL_LINES = 40  # lines an error message quotes
_CAPTURED_LINES = 200  # lines kept in memory with capture=True
_TAIL_BYTES = 64 * 1024  # read at most this much of a log file's end for its tail
_POLL_S = 0.05


class ProcessStartError(RuntimeError):
    """A process exited during start or never became ready; the message quotes its log tail."""

    def __init__(self, message: str, *, returncode: int | None = None, log_tail: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode  # None: it was still running (not ready in time)
        self.log_tail = log_tail


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts_connections(port: int, host: str = "127.0.0.1", timeout_s: float = 0.2) -> bool:
    """A readiness probe: whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def poll_until(probe: Probe, timeout_s: float, poll_s: float = _POLL_S) -> bool:
    """Call ``probe`` until it returns True (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


class ManagedProcess:
    """A child process with a name, named endpoints and a log tail; stop() or ``with`` ends it.

    argv/env/cwd/pass_fds: as for subprocess.Popen (env None: this process's environment).
    log_path: append stdout and stderr (only stderr with ``log_stdout=False``) to this file.
    capture: without a log_path, keep the last lines of stdout+stderr (only stderr with
        ``log_stdout=False``) in memory instead.
    endpoints: addresses the process serves, by name ("rest", "grpc", "redis", ...).
    grace_s: how long stop() waits after SIGTERM before SIGKILL.
    pipes: stdin and stdout are pipes to this process (write_line, read_line); the log or the
        captured tail then holds stderr only.
    """

    def __init__(self, argv: Sequence[str], *, name: str | None = None, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, log_path: Path | None = None, log_stdout: bool = True,
                 capture: bool = False, pass_fds: Sequence[int] = (), endpoints: Mapping[str, str] | None = None,
                 grace_s: float = DEFAULT_GRACE_S, pipes: bool = False) -> None:
        self.argv = [str(arg) for arg in argv]
        self.name = name or Path(self.argv[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_path
        self.pipes = pipes
        self.log_stdout = log_stdout and not pipes  # with pipes, stdout is the caller's
        self.capture = capture and log_path is None
        self.pass_fds = tuple(pass_fds)
        self.endpoints: dict[str, str] = dict(endpoints or {})
        self.grace_s = grace_s
        self._popen: subprocess.Popen | None = None
        self._log_handle: IO[bytes] | None = None
        self._captured: collections.deque[str] = collections.deque(maxlen=_CAPTURED_LINES)
        self._captured_lock = threading.Lock()  # copying a deque while the reader appends can fail
        self._reader: threading.Thread | None = None
        self._stdout_buffer = b""  # read from the stdout pipe, not yet returned by read_line

    # -- start --------------------------------------------------------------------------------

    def start(self, ready: Probe | None = None, *, timeout_s: float = 30.0, what: str = "ready") -> "ManagedProcess":
        """Start the process; with ``ready``, also wait_ready(ready, timeout_s, what=what)."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was started already (pid {self._popen.pid})")
        stdout: int | IO[bytes] = subprocess.DEVNULL
        stderr: int | IO[bytes] = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = open(self.log_path, "ab")
            stderr = self._log_handle
            stdout = self._log_handle if self.log_stdout else subprocess.DEVNULL
        elif self.capture:
            stdout = subprocess.PIPE if self.log_stdout else subprocess.DEVNULL
            stderr = subprocess.STDOUT if self.log_stdout else subprocess.PIPE
        if self.pipes:
            stdout = subprocess.PIPE
        try:
            self._popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                           stdin=subprocess.PIPE if self.pipes else subprocess.DEVNULL,
                                           stdout=stdout, stderr=stderr, pass_fds=self.pass_fds)
        except BaseException:
            self._close_log()
            raise
        if self.capture:
            pipe = self._popen.stdout if self.log_stdout else self._popen.stderr
            self._reader = threading.Thread(target=self._read_output, args=(pipe,), daemon=True,
                                            name=f"{self.name}-output")
            self._reader.start()
        if ready is not None:
            self.wait_ready(ready, timeout_s, what=what)
        return self

    def _read_output(self, pipe: IO[bytes] | None) -> None:
        if pipe is None:
            return
        with pipe:
            for line in pipe:
                with self._captured_lock:
                    self._captured.append(line.decode(errors="replace").rstrip("\n"))

    def wait_ready(self, probe: Probe, timeout_s: float, *, what: str = "ready", stop_on_timeout: bool = True,
                   poll_s: float = _POLL_S) -> None:
        """Poll ``probe`` until it returns True. ProcessStartError, quoting the log tail, when the
        process exits first (with its exit code) or ``timeout_s`` passes (stopped first, unless
        ``stop_on_timeout`` is False: the caller stops it)."""
        popen = self._require_started()
        deadline = time.monotonic() + timeout_s
        while True:
            code = popen.poll()
            if code is not None:
                error = self._start_error(f"{self.name} exited with code {code} before it was {what}", code)
                self.stop()  # already gone: reaps it, closes its log
                raise error
            if probe():
                return
            if time.monotonic() > deadline:
                error = self._start_error(f"{self.name} was not {what} after {timeout_s:.0f} s", None)
                if stop_on_timeout:
                    self.stop()
                raise error
            time.sleep(poll_s)

    def _start_error(self, headline: str, code: int | None) -> ProcessStartError:
        if code is not None and self._reader is not None:
            self._reader.join(1.0)  # its last words are in the pipe until the reader sees EOF
        tail = self.log_tail()
        return ProcessStartError(f"{headline}; command: {' '.join(self.argv)}\n"
                                 f"log tail ({self.log_source}):\n{tail}", returncode=code, log_tail=tail)

    # -- talking over pipes (pipes=True) -----------------------------------------------------

    def write_line(self, text: str) -> None:
        """Write ``text`` and a newline to its stdin, flushed."""
        stdin = self._require_started().stdin
        if stdin is None:
            raise RuntimeError(f"{self.name} was not started with pipes=True")
        stdin.write(text.encode() + b"\n")
        stdin.flush()

    def read_line(self, timeout_s: float | None = None, *, what: str = "a line") -> str:
        """The next line it writes on stdout, without the newline; waits up to ``timeout_s``
        (None: as long as it runs). ProcessStartError, quoting the log tail, when it exits (closes
        stdout) first or the time passes; it is stopped first either way."""
        popen = self._require_started()
        if popen.stdout is None:
            raise RuntimeError(f"{self.name} was not started with pipes=True")
        # Reading the descriptor directly: select() cannot see what a buffered reader holds.
        fd = popen.stdout.fileno()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._stdout_buffer:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            readable, _, _ = select.select([fd], [], [], remaining)
            chunk = os.read(fd, 64 * 1024) if readable else None
            if chunk:
                self._stdout_buffer += chunk
                continue
            if chunk is None:
                error = self._start_error(f"{self.name} did not write {what} within {timeout_s:.0f} s", None)
            else:  # end of file: it exited, or is about to
                code = self.wait(self.grace_s)
                headline = "closed its stdout" if code is None else f"exited with code {code}"
                error = self._start_error(f"{self.name} {headline} before it wrote {what}", code)
            self.stop()
            raise error
        line, self._stdout_buffer = self._stdout_buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    # -- state --------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (negative: the signal that ended it); None before."""
        return self._popen.poll() if self._popen is not None else None

    def poll(self) -> int | None:
        """subprocess.Popen's name for ``returncode``."""
        return self.returncode

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for it to exit by itself: its exit code, or None if ``timeout_s`` passed first."""
        popen = self._require_started()
        try:
            return popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        if self.alive:
            self._require_started().send_signal(sig)

    # -- output -------------------------------------------------------------------------------

    @property
    def log_source(self) -> str:
        """Where the log tail comes from, for messages."""
        if self.log_path is not None:
            return str(self.log_path)
        return "captured output" if self.capture else "output discarded"

    def output_lines(self) -> list[str]:
        """The captured lines kept so far (capture=True), oldest first."""
        with self._captured_lock:
            return list(self._captured)

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the process's output (or of its log file)."""
        if self.log_path is not None:
            try:
                with open(self.log_path, "rb") as handle:
                    handle.seek(max(os.fstat(handle.fileno()).st_size - _TAIL_BYTES, 0))
                    text = handle.read().decode(errors="replace")
            except OSError:
                return "(no log)"
            return "\n".join(text.splitlines()[-lines:])
        if self.capture:
            return "\n".join(self.output_lines()[-lines:])
        return "(output discarded)"

    # -- stop ---------------------------------------------------------------------------------

    def stop(self, grace_s: float | None = None, *, sigterm: bool = True) -> int | None:
        """SIGTERM (unless ``sigterm`` is False: it is expected to exit by itself), then SIGKILL
        after ``grace_s`` (default self.grace_s). Returns the exit code; None if never started.
        Safe to call again."""
        if self._popen is None:
            return None
        popen = self._popen
        if popen.poll() is None:
            if sigterm:
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(self.grace_s if grace_s is None else grace_s)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        self._close_log()
        for pipe in (popen.stdin, popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a pipe to a dead process may refuse a flush
                    pipe.close()
        if self._reader is not None:
            self._reader.join(1.0)  # EOF follows the exit, unless a grandchild holds the pipe
        return popen.returncode

    def kill(self) -> int | None:
        """SIGKILL now (no grace), and reap it."""
        return self.stop(0, sigterm=False)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _require_started(self) -> subprocess.Popen:
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._popen

    def __enter__(self) -> "ManagedProcess":
        if self._popen is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._popen is None else (
            f"pid {self._popen.pid} running" if self.alive else f"exited {self.returncode}")
        return f"ManagedProcess({self.name!r}, {state}, endpoints={self.endpoints})"
