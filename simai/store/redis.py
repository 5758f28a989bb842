"""The `redis://` store: one or several redis-server shards with client-side key hashing.

    redis://host:port[,host:port,...]
    rediss://host:port[,host:port,...]     the same over TLS (see simai.store.tls)

Each key, and each stream as a whole, lives on shard `crc32(name) % number_of_shards`.
The password comes from the `password=` option, else $SIMAI_STORE_PASSWORD, else the URL
(`redis://:pw@host:port`, accepted but discouraged: URLs end up in logs and `ps`).

Layout inside Redis (NAMESPACE defaults to "simai"; user keys cannot contain NUL):

    NS:v:KEY              the entry (header + payload), or a chunk pointer when it is large
    NS:p:KEY              copy of the current chunk pointer, so an overwrite finds old chunks
    NS:c:KEY\\0VER:I       chunk I of version VER of a large value
    NS:n:KEY              pub/sub channel announcing each put of KEY (for `wait`)
    NS:s:NAME             a stream: a Redis list of entries (or chunk pointers)
    NS:d:NAME\\0VER:I      chunk I of a large stream entry
    NS:e:NAME             the stream's length when it was closed (later appends are refused)
    NS:m:NAME             pub/sub channel announcing each append to / close of NAME
    NS:b:NAME             a bounded stream's hash: maxlen, policy, start (the index of the
                          list's first element: the count trimmed), dropped
    NS:g:NAME             hash of consumer group -> position (the index it reads next)
    NS:x:NAME             hash of index -> chunk pointer, for a bounded stream's chunked entries
    NS:a:NAME             pub/sub channel announcing group progress and closing (for producers
                          waiting on a full "block" stream)

A large value is written as chunks under a fresh version, then the small pointer is swapped
in atomically with its copy in NS:p:KEY (MULTI/EXEC), then the old version's chunks are
deleted; a reader that finds a chunk gone retries from the pointer, so it never sees half a
value. Whoever takes the pointer out of NS:p:KEY (an overwrite, a delete, or a small put that
replaced a chunked value) deletes its chunks, so none are left behind.

An unbounded stream's index is its list position. A bounded stream is appended to by a Lua
script that checks for space, pushes and trims (LTRIM) as one step and adds the trimmed count
to `start`, so indexes stay stable: index = start + list position. Its entries over 64 KiB go
through chunk keys, so the script only ever handles small strings.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from simai.checks import check_int, check_seconds
from simai.store import codec
from simai.store.access import ENV_ACCESS, ENV_USER, StoreAccess, acl_rules
from simai.store.base import Store, StreamEnded, StreamTrimmed
from simai.store.resp import AuthenticationError, Connection, ReplyError
from simai.store.tls import ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, TLSFiles

__all__ = ["AuthenticationError", "RedisStore", "ReplyError", "parse_url"]

DEFAULT_PORT = 6379
DEFAULT_CHUNK = 256 * 1024 * 1024
MAX_BULK = 512 * 1024 * 1024
PTR_MAGIC = b"SMCH"
_PTR = struct.Struct("<4sQQ16s")
_RETRIES = 100
_INLINE_MAX = 64 * 1024
_UNKNOWN: Any = object()

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _alloc(n: int) -> memoryview:
    return memoryview(np.empty(n, dtype=np.uint8))


def parse_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """Split a redis:// or rediss:// (TLS) URL into ([(host, port), ...], username,
    password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// URL: {_redact(url)!r}")
    netloc, _, path = rest.partition("/")
    if path.strip("/") or "?" in netloc or "#" in netloc:
        raise ValueError(
            f"redis store URL {_redact(url)!r} has a path or query; the form is "
            "redis://host:port[,host:port,...]"
        )
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, has_pw, pw = userinfo.partition(":")
        username = user or None
        password = pw if has_pw else None
    addrs: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"redis store URL {_redact(url)!r} has an empty host")
        if part.startswith("["):
            host, _, tail = part[1:].partition("]")
            port_s = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_s = part.partition(":")
        try:
            port = int(port_s) if port_s else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"bad port {port_s!r} in redis store URL {_redact(url)!r}") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"bad host:port {part!r} in redis store URL {_redact(url)!r}")
        addrs.append((host, port))
    return addrs, username, password


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return f"{scheme}{sep}{netloc}{slash}{path}"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _glob_escape(s: bytes) -> bytes:
    for c in (b"\\", b"*", b"?", b"[", b"]"):
        s = s.replace(c, b"\\" + c)
    return s


def _chunks(header: bytes, payload: memoryview, size: int) -> Iterator[tuple[memoryview, ...]]:
    """The entry header+payload cut into `size`-byte pieces, each a tuple of views (no copy)."""
    parts = [memoryview(header), payload]
    total = len(header) + payload.nbytes
    start = 0
    while start < total:
        end = min(start + size, total)
        piece: list[memoryview] = []
        off = 0
        for p in parts:
            lo, hi = max(start, off), min(end, off + p.nbytes)
            if lo < hi:
                piece.append(p[lo - off : hi - off])
            off += p.nbytes
        yield tuple(piece)
        start = end


def _is_denied(e: ReplyError) -> bool:
    text = str(e)
    return text.startswith("NOPERM") or "no permissions" in text


def _guarded(op: str) -> Callable[[F], F]:
    """A backend method whose first argument is a key or stream name: a refusal by the
    servers' access rules becomes a PermissionError naming the key, the operation and who
    was refused."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def guarded(self: RedisStore, name: Any, *args: Any, **kw: Any) -> Any:
            try:
                return method(self, name, *args, **kw)
            except ReplyError as e:
                if not _is_denied(e):
                    raise
                if isinstance(name, list):  # _write_many's entries, _read_many's keys
                    keys = [k[0] if isinstance(k, tuple) else k for k in name]
                    raise PermissionError(self._denied(op, keys)) from None
                raise PermissionError(self._denied(op, name)) from None

        return guarded  # type: ignore[return-value]

    return wrap


class RedisStore(Store):
    """Store on redis-server shards; see the module docstring for the layout.

    Parameters
    ----------
    url : str
        ``redis://host:port[,host:port...]``, one address per shard; ``rediss://`` for TLS.
    password : str or None
        The servers' password (default: $SIMAI_STORE_PASSWORD).
    username : str or None
        An ACL user name (default: the one in the URL, else $SIMAI_STORE_USER, which a
        workflow sets for each component: see :mod:`simai.store.access`).
    chunk_size : int
        Most bytes sent in one Redis value (Redis's limit is 512 MB); larger entries are split.
    timeout : float or None
        Seconds each socket operation may take, so a hung server raises ConnectionError
        instead of blocking forever; `wait` and `stream` use their own timeouts.
    connect_timeout : float
        Seconds a connection may take.
    namespace : str
        Prefix of every Redis key, so several stores can share servers.
    allow_pickle : bool
        Store and return arbitrary Python objects by pickling them (unpickling runs code).
    tls : TLSFiles or None
        With ``rediss://``: the CA that signed the servers' certificates, and this client's
        certificate and key (default: the files $SIMAI_STORE_TLS_CA, $SIMAI_STORE_TLS_CERT
        and $SIMAI_STORE_TLS_KEY name, as ``simai store start --tls`` and a workflow's TLS
        store hand them to their processes).
    """

    def __init__(
        self,
        url: str,
        password: str | None = None,
        username: str | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        timeout: float | None = 30.0,
        connect_timeout: float = 5.0,
        namespace: str = "simai",
        allow_pickle: bool = False,
        tls: TLSFiles | None = None,
    ) -> None:
        super().__init__(allow_pickle=allow_pickle)
        addrs, url_user, url_password = parse_url(url)
        scheme = "rediss" if url.partition("://")[0].lower() == "rediss" else "redis"
        self._tls = None
        self.tls: TLSFiles | None = None
        if scheme == "rediss":
            files = self.tls = tls or TLSFiles.from_env()
            if files is None:
                raise ValueError(
                    f"{scheme}:// needs the run's TLS files: set {ENV_TLS_CA}, {ENV_TLS_CERT} "
                    f"and {ENV_TLS_KEY} (`simai store start --tls` prints them) or pass tls="
                )
            self._tls = files.client_context()
        elif tls is not None:
            raise ValueError("tls= is for rediss:// URLs; this one is redis:// (no TLS)")
        check_int("chunk_size", chunk_size, 1, maximum=MAX_BULK)
        if not namespace or not isinstance(namespace, str) or "\0" in namespace:
            raise ValueError(f"namespace must be a non-empty str without NUL, not {namespace!r}")
        if url_password is not None:
            warnings.warn(
                "a password inside the redis:// URL is visible wherever the URL is shown; "
                "pass password= or set SIMAI_STORE_PASSWORD instead",
                UserWarning,
                stacklevel=3,
            )
        from simai.store import ENV_PASSWORD

        self._password = password or os.environ.get(ENV_PASSWORD) or url_password
        self._username = username or url_user or os.environ.get(ENV_USER) or None
        self._addrs = addrs
        user = f"{self._username}@" if self._username else ""
        self.url = f"{scheme}://" + user + ",".join(_address(h, p) for h, p in addrs)
        self.chunk_size = chunk_size
        self.timeout = check_seconds("timeout", timeout, positive=True, optional=True)
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout, positive=True)
        self._ns = namespace.encode() + b":"
        self._bounded: dict[str, tuple[int, str] | None] = {}
        self._starts: dict[str, int] = {}
        self._plain: set[str] = set()
        self._reset()
        try:
            for i in range(len(addrs)):
                with self._shard(i):
                    pass
        except BaseException:
            self.close()
            raise

    @property
    def shards(self) -> int:
        return len(self._addrs)

    def shard_of(self, name: str) -> int:
        """Index of the shard that holds key (or stream) `name`."""
        return zlib.crc32(name.encode()) % len(self._addrs)

    # --- connections ---------------------------------------------------------------------

    def _reset(self) -> None:
        n = len(self._addrs)
        self._pid = os.getpid()
        self._conns: list[Connection | None] = [None] * n
        self._locks = [threading.Lock() for _ in range(n)]
        self._subs: list[list[Connection]] = [[] for _ in range(n)]
        self._subs_lock = threading.Lock()

    def _connect(self, i: int, timeout: float | None) -> Connection:
        host, port = self._addrs[i]
        try:
            return Connection(
                host,
                port,
                self._password,
                self._username,
                name=f"{self.url.partition(':')[0]}://{_address(host, port)}",
                timeout=timeout,
                connect_timeout=self.connect_timeout,
                tls=self._tls,
            )
        except AuthenticationError as e:
            hint = "" if self._password else " (no password given: set SIMAI_STORE_PASSWORD)"
            raise AuthenticationError(f"{self._where(i)}: {e}{hint}") from None
        except ConnectionError as e:
            hint = ""
            if self._tls is None and "reset by peer" in str(e):
                hint = " (a store that speaks only TLS does this: is its URL rediss://?)"
            raise ConnectionError(f"{self._where(i)}: {e}{hint}") from None

    def _where(self, i: int) -> str:
        if len(self._addrs) == 1:
            return f"redis store {self.url}"
        return f"redis store {self.url} (shard {_address(*self._addrs[i])})"

    def _denied(self, op: str, key: str | list[str]) -> str:
        from simai.store.counters import COMPONENT_ENV

        component = os.environ.get(COMPONENT_ENV)
        who = f"store user {self._username or 'default'!r}"
        if component:
            who = f"component {component!r} ({who})"
        what = repr(key) if isinstance(key, str) else f"one of the keys {key!r}"
        text = f"{who} may not {op} {what} in {self.url}"
        declared = os.environ.get(ENV_ACCESS)
        if declared:
            try:
                access = StoreAccess.of(json.loads(declared))
                text += f": its store_access allows {access.describe() if access else 'nothing'}"
            except (ValueError, TypeError):
                pass
        return text

    # --- users (see simai.store.access) ---------------------------------------------------

    def set_user(self, name: str, password: str, access: StoreAccess) -> None:
        """Create (or replace) ACL user ``name`` on every shard, with ``password`` and the
        rights ``access`` gives over this store's keys. Needs a user that may run ACL (the
        workflow's own)."""
        rules = acl_rules(access, self._ns[:-1].decode(), password)
        for i in range(len(self._addrs)):
            with self._shard(i) as conn:
                try:
                    conn.command("ACL", "SETUSER", name, *rules)
                except ReplyError as e:
                    raise PermissionError(
                        f"{self._where(i)}: cannot create store user {name!r}: {e} (only "
                        "the store's administrating user, the workflow's own, can)"
                    ) from None

    def delete_user(self, name: str) -> None:
        """Remove ACL user ``name`` from every shard (no error if it is not there); its
        open connections are closed by the servers."""
        for i in range(len(self._addrs)):
            with self._shard(i) as conn:
                conn.command("ACL", "DELUSER", name)

    def _shard(self, i: int) -> _ShardUse:
        """`with self._shard(i) as conn:` holds shard i's connection (connecting if needed)."""
        if os.getpid() != self._pid:
            self._reset()
        return _ShardUse(self, i)

    @contextlib.contextmanager
    def _subscriber(self, i: int) -> Iterator[Connection]:
        with self._subs_lock:
            pool = self._subs[i]
            sub = pool.pop() if pool else None
        if sub is None or sub.closed:
            sub = self._connect(i, self.timeout)
        try:
            yield sub
        finally:
            if not sub.closed:
                with self._subs_lock:
                    self._subs[i].append(sub)

    def _notified(
        self, i: int, channel: bytes, check: Callable[[], T | None], deadline: float | None
    ) -> T | None:
        """Return check()'s first non-None result, re-checking after each message on `channel`.

        Subscribing before the re-check closes the race with a put that lands in between.
        """
        result = check()
        if result is not None:
            return result
        with self._subscriber(i) as sub:
            try:
                sub.send([("SUBSCRIBE", channel)])
                sub.read_reply()
                while True:
                    result = check()
                    if result is not None:
                        return result
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    try:
                        sub.read_reply(timeout=remaining)
                    except TimeoutError:
                        return check()
            except ConnectionError as e:
                if isinstance(e, AuthenticationError) or str(e).startswith("redis store"):
                    raise
                raise ConnectionError(f"{self._where(i)}: {e}") from None
            finally:
                if not sub.closed:
                    try:
                        sub.send([("UNSUBSCRIBE", channel)])
                        while True:
                            msg = sub.read_reply()
                            if isinstance(msg, list) and msg and msg[0] == b"unsubscribe":
                                break
                    except OSError:
                        sub.close()

    def close(self) -> None:
        super().close()
        for i, conn in enumerate(self._conns):
            if conn is not None:
                conn.close()
            self._conns[i] = None
        with self._subs_lock:
            for pool in self._subs:
                for sub in pool:
                    sub.close()
                pool.clear()

    # --- values --------------------------------------------------------------------------

    def _k(self, kind: bytes, name: str) -> bytes:
        return self._ns + kind + b":" + name.encode()

    @_guarded("write")
    def _write(self, key: str, header: bytes, payload: memoryview) -> None:
        kb = key.encode()
        ns = self._ns
        vkey, pkey, channel = ns + b"v:" + kb, ns + b"p:" + kb, ns + b"n:" + kb
        total = len(header) + payload.nbytes
        with self._shard(zlib.crc32(kb) % len(self._addrs)) as conn:
            if total <= self.chunk_size:
                cmds = [("SET", vkey, (header, payload)), ("EXISTS", pkey), ("PUBLISH", channel, 1)]
                if conn.pipeline(cmds)[1]:
                    old = conn.command("EVAL", _COLLECT_SCRIPT, 2, vkey, pkey)
                    self._drop_chunks(conn, key, old)
                return
            ptr, ckeys = self._pointer(b"c", key, total)
            chunks = _chunks(header, payload, self.chunk_size)
            cmds = [("SET", k, c) for k, c in zip(ckeys, chunks, strict=True)]
            cmds += [
                ("MULTI",),
                ("SET", vkey, ptr),
                ("SET", pkey, ptr, "GET"),
                ("PUBLISH", channel, 1),
                ("EXEC",),
            ]
            replies = conn.pipeline(cmds, raise_on_error=False)
            errors = [r for r in replies if isinstance(r, ReplyError)]
            done = replies[-1]
            if errors or not isinstance(done, list):
                conn.command("DEL", *ckeys)
                raise errors[0] if errors else ReplyError(f"transaction failed: {done!r}")
            self._drop_chunks(conn, key, done[1])

    @_guarded("write")
    def _write_many(self, entries: list[tuple[str, bytes, memoryview]]) -> None:
        """Pipelined: one round trip per shard for all but huge values."""
        groups: dict[int, list[tuple[str, bytes, bytes, bytes, memoryview]]] = {}
        for key, header, payload in entries:
            if len(header) + payload.nbytes > self.chunk_size:
                self._write(key, header, payload)
            else:
                groups.setdefault(self.shard_of(key), []).append(
                    (key, self._k(b"v", key), self._k(b"p", key), header, payload)
                )
        for i, group in groups.items():
            with self._shard(i) as conn:
                cmds: list[tuple[Any, ...]] = []
                for key, vkey, pkey, header, payload in group:
                    cmds += [
                        ("SET", vkey, (header, payload)),
                        ("EXISTS", pkey),
                        ("PUBLISH", self._k(b"n", key), 1),
                    ]
                replies = conn.pipeline(cmds)
                for j, (key, vkey, pkey, _, _) in enumerate(group):
                    if replies[3 * j + 1]:
                        old = conn.command("EVAL", _COLLECT_SCRIPT, 2, vkey, pkey)
                        self._drop_chunks(conn, key, old)

    @_guarded("read")
    def _read_many(self, keys: list[str], view: bool) -> list[tuple[Any, int]]:
        """Pipelined: one round trip per shard."""
        bufs: list[Any] = [None] * len(keys)
        groups: dict[int, list[int]] = {}
        for n, key in enumerate(keys):
            groups.setdefault(self.shard_of(key), []).append(n)
        for i, idxs in groups.items():
            with self._shard(i) as conn:
                cmds = [("GET", self._k(b"v", keys[n])) for n in idxs]
                for n, buf in zip(idxs, conn.pipeline(cmds, alloc=_alloc), strict=True):
                    bufs[n] = buf
        for n, buf in enumerate(bufs):
            if buf is None:
                raise KeyError(keys[n])
            if _is_pointer(buf):
                bufs[n] = self._read_entry(keys[n])
        return [self._decode(buf, view) for buf in bufs]

    def _pointer(self, kind: bytes, name: str, total: int) -> tuple[bytes, list[bytes]]:
        ver = secrets.token_hex(8).encode()
        ptr = _PTR.pack(PTR_MAGIC, total, self.chunk_size, ver)
        return ptr, self._chunk_keys(kind, name, ptr)

    def _chunk_keys(self, kind: bytes, name: str, ptr: Any) -> list[bytes]:
        _, total, size, ver = _PTR.unpack(bytes(ptr))
        base = self._k(kind, name) + b"\0" + ver + b":"
        return [base + b"%d" % j for j in range(-(-total // size))]

    def _drop_chunks(self, conn: Connection, key: str, old: Any) -> None:
        """Delete the chunks of a value version that was just replaced or deleted."""
        if _is_pointer(old):
            conn.command("DEL", *self._chunk_keys(b"c", key, old))

    @_guarded("read")
    def _read(self, key: str, view: bool) -> tuple[Any, int]:
        return self._decode(self._read_entry(key), view)

    @_guarded("read")
    def _read_into(self, key: str, out: np.ndarray) -> None:
        codec.decode_into(self._read_entry(key), out)

    def _read_entry(self, key: str) -> Any:
        """The whole entry of `key`, gathered from its chunks if it has them."""
        i = self.shard_of(key)
        vkey = self._k(b"v", key)
        with self._shard(i) as conn:
            for _ in range(_RETRIES):
                buf = conn.command("GET", vkey, alloc=_alloc)
                if buf is None:
                    raise KeyError(key)
                if not _is_pointer(buf):
                    return buf
                out = self._gather(conn, b"c", key, buf)
                if out is not None:
                    return out
        raise ConnectionError(
            f"{self._where(i)}: key {key!r} kept changing while being read ({_RETRIES} tries)"
        )

    def _gather(self, conn: Connection, kind: bytes, name: str, ptr: Any) -> memoryview | None:
        """Read the chunks `ptr` points to into one buffer; None if some are gone."""
        _, total, size, _ = _PTR.unpack(bytes(ptr))
        out = _alloc(total)
        keys = self._chunk_keys(kind, name, ptr)
        into = [out[j * size : (j + 1) * size] for j in range(len(keys))]
        replies = conn.pipeline([("GET", k) for k in keys], into=into)
        if any(r is None for r in replies):
            return None
        return out

    @_guarded("read")
    def _exists(self, key: str) -> bool:
        with self._shard(self.shard_of(key)) as conn:
            return conn.command("EXISTS", self._k(b"v", key)) == 1

    @_guarded("delete")
    def _delete(self, key: str) -> bool:
        with self._shard(self.shard_of(key)) as conn:
            cmds = [("MULTI",), ("DEL", self._k(b"v", key)), ("GETDEL", self._k(b"p", key))]
            done = conn.pipeline([*cmds, ("EXEC",)])[-1]
            self._drop_chunks(conn, key, done[1])
            return done[0] == 1

    def _keys(self, prefix: str) -> list[str]:
        head = self._ns + b"v:"
        pattern = head + _glob_escape(prefix.encode()) + b"*"
        out: list[str] = []
        for i in range(len(self._addrs)):
            with self._shard(i) as conn:
                cursor = b"0"
                while True:
                    cursor, found = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                    out.extend(k[len(head) :].decode() for k in found)
                    if cursor == b"0":
                        break
        return out

    @_guarded("wait for")
    def _wait(self, key: str, deadline: float | None) -> bool:
        def check() -> bool | None:
            return True if self._exists(key) else None

        i = self.shard_of(key)
        return bool(self._notified(i, self._k(b"n", key), check, deadline))

    # --- streams -------------------------------------------------------------------------

    @_guarded("append to")
    def _append(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        bounds = self._bounded.get(stream, _UNKNOWN)
        if bounds is _UNKNOWN:
            bounds = self._bounded[stream] = self._bounds_of(stream)
        if bounds is not None:
            return self._append_bounded(stream, header, payload, deadline)
        skey, ekey = self._k(b"s", stream), self._k(b"e", stream)
        total = len(header) + payload.nbytes
        ckeys: list[bytes] = []
        with self._shard(self.shard_of(stream)) as conn:
            if total <= self.chunk_size:
                value: Any = (header, payload)
            else:
                value, ckeys = self._pointer(b"d", stream, total)
                chunks = _chunks(header, payload, self.chunk_size)
                conn.pipeline([("SET", k, c) for k, c in zip(ckeys, chunks, strict=True)])
            cmds = [("RPUSH", skey, value), ("GET", ekey), ("PUBLISH", self._k(b"m", stream), 1)]
            n, closed_at, _ = conn.pipeline(cmds)
            if closed_at is not None and n > int(closed_at):
                conn.command("LTRIM", skey, 0, int(closed_at) - 1)
                if ckeys:
                    conn.command("DEL", *ckeys)
                raise ValueError(f"stream {stream!r} is closed: it takes no more appends")
            return n - 1

    def _bounds_of(self, stream: str) -> tuple[int, str] | None:
        with self._shard(self.shard_of(stream)) as conn:
            maxlen, policy = conn.command("HMGET", self._k(b"b", stream), "maxlen", "policy")
        return None if maxlen is None else (int(maxlen), policy.decode())

    def _append_bounded(
        self, stream: str, header: bytes, payload: memoryview, deadline: float | None
    ) -> int | None:
        i = self.shard_of(stream)
        keys = [self._k(k, stream) for k in (b"s", b"e", b"b", b"g", b"x")]
        total = len(header) + payload.nbytes
        ckeys: list[bytes] = []
        value: Any = (header, payload)
        if total > _INLINE_MAX:
            value, ckeys = self._pointer(b"d", stream, total)
            chunks = _chunks(header, payload, self.chunk_size)
            with self._shard(i) as conn:
                conn.pipeline([("SET", k, c) for k, c in zip(ckeys, chunks, strict=True)])

        def attempt() -> int | None:
            with self._shard(i) as conn:
                reply = conn.command(
                    "EVAL", _APPEND_SCRIPT, 5, *keys, value, int(bool(ckeys)), self._k(b"m", stream)
                )
                if reply[0] == -1:
                    raise ValueError(f"stream {stream!r} is closed: it takes no more appends")
                if reply[0] == -2:
                    return None
                for ptr in reply[1:]:
                    conn.command("DEL", *self._chunk_keys(b"d", stream, ptr))
                return int(reply[0])

        index = None
        try:
            index = attempt()
            if index is None:
                index = self._notified(i, self._k(b"a", stream), attempt, deadline)
        finally:
            if index is None and ckeys:
                with self._shard(i) as conn:
                    conn.command("DEL", *ckeys)
        return index

    @_guarded("create stream")
    def _create_stream(self, stream: str, maxlen: int, policy: str) -> None:
        keys = (self._k(b"s", stream), self._k(b"b", stream))
        with self._shard(self.shard_of(stream)) as conn:
            have = conn.command("EVAL", _CREATE_SCRIPT, 2, *keys, maxlen, policy)
        if isinstance(have, int):
            raise ValueError(
                f"stream {stream!r} already holds {have} values appended without bounds; "
                "declare it with create_stream before the first append"
            )
        bounds = (int(have[0]), have[1].decode())
        if bounds != (maxlen, policy):
            raise ValueError(
                f"stream {stream!r} is already declared with maxlen={bounds[0]}, "
                f"policy={bounds[1]!r}, not maxlen={maxlen}, policy={policy!r}"
            )
        self._bounded[stream] = bounds

    @_guarded("read stream")
    def _stream_read(
        self, stream: str, index: int, deadline: float | None, view: bool
    ) -> tuple[Any, int] | None:
        skey, ekey, bkey = self._k(b"s", stream), self._k(b"e", stream), self._k(b"b", stream)
        i = self.shard_of(stream)

        def check() -> Any | None:
            with self._shard(i) as conn:
                if stream in self._plain:
                    entry, closed_at = conn.pipeline(
                        [("LINDEX", skey, index), ("GET", ekey)], alloc=_alloc
                    )
                    start = 0
                else:
                    # `start` only grows, so if it still equals the start seen before, it did
                    # not change before LINDEX either, and LINDEX read entry `index`.
                    while True:
                        assumed = self._starts.get(stream, 0)
                        pos = index - assumed if index >= assumed else 1 << 62
                        entry, closed_at, now = conn.pipeline(
                            [("LINDEX", skey, pos), ("GET", ekey), ("HGET", bkey, "start")],
                            alloc=_alloc,
                        )
                        start = 0 if now is None else int(bytes(now))
                        if start == assumed:
                            break
                        self._starts[stream] = start
                    if now is None and entry is not None:
                        self._plain.add(stream)  # holds values without bounds: it never gets any
                if index < start:
                    raise StreamTrimmed(start)
                if closed_at is not None and index >= int(bytes(closed_at)):
                    raise StreamEnded(stream)
                if entry is None:
                    return None
                if not _is_pointer(entry):
                    return self._decode(entry, view)
                out = self._gather(conn, b"d", stream, entry)
                if out is None:
                    start = int(conn.command("HGET", bkey, "start") or 0)
                    if index < start:
                        raise StreamTrimmed(start)
                    raise KeyError(f"stream {stream!r} was deleted while entry {index} was read")
                return self._decode(out, view)

        return self._notified(i, self._k(b"m", stream), check, deadline)

    @_guarded("read stream")
    def _stream_len(self, stream: str) -> int:
        with self._shard(self.shard_of(stream)) as conn:
            n, closed_at, start = conn.pipeline(
                [
                    ("LLEN", self._k(b"s", stream)),
                    ("GET", self._k(b"e", stream)),
                    ("HGET", self._k(b"b", stream), "start"),
                ]
            )
            n += int(start or 0)
            return n if closed_at is None else min(n, int(closed_at))

    @_guarded("read stream")
    def _stream_info(self, stream: str) -> dict[str, Any]:
        with self._shard(self.shard_of(stream)) as conn:
            bounds, n, closed_at, groups = conn.pipeline(
                [
                    ("HMGET", self._k(b"b", stream), "maxlen", "policy", "start", "dropped"),
                    ("LLEN", self._k(b"s", stream)),
                    ("GET", self._k(b"e", stream)),
                    ("HGETALL", self._k(b"g", stream)),
                ]
            )
        maxlen, policy, start, dropped = bounds
        length = int(start or 0) + n
        return {
            "length": length if closed_at is None else min(length, int(closed_at)),
            "start": int(start or 0),
            "maxlen": None if maxlen is None else int(maxlen),
            "policy": None if policy is None else policy.decode(),
            "dropped": int(dropped or 0),
            "closed": closed_at is not None,
            "groups": {groups[j].decode(): int(groups[j + 1]) for j in range(0, len(groups), 2)},
        }

    @_guarded("read stream")
    def _set_position(self, stream: str, group: str, index: int) -> None:
        with self._shard(self.shard_of(stream)) as conn:
            conn.pipeline(
                [
                    ("HSET", self._k(b"g", stream), group, index),
                    ("PUBLISH", self._k(b"a", stream), 1),
                ]
            )

    @_guarded("read stream")
    def _position(self, stream: str, group: str) -> int | None:
        with self._shard(self.shard_of(stream)) as conn:
            pos = conn.command("HGET", self._k(b"g", stream), group)
        return None if pos is None else int(pos)

    @_guarded("close stream")
    def _close_stream(self, stream: str) -> None:
        """Record the length at closing: entries past it (late appends) do not count."""
        keys = [self._k(k, stream) for k in (b"s", b"e", b"b")]
        with self._shard(self.shard_of(stream)) as conn:
            conn.pipeline(
                [
                    ("EVAL", _CLOSE_SCRIPT, 3, *keys),
                    ("PUBLISH", self._k(b"m", stream), b"1"),
                    ("PUBLISH", self._k(b"a", stream), b"1"),
                ]
            )

    @_guarded("delete stream")
    def _delete_stream(self, stream: str) -> bool:
        self._bounded.pop(stream, None)
        self._starts.pop(stream, None)
        self._plain.discard(stream)
        pattern = _glob_escape(self._k(b"d", stream)) + b"\0*"
        with self._shard(self.shard_of(stream)) as conn:
            cursor = b"0"
            while True:
                cursor, found = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                if found:
                    conn.command("DEL", *found)
                if cursor == b"0":
                    break
            kinds = (b"s", b"e", b"b", b"g", b"x")
            n = conn.command("DEL", *(self._k(k, stream) for k in kinds))
            return n > 0


_COLLECT_SCRIPT = """
local p = redis.call('GET', KEYS[2])
if not p then return false end
if redis.call('STRLEN', KEYS[1]) == #p and redis.call('GET', KEYS[1]) == p then return false end
redis.call('DEL', KEYS[2])
return p
"""
"""Take the chunk pointer of KEY unless KEY's head still points to those chunks."""

_CLOSE_SCRIPT = """
local start = tonumber(redis.call('HGET', KEYS[3], 'start') or '0')
return redis.call('SET', KEYS[2], start + redis.call('LLEN', KEYS[1]), 'NX')
"""

_CREATE_SCRIPT = """
local have = redis.call('HMGET', KEYS[2], 'maxlen', 'policy')
if have[1] then return have end
local n = redis.call('LLEN', KEYS[1])
if n > 0 then return n end
redis.call('HSET', KEYS[2], 'maxlen', ARGV[1], 'policy', ARGV[2], 'start', 0, 'dropped', 0)
return {ARGV[1], ARGV[2]}
"""
"""Give a stream bounds unless it has some (returned) or holds values (their count)."""

_APPEND_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
local b = redis.call('HMGET', KEYS[3], 'maxlen', 'policy', 'start')
local maxlen, policy, start = tonumber(b[1]), b[2], tonumber(b[3])
local head = start + redis.call('LLEN', KEYS[1])
local floor = nil
for _, v in ipairs(redis.call('HVALS', KEYS[4])) do
  local p = tonumber(v)
  if floor == nil or p < floor then floor = p end
end
if floor == nil or floor < start then floor = start end
if policy == 'block' and head - floor >= maxlen then return {-2} end
redis.call('RPUSH', KEYS[1], ARGV[1])
if ARGV[2] == '1' then redis.call('HSET', KEYS[5], head, ARGV[1]) end
redis.call('PUBLISH', ARGV[3], 1)
local out = {head}
head = head + 1
local new_start = head - maxlen
if policy == 'block' and floor < new_start then new_start = floor end
if new_start > start then
  redis.call('LTRIM', KEYS[1], new_start - start, -1)
  if redis.call('HLEN', KEYS[5]) > 0 then
    for i = start, new_start - 1 do
      local p = redis.call('HGET', KEYS[5], i)
      if p then
        redis.call('HDEL', KEYS[5], i)
        table.insert(out, p)
      end
    end
  end
  if policy == 'drop_oldest' then
    local lost = new_start - math.max(start, floor)
    if lost > 0 then redis.call('HINCRBY', KEYS[3], 'dropped', lost) end
  end
  redis.call('HSET', KEYS[3], 'start', new_start)
end
return out
"""
"""Append ARGV[1] to a bounded stream and trim it (see `Store.create_stream`); returns
{index, trimmed chunk pointers...}, {-1} if the stream is closed, {-2} if it is full."""


class _ShardUse:
    """Holds one shard's lock and connection; a lost connection becomes a ConnectionError
    naming the store, and any failure that may leave replies unread closes the connection."""

    __slots__ = ("store", "i", "lock", "conn")

    def __init__(self, store: RedisStore, i: int) -> None:
        self.store, self.i, self.lock = store, i, store._locks[i]

    def __enter__(self) -> Connection:
        self.lock.acquire()
        try:
            conn = self.store._conns[self.i]
            if conn is None or conn.closed:
                conn = self.store._conns[self.i] = self.store._connect(self.i, self.store.timeout)
        except BaseException:
            self.lock.release()
            raise
        self.conn = conn
        return conn

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        try:
            if e is None or isinstance(e, KeyError | ReplyError | StreamEnded):
                return
            self.conn.close()
            if type(e) is ConnectionError:
                raise ConnectionError(f"{self.store._where(self.i)}: {e}") from None
        finally:
            self.lock.release()


def _is_pointer(buf: Any) -> bool:
    return buf is not None and len(buf) == _PTR.size and bytes(buf[:4]) == PTR_MAGIC
