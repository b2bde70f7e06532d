"""What every command shares: registration, argument parsing, output, and errors as exit codes.

Every command is registered once in :data:`COMMANDS` and can be run two ways:
``hakeeper ins_list -t web`` or ``ins_list -t web`` (a console script of the
LifeKeeper name). :func:`run` parses, runs and turns every error into one line
on stderr and LifeKeeper's exit code; it never lets a traceback reach the user.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from hakeeper.cli.console import as_shown, silence_stdout
from hakeeper.control import forward_to_daemon
from hakeeper.db.model import CONTROL_CHARS
from hakeeper.db.store import Lcd
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, InternalError, NotFound, UsageError
from hakeeper.layout import state_root

if TYPE_CHECKING:
    from hakeeper.services import DaemonServices

# Commands print their own one-line errors; log records reach a terminal only where a
# program (hakeeperd) configures logging, never through Python's last-resort handler.
logging.getLogger("hakeeper").addHandler(logging.NullHandler())

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
AsyncRunner = Callable[["Context", argparse.Namespace], Awaitable[int]]
#: What a command does where it was typed, with what only that process has (``apply`` reads FILE or its
#: standard input: hakeeperd may not be able to), before it is run here or sent to hakeeperd. Returns
#: the argv to send instead of the one typed.
ClientStep = Callable[[argparse.Namespace, list[str]], list[str]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    arguments: tuple[Arg, ...]
    runner: Runner
    listing: bool
    epilog: str
    intermixed: bool
    local: bool  # never forwarded to hakeeperd (the commands that start and stop it)
    in_daemon: AsyncRunner | None  # how hakeeperd runs it in its event loop; None: in a worker thread
    node_option: str = "-d"  # the option naming another node's LCD (sendevent's -d is LifeKeeper's problem data)
    stateless: bool = False  # works on no state directory (lab, demo): takes neither --root nor the node option
    client: ClientStep | None = None  # run where the command was typed, before it may go to hakeeperd


COMMANDS: dict[str, Command] = {}

#: Which module defines each command. Only that module is imported to run it, so that a
#: command's start-up costs what it needs (lcdstatus does not load asyncio or the kits).
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(
        [
            "ins_create",
            "ins_remove",
            "ins_list",
            "ins_gettag",
            "ins_setstate",
            "ins_setinfo",
            "ins_setas",
            "ins_setinit",
            "ins_setchkint",
            "ins_setlocalrecover",
            "dep_create",
            "dep_remove",
            "dep_list",
            "eqv_create",
            "eqv_remove",
            "eqv_list",
            "typ_create",
            "typ_remove",
            "typ_list",
            "app_create",
            "app_remove",
            "app_list",
            "flg_create",
            "flg_remove",
            "flg_test",
            "flg_list",
            "changes",
        ],
        "hakeeper.cli.lcdi",
    ),
    **dict.fromkeys(
        [
            "sys_create",
            "sys_remove",
            "sys_list",
            "sys_getds",
            "sys_getst",
            "net_create",
            "net_change",
            "net_remove",
            "net_list",
            "settings",
        ],
        "hakeeper.cli.nodes",
    ),
    "lcdstatus": "hakeeper.cli.status",
    "status": "hakeeper.cli.clusterstatus",
    "kits": "hakeeper.cli.actions",
    "create": "hakeeper.cli.actions",
    "perform_action": "hakeeper.cli.actions",
    "sendevent": "hakeeper.cli.daemon",
    "lkstart": "hakeeper.cli.daemon",
    "lkstop": "hakeeper.cli.daemon",
    "lcdremexec": "hakeeper.cli.daemon",
    "cluster": "hakeeper.cli.cluster",
    "switchover": "hakeeper.cli.failover",
    "why": "hakeeper.cli.failover",
    "lk_confirmso": "hakeeper.cli.failover",
    "extend": "hakeeper.cli.extend",
    "unextend": "hakeeper.cli.extend",
    "update": "hakeeper.cli.update",
    "lcd": "hakeeper.cli.lcd",
    "apply": "hakeeper.cli.apply",
    "export": "hakeeper.cli.apply",
    "lab": "hakeeper.cli.lab",
    "demo": "hakeeper.cli.lab",
    "config": "hakeeper.cli.config",
    "log": "hakeeper.cli.logs",
    "mirror": "hakeeper.cli.mirror",
}

#: Commands that only read the LCD. They open it read-only: they work where the state
#: directory cannot be written (a monitoring user, a read-only mount), and cannot change it.
READ_ONLY = frozenset(
    {
        "ins_list",
        "ins_gettag",
        "dep_list",
        "eqv_list",
        "typ_list",
        "app_list",
        "flg_test",
        "flg_list",
        "sys_list",
        "net_list",
        "changes",
        "lcdstatus",
        "status",
        "export",
    }
)


def load(name: str) -> Command | None:
    """The command ``name``, importing its module on first use."""
    if name not in COMMANDS and name in COMMAND_MODULES:
        importlib.import_module(COMMAND_MODULES[name])
    return COMMANDS.get(name)


def load_all() -> dict[str, Command]:
    """Every command (for ``hakeeper --help`` and the tests)."""
    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(module)
    return COMMANDS


def command(
    name: str,
    summary: str,
    *arguments: Arg,
    listing: bool = False,
    epilog: str = "",
    intermixed: bool = False,
    local: bool = False,
    in_daemon: AsyncRunner | None = None,
    node_option: str = "-d",
    stateless: bool = False,
    client: ClientStep | None = None,
) -> Callable[[Runner], Runner]:
    """Register a command; ``listing`` adds ``--json`` and ``-f C`` (field separator).

    ``intermixed`` lets positional arguments stand between options (``create gen/app -t web restore=...``).
    ``node_option`` names the option that sends the command to another node's LCD. A ``stateless``
    command works on no node's state directory (``lab``, ``demo``): it has neither ``--root`` nor
    ``node_option``, and is never forwarded (it is ``local``). ``client``: see
    :data:`ClientStep`.
    """

    def register(runner: Runner) -> Runner:
        COMMANDS[name] = Command(
            name, summary, arguments, runner, listing, epilog, intermixed, local or stateless, in_daemon,
            node_option, stateless, client,
        )  # fmt: skip
        return runner

    return register


class Context:
    """What a command runs with: the state directory, the LCD (opened on first use), the output.

    Inside hakeeperd, ``services`` is the daemon (its engine, recovery, LCD) and
    ``actor`` the user who sent the command.
    """

    def __init__(
        self,
        root: Path,
        out: TextIO,
        err: TextIO,
        *,
        actor: str | None = None,
        lcd: Lcd | None = None,
        services: DaemonServices | None = None,
        replicator: Callable[[Lcd], Any] | None = None,
        readonly: bool = False,
    ) -> None:
        self.root = root
        self.readonly = readonly
        self.out = out
        self.err = err
        self.services = services
        self._replicator = replicator
        self._actor = actor
        self._lcd = lcd
        self._owns_lcd = lcd is None

    @property
    def lcd(self) -> Lcd:
        if self._lcd is None:
            self._lcd = Lcd.open(self.root, actor=self._actor, readonly=self.readonly)
            if not self.readonly and self._lcd.registered_kits() is None:  # a fresh LCD learns its kits
                from hakeeper.kits.registry import register_kits

                register_kits(self._lcd, self.root)
            if self._replicator is not None:
                self._lcd.replicator = self._replicator(self._lcd)
        return self._lcd

    @property
    def daemon(self) -> DaemonServices:
        """hakeeperd, for a command that runs in its event loop (``in_daemon``)."""
        if self.services is None:
            raise InternalError("this command runs inside hakeeperd, and was run without it")
        return self.services

    @property
    def actor(self) -> str:
        return self._actor or self.lcd.actor

    @property
    def replicated(self) -> bool:
        """Whether the LCD's changes reach the other nodes they concern (inside hakeeperd), or stay here."""
        return self._replicator is not None or self.services is not None

    def needs_daemon(self, node: str) -> CommunicationFailed:
        """The error of a change that must reach ``node`` while hakeeperd does not run here."""
        return CommunicationFailed(
            f"{node} is reached through hakeeperd, which is not running on {self.root} (start it: lkstart); "
            "nothing was changed"
        )

    def close(self) -> None:
        if self._lcd is not None and self._owns_lcd:
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
        inner, last = _escaping(sep)
        lines = []
        for row in rows:
            texts = [str(v) for v in row]
            if texts and inner.search("".join(texts)):  # rare: one search a row finds whether any field needs it
                texts[:-1] = [_escape(inner, t) for t in texts[:-1]]
                texts[-1] = _escape(last, texts[-1])
            lines.append(sep.join(texts) + "\n")
        self.out.write("".join(lines))


def _escaping(sep: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """What field output writes as ``\\xHH``: control characters anywhere (the LCD refuses them in new
    text; older text may hold them), and the separator inside any field but the last."""
    return re.compile(f"[{CONTROL_CHARS}{re.escape(sep)}]"), re.compile(f"[{CONTROL_CHARS}]")


def _hex(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(_hex, text) if pattern.search(text) else text


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
            help="field separator (default ^A, as LifeKeeper; e.g. -f:); in any field but the last,"
            " the separator is written \\xHH (':' as \\x3a)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead")
    if cmd.stateless:
        parser.set_defaults(dest=None, root=None)
        return parser
    where = "run against NODE's LCD" if cmd.node_option == "-d" else "send it to NODE's hakeeperd"
    parser.add_argument(cmd.node_option, dest="dest", metavar="NODE", help=f"{where} (default: this node)")
    parser.add_argument(
        "--root", metavar="DIR", help="state directory (default: $HAKEEPER_ROOT, else state_dir in hakeeper.toml)"
    )
    return parser


def parse(name: str, argv: Sequence[str], shown: str) -> tuple[Command, argparse.Namespace]:
    for item in argv:
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise IllegalArgument(_undecodable(item)) from None
        if "\0" in item:  # only possible in-process (the OS refuses it on a command line)
            raise IllegalArgument(f"argument {item!r} holds a NUL byte")
    cmd = load(name)
    if cmd is None:
        raise UsageError(f"unknown command {name!r} (see: hakeeper --help)")
    parser = build_parser(cmd, shown)
    words = dash_values(argv, value_options(cmd), shown)
    args = parser.parse_intermixed_args(words) if cmd.intermixed else parser.parse_args(words)
    if cmd.listing and (len(args.field_sep) != 1 or args.field_sep.isalnum() or args.field_sep == "\\"):
        raise UsageError(
            f"-f takes one character that is not a letter, a digit or a backslash, not {args.field_sep!r} "
            f"(see: {shown} --help)"
        )
    return cmd, args


def _undecodable(item: str) -> str:
    """Why an argument the locale could not decode is refused: not UTF-8, or a locale that cannot read it."""
    try:
        text = os.fsencode(item).decode("utf-8")
    except UnicodeError:
        return f"argument {item!r} is not valid UTF-8"
    return (
        f"argument {text!r} cannot be read in this locale ({sys.getfilesystemencoding()}): "
        "run the command with LC_ALL=C.UTF-8"
    )


_NO_VALUE = frozenset({"store_true", "store_false", "store_const", "append_const", "count", "help", "version"})


def value_options(cmd: Command) -> frozenset[str]:
    """The short options (``-t``) of ``cmd`` that take a value."""
    flags = {"-f"} if cmd.listing else set()
    if len(cmd.node_option) == 2 and not cmd.stateless:
        flags.add(cmd.node_option)
    for a in cmd.arguments:
        if a.options.get("action", "store") not in _NO_VALUE and a.options.get("nargs") != 0:
            flags |= {f for f in a.flags if len(f) == 2 and f[0] == "-" and f[1] != "-"}
    return frozenset(flags)


def dash_values(argv: Sequence[str], flags: frozenset[str], shown: str) -> list[str]:
    """Let a short option's value begin with '-', as LifeKeeper's getopt does: ``-t -dash`` is ``-t-dash``.

    An option that takes a value takes the next word, whatever it is (a tag may begin
    with '-'); only ``--`` still ends the options. argparse would read ``-dash`` as an
    unknown option, so the two words are joined into the one it reads as option and value.
    """
    words: list[str] = []
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        if word == "--":
            return [*words, word, *rest]
        if word in flags and rest and rest[0].startswith("-") and rest[0] != "--":
            word += rest.pop(0)
        if word[:2] in flags and word[2:] == "--":
            raise UsageError(f"{word[:2]} cannot take '--' as its value (see: {shown} --help)")
        words.append(word)
    return words


def run(
    name: str,
    argv: Sequence[str],
    *,
    prog: str | None = None,
    root: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    actor: str | None = None,
    forward: bool = True,
    replicator: Callable[[Lcd], Any] | None = None,
) -> int:
    """Run command ``name`` with ``argv``; return its exit code. Errors become one line on ``err``.

    When hakeeperd runs on this state directory (and ``forward`` is true), the
    command is sent to it, so that the daemon is the only writer of the LCD.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    shown = prog or name
    ctx: Context | None = None
    try:
        cmd, args = parse(name, argv, shown)
        chosen = args.root if args.root is not None else root
        readonly = cmd.name in READ_ONLY
        where = Path(os.devnull) if cmd.stateless else state_root(chosen)  # lab and demo never open an LCD
        ctx = Context(where, out, err, actor=actor, replicator=replicator, readonly=readonly)
        sent = cmd.client(args, list(argv)) if cmd.client is not None else list(argv)
        if forward and not cmd.local:
            answer = forward_to_daemon(ctx.root, name, sent)
            if answer is not None:
                out.write(answer.out)
                err.write(as_shown(answer.err, name, shown))
                return answer.code
        if args.dest is not None and other_node(ctx.lcd, args.dest) is not None:
            raise CommunicationFailed(
                f"cannot reach node {args.dest!r}: other nodes are reached through hakeeperd (see: lkstart)"
            )
        return cmd.runner(ctx, args)
    except BaseException as exc:  # noqa: BLE001 - failure() re-raises what is not ours to report
        return failure(shown, err, exc)
    finally:
        if ctx is not None:
            ctx.close()


async def run_in_daemon(
    name: str,
    argv: Sequence[str],
    *,
    services: DaemonServices,
    root: Path,
    lcd: Lcd,
    actor: str,
    out: TextIO,
    err: TextIO,
) -> int:
    """How hakeeperd runs a command sent to it: in its event loop, or in a worker thread with its own LCD."""
    import asyncio

    try:
        cmd, args = parse(name, argv, name)
        target = other_node(lcd, args.dest)
        if target is not None:
            answer = await services.run_remote(target, name, list(argv), actor)
            out.write(answer.out)
            err.write(answer.err)
            return int(answer.code)
        if cmd.in_daemon is None:
            return await asyncio.to_thread(
                run, name, list(argv), root=str(root), out=out, err=err, actor=actor, forward=False,
                replicator=services.replicator_for(actor),
            )  # fmt: skip
        ctx = Context(root, out, err, actor=actor, lcd=lcd, services=services)
        code: int = await cmd.in_daemon(ctx, args)
        return code
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        return failure(name, err, exc)


def failure(shown: str, err: TextIO, exc: BaseException) -> int:
    """Turn an exception into one line on ``err`` and LifeKeeper's exit code; re-raise what is not ours."""
    if isinstance(exc, HakeeperError):
        err.write(f"{shown}: {one_line(str(exc))}\n")
        return exc.exit_code
    if isinstance(exc, SystemExit):  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    if isinstance(exc, KeyboardInterrupt):
        err.write(f"{shown}: interrupted\n")
        return 130
    if isinstance(exc, BrokenPipeError):
        silence_stdout()
        return 0
    if not isinstance(exc, Exception):
        raise exc
    # A bug: one line, and the traceback only when asked for.
    if os.environ.get("HAKEEPER_DEBUG"):
        logging.getLogger(__name__).error("internal error in %s", shown, exc_info=exc)
    detail = one_line(f"{type(exc).__name__}: {exc}")
    err.write(f"{shown}: internal error: {detail} (set HAKEEPER_DEBUG=1 for details)\n")
    return 3


def one_line(text: str) -> str:
    """A message as one printable line: control characters (a newline in a tag, say) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def other_node(lcd: Lcd, dest: str | None) -> str | None:
    """The node ``-d NODE`` names when it is not this one (None for this node or no -d); unknown: an error."""
    if dest is None or dest == lcd.local_node:
        return None
    if dest not in {n.name for n in lcd.nodes()}:
        raise NotFound(f"no node named {dest!r} (see: sys_list)")
    return dest
