"""``hakeeper update`` on a node of its own: new scripts and parameters in place, refusals that change nothing."""

from __future__ import annotations

import json
from pathlib import Path

from hakeeper.db import Lcd, State
from tests.conftest import Cli

INSTANCES = Path("subsys/gen/resources/app/instances")


def script(path: Path, text: str) -> Path:
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def info(root: Path, tag: str) -> dict[str, object]:
    with Lcd.open(root) as lcd:
        value = lcd.resource(tag).info
    assert isinstance(value, dict)
    return value


def test_new_scripts_and_timeout_are_used_and_the_old_copies_go(root: Path, cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    v1 = script(tmp_path / "v1", f"echo v1 > {marker}")
    stop = script(tmp_path / "stop", "exit 0")
    assert cli("create", "gen/app", "-t", "web", f"restore={v1}", f"remove={stop}").code == 0
    v2 = script(tmp_path / "v2", f"echo v2 > {marker}")
    check = script(tmp_path / "check", "exit 0")
    done = cli("update", "-t", "web", f"restore={v2}", f"quickCheck={check}", "timeout=42")
    assert done.code == 0, done.err
    assert "web updated on node1: quickCheck, restore, timeout" in done.out
    now = info(root, "web")
    assert now["timeout"] == 42 and now["scripts"] == ["restore", "remove", "quickCheck"]
    dirs = sorted(p.name for p in (root / INSTANCES / "web").iterdir())
    assert dirs == [f"actions-{now['version']}"], "the copy the old info used is gone; only the new one is left"
    assert cli("perform_action", "-t", "web", "-a", "restore").code == 0
    assert marker.read_text().strip() == "v2"
    dropped = cli("update", "-t", "web", "quickCheck=")
    assert dropped.code == 0 and info(root, "web")["scripts"] == ["restore", "remove"]
    again = cli("update", "-t", "web", "timeout=42")
    assert again.code == 0 and "nothing to change" in again.out


def test_refusals_change_nothing(root: Path, cli: Cli, tmp_path: Path) -> None:
    start = script(tmp_path / "start", "exit 0")
    assert cli("create", "gen/app", "-t", "web", f"restore={start}", f"remove={start}").code == 0
    assert cli("create", "comm/ip", "-t", "vip", "address=198.18.0.50/24", "interface=lo").code == 0
    before = {tag: json.dumps(info(root, tag), sort_keys=True) for tag in ("web", "vip")}
    cases = [
        (("-t", "web", "colour=blue"), "gen/app has no parameter 'colour'"),
        (("-t", "web", "restore=relative/start"), "absolute path"),
        (("-t", "web", f"restore={tmp_path / 'missing'}"), "missing"),
        (("-t", "web", "timeout=0"), "timeout"),
        (("-t", "vip", "address=198.18.0.51/24"), "the address is what the resource is"),
        (("-t", "nothing", "timeout=5"), "nothing"),
    ]
    for argv, said in cases:
        refused = cli("update", *argv)
        assert refused.code != 0 and said in refused.err, (argv, refused.err)
    assert {tag: json.dumps(info(root, tag), sort_keys=True) for tag in ("web", "vip")} == before
    assert sorted(p.name for p in (root / INSTANCES / "web").iterdir()) == ["actions"]


def test_an_interface_changes_only_while_the_address_runs_nowhere(root: Path, cli: Cli) -> None:
    made = cli("create", "comm/ip", "-t", "vip", "address=198.18.0.50/24", "interface=lo", "ping_list=198.18.0.1")
    assert made.code == 0
    assert cli("update", "-t", "vip", "ping_list=198.18.0.2").code == 0
    assert info(root, "vip")["ping_list"] == ["198.18.0.2"]
    with Lcd.open(root) as lcd:
        lcd.set_state("vip", State.ISP, "test: as if it ran here")
    refused = cli("update", "-t", "vip", "interface=eth9")
    assert refused.code != 0 and "interface of vip may change only while it runs nowhere" in refused.err
    assert info(root, "vip")["interface"] == "lo"


def test_an_extended_resource_needs_hakeeperd(root: Path, cli: Cli, tmp_path: Path) -> None:
    start = script(tmp_path / "start", "exit 0")
    assert cli("create", "gen/app", "-t", "web", f"restore={start}", f"remove={start}").code == 0
    with Lcd.open(root) as lcd:
        lcd.create_node("node2")
        lcd.create_equivalency("web", "node2")
    refused = cli("update", "-t", "web", "timeout=9")
    assert refused.code != 0 and "web is also on node2: hakeeperd must run" in refused.err
    assert info(root, "web")["timeout"] == 300
