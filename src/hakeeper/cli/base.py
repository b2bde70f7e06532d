"""What every command shares: registration, argument parsing, output, and errors as exit codes.

Every command is registered once in :data:`COMMANDS` and can be run two ways:
``hakeeper ins_list -t web`` or ``ins_list -t web`` (a console script of the
LifeKeeper name). :func:`run` parses, runs and turns every error into one line
on stderr and LifeKeeper's exit code; it never lets a traceback reach the user.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from hakeeper.db.store import Lcd, state_root
from hakeeper.errors import CommunicationFailed, HakeeperError, NotFound, UsageError

FIELD_SEP = "\x01"  # LifeKeeper's default field separator (^A); -f changes it


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and LifeKeeper's syntax-error code."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


Runner = Callable[["Context", argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    arguments: tuple[Arg, ...]
    runner: Runner
    listing: bool
    epilog: str
    intermixed: bool


COMMANDS: dict[str, Command] = {}


def command(
    name: str, summary: str, *arguments: Arg, listing: bool = False, epilog: str = "", intermixed: bool = False
) -> Callable[[Runner], Runner]:
    """Register a command; ``listing`` adds ``--json`` and ``-f C`` (field separator).

    ``intermixed`` lets positional arguments stand between options (``create gen/app -t web restore=...``).
    """

    def register(runner: Runner) -> Runner:
        COMMANDS[name] = Command(name, summary, arguments, runner, listing, epilog, intermixed)
        return runner

    return register


class Context:
    """What a command runs with: the state directory, the LCD (opened on first use) and the output."""

    def __init__(self, root: Path, out: TextIO, err: TextIO) -> None:
        self.root = root
        self.out = out
        self.err = err
        self._lcd: Lcd | None = None

    @property
    def lcd(self) -> Lcd:
        if self._lcd is None:
            self._lcd = Lcd.open(self.root)
        return self._lcd

    def close(self) -> None:
        if self._lcd is not None:
            self._lcd.close()
            self._lcd = None

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def warn(self, text: str) -> None:
        self.err.write(text + "\n")

    def rows(self, args: argparse.Namespace, rows: Sequence[Sequence[object]], records: Any) -> None:
        """Print a listing: ``records`` as JSON with --json, else ``rows`` joined by the field separator."""
        if args.json:
            self.print(json.dumps(records, indent=2, ensure_ascii=False))
            return
        sep = args.field_sep
        self.out.write("".join(sep.join(str(v) for v in row) + "\n" for row in rows))


def build_parser(cmd: Command, prog: str) -> Parser:
    parser = Parser(
        prog=prog,
        description=cmd.summary,
        epilog=cmd.epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    for a in cmd.arguments:
        parser.add_argument(*a.flags, **a.options)
    if cmd.listing:
        parser.add_argument(
            "-f",
            dest="field_sep",
            default=FIELD_SEP,
            metavar="C",
            help="field separator (default ^A, as LifeKeeper; e.g. -f:)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.add_argument("-d", dest="dest", metavar="NODE", help="run against NODE's LCD (default: this node)")
    parser.add_argument("--root", metavar="DIR", help="state directory (default: $HAKEEPER_ROOT or /var/lib/hakeeper)")
    return parser


def run(
    name: str,
    argv: Sequence[str],
    *,
    prog: str | None = None,
    root: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run command ``name`` with ``argv``; return its exit code. Errors become one line on ``err``."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    shown = prog or name
    ctx: Context | None = None
    try:
        cmd = COMMANDS.get(name)
        if cmd is None:
            raise UsageError(f"unknown command {name!r} (see: hakeeper --help)")
        parser = build_parser(cmd, shown)
        args = parser.parse_intermixed_args(list(argv)) if cmd.intermixed else parser.parse_args(list(argv))
        if cmd.listing and len(args.field_sep) != 1:
            raise UsageError(f"-f takes one character, not {args.field_sep!r} (see: {shown} --help)")
        ctx = Context(state_root(args.root or root), out, err)
        if args.dest is not None:
            check_destination(ctx, args.dest)
        return cmd.runner(ctx, args)
    except HakeeperError as exc:
        err.write(f"{shown}: {exc}\n")
        return exc.exit_code
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        err.write(f"{shown}: interrupted\n")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception as exc:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("HAKEEPER_DEBUG"):
            logging.getLogger(__name__).exception("internal error in %s", shown)
        err.write(f"{shown}: internal error: {type(exc).__name__}: {exc} (set HAKEEPER_DEBUG=1 for details)\n")
        return 3
    finally:
        if ctx is not None:
            ctx.close()


def check_destination(ctx: Context, dest: str) -> None:
    """``-d NODE``: this node is served here; another node needs cluster communication."""
    nodes = {n.name for n in ctx.lcd.nodes()}
    if dest == ctx.lcd.local_node:
        return
    if dest not in nodes:
        raise NotFound(f"no node named {dest!r} (see: sys_list)")
    raise CommunicationFailed(f"cannot reach node {dest!r}: remote commands need cluster communication paths")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
