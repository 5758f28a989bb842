"""The `simai` command line.

    simai store start [--shards N] [--port P] [--bind ADDR] [--persist-dir DIR]
    simai store stop | status | env

`simai store start` records what it started (pids, ports, password) in a 0600 JSON file,
$SIMAI_HOME/store.json (SIMAI_HOME defaults to ~/.simai), and prints shell lines exporting
SIMAI_STORE and SIMAI_STORE_PASSWORD, so `eval "$(simai store start)"` sets up a shell.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simai.store import ENV_PASSWORD, ENV_URL
from simai.store.redis_server import DEFAULT_PORT, RedisServers

ENV_HOME = "SIMAI_HOME"


class CLIError(Exception):
    """A failure to report as one line on stderr, with exit status 1."""


def simai_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".simai").expanduser()


def _state_file() -> Path:
    return simai_home() / "store.json"


def _read_state() -> dict[str, Any] | None:
    path = _state_file()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read {path}: {e}; remove it if no store is running") from None


def _write_state(state: dict[str, Any]) -> None:
    path = _state_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)


def _exports(state: dict[str, Any]) -> str:
    return (
        f"export {ENV_URL}={shlex.quote(state['url'])}\n"
        f"export {ENV_PASSWORD}={shlex.quote(state['password'])}"
    )


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


# --- simai store ... -------------------------------------------------------------------


def store_start(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is not None:
        servers = RedisServers.attach(state)
        if servers.alive():
            raise CLIError(
                f"a store is already running at {state['url']} (pids "
                f"{', '.join(map(str, servers.pids))}, recorded in {_state_file()}); "
                "stop it first with `simai store stop`"
            )
        _note(f"# removing the record of a store that is no longer running: {_state_file()}")
        _state_file().unlink(missing_ok=True)
    simai_home().mkdir(mode=0o700, parents=True, exist_ok=True)
    servers = RedisServers(
        shards=args.shards,
        port=args.port,
        bind=args.bind,
        persist_dir=args.persist_dir,
        log_dir=simai_home() / "redis",
        detach=True,
    )
    try:
        _write_state(servers.state())
    except BaseException:
        servers.stop()
        raise
    _note(
        f"# started {args.shards} redis-server shard(s) at {servers.url} "
        f"(pids {', '.join(map(str, servers.pids))}); stop with `simai store stop`"
    )
    print(_exports(servers.state()))
    return 0


def store_stop(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None:
        raise CLIError(f"no store recorded in {_state_file()}: nothing to stop")
    servers = RedisServers.attach(state)
    servers.stop()
    if servers.alive():
        raise CLIError(f"some redis-server of {state['url']} did not stop; see {_state_file()}")
    _state_file().unlink(missing_ok=True)
    _note(f"# stopped the store at {state['url']}")
    return 0


def store_status(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None:
        _note(f"no store recorded in {_state_file()}")
        return 1
    servers = RedisServers.attach(state)
    problems = servers.ping()
    print(f"store {state['url']}")
    for shard, problem in zip(servers.shards, problems, strict=True):
        print(f"  {shard.address}  pid {shard.pid}  {'up' if problem is None else problem}")
    return 0 if not any(problems) else 1


def store_env(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None:
        raise CLIError(f"no store recorded in {_state_file()}; start one with `simai store start`")
    print(_exports(state))
    return 0


# --- parser ------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simai", description="Couple simulations with AI/ML: workflows, store, reports."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    store = commands.add_parser("store", help="start, stop and inspect redis-server shards")
    store_cmds = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    start = store_cmds.add_parser(
        "start",
        help="start redis-server shards and print shell exports",
        description="Start redis-server shards (password generated and required) and print "
        'shell lines exporting SIMAI_STORE and SIMAI_STORE_PASSWORD: eval "$(simai store start)".',
    )
    start.add_argument("--shards", type=_positive, default=1, help="number of shards (1)")
    start.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"first port; shards use consecutive ports ({DEFAULT_PORT}; 0 = any free ports)",
    )
    start.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (127.0.0.1: this node only)"
    )
    start.add_argument(
        "--persist-dir",
        default=None,
        help="keep the data here: saved at stop, loaded at the next start",
    )
    start.set_defaults(func=store_start)
    for name, func, text in [
        ("stop", store_stop, "stop the recorded shards and forget them"),
        ("status", store_status, "ping each recorded shard"),
        ("env", store_env, "print the shell exports for the recorded store again"),
    ]:
        store_cmds.add_parser(name, help=text, description=text).set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as e:
        _note(f"simai: error: {e}")
        return 1
    except (OSError, ValueError, RuntimeError) as e:
        _note(f"simai {args.command}: error: {e}")
        return 1
    except KeyboardInterrupt:
        _note("simai: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
