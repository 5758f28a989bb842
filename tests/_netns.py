"""Two test hosts on this machine, network namespaces joined by a veth pair (scripts/netns.sh).

Import the fixture into tests/conftest.py (``from _netns import netns_hosts_fixture``); tests
then ask for ``netns_hosts``. It skips when network namespaces cannot be used here (not root,
no iproute2, or the sandbox refuses ``ip netns add``); hosts that can be made but fail to come
up fail the test.

Traffic to the hosts' addresses must come from inside a namespace (``host.command(...)``):
the test process itself sits in the machine's own namespace, where those addresses are not on
any link and would be sent to the default route.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "netns.sh"
NAMES = (os.environ.get("SIMAI_NETNS_A", "simai-a"), os.environ.get("SIMAI_NETNS_B", "simai-b"))
_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


@dataclass(frozen=True)
class NetnsHost:
    """One test host: a network namespace and its address on the link to the other host."""

    name: str
    address: str
    interface: str

    def command(self, *args: str) -> list[str]:
        """`args` as a command line that runs inside this host's namespace."""
        return [_ip(), "netns", "exec", self.name, *args]

    def run(self, *args: str, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command on this host and capture its output."""
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, **kw
        )

    def received_bytes(self) -> int:
        """Bytes this host has received on its link so far (the kernel's counter)."""
        shown = subprocess.run(
            [_ip(), "-n", self.name, "-j", "-s", "link", "show", self.interface],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(json.loads(shown.stdout)[0]["stats64"]["rx"]["bytes"])


@dataclass(frozen=True)
class NetnsHosts:
    """Host `a` and host `b`, which reach each other at `a.address` and `b.address`."""

    a: NetnsHost
    b: NetnsHost


def _ip() -> str:
    return shutil.which("ip", path=_PATH) or "ip"


def _hosts(status: str) -> NetnsHosts:
    """The hosts from `scripts/netns.sh status` lines: `NAME ADDR/LEN dev IFACE up`."""
    found = {}
    for line in status.splitlines():
        name, cidr, _, interface, *_ = line.split()
        found[name] = NetnsHost(name, cidr.split("/")[0], interface)
    return NetnsHosts(found[NAMES[0]], found[NAMES[1]])


def _script(command: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=_PATH)
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="session", name="netns_hosts")
def netns_hosts_fixture() -> Iterator[NetnsHosts]:
    """Bring up the two hosts for the session and remove them at the end.

    Hosts that were already up (made by hand with `scripts/netns.sh up`) are used and left up.
    """
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (scripts/netns.sh up)")
    if shutil.which("ip", path=_PATH) is None:
        pytest.skip("iproute2's `ip` is not installed (apt-get install iproute2)")
    already_up = _script("status").returncode == 0
    up = _script("up")
    if up.returncode == 2:
        pytest.skip(up.stderr.strip() or "network namespaces are unavailable here")
    if up.returncode != 0:
        pytest.fail(f"scripts/netns.sh up failed:\n{up.stderr}", pytrace=False)
    try:
        yield _hosts(up.stdout)
    finally:
        if not already_up:
            down = _script("down")
            if down.returncode != 0:
                print(f"scripts/netns.sh down failed:\n{down.stderr}")
