"""A TCP port free on loopback, for tests that start servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tracked_server(handler: ConnectionHandler) -> AsyncIterator[tuple[int, asyncio.Queue[None]]]:
    """A server on 127.0.0.1 running ``handler``: its port, and a queue that gets an item as each connection ends."""
    finished: asyncio.Queue[None] = asyncio.Queue()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            finished.put_nowait(None)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], finished
    finally:
        server.close()
        await server.wait_closed()
