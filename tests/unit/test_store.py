"""The LCD's storage rules: durability settings, migrations, the change log, and the records' rules."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakeeper.db import Init, Lcd, State, Switchback
from hakeeper.db.model import check_tag
from hakeeper.db.schema import SCHEMA_VERSION
from hakeeper.errors import (
    AlreadyExists,
    DeleteRefused,
    IllegalArgument,
    NotFound,
    OutOfRange,
    SchemaError,
    StateDirError,
    SystemCallFailed,
)
from tests.conftest import Cli


def sample(lcd: Lcd) -> None:
    lcd.create_app("gen")
    lcd.create_type("gen", "app")
    lcd.create_app("comm")
    lcd.create_type("comm", "ip")
    lcd.create_node("node2")
    lcd.create_node("node3")
    lcd.create_resource("web-ip", "198.18.0.10", "comm", "ip")
    lcd.create_resource("web", "web-1", "gen", "app", info={"port": 8080})
    lcd.create_dependency("web", "web-ip")
    lcd.create_equivalency("web", "node2")
    lcd.create_equivalency("web-ip", "node2")


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path / "lcd.sqlite")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables if t != "changes"}
    finally:
        db.close()


def test_database_is_wal_with_full_sync_and_foreign_keys(lcd: Lcd, root: Path) -> None:
    conn = lcd._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert lcd.integrity_ok()
    assert (root / "lcd.sqlite").exists()


def test_state_directory_is_private_and_chosen_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAKEEPER_ROOT", str(tmp_path / "from-env"))
    monkeypatch.setenv("HAKEEPER_NODE", "alpha")
    with Lcd.open() as lcd:
        assert lcd.path == tmp_path / "from-env" / "lcd.sqlite"
        assert lcd.local_node == "alpha"
    assert (tmp_path / "from-env").stat().st_mode & 0o777 == 0o700


def test_state_directory_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StateDirError, match="cannot create state directory"):
        Lcd.open(tmp_path / "file" / "sub")
    with pytest.raises(StateDirError, match="not a directory"):
        Lcd.open(tmp_path / "file")


def test_a_newer_schema_is_refused_and_an_old_one_migrated(tmp_path: Path) -> None:
    newer = tmp_path / "newer"
    newer.mkdir()
    db = sqlite3.connect(newer / "lcd.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaError, match="upgrade hakeeper"):
        Lcd.open(newer)
    empty = tmp_path / "empty"
    empty.mkdir()
    db = sqlite3.connect(empty / "lcd.sqlite")  # a version-0 database (not a zero-byte file: that is damage)
    db.executescript("CREATE TABLE scratch (x); DROP TABLE scratch;")
    db.close()
    with Lcd.open(empty, node="n1") as lcd:
        assert lcd.nodes()[0].name == "n1"


def test_every_change_gets_the_next_sequence_number_and_failures_none(lcd: Lcd) -> None:
    start = lcd.last_seq()
    sample(lcd)
    changes = lcd.changes(start)
    assert [c.seq for c in changes] == list(range(start + 1, start + 12))
    assert [c.op for c in changes][:3] == ["create_app", "create_type", "create_app"]
    assert changes[-1].args == {
        "tag": "web-ip",
        "other_node": "node2",
        "other_tag": "web-ip",
        "other_priority": 2,
        "node": "node1",
        "priority": 1,
        "others": {},
    }
    with pytest.raises(AlreadyExists):
        lcd.create_resource("web", "other", "gen", "app")
    with pytest.raises(IllegalArgument):
        lcd.create_dependency("web-ip", "web")
    assert lcd.last_seq() == start + 11


def test_replaying_the_change_log_rebuilds_the_same_lcd(lcd: Lcd, root: Path, tmp_path: Path) -> None:
    sample(lcd)
    lcd.set_state("web-ip", State.ISP, "test")
    lcd.set_info("web", {"port": 8081})
    lcd.set_switchback("web", Switchback.AUTOMATIC)
    lcd.set_init("web", Init.INIT_OSU)
    lcd.set_check_interval("web", 30)
    lcd.set_local_recover("web", False)
    lcd.create_flag("!nofailover!node2")
    lcd.remove_dependency("web", "web-ip")
    lcd.remove_equivalency("web", "node2")
    lcd.remove_resources(["web"])
    lcd.remove_node("node3")
    copy_root = tmp_path / "copy"
    with Lcd.open(copy_root, node="node1") as copy:
        for change in lcd.changes(1):  # 1 is the local node's own creation
            copy.replay(change.op, change.args)
    assert dump(copy_root) == dump(root)


def test_a_state_change_is_logged_once_with_its_reason(lcd: Lcd, caplog: pytest.LogCaptureFixture) -> None:
    sample(lcd)
    with caplog.at_level(logging.INFO, logger="hakeeper.db.store"):
        old = lcd.set_state("web", State.ISP, "perform_action by root")
    assert old is State.OSU
    assert [r.getMessage() for r in caplog.records] == ["web OSU -> ISP (perform_action by root)"]
    assert lcd.resource("web").state is State.ISP
    assert lcd.resource("web").reason == "perform_action by root"


def test_new_resources_are_out_of_service_with_lifekeeper_defaults(lcd: Lcd) -> None:
    sample(lcd)
    web = lcd.resource("web")
    assert (web.state, web.init, web.switchback, web.check_interval, web.local_recover) == (
        State.OSU,
        Init.AUTORES_ISP,
        Switchback.INTELLIGENT,
        120,
        True,
    )
    assert web.info == {"port": 8080}
    assert lcd.tag_of("web-1") == "web"


def test_equivalency_priorities_are_unique_and_default_sensibly(lcd: Lcd) -> None:
    sample(lcd)
    assert [(e.node, e.priority) for e in lcd.equivalencies(tag="web")] == [("node1", 1), ("node2", 2)]
    lcd.create_equivalency("web", "node3")
    assert [e.priority for e in lcd.equivalencies(tag="web")] == [1, 2, 3]
    with pytest.raises(AlreadyExists):
        lcd.create_equivalency("web", "node3")
    lcd.remove_equivalency("web", "node3")
    with pytest.raises(AlreadyExists, match="priority 2"):
        lcd.create_equivalency("web", "node3", other_priority=2)
    with pytest.raises(OutOfRange):
        lcd.create_equivalency("web", "node3", other_priority=1025)
    with pytest.raises(NotFound):
        lcd.create_equivalency("web", "node9")
    lcd.create_equivalency("web", "node3", other_priority=1024, other_tag="web-on-3")
    assert lcd.equivalencies(tag="web", node="node3")[0].remote_tag == "web-on-3"
    lcd.remove_equivalency("web", "node2")
    lcd.remove_equivalency("web", "node3")
    assert lcd.equivalencies(tag="web") == [], "this node's own entry goes with the last other"


def test_deletes_that_would_leave_something_dangling_are_refused(lcd: Lcd) -> None:
    sample(lcd)
    with pytest.raises(DeleteRefused, match="web"):
        lcd.remove_node("node2")
    with pytest.raises(DeleteRefused):
        lcd.remove_node("node1")
    with pytest.raises(DeleteRefused, match="typ_remove"):
        lcd.remove_app("gen")


def test_removing_a_type_takes_its_instances_and_their_dependents(lcd: Lcd) -> None:
    sample(lcd)
    removed = lcd.remove_type("comm", "ip")
    assert removed == ["web", "web-ip"]
    assert lcd.resources() == []
    assert lcd.edges() == []
    assert lcd.equivalencies() == []
    assert [t.type for t in lcd.types()] == ["app"]


@given(st.text(max_size=300))
def test_tag_rules_are_lifekeepers(tag: str) -> None:
    valid = 0 < len(tag) <= 256 and tag[0] not in "./" and not any(c in "+;:!@#$*= " for c in tag) and tag.isprintable()
    if valid:
        assert check_tag(tag) == tag
    else:
        with pytest.raises(IllegalArgument):
            check_tag(tag)


@pytest.mark.parametrize("tag", ["web-ip", "a_b.c/d", "データ", "x" * 256, "ip-198.18.0.10"])
def test_good_tags(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".hidden", "/abs", "a b", "a:b", "a=b", "x" * 257, "a\nb"])
def test_bad_tags(tag: str) -> None:
    with pytest.raises(IllegalArgument):
        check_tag(tag)


# ---------------------------------------------------------------------- extend's changes, all or none


def hierarchy_specs() -> list[dict[str, object]]:
    """web -> web-ip as another node sends them (init and switchback by name)."""
    return [
        {"tag": "web-ip", "id": "198.18.0.10", "app": "comm", "type": "ip"},
        {"tag": "web", "id": "web-1", "app": "gen", "type": "app", "info": {"port": 80}, "init": "INIT_OSU",
         "switchback": "AUTOMATIC", "check_interval": 30, "local_recover": False},
    ]  # fmt: skip


def test_create_resources_makes_a_hierarchy_in_one_change(lcd: Lcd) -> None:
    before = lcd.last_seq()
    made = lcd.create_resources(hierarchy_specs(), [["web", "web-ip"]])
    assert [r.tag for r in made] == ["web-ip", "web"]
    assert lcd.last_seq() == before + 1
    web = lcd.resource("web")
    assert (web.state, web.info, web.init, web.switchback, web.check_interval, web.local_recover) == (
        State.OSU, {"port": 80}, Init.INIT_OSU, Switchback.AUTOMATIC, 30, False,
    )  # fmt: skip
    assert lcd.edges() == [("web", "web-ip")]
    assert lcd.changes(before)[0].op == "create_resources"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda specs, deps: specs[1].update(tag="web-ip"), AlreadyExists),
        (lambda specs, deps: specs[1].update(id="198.18.0.10"), AlreadyExists),
        (lambda specs, deps: specs[1].update(init="SOMETIMES"), IllegalArgument),
        (lambda specs, deps: specs[1].update(check_interval=86401), OutOfRange),
        (lambda specs, deps: specs[1].update(colour="red"), IllegalArgument),
        (lambda specs, deps: specs[1].update(tag="bad tag"), IllegalArgument),
        (lambda specs, deps: deps.append(["web", "nosuch"]), NotFound),
        (lambda specs, deps: deps.append(["web-ip", "web"]), IllegalArgument),
        (lambda specs, deps: deps.append(["web"]), IllegalArgument),
    ],
    ids=["tag twice", "id twice", "bad init", "interval", "unknown field", "bad tag", "unknown child", "cycle", "1"],
)
def test_create_resources_is_all_or_none(lcd: Lcd, root: Path, change, error) -> None:
    lcd.create_node("node2")
    before = dump(root), lcd.last_seq()
    specs, deps = hierarchy_specs(), [["web", "web-ip"]]
    change(specs, deps)
    with pytest.raises(error):
        lcd.create_resources(specs, deps)
    assert (dump(root), lcd.last_seq()) == before


def test_create_equivalencies_gives_the_hierarchy_one_priority_there(lcd: Lcd) -> None:
    sample(lcd)  # web and web-ip: node1 1, node2 2
    lcd.create_resource("data", "data-1", "gen", "app")
    lcd.create_dependency("web", "data")
    assert lcd.create_equivalencies(["data", "web", "web-ip"], "node3") == 3, "the lowest none of them uses"
    rows = {(e.tag, e.node): e.priority for e in lcd.equivalencies()}
    assert rows == {
        ("data", "node1"): 1, ("data", "node3"): 3,
        ("web", "node1"): 1, ("web", "node2"): 2, ("web", "node3"): 3,
        ("web-ip", "node1"): 1, ("web-ip", "node2"): 2, ("web-ip", "node3"): 3,
    }  # fmt: skip
    lcd.remove_equivalencies(["data", "web"], "node3")
    pairs = {(e.tag, e.node) for e in lcd.equivalencies()}
    assert ("web", "node3") not in pairs and ("web-ip", "node3") in pairs
    assert not any(e.tag == "data" for e in lcd.equivalencies()), "the last pair goes with its node1 entry"


@pytest.mark.parametrize(
    ("extension", "error"),
    [
        ((["web", "web-ip"], "node2", None), AlreadyExists),  # extended there already
        ((["web", "data"], "node3", 2), AlreadyExists),  # 2 is node2's on web
        ((["data"], "node3", 1), AlreadyExists),  # 1 goes to node1, as eqv_create does
        ((["web", "data"], "node3", 1025), OutOfRange),
        ((["web", "nosuch"], "node3", None), NotFound),
        ((["web"], "node1", None), IllegalArgument),
        ((["web"], "nosuch", None), NotFound),
    ],
)
def test_create_equivalencies_is_all_or_none(lcd: Lcd, root: Path, extension, error) -> None:
    sample(lcd)
    lcd.create_resource("data", "data-1", "gen", "app")
    before = dump(root), lcd.last_seq()
    tags, other, priority = extension
    with pytest.raises(error):
        lcd.create_equivalencies(tags, other, other_priority=priority)
    assert (dump(root), lcd.last_seq()) == before


def test_extend_s_changes_replay_to_the_same_lcd(lcd: Lcd, root: Path, tmp_path: Path) -> None:
    lcd.create_node("node2")
    lcd.create_resources(hierarchy_specs(), [["web", "web-ip"]])
    lcd.create_equivalencies(["web-ip", "web"], "node2", other_priority=5)
    lcd.remove_equivalencies(["web"], "node2")
    copy_root = tmp_path / "copy"
    with Lcd.open(copy_root, node="node1") as copy:
        for change in lcd.changes(1):
            copy.replay(change.op, change.args)
    assert dump(copy_root) == dump(root)


def test_an_equivalency_to_a_third_node_teaches_it_the_other_entries_where_replayed(tmp_path: Path) -> None:
    """eqv_create -S node3 on node1, replicated: node3 gets node2's entry too, and node2 gets node3's."""
    lcds = {}
    for name in ("node1", "node2", "node3"):
        lcd = Lcd.open(tmp_path / name, node=name)
        for other in ("node1", "node2", "node3"):
            if other != name:
                lcd.create_node(other)
        lcd.create_resource("web", "web-1", "gen", "app", ensure_type=True)
        lcds[name] = lcd
    first = lcds["node1"].create_equivalency("web", "node2", other_priority=5)
    assert first.priority == 5
    lcds["node2"].replay("create_equivalency", lcds["node1"].changes()[-1].args)
    lcds["node1"].create_equivalency("web", "node3")
    change = lcds["node1"].changes()[-1]
    assert change.args["others"] == {"node2": ["web", 5]}
    for name in ("node2", "node3"):
        lcds[name].replay(change.op, change.args)
    rows = {name: sorted((e.node, e.priority) for e in lcd.equivalencies(tag="web")) for name, lcd in lcds.items()}
    assert rows["node1"] == rows["node2"] == rows["node3"] == [("node1", 1), ("node2", 5), ("node3", 2)]
    for lcd in lcds.values():
        lcd.close()


# ---------------------------------------------------------------------- checks and writes in one transaction


def test_a_constraint_a_check_missed_gives_that_checks_error_and_code(
    cli: Cli, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a check to miss (or lose a race), SQLite's constraint answers as the check would: exit 4, 7, 8."""
    assert cli("ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-1").code == 0
    before = dump(root)
    exists = Lcd._exists
    monkeypatch.setattr(Lcd, "_exists", lambda self, sql, params: "WHERE tag" not in sql and exists(self, sql, params))
    result = cli("ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-2")
    assert result.code == AlreadyExists.exit_code, result
    assert "a resource with that tag exists already" in result.err and "nothing was changed" in result.err
    monkeypatch.setattr(Lcd, "resource", lambda self, tag: None)
    result = cli("dep_create", "-p", "ghost", "-c", "web")
    assert result.code == NotFound.exit_code, result
    assert dump(root) == before


@dataclass
class Prepared:
    """What a replicator hands back (the Replication protocol): no outbox rows; it notes how the change ended."""

    outbox: list[tuple[str, str, int, str]] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)

    def finish(self, committed: bool) -> None:
        self.finished.append(committed)


def replicating(lcd: Lcd, meanwhile: Callable[[], None] = lambda: None) -> Prepared:
    """Give ``lcd`` a replicator whose other nodes say yes, after ``meanwhile`` ran (another writer, here)."""
    prepared = Prepared()

    def replicator(op: str, args: dict[str, Any]) -> Prepared:
        meanwhile()
        return prepared

    lcd.replicator = replicator
    return prepared


def another_writer(root: Path, change: Callable[[Lcd], object]) -> None:
    with Lcd.open(root) as other:
        change(other)


def test_a_replicated_change_is_checked_again_when_it_commits(lcd: Lcd, root: Path) -> None:
    """The other nodes prepare it without this LCD locked; a cycle closed meanwhile still refuses it."""
    sample(lcd)
    lcd.create_resource("db", "db-1", "gen", "app")
    prepared = replicating(lcd, lambda: another_writer(root, lambda other: other.create_dependency("db", "web")))
    seq = lcd.last_seq()
    with pytest.raises(IllegalArgument, match="cycle"):
        lcd.create_dependency("web", "db")
    assert prepared.finished == [False], "the other nodes are told to drop it"
    assert [c.op for c in lcd.changes(seq)] == ["create_dependency"]
    assert ("web", "db") not in lcd.edges()


def test_a_replicated_change_that_came_out_otherwise_is_refused_everywhere(lcd: Lcd, root: Path) -> None:
    """web's next free priority was 3 when node3 was prepared; another eqv_create took it meanwhile."""
    sample(lcd)
    lcd.create_node("node4")
    prepared = replicating(lcd, lambda: another_writer(root, lambda other: other.create_equivalency("web", "node4")))
    with pytest.raises(SystemCallFailed, match="no longer applies") as refused:
        lcd.create_equivalency("web", "node3")
    assert refused.value.exit_code == 1
    assert prepared.finished == [False]
    assert {e.node: e.priority for e in lcd.equivalencies(tag="web")} == {"node1": 1, "node2": 2, "node4": 3}


def test_a_replicated_change_commits_once_its_checks_pass_again(lcd: Lcd) -> None:
    sample(lcd)
    prepared = replicating(lcd)
    seq = lcd.last_seq()
    lcd.create_equivalency("web", "node3")
    assert prepared.finished == [True]
    assert [(c.op, c.args["other_priority"]) for c in lcd.changes(seq)] == [("create_equivalency", 3)]


def test_the_shutdown_strategy_is_this_node_s_own_and_never_replicated(lcd: Lcd) -> None:
    """LifeKeeper's per-server property: its change is not set_settings, which configsync sends everywhere."""
    from hakeeper.cluster.configsync import participants

    lcd.create_node("node2")
    lcd.set_settings({"shutdown_strategy": "Switch Over Resources"})
    last = lcd.changes()[-1]
    assert (last.op, lcd.shutdown_strategy) == ("set_node_settings", "Switch Over Resources")
    assert participants(lcd, last.op, last.args) == []
    lcd.set_settings({"guard_timeout": "6"})
    assert participants(lcd, "set_settings", lcd.changes()[-1].args) == ["node2"]
    with pytest.raises(IllegalArgument, match="shutdown_strategy is this node's own setting"):
        lcd.set_settings({"shutdown_strategy": "Do Not Switch Over Resources", "guard_timeout": "7"})
    assert (lcd.shutdown_strategy, lcd.settings()["guard_timeout"]) == ("Switch Over Resources", 6.0)
