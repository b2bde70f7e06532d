"""The two-phase commit's catch-up: a change whose commit did not reach a node is told again, and applied once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cluster.configsync import ConfigSync, participants, thread_replicator
from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd
from hakeeper.db.settings import defaults
from hakeeper.errors import CommunicationFailed


def node_lcd(path: Path, me: str, other: str) -> Lcd:
    lcd = Lcd.open(path, node=me)
    lcd.create_node(other)
    lcd.create_resource("web", "web-1", "gen", "app", ensure_type=True)
    return lcd


def test_a_lost_commit_is_delivered_when_the_node_is_back_and_applied_once(tmp_path: Path) -> None:
    a = node_lcd(tmp_path / "node1", "node1", "node2")
    b = node_lcd(tmp_path / "node2", "node2", "node1")
    a.create_equivalency("web", "node2")
    b.create_equivalency("web", "node2", node="node1")  # the same rows on both, as replication leaves them
    lost = {"commit": True}
    commits: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        to_b = ConfigSync(b, send=no_send, membership=lambda n: PathState.ALIVE)

        async def send(node: str, op: str, args: dict[str, Any]) -> Any:
            if op == "commit":
                commits.append(args["txid"])
                if lost["commit"]:
                    raise CommunicationFailed("node2 went away between prepare and commit")
            return await getattr(to_b, f"on_{op}")(Peer("node1", "198.18.0.11"), args)

        sync = ConfigSync(a, send=send, membership=lambda n: PathState.ALIVE)

        def change_in_a_worker_thread() -> None:
            with Lcd.open(tmp_path / "node1", actor="root") as worker:
                worker.replicator = thread_replicator(sync, loop, worker, "root")
                worker.set_info("web", "hello")

        await asyncio.to_thread(change_in_a_worker_thread)
        assert a.resource("web").info == "hello", "committed here"
        assert b.resource("web").info == "", "node2 missed the commit"
        assert len(a.outbox("node2")) == 1, "and it is kept to be told again"

        lost["commit"] = False
        assert await sync.redeliver("node2") == 1
        assert b.resource("web").info == "hello"
        assert a.outbox("node2") == []
        assert await sync.redeliver("node2") == 0
        # A second delivery of the same commit (its answer lost, say) changes nothing.
        seq_before = b.last_seq()
        txid = commits[-1]
        message = {"txid": txid, "op": "set_info", "args": {"tag": "web", "info": "hello"}, "actor": "root", "seq": 9}
        await to_b.on_commit(Peer("node1", "198.18.0.11"), message)
        assert b.last_seq() == seq_before
        assert "via node1#" in b.changes()[-1].actor

    asyncio.run(scenario())
    a.close()
    b.close()


async def no_send(node: str, op: str, args: dict[str, Any]) -> Any:
    raise CommunicationFailed("not used")


def test_settings_go_to_every_node_and_one_that_is_away_catches_up_when_it_asks(tmp_path: Path) -> None:
    a = node_lcd(tmp_path / "node1", "node1", "node2")
    a.create_node("node3")
    b = node_lcd(tmp_path / "node2", "node2", "node1")
    c = node_lcd(tmp_path / "node3", "node3", "node1")
    membership = {"node2": PathState.ALIVE, "node3": PathState.DEAD}
    changed: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sides = {"node2": ConfigSync(b, no_send, lambda n: PathState.ALIVE, changed.append),
                 "node3": ConfigSync(c, no_send, lambda n: PathState.ALIVE, changed.append)}  # fmt: skip
        asked: list[tuple[str, str]] = []

        async def send(node: str, op: str, args: dict[str, Any]) -> Any:
            asked.append((node, op))
            if membership[node] is not PathState.ALIVE:
                raise CommunicationFailed(f"cannot reach node {node!r}")
            return await getattr(sides[node], f"on_{op}")(Peer("node1", "198.18.0.11"), args)

        sync = ConfigSync(a, send, lambda n: membership[n], changed.append)

        def settings(assignments: dict[str, str]) -> None:
            with Lcd.open(tmp_path / "node1", actor="root") as worker:
                worker.replicator = thread_replicator(sync, loop, worker, "root")
                worker.set_settings(assignments)

        await asyncio.to_thread(settings, {"heartbeat_misses": "7"})
        assert [lcd.settings()["heartbeat_misses"] for lcd in (a, b, c)] == [7, 7, defaults()["heartbeat_misses"]]
        assert ("node3", "prepare") not in asked, "a DEAD node is not asked"
        assert [t for t, _ in a.outbox("node3")] and a.outbox("node2") == []
        assert changed == ["set_settings", "set_settings"], "the coordinator and node2 reconfigure at once"

        # The comm port needs every node: one that missed it could not be reached to be told.
        with pytest.raises(CommunicationFailed, match="node3 cannot be reached"):
            await asyncio.to_thread(settings, {"comm_port": "7400"})
        assert [lcd.settings()["comm_port"] for lcd in (a, b, c)] == [7365, 7365, 7365]

        # node3 is back and asks node1 for what it missed (as its daemon does at start and on ALIVE).
        membership["node3"] = PathState.ALIVE
        to_node1 = sides["node3"]

        async def node3_send(node: str, op: str, args: dict[str, Any]) -> Any:
            assert (node, op) == ("node1", "catch_up")
            return await sync.on_catch_up(Peer("node3", "198.18.0.13"), args)

        to_node1.send = node3_send
        assert await to_node1.catch_up_from("node1") == 1
        assert c.settings()["heartbeat_misses"] == 7
        assert a.outbox("node3") == []
        assert await to_node1.catch_up_from("node1") == 0

    asyncio.run(scenario())
    for lcd in (a, b, c):
        lcd.close()


def test_a_refusal_by_a_reachable_node_refuses_a_settings_change_everywhere(tmp_path: Path) -> None:
    a = node_lcd(tmp_path / "node1", "node1", "node2")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def send(node: str, op: str, args: dict[str, Any]) -> Any:
            if op == "prepare":
                raise RemoteError("node node2: the LCD is busy", 1)
            return {}

        sync = ConfigSync(a, send, lambda n: PathState.ALIVE)

        def settings() -> None:
            with Lcd.open(tmp_path / "node1", actor="root") as worker:
                worker.replicator = thread_replicator(sync, loop, worker, "root")
                worker.set_settings({"heartbeat_misses": "6"})

        with pytest.raises(CommunicationFailed, match="refused by node node2"):
            await asyncio.to_thread(settings)

    asyncio.run(scenario())
    assert a.settings()["heartbeat_misses"] == defaults()["heartbeat_misses"] and a.outbox("node2") == []
    a.close()


def test_extend_s_equivalencies_concern_every_node_of_the_hierarchy_and_the_new_one(tmp_path: Path) -> None:
    with Lcd.open(tmp_path / "node1", node="node1") as lcd:
        for node in ("node2", "node3", "node4"):
            lcd.create_node(node)
        lcd.create_resource("data", "data-1", "gen", "app", ensure_type=True)
        lcd.create_resource("web", "web-1", "gen", "app")
        lcd.create_equivalency("data", "node2")
        args = {"tags": ["data", "web"], "other_node": "node3", "other_priority": None, "node": "node1"}
        assert participants(lcd, "create_equivalencies", args) == ["node2", "node3"]
        assert participants(lcd, "remove_equivalencies", {"tags": ["data"], "other_node": "node2"}) == ["node2"]
        assert participants(lcd, "create_resources", {"resources": [], "dependencies": []}) == []
