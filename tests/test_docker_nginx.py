"""The balancer's nginx configuration, checked by Debian's nginx (`nginx -t`).

docker/nginx/nginx.conf targets the pinned nginx image (>= 1.27.3: upstream names re-resolved
through Docker's DNS with `resolve`); Debian's nginx is older and cannot resolve the service
name `tfserving` anyway. So the test renders the very same configuration with the two things
Debian's nginx cannot check swapped out: the backends become 127.0.0.1 and the syntax that of
the installed version. Everything else (upstream keep-alive, gRPC over HTTP/2, paths, limits)
is what `nginx -t` validates.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from poochlab.processes.servers.balancer import find_nginx, nginx_version
from poochlab.processes.servers.nginx_config import (
    DOCKER_DNS,
    Backend,
    BalancerConfig,
    compose_balancer_config,
    render_nginx_config,
)

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docker" / "nginx" / "nginx.conf"


def _nginx_test(config: BalancerConfig, prefix: Path) -> subprocess.CompletedProcess:
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_config(config))
    return subprocess.run(
        [find_nginx(), "-t", "-q", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "startup.log")],
        capture_output=True, text=True, timeout=30,
    )


def _for_local_nginx(config: BalancerConfig, prefix: Path) -> BalancerConfig:
    return dataclasses.replace(
        config,
        backends=tuple(Backend("127.0.0.1", b.rest_port, b.grpc_port) for b in config.backends),
        resolver=None,
        nginx_version=nginx_version(find_nginx()),
        runtime_dir=str(prefix),
        error_log=str(prefix / "error.log"),
    )


def test_committed_compose_config_is_the_rendered_one() -> None:
    # Regenerate with: python -m poochlab.processes.servers.nginx_config --compose > docker/nginx/nginx.conf
    assert COMMITTED.read_text() == render_nginx_config(compose_balancer_config())


def test_compose_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    result = _nginx_test(_for_local_nginx(compose_balancer_config(), tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_check_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = dataclasses.replace(_for_local_nginx(compose_balancer_config(), tmp_path), keepalive=-1)
    result = _nginx_test(broken, tmp_path)
    assert result.returncode != 0
    assert "keepalive" in result.stderr


def test_compose_config_re_resolves_the_scaled_service_through_docker_dns() -> None:
    text = COMMITTED.read_text()
    assert f"resolver {DOCKER_DNS} " in text
    servers = [line.split() for line in text.splitlines() if line.strip().startswith("server ") and "{" not in line]
    assert [s[1:] for s in servers] == [["tfserving:8501", "resolve;"], ["tfserving:8500", "resolve;"]]


def test_rest_upstream_keeps_http11_connections_and_grpc_uses_http2() -> None:
    text = render_nginx_config(compose_balancer_config())
    rest, grpc = text.split("upstream tfserving_rest")[1], text.split("upstream tfserving_grpc")[1]
    # More idle upstream connections per worker than the 256 users of the README's examples.
    assert "keepalive 1024;" in rest.split("}")[0] and "keepalive 1024;" in grpc.split("}")[0]
    assert "proxy_http_version 1.1;" in text and 'proxy_set_header Connection "";' in text
    assert "grpc_pass grpc://tfserving_grpc;" in text and "http2 on;" in text


def test_resolve_is_refused_for_an_nginx_without_it() -> None:
    with pytest.raises(ValueError, match="nginx >= 1.27.3"):
        dataclasses.replace(compose_balancer_config(), nginx_version=(1, 22, 1))


def test_old_nginx_gets_the_listen_http2_syntax(tmp_path: Path) -> None:
    config = dataclasses.replace(_for_local_nginx(compose_balancer_config(), tmp_path), nginx_version=(1, 22, 1))
    assert "listen 8500 http2;" in render_nginx_config(config)
