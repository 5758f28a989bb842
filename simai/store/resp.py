"""A minimal RESP2 client: just enough Redis protocol for the store, without copying payloads.

Why not redis-py: with hiredis it packs every argument into one new bytes object, so a large
put copies the payload (about 0.45 GB/s here). This client writes each command's small
framing bytes and then hands a large argument's memoryview straight to `sendall`, and reads
a large bulk reply with `recv_into` straight into a buffer sized from its `$len` line.

Arguments may be bytes, str, int, float, any buffer (memoryview, bytearray, numpy array),
or a tuple of buffers that travel as one bulk string (a header followed by a payload).
Replies: simple strings as str, integers as int, bulk strings as bytes (large ones as a
writable memoryview over a fresh numpy buffer), arrays as lists, nil as None, and error
replies as ReplyError.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BIG = 32 * 1024
"""Arguments and replies at least this large skip the small-message buffers."""

_RECV = 256 * 1024
_CRLF = b"\r\n"

Buffer = Any
Alloc = Callable[[int], Buffer]


class ReplyError(Exception):
    """Redis answered a command with an error reply (e.g. `ERR wrong number of arguments`)."""


class AuthenticationError(ConnectionError, PermissionError):
    """Redis refused the password (WRONGPASS) or wanted one (NOAUTH).

    A ConnectionError, because the store cannot be reached, and a PermissionError, because
    the reason is missing or wrong credentials.
    """


def _alloc(n: int) -> memoryview:
    return memoryview(np.empty(n, dtype=np.uint8))


class Connection:
    """One socket to one redis-server, authenticated on connect.

    Parameters
    ----------
    host : str
        The server's address.
    port : int
        Its port.
    password : str or None
        The password AUTH sends.
    username : str or None
        An ACL user name for AUTH.
    name : str or None
        What error messages call the server (a URL without its password).
    timeout : float or None
        Seconds each socket operation may take (None: wait forever).
    connect_timeout : float
        Seconds the TCP connect, TLS handshake and AUTH may take.
    tls : ssl.SSLContext or None
        Speak TLS, verifying the server against this context (see :mod:`simai.store.tls`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str | None = None,
        username: str | None = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
        connect_timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.name = name or f"{'redis' if tls is None else 'rediss'}://{host}:{port}"
        self.timeout = timeout
        self._buf = bytearray()
        self._pos = 0
        self._chunk = bytearray(_RECV)
        self._chunkview = memoryview(self._chunk)
        try:
            self._sock: socket.socket | None = socket.create_connection(
                (host, port), timeout=connect_timeout
            )
        except OSError as e:
            raise ConnectionError(f"cannot connect to {self.name}: {e.strerror or e}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self._handshake(tls)
        try:
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                self.command(*auth)
            else:
                self.command("PING")
        except ReplyError as e:
            self.close()
            raise ConnectionError(f"{self.name} refused the connection: {e}") from None
        except (ssl.SSLError, ConnectionError) as e:
            self.close()
            if tls is None or isinstance(e, AuthenticationError):
                raise
            # TLS 1.3: the server checks the client's certificate after the client's side
            # of the handshake ended, and a refusal ends the session at the first command
            raise ConnectionError(
                f"{self.name} ended the TLS session: it refused this client's certificate "
                f"(not signed by the CA it trusts?): {e}"
            ) from None
        except BaseException:
            self.close()
            raise
        self._sock.settimeout(timeout)

    def _handshake(self, tls: ssl.SSLContext) -> None:
        plain, self._sock = self._sock, None
        assert plain is not None
        try:
            self._sock = tls.wrap_socket(plain, server_hostname=self.host)
        except ssl.SSLCertVerificationError as e:
            plain.close()
            raise ConnectionError(
                f"{self.name} did not prove who it is: {e.verify_message} (its certificate "
                "is not one the run's CA signed for this address)"
            ) from None
        except (ssl.SSLError, OSError) as e:
            plain.close()
            why = str(e)
            if "CERTIFICATE" in why.upper() or "ALERT" in why.upper():
                why += " (the server refused this client's certificate?)"
            elif isinstance(e, ssl.SSLError) or "reset" in why.lower():
                why += " (does the server speak TLS?)"
            raise ConnectionError(f"TLS with {self.name} failed: {why}") from None

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # --- commands ------------------------------------------------------------------------

    def command(self, *args: Any, into: Buffer | None = None, alloc: Alloc | None = None) -> Any:
        """Send one command and return its reply; an error reply raises ReplyError."""
        self.send([args])
        reply = self.read_reply(into=into, alloc=alloc)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(
        self,
        commands: Sequence[Sequence[Any]],
        into: Sequence[Buffer | None] | None = None,
        alloc: Alloc | None = None,
        raise_on_error: bool = True,
    ) -> list[Any]:
        """Send several commands in one round trip; return their replies in order.

        `into[i]`, when given, receives command i's bulk reply. Every reply is read before the
        first error reply is raised, so the connection stays in step.
        """
        self.send(commands)
        replies = [
            self.read_reply(into=into[i] if into else None, alloc=alloc)
            for i in range(len(commands))
        ]
        if raise_on_error:
            for r in replies:
                if isinstance(r, ReplyError):
                    raise r
        return replies

    # --- writing -------------------------------------------------------------------------

    def send(self, commands: Sequence[Sequence[Any]]) -> None:
        """Write commands; large buffers go to the socket as they are, never copied."""
        out = bytearray()
        try:
            for args in commands:
                out += b"*%d\r\n" % len(args)
                for a in args:
                    if isinstance(a, bytes):
                        out += b"$%d\r\n" % len(a)
                        if len(a) >= BIG:
                            out = self._flush_big(out, a)
                        else:
                            out += a
                            out += _CRLF
                    elif isinstance(a, str):
                        b = a.encode()
                        out += b"$%d\r\n%b\r\n" % (len(b), b)
                    elif isinstance(a, int | float):
                        b = repr(a).encode()
                        out += b"$%d\r\n%b\r\n" % (len(b), b)
                    elif isinstance(a, tuple):
                        parts = [memoryview(p).cast("B") for p in a]
                        out += b"$%d\r\n" % sum(p.nbytes for p in parts)
                        for p in parts:
                            if p.nbytes >= BIG:
                                out = self._flush_big(out, p, crlf=False)
                            else:
                                out += p
                        out += _CRLF
                    elif a is None:
                        raise TypeError("a Redis command argument cannot be None")
                    else:
                        mv = memoryview(a).cast("B")
                        out += b"$%d\r\n" % mv.nbytes
                        if mv.nbytes >= BIG:
                            out = self._flush_big(out, mv)
                        else:
                            out += mv
                            out += _CRLF
            if out:
                self._sendall(out)
        except OSError as e:
            self._lost(e)

    def _flush_big(self, out: bytearray, data: Buffer, crlf: bool = True) -> bytearray:
        self._sendall(out)
        self._sendall(data)
        return bytearray(_CRLF) if crlf else bytearray()

    def _sendall(self, data: Buffer) -> None:
        if self._sock is None:
            raise ConnectionError(f"connection to {self.name} is closed")
        self._sock.sendall(data)

    # --- reading -------------------------------------------------------------------------

    def read_reply(
        self, into: Buffer | None = None, alloc: Alloc | None = None, timeout: float | None = -1.0
    ) -> Any:
        """Read one reply.

        A bulk string goes into `into` when given (returned as a memoryview on it), else into
        `alloc(n)` when `alloc` is given or the string is at least BIG bytes long. `timeout`
        (seconds, None = forever) overrides the connection's for this read; when it expires
        the connection is closed, since a reply may have been half read, and TimeoutError is
        raised.
        """
        if self._sock is None:
            raise ConnectionError(f"connection to {self.name} is closed")
        if timeout != -1.0:
            self._sock.settimeout(timeout)
        try:
            return self._parse(into, alloc)
        except TimeoutError:
            self.close()
            if timeout != -1.0:
                raise
            raise ConnectionError(
                f"{self.name} did not answer within {self.timeout:g} s; connection closed"
            ) from None
        except OSError as e:
            self._lost(e)
        finally:
            if timeout != -1.0 and self._sock is not None:
                self._sock.settimeout(self.timeout)

    def _lost(self, e: OSError) -> None:
        self.close()
        if type(e) is ConnectionError or isinstance(e, AuthenticationError):
            raise e
        raise ConnectionError(f"lost connection to {self.name}: {e.strerror or e}") from None

    def _parse(self, into: Buffer | None, alloc: Alloc | None) -> Any:
        line = self._readline()
        t = line[:1]
        if t == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            return self._read_bulk(n, into, alloc)
        if t == b"+":
            return line[1:].decode()
        if t == b":":
            return int(line[1:])
        if t == b"*":
            n = int(line[1:])
            if n < 0:
                return None
            return [self._parse(None, None) for _ in range(n)]
        if t == b"-":
            msg = line[1:].decode(errors="replace")
            if msg.startswith(("NOAUTH", "WRONGPASS")) or "without any password" in msg:
                self.close()
                raise AuthenticationError(f"authentication to {self.name} failed: {msg}")
            return ReplyError(msg)
        self.close()
        raise ConnectionError(f"{self.name} sent a reply this client cannot parse: {line[:40]!r}")

    def _readline(self) -> bytes:
        buf = self._buf
        while True:
            i = buf.find(_CRLF, self._pos)
            if i >= 0:
                line = bytes(buf[self._pos : i])
                self._pos = i + 2
                return line
            self._fill()

    def _fill(self) -> None:
        buf = self._buf
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        n = self._sock.recv_into(self._chunk) if self._sock else 0
        if n == 0:
            self.close()
            raise ConnectionError(f"lost connection to {self.name}: the server closed it")
        buf += self._chunkview[:n]

    def _read_bulk(self, n: int, into: Buffer | None, alloc: Alloc | None) -> Any:
        buf, pos = self._buf, self._pos
        have = len(buf) - pos
        if into is None and (alloc is None and n < BIG):
            while have < n + 2:
                self._fill()
                buf, pos = self._buf, self._pos
                have = len(buf) - pos
            self._pos = pos + n + 2
            return bytes(buf[pos : pos + n])
        if into is not None:
            dst = memoryview(into).cast("B")
            if dst.nbytes < n:
                raise ValueError(f"reply of {n} bytes does not fit a {dst.nbytes}-byte buffer")
            dst = dst[:n]
        else:
            dst = memoryview((alloc or _alloc)(n)).cast("B")
        k = min(have, n)
        dst[:k] = buf[pos : pos + k]
        self._pos = pos + k
        sock = self._sock
        assert sock is not None
        while k < n:
            got = sock.recv_into(dst[k:], n - k)
            if got == 0:
                self.close()
                raise ConnectionError(f"lost connection to {self.name}: the server closed it")
            k += got
        self._readline()
        return dst
