"""``hakeeper mirror`` between nodes that live in this process: real LCDs, the real two-phase commit.

Each node has its own state directory and LCD; a request to another node goes
through JSON to that node's :class:`ConfigSync`, as the message port would (a
refusal there comes back as a RemoteError with its exit code). The commands run
as hakeeperd runs them (:attr:`Command.in_daemon`), and as a console script does
without hakeeperd. Bad input (issue 14, item 9) is refused with one line, its
exit code, and no LCD changed on any node.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from hakeeper.cli.base import Context, failure, parse, run
from hakeeper.cluster.configsync import ConfigSync, thread_replicator
from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd
from hakeeper.db.aio import Inline
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument
from hakeeper.kits.registry import register_kits
from hakeeper.replication.control import (
    MirrorControl,
    MirrorControls,
    MirrorNotRunning,
    NoReplication,
    TargetStatus,
    VolumeStatus,
)
from hakeeper.replication.handoff import Handoff
from hakeeper.replication.states import MirrorState
from hakeeper.replication.switchover import SwitchoverRefused
from hakeeper.services import DaemonServices
from tests.conftest import Result
from tests.unit.lcd_racers import Racers
from tests.unit.test_lcd_races import assert_serial, assert_whole, copy_lcd, lcd_with, one_after_the_other

T = TypeVar("T")
NAMES = ("node1", "node2", "node3")
MiB = 1 << 20
OK, SYSCALL, SYNTAX, EXISTS, ILLEGAL, RANGE, MISSING, COMM = 0, 1, 2, 4, 5, 6, 7, 9


class Node:
    """One node's hakeeperd, as far as ``hakeeper mirror`` uses it."""

    def __init__(self, base: Path, name: str, cluster: dict[str, Node]) -> None:
        self.name = name
        self.root = base / name
        self.cluster = cluster
        self.lcd = Lcd.open(self.root, node=name, actor="hakeeperd")
        register_kits(self.lcd, self.root)  # as the first command does: a console run then changes nothing
        for other in NAMES:
            if other != name:
                self.lcd.create_node(other)
        self.db = Inline(self.lcd)
        self.sync = ConfigSync(self.lcd, self._send, self.state_of)
        self.dead: set[str] = set()
        self.asked: list[tuple[str, str]] = []
        self.mirror_controls: MirrorControls = NoReplication()
        self.store = self.root / "vol.img"  # this node's backing store (an image file)

    def state_of(self, node: str) -> PathState:
        return PathState.DEAD if node in self.dead else PathState.ALIVE

    def check_reachable(self, node: str) -> None:
        if node in self.dead:
            raise CommunicationFailed(f"{node} cannot be reached (all paths DEAD)")

    async def request(self, node: str, op: str, args: dict[str, Any], *, timeout: float) -> Any:
        if node in self.dead:
            raise CommunicationFailed(f"cannot reach node {node!r}")
        self.asked.append((node, op))
        other = self.cluster[node]
        owner: object = Handoff(other.db, node, other.mirror_controls) if op.startswith("mirror_") else other.sync
        handler = getattr(owner, f"on_{op}")
        try:
            result = await handler(Peer(self.name, "198.18.0.1"), json.loads(json.dumps(args)))
        except HakeeperError as exc:
            raise RemoteError(f"node {node}: {exc}", exc.exit_code) from None
        return json.loads(json.dumps(result))

    async def _send(self, node: str, op: str, args: dict[str, Any]) -> Any:
        return await self.request(node, op, args, timeout=30)

    async def change_replicated(self, actor: str, change: Callable[[Lcd], T]) -> T:
        loop = asyncio.get_running_loop()

        def work() -> T:
            with Lcd.open(self.root, actor=actor) as lcd:
                lcd.replicator = thread_replicator(self.sync, loop, lcd, actor)
                return change(lcd)

        return await asyncio.to_thread(work)

    def mirror_cmd(self, *argv: str) -> Result:
        """``hakeeper mirror ARGV`` as hakeeperd runs it here (its in-daemon runner)."""
        out, err = io.StringIO(), io.StringIO()

        async def go() -> int:
            try:
                cmd, args = parse("mirror", list(argv), "mirror")
                ctx = Context(self.root, out, err, actor="root", lcd=self.lcd, services=cast(DaemonServices, self))
                assert cmd.in_daemon is not None
                return await cmd.in_daemon(ctx, args)
            except Exception as exc:  # noqa: BLE001 - as run_in_daemon: every error is one line and a code
                return failure("mirror", err, exc)

        code = asyncio.run(go())
        return Result(code, out.getvalue(), err.getvalue())

    def alone(self, *argv: str) -> Result:
        """``hakeeper mirror ARGV`` without hakeeperd (as a console script runs it)."""
        out, err = io.StringIO(), io.StringIO()
        code = run("mirror", list(argv), root=str(self.root), out=out, err=err, forward=False)
        return Result(code, out.getvalue(), err.getvalue())

    def dump(self) -> dict[str, list[tuple[object, ...]]]:
        """Every table of the LCD, the change log included."""
        with closing(sqlite3.connect(self.root / "lcd.sqlite")) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}

    def definition(self) -> list[tuple[object, ...]]:
        """The mirror rows of this LCD: what must be the same on every node of a mirror."""
        d = self.dump()
        return [*d["mirrors"], *d["mirror_stores"], *d["mirror_targets"]]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, Node]]:
    cluster: dict[str, Node] = {}
    for name in NAMES:
        cluster[name] = Node(tmp_path, name, cluster)
        cluster[name].store.write_bytes(b"")
        with open(cluster[name].store, "r+b") as image:
            image.truncate(4 * MiB)
    yield cluster
    for node in cluster.values():
        node.lcd.close()


def dumps(nodes: dict[str, Node]) -> dict[str, dict[str, list[tuple[object, ...]]]]:
    return {name: node.dump() for name, node in nodes.items()}


def create(node: Node, target: str = "node2", *extra: str) -> Result:
    store = str(node.store)
    return node.mirror_cmd("create", "data", "--store", store, "--target", target, "--mode", "sync", *extra)


def assert_refused(result: Result, code: int, before: dict[str, Any], nodes: dict[str, Node], *words: str) -> None:
    assert result.code == code, result
    assert result.out == ""
    assert result.err.startswith("mirror: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in result.err, result.err
    assert dumps(nodes) == before, "an LCD changed"


# ---------------------------------------------------------------------- create, add a target, delete


def test_create_records_the_definition_on_the_source_and_the_target_only(nodes: dict[str, Node]) -> None:
    node1, node2, node3 = (nodes[n] for n in NAMES)
    result = create(node1, "node2", "--bitmap-chunk", "256K", "--limit", "50")
    assert result == Result(OK, f"data mirrored from node1 to node2 (sync, {4 * MiB} bytes, bitmap chunk 256K, "
                                "50 MB/s)\n", ""), result  # fmt: skip
    mirror = node1.lcd.mirror("data")
    assert (mirror.source, mirror.size, mirror.store) == ("node1", 4 * MiB, str(node1.store))
    target = mirror.target("node2")
    assert target is not None
    assert (target.store, target.mode.value, target.bitmap_chunk, target.limit) == (
        str(node1.store),
        "sync",
        256 * 1024,
        50_000_000,
    )
    assert node2.lcd.mirror("data") == mirror, "node2 has the same definition"
    assert node1.definition() == node2.definition()
    assert node3.definition() == [], "node3 is no node of the mirror"
    assert ("node3", "prepare") not in node1.asked
    assert [c.op for c in node2.lcd.changes()][-1] == "create_mirror"
    assert "via node1#" in node2.lcd.changes()[-1].actor


def test_a_second_create_to_another_target_adds_it_and_the_new_node_learns_the_whole_volume(
    nodes: dict[str, Node],
) -> None:
    node1, node2, node3 = (nodes[n] for n in NAMES)
    assert create(node1, "node2").code == OK
    added = node1.mirror_cmd("create", "data", "--target", "node3", "--target-store", str(node3.store), "--mode",
                             "async")  # fmt: skip
    assert added.code == OK, added
    assert node1.definition() == node2.definition() == node3.definition()
    mirror = node3.lcd.mirror("data")
    assert [(t.node, t.mode.value, t.store) for t in mirror.targets] == [
        ("node2", "sync", str(node1.store)),
        ("node3", "async", str(node3.store)),
    ]
    assert mirror.source == "node1" and mirror.nodes == ["node1", "node2", "node3"]


def test_delete_of_one_target_and_then_of_the_volume_on_every_node(nodes: dict[str, Node]) -> None:
    node1, node2, node3 = (nodes[n] for n in NAMES)
    assert create(node1, "node2").code == OK
    assert node1.mirror_cmd("create", "data", "--target", "node3", "--mode", "sync").code == OK
    result = node1.mirror_cmd("delete", "data", "--target", "node3")
    assert result == Result(OK, "data: mirror to node3 deleted\n", ""), result
    assert node3.definition() == [], "node3 left the mirror: it forgets the volume"
    assert node1.definition() == node2.definition() != []
    assert [t.node for t in node2.lcd.mirror("data").targets] == ["node2"]
    result = node2.mirror_cmd("delete", "data")  # from a target: every node of the mirror
    assert result == Result(OK, "data: mirror to node2 deleted; data deleted\n", ""), result
    assert node1.definition() == node2.definition() == []


# ---------------------------------------------------------------------- bad input: one line, nothing changed anywhere


def test_a_second_mirror_of_the_volume_to_the_same_target_is_refused(nodes: dict[str, Node]) -> None:
    assert create(nodes["node1"], "node2").code == OK
    before = dumps(nodes)
    assert_refused(create(nodes["node1"], "node2"), EXISTS, before, nodes, "mirrored to node2 already")
    assert_refused(nodes["node1"].alone("create", "data", "--target", "node2", "--mode", "async"), EXISTS, before,
                   nodes, "already")  # fmt: skip


def test_a_target_store_smaller_than_the_volume_is_refused_by_the_target(nodes: dict[str, Node]) -> None:
    small = nodes["node2"].root / "small.img"
    small.write_bytes(b"\0" * MiB)
    before = dumps(nodes)
    result = create(nodes["node1"], "node2", "--target-store", str(small))
    assert_refused(result, ILLEGAL, before, nodes, "refused by node node2", str(small), f"{MiB} bytes", "less than")
    assert ("node2", "abort") in nodes["node1"].asked or ("node2", "commit") not in nodes["node1"].asked


def test_a_target_store_that_is_not_there_is_refused_by_the_target(nodes: dict[str, Node]) -> None:
    before = dumps(nodes)
    result = create(nodes["node1"], "node2", "--target-store", "/proc/nonexistent/vol.img")
    assert_refused(result, MISSING, before, nodes, "node2", "no backing store at /proc/nonexistent/vol.img")


def test_an_unreachable_target_refuses_the_create_before_anything_is_sent(nodes: dict[str, Node]) -> None:
    nodes["node1"].dead.add("node2")
    before = dumps(nodes)
    assert_refused(create(nodes["node1"], "node2"), COMM, before, nodes, "node2 cannot be reached")
    assert nodes["node1"].asked == []


def test_a_target_that_stops_answering_refuses_the_create_all_or_none(nodes: dict[str, Node]) -> None:
    """Not yet DEAD to the heartbeats, but its prepare fails: refused (9), no LCD changed."""
    node1 = nodes["node1"]
    assert create(node1, "node2").code == OK
    before = dumps(nodes)

    async def silent(node: str, op: str, args: dict[str, Any], *, timeout: float) -> Any:
        raise CommunicationFailed(f"cannot reach node {node!r}: timed out")

    node1.request = silent  # type: ignore[method-assign]
    result = node1.mirror_cmd("create", "data", "--target", "node3", "--mode", "sync")
    assert_refused(result, COMM, before, nodes, "node2")


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (("--store", "/proc/nonexistent/vol.img", "--target", "node2", "--mode", "sync"), MISSING, "no backing store"),
        (("--store", "/proc", "--target", "node2", "--mode", "sync"), ILLEGAL, "neither an image file"),
        (("--store", "/dev/null", "--target", "node2", "--mode", "sync"), ILLEGAL, "neither an image file"),
        (("--store", "vol.img", "--target", "node2", "--mode", "sync"), ILLEGAL, "not an absolute path"),
        (("--target", "node2", "--mode", "sync"), ILLEGAL, "needs its backing store"),
        (("--store", "STORE", "--target", "node9", "--mode", "sync"), MISSING, "no node named 'node9'"),
        (("--store", "STORE", "--target", "node1", "--mode", "sync"), ILLEGAL, "cannot be mirrored to itself"),
        (("--store", "STORE", "--target", "node2", "--mode", "fast"), ILLEGAL, "mode 'fast'"),
        (("--store", "STORE", "--target", "node2", "--mode", "SYNC"), ILLEGAL, "mode 'SYNC'"),
        (("--store", "STORE", "--target", "node2", "--mode", "sync", "--bitmap-chunk", "96K"), ILLEGAL, "power of two"),
        (("--store", "STORE", "--target", "node2", "--mode", "sync", "--bitmap-chunk", "2K"), RANGE, "4K..1G"),
        (("--store", "STORE", "--target", "node2", "--mode", "sync", "--bitmap-chunk", "big"), ILLEGAL, "not a size"),
        (("--store", "STORE", "--target", "node2", "--mode", "sync", "--limit", "-5"), RANGE, "outside 0.."),
        (("--store", "STORE", "--target", "node2", "--mode", "sync", "--limit", "nan"), RANGE, "outside 0.."),
        (("--store", "STORE", "--target", "node2", "--mode", "sync", "--limit", "fast"), ILLEGAL, "not a number"),
        (("--store", "STORE", "--target", "node2"), SYNTAX, "needs --mode"),
        (("--store", "STORE", "--mode", "sync"), SYNTAX, "needs --target"),
        (("--store", "STORE", "--target", "node2", "--mode", "sync", "--keep", "node2"), SYNTAX, "--keep"),
    ],
)
def test_bad_input_to_create_is_refused_alike_with_and_without_hakeeperd(
    nodes: dict[str, Node], argv: tuple[str, ...], code: int, words: str
) -> None:
    node1 = nodes["node1"]
    typed = ["create", "data", *(str(node1.store) if w == "STORE" else w for w in argv)]
    before = dumps(nodes)
    through = node1.mirror_cmd(*typed)
    assert_refused(through, code, before, nodes, words)
    assert node1.alone(*typed) == through, "the same line and code without hakeeperd"
    assert node1.asked == [], "nothing was sent to another node"


def test_a_bad_volume_name_is_refused_as_a_bad_tag(nodes: dict[str, Node]) -> None:
    before = dumps(nodes)
    for name in ("bad vol", "a:b", "/abs", ""):
        result = nodes["node1"].mirror_cmd("create", name, "--store", str(nodes["node1"].store), "--target", "node2",
                                           "--mode", "sync")  # fmt: skip
        assert_refused(result, ILLEGAL, before, nodes, "volume")


def test_without_hakeeperd_create_checks_then_says_it_must_run(nodes: dict[str, Node]) -> None:
    before = dumps(nodes)
    result = nodes["node1"].alone("create", "data", "--store", str(nodes["node1"].store), "--target", "node2",
                                  "--mode", "sync")  # fmt: skip
    assert_refused(result, COMM, before, nodes, "node2 is reached through hakeeperd", "lkstart")


def test_add_target_runs_on_the_source_only(nodes: dict[str, Node]) -> None:
    assert create(nodes["node1"], "node2").code == OK
    before = dumps(nodes)
    result = nodes["node2"].mirror_cmd("create", "data", "--target", "node3", "--mode", "sync")
    assert_refused(result, ILLEGAL, before, nodes, "run it on the source")
    other = nodes["node1"].root / "other.img"
    other.write_bytes(b"\0" * 4 * MiB)
    result = nodes["node1"].mirror_cmd("create", "data", "--store", str(other), "--target", "node3", "--mode", "sync")
    assert_refused(result, ILLEGAL, before, nodes, "has the backing store")


def test_delete_of_what_is_not_there(nodes: dict[str, Node]) -> None:
    before = dumps(nodes)
    assert_refused(nodes["node1"].mirror_cmd("delete", "data"), MISSING, before, nodes, "no mirrored volume 'data'")
    assert create(nodes["node1"], "node2").code == OK
    before = dumps(nodes)
    result = nodes["node1"].mirror_cmd("delete", "data", "--target", "node3")
    assert_refused(result, MISSING, before, nodes, "not mirrored to 'node3'")
    nodes["node1"].dead.add("node2")
    assert_refused(nodes["node1"].mirror_cmd("delete", "data"), COMM, before, nodes, "node2 cannot be reached")


# ---------------------------------------------------------------------- status and the verbs


class FakeProcess:
    """A replication process, as the verbs see it: its answers and what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def status(self) -> VolumeStatus:
        return VolumeStatus("data", "source", (TargetStatus("node2", MirrorState.RESYNCING, 42.5, 1 << 20),))

    def pause(self, target: str | None) -> str:
        self.calls.append(("pause", target))
        return "data: mirror to node2 Paused"

    def resume(self, target: str | None) -> str:
        self.calls.append(("continue", target))
        return "continued"

    def break_mirror(self, target: str | None) -> str:
        self.calls.append(("break", target))
        return "broken"

    def resync(self, target: str | None, *, checksum: bool) -> str:
        self.calls.append(("resync", (target, checksum)))
        return "resync started"

    def verify(self, target: str | None) -> str:
        self.calls.append(("verify", target))
        return "verify started"

    def handover(self, to: str, *, timeout: float) -> dict[str, Any]:
        self.calls.append(("handover", to))
        targets = [{"node": to, "state": "Mirroring", "dirty_bytes": 0}]
        return {"said": f"data: handed over to {to}", "targets": targets}

    def thaw(self) -> str:
        self.calls.append(("thaw", None))
        return "data: writes again"

    def forget_handover(self) -> str:
        self.calls.append(("forget_handover", None))
        return "data: stays a target"

    def resolve(self, keep: str) -> str:
        self.calls.append(("resolve", keep))
        return f"kept {keep}"


class Running:
    def __init__(self, process: MirrorControl) -> None:
        self.process = process

    def control(self, volume: str) -> MirrorControl | None:
        return self.process if volume == "data" else None


def test_status_shows_the_definition_and_an_unknown_live_state_when_no_process_runs(nodes: dict[str, Node]) -> None:
    assert create(nodes["node1"], "node2", "--limit", "2.5").code == OK
    for result in (nodes["node1"].mirror_cmd("status"), nodes["node1"].alone("status", "data")):
        assert result.code == OK and result.err == "", result
        header, row = result.out.splitlines()
        assert header.split() == ["VOLUME", "SIZE", "SOURCE", "TARGET", "MODE", "CHUNK", "LIMIT", "STATE"]
        assert row.split() == ["data", "4M", "node1", "node2", "sync", "64K", "2.5MB/s", "unknown"]
        assert "None" not in result.out and "ok" not in result.out.lower()
    records = json.loads(nodes["node2"].mirror_cmd("status", "--json").out)
    assert records[0]["live"] is False
    assert records[0]["targets"][0]["state"] == "unknown" and records[0]["targets"][0]["state_code"] is None
    assert nodes["node1"].mirror_cmd("status", "nosuch").code == MISSING


def test_status_shows_the_live_state_with_datakeepers_number(nodes: dict[str, Node]) -> None:
    assert create(nodes["node1"], "node2").code == OK
    nodes["node1"].mirror_controls = Running(FakeProcess())
    result = nodes["node1"].mirror_cmd("status", "data")
    assert result.code == OK, result
    assert result.out.splitlines()[1].split()[-3:] == ["Resynchronizing", "(2)", "42.5%"]
    records = json.loads(nodes["node1"].mirror_cmd("status", "--json").out)
    target = records[0]["targets"][0]
    assert (target["state"], target["state_code"], target["resync_percent"]) == ("Resynchronizing", 2, 42.5)


def test_a_process_that_does_not_answer_shows_unknown_not_an_error(nodes: dict[str, Node]) -> None:
    assert create(nodes["node1"], "node2").code == OK

    class Gone(FakeProcess):
        def status(self) -> VolumeStatus:
            raise MirrorNotRunning("the replication process of 'data' exited")

    nodes["node1"].mirror_controls = Running(Gone())
    result = nodes["node1"].mirror_cmd("status")
    assert result.code == OK
    assert result.out.splitlines()[1].split()[-1] == "unknown"
    assert (
        result.err == "mirror: data: the replication process did not answer (the replication process of 'data' "
        "exited): its state is shown unknown\n"
    )


@pytest.mark.parametrize("verb", ["pause", "continue", "break", "resync", "verify"])
def test_a_verb_without_the_replication_process_is_refused_and_changes_nothing(
    nodes: dict[str, Node], verb: str
) -> None:
    assert create(nodes["node1"], "node2").code == OK
    before = dumps(nodes)
    result = nodes["node1"].mirror_cmd(verb, "data")
    assert_refused(result, SYSCALL, before, nodes, "no replication process of 'data' runs on node1")
    result = nodes["node1"].alone(verb, "data")
    assert_refused(result, SYSCALL, before, nodes, "hakeeperd does not run")


def test_the_verbs_reach_the_replication_process(nodes: dict[str, Node]) -> None:
    assert create(nodes["node1"], "node2").code == OK
    process = FakeProcess()
    nodes["node1"].mirror_controls = Running(process)
    assert nodes["node1"].mirror_cmd("pause", "data", "--target", "node2") == Result(
        OK, "data: mirror to node2 Paused\n", ""
    )
    assert nodes["node1"].mirror_cmd("resync", "data", "--checksum").code == OK
    assert nodes["node1"].mirror_cmd("continue", "data").code == OK
    assert nodes["node1"].mirror_cmd("resolve", "data", "--keep", "node1").out == "kept node1\n"
    assert process.calls == [("pause", "node2"), ("resync", (None, True)), ("continue", None), ("resolve", "node1")]
    before = dumps(nodes)
    assert_refused(nodes["node1"].mirror_cmd("pause", "data", "--target", "node3"), MISSING, before, nodes, "node3")
    assert_refused(nodes["node1"].mirror_cmd("resolve", "data", "--keep", "node3"), MISSING, before, nodes, "node3")
    assert_refused(nodes["node1"].mirror_cmd("resolve", "data"), SYNTAX, before, nodes, "needs --keep")
    assert_refused(nodes["node1"].mirror_cmd("switchover", "data"), ILLEGAL, before, nodes, "not a target")
    assert_refused(nodes["node1"].mirror_cmd("pause"), SYNTAX, before, nodes, "needs a VOL")
    assert_refused(nodes["node1"].mirror_cmd("verify", "data", "--checksum"), SYNTAX, before, nodes, "--checksum")
    assert len(process.calls) == 4, "a refused verb never reached the process"


# ---------------------------------------------------------------------- two commands at once (test_lcd_races' way)

RACES = 30


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    pair = Racers(2)
    yield pair
    pair.close()


def mirror_create(store: str, target: str) -> list[str]:
    return ["mirror", "create", "data", "--store", store, "--target", target, "--mode", "sync"]


@pytest.mark.parametrize(
    "pair",
    [
        ("node2", "node2"),  # the same volume to the same target: one wins, the other exits 4
        ("node2", "node3"),  # a new volume to two targets: one creates it, the other adds its target
        ("node2", None),  # create and delete: deleted, or "no mirrored volume" (7)
    ],
    ids=["same target", "two targets", "create / delete"],
)
def test_two_mirror_commands_at_once_give_the_result_of_one_after_the_other(
    pair: tuple[str, str | None], racers: Racers, tmp_path: Path
) -> None:
    """As hakeeperd's worker threads run them, every peer agreeing: the check and the write are one transaction."""
    store = str(tmp_path / "vol.img")
    with open(store, "wb") as f:
        f.truncate(MiB)
    first, second = pair
    commands = (
        mirror_create(store, first),
        mirror_create(store, second) if second is not None else ["mirror", "delete", "data"],
    )
    template = lcd_with(tmp_path / "template", [])
    serial = one_after_the_other(template, commands, tmp_path)
    seen: Counter[tuple[int, ...]] = Counter()
    for round in range(1, RACES + 1):
        root = copy_lcd(template, tmp_path / "race")
        results = racers.race(str(root), commands)
        assert_whole(root, f"round {round}")
        assert_serial(root, commands, results, serial, f"round {round}")
        seen[tuple(r.code for r in results)] += 1
    assert set(seen) <= {o.codes for o in serial}, seen
    if first == second:
        assert set(seen) <= {(OK, EXISTS), (EXISTS, OK)}, seen


# ---------------------------------------------------------------------- switchover


class FakeTarget(FakeProcess):
    """node2's process: a target until the LCD says it is the source."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node

    def status(self) -> VolumeStatus:
        if ("data", 4 * MiB, self.node.name) in self.node.dump()["mirrors"]:  # its own connection (a thread)
            return VolumeStatus("data", "source", (), "/dev/loop9")
        return VolumeStatus("data", "target", ())


def switchable(nodes: dict[str, Node]) -> tuple[FakeProcess, FakeTarget]:
    assert create(nodes["node1"], "node2", "--bitmap-chunk", "256K", "--limit", "5").code == OK
    assert create(nodes["node1"], "node3").code == OK
    source, target = FakeProcess(), FakeTarget(nodes["node2"])
    nodes["node1"].mirror_controls = Running(source)
    nodes["node2"].mirror_controls = Running(target)
    return source, target


def test_switchover_hands_over_then_changes_the_source_on_every_node(
    nodes: dict[str, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hakeeper.cli.mirror.SERVE_WAIT", 10.0)
    source, target = switchable(nodes)
    result = nodes["node2"].mirror_cmd("switchover", "data")
    assert result == Result(
        OK,
        "data: switched over from node1 to node2; node2 is the source now (resync from the handover: node1 0 bytes)\n"
        "data: volume device /dev/loop9\n",
        "",
    ), result
    assert source.calls == [("handover", "node2")] and target.calls == []
    for node in nodes.values():
        mirror = node.lcd.mirror("data")
        assert mirror.source == "node2" and mirror.store == str(nodes["node1"].store)  # node2's: the same path
        assert [t.node for t in mirror.targets] == ["node1", "node3"]
        old = mirror.target("node1")
        assert old is not None and (old.mode.value, old.bitmap_chunk, old.limit) == ("sync", 256 * 1024, 5_000_000)
        assert [c.op for c in node.lcd.changes()][-1] == "set_mirror_source"
    assert nodes["node1"].definition() == nodes["node2"].definition() == nodes["node3"].definition()


def test_a_switchover_the_source_refuses_changes_nothing(nodes: dict[str, Node]) -> None:
    source, target = switchable(nodes)

    class Paused(FakeProcess):
        def handover(self, to: str, *, timeout: float) -> dict[str, Any]:
            raise SwitchoverRefused(f"data cannot switch over to {to}: the mirror to {to} is Paused, not Mirroring")

    nodes["node1"].mirror_controls = Running(Paused())
    before = dumps(nodes)
    result = nodes["node2"].mirror_cmd("switchover", "data")
    assert_refused(result, SYSCALL, before, nodes, "refused by node1", "Paused, not Mirroring")
    assert target.calls == []
    nodes["node1"].mirror_controls = Running(source)
    assert_refused(nodes["node1"].mirror_cmd("switchover", "data"), ILLEGAL, before, nodes, "not a target")
    nodes["node3"].mirror_controls = NoReplication()
    assert_refused(nodes["node3"].mirror_cmd("switchover", "data"), SYSCALL, before, nodes, "no replication process")
    nodes["node3"].dead.add("node1")
    nodes["node3"].mirror_controls = Running(FakeTarget(nodes["node3"]))
    assert_refused(nodes["node3"].mirror_cmd("switchover", "data"), COMM, before, nodes, "node1 cannot be reached")
    assert source.calls == []


def test_when_the_lcd_change_fails_after_the_handover_the_source_takes_writes_again(
    nodes: dict[str, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = switchable(nodes)

    async def refuse(peer: Peer, args: dict[str, Any]) -> None:
        raise IllegalArgument("node3 cannot record it")

    monkeypatch.setattr(nodes["node3"].sync, "on_prepare", refuse)
    before = dumps(nodes)
    result = nodes["node2"].mirror_cmd("switchover", "data")
    assert_refused(result, ILLEGAL, before, nodes, "node3 cannot record it", "node1 takes writes again",
                   "nothing was switched")  # fmt: skip
    assert source.calls == [("handover", "node2"), ("thaw", None)]
    assert target.calls == [("forget_handover", None)]


def test_set_mirror_source_checks_the_source_and_the_target_in_its_transaction(nodes: dict[str, Node]) -> None:
    assert create(nodes["node1"], "node2").code == OK
    before = dumps(nodes)
    lcd = nodes["node1"].lcd
    with pytest.raises(IllegalArgument, match="node3 is not a target"):
        lcd.set_mirror_source("data", "node3", "node1")
    with pytest.raises(IllegalArgument, match="mirrored from node1 on node1, not node2"):
        lcd.set_mirror_source("data", "node1", "node2")
    with pytest.raises(IllegalArgument, match="nodes on node1 differ"):
        lcd.set_mirror_source("data", "node2", "node1", nodes=["node1", "node2", "node3"])
    with pytest.raises(HakeeperError, match="no mirrored volume"):
        lcd.set_mirror_source("nosuch", "node2", "node1")
    assert dumps(nodes) == before
