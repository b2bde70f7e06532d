"""Renewal and revocation between real message servers on 127.0.0.x: hakeeperd's side (Credentials on an
RpcServer, as the daemon wires them) and the command line's ('hakeeper cluster renew' / 'revoke').

node1 holds the CA key, node2 renews its certificate through it (authenticated by the one it has), node3 is
revoked: node1's list reaches node2, and from then on neither talks to node3 nor lets it renew.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cli.base import run
from hakeeper.cluster.credentials import Credentials, request_renewal
from hakeeper.comm import rpc
from hakeeper.comm.identity import Identity, load_identity, load_node_key
from hakeeper.comm.revocation import Revocations, load_revocations, merge_revocations
from hakeeper.db import Lcd
from hakeeper.db.model import CommPath
from hakeeper.errors import CommunicationFailed, NotFound
from hakeeper.lab.cluster import make_cluster
from tests.conftest import Result
from tests.ports import free_port

HOSTS = {"node1": "127.0.0.31", "node2": "127.0.0.32", "node3": "127.0.0.33"}


class Node:
    """A node's message server with hakeeperd's credentials handlers, on its own event loop in a thread."""

    def __init__(self, identity: Identity, port: int) -> None:
        self.identity = identity
        self.root = identity.directory.parent
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.credentials = self.call(self._make())

    async def _make(self) -> Credentials:
        peers = [n for n in HOSTS if n != self.identity.node]
        credentials = Credentials(self.root, self.identity, self.send, lambda: peers)
        self.server = rpc.RpcServer(self.identity, credentials.handlers(), revoked=credentials.refusal)
        await self.server.listen({(HOSTS[self.identity.node], self.port)})
        return credentials

    def path(self, node: str) -> CommPath:
        return CommPath(node, "TCP", HOSTS[self.identity.node], HOSTS[node], 1)

    async def send(self, node: str, op: str, args: dict[str, Any], timeout: float) -> Any:
        return await rpc.call(self.identity, [self.path(node)], self.port, op, args, timeout=timeout,
                              revoked=self.credentials.refusal)  # fmt: skip

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(30)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            rpc.drop_kept()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # connection handlers: ended here, never by the loop's closing
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, Node]]:
    port = free_port()
    ids = make_cluster(tmp_path, list(HOSTS))
    made: dict[str, Node] = {}
    try:
        for name, identity in ids.items():
            made[name] = Node(identity, port)
            with Lcd.open(identity.directory.parent, node=name) as lcd:
                lcd.set_settings({"comm_port": str(port)})
                for other, address in HOSTS.items():
                    if other != name:
                        lcd.create_node(other)
                        lcd.create_path(other, HOSTS[name], address)
        yield made
    finally:
        for node in made.values():
            node.close()


def cli(root: Path, *argv: str) -> Result:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = run("cluster", list(argv), root=str(root), out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


def test_a_node_renews_through_the_member_that_holds_the_ca_key(
    nodes: dict[str, Node], caplog: pytest.LogCaptureFixture
) -> None:
    node2 = nodes["node2"]
    before = node2.identity.certificate
    key_before = node2.identity.key_path.read_bytes()
    caplog.set_level(logging.INFO, logger="hakeeper")
    # Each member with paths is asked in turn (node1 first: it signs).
    done = cli(node2.root, "renew")
    assert done.code == 0, done.err
    assert done.out.startswith("node2 has a new certificate from node1: serial ")
    assert "hakeeperd is not running here" in done.out
    after = load_identity(node2.root)
    assert after.certificate.serial_number != before.serial_number
    assert after.certificate.public_key() == before.public_key()
    assert node2.identity.key_path.read_bytes() == key_before
    assert any("renewed node node2's certificate" in r.getMessage() for r in caplog.records)
    # With a new key: both files replaced, and the new pair works for the next call.
    assert cli(node2.root, "renew", "node1", "--new-key").code == 0
    renewed = load_identity(node2.root)
    assert renewed.certificate.public_key() != before.public_key()
    assert load_node_key(renewed).public_key() == renewed.certificate.public_key()
    assert node2.call(node2.credentials.exchange("node1"))
    # A member without the CA key, named: a clear refusal, nothing changed.
    unchanged = renewed.cert_path.read_bytes()
    lacking = cli(node2.root, "renew", "node3")
    assert lacking.code == 7 and "no member reached holds the cluster CA key (asked node3)" in lacking.err
    assert renewed.cert_path.read_bytes() == unchanged


def test_a_node_may_renew_only_its_own_name(nodes: dict[str, Node]) -> None:
    node2 = nodes["node2"]
    key = load_node_key(node2.identity)
    forged = Identity(node2.identity.directory, "node3", node2.identity.ca, node2.identity.certificate)

    async def ask() -> None:
        await request_renewal(forged, {"node1": [node2.path("node1")]}, node2.port, key, timeout=10)

    with pytest.raises(rpc.RemoteError, match="node node2 may renew only its own certificate, not node3's"):
        node2.call(ask())


def test_a_revoked_node_is_refused_everywhere_once_the_lists_met(
    nodes: dict[str, Node], caplog: pytest.LogCaptureFixture
) -> None:
    node1, node2, node3 = nodes["node1"], nodes["node2"], nodes["node3"]
    assert node3.call(node3.credentials.exchange("node2"))  # node3 is a member until revoked
    caplog.set_level(logging.WARNING, logger="hakeeper")
    done = cli(node1.root, "revoke", "node3")
    assert done.code == 0, done.err
    # What hakeeperd does when told (_revoked): read the list and push it to every peer.
    said = node1.call(node1.credentials.revoked_here())
    assert said.startswith("told node2"), said
    assert set(load_revocations(node2.identity.directory).entries) == {"node3"}
    with pytest.raises(CommunicationFailed, match="node node3's certificate was revoked by node1"):
        node2.call(node2.send("node3", "revocations", {"list": Revocations().as_json()}, 5))
    with pytest.raises(CommunicationFailed):  # node2 hangs up on node3 in the handshake
        node3.call(node3.send("node2", "revocations", {"list": Revocations().as_json()}, 5))
    key = load_node_key(node3.identity)

    async def renew() -> None:
        await request_renewal(node3.identity, {"node1": [node3.path("node1")]}, node3.port, key, timeout=5)

    with pytest.raises(CommunicationFailed):
        node3.call(renew())
    logged = [r.getMessage() for r in caplog.records]
    assert any("from node1: node node3's certificate was revoked" in line for line in logged), logged
    assert any(line.startswith("refused TLS connection from 127.0.0.33:") and "revoked" in line for line in logged), (
        logged
    )


def test_lists_converge_when_a_member_comes_back(nodes: dict[str, Node]) -> None:
    node1, node2 = nodes["node1"], nodes["node2"]
    merge_revocations(node1.identity.directory, Revocations().revoke("node9", 100.0, "node1"))
    merge_revocations(node2.identity.directory, Revocations().revoke("node8", 200.0, "node2"))
    node1.call(asyncio.to_thread(node1.credentials.watch.reload))
    node2.call(asyncio.to_thread(node2.credentials.watch.reload))
    assert node2.call(node2.credentials.exchange("node1"))  # what a peer coming back ALIVE does
    for node in (node1, node2):
        assert set(load_revocations(node.identity.directory).entries) == {"node8", "node9"}
        assert set(node.credentials.watch.current.entries) == {"node8", "node9"}


def test_no_member_with_the_ca_key_reachable(nodes: dict[str, Node]) -> None:
    node2 = nodes["node2"]
    key = load_node_key(node2.identity)
    nobody = CommPath("node1", "TCP", HOSTS["node2"], "127.0.0.39", 1)

    async def renew(members: dict[str, list[CommPath]]) -> None:
        await request_renewal(node2.identity, members, node2.port, key, timeout=3)

    with pytest.raises(CommunicationFailed, match="no member could be reached"):
        node2.call(renew({"node1": [nobody]}))
    with pytest.raises(NotFound, match="asked node3"):
        node2.call(renew({"node3": [node2.path("node3")], "node1": [nobody]}))
