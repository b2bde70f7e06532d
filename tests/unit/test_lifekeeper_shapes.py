"""LifeKeeper's command shapes that existing scripts use: options, states, tags and kits as LifeKeeper has them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hakeeper.cli.main import run
from hakeeper.db import Lcd
from tests.conftest import Cli, Result

OK, SYSCALL, SYNTAX, ILLEGAL, MISSING, COMM = 0, 1, 2, 5, 7, 9


def invoke(root: Path, name: str, *argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = run(name, list(argv), root=str(root), out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def kit(root: Path) -> Path:
    """A LifeKeeper-layout kit lk/svc whose actions note themselves (action tag) in the returned log."""
    log = root / "actions.log"
    actions = root / "subsys" / "lk" / "resources" / "svc" / "actions"
    for action in ("restore", "remove", "delete"):
        script(actions / action, f'echo "{action} $2" >> {log}')
    return log


def states(lcd_root: Path) -> dict[str, str]:
    with Lcd.open(lcd_root) as lcd:
        return {r.tag: r.state.name for r in lcd.resources()}


# ---------------------------------------------------------------------- a fresh LCD knows its kits


def test_a_fresh_state_directory_knows_its_kits(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    assert invoke(fresh, "ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web") == Result(OK, "", "")
    types = invoke(fresh, "typ_list", "-f/").out.splitlines()
    assert {"gen/app", "comm/ip", "comm/dns", "ocf/ra"} <= set(types)
    ops = [c["op"] for c in json.loads(invoke(fresh, "changes", "--json").out)]
    assert ops == ["init_node", "register_kits", "create_resource"], "registered once, in one change"


def test_a_kit_installed_later_is_known_the_first_time_it_is_named(cli: Cli, root: Path, kit: Path) -> None:
    assert cli("ins_create", "-a", "lk", "-r", "svc", "-t", "web", "-i", "web") == Result(OK, "", "")
    assert "lk/svc" in cli("typ_list", "-f/").out.splitlines()
    script(root / "subsys" / "other" / "resources" / "thing" / "actions" / "restore", "exit 0")
    assert cli("ins_list", "-a", "other", "-f:") == Result(OK, "", "")
    assert "other/thing" in cli("typ_list", "-f/").out.splitlines()


def test_a_kit_type_the_administrator_removed_stays_removed(cli: Cli) -> None:
    cli("app_list")
    assert cli("typ_remove", "-a", "ocf", "-r", "ra") == Result(OK, "", "")
    assert "ocf/ra" not in cli("typ_list", "-f/").out.splitlines()
    assert cli("ins_create", "-a", "ocf", "-r", "ra", "-t", "x", "-i", "x").code == MISSING


def test_registering_kits_is_idempotent(lcd: Lcd) -> None:
    assert lcd.registered_kits() is None
    assert lcd.register_kits(["gen/app", "comm/ip"]) == ["comm/ip", "gen/app"]
    seq = lcd.last_seq()
    assert lcd.register_kits(["gen/app"]) == []
    assert lcd.last_seq() == seq, "nothing new: no change recorded"
    assert lcd.register_kits(["gen/app", "lk/svc"]) == ["lk/svc"]
    assert lcd.registered_kits() == ["comm/ip", "gen/app", "lk/svc"]
