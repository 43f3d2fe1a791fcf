"""Minimal echo servers: what each Python HTTP / gRPC stack costs under the lab's server.

Each answers with the request's own bytes and does nothing else, so a benchmark can subtract
the stack's cost from the lab server's. Run one with
``python -m poochlab.experiments.bench.echo_servers <kind> <port>``; it prints ``ready`` and
serves until SIGTERM (:func:`start_echo` starts one as a ManagedProcess and waits until it
serves). Kinds: ``httptools`` (asyncio Protocol + httptools on uvloop: the lab server's REST
stack), ``uvicorn`` (a raw ASGI app on uvicorn with httptools and uvloop), ``grpc-aio``
(grpc.aio), ``grpc-sync`` (grpc's thread-pool server: the lab server's gRPC stack).

Two more kinds also call a model once per request before echoing: ``httptools+model`` (on the
event loop) and ``grpc-sync+model`` (on the RPC's thread), with fixed inputs prepared at start
(``python -m ... <kind> <port> <model base path>``). They are the least any server on that
stack that runs the model can cost: whatever the lab's server costs beyond them is its own handler's work
(parse, validate, encode, metrics), and whatever they cost beyond echo + in-process compute is
what this machine charges for doing both in one process between idle waits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from poochlab.processes.lifecycle import ManagedProcess, accepts_connections, free_port

if TYPE_CHECKING:
    from poochlab.experiments.recording.placement import Placement

GRPC_METHOD = "/tensorflow.serving.PredictionService/Predict"
KINDS = ("httptools", "uvicorn", "grpc-aio", "grpc-sync", "httptools+model", "grpc-sync+model")
MODEL_SUFFIX = "+model"
START_TIMEOUT_S = 300.0  # the "+model" kinds load TensorFlow and the model first


def _nothing() -> None:
    return None


async def _serve_httptools(port: int, model: Callable[[], object] = _nothing) -> None:
    from poochlab.serving.http_server import start_http_server
    from poochlab.serving.rest_api import Response

    async def echo(method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        model()
        return Response(200, body)

    server = await start_http_server(echo, "127.0.0.1", port, 64 * 1024 * 1024, "too large")
    await _until_signal()
    server.close()


def _serve_uvicorn(port: int) -> None:
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, lifespan="off")


def _echo_handler(model: Callable[[], object] = _nothing) -> object:
    import grpc

    def echo(request: bytes, context: object) -> bytes:
        model()
        return request

    return grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(echo)})


async def _serve_grpc_aio(port: int) -> None:
    import grpc

    async def echo(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService", {"Predict": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await _until_signal()
    await server.stop(0)


def _serve_grpc_sync(port: int, model: Callable[[], object] = _nothing) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(ThreadPoolExecutor(16))
    server.add_generic_rpc_handlers((_echo_handler(model),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(0)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    if kind not in KINDS:
        raise SystemExit(f"unknown echo server kind {kind!r}; one of {', '.join(KINDS)}")
    if kind.startswith("grpc-sync"):
        # Before any thread starts (TensorFlow's too), so that sigwait alone receives these.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    model: Callable[[], object] = _nothing
    if kind.endswith(MODEL_SUFFIX):
        if len(argv) < 3:
            raise SystemExit(f"{kind} needs the model's base path: {kind} <port> <model base path>")
        from poochlab.experiments.bench.model_baseline import model_call

        model = model_call(argv[2])
    if kind in ("httptools", "httptools" + MODEL_SUFFIX):
        import uvloop

        uvloop.run(_serve_httptools(port, model))
    elif kind == "uvicorn":
        _serve_uvicorn(port)
    elif kind == "grpc-aio":
        import uvloop

        uvloop.run(_serve_grpc_aio(port))
    else:
        _serve_grpc_sync(port, model)
    return 0


def start_echo(placement: "Placement", kind: str, base_path: Path | None = None) -> tuple[ManagedProcess, int]:
    """Start an echo server of ``kind`` on the server's cores (``base_path``: the model's, for the
    "+model" kinds) and wait until it said ``ready`` and accepts connections; ``process.stop()``
    ends it. ProcessStartError, quoting its output, when it exits or is not ready in time."""
    port = free_port()
    command = [sys.executable, "-m", "poochlab.experiments.bench.echo_servers", kind, str(port)]
    if kind.endswith(MODEL_SUFFIX):
        if base_path is None:
            raise ValueError(f"echo server {kind} needs the model's base path")
        command.append(str(base_path))
    process = ManagedProcess(command, name=f"echo server {kind}", env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                             capture=True, grace_s=15.0, endpoints={"echo": f"127.0.0.1:{port}"})
    with placement.as_role("server"):  # the child inherits the server's cores
        process.start()
    said_ready: list[bool] = []  # remembered: later output may push the line out of the bounded tail

    def ready() -> bool:
        if not said_ready and "ready" in process.output_lines():
            said_ready.append(True)
        return bool(said_ready) and accepts_connections(port)  # uvicorn says ready before it listens

    process.wait_ready(ready, START_TIMEOUT_S, what=f"ready on port {port}")
    return process, port


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
