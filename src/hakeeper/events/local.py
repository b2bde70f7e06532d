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

Recovery acts only on a resource that is ISP and has no action running when
the report arrives: checking that and holding the resource (the engine's
:class:`~hakeeper.recovery.engine.Hold`) are one step, and a quickCheck's
report also names the moment its check started (a ticket), so a check that
overlapped a remove counts for nothing. It then waits for the engine and checks
again: a run queued before it (an administrator's remove) wins, and what an
administrator took out of service stays out. Without a recover action it takes
out of service the failed resource and what is in service above it, and brings
back exactly those, no more.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hakeeper.db import Lcd, State, graph
from hakeeper.errors import HakeeperError
from hakeeper.events import policy as ladder
from hakeeper.events.policy import Rung
from hakeeper.kits.base import Policy
from hakeeper.recovery import plan
from hakeeper.recovery.engine import Busy, Engine, call

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
        refusal: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.refusal = refusal  # why this node may restore nothing now (it lost quorum), else None
        self.limits = limits or Limits()
        self.failover = failover
        self.clock = clock
        self._tries: dict[str, deque[float]] = {}
        self._busy: set[str] = set()

    @property
    def busy(self) -> frozenset[str]:
        return frozenset(self._busy)

    async def failed(self, tag: str, message: str, policy: Policy = Policy.SOFT, *, ticket: int | None = None) -> str:
        """Handle one reported failure of ``tag``; returns the sentence that tells what was done.

        ``ticket``: :meth:`Engine.ticket` taken when the quickCheck that reports
        it started (None for a sendevent: now).
        """
        if tag in self._busy:
            return f"{tag}: recovery already running; this report ({message}) is folded into it"
        try:
            hold = await self.engine.hold(tag, ticket)  # checks "ISP and idle" and holds it, in one step
        except Busy as exc:
            logger.debug("no local recovery for %s: %s", message, exc)
            return f"{exc}: no recovery for {message}"
        except HakeeperError as exc:
            outcome = f"{tag}: recovery impossible: {exc}"
            logger.info("%s", outcome)
            return outcome
        self._busy.add(tag)
        escalate: str | None = None
        try:
            with hold:
                async with self.engine.exclusive():
                    why = await hold.intact()
                    if why is not None:
                        logger.debug("no local recovery for %s: %s: %s", message, tag, why)
                        return f"{tag}: {why}: no recovery for {message}"
                    why = self.refusal()
                    if why is not None:  # its resources are being taken out of service: restore nothing
                        logger.warning("%s: no local recovery (%s): %s", tag, message, why)
                        return f"{tag}: {why}: no recovery for {message}"
                    outcome, escalate = await self._recover(tag, message, policy)
        except HakeeperError as exc:
            outcome = f"{tag}: recovery impossible: {exc}"
        finally:
            self._busy.discard(tag)
        if escalate is not None:
            await self.failover(tag, escalate)
        logger.info("%s", outcome)
        return outcome

    async def _recover(self, tag: str, message: str, policy: Policy) -> tuple[str, str | None]:
        """Recover ``tag`` (held, under the engine's lock): what was done, and the failover reason if any."""
        resource = await self.engine.db.read(lambda lcd: lcd.resource(tag))
        kit = self.engine.kit_of(resource)
        step = ladder.first_step(
            policy,
            local_recover=resource.local_recover,
            may_try=policy not in (Policy.CONFIG, Policy.HARD) and resource.local_recover and self._may_try(tag),
            has_recover=kit.has_recover(resource),
            limits=f"{self.limits.attempts} times in {self.limits.window:g} s",
        )
        if step.rung is Rung.WAIT_FOR_ADMIN:
            return await self._wait_for_admin(tag, message), None
        if step.rung is Rung.ESCALATE:
            return await self._escalate(tag, message + step.why)
        if step.rung is Rung.RECOVER:
            result = await call(kit, "recover", resource)  # the hold keeps tag: checks meanwhile count for nothing
            step = ladder.after(result.ok, result.policy, f"recover failed: {result.message}")
            done = f"{tag} recovered in place by its recover action after: {message}"
        else:
            reason = f"local recovery of {tag}: {message}"
            summaries, edges = await self.engine.db.read(lambda lcd: (lcd.summaries(), lcd.edges()))
            states = {t: state for t, _id, state, _reason in summaries}
            members = {t for t in plan.local_recovery_set(edges, tag) if states.get(t, State.OSU).in_service}
            down = await self.engine.remove_all_of(members, reason=reason, target=tag)
            if not down.ok:
                return await self._escalate(tag, f"{message}; remove failed: {'; '.join(down.messages)}")
            up = await self.engine.restore_all_of(members, reason=reason, target=tag)
            step = ladder.after(up.ok, up.policy, f"restore failed: {'; '.join(up.messages)}")
            done = f"{tag} recovered in place (remove and restore of {', '.join(down.done)}) after: {message}"
        if step.rung is Rung.DONE:
            return done, None
        if step.rung is Rung.WAIT_FOR_ADMIN:
            return await self._wait_for_admin(tag, message + step.why), None
        return await self._escalate(tag, message + step.why)

    async def _wait_for_admin(self, tag: str, reason: str) -> str:
        """Mark ``tag`` OSF until the administrator acts; what is above it goes out of service first."""
        above = graph.ancestors(await self.engine.db.read(Lcd.edges), tag)
        if above:
            await self.engine.remove_all_of(above, reason=f"{tag} below it: configuration error", target=tag)
        await self.engine.mark(tag, State.OSF, f"configuration error: {reason}")  # -> OSF, wait for the admin
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

    async def _escalate(self, tag: str, reason: str) -> tuple[str, str]:
        """Take ``tag`` and what is above it out of service and mark it OSF; the caller asks for a failover."""
        await self.engine.remove(tag, reason=f"local recovery failed: {reason}")
        await self.engine.mark(tag, State.OSF, f"local recovery failed: {reason}")  # -> OSF
        return f"{tag}: local recovery failed ({reason}); OSF, failover requested", reason
