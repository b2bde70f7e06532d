"""What the commands that run inside hakeeperd use of it: one typed interface, not ``Any``.

:class:`hakeeper.daemon.Daemon` is the one implementation; the commands see it
as :attr:`hakeeper.cli.base.Context.services` (through
:attr:`~hakeeper.cli.base.Context.daemon`, which says so when a command that
needs hakeeperd runs without it). Imported only for type checking by the
commands: at run time nothing here is loaded by a command's process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from hakeeper.cluster.extend import Services as ExtendServices
from hakeeper.cluster.failover import Failover
from hakeeper.control import Answer
from hakeeper.db import Lcd
from hakeeper.events.alarm import Event
from hakeeper.recovery.engine import Engine
from hakeeper.replication.control import MirrorControls


class DaemonServices(ExtendServices, Protocol):
    """hakeeperd as the commands run inside it see it."""

    engine: Engine
    failover: Failover
    mirror_controls: MirrorControls  # the replication processes of mirrored volumes here

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of the daemon, logged if it fails, cancelled at shutdown."""
        ...

    async def run_remote(self, node: str, command: str, argv: list[str], actor: str) -> Answer:
        """Run a command on another node's hakeeperd, as ``actor``."""
        ...

    def replicator_for(self, actor: str) -> Callable[[Lcd], Any]:
        """How a command's LCD (opened in a worker thread) sends its changes to the nodes they concern."""
        ...

    async def send_event(self, event: Event) -> str:
        """Handle a sendevent: handlers, and local recovery where the event calls for it; what was done."""
        ...
