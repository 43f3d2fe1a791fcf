"""The echo server's gRPC side (HTTP/2 on asyncio) answers real gRPC clients as a server must."""

from __future__ import annotations

from typing import Iterator

import grpc
import pytest

from poochlab.clients import ClientConfig, build_transport
from poochlab.experiments.load.echo_server import ECHO_LIKES, ECHO_VERSION, EchoServer, start_echo_server

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

ROWS = [{"hashtags": "#corgi", "country": "US", "followers": 12}] * 3


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with start_echo_server(grpc=True) as server:
        yield server


@pytest.mark.parametrize("library", ["grpcio", "lean"])
def test_predict_and_status_answer_grpcio_and_the_lean_client(echo: EchoServer, library: str) -> None:
    predictor = build_transport(ClientConfig(protocol="grpc", grpc_target=echo.grpc_target, library=library))
    assert predictor.predict_rows(ROWS).likes == [ECHO_LIKES] * 3
    assert predictor.model_versions() == [ECHO_VERSION]
    # ~1 MB: many DATA frames, past HTTP/2's 64 KiB initial windows in both directions' bookkeeping
    many = [{"hashtags": "#dog #walk" * 20, "country": "US", "followers": i} for i in range(5000)]
    assert len(predictor.encode_request(many)) > 1_000_000
    assert predictor.predict_rows(many).likes == [ECHO_LIKES] * 5000
    predictor.close()


def test_an_unknown_method_is_unimplemented(echo: EchoServer) -> None:
    with grpc.insecure_channel(echo.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/no.Such/Method")(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
