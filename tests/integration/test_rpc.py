"""The message port between nodes: calls work, and strangers, garbage and oversized frames are refused."""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest

from hakeeper.comm import frames, rpc, tls
from hakeeper.db.model import CommPath
from hakeeper.errors import CommunicationFailed
from hakeeper.lab.cluster import make_cluster
from tests.ports import free_port

HOST_A, HOST_B = "127.0.0.21", "127.0.0.22"


async def echo(peer: tls.Peer, args: dict[str, Any]) -> dict[str, Any]:
    return {"from": peer.node, "args": args}


def test_calls_and_refusals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids = make_cluster(tmp_path, ["node1", "node2"])
    stranger = make_cluster(tmp_path / "other", ["node1"], cluster="other")["node1"]
    port = free_port()
    path = CommPath("node2", "TCP", HOST_A, HOST_B, 1)
    dead_path = CommPath("node2", "TCP", HOST_A, "127.0.0.23", 1)  # nobody listens there

    async def raw(context: ssl.SSLContext | None, payload: bytes) -> bytes:
        try:
            reader, writer = await asyncio.open_connection(HOST_B, port, ssl=context)
            writer.write(payload)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data
        except (OSError, ssl.SSLError, TimeoutError):
            return b""

    async def scenario() -> None:
        server = rpc.RpcServer(ids["node2"], {"echo": echo}, timeout=2)
        await server.listen({(HOST_B, port)})
        try:
            good = await rpc.call(ids["node1"], [path], port, "echo", {"x": 1}, timeout=5)
            assert good == {"from": "node1", "args": {"x": 1}}
            # The first path is dead: the call goes on to the next one.
            both = [dead_path, CommPath("node2", "TCP", HOST_A, HOST_B, 2)]
            assert (await rpc.call(ids["node1"], both, port, "echo", {}, timeout=5))["from"] == "node1"
            with pytest.raises(rpc.RemoteError, match="unknown operation"):
                await rpc.call(ids["node1"], [path], port, "format_disk", {}, timeout=5)
            with pytest.raises(CommunicationFailed, match="on any of its 1 paths"):
                await rpc.call(ids["node1"], [dead_path], port, "echo", {}, timeout=2)
            # Strangers get nothing.
            request = frames.encode({"op": "echo", "args": {}}, rpc.MAX_FRAME)
            assert await raw(tls.client_context(stranger), request) == b""
            bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            bare.check_hostname, bare.verify_mode = False, ssl.CERT_NONE
            assert await raw(bare, request) == b""
            # Members sending garbage or oversized frames get nothing either.
            member = tls.client_context(ids["node1"])
            assert await raw(member, struct.pack(">I", 5) + b"nope!") == b""
            assert await raw(member, struct.pack(">I", rpc.MAX_FRAME + 1)) == b""
            # And the server still serves.
            assert (await rpc.call(ids["node1"], [path], port, "echo", {}, timeout=5))["from"] == "node1"
        finally:
            server.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    logged = " | ".join(r.getMessage() for r in caplog.records)
    assert "refused TLS connection" in logged
    assert "frame is not JSON" in logged
    assert "larger than" in logged
    assert "unknown operation 'format_disk'" in logged


def test_a_connection_carries_the_next_request_and_a_restarted_peer_costs_nothing(tmp_path: Path) -> None:
    """The second call to a node reuses the first's connection (no second TLS handshake); after the peer
    restarted, the kept connection is found closed and a fresh one carries the request."""
    ids = make_cluster(tmp_path, ["node1", "node2"])
    port = free_port()
    path = CommPath("node2", "TCP", HOST_A, HOST_B, 1)

    async def where(peer: tls.Peer, args: dict[str, Any]) -> dict[str, Any]:
        return {"at": peer.address}  # the caller's address and source port: one per connection

    async def at(timeout: float = 2) -> str:
        return str((await rpc.call(ids["node1"], [path], port, "where", {}, timeout=timeout))["at"])

    async def scenario() -> None:
        server = rpc.RpcServer(ids["node2"], {"where": where})
        await server.listen({(HOST_B, port)})
        try:
            first = await at()
            assert await at() == first, "one connection"
            both = await asyncio.gather(at(), at())
            assert first in both and len(set(both)) == 2, "two at once: the kept one and a fresh one"
            assert await at(rpc.REUSE_MAX + 1) not in both, "a long request never waits on a kept connection"
        finally:
            server.close()  # and its connections
        server = rpc.RpcServer(ids["node2"], {"where": where})  # the peer restarted
        await server.listen({(HOST_B, port)})
        try:
            assert await at() not in both, "the kept connections were closed: a fresh one"
        finally:
            server.close()
            rpc.drop_kept()

    asyncio.run(scenario())
