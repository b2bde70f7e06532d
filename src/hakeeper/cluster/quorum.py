"""Quorum: whether this node may act for the cluster, and what it does when it may not.

The rule is :func:`hakeeper.cluster.decide.quorum`'s (a majority of the nodes,
witnesses included; or the ``quorum_hosts`` reached, with ``tcp_remote``; or
always, with ``none``). :class:`QuorumWatch` asks it with what this node sees
now, and runs the ``quorum_loss_action`` once per loss: ``osu`` cuts the
network face and takes everything out of service (:mod:`hakeeper.cluster.lease`),
``fastkill`` and ``fastboot`` halt or reboot the node at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hakeeper.cluster import decide, lease
from hakeeper.cluster.converge import Retries
from hakeeper.cluster.decide import View
from hakeeper.cluster.fencing import Fencing
from hakeeper.cluster.placement import majority
from hakeeper.db import Lcd
from hakeeper.db.settings import parse_hosts
from hakeeper.recovery.engine import Engine

logger = logging.getLogger(__name__)

HALT = {"fastkill": ["systemctl", "poweroff", "--force", "--force"],
        "fastboot": ["systemctl", "reboot", "--force", "--force"]}  # fmt: skip


class QuorumWatch:
    """This node's quorum, asked afresh each time; ``lost`` from a loss until a check finds it again."""

    def __init__(
        self,
        lcd: Lcd,
        engine: Engine,
        view: Callable[[], View],
        *,
        fencing: Fencing,
        retries: Retries,
        runs_here: Callable[[], dict[str, int]],
    ) -> None:
        self.lcd = lcd
        self.engine = engine
        self.view = view
        self.fencing = fencing
        self.retries = retries
        self.runs_here = runs_here
        self.lost = False
        #: The heartbeat process's own cuts of the virtual addresses (hakeeper.comm.cut), told by the heartbeat link.
        self.direct_cuts = lease.DirectCuts()

    async def now(self) -> decide.Quorum:
        settings = self.lcd.settings()
        mode = str(settings["quorum_mode"])
        if mode != "tcp_remote":
            return decide.quorum(mode, self.view())
        hosts = parse_hosts(str(settings["quorum_hosts"]))
        timeout = float(settings["quorum_timeout"])
        reached = await asyncio.gather(*(_reaches(host, port, timeout) for host, port in hosts))
        return decide.quorum(mode, self.view(), hosts=len(hosts), hosts_reached=sum(reached))

    async def held(self) -> bool:
        """Whether this node has quorum now; when it lost it, the quorum-loss action runs (once per loss)."""
        q = await self.now()
        if q.ok:
            return True
        if not self.lost:
            self.lost = True
            await self._act(q)
        else:
            logger.info("no quorum (%s): taking nothing over", q.why)
        return False

    def refusal(self) -> str | None:
        """Why nothing may be restored here now, not even in place (local recovery): this node lost quorum
        and took its resources out of service (or its heartbeat process cut their addresses). None: it may."""
        return "this node lost quorum" if self.lost else None

    async def regained(self) -> bool:
        """After a loss, whether quorum is back (a peer came back); False while it is still lost."""
        if self.lost:
            q = await self.now()
            if q.ok:
                self.lost = False
                logger.warning("quorum regained (%s); resources stay where they are", q.why)
        return not self.lost

    def voters_needed(self, everyone: list[str]) -> int:
        """How many voters a claim needs: a majority of all; with quorum_mode tcp_remote or none, of the live ones.

        Without a majority of nodes as the quorum, the nodes a claimant reaches
        only order claims among themselves; the quorum hosts (or the
        administrator, with ``none``) decide which side acts, and fencing keeps
        the other from serving (required for two nodes with tcp_remote).
        """
        if str(self.lcd.settings()["quorum_mode"]) == "majority":
            return majority(len(everyone))
        return majority(len(self.view().alive & set(everyone)))

    def advice(self) -> str | None:
        """What is wrong with the quorum setup for this cluster's size, if anything (logged at start, in why)."""
        mode = str(self.lcd.settings()["quorum_mode"])
        nodes = len(self.view().nodes)
        if mode == "majority" and nodes == 2:
            return (
                "two nodes with quorum_mode=majority: neither can outvote the other, so no failover happens; "
                "add a witness (hakeeper cluster join --witness), use quorum_mode=tcp_remote, or set "
                "quorum_mode=none to accept the risk of both serving at once"
            )
        if self.fencing.required(nodes):
            return (
                "two nodes with quorum_mode=tcp_remote and no fence_command: with no third voter, nothing proves "
                "that the other node stopped, so no failover happens; set fence_command, or add a witness "
                "and use quorum_mode=majority"
            )
        return None

    async def _act(self, q: decide.Quorum) -> None:
        action = str(self.lcd.settings()["quorum_loss_action"])
        logger.error("quorum lost (%s): %s, taking nothing over", q.why, action)
        if action in HALT:
            proc = await asyncio.create_subprocess_exec(*HALT[action])
            await proc.wait()
            return
        running = self.runs_here()
        # The network face (virtual addresses) first, at once, then the rest: see hakeeper.cluster.lease.
        await lease.take_out_of_service(self.lcd, self.engine, reason=f"quorum lost ({q.why})", direct=self.direct_cuts)
        for name in running:  # when quorum is back, the anti-entropy pass brings back what nobody took over
            self.retries.soon(name)


async def _reaches(host: str, port: int, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
