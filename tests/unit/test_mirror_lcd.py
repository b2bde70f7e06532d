"""Mirror definitions in the LCD: the migration, the records, replay on the other nodes, and the rules.

The commands and the two-phase commit between nodes: tests/unit/test_mirror_cli.py.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from hakeeper.db import Lcd
from hakeeper.db.journal import ChangedMeanwhile
from hakeeper.db.mirrors import DEFAULT_CHUNK, parse_chunk, parse_limit
from hakeeper.db.schema import MIGRATIONS, SCHEMA_VERSION, statements
from hakeeper.errors import AlreadyExists, DeleteRefused, IllegalArgument, NotFound, OutOfRange

MiB = 1 << 20


def image(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def node_lcd(base: Path, me: str) -> Lcd:
    lcd = Lcd.open(base / me, node=me)
    for other in ("node1", "node2", "node3"):
        if other != me:
            lcd.create_node(other)
    return lcd


def test_an_lcd_of_schema_3_gets_the_mirror_tables_and_keeps_its_contents(tmp_path: Path) -> None:
    path = tmp_path / "lcd.sqlite"
    with closing(sqlite3.connect(path)) as db:
        for script in MIGRATIONS[:3]:
            for statement in statements(script):
                db.execute(statement)
        db.execute("INSERT INTO nodes (name, local) VALUES ('node1', 1), ('node2', 0)")
        db.execute("PRAGMA user_version = 3")
        db.commit()
    with Lcd(path) as lcd:
        assert lcd.local_node == "node1"
        assert lcd.mirrors() == []
        store = image(tmp_path / "vol.img", MiB)
        lcd.create_mirror("data", "node2", store=store)
        assert lcd.mirror("data").size == MiB
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_the_definition_and_its_change_log_record(tmp_path: Path) -> None:
    lcd = node_lcd(tmp_path, "node1")
    store = image(tmp_path / "vol.img", 8 * MiB)
    made = lcd.create_mirror("data", "node2", store=store, target_store="/dev/vg0/data", mode="async", limit=10**7)
    assert made == lcd.mirror("data") == lcd.mirrors()[0]
    assert (made.volume, made.size, made.source, made.store, made.nodes) == (
        "data",
        8 * MiB,
        "node1",
        store,
        ["node1", "node2"],
    )
    target = made.target("node2")
    assert target is not None
    assert (target.store, target.mode.value, target.bitmap_chunk, target.limit) == (
        "/dev/vg0/data",
        "async",
        DEFAULT_CHUNK,
        10**7,
    )
    change = lcd.changes()[-1]
    assert change.op == "create_mirror"
    assert change.args == {
        "volume": "data",
        "target": "node2",
        "mode": "async",
        "bitmap_chunk": DEFAULT_CHUNK,
        "limit": 10**7,
        "store": store,
        "target_store": "/dev/vg0/data",
        "source": "node1",
        "size": 8 * MiB,
        "others": {},
    }
    lcd.close()


def test_replayed_where_the_volume_is_new_it_is_learned_whole_and_where_it_is_known_it_must_agree(
    tmp_path: Path,
) -> None:
    a, b, c = (node_lcd(tmp_path, n) for n in ("node1", "node2", "node3"))
    store = image(tmp_path / "vol.img", 4 * MiB)
    a.create_mirror("data", "node2", store=store)
    b.replay("create_mirror", a.changes()[-1].args)
    a.create_mirror("data", "node3")
    added = a.changes()[-1].args
    assert added["others"] == {"node2": [store, "sync", DEFAULT_CHUNK, 0]}
    # A node whose targets differ from those the change was made against refuses it.
    with pytest.raises(IllegalArgument, match="'data''s targets on node2 differ from those on node1"):
        b.try_change("create_mirror", dict(added, others={}))
    with pytest.raises(IllegalArgument, match="mirrored from node1, not node3"):
        b.try_change("create_mirror", dict(added, source="node3", target="node1"))
    for lcd in (b, c):
        lcd.try_change("create_mirror", added)  # the prepare: node3 checks its store (the same path here)
        lcd.replay("create_mirror", added)
    assert a.mirror("data") == b.mirror("data") == c.mirror("data")
    for lcd in (a, b, c):
        lcd.close()


def test_a_node_checks_its_own_store_when_it_prepares_and_not_again_when_it_commits(tmp_path: Path) -> None:
    a, b = node_lcd(tmp_path, "node1"), node_lcd(tmp_path, "node2")
    store = image(tmp_path / "vol.img", 4 * MiB)
    small = image(tmp_path / "small.img", MiB)
    a.create_mirror("data", "node2", store=store, target_store=small)  # node1 alone: nobody prepared it
    change = a.changes()[-1].args
    with pytest.raises(IllegalArgument, match=f"{small} on node2 has {MiB} bytes, less than 'data'"):
        b.try_change("create_mirror", change)
    assert b.mirrors() == []
    # Committed by the coordinator after node2 prepared it: recorded, whatever the store is now.
    assert b.apply_replicated("tx-1", "create_mirror", change, "root via node1#5")
    assert b.mirror("data").target("node2") is not None
    a.close()
    b.close()


def test_the_rules(tmp_path: Path) -> None:
    lcd = node_lcd(tmp_path, "node1")
    store = image(tmp_path / "vol.img", 4 * MiB)
    with pytest.raises(IllegalArgument, match="cannot be mirrored to itself"):
        lcd.create_mirror("data", "node1", store=store)
    with pytest.raises(NotFound, match="no node named 'node9'"):
        lcd.create_mirror("data", "node9", store=store)
    with pytest.raises(NotFound, match="no backing store"):
        lcd.create_mirror("data", "node2", store=str(tmp_path / "none.img"))
    with pytest.raises(IllegalArgument, match="multiple of 512"):
        lcd.create_mirror("data", "node2", store=image(tmp_path / "odd.img", 1000))
    with pytest.raises(IllegalArgument, match="not a power of two"):
        lcd.create_mirror("data", "node2", store=store, bitmap_chunk=3 * 4096)
    lcd.create_mirror("data", "node2", store=store)
    with pytest.raises(AlreadyExists, match="mirrored to node2 already"):
        lcd.create_mirror("data", "node2")
    with pytest.raises(DeleteRefused, match="mirrored volume data"):
        lcd.remove_node("node2")
    assert [t.node for t in lcd.mirror("data").targets] == ["node2"]
    with pytest.raises(NotFound):
        lcd.delete_mirror("data", "node3")
    assert lcd.delete_mirror("data") == ["node2"]
    assert lcd.mirrors() == []
    lcd.remove_node("node2")
    lcd.close()


def test_a_delete_replayed_against_other_nodes_is_refused(tmp_path: Path) -> None:
    lcd = node_lcd(tmp_path, "node1")
    lcd.create_mirror("data", "node2", store=image(tmp_path / "vol.img", MiB))
    with pytest.raises(IllegalArgument, match="differ"):
        lcd.try_change("delete_mirror", {"volume": "data", "target": None, "nodes": ["node1", "node3"]})
    assert lcd.mirror("data").nodes == ["node1", "node2"]
    lcd.close()


def test_a_change_that_no_longer_applies_as_prepared_is_refused(tmp_path: Path) -> None:
    """The planning pass learned the change; another writer added a target meanwhile: refused everywhere."""
    lcd = node_lcd(tmp_path, "node1")
    store = image(tmp_path / "vol.img", MiB)
    lcd.create_mirror("data", "node2", store=store)
    other = Lcd.open(tmp_path / "node1")

    class Pending:
        @property
        def outbox(self) -> list[tuple[str, str, int, str]]:
            return []

        def finish(self, committed: bool) -> None:
            pass

    def replicator(op: str, args: dict[str, object]) -> Pending:
        other.create_mirror("data", "node3")  # between the planning pass and the change
        return Pending()

    lcd.replicator = replicator
    with pytest.raises(ChangedMeanwhile):
        lcd.delete_mirror("data", "node2")
    lcd.replicator = None
    assert [t.node for t in lcd.mirror("data").targets] == ["node2", "node3"]
    other.close()
    lcd.close()


@pytest.mark.parametrize(
    ("text", "value"), [("4K", 4096), ("64K", 65536), ("256k", 262144), ("1M", 1 << 20), ("1G", 1 << 30),
                        ("65536", 65536), ("64KiB", 65536)]
)  # fmt: skip
def test_chunk_sizes(text: str, value: int) -> None:
    assert parse_chunk(text) == value


@pytest.mark.parametrize(("text", "error"), [("2K", OutOfRange), ("2G", OutOfRange), ("0", OutOfRange),
                                             ("96K", IllegalArgument), ("", IllegalArgument), ("1.5M", IllegalArgument),
                                             ("-64K", IllegalArgument)])  # fmt: skip
def test_bad_chunk_sizes(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_chunk(text)


def test_limits() -> None:
    assert parse_limit("0") == 0
    assert parse_limit("12.5") == 12_500_000
    assert parse_limit("100MB/s") == 100_000_000
    for bad, error in (("-1", OutOfRange), ("inf", OutOfRange), ("1e9", OutOfRange), ("x", IllegalArgument)):
        with pytest.raises(error):
            parse_limit(bad)
