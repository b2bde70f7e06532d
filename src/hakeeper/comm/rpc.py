"""Messages between nodes: request / response over mutual TLS, trying each path in priority order.

Every hakeeperd listens on ``comm_port`` at the local address of each of its
paths. A connection carries requests and their responses, one at a time, each a
frame: a 4-byte big-endian length and a UTF-8 JSON object, at most
:data:`MAX_FRAME` bytes. A malformed or oversized frame closes the connection,
with a log line saying who sent it; the server keeps serving.

A connection is kept open after its answer and used again for the next request
to the same node on the same path (a TLS handshake costs about 10 ms of CPU on
both sides; a failover asks the other voters three times). Idle connections are
closed after :data:`CLIENT_IDLE` seconds by the client, after
:data:`SERVER_IDLE` by the server. A kept connection that turns out closed
before it carried the request (the peer restarted) is replaced by a fresh one
at once; one that fails later is not retried (the request may have run). Only
requests with a short timeout (:data:`REUSE_MAX`) use a kept connection: one
whose path went silent costs them their timeout, then the next path is tried.

:func:`call` sends a request to a node on its highest-priority path and moves
to the next path when one fails to connect or to answer in time; only when
every path failed is the node unreachable (:class:`CommunicationFailed`, exit 9).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hakeeper.comm import tls
from hakeeper.comm.addresses import format_address
from hakeeper.comm.frames import FrameError, encode, read_frame
from hakeeper.comm.identity import Identity
from hakeeper.comm.pki import PeerRefused
from hakeeper.db.model import CommPath
from hakeeper.errors import CommunicationFailed, HakeeperError

logger = logging.getLogger(__name__)

MAX_FRAME = 4 << 20  # a remote command's output is cut well below this (see MAX_OUTPUT users)
CONNECT_TIMEOUT = 3.0
CLIENT_IDLE = 20.0  # a kept connection idle longer is closed, not used (shorter than the server's)
SERVER_IDLE = 60.0  # the server closes a connection that sends no next request within this
KEPT_PER_PATH = 4  # idle connections kept per (path, port)
REUSE_MAX = 5.0  # only requests answered within this reuse a kept connection (a dead one costs at most that)

Handler = Callable[[tls.Peer, dict[str, Any]], Awaitable[dict[str, Any]]]


class RpcServer:
    """Serves requests ``{"op": NAME, "args": {...}}`` with one handler per operation."""

    def __init__(
        self,
        identity: Identity,
        handlers: Mapping[str, Handler],
        *,
        timeout: float = 60.0,
        revoked: tls.Refusal | None = None,
    ) -> None:
        self.identity = identity
        self.handlers = handlers
        self.timeout = timeout
        self.revoked = revoked  # checked in each handshake and before each request (a kept connection)
        self._accept = tls.accept_tls(identity, self._serve, revoked=revoked)
        self._servers: dict[tuple[str, int], asyncio.Server] = {}
        self._conns: set[asyncio.StreamWriter] = set()

    async def listen(self, addresses: set[tuple[str, int]]) -> None:
        """Listen on exactly ``addresses`` (host, port), opening and closing listeners as needed."""
        for key in set(self._servers) - addresses:
            self._servers.pop(key).close()
        for host, port in sorted(addresses - set(self._servers)):
            try:
                self._servers[(host, port)] = await asyncio.start_server(self._accept, host, port, reuse_address=True)
            except OSError as exc:
                logger.error("cannot listen for messages on %s: %s", format_address(host, port), exc.strerror)

    def reload_certificate(self) -> None:
        """This node's certificate was renewed: show the new one from the next connection on."""
        self._accept.reload()

    def close(self) -> None:
        """Stop listening and end every connection, idle or not (a request under way gets no answer)."""
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        for writer in self._conns:
            writer.transport.abort()
        self._conns.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: tls.Peer) -> None:
        """Requests on one connection, one after the other, until the client closes it or stays idle."""
        self._conns.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(SERVER_IDLE):
                        header = await reader.read(1)  # the next request's first byte, or the end of the connection
                except (OSError, TimeoutError):
                    return
                if not header:
                    return
                why = self.revoked(peer.certificate) if self.revoked and peer.certificate else None
                if why is not None:  # revoked while its connection was open
                    logger.warning("message from node %s at %s refused: %s", peer.node, peer.address, why)
                    return
                if not await self._one(header, reader, writer, peer):
                    return
        finally:
            self._conns.discard(writer)

    async def _one(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   peer: tls.Peer) -> bool:  # fmt: skip
        """One request and its answer; False when the connection cannot carry another."""
        try:
            async with asyncio.timeout(self.timeout):
                request = await read_frame(reader, MAX_FRAME, first)
        except (FrameError, asyncio.IncompleteReadError, TimeoutError) as exc:
            logger.warning("message from node %s at %s refused: %s", peer.node, peer.address, _why(exc))
            return False
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
            writer.write(encode(answer, MAX_FRAME))
            await writer.drain()
        except (OSError, FrameError) as exc:
            logger.warning("answer to node %s at %s lost: %s", peer.node, peer.address, _why(exc))
            return False
        return True


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
    identity: Identity,
    paths: list[CommPath],
    port: int,
    op: str,
    args: dict[str, Any],
    *,
    timeout: float,
    revoked: tls.Refusal | None = None,
) -> Any:
    """Send ``op`` to the node of ``paths`` (highest priority first); the next path when one fails.

    ``revoked``: the revocation list's check; a node whose certificate it refuses is not talked to.
    """
    if not paths:
        raise CommunicationFailed("no communication path to that node (see: net_create)")
    node = paths[0].node
    context = tls.client_context(identity)
    failures = []
    for path in sorted(paths, key=lambda p: p.priority):
        try:
            return await _call_on(path, context, port, op, args, timeout=timeout, me=identity.node, revoked=revoked)
        except RemoteError:
            raise
        except (OSError, TimeoutError, asyncio.IncompleteReadError, CommunicationFailed) as exc:
            reason = tls.reason(exc) if isinstance(exc, OSError) else _why(exc)
            logger.info("%s to %s on path %s -> %s failed: %s", op, node, path.local, path.remote, reason)
            failures.append(f"{path.remote}: {reason}")
    raise CommunicationFailed(f"cannot reach node {node!r} on any of its {len(paths)} paths ({'; '.join(failures)})")


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
PoolKey = tuple[str, str, str, str, int]  # this node, the path's node, local and remote address, port

#: Idle connections by event loop (tests run several loops), then by path: (reader, writer, idle since).
_kept: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[PoolKey, list[tuple[Conn, float]]]] = (
    weakref.WeakKeyDictionary()
)


def _pool(key: PoolKey) -> list[tuple[Conn, float]]:
    return _kept.setdefault(asyncio.get_running_loop(), {}).setdefault(key, [])


def _take(key: PoolKey) -> Conn | None:
    """A kept connection of ``key`` that may carry a request, if any (stale ones are closed)."""
    pool = _pool(key)
    now = time.monotonic()
    while pool:
        (reader, writer), since = pool.pop()
        if now - since < CLIENT_IDLE and not writer.transport.is_closing() and not reader.at_eof():
            return reader, writer
        writer.transport.abort()
    return None


def _keep(key: PoolKey, conn: Conn) -> None:
    pool = _pool(key)
    if len(pool) < KEPT_PER_PATH and not conn[1].transport.is_closing():
        pool.append((conn, time.monotonic()))
    else:
        conn[1].transport.abort()


def drop_kept() -> None:
    """Close every kept connection of this event loop (hakeeperd stopping)."""
    for pool in _kept.pop(asyncio.get_running_loop(), {}).values():
        for (_reader, writer), _since in pool:
            writer.transport.abort()


async def _call_on(
    path: CommPath, context: ssl.SSLContext, port: int, op: str, args: dict[str, Any], *, timeout: float,
    me: str = "", revoked: tls.Refusal | None = None,
) -> Any:  # fmt: skip
    key = (me, path.node, path.local, path.remote, port)
    # A kept connection over a path that went silent is found out only by its timeout, where a fresh
    # one fails to connect in CONNECT_TIMEOUT: only short requests use one (a long restore never waits on it).
    kept = _take(key) if timeout <= REUSE_MAX else None
    if kept is not None:
        try:
            return await _exchange(kept, key, path, op, args, timeout=timeout)
        except _Unsent:
            pass  # closed by the peer before it carried the request: a fresh connection below
    async with asyncio.timeout(CONNECT_TIMEOUT):
        reader, writer = await asyncio.open_connection(path.remote, port, ssl=context, local_addr=(path.local, 0))
    try:
        found = tls.peer_node(writer.get_extra_info("ssl_object"), revoked)
    except PeerRefused as exc:
        logger.warning("refused TLS connection to %s (node %s): %s", path.remote, path.node, exc)
        await tls.close_writer(writer)
        raise CommunicationFailed(f"{path.remote}: {exc}") from None
    if found != path.node:
        await tls.close_writer(writer)
        raise CommunicationFailed(f"{path.remote} is node {found!r}, not {path.node!r}")
    try:
        return await _exchange((reader, writer), key, path, op, args, timeout=timeout)
    except _Unsent as exc:
        raise CommunicationFailed(f"{path.remote} closed the connection: {exc}") from None


class _Unsent(Exception):
    """A connection closed before any of the answer came: the peer never had the request."""


async def _exchange(conn: Conn, key: PoolKey, path: CommPath, op: str, args: dict[str, Any], *,
                    timeout: float) -> Any:  # fmt: skip
    """One request and its answer on ``conn`` (within ``timeout``, all of it); the connection is kept for the
    next one when all went well."""
    reader, writer = conn
    done = False
    try:
        async with asyncio.timeout(timeout):
            try:
                writer.write(encode({"op": op, "args": args}, MAX_FRAME))
                await writer.drain()
                first = await reader.read(1)
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise _Unsent(str(exc)) from None
            if not first:
                raise _Unsent("end of connection")
            answer = await read_frame(reader, MAX_FRAME, first)
        done = True
    finally:
        if done:
            _keep(key, conn)
        else:
            writer.transport.abort()
    if answer.get("ok"):
        return answer.get("result")
    raise RemoteError(f"node {path.node}: {answer.get('error', 'refused')}", int(answer.get("code", 1)))
