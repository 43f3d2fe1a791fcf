"""Where the lean clients wait (clients/wire_socket.py): under gevent's monkey patching, a call on
the thread that runs gevent's hub waits in the hub; a call on any other OS thread (the gRPC load
path's sending threads) blocks in the kernel and starts no hub of its own in that thread.

Run in a subprocess, since monkey patching cannot be undone: both lean clients, REST and gRPC,
answer the same from either thread, and a silent server times out on both."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.e2e  # uses the shared lab server

PUPDATE = {"hashtags": "#corgi #adorable", "country": "US", "followers": 120}


def test_the_hub_thread_waits_in_the_hub_and_other_threads_block(lab_server) -> None:
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent, json, socket
        from gevent._hub_local import get_hub_if_exists
        from poochlab.clients import ClientConfig, PredictionError, build_transport

        start_thread, allocate_lock = monkey.get_original("_thread", ["start_new_thread", "allocate_lock"])
        ticker = gevent.spawn(lambda: [gevent.sleep(0.002) for _ in range(100000)])  # the hub runs here
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        configs = {{
            "rest": ClientConfig(rest_url={lab_server.rest_url!r}, library="lean"),
            "grpc": ClientConfig(protocol="grpc", grpc_target={lab_server.grpc_target!r}, library="lean"),
        }}
        quiet = {{
            "rest": ClientConfig(rest_url=f"http://127.0.0.1:{{silent.getsockname()[1]}}", library="lean", timeout_s=0.3),
            "grpc": ClientConfig(protocol="grpc", grpc_target=f"127.0.0.1:{{silent.getsockname()[1]}}", library="lean",
                                 timeout_s=0.3),
        }}

        def connection(transport):
            idle = transport._http._idle if hasattr(transport, "_http") else {{0: transport._idle}}
            return next(c for conns in idle.values() for c in conns)

        def one_side(protocol):
            transport = build_transport(configs[protocol])
            likes = [transport.predict([{PUPDATE!r}]).likes for _ in range(3)]
            waits = connection(transport)._hub_waits is not None
            try:
                build_transport(quiet[protocol]).predict([{PUPDATE!r}])
                kind = None
            except PredictionError as error:
                kind = error.kind
            return {{"likes": likes, "hub_waits": waits, "timeout_kind": kind,
                     "thread_has_hub": get_hub_if_exists() is not None}}

        result = {{}}
        for protocol in ("rest", "grpc"):
            result[protocol + " on the hub's thread"] = one_side(protocol)
            done = allocate_lock()
            done.acquire()
            def in_a_thread(protocol=protocol):
                try:
                    result[protocol + " on another thread"] = one_side(protocol)
                finally:
                    done.release()
            start_thread(in_a_thread, ())
            while not done.acquire(False):
                gevent.sleep(0.01)
        ticker.kill()
        print(json.dumps(result))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for protocol in ("rest", "grpc"):
        hub_side, thread_side = result[f"{protocol} on the hub's thread"], result[f"{protocol} on another thread"]
        assert (hub_side["hub_waits"], hub_side["thread_has_hub"]) == (True, True), protocol
        assert (thread_side["hub_waits"], thread_side["thread_has_hub"]) == (False, False), protocol
        assert thread_side["likes"] == hub_side["likes"], protocol
        assert len(set(map(tuple, hub_side["likes"]))) == 1 and hub_side["likes"][0][0] > 0, protocol
        assert hub_side["timeout_kind"] == thread_side["timeout_kind"] == "timeout", protocol
