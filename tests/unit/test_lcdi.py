"""The LCDI commands as a user runs them: output shapes, selections, delete actions."""

from __future__ import annotations

import json
import sqlite3
import stat
import sys
from contextlib import closing
from pathlib import Path

import pytest

from hakeeper.db import Lcd
from tests.conftest import Cli


@pytest.fixture
def hierarchy(cli: Cli, root: Path) -> Cli:
    """web -> (web-ip, web-fs -> web-disk), and db -> web-disk shared; web and web-ip equivalent on node2.

    The equivalencies are written as hakeeperd records them once node2 agreed (eqv_create needs both).
    """
    for argv in (
        ["app_create", "-a", "lk"],
        ["typ_create", "-a", "lk", "-r", "svc"],
        ["sys_create", "-s", "node2"],
        ["ins_create", "-a", "lk", "-r", "svc", "-t", "web-disk", "-i", "disk-1"],
        ["ins_create", "-a", "lk", "-r", "svc", "-t", "web-fs", "-i", "/srv/web"],
        ["ins_create", "-a", "lk", "-r", "svc", "-t", "web-ip", "-i", "198.18.0.10"],
        ["ins_create", "-a", "lk", "-r", "svc", "-t", "web", "-i", "web-1", "-v", '{"port": 80}'],
        ["ins_create", "-a", "lk", "-r", "svc", "-t", "db", "-i", "db-1", "-s", "AUTOMATIC", "-Q", "30"],
        ["dep_create", "-p", "web", "-c", "web-ip"],
        ["dep_create", "-p", "web", "-c", "web-fs"],
        ["dep_create", "-p", "web-fs", "-c", "web-disk"],
        ["dep_create", "-p", "db", "-c", "web-disk"],
    ):
        result = cli(*argv)
        assert (result.code, result.err) == (0, ""), argv
    with Lcd.open(root) as lcd:
        lcd.create_equivalency("web", "node2")
        lcd.create_equivalency("web-ip", "node2", other_priority=5)
    return cli


def test_ins_list_prints_lifekeeper_fields_with_the_chosen_separator(hierarchy: Cli) -> None:
    out = hierarchy("ins_list", "-t", "web", "-f:").out
    assert out == 'lk:svc:web:web-1:OSU:created:AUTORES_ISP:INTELLIGENT:120:Y:{"port":80}\n'
    default = hierarchy("ins_list", "-t", "db").out
    assert default.split("\x01")[2:4] == ["db", "db-1"]
    assert default.split("\x01")[7:9] == ["AUTOMATIC", "30"]


def test_listings_speak_json(hierarchy: Cli) -> None:
    records = json.loads(hierarchy("ins_list", "--json").out)
    assert [r["tag"] for r in records] == ["db", "web", "web-disk", "web-fs", "web-ip"]
    assert records[1]["info"] == {"port": 80}
    assert json.loads(hierarchy("dep_list", "-c", "web", "--json").out) == [
        {"parent": "web", "child": "web-fs"},
        {"parent": "web", "child": "web-ip"},
    ]
    assert json.loads(hierarchy("sys_list", "--json").out) == [
        {"name": "node1", "local": True, "witness": False},
        {"name": "node2", "local": False, "witness": False},
    ]
    builtin = [("comm", "dns"), ("comm", "ip"), ("gen", "app"), ("ocf", "ra")]  # every LCD knows its kits
    types = [{"app": a, "type": t} for a, t in sorted([*builtin, ("lk", "svc")])]
    assert json.loads(hierarchy("typ_list", "--json").out) == types
    assert json.loads(hierarchy("app_list", "--json").out) == ["comm", "gen", "lk", "ocf"]
    assert json.loads(hierarchy("flg_list", "--json").out) == []
    assert json.loads(hierarchy("eqv_list", "-t", "web-ip", "--json").out) == [
        {
            "node": "node1",
            "tag": "web-ip",
            "other_node": "node2",
            "other_tag": "web-ip",
            "type": "SHARED",
            "priority": 1,
            "other_priority": 5,
        }
    ]
    changes = json.loads(hierarchy("changes", "--json").out)
    assert [c["seq"] for c in changes] == list(range(1, len(changes) + 1))


def test_ins_list_selects_hierarchies_below_a_top(hierarchy: Cli) -> None:
    tags = [line.split(":")[2] for line in hierarchy("ins_list", "-R", "web-fs", "-f:").out.splitlines()]
    assert tags == ["web-disk", "web-fs"]
    assert hierarchy("ins_gettag", "-i", "/srv/web").out == "web-fs\n"


def test_dep_list_closures(hierarchy: Cli) -> None:
    def edges(*argv: str) -> list[str]:
        return hierarchy("dep_list", "-f>", *argv).out.splitlines()

    assert edges() == ["db>web-disk", "web>web-fs", "web>web-ip", "web-fs>web-disk"]
    assert edges("-C", "web") == ["web>web-fs", "web>web-ip", "web-fs>web-disk"]
    assert edges("-P", "web-disk") == ["db>web-disk", "web>web-fs", "web-fs>web-disk"]
    assert edges("-p", "web-disk") == ["db>web-disk", "web-fs>web-disk"]


def test_lcdstatus_short_form_indents_children_under_parents(hierarchy: Cli) -> None:
    lines = hierarchy("lcdstatus", "-e").out.splitlines()
    assert lines[0].split() == ["BACKUP", "TAG", "ID", "STATE", "PRIO", "PRIMARY"]
    rows = [(line[: line.index(" ")], line.split()[1:]) for line in lines[1:]]
    tag_col, id_col = lines[0].index("TAG"), lines[0].index("ID")
    shown = [line[tag_col:id_col].rstrip() for line in lines[1:]]
    assert shown == ["db", " web-disk", "web", " web-fs", "  web-disk", " web-ip"]
    assert rows[2] == ("node2", ["web", "web-1", "OSU", "1", "node1"])
    assert rows[0] == ("--", ["db", "db-1", "OSU", "--", "node1"])


def test_lcdstatus_long_form_and_problems_only(hierarchy: Cli) -> None:
    long = hierarchy("lcdstatus").out
    assert "web-ip\n" in long
    assert "equivalencies   node1 (priority 1, this node), node2 (priority 5)" in long
    assert "Shutdown strategy: Do Not Switch Over Resources" in long
    assert hierarchy("lcdstatus", "-q").out == ""
    hierarchy("ins_setstate", "-t", "web-ip", "-S", "ISU", "-R", "maintenance")
    assert hierarchy("lcdstatus", "-q").out == "web-ip ISU (maintenance)\n"
    status = json.loads(hierarchy("lcdstatus", "--json", "-r", "web").out)
    assert {r["tag"] for r in status["resources"]} == {"web", "web-ip", "web-fs", "web-disk"}
    assert status["hierarchies"][0]["tag"] == "web"


def test_ins_remove_takes_dependents_first_and_keeps_others(hierarchy: Cli) -> None:
    result = hierarchy("ins_remove", "-t", "web-disk", "-v")
    assert result.out.splitlines() == ["web", "web-fs", "db", "web-disk"]
    left = hierarchy("ins_list", "-f:").out.splitlines()
    assert [line.split(":")[2] for line in left] == ["web-ip"]
    assert hierarchy("eqv_list", "-f:").out == "node1:web-ip:node2:web-ip:SHARED:1:5\n"
    assert hierarchy("dep_list").out == ""


def test_ins_remove_rooted_keeps_shared_children(hierarchy: Cli) -> None:
    result = hierarchy("ins_remove", "-R", "web", "-v")
    assert result.out.splitlines() == ["web", "web-ip", "web-fs"]
    tags = [line.split(":")[2] for line in hierarchy("ins_list", "-f:").out.splitlines()]
    assert tags == ["db", "web-disk"]


def _delete_action(root: Path, body: str) -> Path:
    """Make lk/svc a script kit: restore and remove do nothing, delete runs ``body``."""
    actions = root / "subsys" / "lk" / "resources" / "svc" / "actions"
    actions.mkdir(parents=True)
    for name, text in (("restore", "exit 0\n"), ("remove", "exit 0\n"), ("delete", body)):
        script = actions / name
        script.write_text("#!/bin/sh\n" + text)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return actions / "delete"


def test_ins_remove_runs_delete_actions_parents_first(hierarchy: Cli, root: Path) -> None:
    log = root / "deleted.log"
    _delete_action(root, f'echo "$1 $2 $3 $4 $HAKEEPER_TAG $HAKEEPER_NODE $HAKEEPER_INFO" >> {log}\n')
    assert hierarchy("ins_remove", "-t", "web-fs").code == 0
    assert log.read_text().splitlines() == [
        'web -t web -i web-1 web node1 {"port":80}'.replace("web -t", "-t", 1),
        "-t web-fs -i /srv/web web-fs node1 ",
    ]


def test_a_failing_delete_action_stops_the_removal_there(hierarchy: Cli, root: Path) -> None:
    _delete_action(root, 'if [ "$HAKEEPER_TAG" = web-fs ]; then echo "volume busy"; exit 1; fi\n')
    result = hierarchy("ins_remove", "-t", "web-fs")
    assert result.code == 1
    assert result.err == (
        "ins_remove: delete of web-fs failed (exit 1, generic error): volume busy; removed before it: web "
        "(fix it, or skip delete actions with -N)\n"
    )
    tags = [line.split(":")[2] for line in hierarchy("ins_list", "-f:").out.splitlines()]
    assert tags == ["db", "web-disk", "web-fs", "web-ip"]
    assert hierarchy("ins_remove", "-t", "web-fs", "-N").code == 0


def test_flags(cli: Cli) -> None:
    assert cli("flg_test", "-f", "!nofailover!node2").code == 7
    assert cli("flg_create", "-f", "!nofailover!node2").code == 0
    assert cli("flg_test", "-f", "!nofailover!node2").code == 0
    assert cli("flg_list").out == "!nofailover!node2\n"
    assert cli("flg_remove", "-f", "!nofailover!node2").code == 0
    assert cli("flg_list").out == ""


def test_setters_change_what_lcdstatus_shows(hierarchy: Cli) -> None:
    for argv in (
        ["ins_setinfo", "-t", "db", "-v", "plain words"],
        ["ins_setas", "-t", "db", "-s", "INTELLIGENT"],
        ["ins_setinit", "-t", "db", "-I", "INIT_OSU"],
        ["ins_setchkint", "-t", "db", "-c", "q", "-v", "0"],
        ["ins_setlocalrecover", "-t", "db", "-l", "N"],
        ["ins_setstate", "-t", "db", "-S", "ISP"],
    ):
        assert hierarchy(*argv).code == 0, argv
    db = json.loads(hierarchy("ins_list", "-t", "db", "--json").out)[0]
    assert db == {
        "tag": "db",
        "id": "db-1",
        "app": "lk",
        "type": "svc",
        "info": "plain words",
        "state": "ISP",
        "reason": "ins_setstate by " + db["reason"].split()[-1],
        "init": "INIT_OSU",
        "switchback": "INTELLIGENT",
        "quickcheck_interval": 0,
        "local_recover": False,
    }
    assert "quickCheck      off" in hierarchy("lcdstatus").out


def test_destination_is_this_node_or_unreachable(hierarchy: Cli) -> None:
    assert hierarchy("ins_list", "-d", "node1", "-t", "web").code == 0
    assert hierarchy("ins_list", "-d", "node2", "-t", "web").code == 9


def test_create_checks_parameters_and_leaves_nothing_behind_when_refused(cli: Cli, root: Path, tmp_path: Path) -> None:
    script = tmp_path / "start"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    scripts = [f"restore={script}", f"remove={script}"]
    assert cli("create", "gen/app", "-t", "web", "-i", "web-1", *scripts).code == 0
    copied = root / "subsys" / "gen" / "resources" / "app" / "instances"
    assert (copied / "web" / "actions" / "restore").read_text() == script.read_text()
    # The kit copies the scripts, then the LCD refuses the id: the copies go again.
    clash = cli("create", "gen/app", "-t", "other", "-i", "web-1", *scripts)
    assert (clash.code, clash.err) == (4, "create: id 'web-1' is already used by resource 'web'\n")
    assert not (copied / "other").exists()
    bad = cli("create", "gen/app", "-t", "other", *scripts, "colour=blue")
    assert bad.code == 5 and "no parameter 'colour'" in bad.err
    missing = cli("create", "gen/app", "-t", "other", f"restore={script}")
    assert missing.code == 5 and "needs parameter remove=" in missing.err
    assert [r.split(":")[2] for r in cli("ins_list", "-f:").out.splitlines()] == ["web"]


def test_a_dependency_cycle_is_an_error_not_an_empty_hierarchy(hierarchy: Cli, root: Path) -> None:
    """An LCD with a cycle (two racing dep_create left one before their checks ran in the write transaction)."""
    with closing(sqlite3.connect(root / "lcd.sqlite")) as db:
        db.execute("INSERT INTO dependencies (parent, child) VALUES ('web-disk', 'web')")
        db.commit()
    for argv in (["lcdstatus", "-r", "web"], ["lcdstatus", "-e"], ["lcdstatus", "--json"]):
        result = hierarchy(*argv)
        assert (result.code, result.out) == (3, ""), argv
        assert "dependency cycle among web, web-disk, web-fs" in result.err, argv
    result = hierarchy("perform_action", "-t", "web-disk", "-a", "restore")
    assert result.code == 1, result
    assert "dependency cycle among web, web-disk, web-fs" in result.err
    assert "OSU" in hierarchy("ins_list", "-t", "web-disk", "-f:").out


def _changes_since(cli: Cli, seq: int) -> list[dict[str, object]]:
    records: list[dict[str, object]] = json.loads(cli("changes", "--since", str(seq), "--json").out)
    return records


def test_ins_remove_of_a_hierarchy_is_one_change(hierarchy: Cli, root: Path) -> None:
    """With delete actions or without, the change log has one change for the removal, naming every tag."""
    seq = _changes_since(hierarchy, 0)[-1]["seq"]
    assert hierarchy("ins_remove", "-R", "web", "-N").code == 0
    removed = _changes_since(hierarchy, int(seq))  # type: ignore[call-overload]
    assert [(c["op"], c["args"]) for c in removed] == [("remove_resources", {"tags": ["web", "web-fs", "web-ip"]})]
    _delete_action(root, "exit 0\n")
    assert hierarchy("ins_remove", "-t", "web-disk").code == 0
    removed = _changes_since(hierarchy, int(removed[-1]["seq"]))  # type: ignore[call-overload]
    assert [(c["op"], c["args"]) for c in removed] == [("remove_resources", {"tags": ["db", "web-disk"]})]


def test_a_dependent_made_while_delete_actions_run_refuses_the_removal(hierarchy: Cli, root: Path) -> None:
    """Someone makes db depend on web-ip while ins_remove runs web-ip's delete action: db's never ran."""
    code = 'from hakeeper.cli.base import run; run("dep_create", ["-p", "db", "-c", "web-ip"])'
    make_dependent = f"{sys.executable} -c '{code}'"
    _delete_action(root, f'if [ "$HAKEEPER_TAG" = web-ip ]; then {make_dependent}; fi\n')
    before = hierarchy("ins_list", "-f:").out
    result = hierarchy("ins_remove", "-t", "web-ip")
    assert result.code == 8, result
    assert "db" in result.err and "nothing was removed" in result.err
    assert hierarchy("ins_list", "-f:").out == before
    assert hierarchy("dep_list", "-c", "db", "-f:").out == "db:web-disk\ndb:web-ip\n"
