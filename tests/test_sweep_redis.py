"""Where a sweep's cache trials find Redis: the spec, $POOCHLAB_REDIS_URL, or the lab's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from poochlab.experiments.sweep.redis_service import ExistingRedis, RedisServer, sweep_redis
from poochlab.experiments.sweep.spec import SpecError, load_spec
from poochlab.processes.servers.launcher import free_port

SPEC = """
[sweep]
profile = "quick"
{extra}
[factors]
cache = ["off", "on"]
users = [1]
"""


def test_the_spec_names_the_redis_before_the_environment(tmp_path: Path) -> None:
    env = {"POOCHLAB_REDIS_URL": "redis://from-env:6379/2"}
    chosen = sweep_redis("redis://redis:6379/0", tmp_path, env)
    assert isinstance(chosen, ExistingRedis) and chosen.url == "redis://redis:6379/0"
    chosen = sweep_redis(None, tmp_path, env)
    assert isinstance(chosen, ExistingRedis) and chosen.url == "redis://from-env:6379/2"
    assert isinstance(sweep_redis(None, tmp_path, {}), RedisServer)


def test_spec_key_redis_url_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "cache.toml"
    path.write_text(SPEC.format(extra='redis_url = "redis://redis:6379/0"'))
    assert load_spec(path).redis_url == "redis://redis:6379/0"
    path.write_text(SPEC.format(extra='redis_url = "redis:6379"'))
    with pytest.raises(SpecError, match=r"sweep\.redis_url"):
        load_spec(path)


def test_an_existing_redis_is_used_and_only_its_database_emptied(redis_server) -> None:
    port = redis_server.port
    existing = ExistingRedis(f"redis://127.0.0.1:{port}/3", "test")
    existing.start()
    assert existing.running and existing.pid is None
    db3, db4 = (redis.Redis(port=port, db=n) for n in (3, 4))
    try:
        db3.set("cached", b"1")
        db4.set("someone-elses", b"1")
        existing.flush()
        assert db3.dbsize() == 0
        assert db4.get("someone-elses") == b"1"
        existing.stop()  # not the lab's: still there
        assert db4.ping()
    finally:
        db4.delete("someone-elses")
        db3.close()
        db4.close()


def test_a_named_redis_that_does_not_answer_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(RuntimeError) as error:
        ExistingRedis(url, "$POOCHLAB_REDIS_URL").start(timeout_s=0.0)
    assert url in str(error.value) and "$POOCHLAB_REDIS_URL" in str(error.value)
