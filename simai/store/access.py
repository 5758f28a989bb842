"""What one component may do in the run's store: read and write key prefixes.

A component declares ``store_access={"read": [...], "write": [...]}`` (key prefixes; a
prefix covers the keys and the streams whose names start with it, ``""`` all of them; write
implies read). On the redis store each component then gets a Redis ACL user of its own and a
secret, with exactly those rights (:func:`acl_rules`); only the workflow's own user may do
everything, administration included. A component that declares nothing gets its own user
too, with every key and no administration (it cannot shut the store down, read its
configuration or change users).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_USER = "SIMAI_STORE_USER"
ENV_ACCESS = "SIMAI_STORE_ACCESS"

#: the kinds of Redis keys (see simai.store.redis) under a key or stream's name: values
#: (entry, pointer, chunks), streams (list, chunks, end, bounds, chunk index), the groups'
#: positions, and the notification channels (puts, appends, group progress)
_VALUE_KINDS = ("v", "p", "c")
_STREAM_KINDS = ("s", "d", "e", "b", "x")
_GROUP_KINDS = ("g",)
_CHANNEL_KINDS = ("n", "m", "a")
#: every command the store's client sends, and nothing else
_COMMANDS = (
    "auth", "hello", "ping", "get", "set", "del", "exists", "getdel", "strlen", "scan",
    "multi", "exec", "discard", "eval", "publish", "subscribe", "unsubscribe", "rpush",
    "lindex", "llen", "ltrim", "hget", "hset", "hdel", "hlen", "hmget", "hvals", "hgetall",
    "hincrby",
)  # fmt: skip


@dataclass(frozen=True)
class StoreAccess:
    """Key prefixes a component may read, and may write (and read)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    @classmethod
    def of(cls, value: StoreAccess | Mapping[str, Any] | None) -> StoreAccess | None:
        """``store_access`` as given to ``Workflow.start``, checked; None for nothing
        declared."""
        if value is None or isinstance(value, StoreAccess):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                'store_access must be a dict like {"read": ["samples/"], "write": '
                f'["models/wave/"]}}, not {value!r}'
            )
        unknown = set(value) - {"read", "write"}
        if unknown:
            raise ValueError(
                f"store_access takes 'read' and 'write' key prefixes, not {sorted(unknown)}"
            )
        lists = {}
        for what in ("read", "write"):
            prefixes = value.get(what, ())
            if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes):
                raise TypeError(
                    f"store_access[{what!r}] must be a list of key prefixes, not {prefixes!r}"
                )
            bad = [p for p in prefixes if "\0" in p]
            if bad:
                raise ValueError(f"a key prefix cannot hold NUL: {bad!r}")
            lists[what] = tuple(dict.fromkeys(prefixes))
        return cls(**lists)

    def may_read(self, key: str) -> bool:
        return any(key.startswith(p) for p in (*self.read, *self.write))

    def may_write(self, key: str) -> bool:
        return any(key.startswith(p) for p in self.write)

    def to_json(self) -> str:
        return json.dumps({"read": list(self.read), "write": list(self.write)})

    def describe(self) -> str:
        parts = []
        if self.write:
            parts.append(f"write {list(self.write)}")
        if self.read:
            parts.append(f"read {list(self.read)}")
        return ", ".join(parts) or "nothing"


EVERYTHING = StoreAccess(write=("",))


def _pattern(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def acl_rules(access: StoreAccess, namespace: str, password: str) -> list[str]:
    """The ``ACL SETUSER`` arguments of a user with ``access`` to the store's keys under
    ``namespace`` and ``password``: reset first, so that setting them again replaces
    them."""
    ns = _pattern(namespace)
    rules = ["reset", "on", f">{password}", "resetchannels", "-@all"]
    rules += [f"+{c}" for c in _COMMANDS]
    for prefix in access.write:
        p = _pattern(prefix)
        kinds = _VALUE_KINDS + _STREAM_KINDS + _GROUP_KINDS
        rules += [f"~{ns}:{k}:{p}*" for k in kinds]
        rules += [f"&{ns}:{k}:{p}*" for k in _CHANNEL_KINDS]
    for prefix in access.read:
        p = _pattern(prefix)
        rules += [f"%R~{ns}:{k}:{p}*" for k in _VALUE_KINDS + _STREAM_KINDS]
        rules += [f"~{ns}:{k}:{p}*" for k in _GROUP_KINDS]  # a reader keeps its group's place
        rules += [f"&{ns}:{k}:{p}*" for k in _CHANNEL_KINDS]
    return rules
