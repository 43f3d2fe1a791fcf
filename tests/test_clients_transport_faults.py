"""Every failure surfaces with its kind, for every REST library and for gRPC.

The faults come from real sockets: a closed port (connection refused), a listener that never
answers (timeout), and a scripted HTTP server for answers the lab server does not give on
demand (503, garbage, a kept-alive connection closed while idle).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from poochlab.clients import ClientConfig, PredictionError, build_transport

REST_LIBRARIES = ("requests", "urllib3", "http.client", "geventhttpclient", "httptools")
PUPDATE = {"hashtags": "#corgi #adorable", "country": "US", "followers": 10}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def silent_listener() -> Iterator[int]:
    """Accepts TCP connections (kernel backlog) and never reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


class ScriptedServer:
    """Answers each POST with the next scripted (status, body, close_after) response."""

    def __init__(self) -> None:
        self.script: list[tuple[int, bytes, bool]] = []
        self.requests: list[tuple[str, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append((self.path, body))
                status, answer, close = server.script.pop(0) if server.script else (200, b'{"predictions": [1.5]}', False)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                self.wfile.flush()
                if close:  # close without saying so, as a server dropping an idle connection does
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.stop()


def rest(url: str, library: str, **kw: object) -> ClientConfig:
    return ClientConfig(protocol="rest", library=library, rest_url=url, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_rest_closed_port_is_a_connection_error(library: str) -> None:
    predictor = build_transport(rest(f"http://127.0.0.1:{closed_port()}", library, timeout_s=2.0))
    with pytest.raises(PredictionError) as caught:
        predictor.predict([PUPDATE])
    assert caught.value.kind == "connection"
    assert predictor.stats()["model_errors_by_kind"] == {"connection": 1}
    predictor.close()


@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_rest_silent_server_is_a_timeout(library: str, silent_listener: int) -> None:
    predictor = build_transport(rest(f"http://127.0.0.1:{silent_listener}", library, timeout_s=0.2, retries=3))
    with pytest.raises(PredictionError) as caught:
        predictor.predict([PUPDATE])
    assert caught.value.kind == "timeout"
    assert predictor.stats()["model_retries"] == 0  # timeouts are never retried
    predictor.close()


@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_rest_status_and_garbage(library: str, scripted: ScriptedServer) -> None:
    scripted.script = [(503, b'{"error": "batch queue is full"}', False), (200, b"<html>oops</html>", False),
                       (200, b'{"predictions": [1.0, 2.0]}', False)]
    predictor = build_transport(rest(scripted.url, library))
    kinds = []
    for _ in range(3):
        with pytest.raises(PredictionError) as caught:
            predictor.predict([PUPDATE])
        kinds.append((caught.value.kind, caught.value.message))
    assert kinds[0] == ("http_503", "batch queue is full")
    assert [kind for kind, _ in kinds[1:]] == ["bad_response", "bad_response"]
    predictor.close()


@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_rest_retries_only_unavailable_answers(library: str, scripted: ScriptedServer) -> None:
    scripted.script = [(503, b'{"error": "busy"}', False), (503, b'{"error": "busy"}', False)]
    predictor = build_transport(rest(scripted.url, library, retries=2))
    assert predictor.predict([PUPDATE]).likes == [1.5]
    assert len(scripted.requests) == 3
    assert predictor.stats()["model_retries"] == 2
    scripted.script = [(500, b'{"error": "boom"}', False)]
    with pytest.raises(PredictionError) as caught:
        predictor.predict([PUPDATE])
    assert caught.value.kind == "http_500"
    assert len(scripted.requests) == 4  # a 500 is not retried
    predictor.close()


@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_rest_survives_a_kept_alive_connection_closed_by_the_server(library: str, scripted: ScriptedServer) -> None:
    scripted.script = [(200, b'{"predictions": [3.0]}', True), (200, b'{"predictions": [4.0]}', False)]
    predictor = build_transport(rest(scripted.url, library))  # retries=0: no policy retry may hide this
    assert predictor.predict([PUPDATE]).likes == [3.0]
    assert predictor.predict([PUPDATE]).likes == [4.0]
    assert predictor.stats()["model_errors"] == 0
    predictor.close()


def test_rest_request_addresses_version_label_and_format(scripted: ScriptedServer) -> None:
    import json

    scripted.script = [(200, b'{"predictions": [1.0]}', False), (200, b'{"outputs": {"likes": [2.0]}}', False)]
    by_label = build_transport(rest(scripted.url, "lean", version_label="canary"))
    by_label.predict([PUPDATE])
    columnar = build_transport(rest(scripted.url, "lean", version=7, request_format="columnar"))
    assert columnar.predict([PUPDATE]).likes == [2.0]
    (path_label, body_label), (path_version, body_columnar) = scripted.requests
    assert path_label == "/v1/models/pooch_predictor/labels/canary:predict"
    assert json.loads(body_label)["instances"] == [PUPDATE]
    assert path_version == "/v1/models/pooch_predictor/versions/7:predict"
    assert json.loads(body_columnar)["inputs"] == {key: [value] for key, value in PUPDATE.items()}
    by_label.close()
    columnar.close()


def test_grpc_closed_port_is_a_connection_error() -> None:
    predictor = build_transport(ClientConfig(protocol="grpc", grpc_target=f"127.0.0.1:{closed_port()}", timeout_s=2.0))
    with pytest.raises(PredictionError) as caught:
        predictor.predict([PUPDATE])
    assert caught.value.kind == "connection"
    predictor.close()


def test_grpc_silent_server_is_a_timeout(silent_listener: int) -> None:
    predictor = build_transport(ClientConfig(protocol="grpc", grpc_target=f"127.0.0.1:{silent_listener}",
                                             timeout_s=0.3))
    with pytest.raises(PredictionError) as caught:
        predictor.predict([PUPDATE])
    assert caught.value.kind == "timeout"
    predictor.close()


@pytest.mark.parametrize("library", [*REST_LIBRARIES, "grpcio"])
def test_invalid_pupdate_fails_before_any_network_call(library: str) -> None:
    protocol = "grpc" if library == "grpcio" else "rest"
    config = ClientConfig(protocol=protocol, library=library, rest_url=f"http://127.0.0.1:{closed_port()}",
                          grpc_target=f"127.0.0.1:{closed_port()}")
    predictor = build_transport(config)
    with pytest.raises(ValueError, match=r"pupdates\[1\]: .*'followers'"):
        predictor.predict([PUPDATE, {"hashtags": "#pug", "country": "FR"}])
    with pytest.raises(ValueError, match="'country' must be a string"):
        predictor.predict([{**PUPDATE, "country": 7}])
    assert predictor.stats()["model_requests"] == 0
    predictor.close()


@pytest.mark.parametrize("library", REST_LIBRARIES)
def test_a_call_interrupted_mid_answer_never_hands_its_answer_to_the_next_call(library: str) -> None:
    """Locust stops users by killing their greenlets, often inside a recv: the killed call's
    late answer must not be read by the next call on that connection as its own."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent, itertools, json, threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from poochlab.clients import ClientConfig, build_transport

        numbers = itertools.count()
        # Events order the fault: the first request arrives, its call is killed, then its answer is sent.
        first_received, call_killed, first_answered = threading.Event(), threading.Event(), threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                number = next(numbers)
                self.rfile.read(int(self.headers["Content-Length"]))
                if number == 0:
                    first_received.set()
                    assert call_killed.wait(60)  # the first answer comes late
                payload = json.dumps({{"predictions": [float(number)]}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                finally:  # sent, or refused by a client that closed the killed call's connection
                    if number == 0:
                        first_answered.set()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        gevent.spawn(server.serve_forever)
        url = f"http://127.0.0.1:{{server.server_address[1]}}"
        predictor = build_transport(ClientConfig(rest_url=url, library={library!r}, timeout_s=5.0))
        row = {PUPDATE!r}
        interrupted = gevent.spawn(predictor.predict, [row])
        assert first_received.wait(60)
        interrupted.kill()  # GreenletExit inside the wait for the answer
        call_killed.set()
        assert first_answered.wait(60)  # the late answer is on its way back (loopback: already there)
        print(json.dumps([predictor.predict([row]).likes[0] for _ in range(3)]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[1.0, 2.0, 3.0]"


def test_a_rest_url_without_a_host_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"rest_url must start with http:// or https:// and name a host \(got 'http://'\)"):
        ClientConfig(rest_url="http://")
    with pytest.raises(ValueError, match="rest_url"):
        ClientConfig(rest_url="https://:8501/")


def test_the_lean_client_under_gevent_waits_in_the_hub_for_split_answers_timeouts_and_closes() -> None:
    """Under Locust (gevent's monkey patching) the lean client sends on the real socket and waits
    in gevent's hub: an answer split across writes is put together, a silent server is a
    timeout, a connection the server closed is reopened, and the hub keeps running other
    greenlets while a call waits."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent, json, socket
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from poochlab.clients import ClientConfig, PredictionError, build_transport

        connections = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                connections.append(self.client_address)
                super().setup()

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                payload = b'{{"predictions": [7.25]}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("server-timing", "queue;dur=0.5, compute;dur=1.25")  # lower case
                self.end_headers()
                self.wfile.flush()
                gevent.sleep(0.05)  # the body comes in a later write
                self.wfile.write(payload)
                self.wfile.flush()
                self.close_connection = self.path.endswith("close:predict")

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        gevent.spawn(server.serve_forever)
        url = f"http://127.0.0.1:{{server.server_address[1]}}"
        row = {PUPDATE!r}
        ticks = []
        ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.005)) for _ in range(1000)])
        split = build_transport(ClientConfig(rest_url=url, library="lean", timeout_s=5.0))
        answers = [split.predict([row]) for _ in range(2)]
        closing = build_transport(ClientConfig(rest_url=url, library="lean", model_name="close", timeout_s=5.0))
        after_close = [closing.predict([row]).likes[0] for _ in range(2)]
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        quiet = build_transport(ClientConfig(rest_url=f"http://127.0.0.1:{{silent.getsockname()[1]}}", library="lean",
                                             timeout_s=0.3))
        try:
            quiet.predict([row])
            kind = None
        except PredictionError as error:
            kind = error.kind
        ticker.kill()
        print(json.dumps({{"likes": [a.likes[0] for a in answers], "queue_us": answers[0].timing.server_queue_us,
                          "compute_us": answers[0].timing.server_compute_us, "after_close": after_close,
                          "connections": len(connections), "timeout_kind": kind, "ticks": len(ticks)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["likes"] == [7.25, 7.25]
    assert (result["queue_us"], result["compute_us"]) == (500.0, 1250.0)
    # One kept-alive connection for both split answers, two for the server that closes after each.
    assert result["after_close"] == [7.25, 7.25] and result["connections"] == 3
    assert result["timeout_kind"] == "timeout"
    assert result["ticks"] > 0  # other greenlets ran while calls waited
