"""The quickCheck scheduler: every resource in service is checked at its own interval.

Each ISP resource with a non-zero interval gets a task of its own, so a slow
check delays nobody else and one resource is never checked twice at once. The
first check comes at a random point of the first interval and later ones at
the interval ± 10 %, so that a thousand resources do not all check in the same
second. Every ``refresh`` seconds the set of tasks is brought in line with the
LCD (new resources, changed intervals, resources no longer in service). Its
reads go to hakeeperd's reader thread (:mod:`hakeeper.db.aio`): a slow commit
delays no check.
A check that says stopped or failed is handed to ``on_failure``, which must
not block: recovery runs in a task of its own (a watcher is cancelled when its
resource leaves service, which recovery itself does for a moment).

A check only speaks for the resource if nothing acted on it meanwhile: the
watcher takes the engine's ticket before the check, and a failure reported by a
check that started before or during an action on the resource (a restore, a
remove, a recovery), or that ends when the resource is no longer ISP, is
dropped (logged at DEBUG). Local recovery gets the ticket too and judges again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from hakeeper.db import Lcd, Resource, State
from hakeeper.kits.base import Result
from hakeeper.recovery.engine import Engine, call

logger = logging.getLogger(__name__)

#: (the resource as it was when checked, the check's result, the engine's ticket taken before the check)
OnFailure = Callable[[Resource, Result, int], None]
JITTER = 0.1


class Monitor:
    def __init__(
        self,
        engine: Engine,
        on_failure: OnFailure,
        *,
        refresh: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.db = engine.db
        self.kits = engine.kits
        self.on_failure = on_failure
        self.refresh = refresh
        self.rng = rng or random.Random()
        self._tasks: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self.checks = 0  # quickChecks run, for tests and metrics

    async def run(self) -> None:
        """Keep one watcher per ISP resource until cancelled."""
        try:
            while True:
                try:
                    await self.sync()
                except Exception:  # the loop must not die of one bad read
                    logger.exception("monitor: cannot read the resources to check")
                await asyncio.sleep(self.refresh)
        finally:
            for _, task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*(t for _, t in self._tasks.values()), return_exceptions=True)
            self._tasks.clear()

    async def sync(self) -> None:
        resources = await self.db.read(Lcd.resources)  # on the reader thread: never behind a commit's fsync
        wanted = {r.tag: r.check_interval for r in resources if r.state is State.ISP and r.check_interval}
        for tag, (interval, task) in list(self._tasks.items()):
            if task.done() or wanted.get(tag) != interval:
                task.cancel()
                del self._tasks[tag]
        for tag, interval in wanted.items():
            if tag not in self._tasks:
                first = self.rng.uniform(0.5, 1.0) * interval
                self._tasks[tag] = (interval, asyncio.create_task(self._watch(tag, interval, first)))

    async def _watch(self, tag: str, interval: int, first: float) -> None:
        delay = first
        while True:
            await asyncio.sleep(delay)
            delay = interval * self.rng.uniform(1 - JITTER, 1 + JITTER)
            try:
                resource = await self.db.read(lambda lcd: lcd.resource(tag))
                if resource.state is not State.ISP:
                    return
                if tag in self.engine.busy:
                    continue  # an action runs on it: its answer would speak of the action, not of the resource
                kit = self.kits.get(resource.app, resource.type)
                self.checks += 1
                ticket = self.engine.ticket()
                result = await call(kit, "quick_check", resource)
                if result.ok:
                    continue
                stale = await self.engine.stale(tag, ticket)
                if stale is not None:
                    logger.debug("quickCheck of %s said %s; dropped: %s", tag, result.message or result.health, stale)
                    continue
                logger.warning("quickCheck of %s: %s", tag, result.message or result.health)
                self.on_failure(resource, result, ticket)
            except asyncio.CancelledError:
                raise
            except Exception:  # one resource's trouble must not stop its checks for good
                logger.exception("monitor: checking %s failed", tag)
