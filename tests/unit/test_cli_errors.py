"""Bad input never shows a traceback.

The requirement: for every command, bad input gives one clear line on stderr
naming what is wrong (``COMMAND: ...``), LifeKeeper's exit code, nothing on
stdout, and the LCD exactly as it was (every table, the change log included).

Four layers show it: a table of hand-picked bad inputs for every command with
the exact code each must give, hypothesis-generated command lines for every
command, the same table sent through a running hakeeperd, and the installed
console scripts run as real processes.
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import NamedTuple, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakeeper.cli.base import build_parser, load_all, run
from hakeeper.db import DEFAULT_ROOT, Lcd
from hakeeper.db.model import MAX_INFO
from tests.conftest import Cli, Result

COMMANDS = load_all()

OK, SYSCALL, SYNTAX, INTERNAL, EXISTS, ILLEGAL, RANGE, MISSING, REFUSED, COMM = range(10)

TRUE = shutil.which("true") or "/bin/true"
NO_LAB = "/proc/nonexistent"  # a run directory without a lab's record: 'lab' finds no lab there
#: A file for hakeeper apply that the populated LCD holds already: applying it changes nothing.
APPLY_NOOP = str(Path(__file__).with_name("apply_noop.json"))

T = TypeVar("T")

# ---------------------------------------------------------------------- the populated LCD

#: The LCD every test starts from (node1 is the local node, from the ``root`` fixture):
#: web -> vip (web depends on vip), vip equivalent on node2, db alone, flag "maint".
#: vip's equivalency is written through the Lcd API, as hakeeperd records it once node2 has
#: agreed: eqv_create itself needs hakeeperd and node2 (all or none).
#: "spare" (an application without types) and node3 (a node no equivalency names)
#: exist so that app_remove and sys_remove have something they may remove.
SETUP: tuple[tuple[str, ...], ...] = (
    ("app_create", "-a", "spare"),  # apps gen and comm, type gen/app: the kits' (the LCD knows them from the start)
    ("typ_create", "-a", "comm", "-r", "nokit"),  # a type no kit serves (comm/ip has one now)
    ("sys_create", "-s", "node2"),
    ("sys_create", "-s", "node3"),
    ("ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-id"),
    ("ins_create", "-a", "comm", "-r", "nokit", "-t", "vip", "-i", "10.0.0.1"),
    ("ins_create", "-a", "gen", "-r", "app", "-t", "db", "-i", "db-id"),
    ("dep_create", "-p", "web", "-c", "vip"),
    ("flg_create", "-f", "maint"),
    ("net_create", "-s", "node2", "-l", "198.18.0.11", "-r", "198.18.0.12", "--local-only"),
)


def invoke(root: Path | str, name: str, argv: Sequence[str]) -> Result:
    """Run command ``name`` in this process, as the ``cli`` fixture does, against ``root``."""
    out, err = io.StringIO(), io.StringIO()
    code = run(name, list(argv), root=str(root), out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


BIN = Path(sys.executable).parent


def script(
    program: str, *argv: str, state_dir: Path | str | None = None, environ: dict[str, str] | None = None
) -> Result:
    """Run an installed console script; ``state_dir`` goes to it in HAKEEPER_ROOT, ``environ`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in ("HAKEEPER_DEBUG", "HAKEEPER_ROOT")}
    if state_dir is not None:
        env["HAKEEPER_ROOT"] = str(state_dir)
    env.update(environ or {})
    proc = subprocess.run([BIN / program, *argv], capture_output=True, env=env, timeout=60, check=False)
    return Result(proc.returncode, os.fsdecode(proc.stdout), os.fsdecode(proc.stderr))


#: Commands that may leave a process running (lkstart's hakeeperd) run as their console
#: script: a daemon started from this process would stay its child, a zombie once stopped.
SPAWNS = {"lkstart"}


def execute(root: Path | str, name: str, argv: Sequence[str]) -> Result:
    """Run command ``name`` against ``root``: in this process, or as its console script if it spawns."""
    if name in SPAWNS:
        return script(name, *argv, state_dir=root)
    return invoke(root, name, argv)


def stop_daemon(root: Path) -> None:
    """Stop a hakeeperd that a test started on ``root`` (lkstop -f), and make sure its process is gone."""
    pid_file = root / "hakeeperd.pid"
    pid_text = pid_file.read_text().strip() if pid_file.exists() else ""
    if not (root / "hakeeperd.sock").exists() and not pid_text:
        return
    with suppress(subprocess.TimeoutExpired):
        script("lkstop", "-f", state_dir=root)
    if pid_text.isdigit() and serves(int(pid_text), root):
        os.kill(int(pid_text), signal.SIGKILL)  # lkstop left it behind


def serves(pid: int, root: Path) -> bool:
    """Whether process ``pid`` is a hakeeperd of ``root`` (and not a process that reused the number)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"hakeeperd" in word for word in cmdline) and os.fsencode(root) in cmdline


@pytest.fixture
def populated(cli: Cli, root: Path) -> Iterator[Path]:
    """The state directory of ``root``, holding the LCD described by :data:`SETUP`."""
    for name, *argv in SETUP:
        result = cli(name, *argv)
        assert result == Result(OK, "", ""), (name, argv)
    with Lcd.open(root) as lcd:
        lcd.create_equivalency("vip", "node2")
    yield root
    stop_daemon(root)  # a test that started hakeeperd (lkstart) leaves no process behind


def lcd_dump(root: Path) -> dict[str, list[tuple[object, ...]]]:
    """Everything in ``<root>/lcd.sqlite``: the schema, its version and the sorted rows of every table."""
    with closing(sqlite3.connect(root / "lcd.sqlite")) as db:
        schema = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        dump: dict[str, list[tuple[object, ...]]] = {
            "(schema)": schema,
            "(user_version)": db.execute("PRAGMA user_version").fetchall(),
        }
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            dump[table] = sorted(rows, key=repr)
    return dump


def assert_one_line(err: str, prefix: str) -> None:
    """``err`` is one line, ``prefix`` first, with no traceback in it."""
    assert "Traceback" not in err, err
    assert err.endswith("\n"), f"stderr is not one finished line: {err!r}"
    assert err.count("\n") == 1, f"stderr is not one line: {err!r}"
    assert "\r" not in err, f"stderr holds a carriage return: {err!r}"
    assert err.startswith(prefix), f"stderr does not start with {prefix!r}: {err!r}"
    assert len(err) > len(prefix) + 1, f"stderr names nothing: {err!r}"


def assert_refused(before: dict[str, list[tuple[object, ...]]], root: Path, result: Result, prefix: str) -> None:
    """A refused command: one line on stderr, nothing on stdout, the LCD as it was."""
    assert_one_line(result.err, prefix)
    assert result.out == "", f"stdout is not empty: {result.out!r}"
    assert lcd_dump(root) == before, "the LCD changed"


def test_lcd_dump_sees_every_change(populated: Path, cli: Cli) -> None:
    """The check of "unchanged" can fail: even a change undone at once shows, in the change log."""
    before = lcd_dump(populated)
    assert set(before) >= {"nodes", "apps", "types", "resources", "dependencies", "equivalencies", "flags", "changes"}
    assert len(before["changes"]) == len(SETUP) + 3  # and node1's creation, its kits' registration, vip's equivalency
    assert cli("flg_create", "-f", "passing").code == OK
    assert cli("flg_remove", "-f", "passing").code == OK
    after = lcd_dump(populated)
    assert after["flags"] == before["flags"]
    assert len(after["changes"]) == len(before["changes"]) + 2
    assert after != before


# ---------------------------------------------------------------------- the table

#: For every command, a well-formed command line. The table builds its syntax
#: errors from these, and the -d cases show that the destination is checked
#: before anything happens.
VALID: dict[str, tuple[str, ...]] = {
    "ins_create": ("-a", "gen", "-r", "app", "-t", "new", "-i", "new-id"),
    "ins_list": ("-t", "web"),
    "ins_remove": ("-t", "db"),
    "ins_gettag": ("-i", "web-id"),
    "ins_setstate": ("-t", "web", "-S", "ISP"),
    "ins_setinfo": ("-t", "web", "-v", "hello"),
    "ins_setas": ("-t", "web", "-s", "AUTOMATIC"),
    "ins_setinit": ("-t", "web", "-I", "INIT_OSU"),
    "ins_setchkint": ("-t", "web", "-v", "30"),
    "ins_setlocalrecover": ("-t", "web", "-l", "N"),
    "dep_create": ("-p", "web", "-c", "db"),
    "dep_remove": ("-p", "web", "-c", "vip"),
    "dep_list": ("-c", "web"),
    "eqv_create": ("-t", "web", "-S", "node2"),
    "eqv_remove": ("-t", "vip", "-S", "node2"),
    "eqv_list": ("-t", "vip"),
    "typ_create": ("-a", "gen", "-r", "other"),
    "typ_remove": ("-a", "comm", "-r", "nokit"),
    "typ_list": ("-a", "gen"),
    "app_create": ("-a", "new"),
    "app_remove": ("-a", "spare"),
    "app_list": (),
    "flg_create": ("-f", "new"),
    "flg_remove": ("-f", "maint"),
    "flg_test": ("-f", "maint"),
    "flg_list": (),
    "sys_create": ("-s", "node4"),
    "sys_remove": ("-s", "node3"),
    "sys_list": (),
    "sys_getds": ("-s", "node2"),
    "sys_getst": ("-s", "node2"),
    "changes": ("--since", "3"),
    "lcdstatus": ("-e",),
    "status": (),
    "kits": (),
    "create": ("gen/app", "-t", "new", f"restore={TRUE}", f"remove={TRUE}"),
    "perform_action": ("-t", "web", "-a", "remove"),  # web is OSU: nothing to do, exit 0
    "sendevent": ("-C", "generic", "-E", "failure", "-n", "web"),
    "lkstart": (),
    "lkstop": (),
    "net_create": ("-s", "node2", "-l", "198.18.1.11", "-r", "198.18.1.12", "-p", "2", "--local-only"),
    "net_remove": ("-s", "node2", "-r", "198.18.0.12"),
    "net_change": ("-s", "node2", "-D", "198.18.0.11/198.18.0.12", "-P", "198.18.1.11/198.18.1.12"),
    "net_list": ("-s", "node2"),
    "settings": ("heartbeat_interval=0.5", "takeover_delay=0.6"),
    "lcdremexec": ("true",),
    "cluster": ("init", "--name", "prod"),
    "why": ("vip",),
    "switchover": ("vip", "--to", "node2"),
    "lk_confirmso": ("-y", "-s", "node2"),
    "extend": ("-t", "web", "-s", "node2"),  # vip is on node2 already: web goes, and depends on it there
    "unextend": ("-t", "vip", "-s", "node2"),
    "update": ("-t", "web", "timeout=9"),
    "lcd": ("check",),
    "lab": ("status", "--run-dir", NO_LAB),
    "demo": ("--part", "1"),
    "apply": (APPLY_NOOP,),
    "export": ("--format", "json"),
    "config": ("check",),
    "log": ("-n", "1", "--tag", "web"),
    "mirror": ("status",),
}

#: Where a well-formed command line cannot succeed here: without hakeeperd, nothing takes an event,
#: and no other node is reached (so neither eqv_create nor extend can record node2's side).
WELL_FORMED_CODE = {
    "sendevent": SYSCALL,
    "switchover": COMM,
    "lk_confirmso": COMM,
    "eqv_create": COMM,
    "extend": COMM,
    "unextend": COMM,
    "log": MISSING,  # hakeeperd never ran here: there is no log to read
}


class Case(NamedTuple):
    command: str
    argv: tuple[str, ...]
    code: int
    why: str


class Option(NamedTuple):
    flag: str | None  # None: a positional argument
    required: bool
    takes_value: bool
    type: object


def options(name: str) -> list[Option]:
    """The arguments of command ``name`` as its parser has them, but --help."""
    parser = build_parser(COMMANDS[name], name)
    return [
        Option(
            action.option_strings[0] if action.option_strings else None, action.required, action.nargs != 0, action.type
        )
        for action in parser._actions
        if action.option_strings[:1] != ["-h"]
    ]


def _without(argv: tuple[str, ...], flag: str) -> tuple[str, ...]:
    at = argv.index(flag)
    return argv[:at] + argv[at + 2 :]


def syntax_cases() -> list[Case]:
    """Syntax errors (code 2) built for every command from its parser and its well-formed command line."""
    cases: list[Case] = []
    for name in COMMANDS:
        valid = VALID.get(name, ())
        arguments = options(name)
        cases.append(Case(name, (*valid, "--no-such-option"), SYNTAX, "unknown option"))
        cases.append(Case(name, (*valid, "-Z", "x"), SYNTAX, "unknown short option"))
        cases.append(Case(name, (*valid, "-d"), SYNTAX, "option without its value"))
        if all(a.flag is not None for a in arguments):  # commands with positionals take extra words
            cases.append(Case(name, (*valid, "stray"), SYNTAX, "stray argument"))
        for a in arguments:
            if a.flag is not None and a.required and a.flag in valid:
                cases.append(Case(name, _without(valid, a.flag), SYNTAX, f"missing {a.flag}"))
            if a.flag is not None and a.takes_value and a.type is int:
                cases.append(Case(name, (*valid, a.flag, "twelve"), SYNTAX, f"{a.flag} not a number"))
    return cases


LONG_TAG = "t" * 257
DEEP_JSON = "[" * 100_000 + "]" * 100_000
RESTORE, REMOVE = f"restore={TRUE}", f"remove={TRUE}"
JOIN_TOKEN = "hk1.abcdef." + "a" * 32 + "." + "0" * 64  # well formed; no member knows it

SEMANTIC_CASES: list[Case] = [
    # ins_create
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "bad tag", "-i", "x"), ILLEGAL, "tag with a space"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "a:b", "-i", "x"), ILLEGAL, "tag with a colon"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "/abs", "-i", "x"), ILLEGAL, "tag starting with /"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "tab\tbed", "-i", "x"), ILLEGAL, "tag with a control char"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", LONG_TAG, "-i", "x"), ILLEGAL, "tag too long"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "", "-i", "x"), ILLEGAL, "empty tag"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", ""), ILLEGAL, "empty id"),
    Case("ins_create", ("-a", "nosuch", "-r", "app", "-t", "new", "-i", "x"), MISSING, "unknown app"),
    Case("ins_create", ("-a", "gen", "-r", "nosuch", "-t", "new", "-i", "x"), MISSING, "unknown type"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "web", "-i", "x"), EXISTS, "duplicate tag"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", "web-id"), EXISTS, "duplicate id"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", "x", "-Q", "86401"), RANGE, "interval too big"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", "x", "-Q", "-1"), RANGE, "negative interval"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", "x", "-I", "SOMETIMES"), ILLEGAL, "bad init"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", "x", "-s", "NEVER"), ILLEGAL, "bad switchback"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", "x", "-l", "maybe"), ILLEGAL, "bad local rec."),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "new", "-i", "x", "-v", "{oops"), ILLEGAL, "bad JSON info"),
    # ins_list
    Case("ins_list", ("-t", "nosuch"), MISSING, "unknown tag"),
    Case("ins_list", ("-i", "nosuch"), MISSING, "unknown id"),
    Case("ins_list", ("-R", "nosuch"), MISSING, "unknown top"),
    Case("ins_list", ("-a", "nosuch"), MISSING, "unknown app"),
    Case("ins_list", ("-r", "nosuch"), MISSING, "unknown type"),
    Case("ins_list", ("-f", "::"), SYNTAX, "two-character separator"),
    Case("ins_list", ("-f", ""), SYNTAX, "empty separator"),
    Case("ins_list", ("-t", ""), ILLEGAL, "empty tag"),
    Case("ins_list", ("-R", ""), ILLEGAL, "empty top"),
    Case("ins_list", ("-R", "\x01"), ILLEGAL, "only a separator as top"),
    # ins_remove
    Case("ins_remove", (), SYNTAX, "nothing named"),
    Case("ins_remove", ("-t", "nosuch"), MISSING, "unknown tag"),
    Case("ins_remove", ("-i", "nosuch"), MISSING, "unknown id"),
    Case("ins_remove", ("-R", "nosuch"), MISSING, "unknown top"),
    Case("ins_remove", ("-a", "nosuch"), MISSING, "unknown app"),
    Case("ins_remove", ("-a", "spare"), MISSING, "app without resources"),
    Case("ins_remove", ("-t", ""), ILLEGAL, "empty tag"),
    Case("ins_remove", ("-R", ""), ILLEGAL, "empty top"),
    # ins_gettag
    Case("ins_gettag", ("-i", "nosuch"), MISSING, "unknown id"),
    # ins_setstate
    Case("ins_setstate", ("-t", "web", "-S", "OSF"), ILLEGAL, "OSF"),
    Case("ins_setstate", ("-t", "web", "-S", "ILLSTATE"), ILLEGAL, "ILLSTATE"),
    Case("ins_setstate", ("-t", "web", "-S", "UP"), ILLEGAL, "no such state"),
    Case("ins_setstate", ("-t", "web", "-S", "isp"), ILLEGAL, "lower-case state"),
    Case("ins_setstate", ("-t", "nosuch", "-S", "ISP"), MISSING, "unknown tag"),
    Case("ins_setstate", ("-t", "web", "-S", "ISP", "-R", "two\nlines"), ILLEGAL, "reason of two lines"),
    Case("ins_setstate", ("-t", "web", "-S", "ISP", "-R", "r" * 1025), ILLEGAL, "reason too long"),
    # ins_setinfo
    Case("ins_setinfo", ("-t", "nosuch", "-v", "x"), MISSING, "unknown tag"),
    Case("ins_setinfo", ("-t", "web", "-v", "[1, 2"), ILLEGAL, "bad JSON"),
    Case("ins_setinfo", ("-t", "web", "-v", "x" * (MAX_INFO + 1)), ILLEGAL, "info too large"),
    Case("ins_setinfo", ("-t", "web", "-v", DEEP_JSON), ILLEGAL, "JSON nested too deep"),
    # ins_setas, ins_setinit, ins_setlocalrecover
    Case("ins_setas", ("-t", "web", "-s", "SOMETIMES"), ILLEGAL, "bad switchback"),
    Case("ins_setas", ("-t", "nosuch", "-s", "AUTOMATIC"), MISSING, "unknown tag"),
    Case("ins_setinit", ("-t", "web", "-I", "LATER"), ILLEGAL, "bad init"),
    Case("ins_setinit", ("-t", "nosuch", "-I", "INIT_ISP"), MISSING, "unknown tag"),
    Case("ins_setlocalrecover", ("-t", "web", "-l", "perhaps"), ILLEGAL, "not Y or N"),
    Case("ins_setlocalrecover", ("-t", "nosuch", "-l", "Y"), MISSING, "unknown tag"),
    # ins_setchkint
    Case("ins_setchkint", ("-t", "web", "-v", "86401"), RANGE, "interval too big"),
    Case("ins_setchkint", ("-t", "web", "-v", "-1"), RANGE, "negative interval"),
    Case("ins_setchkint", ("-t", "web", "-c", "d", "-v", "30"), ILLEGAL, "deepCheck"),
    Case("ins_setchkint", ("-t", "nosuch", "-v", "30"), MISSING, "unknown tag"),
    # dep_create, dep_remove, dep_list
    Case("dep_create", ("-p", "vip", "-c", "web"), ILLEGAL, "cycle"),
    Case("dep_create", ("-p", "web", "-c", "web"), ILLEGAL, "depends on itself"),
    Case("dep_create", ("-p", "web", "-c", "vip"), EXISTS, "duplicate"),
    Case("dep_create", ("-p", "nosuch", "-c", "vip"), MISSING, "unknown parent"),
    Case("dep_create", ("-p", "web", "-c", "nosuch"), MISSING, "unknown child"),
    Case("dep_remove", (), SYNTAX, "nothing named"),
    Case("dep_remove", ("-p", "nosuch"), MISSING, "unknown parent"),
    Case("dep_remove", ("-c", "nosuch"), MISSING, "unknown child"),
    Case("dep_remove", ("-p", "db", "-c", "web"), MISSING, "no such dependency"),
    Case("dep_list", ("-C", "web", "-P", "web"), SYNTAX, "two selections"),
    Case("dep_list", ("-C", "nosuch"), MISSING, "unknown tag"),
    Case("dep_list", ("-a", "nosuch"), MISSING, "unknown app"),
    Case("dep_list", ("-f", "ab"), SYNTAX, "two-character separator"),
    # eqv_create, eqv_remove, eqv_list
    Case("eqv_create", ("-t", "nosuch", "-S", "node2"), MISSING, "unknown tag"),
    Case("eqv_create", ("-t", "web", "-S", "nosuch"), MISSING, "unknown other node"),
    Case("eqv_create", ("-s", "nosuch", "-t", "web", "-S", "node2"), MISSING, "unknown node"),
    Case("eqv_create", ("-t", "vip", "-S", "node2"), EXISTS, "duplicate"),
    Case("eqv_create", ("-t", "web", "-S", "node2", "-r", "1"), EXISTS, "priority taken"),
    Case("eqv_create", ("-t", "web", "-S", "node2", "-r", "0"), RANGE, "priority 0"),
    Case("eqv_create", ("-t", "web", "-S", "node2", "-r", "1025"), RANGE, "priority 1025"),
    Case("eqv_create", ("-t", "web", "-S", "node2", "-p", "-3"), RANGE, "negative own priority"),
    Case("eqv_create", ("-t", "web", "-S", "node1"), ILLEGAL, "same node"),
    Case("eqv_create", ("-t", "web", "-S", "node2", "-o", "bad tag"), ILLEGAL, "bad other tag"),
    Case("eqv_create", ("-t", "web", "-S", "node2", "-e", "EXCLUSIVE"), ILLEGAL, "bad kind"),
    Case("eqv_remove", ("-t", "web", "-S", "node2"), MISSING, "no equivalency"),
    Case("eqv_remove", ("-t", "nosuch", "-S", "node2"), MISSING, "unknown tag"),
    Case("eqv_remove", ("-t", "vip", "-S", "node2", "-o", "other"), MISSING, "other tag differs"),
    Case("eqv_remove", ("-t", "vip", "-S", "node2", "-e", "EXCLUSIVE"), ILLEGAL, "bad kind"),
    Case("eqv_list", ("-t", "nosuch"), MISSING, "unknown tag"),
    Case("eqv_list", ("-s", "nosuch"), MISSING, "unknown node"),
    Case("eqv_list", ("-f", "ab"), SYNTAX, "two-character separator"),
    # typ_*
    Case("typ_create", ("-a", "nosuch", "-r", "x"), MISSING, "unknown app"),
    Case("typ_create", ("-a", "gen", "-r", "app"), EXISTS, "duplicate"),
    Case("typ_create", ("-a", "gen", "-r", "bad name"), ILLEGAL, "bad type name"),
    Case("typ_create", ("-a", "gen", "-r", "n" * 65), ILLEGAL, "type name too long"),
    Case("typ_remove", ("-a", "gen", "-r", "nosuch"), MISSING, "unknown type"),
    Case("typ_remove", ("-a", "nosuch", "-r", "app"), MISSING, "unknown app"),
    Case("typ_remove", ("-a", "gen\nx", "-r", "app"), MISSING, "unknown app with a newline"),
    Case("typ_list", ("-a", "nosuch"), MISSING, "unknown app"),
    Case("typ_list", ("-f", "ab"), SYNTAX, "two-character separator"),
    # app_*
    Case("app_create", ("-a", "gen"), EXISTS, "duplicate"),
    Case("app_create", ("-a", "bad/name"), ILLEGAL, "bad name"),
    Case("app_create", ("-a", ".hidden"), ILLEGAL, "name starting with a dot"),
    Case("app_remove", ("-a", "nosuch"), MISSING, "unknown app"),
    Case("app_remove", ("-a", "gen"), REFUSED, "app with types"),
    Case("app_list", ("x\ny",), SYNTAX, "stray argument with a newline"),
    Case("app_list", ("-f", "ab"), SYNTAX, "two-character separator"),
    # flg_*
    Case("flg_create", ("-f", "maint"), EXISTS, "duplicate"),
    Case("flg_create", ("-f", "has space"), ILLEGAL, "flag with a space"),
    Case("flg_create", ("-f", ""), ILLEGAL, "empty flag"),
    Case("flg_remove", ("-f", "nosuch"), MISSING, "unknown flag"),
    Case("flg_remove", ("-f", "has space"), ILLEGAL, "flag with a space"),
    Case("flg_test", ("-f", "has\nnewline"), ILLEGAL, "flag with a newline"),
    Case("flg_list", ("-f", "ab"), SYNTAX, "two-character separator"),
    # sys_*
    Case("sys_create", ("-s", "node2"), EXISTS, "duplicate"),
    Case("sys_create", ("-s", "node1"), EXISTS, "the local node"),
    Case("sys_create", ("-s", "bad node"), ILLEGAL, "bad name"),
    Case("sys_remove", ("-s", "node2"), REFUSED, "node used by an equivalency"),
    Case("sys_remove", ("-s", "node1"), REFUSED, "the local node"),
    Case("sys_remove", ("-s", "nosuch"), MISSING, "unknown node"),
    Case("sys_list", ("-f", "ab"), SYNTAX, "two-character separator"),
    # changes, lcdstatus
    Case("changes", ("--since", "99999999999999999999"), RANGE, "since beyond any sequence number"),
    Case("changes", ("-f", ""), SYNTAX, "empty separator"),
    Case("lcdstatus", ("-r", "nosuch"), MISSING, "unknown top"),
    # status
    Case("status", ("--watch", "0"), RANGE, "watch interval too short"),
    Case("status", ("--watch", "1", "--count", "0"), RANGE, "no view to show"),
    # kits, create, perform_action
    Case("kits", ("--agent", "garbage"), ILLEGAL, "agent not ocf:PROVIDER:AGENT"),
    Case("kits", ("--agent", "ocf:nosuch:Nope"), MISSING, "unknown agent"),
    Case("create", ("-t", "new"), SYNTAX, "no kit"),
    Case("create", ("genapp", "-t", "new", RESTORE, REMOVE), ILLEGAL, "kit not APP/TYPE"),
    Case("create", ("nosuch/kit", "-t", "new"), MISSING, "unknown kit"),
    Case("create", ("gen/app", "-t", "bad tag", RESTORE, REMOVE), ILLEGAL, "tag with a space"),
    Case("create", ("gen/app", "-t", "web", RESTORE, REMOVE), EXISTS, "duplicate tag"),
    Case("create", ("gen/app", "-t", "new", "-i", "web-id", RESTORE, REMOVE), EXISTS, "duplicate id"),
    Case("create", ("gen/app", "-t", "new", RESTORE), ILLEGAL, "missing parameter"),
    Case("create", ("gen/app", "-t", "new", "restore=/nonexistent", REMOVE), ILLEGAL, "no such script"),
    Case("create", ("gen/app", "-t", "new", RESTORE, REMOVE, "bogus=1"), ILLEGAL, "unknown parameter"),
    Case("create", ("gen/app", "-t", "new", RESTORE, REMOVE, RESTORE), ILLEGAL, "parameter twice"),
    Case("create", ("gen/app", "-t", "new", RESTORE, REMOVE, "noequals"), ILLEGAL, "not NAME=VALUE"),
    Case("create", ("gen/app", "-t", "new", RESTORE, REMOVE, "timeout=soon"), ILLEGAL, "bad integer parameter"),
    Case("create", ("gen/app", "-t", "new", "-Q", "86401", RESTORE, REMOVE), RANGE, "interval too big"),
    Case("create", ("gen/app", "-t", "new", "-I", "LATER", RESTORE, REMOVE), ILLEGAL, "bad init"),
    Case("perform_action", ("-t", "web", "-a", "dance"), ILLEGAL, "unknown action"),
    Case("perform_action", ("-t", "nosuch", "-a", "restore"), MISSING, "unknown tag"),
    Case("perform_action", ("-t", "vip", "-a", "quickCheck"), MISSING, "no kit for its type"),
    # extend, unextend
    Case("update", ("-t", "nosuch", "timeout=9"), MISSING, "unknown tag"),
    Case("update", ("-t", "web", "colour=blue"), ILLEGAL, "unknown parameter"),
    Case("update", ("-t", "web", "timeout"), ILLEGAL, "not NAME=VALUE"),
    Case("update", ("-t", "vip", "timeout=9"), MISSING, "no kit for its type"),
    Case("extend", ("-t", "nosuch", "-s", "node2"), MISSING, "unknown tag"),
    Case("extend", ("-t", "web", "-s", "node2", "-s", "node2"), ILLEGAL, "a node named twice"),
    Case("extend", ("-t", "web", "-s", "node2", "-s", "node3", "-p", "3"), ILLEGAL, "one priority for two nodes"),
    Case("extend", ("-t", "web", "-s", "nosuch"), MISSING, "unknown node"),
    Case("extend", ("-t", "web", "-s", "node1"), ILLEGAL, "this node"),
    Case("extend", ("-t", "vip", "-s", "node2"), EXISTS, "extended there already"),
    Case("extend", ("-t", "web", "-s", "node2", "-p", "1"), EXISTS, "priority of this node"),
    Case("extend", ("-t", "web", "-s", "node3", "-p", "2"), EXISTS, "priority taken below the top"),
    Case("extend", ("-t", "web", "-s", "node2", "-p", "0"), RANGE, "priority 0"),
    Case("extend", ("-t", "web", "-s", "node2", "-p", "1025"), RANGE, "priority 1025"),
    Case("extend", ("-t", "db", "-s", "node3"), COMM, "node without paths"),
    Case("unextend", ("-t", "nosuch", "-s", "node2"), MISSING, "unknown tag"),
    Case("unextend", ("-t", "vip", "-s", "nosuch"), MISSING, "unknown node"),
    Case("unextend", ("-t", "vip", "-s", "node1"), ILLEGAL, "this node"),
    Case("unextend", ("-t", "web", "-s", "node2"), MISSING, "not extended there"),
    # sendevent, lkstart
    Case("sendevent", ("-C", "a/b", "-E", "failure", "-n", "web"), ILLEGAL, "class with a slash"),
    Case("sendevent", ("-C", "", "-E", "failure", "-n", "web"), ILLEGAL, "empty class"),
    Case("sendevent", ("-C", "generic", "-E", ".x", "-n", "web"), ILLEGAL, "event starting with a dot"),
    Case("sendevent", ("-C", "generic", "-E", "failure", "-n", "web", "-s", "HUGE"), ILLEGAL, "bad severity"),
    Case("sendevent", ("-C", "generic", "-E", "failure", "-n", "web", "-s", "5"), ILLEGAL, "severity 5"),
    Case("sendevent", ("-C", "generic", "-E", "failure", "-n", "web", "-t", "991399000000"), ILLEGAL, "month 13"),
    Case("sendevent", ("-C", "generic", "-E", "failure", "-n", "web", "-O", "out.log"), ILLEGAL, "relative -O"),
    Case("sendevent", ("-C", "generic", "-E", "failure", "-n", "web", "-S", "bad node"), ILLEGAL, "bad system"),
    Case("lkstart", ("--log", "/proc"), SYSCALL, "log is a directory"),
    Case("lkstart", ("--log", "/proc/nonexistent/hakeeperd.log"), SYSCALL, "log cannot be created"),
    # lcdremexec
    Case("lcdremexec", ("-t", "0", "true"), RANGE, "no time at all"),
    Case("lcdremexec", ("/nonexistent/command",), MISSING, "no such command"),
    # failover
    Case("why", ("nosuch",), MISSING, "no such resource"),
    Case("why", ("db",), MISSING, "not extended to another node"),
    Case("switchover", ("nosuch",), MISSING, "no such resource"),
    Case("switchover", ("db",), MISSING, "not extended to another node"),
    Case("switchover", ("vip", "--to", "node9"), MISSING, "no such node"),
    Case("lk_confirmso", ("-s", "node2"), SYNTAX, "neither -y nor -n"),
    Case("lk_confirmso", ("-y", "-n", "-s", "node2"), SYNTAX, "both -y and -n"),
    Case("lk_confirmso", ("-y", "-s", "node9"), MISSING, "no such node"),
    Case("lk_confirmso", ("-y",), SYNTAX, "no node"),
    # communication paths and settings
    Case("net_create", ("-s", "node2", "-l", "198.18.0.11", "-r", "198.18.0.12"), EXISTS, "duplicate path"),
    Case("net_create", ("-s", "node2", "-l", "198.18.1.11", "-r", "198.18.1.12", "-p", "1"), EXISTS, "priority taken"),
    Case("net_create", ("-s", "node2", "-l", "198.18.1.11", "-r", "198.18.1.12", "-p", "100"), RANGE, "priority 100"),
    Case("net_create", ("-s", "node2", "-l", "nowhere", "-r", "198.18.1.12"), ILLEGAL, "local not an address"),
    Case("net_create", ("-s", "node2", "-l", "198.18.1.11", "-r", "::1"), ILLEGAL, "mixed IP versions"),
    Case("net_create", ("-s", "node1", "-l", "198.18.1.11", "-r", "198.18.1.12"), ILLEGAL, "path to itself"),
    Case("net_create", ("-s", "nosuch", "-l", "198.18.1.11", "-r", "198.18.1.12"), MISSING, "unknown node"),
    Case("net_create", ("-s", "node2", "-n", "TTY", "-l", "198.18.1.11", "-r", "198.18.1.12"), ILLEGAL, "TTY"),
    Case("net_remove", ("-s", "node2", "-r", "198.18.9.9"), MISSING, "no such path"),
    Case("net_remove", ("-s", "nosuch"), MISSING, "unknown node"),
    Case("net_list", ("-s", "nosuch"), MISSING, "unknown node"),
    Case("net_change", ("-s", "node2", "-D", "198.18.9.9/198.18.0.12", "-N", "node3"), MISSING, "no such path"),
    Case("net_change", ("-s", "node2", "-D", "198.18.0.11", "-N", "node3"), ILLEGAL, "not an address pair"),
    Case("net_change", ("-s", "node2", "-D", "198.18.0.11/198.18.0.12"), SYNTAX, "nothing to change"),
    Case("net_change", ("-s", "node2", "-D", "198.18.0.11/198.18.0.12", "-N", "node1"), ILLEGAL, "to itself"),
    Case("net_change", ("-s", "node2", "-D", "198.18.0.11/198.18.0.12", "-N", "nosuch"), MISSING, "unknown node"),
    Case("net_change", ("-s", "node2", "-D", "198.18.0.11/198.18.0.12", "-P", "198.18.1.11/::1"), ILLEGAL, "mixed"),
    Case("net_change", ("-s", "node2", "-D", "198.18.0.11/198.18.0.12", "-n", "TTY", "-N", "node3"), ILLEGAL, "TTY"),
    Case("net_change", ("-s", "node2", "-D", "198.18.0.11/198.18.0.12", "-b", "9600", "-N", "node3"), ILLEGAL, "baud"),
    Case("sys_getds", ("-s", "nosuch"), MISSING, "unknown node"),
    Case("sys_getst", ("-s", "nosuch"), MISSING, "unknown node"),
    Case("sys_remove", ("-s", "node2", "-d", "node1"), REFUSED, "node with paths"),
    Case("settings", ("heartbeat_interval=0.01",), RANGE, "interval below the floor"),
    Case("settings", ("heartbeat_interval=0.05", "heartbeat_misses=2"), RANGE, "detection budget too short"),
    Case("settings", ("heartbeat_interval=often",), ILLEGAL, "not a number"),
    Case("settings", ("nosuch=1",), MISSING, "unknown setting"),
    Case("settings", ("noequals",), ILLEGAL, "not NAME=VALUE"),
    Case("settings", ("shutdown_strategy=maybe",), ILLEGAL, "unknown strategy"),
    Case("settings", ("heartbeat_interval=0.5",), RANGE, "takeover before a losing node has stopped"),
    Case("settings", ("quorum_mode=tcp_remote",), ILLEGAL, "tcp_remote without quorum hosts"),
    Case("settings", ("quorum_mode=tcp_remote", "quorum_hosts=198.18.0.1"), ILLEGAL, "quorum host without port"),
    Case("settings", ("quorum_loss_action=panic",), ILLEGAL, "unknown quorum-loss action"),
    # cluster identity
    Case("cluster", ("init", "--name", "bad name"), ILLEGAL, "bad cluster name"),
    Case("cluster", ("init", "--ttl", "600"), SYNTAX, "option of another action"),
    Case("cluster", ("token", "--witness"), SYNTAX, "--witness is for join"),
    Case("cluster", ("token",), MISSING, "token without a cluster identity"),
    Case("cluster", ("token", "--ttl", "59"), RANGE, "token lifetime too short"),
    Case("cluster", ("show",), MISSING, "show without a cluster identity"),
    Case("cluster", ("join", "127.0.0.1"), SYNTAX, "join without a token"),
    Case("cluster", ("join", "--token", "hk1.garbage", "127.0.0.1"), ILLEGAL, "malformed token"),
    Case("cluster", ("join", "--token", JOIN_TOKEN, "host:99999"), ILLEGAL, "member port out of range"),
    Case("cluster", ("join", "--token", JOIN_TOKEN, "127.0.0.1:1"), COMM, "member unreachable"),
    Case("cluster", ("serve-join", "--timeout", "0"), RANGE, "serve-join timeout 0"),
    Case("cluster", ("serve-join", "--listen", "127.0.0.1:0"), MISSING, "serve-join without a cluster identity"),
    # lcd: backup, restore, check
    Case("lcd", ("backup",), SYNTAX, "backup without a file"),
    Case("lcd", ("restore",), SYNTAX, "restore without a file"),
    Case("lcd", ("repair",), SYNTAX, "unknown action"),
    Case("lcd", ("backup", "/"), EXISTS, "backup over an existing file"),
    Case("lcd", ("backup", "/proc/nonexistent/lcd.bak"), SYSCALL, "backup into a missing directory"),
    Case("lcd", ("restore", "/proc/nonexistent/lcd.bak"), MISSING, "restore of a missing file"),
    Case("lcd", ("restore", TRUE), ILLEGAL, "restore of a file that is not an LCD"),
    Case("lcd", ("restore", "/proc"), ILLEGAL, "restore of a directory"),
    Case("lcd", ("check", "/proc/nonexistent/lcd.bak"), MISSING, "check of a missing file"),
    # lab and demo: checked before anything is built
    Case("lab", ("up", "--nodes", "0", "--run-dir", NO_LAB), RANGE, "a lab of no node"),
    Case("lab", ("up", "--nodes", "81", "--run-dir", NO_LAB), RANGE, "a lab of too many nodes"),
    Case("lab", ("up", "--networks", "3", "--run-dir", NO_LAB), RANGE, "three networks"),
    Case("lab", ("up", "--dir", "", "--run-dir", NO_LAB), ILLEGAL, "an empty --dir"),
    Case("lab", ("up", "--dir", "/", "--run-dir", NO_LAB), EXISTS, "a --dir that is not empty"),
    Case("lab", ("up", "--run-dir", NO_LAB), SYSCALL, "a run directory that cannot be"),
    Case("lab", ("status", "--run-dir", ""), ILLEGAL, "an empty --run-dir"),
    Case("lab", ("status", "--nodes", "2"), SYNTAX, "--nodes is for up"),
    Case("lab", ("down", "--bare"), SYNTAX, "--bare is for up"),
    Case("lab", ("reboot",), SYNTAX, "unknown action"),
    Case("lab", ("status", "--root", "/tmp"), SYNTAX, "a state directory it has not"),
    Case("demo", ("--part", "4"), SYNTAX, "no part 4"),
    Case("demo", ("-d", "node2"), SYNTAX, "a node it is not about"),
    # apply, export (the contents of a file: tests/unit/test_apply.py)
    Case("apply", ("/proc/nonexistent/cluster.json",), MISSING, "no such file"),
    Case("apply", ("/proc",), ILLEGAL, "a directory"),
    Case("apply", (TRUE,), ILLEGAL, "not UTF-8 text"),
    Case("apply", ("--prune", "-n"), SYNTAX, "no file"),
    Case("export", ("--format", "xml"), SYNTAX, "unknown format"),
    # config, log (the file's contents: tests/unit/test_config.py)
    Case("config", ("check", "/proc/nonexistent/hakeeper.toml"), ILLEGAL, "no such file"),
    Case("config", ("check", "/proc"), ILLEGAL, "a directory"),
    Case("config", ("check", TRUE), ILLEGAL, "not UTF-8 text"),
    Case("config", ("verify",), SYNTAX, "unknown action"),
    Case("log", ("--since", "soon"), ILLEGAL, "not a time"),
    Case("log", ("-n", "-1"), RANGE, "a negative count"),
    Case("log", ("--source", "syslog"), SYNTAX, "unknown source"),
    # mirror (between nodes, a store too small, a second mirror: tests/unit/test_mirror_cli.py)
    Case(
        "mirror",
        ("create", "vol", "--store", "/proc/nonexistent/vol.img", "--target", "node2", "--mode", "sync"),
        MISSING,
        "a backing store that is not there",
    ),
    Case(
        "mirror",
        ("create", "vol", "--store", "/proc", "--target", "node2", "--mode", "sync"),
        ILLEGAL,
        "a backing store that is a directory",
    ),
    Case(
        "mirror",
        ("create", "vol", "--store", "vol.img", "--target", "node2", "--mode", "sync"),
        ILLEGAL,
        "a relative backing store",
    ),
    Case(
        "mirror",
        ("create", "vol", "--store", TRUE, "--target", "nosuch", "--mode", "sync"),
        MISSING,
        "a target that is no node",
    ),
    Case(
        "mirror",
        ("create", "vol", "--store", TRUE, "--target", "node1", "--mode", "sync"),
        ILLEGAL,
        "a mirror to itself",
    ),
    Case("mirror", ("create", "vol", "--store", TRUE, "--target", "node2", "--mode", "fast"), ILLEGAL, "bad mode"),
    Case(
        "mirror",
        ("create", "vol", "--store", TRUE, "--target", "node2", "--mode", "sync", "--bitmap-chunk", "3K"),
        RANGE,
        "chunk too small",
    ),
    Case(
        "mirror",
        ("create", "vol", "--store", TRUE, "--target", "node2", "--mode", "sync", "--bitmap-chunk", "96K"),
        ILLEGAL,
        "chunk not a power of two",
    ),
    Case(
        "mirror",
        ("create", "vol", "--store", TRUE, "--target", "node2", "--mode", "sync", "--limit", "-1"),
        RANGE,
        "negative limit",
    ),
    Case("mirror", ("create", "vol", "--store", TRUE, "--target", "node2"), SYNTAX, "create without --mode"),
    Case("mirror", ("create", "bad vol", "--target", "node2", "--mode", "sync"), ILLEGAL, "volume with a space"),
    Case("mirror", ("status", "--checksum"), SYNTAX, "--checksum is for resync"),
    Case("mirror", ("status", "nosuch"), MISSING, "status of no volume"),
    Case("mirror", ("pause", "nosuch"), MISSING, "pause of no volume"),
    Case("mirror", ("delete", "nosuch"), MISSING, "delete of no volume"),
    Case("mirror", ("resolve", "nosuch"), SYNTAX, "resolve without --keep"),
    Case("mirror", ("pause",), SYNTAX, "a verb without its volume"),
    Case("mirror", ("mirror",), SYNTAX, "unknown action"),
]

CASES = syntax_cases() + SEMANTIC_CASES


def case_id(case: Case) -> str:
    return f"{case.command}-{case.why}"


def test_the_table_covers_every_command() -> None:
    """A command added without bad-input cases fails here."""
    assert set(VALID) == set(COMMANDS)
    assert {case.command for case in CASES} == set(COMMANDS)
    for name in COMMANDS:
        assert any(case.code == SYNTAX for case in CASES if case.command == name), name
    assert len({case_id(case) for case in CASES}) == len(CASES), "two cases share a name"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input(case: Case, populated: Path) -> None:
    before = lcd_dump(populated)
    result = execute(populated, case.command, case.argv)
    assert result.code == case.code, f"exit {result.code}, expected {case.code}: {result.err!r}"
    assert_refused(before, populated, result, f"{case.command}: ")


def assert_well_formed(name: str, result: Result) -> None:
    expected = WELL_FORMED_CODE.get(name, OK)
    assert result.code == expected, result.err
    if expected == OK:
        assert result.err == ""
    else:
        assert_one_line(result.err, f"{name}: ")


@pytest.mark.parametrize("name", sorted(VALID))
def test_well_formed_command_lines_work(
    name: str, populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command lines the table and the -d cases start from are right: they work."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # demo --part 1 makes its state directory there
    assert_well_formed(name, execute(populated, name, VALID[name]))


#: Commands about no node's state directory (lab, demo): they take neither --root nor -d.
ABOUT_A_NODE = sorted(name for name, cmd in COMMANDS.items() if not cmd.stateless)


def test_stateless_commands_take_no_state_directory() -> None:
    assert sorted(set(COMMANDS) - set(ABOUT_A_NODE)) == ["config", "demo", "lab"]  # config: of its file
    for name in ("demo", "lab"):
        assert {"--root", "-d"}.isdisjoint(a.flag for a in options(name))


@pytest.mark.parametrize("name", ABOUT_A_NODE)
def test_destination_of_this_node_is_served_here(name: str, populated: Path) -> None:
    assert_well_formed(name, execute(populated, name, [*VALID[name], COMMANDS[name].node_option, "node1"]))


@pytest.mark.parametrize(("dest", "code"), [("node2", COMM), ("nosuch", MISSING)])
@pytest.mark.parametrize("name", ABOUT_A_NODE)
def test_destination(name: str, dest: str, code: int, populated: Path) -> None:
    """-d of another node cannot be served yet (9); -d of no node is not found (7). Nothing happens."""
    before = lcd_dump(populated)
    result = execute(populated, name, [*VALID[name], COMMANDS[name].node_option, dest])
    assert result.code == code, result.err
    assert_refused(before, populated, result, f"{name}: ")
    assert repr(dest) in result.err


def test_flg_test_of_an_unset_flag_is_an_answer_not_an_error(populated: Path, cli: Cli) -> None:
    """flg_test's 7 for a flag that is not set is its documented answer: silent, as LifeKeeper's."""
    before = lcd_dump(populated)
    assert cli("flg_test", "-f", "nosuch") == Result(MISSING, "", "")
    assert cli("flg_test", "-f", "maint") == Result(OK, "", "")
    assert lcd_dump(populated) == before


UNUSABLE_ROOTS = ["/proc/nonexistent/x", "/proc/nonexistent/new\nline"]


@pytest.mark.parametrize("state_dir", UNUSABLE_ROOTS, ids=["plain", "newline"])
@pytest.mark.parametrize("name", ABOUT_A_NODE)
def test_state_dir_that_cannot_be_created(name: str, state_dir: str) -> None:
    result = execute(state_dir, name, VALID[name])
    if name == "lkstop":  # stopping what does not run succeeds, and lkstop creates nothing
        assert result == Result(OK, "hakeeperd is not running\n", "")
        return
    # 'lcd check' and 'log' create nothing either: there is no LCD to check, no log to read there
    assert result.code == (MISSING if name in ("lcd", "log") else SYSCALL), result.err
    assert_one_line(result.err, f"{name}: ")
    assert "/proc/nonexistent/" in result.err
    assert result.out == ""


# ---------------------------------------------------------------------- generated command lines

#: Options left out of generated command lines: --help prints usage, and the values of
#: --root and --log are paths written to (anything, anywhere, as root).
UNSAFE_OPTIONS = {"--root", "--log"}


def option_flags(name: str) -> list[str]:
    return sorted(a.flag for a in options(name) if a.flag is not None and a.flag not in UNSAFE_OPTIONS)


#: Names and values that mean something in the populated LCD or to some option.
KNOWN = [
    *("web", "vip", "db", "web-id", "10.0.0.1", "db-id", "new", "nosuch"),
    *("gen", "comm", "spare", "app", "nokit", "node1", "node2", "node3", "maint"),
    *("ISP", "ISU", "OSU", "OSF", "ILLSTATE", "AUTORES_ISP", "INIT_ISP", "INIT_OSU"),
    *("INTELLIGENT", "AUTOMATIC", "SHARED", "Y", "N", "q", "d"),
    *("0", "1", "-1", "2", "1024", "1025", "86400", "86401", "99999999999999999999"),
    *("", " ", ":", "\x01", "{}", '{"a": [1]}', "[1,", "a\nb", "-", "--"),
    *("gen/app", "ocf/ra", RESTORE, REMOVE, "timeout=1", "agent=ocf:heartbeat:Dummy", "ocf:heartbeat:Dummy"),
    *("restore", "remove", "quickCheck", "recover", "generic", "failure", "MAJOR"),
]

#: Text a command line can hold: any Unicode with control characters, bytes that are
#: not UTF-8 (Python turns them into lone surrogates in argv), and long strings just
#: over the limits of tags (256), reasons (1024) and info (65536). Built to shrink fast.
TEXT = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=12).filter(lambda b: b"\0" not in b).map(os.fsdecode),
    st.sampled_from([257, 1025, MAX_INFO + 1]).map(lambda n: "x" * n),
    st.tuples(st.text(min_size=1, max_size=4), st.integers(50, 120)).map(lambda t: t[0] * t[1]),
)


def argv_for(name: str) -> st.SearchStrategy[list[str]]:
    flags = st.sampled_from(option_flags(name))
    value = st.one_of(st.sampled_from(KNOWN), TEXT)
    pair = st.tuples(flags, value).map(list)
    single = st.one_of(flags, value).map(lambda word: [word])
    parts = st.lists(st.one_of(pair, pair, single), max_size=6)
    return parts.map(lambda groups: [word for group in groups for word in group])


#: Exit 1 is an operation that failed, not bad input; these commands record such a
#: failure in the LCD (a restore that fails leaves its resource OSF), as LifeKeeper does.
RECORDS_FAILURES = {"perform_action"}


# Not lab and demo: what they do with a well-formed line is build a LAN or run the live demo (their bad input
# is in the table). A generated line could be one of those.
@pytest.mark.parametrize("name", ABOUT_A_NODE)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_command_line(
    name: str, data: st.DataObject, populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the command line, no traceback and a LifeKeeper code; refused means one line and nothing changed."""
    monkeypatch.chdir(tmp_path)  # whatever a command writes to a relative path lands here
    argv = data.draw(argv_for(name), label="argv")
    if name in SPAWNS:  # a real command line cannot hold a NUL byte: the OS refuses it before we run
        argv = [word.replace("\0", "") for word in argv]
    if name == "lcdremexec":  # it runs what it is given: let that be echo, whatever the words after it
        argv = ["echo", *argv]
    if name == "lcd":  # 'lcd backup FILE' writes FILE: keep it in this test's directory
        argv = [word.replace("/", "_") for word in argv]
    if name == "status":  # --watch runs until Ctrl-C, by design: one view is enough here (given last, it wins)
        argv = [*argv, "--count", "1"]
    if name == "log":  # -f follows until Ctrl-C, by design: not here (-f alone or among short flags, --follow)
        argv = [w for w in argv if w != "--follow" and not re.fullmatch(r"-[a-zA-Z]*f\S*", w)]
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        root = Path(scratch) / "state"
        shutil.copytree(populated, root)
        before = lcd_dump(root)
        try:
            result = execute(root, name, argv)
        finally:
            stop_daemon(root)  # lkstart may have started one
        assert "Traceback" not in result.err
        assert result.code in range(10), f"exit {result.code}: {result.err!r}"
        assert result.code != INTERNAL, f"bad input reported as an internal error: {result.err!r}"
        if name == "flg_test" and result.code == MISSING and not result.err:
            assert result.out == ""  # a flag that is not set: flg_test's answer, not an error
            assert lcd_dump(root) == before
        elif result.code == SYSCALL and name in RECORDS_FAILURES:
            assert_one_line(result.err, f"{name}: ")
        elif name == "lcd" and result.code == SYSCALL and result.out:  # 'lcd check' lists what is wrong, then fails
            assert_one_line(result.err, f"{name}: ")
            assert lcd_dump(root) == before
        elif result.code != OK:
            assert_refused(before, root, result, f"{name}: ")


# ---------------------------------------------------------------------- through hakeeperd


def within(seconds: float, work: Callable[[], T]) -> T:
    """``work()``, or a failed test if it does not return in time (a daemon that never answers)."""
    box: list[T] = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"no answer within {seconds} s"
    return box[0]


def test_through_hakeeperd(populated: Path, tmp_path: Path) -> None:
    """With hakeeperd running, commands go through it: the same code, the same line, and nothing changes."""
    forwarded = [case for case in SEMANTIC_CASES if not COMMANDS[case.command].local]
    alone: dict[str, Result] = {}
    for case in forwarded:
        scratch = tmp_path / "alone"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(populated, scratch)
        alone[case_id(case)] = invoke(scratch, case.command, case.argv)
    assert execute(populated, "lkstart", []).code == OK
    try:
        before = lcd_dump(populated)
        differ = []
        for case in forwarded:
            result = within(30, functools.partial(invoke, populated, case.command, case.argv))
            if result != alone[case_id(case)]:
                differ.append(f"{case_id(case)}: {result} alone: {alone[case_id(case)]}")
        assert lcd_dump(populated) == before, "the LCD changed"
    finally:
        stop_daemon(populated)
    assert not differ, "\n".join(differ)


# ---------------------------------------------------------------------- the installed console scripts

SCRIPT_CASES: list[Case] = [
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "web", "-i", "new-id"), EXISTS, "duplicate tag"),
    Case("ins_create", ("-a", "gen", "-r", "app", "-t", "bad tag", "-i", "x"), ILLEGAL, "tag with a space"),
    Case("ins_create", ("-a", "gen"), SYNTAX, "missing options"),
    Case("ins_setstate", ("-t", "web", "-S", "OSF"), ILLEGAL, "OSF"),
    Case("ins_setchkint", ("-t", "web", "-v", "86401"), RANGE, "interval too big"),
    Case("ins_setinfo", ("-t", "web", "-v", os.fsdecode(b"caf\xe9")), ILLEGAL, "info not UTF-8"),
    Case("dep_create", ("-p", "vip", "-c", "web"), ILLEGAL, "cycle"),
    Case("sys_remove", ("-s", "node2"), REFUSED, "node used by an equivalency"),
    Case("app_remove", ("-a", "gen"), REFUSED, "app with types"),
    Case("lcdstatus", ("-r", "nosuch"), MISSING, "unknown top"),
    Case("eqv_list", ("-d", "node2"), COMM, "other node"),
    Case("perform_action", ("-t", "nosuch", "-a", "restore"), MISSING, "unknown tag"),
    Case("sendevent", ("-C", "generic", "-E", "failure", "-n", "web"), SYSCALL, "no daemon"),
    Case("lkstart", ("--log", "/proc"), SYSCALL, "log is a directory"),
]


@pytest.mark.parametrize("case", SCRIPT_CASES, ids=case_id)
def test_console_script(case: Case, populated: Path) -> None:
    before = lcd_dump(populated)
    result = script(case.command, *case.argv, state_dir=populated)
    assert result.code == case.code, result.err
    assert_refused(before, populated, result, f"{case.command}: ")


@pytest.mark.parametrize("case", SCRIPT_CASES[:3], ids=case_id)
def test_hakeeper_command(case: Case, populated: Path) -> None:
    """``hakeeper NAME ...`` says the same, under the name the user typed."""
    before = lcd_dump(populated)
    result = script("hakeeper", "--root", str(populated), case.command, *case.argv)
    assert result.code == case.code, result.err
    assert_refused(before, populated, result, f"hakeeper {case.command}: ")


def test_failed_restore_is_one_line(populated: Path) -> None:
    """A restore that fails (vip's type has no kit) says so in one line; the LCD records it, exit 1."""
    result = script("perform_action", "-t", "web", "-a", "restore", state_dir=populated)
    assert result.code == SYSCALL, result.err
    assert_one_line(result.err, "perform_action: ")
    assert "vip" in result.err


@pytest.mark.parametrize("daemon", [False, True], ids=["without hakeeperd", "node2 unreachable from hakeeperd"])
def test_eqv_create_and_extend_record_on_both_nodes_or_on_neither(populated: Path, daemon: bool) -> None:
    """node2 cannot record its side: eqv_create is refused like extend (exit 9), and no LCD changes."""
    if daemon:
        assert execute(populated, "lkstart", []).code == OK
    try:
        before = lcd_dump(populated)
        for name, argv in (
            ("eqv_create", ("-t", "web", "-S", "node2", "-o", "ghost")),
            ("eqv_create", ("-t", "db", "-S", "node3")),
            ("extend", ("-t", "web", "-s", "node2")),
        ):
            result = within(30, functools.partial(invoke, populated, name, argv))
            assert result.code == COMM, (name, result)
            assert_refused(before, populated, result, f"{name}: ")
    finally:
        stop_daemon(populated)


def test_hakeeper_command_through_hakeeperd(populated: Path) -> None:
    """``hakeeper NAME ...`` sent to hakeeperd says the same as without it, under the name the user typed."""
    alone = {
        case_id(case): script("hakeeper", "--root", str(populated), case.command, *case.argv)
        for case in SCRIPT_CASES[:3]
    }
    assert execute(populated, "lkstart", []).code == OK
    try:
        for case in SCRIPT_CASES[:3]:
            result = within(
                30, functools.partial(script, "hakeeper", "--root", str(populated), case.command, *case.argv)
            )
            assert result == alone[case_id(case)]
            assert_one_line(result.err, f"hakeeper {case.command}: ")
    finally:
        stop_daemon(populated)


@pytest.mark.parametrize(
    "argv",
    [["nosuchcommand"], ["nosuchcommand", "-t", "web"], ["--bogus", "ins_list"], []],
    ids=["unknown command", "unknown command with options", "unknown option", "no command"],
)
def test_hakeeper_usage_errors(argv: list[str], populated: Path) -> None:
    before = lcd_dump(populated)
    result = script("hakeeper", "--root", str(populated), *argv)
    assert result.code == SYNTAX, result.err
    assert_refused(before, populated, result, "hakeeper")
    assert (argv[0] if argv else "command") in result.err


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--bogus"], SYNTAX),
        (["--recover-attempts", "-1"], RANGE),
        (["--recover-window", "soon"], SYNTAX),
        (["--log-level", "LOUD"], ILLEGAL),
        (["--log-target", "console"], ILLEGAL),
        (["--log-target", "file", "--log-file", "/proc/nonexistent/hakeeperd.log"], SYSCALL),
        (["--config", "/proc/nonexistent/hakeeper.toml"], ILLEGAL),
    ],
    ids=["unknown option", "negative attempts", "window not a number", "bad log level", "bad log target",
         "a log that cannot be written", "no such configuration file"],
)  # fmt: skip
def test_hakeeperd_usage_errors(argv: list[str], code: int, populated: Path) -> None:
    """The daemon's own command line: refused before it starts, in one line, with LifeKeeper's codes."""
    before = lcd_dump(populated)
    result = script("hakeeperd", "--root", str(populated), *argv)
    assert result.code == code, result.err
    assert_refused(before, populated, result, "hakeeperd: ")
    assert not (populated / "hakeeperd.sock").exists()


@pytest.mark.parametrize("state_dir", UNUSABLE_ROOTS, ids=["plain", "newline"])
def test_unusable_state_dir(state_dir: str) -> None:
    by_option = script("hakeeper", "--root", state_dir, "app_list")
    by_environment = script("app_list", state_dir=state_dir)
    for result, prefix in ((by_option, "hakeeper app_list: "), (by_environment, "app_list: ")):
        assert result.code == SYSCALL, result.err
        assert_one_line(result.err, prefix)
        assert "/proc/nonexistent/" in result.err
        assert result.out == ""


# ---------------------------------------------------------------------- the state directory and the node's name


@pytest.fixture
def default_root_untouched() -> Iterator[None]:
    """The default state directory is not created by the test (and is removed if it was: it is the bug)."""
    default = Path(DEFAULT_ROOT)
    existed = default.exists()
    yield
    if not existed and default.exists():
        shutil.rmtree(default)
        pytest.fail(f"{default} was created")


class EmptyRoot(NamedTuple):
    argv: tuple[str, ...]
    state_dir: str | None  # HAKEEPER_ROOT ("": set but empty)
    prefix: str
    named: str  # what the error names


EMPTY_ROOTS = [
    EmptyRoot(("hakeeper", "--root", "", "ins_list"), None, "hakeeper ins_list: ", "--root"),
    EmptyRoot(("hakeeper", "--root=", "flg_create", "-f", "x"), None, "hakeeper flg_create: ", "--root"),
    EmptyRoot(("ins_list", "--root", ""), None, "ins_list: ", "--root"),
    EmptyRoot(("ins_list",), "", "ins_list: ", "HAKEEPER_ROOT"),
    EmptyRoot(("flg_create", "-f", "x"), "", "flg_create: ", "HAKEEPER_ROOT"),
    EmptyRoot(("hakeeper", "changes"), "", "hakeeper changes: ", "HAKEEPER_ROOT"),
    EmptyRoot(("sendevent", "-C", "generic", "-E", "failure", "-n", "web"), "", "sendevent: ", "HAKEEPER_ROOT"),
    EmptyRoot(("lkstart",), "", "lkstart: ", "HAKEEPER_ROOT"),
    EmptyRoot(("hakeeperd",), "", "hakeeperd: ", "HAKEEPER_ROOT"),
    EmptyRoot(("hakeeperd", "--root", ""), None, "hakeeperd: ", "--root"),
]


@pytest.mark.parametrize("case", EMPTY_ROOTS, ids=[" ".join(c.argv) for c in EMPTY_ROOTS])
@pytest.mark.usefixtures("default_root_untouched")
def test_empty_state_directory_is_refused(case: EmptyRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset variable in a script (HAKEEPER_ROOT=, --root "$DIR") never reaches /var/lib/hakeeper, nor '.'."""
    monkeypatch.chdir(tmp_path)
    result = script(*case.argv, state_dir=case.state_dir)
    assert result.code == ILLEGAL, result.err
    assert_one_line(result.err, case.prefix)
    assert case.named in result.err and "empty" in result.err
    assert result.out == ""
    assert list(tmp_path.iterdir()) == [], "something was written in the current directory"


def test_root_option_without_its_value() -> None:
    result = script("hakeeper", "--root")
    assert result.code == SYNTAX, result.err
    assert_one_line(result.err, "hakeeper: ")
    assert "--root needs a value" in result.err


@pytest.mark.parametrize("name", ["bad name", "", "a/b"], ids=["space", "empty", "slash"])
def test_bad_node_name_in_the_environment_is_named(name: str, tmp_path: Path) -> None:
    """HAKEEPER_NODE names this node when its LCD is created: a bad value says which variable is wrong."""
    result = script("ins_list", state_dir=tmp_path / "state", environ={"HAKEEPER_NODE": name})
    assert result.code == ILLEGAL, result.err
    assert_one_line(result.err, "ins_list: ")
    assert "HAKEEPER_NODE" in result.err
    assert not (tmp_path / "state" / "lcd.sqlite").exists()
