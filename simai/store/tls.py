"""TLS for the ``rediss://`` store: a run's own certificate authority and the files clients need.

Both sides prove who they are (mutual TLS): redis-server presents a certificate for the
addresses clients reach it at, and refuses a client whose certificate its CA did not sign.
simai makes a new CA for each store it starts (or takes the user's files), keeps every file
mode 0600 in a private directory, and hands clients the paths the way it hands them the
password: in the environment (:data:`ENV_TLS_CA`, :data:`ENV_TLS_CERT`, :data:`ENV_TLS_KEY`),
never on a command line.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from simai.store.private import private_dir

ENV_TLS_CA = "SIMAI_STORE_TLS_CA"
ENV_TLS_CERT = "SIMAI_STORE_TLS_CERT"
ENV_TLS_KEY = "SIMAI_STORE_TLS_KEY"
#: how long the certificates simai makes stay valid (a run longer than this needs new ones)
VALID_DAYS = 365


@dataclass(frozen=True)
class TLSFiles:
    """One side's TLS files: the CA certificate that signs both sides, and this side's
    certificate and private key (PEM)."""

    ca: Path
    cert: Path
    key: Path

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            object.__setattr__(self, name, Path(getattr(self, name)).resolve())

    def env(self) -> dict[str, str]:
        """The environment variables that hand these files to a client."""
        return {ENV_TLS_CA: str(self.ca), ENV_TLS_CERT: str(self.cert), ENV_TLS_KEY: str(self.key)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TLSFiles | None:
        """The files the environment names; None when it names none, ValueError when it
        names only some."""
        environ = os.environ if environ is None else environ
        names = (ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY)
        values = [environ.get(n) or None for n in names]
        if not any(values):
            return None
        missing = [n for n, v in zip(names, values, strict=True) if v is None]
        if missing:
            raise ValueError(
                f"TLS needs {', '.join(names)} together; {', '.join(missing)} is not set"
            )
        return cls(*values)  # type: ignore[arg-type]

    def client_context(self) -> ssl.SSLContext:
        """A client's context: verifies the server against the CA and its address, and
        presents this side's certificate."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
            context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load the TLS files {self.describe()}: {e}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def describe(self) -> str:
        return f"(CA {self.ca}, certificate {self.cert}, key {self.key})"


@dataclass(frozen=True)
class Certificates:
    """What :func:`make_certificates` made: the server's files and the clients' files."""

    server: TLSFiles
    client: TLSFiles

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str]) -> Certificates:
        """The user's own files in ``directory``, named as :func:`make_certificates` names
        them (``ca.crt``, ``server.crt``, ``server.key``, ``client.crt``, ``client.key``);
        the keys must be readable by their owner only."""
        d = Path(directory)
        names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
        missing = [n for n in names if not (d / n).is_file()]
        if missing:
            raise FileNotFoundError(f"TLS directory {d} lacks {', '.join(missing)}")
        for key in ("server.key", "client.key"):
            mode = (d / key).stat().st_mode & 0o777
            if mode & 0o077:
                raise PermissionError(
                    f"{d / key} can be read by other users (mode {mode:04o}): chmod 600 it"
                )
        return cls(
            server=TLSFiles(d / "ca.crt", d / "server.crt", d / "server.key"),
            client=TLSFiles(d / "ca.crt", d / "client.crt", d / "client.key"),
        )


def default_hosts(bind: str) -> list[str]:
    """The names and addresses a server bound to ``bind`` is reached at: each bound address
    (or, bound to every interface, this host's names and addresses), and loopback."""
    hosts: list[str] = []
    for address in bind.split():
        if address in ("0.0.0.0", "::", "*"):
            hosts += [socket.gethostname(), socket.getfqdn()]
            try:
                infos = socket.getaddrinfo(socket.gethostname(), None)
            except OSError:
                infos = []
            hosts += [str(info[4][0]) for info in infos]
        else:
            hosts.append(address)
    hosts += ["localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(h for h in hosts if h))


def make_certificates(
    directory: str | os.PathLike[str], hosts: Iterable[str], days: int = VALID_DAYS
) -> Certificates:
    """A new CA in ``directory`` (made private), a server certificate it signs for
    ``hosts`` (names and IP addresses), and a client certificate it signs; every file 0600.
    The CA's key signs nothing else and is not kept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(private_dir(directory))
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "simai"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def builder(
        subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"simai run CA {os.urandom(4).hex()}")
    ca = (
        builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    def leaf(common: str, purpose: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            builder(name(common), ca_name, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(authority, critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server, server_key = leaf("simai store", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client, client_key = leaf("simai client", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    pem = serialization.Encoding.PEM

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    files = {
        "ca.crt": ca.public_bytes(pem),
        "server.crt": server.public_bytes(pem),
        "server.key": key_pem(server_key),
        "client.crt": client.public_bytes(pem),
        "client.key": key_pem(client_key),
    }
    for filename, data in files.items():
        _write_private(out / filename, data)
    return Certificates(
        server=TLSFiles(out / "ca.crt", out / "server.crt", out / "server.key"),
        client=TLSFiles(out / "ca.crt", out / "client.crt", out / "client.key"),
    )


def _usage(cert_sign: bool) -> object:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600, replacing a file of ours and never following a symlink."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
