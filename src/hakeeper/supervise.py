"""Supervised services: each long-running task of hakeeperd is declared once, with what to do when it dies.

A :class:`Service` is a name, a factory of its coroutine and a policy. The
:class:`Supervisor` runs every service in one :class:`asyncio.TaskGroup`, so
that hakeeperd leaves no task behind when it stops; when a service dies (its
coroutine raises, or returns while hakeeperd is not stopping), the supervisor
logs the death with its traceback and then, by the service's policy:

- :class:`Restart`: restarts it after a back-off that doubles from ``first``
  up to ``cap``, and starts again from ``first`` once a run lasted ``healthy``
  seconds. A service that needs more than ``limit`` restarts within ``window``
  seconds is broken, not unlucky: its next death is fatal (escalation).
- :data:`FATAL`: the node cannot live without it. The death is logged at
  CRITICAL and the supervisor tells hakeeperd (``on_fatal``), which exits
  non-zero after the guard has taken this node's resources out of service
  (see ``Daemon._die`` and docs/recovery.md, "When a service of hakeeperd dies").

A fatal death is reported rather than raised through the TaskGroup on purpose:
a TaskGroup cancels every sibling at once, heartbeats included, and the peers
would start their takeover before the guard has acted. hakeeperd's exit after a
fatal death has an order (stop acting, let the guard act, only then fall
silent), so the supervisor hands it the failure and hakeeperd leaves the group
itself.

hakeeperd's services and their policies (declared in ``Daemon._services``):

============  =======  ===================================================================
service       policy   why
============  =======  ===================================================================
heartbeats    fatal    It carries membership both ways. A report lost with the link (a
                       peer's death, its return) leaves the node blind to it for good —
                       no takeover, or a takeover from a live node — and a new heartbeat
                       process means a silence longer than the peers' budget (0.5 s by
                       default): they take over while this node still serves.
guard         fatal    Without its feed the guard kills hakeeperd after ``guard_timeout``
                       anyway; a restarted link would start a second guard beside the
                       first, which then kills hakeeperd; and an unguarded node serves
                       on after its next crash while the peers take over.
lcd-writer    fatal    The thread that commits hakeeperd's LCD changes (hakeeper.db.aio). A
                       node that cannot record what it starts and stops must not act on:
                       a resource running but recorded out of service is one the guard
                       leaves running after a crash. Only a bug kills it (a change's own
                       error goes to its caller), and a new one could not tell which
                       changes in flight were made.
messages      restart  The RPC listener holds no state. While it is down the peers' requests
                       fail as to an unreachable node, which never counts as a death (the
                       heartbeats say ALIVE): nothing moves, a request is retried.
catch-up      restart  Redelivering what a peer missed is idempotent; a later pass does it.
anti-entropy  restart  Each pass compares and repairs from scratch; a later pass does it.
monitor       restart  The quickCheck scheduler rebuilds its watchers from the LCD; while
                       it is down a failure is noticed late, not never.
certificate   restart  The daily warning that this node's certificate expires soon
expiry                 (``hakeeper cluster renew``); nothing depends on it.
replication   restart  Keeps one replication process per mirrored volume of this node
                       (hakeeper.replication.supervisor) and restarts a dead one itself; the
                       service only reads the LCD and starts or stops processes: a new run
                       takes over the processes the last one kept.
watchdog      restart  Under systemd with ``WatchdogSec=`` only (hakeeper.notify): pings
                       systemd every half of it while the event loop turns. It holds no
                       state, and a failed send is logged, not raised; the first back-off
                       (0.5 s) is far below the 5 s left before systemd would kill
                       hakeeperd. A fatal policy would end a node that serves well for a
                       lost ping; when it dies for good the escalation ends hakeeperd anyway.
============  =======  ===================================================================

One-shot work (a recovery, a takeover, the catch-up at start) is not a service:
it runs in tasks that hakeeperd drains at shutdown (``Daemon.spawn``), and a
failure of one is logged with its traceback.

**Fault injection, for tests only.** With ``HAKEEPER_TEST_FAULTS=1`` in
hakeeperd's environment, the control command ``_fault SERVICE`` raises
:class:`InjectedFault` inside that running service, at the point where it
waits, the next time it wakes up — as a real exception would surface there.
Without the variable the command is refused, and services run unwrapped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from hakeeper.errors import IllegalArgument, NotFound

logger = logging.getLogger(__name__)

FAULTS_ENV: Final = "HAKEEPER_TEST_FAULTS"


@dataclass(frozen=True)
class Restart:
    """Restart a dead service after an exponential back-off; too many restarts in a window escalate to fatal."""

    first: float = 0.5  # the first back-off, seconds
    factor: float = 2.0
    cap: float = 30.0  # the longest back-off
    healthy: float = 60.0  # a run this long starts the back-off again from ``first``
    limit: int = 5  # restarts allowed within ``window``: the next death is fatal
    window: float = 300.0

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.cap and self.factor >= 1 and self.healthy > 0 and self.limit >= 0):
            raise ValueError(f"a restart policy needs 0 < first <= cap, factor >= 1, healthy > 0, limit >= 0: {self}")


@dataclass(frozen=True)
class Fatal:
    """The node cannot live without the service: its death ends hakeeperd."""


RESTART: Final = Restart()
FATAL: Final = Fatal()


@dataclass(frozen=True)
class Service:
    name: str
    run: Callable[[], Coroutine[Any, Any, object]]
    policy: Restart | Fatal


@dataclass(frozen=True)
class Failure:
    """A fatal death: the service, its exception (None: it returned), and whether it was restartable."""

    service: str
    error: BaseException | None
    escalated: bool = False

    def describe(self) -> str:
        how = f"{type(self.error).__name__}: {self.error}" if self.error is not None else "it returned"
        again = " and died too often to be restarted again" if self.escalated else ""
        return f"the {self.service} service failed ({how}){again}"


class InjectedFault(Exception):
    """Raised inside a service by the test-only fault injection (see the module docstring)."""


class Supervisor:
    """Runs services in one TaskGroup (``async with``), restarting or reporting them as their policy says."""

    def __init__(
        self,
        on_fatal: Callable[[Failure], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        faults: bool = False,
    ) -> None:
        self.on_fatal = on_fatal
        self.clock = clock
        self.sleep = sleep
        self.faults = faults
        #: The first fatal death, once there is one.
        self.failure: Failure | None = None
        self._group: asyncio.TaskGroup | None = None
        self._services: dict[str, Service] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: set[str] = set()  # services whose coroutine runs now (not between restarts)
        self._ended: set[str] = set()  # services cancelled on purpose: a death or a return ends them quietly
        self._winding_down = False
        self._pending_faults: set[str] = set()

    async def __aenter__(self) -> Supervisor:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Cancel every service still running and wait for all of them: no task is left behind."""
        self.wind_down()
        for task in self._tasks.values():
            task.cancel()
        assert self._group is not None
        await self._group.__aexit__(kind, error, tb)

    @property
    def names(self) -> list[str]:
        return list(self._services)

    def start(self, service: Service) -> None:
        if self._group is None:
            raise RuntimeError("start services inside 'async with supervisor'")
        if service.name in self._services:
            raise ValueError(f"a service named {service.name!r} runs already")
        self._services[service.name] = service
        self._tasks[service.name] = self._group.create_task(self._supervise(service), name=service.name)

    def wind_down(self) -> None:
        """hakeeperd stops: from now on a service that dies or returns is not restarted, nor fatal (still logged)."""
        self._winding_down = True

    async def cancel(self, *names: str, timeout: float | None = None) -> list[str]:
        """Cancel these services (every one when none is named) and wait for them, at most ``timeout`` seconds.

        Returns the names of those still running after the wait.
        """
        chosen = [self._tasks[n] for n in (names or self._tasks) if n in self._tasks]
        self._ended.update(t.get_name() for t in chosen)
        for task in chosen:
            task.cancel()
        if not chosen:
            return []
        _, late = await asyncio.wait(chosen, timeout=timeout)
        return sorted(t.get_name() for t in late)

    def inject(self, name: str) -> str:
        """Test-only: raise :class:`InjectedFault` inside the running service ``name`` when it next wakes up."""
        if not self.faults:
            raise IllegalArgument(f"fault injection is off (for tests: {FAULTS_ENV}=1 in hakeeperd's environment)")
        if name not in self._services:
            raise NotFound(f"no service {name!r} (services: {', '.join(self._services)})")
        if name not in self._running:
            raise IllegalArgument(f"the {name} service is not running now (it is restarting, or it ended)")
        self._pending_faults.add(name)
        return f"fault injected into the {name} service"

    # ------------------------------------------------------------------ one service's life

    async def _supervise(self, service: Service) -> None:
        name, policy = service.name, service.policy
        delay = policy.first if isinstance(policy, Restart) else 0.0
        restarts: collections.deque[float] = collections.deque()  # when each restart within the window was decided
        while True:
            started = self.clock()
            error: Exception | None = None
            self._running.add(name)
            try:
                coro = service.run()
                await (_Faultable(coro, lambda: self._take_fault(name)) if self.faults else coro)
            except Exception as exc:  # noqa: BLE001 - a service's death, logged below with its traceback
                error = exc
            finally:
                self._running.discard(name)
                self._pending_faults.discard(name)
            if self._winding_down or name in self._ended:
                if error is not None:
                    logger.error("the %s service failed while hakeeperd stops", name, exc_info=error)
                return
            now = self.clock()
            ran = now - started
            what = f"the {name} service {'failed' if error is not None else 'returned'} after {ran:.1f} s"
            if isinstance(policy, Fatal):
                self._fail(Failure(name, error), f"{what}; hakeeperd cannot run without it")
                return
            if ran >= policy.healthy:
                delay = policy.first
            while restarts and now - restarts[0] > policy.window:
                restarts.popleft()
            if len(restarts) >= policy.limit:
                why = f"{what}: {len(restarts) + 1} deaths within {policy.window:g} s; giving up on it"
                self._fail(Failure(name, error, escalated=True), why)
                return
            restarts.append(now)
            logger.error("%s; restarting it in %g s (restart %d of at most %d within %g s)",
                         what, delay, len(restarts), policy.limit, policy.window, exc_info=error)  # fmt: skip
            await self.sleep(delay)
            delay = min(delay * policy.factor, policy.cap)
            logger.warning("the %s service starts again", name)

    def _fail(self, failure: Failure, what: str) -> None:
        logger.critical("%s", what, exc_info=failure.error)
        if self.failure is None:
            self.failure = failure
            self.on_fatal(failure)

    def _take_fault(self, name: str) -> BaseException | None:
        if name not in self._pending_faults:
            return None
        self._pending_faults.discard(name)
        return InjectedFault(f"fault injected into the {name} service (test-only, {FAULTS_ENV}=1)")


class _Faultable:
    """Await ``coro``, but when ``fault()`` gives an exception, raise it inside ``coro`` where it waits.

    The coroutine is driven step by step as ``await`` would drive it: what it
    waits on is passed up to the task, and what the task sends or throws is passed
    down. At each resumption a pending fault replaces what would be sent, so the
    service sees it come out of its current ``await``. A cancellation is passed
    down unchanged: it always wins over a fault.
    """

    def __init__(self, coro: Coroutine[Any, Any, object], fault: Callable[[], BaseException | None]) -> None:
        self.coro = coro
        self.fault = fault

    def __await__(self) -> Generator[Any, Any, object]:
        value: Any = None
        error: BaseException | None = None
        while True:
            if error is None:
                error = self.fault()
            try:
                step = self.coro.send(value) if error is None else self.coro.throw(error)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield step), None
            except BaseException as exc:  # noqa: BLE001 - handed down to the coroutine, which decides
                value, error = None, exc
