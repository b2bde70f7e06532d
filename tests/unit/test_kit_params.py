"""Kits refuse at creation what cannot work, through their metadata: scripts the kernel cannot run, bad timeouts.

Refused means: one line naming the parameter, LifeKeeper's exit code (5 for a
script, 6 for a number out of range), and nothing written: neither the LCD nor
the kit's instance directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from hakeeper.db import Lcd, Resource
from hakeeper.kits.base import KitContext
from hakeeper.kits.gen_app import GenAppKit
from hakeeper.kits.registry import BUILTIN, Kits, register_kits
from tests.conftest import Cli, Result
from tests.unit.test_cli_errors import lcd_dump

OK, ILLEGAL, RANGE = 0, 5, 6
TRUE = shutil.which("true") or "/bin/true"  # an ELF program


def make(path: Path, content: bytes, mode: int = 0o755) -> str:
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


@pytest.fixture(autouse=True)
def kits_known(root: Path) -> None:
    """The LCD knows its kits, as after the first command on it: what a refused create writes is nothing."""
    with Lcd.open(root) as lcd:
        register_kits(lcd, root)


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, str]:
    """Files a restore= may name, by what is wrong with them."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    return {
        "good": make(folder / "good", b"#!/bin/sh\nexit 0\n"),
        "env": make(folder / "env", b"#!/usr/bin/env sh\nexit 0\n"),
        "not executable": make(folder / "plain", b"#!/bin/sh\nexit 0\n", 0o644),
        "no #!": make(folder / "bare", b"echo started\nexit 0\n"),
        "CR LF": make(folder / "windows", b"#!/bin/sh\r\nexit 0\r\n"),
        "no interpreter": make(folder / "ghost", b"#!/nonexistent/sh\nexit 0\n"),
        "relative interpreter": make(folder / "relative", b"#!sh\nexit 0\n"),
        "empty #!": make(folder / "empty", b"#!\nexit 0\n"),
        "a directory": str(folder),
        "passwd": "/etc/passwd",
    }


def assert_nothing_written(before: dict[str, list[tuple[object, ...]]], root: Path) -> None:
    assert lcd_dump(root) == before, "the LCD changed"
    assert not (root / "subsys").exists(), "the kit left files behind"


@pytest.mark.parametrize(
    ("which", "why"),
    [
        ("passwd", "not executable"),
        ("not executable", "not executable"),
        ("no #!", "neither a script starting with #! nor a program"),
        ("CR LF", "carriage return"),
        ("no interpreter", "interpreter /nonexistent/sh is missing"),
        ("relative interpreter", "not an absolute path"),
        ("empty #!", "names no interpreter"),
        ("a directory", "not a regular file"),
    ],
)
@pytest.mark.parametrize("param", ["restore", "remove", "quickCheck", "recover"])
def test_a_script_the_kernel_cannot_run_is_refused_naming_the_parameter(
    cli: Cli, root: Path, scripts: dict[str, str], *, which: str, why: str, param: str
) -> None:
    given = {"restore": scripts["good"], "remove": scripts["good"], param: scripts[which]}
    before = lcd_dump(root)
    result = cli("create", "gen/app", "-t", "web", *(f"{k}={v}" for k, v in given.items()))
    assert result.code == ILLEGAL, result
    assert result.out == "" and result.err.count("\n") == 1
    assert result.err.startswith(f"create: parameter {param}={scripts[which]}: ")
    assert why in result.err
    assert_nothing_written(before, root)


@pytest.mark.parametrize("which", ["good", "env"])
def test_scripts_with_an_interpreter_and_programs_are_accepted(cli: Cli, scripts: dict[str, str], which: str) -> None:
    result = cli("create", "gen/app", "-t", "web", f"restore={scripts[which]}", f"remove={TRUE}")
    assert result == Result(OK, "", "")


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        ("timeout=-1", "timeout=-1 is outside 1..3600"),
        ("timeout=0", "timeout=0 is outside 1..3600"),
        ("check_timeout=0", "check_timeout=0 is outside 1..3600"),
        ("timeout=3601", "timeout=3601 is outside 1..3600"),
        ("timeout=99999999999999999999", "timeout=99999999999999999999 is outside 1..3600"),
        ("check_timeout=-5", "check_timeout=-5 is outside 1..3600"),
    ],
)
def test_a_timeout_out_of_bounds_is_refused_naming_the_parameter(
    cli: Cli, root: Path, scripts: dict[str, str], setting: str, shown: str
) -> None:
    before = lcd_dump(root)
    result = cli("create", "gen/app", "-t", "web", f"restore={scripts['good']}", f"remove={TRUE}", setting)
    assert result == Result(RANGE, "", f"create: parameter {shown}\n")
    assert_nothing_written(before, root)


def test_timeouts_at_their_bounds_are_kept(cli: Cli, scripts: dict[str, str]) -> None:
    good = scripts["good"]
    argv = ("create", "gen/app", "-t", "web", f"restore={good}", f"remove={good}", "timeout=3600", "check_timeout=1")
    assert cli(*argv) == Result(OK, "", "")
    [record] = json.loads(cli("ins_list", "-t", "web", "--json").out)
    assert (record["info"]["timeout"], record["info"]["check_timeout"]) == (3600, 1)


def test_a_parameter_holding_a_control_character_is_refused(cli: Cli, root: Path, scripts: dict[str, str]) -> None:
    before = lcd_dump(root)
    result = cli("create", "gen/app", "-t", "web", f"restore={scripts['good']}", f"remove={TRUE}", "info=a\nb")
    assert result.code == ILLEGAL and "parameter info holds a control character" in result.err
    assert_nothing_written(before, root)


def test_every_builtin_kit_bounds_its_numbers_and_its_defaults_are_within_them(tmp_path: Path) -> None:
    from hakeeper.kits.base import MAX_ACTION_SECONDS

    kits = Kits(KitContext(tmp_path, "node1"))
    for name in BUILTIN:
        app, _, rtype = name.partition("/")
        kit = kits.get(app, rtype)
        for param in kit.meta.params:
            if param.type != "integer":
                continue
            assert param.minimum is not None and param.maximum is not None, f"{name} {param.name} has no bounds"
            if param.default is not None:
                assert param.minimum <= int(param.default) <= param.maximum, f"{name} {param.name}"
            if "timeout" in param.name:
                assert param.minimum >= 1 and param.maximum <= MAX_ACTION_SECONDS, f"{name} {param.name}"


def test_hakeeper_kits_shows_the_bounds(cli: Cli) -> None:
    from hakeeper.kits.base import MAX_ACTION_SECONDS

    shown = cli("kits").out
    assert "timeout=INTEGER  (default '300', 1..3600)" in shown
    [gen_app] = [k for k in json.loads(cli("kits", "--json").out) if k["kit"] == "gen/app"]
    [timeout] = [p for p in gen_app["parameters"] if p["name"] == "timeout"]
    assert (timeout["minimum"], timeout["maximum"]) == (1, MAX_ACTION_SECONDS)


def test_the_script_kit_refuses_at_creation_an_action_the_kernel_cannot_run(cli: Cli, root: Path) -> None:
    actions = root / "subsys" / "lk" / "resources" / "svc" / "actions"
    actions.mkdir(parents=True)
    make(actions / "restore", b"#!/bin/sh\nexit 0\n")
    make(actions / "remove", b"exit 0\n")  # no #!: execve fails with "Exec format error"
    before = lcd_dump(root)
    result = cli("create", "lk/svc", "-t", "svc1")
    assert result.code == ILLEGAL, result
    assert "remove script" in result.err and "neither a script starting with #!" in result.err
    assert lcd_dump(root) == before


def test_gen_app_validate_refuses_copies_the_kernel_cannot_run(tmp_path: Path) -> None:
    """What another node sent (extend) is validated there the same way."""
    kit = GenAppKit(KitContext(tmp_path, "node2"))
    kit.adopt("web", {}, {"scripts": {"restore": "IyEvYmluL3NoDQpleGl0IDAK", "remove": "IyEvYmluL3NoCmV4aXQgMAo="}})
    result = asyncio.run(kit.validate(Resource("web", "web", "gen", "app", info={})))
    assert not result.ok and "restore script" in result.message and "carriage return" in result.message


def test_runnable_problem_reads_only_the_first_line(tmp_path: Path) -> None:
    from hakeeper.kits.base import runnable_problem

    path = Path(make(tmp_path / "big", b"#!/bin/sh\n" + b"x" * 1_000_000))
    assert runnable_problem(path) is None
    assert runnable_problem(Path(TRUE)) is None
    assert runnable_problem(tmp_path / "missing") == "no such file"
