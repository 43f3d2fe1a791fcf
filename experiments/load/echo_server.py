"""A minimal TF-Serving-shaped server that answers every predict at once: the instrument's floor.

It speaks TF Serving's REST (``POST /v1/models/<m>:predict``, ``GET /v1/models/<m>``) over
asyncio (uvloop) + httptools, and gRPC (``PredictionService/Predict``, ``ModelService/GetModelStatus``)
over HTTP/2 on the same loop (clients/grpc_wire.py's framing; headers decoded with ``hpack``) with
hand-written message bytes (no TensorFlow import, no protobuf runtime; answers cached per model
name and batch size). grpc's own thread-pool server cost ~0.4 ms of CPU per call and saturated its
core near 2,000 calls/s, before the generators it measures. Every prediction is
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
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from poochlab.processes.lifecycle import ManagedProcess, ProcessStartError

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
        self._transport = transport  # type: ignore[assignment]  # typeshed: connection_made gets a BaseTransport; a stream server's is a Transport
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


@functools.lru_cache(maxsize=256)
def _predict_answer(name: str, batch: int) -> bytes:
    from poochlab.experiments.load.tf_wire import predict_response

    return predict_response(name, ECHO_VERSION, "serving_default", "likes", [ECHO_LIKES] * batch)


class _GrpcProtocol(asyncio.Protocol):
    """One HTTP/2 connection of gRPC calls: streams are read until END_STREAM, then answered
    with response headers, the message and ``grpc-status`` trailers (or trailers-only
    UNIMPLEMENTED for another method). Windows: 1 GiB advertised, so clients never wait on us;
    the client's windows are honoured when answering (answers wait for its WINDOW_UPDATE)."""

    def __init__(self, stall: Stall) -> None:
        import hpack

        from poochlab.clients import grpc_wire as wire

        self._wire = wire
        self._stall = stall
        self._decoder = hpack.Decoder()
        self._buffer = bytearray()
        self._preface_seen = False
        self._streams: dict[int, list[Any]] = {}  # id -> [path, body, header block being continued, END_STREAM seen]
        self._send_window = wire.DEFAULT_WINDOW
        self._stream_window_start = wire.DEFAULT_WINDOW
        self._stream_windows: dict[int, int] = {}
        self._max_frame = wire.DEFAULT_MAX_FRAME
        self._pending: list[list[Any]] = []  # [stream, the rest of its answer] waiting for window
        self._received = 0  # DATA bytes not yet given back to the connection window
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wire = self._wire
        self._transport = transport  # type: ignore[assignment]  # typeshed: connection_made gets a BaseTransport; a stream server's is a Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = struct.pack(">HI", wire.SETTINGS_INITIAL_WINDOW_SIZE, wire.OUR_WINDOW)
        transport.write(wire.frame(wire.SETTINGS, 0, 0, settings)  # type: ignore[attr-defined]  # as above
                        + wire.frame(wire.WINDOW_UPDATE, 0, 0,
                                     struct.pack(">I", wire.OUR_WINDOW - wire.DEFAULT_WINDOW)))

    def data_received(self, data: bytes) -> None:
        wire = self._wire
        buffer = self._buffer
        buffer += data
        if not self._preface_seen:
            if len(buffer) < len(wire.PREFACE):
                return
            if bytes(buffer[:len(wire.PREFACE)]) != wire.PREFACE:
                self._close()
                return
            del buffer[:len(wire.PREFACE)]
            self._preface_seen = True
        while (got := wire.take_frame(buffer)) is not None:
            self._frame(*got)

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        wire = self._wire
        if kind == wire.HEADERS or kind == wire.CONTINUATION:
            if kind == wire.HEADERS:
                self._streams[stream] = ["", bytearray(), wire.content(kind, flags, payload),
                                         bool(flags & wire.END_STREAM)]
                self._stream_windows[stream] = self._stream_window_start
            elif stream in self._streams:
                self._streams[stream][2] += payload
            else:
                self._close()  # a CONTINUATION of no header block: a protocol error
                return
            if flags & wire.END_HEADERS:
                state = self._streams[stream]
                try:
                    fields = dict(self._decoder.decode(state[2]))
                except Exception:  # hpack's errors: the connection's header table is lost
                    self._close()
                    return
                state[0], state[2] = fields.get(":path", ""), b""
                if state[3]:
                    self._call_ended(stream)
        elif kind == wire.DATA:
            self._received += len(payload)
            if self._received >= wire.OUR_WINDOW // 2:  # give the connection window back
                self._write(wire.frame(wire.WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received)))
                self._received = 0
            payload = wire.content(kind, flags, payload)
            receiving = self._streams.get(stream)
            if receiving is not None:
                receiving[1] += payload
                if flags & wire.END_STREAM:
                    self._call_ended(stream)
        elif kind == wire.SETTINGS and not flags & wire.ACK:
            for key, value in wire.settings(payload):
                if key == wire.SETTINGS_INITIAL_WINDOW_SIZE:
                    for open_stream in self._stream_windows:
                        self._stream_windows[open_stream] += value - self._stream_window_start
                    self._stream_window_start = value
                elif key == wire.SETTINGS_MAX_FRAME_SIZE:
                    self._max_frame = value
            self._write(wire.frame(wire.SETTINGS, wire.ACK, 0))
            self._flush()  # a larger window may let a waiting answer go
        elif kind == wire.WINDOW_UPDATE:
            increment = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if stream == 0:
                self._send_window += increment
            elif stream in self._stream_windows:
                self._stream_windows[stream] += increment
            self._flush()
        elif kind == wire.PING and not flags & wire.ACK:
            self._write(wire.frame(wire.PING, wire.ACK, 0, payload))
        elif kind == wire.RST_STREAM:
            self._streams.pop(stream, None)
            self._stream_windows.pop(stream, None)
        elif kind == wire.GOAWAY:
            self._close()

    def _call_ended(self, stream: int) -> None:
        from poochlab.experiments.load.tf_wire import request_summary

        path, body, _, _ = self._streams.pop(stream)
        message = bytes(body[5:])
        if path == PREDICT_PATH:
            name, batch = request_summary(message)
            answer = _predict_answer(name, batch)
        elif path == STATUS_PATH:
            answer = _status_answer()
        else:
            self._stream_windows.pop(stream, None)
            self._write(self._wire.frame(self._wire.HEADERS, self._wire.END_HEADERS | self._wire.END_STREAM, stream,
                                         _UNIMPLEMENTED_BLOCK))
            return
        delay = self._stall.delay_s(time.monotonic())
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._answer, stream, answer)
        else:
            self._answer(stream, answer)

    def _answer(self, stream: int, answer: bytes) -> None:
        if stream not in self._stream_windows:
            return  # the client reset the stream (its deadline passed during a stall)
        self._write(self._wire.frame(self._wire.HEADERS, self._wire.END_HEADERS, stream, _RESPONSE_BLOCK))
        self._pending.append([stream, memoryview(b"\x00" + len(answer).to_bytes(4, "big") + answer)])
        self._flush()

    def _flush(self) -> None:
        """Send what the client's windows allow, oldest answer first; an answer that is all out
        gets its trailers. The rest waits for the client's WINDOW_UPDATE or SETTINGS."""
        wire = self._wire
        frames = []
        while self._pending:
            stream, data = self._pending[0]
            if stream not in self._stream_windows:  # reset meanwhile
                self._pending.pop(0)
                continue
            allowed = min(len(data), self._send_window, self._stream_windows[stream])
            for start in range(0, allowed, self._max_frame):
                chunk = bytes(data[start:min(start + self._max_frame, allowed)])
                frames.append(wire.frame(wire.DATA, 0, stream, chunk))
            self._send_window -= allowed
            self._stream_windows[stream] -= allowed
            data = self._pending[0][1] = data[allowed:]
            if data:
                break  # windows full: wait
            self._pending.pop(0)
            self._stream_windows.pop(stream, None)
            frames.append(wire.frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, stream, _TRAILERS_BLOCK))
        if frames:
            self._write(b"".join(frames))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
STATUS_PATH = "/tensorflow.serving.ModelService/GetModelStatus"


def _literal(name: bytes, value: bytes) -> bytes:
    from poochlab.clients.grpc_wire import hpack_string

    return b"\x00" + hpack_string(name) + hpack_string(value)  # literal, new name, never in a table


# ``:status 200`` is static entry 8; the rest are literals the client's table never keeps.
_RESPONSE_BLOCK = b"\x88" + _literal(b"content-type", b"application/grpc")
_TRAILERS_BLOCK = _literal(b"grpc-status", b"0")
_UNIMPLEMENTED_BLOCK = (b"\x88" + _literal(b"content-type", b"application/grpc")
                        + _literal(b"grpc-status", b"12") + _literal(b"grpc-message", b"unknown method"))


@functools.lru_cache(maxsize=1)
def _status_answer() -> bytes:
    from poochlab.experiments.load.tf_wire import model_status_response

    return model_status_response(ECHO_VERSION)


async def serve(rest_port: int, grpc_port: int | None, stall: Stall) -> None:
    """Serve until cancelled; prints {"rest_port", "grpc_port", "pid"} once both listen."""
    loop = asyncio.get_running_loop()
    rest = await loop.create_server(lambda: _RestProtocol(stall), "127.0.0.1", rest_port)
    bound = {"rest_port": rest.sockets[0].getsockname()[1], "grpc_port": None, "pid": os.getpid()}
    grpc_server = None
    if grpc_port is not None:
        grpc_server = await loop.create_server(lambda: _GrpcProtocol(stall), "127.0.0.1", grpc_port)
        bound["grpc_port"] = grpc_server.sockets[0].getsockname()[1]
    print(json.dumps(bound), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    rest.close()
    if grpc_server is not None:
        grpc_server.close()


@dataclass
class EchoServer:
    """A running echo server subprocess; ``stop()`` (or leaving the ``with``) ends it."""

    process: ManagedProcess
    rest_port: int
    grpc_port: int | None
    stall: Stall = field(default_factory=Stall)

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None  # started before an EchoServer is made
        return pid

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        if self.grpc_port is None:
            raise ValueError("this echo server was started without gRPC")
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bound_ports(process: ManagedProcess) -> dict[str, Any] | None:
    """The JSON line the server prints once it listens (None: not yet)."""
    for line in process.output_lines():
        if line.startswith("{"):
            try:
                bound = json.loads(line)
            except ValueError:
                continue
            if isinstance(bound, dict) and "rest_port" in bound:
                return bound
    return None


def start_echo_server(*, grpc: bool = True, stall: Stall | None = None, timeout_s: float = 30.0) -> EchoServer:
    """Start the echo server in a subprocess on free loopback ports and wait until it listens."""
    stall = stall or Stall()
    command = [sys.executable, "-m", "poochlab.experiments.load.echo_server", "--rest-port", "0",
               "--stall-ms", str(stall.ms), "--stall-every-s", str(stall.every_s)]
    if grpc:
        command += ["--grpc-port", "0"]
    process = ManagedProcess(command, name="echo server", capture=True, grace_s=5.0).start()
    try:
        process.wait_ready(lambda: _bound_ports(process) is not None, timeout_s, what="listening")
    except ProcessStartError as error:
        process.stop()
        raise RuntimeError(f"echo server did not start: {error.log_tail.strip()[-500:]}") from None
    bound = _bound_ports(process)
    assert bound is not None
    process.endpoints["rest"] = f"http://127.0.0.1:{bound['rest_port']}"
    if bound["grpc_port"] is not None:
        process.endpoints["grpc"] = f"127.0.0.1:{bound['grpc_port']}"
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
        import uvloop  # the fastest loop for both protocols

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.rest_port, args.grpc_port, stall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
