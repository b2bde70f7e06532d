"""Local recovery: repair a failed resource in place, and escalate when that does not work.

A failure (a quickCheck that says stopped or failed, or a ``sendevent``) of a
resource in service (ISP) leads to:

1. the kit's ``recover`` action, when it has one; or else remove and restore of
   the failed resource and everything above it (the dependents must let go of it);
2. at most ``attempts`` tries within ``window`` seconds per resource;
3. when that fails, or is not allowed (local recovery off, a HARD failure, the
   attempts used up): the failed resource and everything above it are taken out
   of service, the resource is marked OSF, and a failover request is raised —
   the cluster moves the hierarchy to another node; a lone node logs an alert.

A CONFIG failure is not retried, whether the failure reported or the repair
says so (a recover or restore that fails with a configuration error: a refused
key, a wrong parameter): the resource is marked OSF and waits for the
administrator; moving it would meet the same configuration elsewhere. ISU
resources are unprotected and are not recovered. Each resource has at most one
recovery running at a time; failures reported meanwhile are folded into it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hakeeper.db import State
from hakeeper.errors import HakeeperError
from hakeeper.kits.base import Policy
from hakeeper.recovery.engine import Engine, call

logger = logging.getLogger(__name__)

FailoverRequest = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    attempts: int = 3
    window: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError("local recovery attempts must be 0 or more")
        if self.window <= 0:
            raise ValueError("the local recovery window must be positive")


async def lone_node(tag: str, reason: str) -> None:
    """The failover request of a node with no cluster to move to: an alert in the log."""
    logger.error("ALERT: %s is out of service (OSF) and there is no other node to move it to: %s", tag, reason)


class LocalRecovery:
    def __init__(
        self,
        engine: Engine,
        *,
        limits: Limits | None = None,
        failover: FailoverRequest = lone_node,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.limits = limits or Limits()
        self.failover = failover
        self.clock = clock
        self._tries: dict[str, deque[float]] = {}
        self._busy: set[str] = set()

    @property
    def busy(self) -> frozenset[str]:
        return frozenset(self._busy)

    async def failed(self, tag: str, message: str, policy: Policy = Policy.SOFT) -> str:
        """Handle one reported failure of ``tag``; returns the sentence that tells what was done."""
        if tag in self._busy:
            return f"{tag}: recovery already running; this report ({message}) is folded into it"
        self._busy.add(tag)
        try:
            outcome = await self._recover(tag, message, policy)
        except HakeeperError as exc:
            outcome = f"{tag}: recovery impossible: {exc}"
        finally:
            self._busy.discard(tag)
        logger.info("%s", outcome)
        return outcome

    async def _recover(self, tag: str, message: str, policy: Policy) -> str:
        lcd = self.engine.lcd
        resource = lcd.resource(tag)
        if resource.state is not State.ISP:
            return f"{tag} is {resource.state.name}, not ISP: no recovery for {message}"
        if policy is Policy.CONFIG:
            return self._wait_for_admin(tag, message)
        if policy is Policy.HARD:
            return await self._escalate(tag, f"{message} (this node cannot run it)")
        if not resource.local_recover:
            return await self._escalate(tag, f"{message} (local recovery is off)")
        if not self._may_try(tag):
            limits = self.limits
            return await self._escalate(
                tag, f"{message} (local recovery tried {limits.attempts} times in {limits.window:g} s)"
            )
        kit = self.engine.kit_of(resource)
        if kit.has_recover(resource):
            result = await call(kit, "recover", resource)
            if result.ok:
                return f"{tag} recovered in place by its recover action after: {message}"
            if result.policy is Policy.CONFIG:
                return self._wait_for_admin(tag, f"{message}; recover failed: {result.message}")
            return await self._escalate(tag, f"{message}; recover failed: {result.message}")
        reason = f"local recovery of {tag}: {message}"
        down = await self.engine.remove(tag, reason=reason)
        if down.ok:
            up = await self.engine.restore(tag, reason=reason)
            if up.ok:
                return f"{tag} recovered in place (remove and restore of {', '.join(down.done)}) after: {message}"
            if up.policy is Policy.CONFIG:
                return self._wait_for_admin(tag, f"{message}; restore failed: {'; '.join(up.messages)}")
            return await self._escalate(tag, f"{message}; restore failed: {'; '.join(up.messages)}")
        return await self._escalate(tag, f"{message}; remove failed: {'; '.join(down.messages)}")

    def _wait_for_admin(self, tag: str, reason: str) -> str:
        self.engine.lcd.set_state(tag, State.OSF, f"configuration error: {reason}")  # -> OSF, wait for the admin
        return f"{tag}: configuration error ({reason}); OSF until the administrator fixes it"

    def _may_try(self, tag: str) -> bool:
        now = self.clock()
        tries = self._tries.setdefault(tag, deque())
        while tries and now - tries[0] > self.limits.window:
            tries.popleft()
        if len(tries) >= self.limits.attempts:
            return False
        tries.append(now)
        return True

    async def _escalate(self, tag: str, reason: str) -> str:
        """Take ``tag`` and what is above it out of service, mark it OSF, and ask for a failover."""
        await self.engine.remove(tag, reason=f"local recovery failed: {reason}")
        self.engine.lcd.set_state(tag, State.OSF, f"local recovery failed: {reason}")  # -> OSF
        await self.failover(tag, reason)
        return f"{tag}: local recovery failed ({reason}); OSF, failover requested"
