"""Start and stop real redis-server shards for the `redis://` store.

Each shard is one redis-server on its own port, bound to 127.0.0.1 unless told otherwise,
with a generated password that is required; with TLS, the port speaks only TLS and the
shards refuse clients without a certificate of the store's own CA (see simai.store.tls).
The configuration, password included, reaches redis-server on its stdin (`redis-server -`),
never on its command line, where `ps` shows it. No server is left behind: a start that fails
part way stops the shards it already started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simai.checks import check_int
from simai.store.private import private_dir
from simai.store.resp import Connection, ReplyError
from simai.store.tls import Certificates, TLSFiles, default_hosts, make_certificates

DEFAULT_PORT = 6379
MALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
"""jemalloc settings for the shards: keep freed pages for reuse instead of returning them to
the OS at once. Each large value then lands in memory that is already mapped: without this,
every 16 MiB put or get costs the server 4096 page faults and runs at half the speed. The
price: a shard's resident memory stays at its peak until `MEMORY PURGE` or a restart."""


class PortInUseError(OSError):
    """A port a shard should listen on is already taken by another process."""


@dataclass
class Shard:
    """One running redis-server."""

    host: str
    port: int
    pid: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class RedisServers:
    """N redis-server shards on consecutive ports, started on construction.

    Use as a context manager, or call `stop()`; shards still running when this object is
    collected or the interpreter exits are stopped too, unless `detach=True`.

    Parameters
    ----------
    shards : int
        How many redis-server processes.
    port : int
        The first shard's port; the others follow it. 0 picks free ports.
    bind : str
        The address they listen on (loopback unless told otherwise).
    password : str or None
        The password clients must give (default: a random one).
    persist_dir : path or None
        Keeps each shard's data in `persist_dir/shard-<i>.rdb`: loaded at start, saved at stop.
    log_dir : path or None
        Where the shards' logs go (default: a private temporary directory).
    executable : str
        The redis-server program.
    start_timeout : float
        Seconds the shards may take to accept connections.
    detach : bool
        Run the shards in their own session until `stop()` is called, possibly from another
        process through `RedisServers.attach(state)` (the CLI's `simai store start`).
    malloc_conf : str or None
        The shards' MALLOC_CONF (None: inherit the environment's); see MALLOC_CONF.
    tls : bool or Certificates
        Speak only TLS, with client certificates required: True makes a new CA and the
        server's and clients' certificates in ``log_dir/tls`` (for the bound addresses, this
        host and loopback, and ``tls_hosts``); or the user's own :class:`Certificates`.
    tls_hosts : list of str
        More names or addresses the server certificate simai makes is valid for (those
        that clients on other hosts use to reach the shards).
    """

    def __init__(
        self,
        shards: int = 1,
        port: int = 0,
        bind: str = "127.0.0.1",
        password: str | None = None,
        persist_dir: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        executable: str = "redis-server",
        start_timeout: float = 10.0,
        detach: bool = False,
        malloc_conf: str | None = MALLOC_CONF,
        tls: bool | Certificates = False,
        tls_hosts: list[str] | tuple[str, ...] = (),
    ) -> None:
        check_int("shards", shards, 1)
        if not isinstance(tls, (bool, Certificates)):
            raise TypeError(f"tls must be True, False or a Certificates, not {tls!r}")
        check_int("port (0: any free port)", port, 0, maximum=65535 - shards + 1)
        exe = shutil.which(executable)
        if exe is None:
            raise FileNotFoundError(
                f"{executable!r} not found on PATH; install Redis (Debian: apt-get install "
                "redis-server)"
            )
        self.bind = bind
        self.malloc_conf = malloc_conf
        if password is not None and (
            len(password) < 8
            or any(c in password for c in "\"\\'")
            or not password.isprintable()
            or any(c.isspace() for c in password)
        ):
            raise ValueError(
                "password must be at least 8 printable characters without spaces or quotes"
            )
        self.password = password or secrets.token_urlsafe(24)
        self.persist_dir = Path(persist_dir).resolve() if persist_dir else None
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="simai-redis-")).resolve()
        private_dir(self.log_dir)
        made = tls is True
        if tls is True:
            hosts = default_hosts(bind) + [str(h) for h in tls_hosts]
            tls = make_certificates(self.log_dir / "tls", hosts)
        self.certificates: Certificates | None = tls or None
        #: the certificates simai made here (removed with the shards), not the user's own
        self._tls_dir = self.log_dir / "tls" if tls and made else None
        self.shards: list[Shard] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._finalizer: weakref.finalize | None = None
        ports = _free_ports(bind, shards) if port == 0 else list(range(port, port + shards))
        try:
            if port:
                for p in ports:
                    _check_port_free(bind, p)
            for i, p in enumerate(ports):
                self._start_one(exe, i, p, start_timeout, detach)
        except BaseException:
            self.stop()
            raise
        if not detach:
            self._finalizer = weakref.finalize(
                self,
                _cleanup,
                list(self.shards),
                self.password,
                self.persist_dir is not None,
                dict(self._procs),
                self.log_dir if self._own_log_dir else None,
                self.tls,
            )

    @classmethod
    def attach(cls, state: dict[str, Any]) -> RedisServers:
        """Handle on shards started elsewhere, from the dict `state()` returned."""
        self = cls.__new__(cls)
        self.bind = state["bind"]
        self.password = state["password"]
        self.persist_dir = Path(state["persist_dir"]) if state.get("persist_dir") else None
        self.log_dir = Path(state["log_dir"])
        self._own_log_dir = False
        self.shards = [Shard(**s) for s in state["shards"]]
        tls = state.get("tls")
        self.certificates = None
        self._client_tls = TLSFiles(**tls) if tls else None
        self._tls_dir = Path(state["tls_dir"]) if state.get("tls_dir") else None
        self._procs = {}
        self._finalizer = None
        return self

    def state(self) -> dict[str, Any]:
        """What another process needs to reach and stop these shards (includes the password)."""
        return {
            "url": self.url,
            "password": self.password,
            "bind": self.bind,
            "persist_dir": str(self.persist_dir) if self.persist_dir else None,
            "log_dir": str(self.log_dir),
            "shards": [asdict(s) for s in self.shards],
            "tls": None if self.tls is None else {k: str(v) for k, v in asdict(self.tls).items()},
            "tls_dir": None if self._tls_dir is None else str(self._tls_dir),
        }

    @property
    def tls(self) -> TLSFiles | None:
        """What a client needs for TLS (the CA, a client certificate and its key), or None."""
        if self.certificates is not None:
            return self.certificates.client
        return getattr(self, "_client_tls", None)

    @property
    def url(self) -> str:
        """The store URL (without the password): redis://host:port[,host:port...], or
        rediss:// with TLS.

        Shards bound to every interface are named by this node's host name, so that other
        nodes can use the URL too.
        """
        first = self.bind.split()[0]
        host = socket.gethostname() if first in ("0.0.0.0", "::", "*") else first
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://" + ",".join(Shard(host, s.port, s.pid).address for s in self.shards)

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.shards]

    def ping(self, timeout: float = 2.0) -> list[str | None]:
        """Per shard: None when it answers PING, else why not."""
        out: list[str | None] = []
        for s in self.shards:
            try:
                c = _connect(s.host, s.port, self.password, self.tls, timeout)
                try:
                    c.command("PING")
                finally:
                    c.close()
                out.append(None)
            except (OSError, ReplyError) as e:
                out.append(str(e))
        return out

    def alive(self) -> bool:
        """Whether any shard process is still running."""
        return any(_pid_is_redis(s.pid) for s in self.shards)

    def alive_all(self) -> bool:
        """Whether every shard process is still running."""
        return all(_pid_is_redis(s.pid) for s in self.shards)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every shard (saving first when persisting) and wait until each has exited."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        try:
            _stop_shards(
                self.shards,
                self.password,
                self.persist_dir is not None,
                self._procs,
                timeout,
                self.tls,
            )
        finally:
            self.shards = []
            self._procs = {}
            if self._own_log_dir:
                shutil.rmtree(self.log_dir, ignore_errors=True)
            elif self._tls_dir is not None:
                shutil.rmtree(self._tls_dir, ignore_errors=True)

    def __enter__(self) -> RedisServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServers({self.url!r}, pids={self.pids})"

    # --- starting ------------------------------------------------------------------------

    def _start_one(self, exe: str, index: int, port: int, timeout: float, detach: bool) -> None:
        log = self.log_dir / f"redis-{port}.log"
        workdir = self.persist_dir or self.log_dir
        private_dir(workdir)  # dumps hold the data the password guards
        tls = self.certificates.server if self.certificates is not None else None
        ports = [f"port {port}"]
        if tls is not None:
            ports = [
                "port 0",  # no plaintext port
                f"tls-port {port}",
                f'tls-cert-file "{tls.cert}"',
                f'tls-key-file "{tls.key}"',
                f'tls-ca-cert-file "{tls.ca}"',
                "tls-auth-clients yes",
                # AES-128-GCM first: the fastest suite with AES instructions, and as strong
                # as the link needs
                "tls-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                "TLS_CHACHA20_POLY1305_SHA256",
                "tls-prefer-server-ciphers yes",
            ]
        config = "\n".join(
            [
                *ports,
                f"bind {self.bind}",
                f'requirepass "{self.password}"',
                "daemonize no",
                'logfile ""',
                "save ''",
                # Persisting: an append-only file, flushed when the shard is told to stop,
                # so acknowledged writes survive even the death of the process that started it.
                "appendonly yes" if self.persist_dir else "appendonly no",
                "appendfsync everysec",
                f'appenddirname "aof-shard-{index}"',
                f'dir "{workdir}"',
                f'dbfilename "shard-{index}.rdb"',
                "protected-mode yes",
                "",
            ]
        )
        env = dict(os.environ)
        if self.malloc_conf is not None:
            env["MALLOC_CONF"] = self.malloc_conf
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with open(os.open(log, flags, 0o600), "wb") as logf:
            proc = subprocess.Popen(
                [exe, "-"],
                stdin=subprocess.PIPE,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=detach,
                env=env,
                umask=0o077,
                preexec_fn=None if detach else _stop_with_parent,
            )
        assert proc.stdin is not None
        proc.stdin.write(config.encode())
        proc.stdin.close()
        shard = Shard(self.bind, port, proc.pid)
        self.shards.append(shard)
        self._procs[proc.pid] = proc
        deadline = time.monotonic() + timeout
        host = _client_host(self.bind)
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")
                if "Address already in use" in text:
                    raise PortInUseError(_in_use_message(self.bind, port))
                tail = "\n".join(text.strip().splitlines()[-5:])
                raise RuntimeError(
                    f"redis-server for port {port} exited with code {proc.returncode}:\n{tail}"
                )
            try:
                c = _connect(host, port, self.password, self.tls, 1.0, timeout=None)
                try:
                    c.command("PING")  # answers -LOADING while a persisted dataset loads
                finally:
                    c.close()
                return
            except ConnectionRefusedError:
                pass
            except (ConnectionError, ReplyError) as e:
                if "refused" not in str(e) and "LOADING" not in str(e):
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"redis-server on port {port} did not answer within {timeout:g} s"
                )
            time.sleep(0.01)


def _connect(
    host: str,
    port: int,
    password: str,
    tls: TLSFiles | None,
    connect_timeout: float,
    timeout: float | None = -1.0,
) -> Connection:
    """A connection to a shard bound to ``host`` (timeout -1: the connect timeout)."""
    return Connection(
        _client_host(host),
        port,
        password,
        connect_timeout=connect_timeout,
        timeout=connect_timeout if timeout == -1.0 else timeout,
        tls=None if tls is None else tls.client_context(),
    )


def _client_host(bind: str) -> str:
    """Where a local client reaches a server bound to `bind` (first address of a list)."""
    first = bind.split()[0]
    return "127.0.0.1" if first in ("0.0.0.0", "*") else "::1" if first == "::" else first


def _in_use_message(bind: str, port: int) -> str:
    return (
        f"port {port} on {bind} is already in use: something is already listening there "
        "(a redis-server from an earlier `simai store start`? try `simai store stop`, or "
        "choose another --port)"
    )


def _check_port_free(bind: str, port: int) -> None:
    host = _client_host(bind)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind.split()[0] if bind not in ("*",) else "0.0.0.0", port))
        except OSError:
            raise PortInUseError(_in_use_message(bind, port)) from None


def _free_ports(bind: str, n: int) -> list[int]:
    host = _client_host(bind)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(fam, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid_is_redis(pid: int) -> bool:
    """Whether `pid` is alive and is a redis-server (guards against a recycled pid)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return b"redis-server" in cmd


def _cleanup(
    shards: list[Shard],
    password: str,
    save: bool,
    procs: dict[int, subprocess.Popen[bytes]],
    log_dir: Path | None,
    tls: TLSFiles | None,
) -> None:
    """Stop shards whose RedisServers was dropped without stop(), e.g. at interpreter exit."""
    try:
        _stop_shards(shards, password, save, procs, tls=tls)
    finally:
        if log_dir is not None:
            shutil.rmtree(log_dir, ignore_errors=True)


def _stop_shards(
    shards: list[Shard],
    password: str,
    save: bool,
    procs: dict[int, subprocess.Popen[bytes]],
    timeout: float = 10.0,
    tls: TLSFiles | None = None,
) -> None:
    for s in shards:
        proc = procs.get(s.pid)
        if proc is not None and proc.poll() is not None:
            continue
        if proc is None and not _pid_is_redis(s.pid):
            continue
        with contextlib.suppress(OSError, ReplyError):
            c = _connect(s.host, s.port, password, tls, 2.0, timeout=5.0)
            try:
                c.send([("SHUTDOWN", "SAVE" if save else "NOSAVE")])
                with contextlib.suppress(OSError):
                    c.read_reply()
            finally:
                c.close()
    for s in shards:
        proc = procs.get(s.pid)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    if proc is not None and proc.poll() is None:
                        proc.send_signal(sig)
                    elif proc is None and _pid_is_redis(s.pid):
                        os.kill(s.pid, sig)
            if _wait_exit(s, proc, timeout if sig is None else 5.0):
                break


def _wait_exit(s: Shard, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while _pid_is_redis(s.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _stop_with_parent() -> None:
    """In the shard's process: get SIGTERM (a clean shutdown) when the starting thread dies."""
    import ctypes

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
