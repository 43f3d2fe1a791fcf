"""A minimal TF-Serving-shaped server that answers every predict at once: the instrument's floor.

It speaks TF Serving's REST (``POST /v1/models/<m>:predict``, ``GET /v1/models/<m>``) over
asyncio (uvloop) + httptools, and gRPC (``PredictionService/Predict``, ``ModelService/GetModelStatus``)
on grpc's thread-pool server with hand-written wire bytes (no TensorFlow import, no protobuf
runtime; answers cached per model name and batch size). Every prediction is
``ECHO_LIKES`` for each instance sent. Measuring the lab's client path against it tells how much
of a latency is the load generator and client rather than the server.

For tests it can stall like a server in a GC pause: with ``stall_ms``/``stall_every_s`` every
request that arrives in the first ``stall_ms`` of each ``stall_every_s`` period (counted from
the server's start) is answered only when the stall ends (on both protocols).

Run: ``python -m poochlab.experiments.load.echo_server --rest-port 0 --grpc-port 0``; it
prints one JSON line with the bound ports, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ECHO_LIKES = 42.0
ECHO_VERSION = 1


@dataclass(frozen=True)
class Stall:
    """Pause every answer that arrives in the first ``ms`` of each ``every_s`` period."""

    ms: float = 0.0
    every_s: float = 1.0
    epoch: float = field(default_factory=time.monotonic)

    def delay_s(self, now: float) -> float:
        if self.ms <= 0:
            return 0.0
        phase = (now - self.epoch) % self.every_s
        return max(self.ms / 1000.0 - phase, 0.0)


class _RestProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection parsed by httptools."""

    def __init__(self, stall: Stall) -> None:
        import httptools

        self._stall = stall
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b'{"error": "malformed HTTP request"}')
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, body = self._url.decode("latin-1"), b"".join(self._body)
        method = self._parser.get_method()
        self._url, self._body = b"", []
        status, answer = _rest_answer(method, url, body)
        delay = self._stall.delay_s(time.monotonic())
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._send, status, answer)
        else:
            self._send(status, answer)

    def _send(self, status: int, body: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self._transport.write(head + body)


def _rest_answer(method: bytes, url: str, body: bytes) -> tuple[int, bytes]:
    path = url.split("?", 1)[0].lower()
    if method == b"POST" and path.startswith("/v1/models/") and path.endswith(":predict"):
        try:
            request = json.loads(body)
        except ValueError as error:
            return 400, json.dumps({"error": f"JSON Parse error: {error}"}).encode()
        rows = _row_count(request)
        return 200, json.dumps({"predictions": [ECHO_LIKES] * rows}).encode()
    if method == b"GET" and path.startswith("/v1/models/") and "/metadata" not in path:
        status = {"model_version_status": [{"version": str(ECHO_VERSION), "state": "AVAILABLE",
                                            "status": {"error_code": "OK", "error_message": ""}}]}
        return 200, json.dumps(status).encode()
    return 404, json.dumps({"error": f"no route for {method.decode()} {url}"}).encode()


def _row_count(request: Any) -> int:
    if isinstance(request, dict) and isinstance(request.get("instances"), list):
        return max(len(request["instances"]), 1)
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if isinstance(inputs, dict) and inputs:
        first = next(iter(inputs.values()))
        return len(first) if isinstance(first, list) else 1
    return len(inputs) if isinstance(inputs, list) else 1


GRPC_THREADS = 32  # a stalled answer holds its thread; more than any test keeps stalled at once


@functools.lru_cache(maxsize=256)
def _predict_answer(name: str, batch: int) -> bytes:
    from poochlab.experiments.load.tf_wire import predict_response

    return predict_response(name, ECHO_VERSION, "serving_default", "likes", [ECHO_LIKES] * batch)


def _grpc_handlers(stall: Stall) -> Any:
    import grpc

    from poochlab.experiments.load.tf_wire import model_status_response, request_summary

    status_answer = model_status_response(ECHO_VERSION)

    # Synchronous handlers on grpc's thread-pool server: measured, it answers ~15% more requests
    # per CPU second than grpc.aio; bytes in, pre-encoded bytes out, no protobuf runtime.
    def predict(request: bytes, context: Any) -> bytes:
        name, batch = request_summary(request)
        delay = stall.delay_s(time.monotonic())
        if delay > 0:
            time.sleep(delay)
        return _predict_answer(name, batch)

    def model_status(request: bytes, context: Any) -> bytes:
        return status_answer

    prediction = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": grpc.unary_unary_rpc_method_handler(predict)})
    models = grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", {
        "GetModelStatus": grpc.unary_unary_rpc_method_handler(model_status)})
    return [prediction, models]


async def serve(rest_port: int, grpc_port: int | None, stall: Stall) -> None:
    """Serve until cancelled; prints {"rest_port", "grpc_port", "pid"} once both listen."""
    loop = asyncio.get_running_loop()
    rest = await loop.create_server(lambda: _RestProtocol(stall), "127.0.0.1", rest_port)
    bound = {"rest_port": rest.sockets[0].getsockname()[1], "grpc_port": None, "pid": os.getpid()}
    grpc_server = None
    if grpc_port is not None:
        import grpc

        from concurrent.futures import ThreadPoolExecutor

        grpc_server = grpc.server(ThreadPoolExecutor(GRPC_THREADS))
        grpc_server.add_generic_rpc_handlers(_grpc_handlers(stall))
        bound["grpc_port"] = grpc_server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        grpc_server.start()
    print(json.dumps(bound), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    rest.close()
    if grpc_server is not None:
        grpc_server.stop(0)


@dataclass
class EchoServer:
    """A running echo server subprocess; ``stop()`` (or leaving the ``with``) ends it."""

    process: subprocess.Popen
    rest_port: int
    grpc_port: int | None
    stall: Stall = field(default_factory=Stall)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        if self.grpc_port is None:
            raise ValueError("this echo server was started without gRPC")
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_echo_server(*, grpc: bool = True, stall: Stall | None = None, timeout_s: float = 30.0) -> EchoServer:
    """Start the echo server in a subprocess on free loopback ports and wait until it listens."""
    stall = stall or Stall()
    command = [sys.executable, "-m", "poochlab.experiments.load.echo_server", "--rest-port", "0",
               "--stall-ms", str(stall.ms), "--stall-every-s", str(stall.every_s)]
    if grpc:
        command += ["--grpc-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    line = process.stdout.readline() if process.stdout else ""
    if not line or time.monotonic() > deadline:
        process.kill()
        error = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"echo server did not start: {error.strip()[-500:]}")
    bound = json.loads(line)
    return EchoServer(process, bound["rest_port"], bound["grpc_port"], stall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest-port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=None, help="omit to serve REST only")
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument("--stall-every-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    stall = Stall(args.stall_ms, args.stall_every_s)
    try:
        import uvloop  # the fastest loop for REST (gRPC runs on its own threads)

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.rest_port, args.grpc_port, stall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
