"""hakeeperd's side of ``hakeeper mirror switchover`` on the old source: the requests of the new source.

``hakeeper mirror switchover VOL`` runs on the target that is to become the source (B) and asks
the source's hakeeperd (A) over the cluster's RPC (:mod:`hakeeper.comm.rpc`, mutual TLS: the
requester is the node it says it is):

``mirror_handover`` ``{"volume", "timeout"}``
    A checks in its LCD that it is the source and the requester a target, then asks its
    replication process to hand the volume over (``handover``: refused while the volume's loop
    device is in use here, or when the mirror to B is not Mirroring; else writes stop, every
    Mirroring target is drained and B holds the handover durably). Answers what the process said
    and each target's bytes to resend.
``mirror_thaw`` ``{"volume"}``
    The LCD change that follows failed: A takes writes again (nothing was switched).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hakeeper.comm.tls import Peer
from hakeeper.db.aio import Access
from hakeeper.errors import IllegalArgument

from .control import MirrorControl, MirrorControls, MirrorNotRunning

Handler = Callable[[Peer, dict[str, Any]], Awaitable[Any]]
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 300.0


class Handoff:
    """The RPC handlers of a switchover on the old source (see the module's docstring)."""

    def __init__(self, db: Access, node: str, controls: MirrorControls) -> None:
        self.db = db
        self.node = node
        self.controls = controls

    def handlers(self) -> dict[str, Handler]:
        return {"mirror_handover": self.on_mirror_handover, "mirror_thaw": self.on_mirror_thaw}

    async def _control(self, volume: str, to: str) -> MirrorControl:
        mirror = await self.db.read(lambda r: r.mirror(volume))
        if mirror.source != self.node:
            raise IllegalArgument(f"{self.node} is not the source of {volume!r}: {mirror.source} is")
        if mirror.target(to) is None:
            raise IllegalArgument(f"{to} is not a target of {volume!r}: only a target can become its source")
        control = self.controls.control(volume)
        if control is None:
            raise MirrorNotRunning(f"no replication process of {volume!r} runs on {self.node}, its source")
        return control

    async def on_mirror_handover(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        volume = str(args.get("volume"))
        timeout = float(args.get("timeout") or DEFAULT_TIMEOUT)
        if not 0 < timeout <= MAX_TIMEOUT:
            raise IllegalArgument(f"a handover timeout of {timeout:g} s is outside 0..{MAX_TIMEOUT:g}")
        control = await self._control(volume, peer.node)
        return await asyncio.to_thread(control.handover, peer.node, timeout=timeout)

    async def on_mirror_thaw(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        volume = str(args.get("volume"))
        control = await self._control(volume, peer.node)
        return {"said": await asyncio.to_thread(control.thaw)}
