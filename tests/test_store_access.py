"""Per-component store users on the redis store: each component's own ACL user and secret,
limited to the key prefixes it declares, enforced by real redis-server shards.

Components are real processes started by a workflow; each tries what it may and may not do
and reports what happened. Proven: reads and writes inside the declared prefixes work (values,
streams with consumer groups, waits); a write or read outside them is a PermissionError that
names the key and the component, and leaves the data intact; a component that declares
nothing has every key but no administration; one component's secret does not open another's
user; the users are gone when the run ends.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import simai
from simai.store import ENV_PASSWORD
from simai.store.access import ENV_USER, StoreAccess, acl_rules
from simai.store.redis import RedisStore
from simai.store.resp import Connection, ReplyError

pytestmark = pytest.mark.timeout(180)


def _attempt(store, what: str, fn) -> str:
    try:
        fn()
        return "ok"
    except PermissionError as e:
        return f"PermissionError: {e}"
    except ReplyError as e:
        return f"ReplyError: {e}"


def trainer() -> None:
    """A component that may read samples/ and write models/wave/."""
    with simai.open_store() as s:
        seen = [v.tolist() for v in s.stream("samples/stream", group="trainer", timeout=30)]
        outcome = {
            "user": os.environ[ENV_USER],
            "seen": seen,
            "read": _attempt(s, "read", lambda: s.get("samples/0")),
            "write model": _attempt(s, "write", lambda: s.put("models/wave/1", np.ones(2))),
            "write sample": _attempt(s, "write", lambda: s.put("samples/0", b"overwritten")),
            "read other": _attempt(s, "read", lambda: s.get("secrets/key")),
            "delete": _attempt(s, "delete", lambda: s.delete("samples/0")),
            "append": _attempt(s, "append", lambda: s.append("samples/stream2", b"x")),
            "wait other": _attempt(s, "wait", lambda: s.wait("secrets/late", timeout=1)),
            "password": os.environ[ENV_PASSWORD],
        }
        s.put("models/wave/report", outcome)


def free_component() -> None:
    """A component that declares nothing: every key, no administration."""
    with simai.open_store() as s:
        s.put("free/x", b"mine")
        conn = Connection(*s._addrs[0], os.environ[ENV_PASSWORD], os.environ[ENV_USER])
        outcome = {
            "user": os.environ[ENV_USER],
            "wrote": s.get("free/x").decode(),
            "acl list": _attempt(s, "admin", lambda: conn.command("ACL", "LIST")),
            "shutdown": _attempt(s, "admin", lambda: conn.command("SHUTDOWN", "NOSAVE")),
            "flushall": _attempt(s, "admin", lambda: conn.command("FLUSHALL")),
            "password": os.environ[ENV_PASSWORD],
        }
        conn.close()
        s.put("free/report", outcome)


def _acl_users(servers) -> list[str]:
    conn = Connection(servers.shards[0].host, servers.shards[0].port, servers.password)
    try:
        return [u.decode() if isinstance(u, bytes) else u for u in conn.command("ACL", "USERS")]
    finally:
        conn.close()


def test_components_get_users_limited_to_what_they_declare(redis_servers, tmp_path) -> None:
    url = redis_servers.url
    with simai.Workflow("acl", store=url, run_dir=tmp_path / "run") as wf:
        with wf.store() as s:
            s.put("samples/0", np.arange(3))
            s.put("secrets/key", b"hidden")
            for i in range(3):
                s.append("samples/stream", np.full(2, i))
            s.close_stream("samples/stream")
        access = {"read": ["samples/"], "write": ["models/wave/"]}
        t = wf.start(trainer, name="trainer", store_access=access)
        f = wf.start(free_component, name="free")
        t.wait(timeout=120)
        f.wait(timeout=120)
        users = _acl_users(redis_servers)
        with wf.store() as s:
            report = s.get("models/wave/report")
            free = s.get("free/report")
            assert s.get("samples/0").tolist() == [0, 1, 2]  # refused writes left it intact
            assert s.get("secrets/key") == b"hidden"
            assert not s.exists("samples/stream2")
            thief = {"trainer": report, "free": free}
    assert report["seen"] == [[0, 0], [1, 1], [2, 2]]
    assert report["read"] == "ok" and report["write model"] == "ok"
    for what, key in [("write sample", "samples/0"), ("read other", "secrets/key"),
                      ("delete", "samples/0"), ("append", "samples/stream2"),
                      ("wait other", "secrets/late")]:  # fmt: skip
        assert report[what].startswith("PermissionError: component 'trainer'"), report[what]
        assert repr(key) in report[what], report[what]
        assert "write ['models/wave/'], read ['samples/']" in report[what]
    assert free["wrote"] == "mine"
    for what in ("acl list", "shutdown", "flushall"):
        assert free[what].startswith("ReplyError: NOPERM"), free[what]
    assert {report["user"], free["user"]} <= set(users) and report["user"] != free["user"]
    assert report["password"] != free["password"] != redis_servers.password
    assert not [u for u in _acl_users(redis_servers) if u.startswith("simai-")]  # removed

    # one component's secret does not open another's user (the users are gone now: make
    # them again as they were, to try)
    admin = RedisStore(url, password=redis_servers.password)
    try:
        admin.set_user("simai-a", thief["trainer"]["password"], StoreAccess(read=("samples/",)))
        admin.set_user("simai-b", thief["free"]["password"], StoreAccess(write=("",)))
        with pytest.raises(simai.store.AuthenticationError, match="WRONGPASS"):
            RedisStore(url, password=thief["trainer"]["password"], username="simai-b")
        RedisStore(url, password=thief["free"]["password"], username="simai-b").close()
    finally:
        admin.delete_user("simai-a")
        admin.delete_user("simai-b")
        admin.close()


def test_store_access_needs_the_redis_store_and_a_clear_shape(tmp_path) -> None:
    with simai.Workflow("local-acl", run_dir=tmp_path / "run") as wf:
        with pytest.raises(ValueError, match="store_access needs the redis store"):
            wf.start(trainer, store_access={"read": ["a/"]})
        with pytest.raises(ValueError, match="'read' and 'write'"):
            wf.start(trainer, store_access={"reed": ["a/"]})
        with pytest.raises(TypeError, match="list of key prefixes"):
            wf.start(trainer, store_access={"read": "a/"})
        assert wf.components == {}


def test_prefixes_are_literal_not_patterns(redis_servers) -> None:
    rules = acl_rules(StoreAccess(write=("a*[b]/",)), "simai", "pw-12345678")
    assert r"~simai:v:a\*\[b\]/*" in rules
    admin = RedisStore(redis_servers.url, password=redis_servers.password)
    try:
        admin.set_user("simai-glob", "pw-glob-12345678", StoreAccess(write=("a*/",)))
        s = RedisStore(redis_servers.url, password="pw-glob-12345678", username="simai-glob")
        s.put("a*/x", b"ok")
        with pytest.raises(PermissionError, match="'aZ/x'"):
            s.put("aZ/x", b"no")
        s.close()
    finally:
        admin.delete("a*/x")
        admin.delete_user("simai-glob")
        admin.close()
    assert json.loads(StoreAccess(read=("r/",)).to_json()) == {"read": ["r/"], "write": []}
