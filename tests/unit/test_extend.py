"""extend and unextend between nodes that live in this process: the real LCDs, kits, adopter and two-phase commit.

Each node has its own state directory, LCD, kits and :class:`Adopter`; a request
to another node goes through JSON and calls that node's handler, as the message
port would (its refusal comes back as a RemoteError with the exit code).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hakeeper.cluster.configsync import ConfigSync, thread_replicator
from hakeeper.cluster.extend import Adopter, Services, extend, unextend
from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.daemon import Daemon
from hakeeper.db import Lcd, State
from hakeeper.db.aio import Inline
from hakeeper.errors import CommunicationFailed, HakeeperError
from hakeeper.kits.base import KitContext
from hakeeper.kits.gen_app import GenAppKit
from hakeeper.kits.registry import Kits

T = TypeVar("T")
NAMES = ("node1", "node2", "node3")
TRUE = shutil.which("true") or "/bin/true"


class Node:
    """One node's services, as extend and unextend use hakeeperd's."""

    def __init__(self, base: Path, name: str, cluster: dict[str, Node]) -> None:
        self.name = name
        self.root = base / name
        self.cluster = cluster
        self.lcd = Lcd.open(self.root, node=name, actor="hakeeperd")
        for other in NAMES:
            if other != name:
                self.lcd.create_node(other)
                self.lcd.create_path(other, f"198.18.0.{10 + int(name[-1])}", f"198.18.0.{10 + int(other[-1])}")
        self.kits = Kits(KitContext(self.root, name))
        self.db = Inline(self.lcd)
        self.adopter = Adopter(self.lcd, self.kits)
        self.sync = ConfigSync(self.lcd, self._send, self.state_of)
        self.dead: set[str] = set()
        self.requests: list[tuple[str, str]] = []

    def state_of(self, node: str) -> PathState:
        return PathState.DEAD if node in self.dead else PathState.ALIVE

    def check_reachable(self, node: str) -> None:
        if node in self.dead:
            raise CommunicationFailed(f"{node} cannot be reached (all paths DEAD)")

    async def request(self, node: str, op: str, args: dict[str, Any], *, timeout: float) -> Any:
        if node in self.dead:
            raise CommunicationFailed(f"cannot reach node {node!r}")
        self.requests.append((node, op))
        other = self.cluster[node]
        handlers = {
            "adopt": other.adopter.on_adopt,
            "unadopt": other.adopter.on_unadopt,
            "prepare": other.sync.on_prepare,
            "commit": other.sync.on_commit,
            "abort": other.sync.on_abort,
        }
        try:
            result = await handlers[op](Peer(self.name, "198.18.0.1"), json.loads(json.dumps(args)))
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

    def scripts(self, tag: str) -> dict[str, bytes]:
        actions = GenAppKit(self.kits.ctx).instance_dir(tag)
        return {p.name: p.read_bytes() for p in sorted(actions.iterdir())} if actions.exists() else {}

    def eqvs(self) -> set[tuple[str, str, int]]:
        return {(e.tag, e.node, e.priority) for e in self.lcd.equivalencies()}

    def dump(self) -> dict[str, list[tuple[object, ...]]]:
        """Every table of the LCD, the change log included."""
        with closing(sqlite3.connect(self.root / "lcd.sqlite")) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}

    def files(self) -> list[str]:
        """Every file under subsys/, and every gen/app instance directory (empty parents do not count)."""
        subsys = self.root / "subsys"
        found = subsys.rglob("*") if subsys.exists() else iter(())
        return sorted(str(p.relative_to(self.root)) for p in found if p.is_file() or p.parent.name == "instances")


def _services_of(daemon: Daemon, fake: Node) -> tuple[Services, Services]:
    """mypy checks that hakeeperd, and this test's nodes, give extend what it needs."""
    return daemon, fake


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, Node]]:
    cluster: dict[str, Node] = {}
    for name in NAMES:
        cluster[name] = Node(tmp_path, name, cluster)
    yield cluster
    for node in cluster.values():
        node.lcd.close()


def make_script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / "scripts" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\n# {name}\n{body}\n")
    path.chmod(0o755)
    return str(path)


def create_app(node: Node, tmp_path: Path, tag: str) -> None:
    """A gen/app resource with scripts of its own, as ``hakeeper create`` makes it."""
    kit = node.kits.get("gen", "app")
    params = {"restore": make_script(tmp_path, f"{tag}-start", "exit 0"),
              "remove": make_script(tmp_path, f"{tag}-stop", "exit 0"), "info": f"{tag} info"}  # fmt: skip
    created = kit.create(tag, kit.check_params(params), None)
    node.lcd.create_resource(tag, created.id, "gen", "app", info=created.info, ensure_type=True)


def create_web(node: Node, tmp_path: Path) -> None:
    """web -> data, two gen/app resources, on ``node``; in service there."""
    for tag in ("data", "web"):
        create_app(node, tmp_path, tag)
    node.lcd.create_dependency("web", "data")
    node.lcd.set_state("data", State.ISP, "test")
    node.lcd.set_state("web", State.ISP, "test")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_extend_carries_the_hierarchy_and_every_node_gets_the_same_equivalencies(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    node1, node2, node3 = nodes.values()
    create_web(node1, tmp_path)
    assert run(extend(node1, "web", "node2", 5, "root")) == (["data", "web"], 5)
    assert [(node, op) for node, op in node1.requests if op in ("adopt", "unadopt")] == [("node2", "adopt")]
    for tag in ("data", "web"):
        mine, theirs = node1.lcd.resource(tag), node2.lcd.resource(tag)
        assert theirs.state is State.OSU, "it runs on node1"
        assert (theirs.id, theirs.info, theirs.init, theirs.switchback, theirs.check_interval) == (
            mine.id, mine.info, mine.init, mine.switchback, mine.check_interval,
        )  # fmt: skip
        assert node2.scripts(tag) == node1.scripts(tag) != {}
    assert node2.lcd.edges() == [("web", "data")]
    expected = {(t, n, p) for t in ("data", "web") for n, p in (("node1", 1), ("node2", 5))}
    assert node1.eqvs() == node2.eqvs() == expected
    assert node3.eqvs() == set()
    assert "root via node1" in node2.lcd.changes()[-2].actor  # create_resources, then the equivalencies

    assert run(extend(node1, "web", "node3", None, "root")) == (["data", "web"], 2)
    expected |= {(t, "node3", 2) for t in ("data", "web")}
    assert node1.eqvs() == node2.eqvs() == node3.eqvs() == expected, "node2 learns node3's equivalency too"


def test_extend_takes_only_what_the_node_lacks_and_links_to_what_it_has(nodes: dict[str, Node], tmp_path: Path) -> None:
    node1, node2, _ = nodes.values()
    create_web(node1, tmp_path)
    run(extend(node1, "data", "node2", None, "root"))
    assert run(extend(node1, "web", "node2", None, "root")) == (["web"], 2)
    assert node2.lcd.edges() == [("web", "data")]


def test_a_resource_the_target_does_not_validate_refuses_everything(nodes: dict[str, Node], tmp_path: Path) -> None:
    node1, node2, _ = nodes.values()
    create_web(node1, tmp_path)
    (GenAppKit(node1.kits.ctx).instance_dir("web") / "remove").unlink()  # broken here: node2 will not accept it
    before = {n.name: n.dump() for n in nodes.values()}
    with pytest.raises(HakeeperError) as refused:
        run(extend(node1, "web", "node2", None, "root"))
    message = str(refused.value)
    assert refused.value.exit_code == 5
    assert "node node2: web: gen/app does not validate it on node2: web: no remove script" in message
    assert message.endswith("nothing was changed")
    assert {n.name: n.dump() for n in nodes.values()} == before
    assert node2.files() == [], "data's scripts, adopted before web failed, are gone too"


def test_a_resource_the_target_has_already_is_refused(nodes: dict[str, Node], tmp_path: Path) -> None:
    node1, node2, _ = nodes.values()
    create_web(node1, tmp_path)
    node2.lcd.create_resource("data", "other", "gen", "app", ensure_type=True)
    before = node2.dump()
    with pytest.raises(HakeeperError, match="node2 has a resource tagged 'data' already") as refused:
        run(extend(node1, "web", "node2", None, "root"))
    assert refused.value.exit_code == 4
    assert node2.dump() == before and node2.files() == []


def test_a_dead_node_of_the_hierarchy_refuses_before_anything_is_sent(nodes: dict[str, Node], tmp_path: Path) -> None:
    node1 = nodes["node1"]
    create_web(node1, tmp_path)
    run(extend(node1, "web", "node3", None, "root"))
    before = {n.name: n.dump() for n in nodes.values()}
    node1.requests.clear()
    for dead in ("node2", "node3"):
        node1.dead = {dead}
        with pytest.raises(CommunicationFailed, match=f"{dead} cannot be reached"):
            run(extend(node1, "web", "node2", None, "root"))
    assert node1.requests == []
    assert {n.name: n.dump() for n in nodes.values()} == before


def test_equivalencies_refused_after_adoption_undo_it_on_the_target(nodes: dict[str, Node], tmp_path: Path) -> None:
    node1, node2, node3 = nodes.values()
    create_web(node1, tmp_path)
    run(extend(node1, "web", "node3", None, "root"))
    node3.lcd.remove_path("node2")
    node3.lcd.remove_node("node2")  # node3 cannot take an equivalency naming node2
    before = {n.name: n.dump() for n in (node1, node3)}
    with pytest.raises(HakeeperError, match=r"refused by node node3.*'node2'.*nothing was changed") as refused:
        run(extend(node1, "web", "node2", None, "root"))
    assert refused.value.exit_code == 9
    assert [op for node, op in node1.requests if node == "node2" and "adopt" in op][-2:] == ["adopt", "unadopt"]
    assert {n.name: n.dump() for n in (node1, node3)} == before
    assert node2.lcd.resources() == [] and node2.eqvs() == set() and node2.files() == []


def test_unextend_takes_the_hierarchy_off_one_node_only(nodes: dict[str, Node], tmp_path: Path) -> None:
    node1, node2, node3 = nodes.values()
    create_web(node1, tmp_path)
    run(extend(node1, "web", "node2", None, "root"))
    run(extend(node1, "web", "node3", None, "root"))

    node2.lcd.set_state("data", State.ISP, "running there")
    before = {n.name: n.dump() for n in nodes.values()}
    with pytest.raises(HakeeperError, match="data is in service on node2 \\(ISP\\)") as refused:
        run(unextend(node1, "web", "node2", "root"))
    assert refused.value.exit_code == 8
    assert {n.name: n.dump() for n in nodes.values()} == before

    node2.lcd.set_state("data", State.OSU, "stopped there")
    assert run(unextend(node1, "web", "node2", "root")) == ["web", "data"]
    assert node2.lcd.resources() == [] and node2.files() == [] and node2.eqvs() == set()
    expected = {(t, n, p) for t in ("data", "web") for n, p in (("node1", 1), ("node3", 3))}
    assert node1.eqvs() == node3.eqvs() == expected
    assert node3.scripts("web") == node1.scripts("web") != {}, "node3 keeps its copy"

    with pytest.raises(HakeeperError, match="web is in service on node1"):
        run(unextend(node3, "web", "node1", "root"))  # node1's copy can go too, from another node...
    for tag in ("web", "data"):
        node1.lcd.set_state(tag, State.OSU, "taken out of service")
    run(unextend(node3, "web", "node1", "root"))  # ...once out of service there
    assert node1.lcd.resources() == [] and node1.files() == [] and node3.eqvs() == set()


def test_unextend_keeps_a_child_another_extended_hierarchy_needs(nodes: dict[str, Node], tmp_path: Path) -> None:
    node1, node2, _ = nodes.values()
    create_web(node1, tmp_path)
    create_app(node1, tmp_path, "api")
    node1.lcd.create_dependency("api", "data")
    run(extend(node1, "web", "node2", None, "root"))
    run(extend(node1, "api", "node2", None, "root"))
    assert run(unextend(node1, "web", "node2", "root")) == ["web"]
    assert [r.tag for r in node2.lcd.resources()] == ["api", "data"]
    with pytest.raises(HakeeperError, match="api on node2 depends on 'data': unextend api first") as refused:
        run(unextend(node1, "data", "node2", "root"))
    assert refused.value.exit_code == 8


@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        (("web", "node1"), (5, "node1 is this node")),
        (("web", "node3"), (7, "'web' is not extended to node3")),
        (("nosuch", "node2"), (7, "no resource tagged 'nosuch'")),
        (("web", "node9"), (7, "no node named 'node9'")),
    ],
)
def test_unextend_refusals_here(
    nodes: dict[str, Node], tmp_path: Path, argv: tuple[str, str], refusal: tuple[int, str]
) -> None:
    node1 = nodes["node1"]
    create_web(node1, tmp_path)
    run(extend(node1, "web", "node2", None, "root"))
    before = {n.name: n.dump() for n in nodes.values()}
    with pytest.raises(HakeeperError, match=refusal[1]) as refused:
        run(unextend(node1, *argv, "root"))
    assert refused.value.exit_code == refusal[0]
    assert {n.name: n.dump() for n in nodes.values()} == before
