"""The `simai` command line.

    simai store start [--shards N] [--port P] [--bind ADDR] [--persist-dir DIR]
                      [--tls [--tls-host NAME ...] | --tls-dir DIR]
    simai store stop | status | env
    simai store user add NAME [--read PREFIX ...] [--write PREFIX ...] | remove NAME
    simai run [--resume] SCRIPT [ARGS...]
    simai submit --slurm [--jobs N] [--time T] [--partition P] [--run-dir RUN]
                 [--sbatch-arg=ARGS] SCRIPT [ARGS...]
    simai status RUN [--json] [--failures N] [--names N]
    simai report RUN [-o FILE]
    simai logs RUN NAME [--tail N]
    simai stop RUN [--timeout S]

`simai store start` records what it started (pids, ports, password) in a 0600 JSON file,
$SIMAI_HOME/store.json (SIMAI_HOME defaults to ~/.simai), and prints shell lines exporting
SIMAI_STORE and SIMAI_STORE_PASSWORD (and, with --tls, the SIMAI_STORE_TLS_* files), so
`eval "$(simai store start)"` sets up a shell.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simai.checks import check_int
from simai.store import ENV_PASSWORD, ENV_URL
from simai.store.access import ENV_ACCESS, ENV_USER, StoreAccess
from simai.store.redis_server import DEFAULT_PORT, RedisServers
from simai.store.tls import Certificates, TLSFiles

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
    env = {ENV_URL: state["url"], ENV_PASSWORD: state["password"]}
    tls = state.get("tls")
    if tls:
        env.update(TLSFiles(**tls).env())
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items())


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


# --- simai store ... -------------------------------------------------------------------


def store_start(args: argparse.Namespace) -> int:
    if args.tls_host and not args.tls:
        raise CLIError("--tls-host names an address for the TLS certificate: it needs --tls")
    tls: bool | Certificates = args.tls
    if args.tls_dir is not None:
        if args.tls or args.tls_host:
            raise CLIError("--tls-dir brings your own certificates: leave out --tls and --tls-host")
        try:
            tls = Certificates.from_dir(args.tls_dir)
        except OSError as e:
            raise CLIError(str(e)) from None
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
        tls=tls,
        tls_hosts=args.tls_host,
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


def _admin_store(state: dict[str, Any]) -> Any:
    """The recorded store, opened as its administrating user."""
    from simai.store.redis import RedisStore

    tls = state.get("tls")
    return RedisStore(
        state["url"], password=state["password"], tls=TLSFiles(**tls) if tls else None
    )


_USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def store_user_add(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None:
        raise CLIError(f"no store recorded in {_state_file()}; start one with `simai store start`")
    if not _USER_NAME.fullmatch(args.name) or args.name == "default":
        raise CLIError(
            f"user name {args.name!r}: use 1 to 64 letters, digits, '_', '.' or '-' (not "
            "'default', the store's administrating user)"
        )
    if not args.read and not args.write:
        raise CLIError("say what the user may do: --read PREFIX and/or --write PREFIX")
    access = StoreAccess.of({"read": args.read, "write": args.write})
    assert access is not None
    secret = secrets.token_urlsafe(24)
    with _admin_store(state) as store:
        store.set_user(args.name, secret, access)
    env = {
        ENV_URL: state["url"],
        ENV_USER: args.name,
        ENV_PASSWORD: secret,
        ENV_ACCESS: access.to_json(),
    }
    if state.get("tls"):
        env.update(TLSFiles(**state["tls"]).env())
    _note(f"# store user {args.name!r} may {access.describe()}; remove with "
          f"`simai store user remove {args.name}`")  # fmt: skip
    print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
    return 0


def store_user_remove(args: argparse.Namespace) -> int:
    state = _read_state()
    if state is None:
        raise CLIError(f"no store recorded in {_state_file()}: no users to remove")
    with _admin_store(state) as store:
        store.delete_user(args.name)
    _note(f"# removed store user {args.name!r} (its connections are closed)")
    return 0


# --- simai status RUN / simai logs RUN NAME ------------------------------------------------

_TASK_STATES = (
    "submitted",
    "running",
    "done",
    "recalled",
    "failed",
    "lost",
    "retried",
    "cancelled",
)
#: what the states that a resume brings mean
_RESUME_STATES = {
    "recalled": "finished by an earlier attempt: its result recalled, not run again",
    "lost": "not ended when its attempt was killed",
}


def _find_run(run: str) -> Any:
    """The run directory RUN: a path, or a run name under ./runs/."""
    from simai.workflow import RunDir
    from simai.workflow.rundir import DEFAULT_ROOT

    for path in (Path(run), Path(DEFAULT_ROOT) / run):
        if RunDir.exists(path):
            return RunDir(path, create=False)
    root = Path(DEFAULT_ROOT)
    known = sorted(p.name for p in root.iterdir() if RunDir.exists(p)) if root.is_dir() else []
    listing = f"; runs under {root.absolute()}: {', '.join(known)}" if known else ""
    raise CLIError(
        f"no run directory {run!r} (looked for {Path(run).absolute()} and "
        f"{(root / run).absolute()}){listing}"
    )


def _status_data(run_dir: Any, failures: int) -> dict[str, Any]:
    from simai.observe.queries import summary

    return summary(run_dir, failure_limit=failures)


def _when(t: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _table(headers: Sequence[str], rows: list[Sequence[Any]], indent: str = "  ") -> list[str]:
    cells = [list(map(str, headers))] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]


def _first_line(text: str | None, width: int = 100) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "-"
    return line if len(line) <= width else line[: width - 3] + "..."


def _status_lines(run_dir: Any, data: dict[str, Any], names: int) -> list[str]:
    """The one-screen text summary of a run."""
    from simai.observe.formatting import fmt_bytes, fmt_dur, fmt_mem, fmt_num

    config, live = data["config"], data["live"]
    runs = data["runs"]
    state = "running" if live else (runs[-1]["status"] if runs else "no records yet")
    elapsed = f", {fmt_dur(data['elapsed'])} elapsed" if data["elapsed"] is not None else ""
    out = [f"run {run_dir.path}: {state}{elapsed}"]
    described = [f"{k} {config[k]}" for k in ("workflow", "store", "executor") if k in config]
    if described:
        out.append("  " + ", ".join(described))
    if live:
        out.append(f"  live: pid {live['pid']} on {live['host']}")
    else:
        out.append("  live: no (no process holds the run's lock)")
    out.append("")
    out.append("attempts:")
    out += _table(
        ("#", "started", "ended", "status", "host", "pid", "tasks"),
        [
            (
                r["attempt"],
                _when(r["started"]),
                _when(r["ended"]),
                r["status"],
                r["host"],
                r["pid"],
                ", ".join(f"{n} {state}" for state, n in r["tasks"].items()),
            )
            for r in runs[-3:]
        ],
    )
    if len(runs) > 3:
        out.append(f"  ({len(runs) - 3} earlier attempts not shown)")
    if data["components"]:
        out.append("")
        out.append("components:")
        out += _table(
            ("name", "state", "restarts", "last event", "at", "host", "up", "detail"),
            [
                (
                    c["name"],
                    c["state"],
                    c["restarts"],
                    c["last_event"],
                    _when(c["time"]),
                    c["host"],
                    fmt_dur(c.get("uptime")),
                    _first_line(c["detail"], 50),
                )
                for c in data["components"]
            ],
        )
    tasks = data["tasks"]
    out.append("")
    total = sum(tasks.values())
    out.append(f"tasks: {total} ({data['queued']} queued)")
    if total:
        states = [s for s in _TASK_STATES if s in tasks] + sorted(set(tasks) - set(_TASK_STATES))
        by_size = sorted(data["task_names"].items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        out += _table(
            ("name", *states),
            [("all", *(tasks.get(s, 0) for s in states))]
            + [(name, *(counts.get(s, 0) for s in states)) for name, counts in by_size[:names]],
        )
        if len(by_size) > names:
            out.append(f"  ({len(by_size) - names} more task names; --names N shows more)")
        out += [f"  {state}: {text}" for state, text in _RESUME_STATES.items() if state in tasks]
        durations = data["durations"]
        if durations:
            out.append("")
            out.append("durations of finished tasks; CPU time and highest peak memory of all:")
            out += _table(
                ("name", "count", "mean", "min", "max", "cpu", "peak memory"),
                [
                    (
                        name,
                        d["count"],
                        fmt_dur(d["mean"]),
                        fmt_dur(d["min"]),
                        fmt_dur(d["max"]),
                        fmt_dur(d.get("cpu")),
                        fmt_mem(d.get("peak_rss")),
                    )
                    for name, d in sorted(durations.items(), key=lambda kv: -kv[1]["count"])[:names]
                ],
            )
    if data["metrics"]:
        out.append("")
        out.append("metrics (latest):")
        out += _table(
            ("name", "value", "step", "at", "values"),
            [
                (name, fmt_num(m["value"]), m["step"], _when(m["time"]), m["count"])
                for name, m in list(data["metrics"].items())[:names]
            ],
        )
        if len(data["metrics"]) > names:
            out.append(f"  ({len(data['metrics']) - names} more metrics; --names N shows more)")
    if data["store"]:
        out.append("")
        out.append(
            "store bytes moved: "
            + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in list(data["store"].items())[:names])
        )
    if data["failures_total"]:
        shown = len(data["failures"])
        out.append("")
        reasons = sorted(data.get("failure_reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))
        why = ": " + ", ".join(f"{n} {reason}" for reason, n in reasons) if reasons else ""
        out.append(f"failures: {data['failures_total']} (newest {shown} shown){why}")
        for f in data["failures"]:
            item = f"{f['name']}[{f['item_id']}]" if f["item_id"] is not None else f["name"]
            reason = f" ({f['reason']})" if f.get("reason") else ""
            where = f"at {_when(f['time'])} on {f['host'] or '-'}"
            out.append(f"  {f['kind']} {item} {where}{reason}:")
            detail = (f["detail"] or "(no detail recorded)").rstrip().splitlines()[-3:]
            out += [f"    {line}" for line in detail]
    return out


def status(args: argparse.Namespace) -> int:
    run_dir = _find_run(args.run)
    data = _status_data(run_dir, args.failures)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print("\n".join(_status_lines(run_dir, data, args.names)))
    return 0


def report(args: argparse.Namespace) -> int:
    """Write the run's HTML report."""
    import time

    from simai.observe.report import write_report

    run_dir = _find_run(args.run)
    output = Path(args.output) if args.output else run_dir.path / "report.html"
    start = time.perf_counter()
    path = write_report(run_dir, output)
    size = path.stat().st_size
    _note(
        f"# wrote {path} ({size / 1e6:.2f} MB, {time.perf_counter() - start:.1f} s); "
        "open it in a browser"
    )
    print(path)
    return 0


def logs(args: argparse.Namespace) -> int:
    run_dir = _find_run(args.run)
    try:
        path = run_dir.find_log(args.name)
    except KeyError as e:
        raise CLIError(e.args[0]) from None
    out = sys.stdout.buffer
    with open(path, "rb") as f:
        if args.tail is None:
            while chunk := f.read(1 << 20):
                out.write(chunk)
        else:
            out.write(b"".join(_tail(f, args.tail)))
    out.flush()
    return 0


def _tail(f: Any, n: int) -> list[bytes]:
    """The last ``n`` lines of a binary file, read backwards in blocks."""
    pos = f.seek(0, os.SEEK_END)
    data = b""
    while pos > 0 and data.count(b"\n") <= n:
        step = min(pos, 1 << 16)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    return data.splitlines(keepends=True)[-n:]


# --- parser ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run a workflow script in this process, as `python SCRIPT ARGS...` would: what the
    script raises is printed with its traceback (exit status 1), not as a `simai` error."""
    import traceback

    from simai.workflow import run_script
    from simai.workflow.script import script_path

    path = str(script_path(args.script))  # no such script: an error of the command line
    try:
        return run_script(args.script, args.args, resume=args.resume)
    except Exception as e:  # noqa: BLE001 - the script's own error, shown as python shows it
        tb = e.__traceback__
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != path:
            tb = tb.tb_next  # from the script's frame on, without simai's
        traceback.print_exception(type(e), e, tb or e.__traceback__)
        return 1


def stop(args: argparse.Namespace) -> int:
    """Ask a running workflow to stop: it stops its components and exits cleanly."""
    import socket
    import time

    from simai.workflow.workflow import STOP_REQUEST

    run_dir = _find_run(args.run)
    holder = run_dir.holder()
    if holder is None:
        _note(f"run {run_dir.path} is not running")
        return 0
    (run_dir.path / STOP_REQUEST).touch()
    if holder.get("host") == socket.gethostname() and holder.get("pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder["pid"], signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while run_dir.holder() is not None:
        if time.monotonic() > deadline:
            raise CLIError(f"run {run_dir.path} still running after {args.timeout:g} s")
        time.sleep(0.1)
    _note(f"stopped run {run_dir.path}")
    return 0


def submit(args: argparse.Namespace) -> int:
    """`simai submit --slurm ...`: submit the chain and print its job ids."""
    if not args.slurm:
        raise ValueError("simai submit needs a scheduler: --slurm (the only one so far)")
    from simai.workflow.slurm import chain_root, submit_chain

    ids = submit_chain(
        args.script,
        args.args,
        jobs=args.jobs,
        time=args.time,
        partition=args.partition,
        sbatch_args=[a for s in args.sbatch_arg for a in shlex.split(s)],
        run_dir=args.run_dir,
    )
    out = Path(chain_root(args.run_dir))
    print(f"# submitted {len(ids)} job(s), chain files under {out}", file=sys.stderr)
    print(" ".join(ids))
    return 0


NATIVE_BUILD = (
    "cmake -S native -B build/native -DCMAKE_INSTALL_PREFIX={prefix} && "
    "cmake --build build/native -j2 && cmake --install build/native"
)


def _pc_fields(path: Path) -> dict[str, str]:
    """The fields (``Cflags``, ``Libs``, ...) of a pkg-config file, its variables expanded."""
    variables: dict[str, str] = {}
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z_][\w.]*)\s*([=:])\s*(.*)", line)
        if match is None or line.lstrip().startswith("#"):
            continue
        name, sep, value = match.groups()
        value = re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), value.strip())
        (variables if sep == "=" else fields)[name] = value
    return fields


def native(args: argparse.Namespace) -> int:
    """`simai native`: the flags that compile and link a C, C++ or Fortran program with
    libsimai installed under PREFIX (default: this Python's environment)."""
    prefix = Path(args.prefix or sys.prefix)
    found = {pc.stem: pc for pc in sorted(prefix.glob("lib*/**/pkgconfig/simai*.pc"), reverse=True)}
    if "simai" not in found:
        raise CLIError(
            f"libsimai is not installed under {prefix}: build and install it from simai's "
            f"source tree with `{NATIVE_BUILD.format(prefix=shlex.quote(str(prefix)))}`"
        )
    c = _pc_fields(found["simai"])
    words: list[str] = []
    if args.cflags:
        words.append(c.get("Cflags", ""))
    if args.libs:
        words.append(c.get("Libs", ""))
    if args.fflags:
        if "simai-fortran" not in found:
            raise CLIError(
                f"libsimai under {prefix} was built without its Fortran module (no Fortran "
                "compiler was found): install gfortran and build it again"
            )
        fortran = _pc_fields(found["simai-fortran"])
        words += [fortran.get("Cflags", ""), fortran.get("Libs", ""), c.get("Libs", "")]
    if args.prefix_path:
        words.append(str(prefix))
    if not words:
        raise CLIError("say what to print: --cflags, --libs, --fflags or --prefix-path")
    print(" ".join(dict.fromkeys(w for word in words for w in word.split())))
    return 0


def _add_native_parser(commands: Any) -> None:
    """Add ``simai native`` to the subcommands of the `simai` parser."""
    p = commands.add_parser(
        "native",
        help="compiler flags for C, C++ and Fortran programs that use libsimai",
        description="Print the flags that compile (--cflags) and link (--libs) a C or C++ "
        "program with libsimai, or compile and link a Fortran one (--fflags), or the prefix "
        "for CMake's CMAKE_PREFIX_PATH (--prefix-path), as installed under PREFIX (default: "
        "this Python's environment). Example: cc sim.c $(simai native --cflags --libs).",
    )
    p.add_argument("--cflags", action="store_true", help="compile flags (C, C++)")
    p.add_argument("--libs", action="store_true", help="link flags (C, C++)")
    p.add_argument("--fflags", action="store_true", help="compile and link flags (Fortran)")
    p.add_argument("--prefix-path", action="store_true", help="the prefix, for CMake")
    p.add_argument("--prefix", default=None, help="where libsimai is installed")
    p.set_defaults(func=native)


def _add_submit_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``simai submit`` to the subcommands of the `simai` parser."""
    p = commands.add_parser(
        "submit",
        help="run a workflow script as a chain of batch jobs that resume one another",
        description="Submit SCRIPT ARGS as JOBS Slurm jobs, each starting after the previous "
        "one ended and running `simai run --resume` on it: a job cut by its time limit is "
        "continued by the next. Prints the job ids.",
    )
    p.add_argument("--slurm", action="store_true", required=True, help="submit with sbatch")
    p.add_argument("--jobs", type=_int_arg("jobs", 1), default=2, help="jobs in the chain (2)")
    p.add_argument("--time", default="0:30", help="each job's --time limit (0:30)")
    p.add_argument("--partition", default=None, help="Slurm partition (the default one)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="the workflow's run directory, if known: chain files go under it, and a job "
        "skips a run whose last attempt is done",
    )
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARGS",
        help="more sbatch options, e.g. --sbatch-arg='--nodes=2 --account=abc' (repeatable)",
    )
    p.add_argument("script", metavar="SCRIPT", help="the workflow's Python script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=submit)
    return p


def _int_arg(name: str, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int in minimum..maximum, refused in :mod:`simai.checks`' words."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        try:
            return check_int(name, number, minimum, maximum=maximum)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


_port = _int_arg("port", 0, maximum=65535)


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
        "shell lines exporting SIMAI_STORE and SIMAI_STORE_PASSWORD (and the TLS files with "
        '--tls): eval "$(simai store start)".',
    )
    start.add_argument(
        "--shards", type=_int_arg("shards", 1), default=1, help="number of shards (1)"
    )
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
    start.add_argument(
        "--tls",
        action="store_true",
        help="speak only TLS (rediss://), with a new CA and certificates; clients need the "
        "SIMAI_STORE_TLS_* files it exports",
    )
    start.add_argument(
        "--tls-dir",
        default=None,
        metavar="DIR",
        help="speak only TLS with your own certificates: DIR holds ca.crt, server.crt, "
        "server.key, client.crt and client.key (keys mode 0600)",
    )
    start.add_argument(
        "--tls-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name or address clients reach the store at, for its certificate "
        "(repeatable; the bound addresses, this host's names and loopback are in already)",
    )
    start.set_defaults(func=store_start)
    for name, func, text in [
        ("stop", store_stop, "stop the recorded shards and forget them"),
        ("status", store_status, "ping each recorded shard"),
        ("env", store_env, "print the shell exports for the recorded store again"),
    ]:
        store_cmds.add_parser(name, help=text, description=text).set_defaults(func=func)
    user = store_cmds.add_parser(
        "user",
        help="add or remove a store user limited to key prefixes (for a component elsewhere)",
        description="Give a process (a component on another machine, say) a store user of its "
        "own: `add` prints the shell exports it needs (URL, user, secret, TLS files); "
        "`remove` takes the user away and closes its connections.",
    )
    user_cmds = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_cmds.add_parser("add", help="add a user and print its exports")
    add.add_argument("name", help="the user's name")
    add.add_argument(
        "--read",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a key prefix it may read (repeatable; '' for every key)",
    )
    add.add_argument("--write", action="append", default=[], metavar="PREFIX",
                     help="a key prefix it may write and read (repeatable)")  # fmt: skip
    add.set_defaults(func=store_user_add)
    remove = user_cmds.add_parser("remove", help="remove a user")
    remove.add_argument("name", help="the user's name")
    remove.set_defaults(func=store_user_remove)
    status_cmd = commands.add_parser(
        "status",
        help="summarise a run on one screen: tasks, components, durations, metrics, failures",
        description="Summarise a run from its records on one screen: attempts, each "
        "component's state, restarts and uptime, task counts by state with durations, the "
        "latest metrics, store traffic and the newest failures with their error. Works on a "
        "run in progress. RUN is a run directory or the name of one under ./runs/.",
    )
    status_cmd.add_argument("run", metavar="RUN", help="run directory, or a run name under ./runs")
    status_cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
    status_cmd.add_argument(
        "--failures",
        type=_int_arg("failures", 1),
        default=5,
        help="failures to show, newest first (5)",
    )
    status_cmd.add_argument(
        "--names",
        type=_int_arg("names", 1),
        default=10,
        help="task names and metrics to list, the biggest first (10)",
    )
    status_cmd.set_defaults(func=status)

    report_cmd = commands.add_parser(
        "report",
        help="write a run's report: one HTML page with timeline, utilisation, metrics, failures",
        description="Write the report of run RUN as one self-contained HTML file (opens "
        "without network): a timeline of every task and component by host and worker slot, "
        "cores in use, tasks running and waiting, store traffic, stream backlog, every metric "
        "against step and time, and the failures with their log tails. Works on a run in "
        "progress. RUN is a run directory or the name of one under ./runs/.",
    )
    report_cmd.add_argument("run", metavar="RUN", help="run directory, or a run name under ./runs")
    report_cmd.add_argument(
        "-o", "--output", default=None, help="where to write it (RUN/report.html)"
    )
    report_cmd.set_defaults(func=report)

    logs_cmd = commands.add_parser(
        "logs",
        help="print a component's or task's log",
        description="Print the log of component or task NAME of run RUN.",
    )
    logs_cmd.add_argument("run", metavar="RUN", help="run directory, or a run name under ./runs")
    logs_cmd.add_argument("name", metavar="NAME", help="component or task name")
    logs_cmd.add_argument(
        "--tail", type=_int_arg("tail", 1), default=None, help="only the last N lines"
    )
    logs_cmd.set_defaults(func=logs)

    run_cmd = commands.add_parser(
        "run",
        help="run a workflow script (--resume continues an earlier run)",
        description="Run the workflow script SCRIPT with ARGS, as python would. With --resume, "
        "every simai.Workflow in it continues its run: finished tasks are not run again.",
    )
    run_cmd.add_argument("--resume", action="store_true", help="continue the earlier run")
    run_cmd.add_argument("script", metavar="SCRIPT", help="the workflow's Python script")
    run_cmd.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    run_cmd.set_defaults(func=run)

    stop_cmd = commands.add_parser(
        "stop",
        help="stop a running workflow from another terminal",
        description="Ask the workflow running in RUN to stop its components and exit cleanly, "
        "and wait until it has.",
    )
    stop_cmd.add_argument("run", metavar="RUN", help="run directory, or a run name under ./runs")
    stop_cmd.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (60)")
    stop_cmd.set_defaults(func=stop)

    _add_submit_parser(commands)
    _add_native_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as e:
        _note(f"simai: error: {e}")
        return 1
    except BrokenPipeError:  # `simai status --json | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (OSError, ValueError, TypeError, RuntimeError) as e:  # checks of its arguments
        _note(f"simai {args.command}: error: {e}")
        return 1
    except KeyboardInterrupt:
        _note("simai: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
