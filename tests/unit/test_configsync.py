"""The two-phase commit's catch-up: a change whose commit did not reach a node is told again, and applied once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hakeeper.cluster.configsync import ConfigSync, participants, thread_replicator
from hakeeper.comm.paths import PathState
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd
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
