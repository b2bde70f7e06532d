"""Messages between nodes: request / response over mutual TLS, trying each path in priority order.

Every hakeeperd listens on ``comm_port`` at the local address of each of its
paths. A connection carries one request and its response, each a frame: a
4-byte big-endian length and a UTF-8 JSON object, at most :data:`MAX_FRAME`
bytes. A malformed or oversized frame closes the connection, with a log line
saying who sent it; the server keeps serving.

:func:`call` sends a request to a node on its highest-priority path and moves
to the next path when one fails to connect or to answer in time; only when
every path failed is the node unreachable (:class:`CommunicationFailed`, exit 9).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hakeeper.comm import tls
from hakeeper.db.model import CommPath
from hakeeper.errors import CommunicationFailed, HakeeperError

logger = logging.getLogger(__name__)

MAX_FRAME = 4 << 20  # a remote command's output is cut well below this (see MAX_OUTPUT users)
CONNECT_TIMEOUT = 3.0
HEADER = struct.Struct(">I")

Handler = Callable[[tls.Peer, dict[str, Any]], Awaitable[dict[str, Any]]]


class FrameError(CommunicationFailed):
    """A frame that is malformed or too large."""


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readexactly(HEADER.size)
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    data = await reader.readexactly(size)
    try:
        message = json.loads(data)
    except ValueError:
        raise FrameError("frame is not JSON") from None
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


def frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, ensure_ascii=False).encode()
    if len(data) > MAX_FRAME:
        raise FrameError(f"message of {len(data)} bytes is larger than {MAX_FRAME}")
    return HEADER.pack(len(data)) + data


class RpcServer:
    """Serves requests ``{"op": NAME, "args": {...}}`` with one handler per operation."""

    def __init__(self, identity: tls.Identity, handlers: Mapping[str, Handler], *, timeout: float = 60.0) -> None:
        self.identity = identity
        self.handlers = handlers
        self.timeout = timeout
        self._servers: dict[tuple[str, int], asyncio.Server] = {}

    async def listen(self, addresses: set[tuple[str, int]]) -> None:
        """Listen on exactly ``addresses`` (host, port), opening and closing listeners as needed."""
        for key in set(self._servers) - addresses:
            self._servers.pop(key).close()
        for host, port in sorted(addresses - set(self._servers)):
            try:
                self._servers[(host, port)] = await asyncio.start_server(
                    tls.accept_tls(self.identity, self._serve), host, port, reuse_address=True
                )
            except OSError as exc:
                logger.error("cannot listen for messages on %s: %s", tls.format_address(host, port), exc.strerror)

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: tls.Peer) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                request = await read_frame(reader)
        except (FrameError, asyncio.IncompleteReadError, TimeoutError) as exc:
            logger.warning("message from node %s at %s refused: %s", peer.node, peer.address, _why(exc))
            return
        op = request.get("op")
        args = request.get("args", {})
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None or not isinstance(args, dict):
            logger.warning("message from node %s at %s refused: unknown operation %r", peer.node, peer.address, op)
            answer: dict[str, Any] = {"ok": False, "error": f"unknown operation {op!r}", "code": 2}
        else:
            try:
                answer = {"ok": True, "result": await handler(peer, args)}
            except HakeeperError as exc:
                answer = {"ok": False, "error": str(exc), "code": exc.exit_code}
            except Exception as exc:  # a loop boundary: one bad request never takes the server down
                logger.exception("%s from node %s failed", op, peer.node)
                answer = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}", "code": 3}
        try:
            writer.write(frame(answer))
            await writer.drain()
        except (OSError, FrameError) as exc:
            logger.warning("answer to node %s at %s lost: %s", peer.node, peer.address, _why(exc))


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed in the middle of a frame"
    if isinstance(exc, TimeoutError):
        return "no complete request in time"
    return str(exc)


class RemoteError(HakeeperError):
    """The other node refused or failed the request; carries its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


async def call(
    identity: tls.Identity,
    paths: list[CommPath],
    port: int,
    op: str,
    args: dict[str, Any],
    *,
    timeout: float,
) -> Any:
    """Send ``op`` to the node of ``paths`` (highest priority first); the next path when one fails."""
    if not paths:
        raise CommunicationFailed("no communication path to that node (see: net_create)")
    node = paths[0].node
    context = tls.client_context(identity)
    failures = []
    for path in sorted(paths, key=lambda p: p.priority):
        try:
            return await _call_on(path, context, port, op, args, timeout=timeout)
        except RemoteError:
            raise
        except (OSError, TimeoutError, asyncio.IncompleteReadError, CommunicationFailed) as exc:
            reason = tls.reason(exc) if isinstance(exc, OSError) else _why(exc)
            logger.info("%s to %s on path %s -> %s failed: %s", op, node, path.local, path.remote, reason)
            failures.append(f"{path.remote}: {reason}")
    raise CommunicationFailed(f"cannot reach node {node!r} on any of its {len(paths)} paths ({'; '.join(failures)})")


async def _call_on(
    path: CommPath, context: ssl.SSLContext, port: int, op: str, args: dict[str, Any], *, timeout: float
) -> Any:
    async with asyncio.timeout(CONNECT_TIMEOUT):
        reader, writer = await asyncio.open_connection(path.remote, port, ssl=context, local_addr=(path.local, 0))
    try:
        found = tls.peer_node_name(writer.get_extra_info("ssl_object"))
        if found != path.node:
            raise CommunicationFailed(f"{path.remote} is node {found!r}, not {path.node!r}")
        writer.write(frame({"op": op, "args": args}))
        await writer.drain()
        async with asyncio.timeout(timeout):
            answer = await read_frame(reader)
    finally:
        await tls.close_writer(writer)
    if answer.get("ok"):
        return answer.get("result")
    raise RemoteError(f"node {path.node}: {answer.get('error', 'refused')}", int(answer.get("code", 1)))
