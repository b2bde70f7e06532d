"""``hakeeperd`` (the daemon, foreground), ``lkstart`` / ``lkstop`` (in the background), and ``sendevent``."""

from __future__ import annotations

import argparse
import fcntl
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from hakeeper.cli.base import Arg, Context, arg, command, run_in_daemon
from hakeeper.config import Settings
from hakeeper.config import load as load_config
from hakeeper.control import Answer, forward_to_daemon
from hakeeper.db.model import check_name
from hakeeper.db.store import Lcd
from hakeeper.errors import (
    CommunicationFailed,
    HakeeperError,
    IllegalArgument,
    NotFound,
    OutOfRange,
    SystemCallFailed,
)
from hakeeper.events.alarm import SEVERITIES, Event, severity_name
from hakeeper.layout import CONFIG_ENV, DEFAULT_CONFIG, LOG_NAME, PID_NAME, ensure_state_dir, state_root
from hakeeper.logs.write import configure as configure_logging

if TYPE_CHECKING:
    from hakeeper.daemon import Daemon

OUT_NAME = "hakeeperd.out"  # hakeeperd's stderr under lkstart when it logs to journald or syslog
START_TIMEOUT = 20.0
STOP_TIMEOUT = 600.0
POLL = 0.05


async def dispatch(daemon: Daemon, command: str, argv: list[str], actor: str) -> Answer:
    """Run a command sent to hakeeperd's socket."""
    if command == "_ping":
        return Answer(0, f"{daemon.node} {os.getpid()}\n")
    if command == "_stop":
        daemon.stop(take_out_of_service="--remove" in argv)
        return Answer(0, "stopping\n")
    if command == "_fault":  # tests only: refused unless hakeeperd runs with HAKEEPER_TEST_FAULTS=1
        try:
            return Answer(0, daemon.services.inject(argv[0] if argv else "") + "\n")
        except HakeeperError as exc:
            return Answer(exc.exit_code, err=f"_fault: {exc}\n")
    if command in ("_revoked", "_renewed"):  # hakeeper cluster revoke / renew changed the identity files
        try:
            said = await (daemon.revoked_here() if command == "_revoked" else daemon.renewed_here())
        except HakeeperError as exc:
            return Answer(exc.exit_code, err=f"hakeeperd: {exc}\n")
        return Answer(0, said + "\n")
    if command in ("lkstart", "lkstop"):
        return Answer(2, err=f"{command}: cannot be sent to hakeeperd\n")
    out, err = io.StringIO(), io.StringIO()
    code = await run_in_daemon(
        command, argv, services=daemon, root=daemon.root, lcd=daemon.lcd, actor=actor, out=out, err=err
    )
    return Answer(code, out.getvalue(), err.getvalue())


DAEMON_OPTIONS = (
    arg("--recover-attempts", type=int, default=3, metavar="N",
        help="local recovery attempts per resource within the window (default 3)"),
    arg("--recover-window", type=float, default=300.0, metavar="SECONDS",
        help="the local recovery window (default 300)"),
    arg("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
        help="how long running actions may finish at shutdown (default 30)"),
    arg("--log-level", help="DEBUG | INFO | WARNING | ERROR (default: [log] level, else INFO)"),
)  # fmt: skip


def _check_daemon_options(args: argparse.Namespace) -> None:
    if args.recover_attempts < 0:
        raise OutOfRange(f"--recover-attempts {args.recover_attempts} must be 0 or more")
    if not 0 < args.recover_window <= 86400:
        raise OutOfRange(f"--recover-window {args.recover_window:g} must be within 0..86400 s")
    if not 0 <= args.drain_timeout <= 3600:
        raise OutOfRange(f"--drain-timeout {args.drain_timeout:g} must be within 0..3600 s")
    if args.log_level is not None and args.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise IllegalArgument(f"--log-level {args.log_level!r} is not DEBUG, INFO, WARNING or ERROR")


def _daemon_argv(args: argparse.Namespace) -> list[str]:
    return [
        "--recover-attempts", str(args.recover_attempts),
        "--recover-window", str(args.recover_window),
        "--drain-timeout", str(args.drain_timeout),
        *(["--log-level", args.log_level.upper()] if args.log_level is not None else []),
    ]  # fmt: skip


def hakeeperd(argv: list[str] | None = None) -> NoReturn:
    """Entry point of ``hakeeperd``: run the node daemon in the foreground."""
    from hakeeper.cli.base import Parser, one_line
    from hakeeper.daemon import Config, serve

    parser = Parser(prog="hakeeperd", description="the hakeeper node daemon, in the foreground (see: lkstart)")
    parser.add_argument("--root", metavar="DIR", help="state directory (default: $HAKEEPER_ROOT, else state_dir)")
    parser.add_argument(
        "--config", metavar="FILE", help=f"configuration file (default: ${CONFIG_ENV}, {DEFAULT_CONFIG})"
    )
    parser.add_argument("--log-target", metavar="TARGET", help="auto | journal | syslog | file (default: [log] target)")
    parser.add_argument("--log-file", metavar="FILE", help=f"the log file (default: [log] file, <root>/{LOG_NAME})")
    for option in DAEMON_OPTIONS:
        parser.add_argument(*option.flags, **option.options)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        _check_daemon_options(args)
        if args.config is not None:  # what hakeeperd reads later (a new LCD's node name) reads this file too
            os.environ[CONFIG_ENV] = os.path.abspath(args.config)
        settings = _settings(args, args.root)
        root = state_root(settings.state_dir)
        configure_logging(settings.table("log"))  # the guard and heartbeat processes log there too
    except HakeeperError as exc:
        sys.stderr.write(f"hakeeperd: {one_line(str(exc))}\n")
        sys.exit(exc.exit_code)
    config = Config(
        root=root,
        recover_attempts=args.recover_attempts,
        recover_window=args.recover_window,
        drain_timeout=args.drain_timeout,
    )
    sys.exit(serve(config, dispatch))


def _settings(args: argparse.Namespace, root: str | None) -> Settings:
    """The configuration (hakeeper.config) with this command line's options over it."""
    return load_config(
        options={
            "node.state_dir": root,
            "log.level": args.log_level,
            "log.target": getattr(args, "log_target", None),
            "log.file": getattr(args, "log_file", None),
        }
    )


def _running(root: Path) -> Answer | None:
    try:
        return forward_to_daemon(root, "_ping", [])
    except CommunicationFailed:
        return None


@command(
    "lkstart",
    "start hakeeperd on this node, in the background",
    arg("--log", metavar="FILE", help=f"log to FILE (default: as [log] says, else <root>/{LOG_NAME})"),
    *DAEMON_OPTIONS,
    local=True,
    epilog="The other options are hakeeperd's, passed on to it.",
)
def _lkstart(ctx: Context, args: argparse.Namespace) -> int:
    _check_daemon_options(args)
    root = ensure_state_dir(ctx.root)
    Lcd.open(root, verify=True).close()  # a damaged LCD: said here, not in the log of a daemon that stopped at once
    if (answer := _running(root)) is not None:
        ctx.print(f"hakeeperd runs already (node and pid: {answer.out.strip()})")
        _lease_warnings(ctx)
        return 0
    settings = _settings(args, str(root))  # a wrong configuration file is said here, not in a log
    to_file = args.log is not None or settings["log.target"] in ("auto", "file")  # auto: lkstart's is the file
    log_path = Path(args.log).absolute() if args.log else Path(settings.log_file)
    # Its stderr: the log file (what the interpreter itself may print, a crash, lands among the records),
    # or beside the LCD when it logs to journald or syslog.
    out_path = log_path if to_file else root / OUT_NAME
    try:
        log = open(out_path, "ab", opener=_private)  # noqa: SIM115 - handed to the child, closed below
    except OSError as exc:
        raise SystemCallFailed(f"cannot write the log {str(out_path)!r}: {exc.strerror}") from None
    where = log_path if to_file else f"{settings['log.target']} (hakeeperd's own output in {out_path})"
    with log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from hakeeper.cli.daemon import hakeeperd; hakeeperd()",
                "--root",
                str(root),
                *(["--log-target", "file", "--log-file", str(log_path)] if to_file else []),
                *_daemon_argv(args),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = out_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise SystemCallFailed(f"hakeeperd exited at once ({tail[0]}); see {out_path}")
        if _running(root) is not None:
            ctx.print(f"hakeeperd started (pid {proc.pid}), log in {where}")
            _lease_warnings(ctx)
            return 0
        time.sleep(POLL)
    raise SystemCallFailed(f"hakeeperd (pid {proc.pid}) did not answer within {START_TIMEOUT:g} s; see {where}")


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o640)  # as hakeeper.logs.write creates it


def _lease_warnings(ctx: Context) -> None:
    """Tell the administrator about each hierarchy whose clients a quorum loss may cut too late (lease.advice)."""
    from hakeeper.cluster.failover import hierarchies_in
    from hakeeper.cluster.lease import advice

    for h in hierarchies_in(ctx.lcd):
        warning = advice(ctx.lcd, h)
        if warning:
            ctx.print(f"warning: {warning}")


@command(
    "lkstop",
    "stop hakeeperd on this node; its resources are taken out of service unless -f",
    arg("-f", dest="leave", action="store_true", help="leave the protected applications running"),
    local=True,
    epilog="As LifeKeeper's lkstop, it takes this node's hierarchies out of service (it moves nothing);\n"
    "-f stops only the daemon. SIGTERM to hakeeperd is the same as lkstop -f.",
)
def _lkstop(ctx: Context, args: argparse.Namespace) -> int:
    root = ctx.root
    pid_text = (root / PID_NAME).read_text().strip() if (root / PID_NAME).exists() else ""
    if forward_to_daemon(root, "_stop", [] if args.leave else ["--remove"]) is None:
        ctx.print("hakeeperd is not running")
        return 0
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not holds_lock(root / PID_NAME):
            ctx.print("hakeeperd stopped" + ("" if args.leave else "; resources out of service"))
            return 0
        time.sleep(POLL)
    raise SystemCallFailed(f"hakeeperd (pid {pid_text or '?'}) did not stop within {STOP_TIMEOUT:g} s")


def holds_lock(pid_file: Path) -> bool:
    """Whether a hakeeperd still holds its pid file's lock (it holds it until its very end).

    Unlike ``kill -0``, this is not fooled by a zombie waiting to be reaped.
    """
    try:
        fd = os.open(pid_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _flag(letter: str) -> Arg:
    return arg(f"-{letter}", dest=f"flag_{letter}", action="store_true", help="passed on to the handlers")


EVENT_ARGS = (
    arg("-C", dest="cls", required=True, metavar="CLASS", help="class of the event, e.g. generic"),
    arg("-E", dest="event", required=True, metavar="EVENT", help="the event, e.g. failure"),
    arg("-m", dest="monitor", default="", metavar="MONITOR", help="the monitor that reports it"),
    arg("-n", dest="tag", required=True, metavar="NAME", help="the object: a resource tag"),
    arg("-c", dest="obj_class", metavar="CLASS", help="class of the object"),
    arg("-i", dest="event_id", metavar="ID", help="id of the alarm/event"),
    arg("-t", dest="time", metavar="YYMMDDHHMMSS", help="when it happened"),
    arg("-T", dest="timestamp", metavar="TIMESTAMP", help="when it happened, as the monitor writes it"),
    arg("-s", dest="severity", default="MAJOR", metavar="SEVERITY",
        help="INFO | WARNING | MAJOR (default) | CRITICAL, or 1 | 2 | 3 | 4 for the same"),
    _flag("o"),
    _flag("z"),
    _flag("w"),
    arg("-a", dest="alarm_type", metavar="TYPE", help="alarm/event type"),
    arg("-P", dest="problem_type", metavar="TYPE", help="problem type"),
    arg("-p", dest="problem_code", metavar="CODE", help="problem code"),
    arg("-d", dest="problem_data", metavar="DATA", help="problem data"),
    arg("-x", dest="text", default="", metavar="TEXT", help="problem text"),
    arg("-S", dest="system", default="", metavar="SYSTEM",
        help="the system it happened on (default: this node; another: its handlers run, no recovery)"),
    arg("-O", dest="outfile", default="", metavar="FILE", help="append the handlers' output to FILE (absolute path)"),
)  # fmt: skip

#: The options hakeeper only passes on to the handlers, in LifeKeeper's order: (option, attribute).
PASSED_ON = (
    ("-c", "obj_class"), ("-i", "event_id"), ("-t", "time"), ("-T", "timestamp"), ("-o", "flag_o"),
    ("-z", "flag_z"), ("-w", "flag_w"), ("-a", "alarm_type"), ("-P", "problem_type"), ("-p", "problem_code"),
    ("-d", "problem_data"),
)  # fmt: skip


def _event(args: argparse.Namespace) -> Event:
    if severity_name(args.severity) is None:
        raise IllegalArgument(
            f"severity {args.severity!r} is not one of {' | '.join(SEVERITIES)} (or 1-4 for the same, in that order)"
        )
    for what, value in (("class", args.cls), ("event", args.event)):
        if not value or "/" in value or value.startswith("."):
            raise IllegalArgument(f"event {what} {value!r} must be a plain name")
    if args.time is not None:
        try:
            if not (len(args.time) == 12 and args.time.isdigit()):
                raise ValueError
            time.strptime(args.time, "%y%m%d%H%M%S")
        except ValueError:
            raise IllegalArgument(f"-t {args.time!r} is not a time as YYMMDDHHMMSS") from None
    if args.system:
        check_name(args.system, "system name")
    if args.outfile and not os.path.isabs(args.outfile):
        raise IllegalArgument(f"-O {args.outfile!r} must be an absolute path (hakeeperd writes it)")
    extra: list[str] = []
    for option, attribute in PASSED_ON:
        value = getattr(args, attribute)
        if value is True:
            extra.append(option)
        elif isinstance(value, str):
            extra += [option, value]
    return Event(
        args.cls, args.event, args.tag, args.severity, args.monitor, args.text, args.system, args.outfile, tuple(extra)
    )


async def _sendevent_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    ctx.print(await ctx.daemon.send_event(_event(args)))
    return 0


@command(
    "sendevent",
    "report an event (a failure) to hakeeperd: handlers run, and local recovery for a resource in service",
    *EVENT_ARGS,
    in_daemon=_sendevent_in_daemon,
    node_option="--node",
    epilog="LifeKeeper's options, so that its monitors run unchanged: every handler in\n"
    "<root>/events/CLASS/EVENT/ (else events/genclass/), then events/allclass/, gets them all\n"
    "(-A too while an action runs on the object). -o, -z and -w mean nothing to hakeeper itself.\n"
    "The event goes to the hakeeperd of this node, or of another with --node NODE.",
)
def _sendevent(ctx: Context, args: argparse.Namespace) -> int:
    _event(args)  # bad input is reported before the missing daemon
    raise SystemCallFailed(
        f"hakeeperd is not running on {ctx.root}, nothing would act on the event (start it: lkstart)"
    )


REMOTE_OUTPUT = 1 << 20  # what lcdremexec brings back of a command's output


@command(
    "lcdremexec",
    "run a command on a node of the cluster (-d NODE) and return its output and exit code",
    arg("-e", dest="split", action="store_true", help="the command's stderr on stderr (default: with stdout)"),
    arg("-t", dest="timeout", type=float, default=900.0, metavar="SECONDS", help="time limit (default 900)"),
    arg("argv", nargs="+", metavar="CMD", help="the command and its arguments, after --"),
    epilog="example: lcdremexec -d node2 -- uname -n\n"
    "The command runs on NODE as the user hakeeperd runs as (administrators only: hakeeperd's socket\n"
    "admits only its owner). Without -d, or with this node, it runs here.",
)
def _lcdremexec(ctx: Context, args: argparse.Namespace) -> int:
    node = ctx.lcd.local_node  # also: a state directory is needed, as for every command
    if not 0 < args.timeout <= 86400:
        raise OutOfRange(f"-t {args.timeout:g} must be within 0..86400 seconds")
    try:
        done = subprocess.run(
            args.argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=args.timeout,
            start_new_session=True,
            check=False,
        )
    except FileNotFoundError:
        raise NotFound(f"no command {args.argv[0]!r} on node {node}") from None
    except OSError as exc:
        raise SystemCallFailed(f"{args.argv[0]!r} cannot be run on node {node}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise SystemCallFailed(f"{args.argv[0]!r} did not finish within {args.timeout:g} s") from None
    out = done.stdout[-REMOTE_OUTPUT:].decode(errors="replace")
    err = done.stderr[-REMOTE_OUTPUT:].decode(errors="replace")
    ctx.out.write(out if args.split else out + err)
    if args.split:
        ctx.err.write(err)
    return done.returncode if done.returncode >= 0 else 128 - done.returncode
