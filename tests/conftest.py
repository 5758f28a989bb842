"""Shared fixtures: a real redis-server (two shards) on free loopback ports for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from _native import native_fixture  # noqa: F401 - provides `native`
from _netns import netns_hosts_fixture  # noqa: F401 - provides `netns_hosts`
from _slurm import slurm_cluster_fixture  # noqa: F401 - provides `slurm_cluster`

import simai
from simai.store import ENV_PASSWORD
from simai.store.redis_server import RedisServers
from simai.store.resp import Connection


@pytest.fixture(scope="session")
def redis_servers() -> Iterator[RedisServers]:
    """Two redis-server shards for the whole session, their password in $SIMAI_STORE_PASSWORD.

    The password is exported so that child processes (which find the store through the
    environment) can authenticate; the previous value is restored at the end.
    """
    servers = RedisServers(shards=2, port=0)
    old = os.environ.get(ENV_PASSWORD)
    os.environ[ENV_PASSWORD] = servers.password
    try:
        yield servers
    finally:
        if old is None:
            os.environ.pop(ENV_PASSWORD, None)
        else:
            os.environ[ENV_PASSWORD] = old
        servers.stop()


@pytest.fixture(scope="session")
def redis_url(redis_servers: RedisServers) -> str:
    """URL of the session's two-shard redis store (password in $SIMAI_STORE_PASSWORD)."""
    return redis_servers.url


@pytest.fixture
def redis_store_url(redis_servers: RedisServers) -> str:
    """The session's redis store URL, emptied (FLUSHALL on every shard) for this test."""
    for shard in redis_servers.shards:
        conn = Connection(shard.host, shard.port, redis_servers.password)
        try:
            conn.command("FLUSHALL")
        finally:
            conn.close()
    return redis_servers.url


@pytest.fixture
def local_store_url() -> Iterator[str]:
    """A fresh node-local store, destroyed after the test."""
    url = f"local://t{uuid.uuid4().hex[:10]}"
    yield url
    simai.open_store(url).destroy()


@pytest.fixture
def file_store_url(tmp_path) -> str:
    """A fresh filesystem store under the test's tmp_path."""
    return f"file://{tmp_path}/store"


def _in_dragon() -> bool:
    from simai.store.dragon import in_dragon

    return in_dragon()


@pytest.fixture(scope="session")
def dragon_store() -> Iterator[simai.Store]:
    """A DDict for the whole session (only in a pytest started under `dragon -s`)."""
    from simai.store.dragon import DragonStore

    store = DragonStore.create(total_mem=1 << 30)
    yield store
    store.destroy()


@pytest.fixture
def dragon_store_url(dragon_store) -> str:
    """The session's DDict, emptied for this test."""
    dragon_store.clear()
    return dragon_store.url


STORE_KINDS = ["local", "file", "redis", *(["dragon"] if _in_dragon() else [])]
"""The backends every store test runs on: dragon only in a pytest started under Dragon."""


@pytest.fixture(params=STORE_KINDS)
def store_url(request) -> str:
    """A fresh store of each backend in turn: the contract every backend keeps."""
    return request.getfixturevalue(f"{request.param}_store_url")


@pytest.fixture
def ex(tmp_path):
    """A LocalExecutor logging under the test's tmp_path; no process outlives the test."""
    from _procs import children, no_new_children

    from simai.launch import LocalExecutor

    before = children()
    executor = LocalExecutor(log_dir=tmp_path / "logs")
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    assert no_new_children(before)
