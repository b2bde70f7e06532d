"""The recovery engine (LifeKeeper's LRACI): runs kit actions over a hierarchy, in order, and records states.

``restore`` brings children in service before their parents, ``remove`` takes
parents out before their children; resources whose turn has come run at the
same time, up to ``max_parallel`` at once, so independent branches go in
parallel and a hierarchy takes the time of its longest chain. Every action has
a timeout (the kit's); when it runs out the action's coroutine is cancelled,
which kills the script's whole process group.

Every state change goes through :meth:`hakeeper.db.Lcd.set_state`, which
records it with its reason and logs it once. The engine reaches the LCD through
an :class:`~hakeeper.db.aio.Access` and awaits it: in hakeeperd the writer
thread (group commit) and the reader thread of :mod:`hakeeper.db.aio`, so that
no commit stalls the event loop. After a successful action the new state is
queued and the resources waiting on it start at once (the writer keeps the
order, so the LCD never shows a parent in service above a child that is not);
a failure's state is durable before the run goes on, and every state of a run
is durable when the run returns. Elsewhere (``perform_action`` alone, the guard)
the same calls run inline. A failed restore marks the
resource OSF, waits for what is still running, and removes again what this run
restored (parents first), so no resource is left ISP with a child down; the
report names the failed and the recovered resources.

Every remove run notes, for each resource it took out of service, how long
after the run's start its remove ended (:meth:`hakeeper.db.Lcd.record_measurements`,
kind ``remove``): ``hakeeper why`` compares it with the lease. When a node
loses quorum, :meth:`Engine.cut_then_remove_everything` removes the network
face first (:func:`plan.network_face`, kind ``cut``), then the rest in order.

**States stay true.** The engine knows which resources have an action running
(a restore or remove run holds all its members for the whole run; local
recovery holds what it repairs with a :class:`Hold`). A quickCheck takes a
:meth:`Engine.ticket` before it starts; its answer counts only if
:meth:`Engine.stale` finds no action running on the resource, none started
since the ticket, and the resource still ISP — so a check that saw a remove
half done never brings the resource back. After every run, and whenever it
records a resource leaving service, the engine takes out of service any ISP
resource above one that is not in service (:func:`plan.parents_to_stop`),
logging the inconsistency as an ALERT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hakeeper.db import Lcd, Resource, State, graph
from hakeeper.db.aio import Access, Inline
from hakeeper.db.model import as_reason
from hakeeper.errors import HakeeperError
from hakeeper.kits.base import Kit, Policy, Result
from hakeeper.kits.registry import Kits
from hakeeper.recovery import plan

logger = logging.getLogger(__name__)

DEFAULT_MAX_PARALLEL = 64


@dataclass
class Report:
    """What a restore or remove run did."""

    action: str
    target: str
    done: list[str] = field(default_factory=list)  # actions that ran and succeeded, in completion order
    unchanged: list[str] = field(default_factory=list)  # already in the wanted state, or ISU -> ISP
    failed: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # restored by this run, removed again after a failure
    corrected: list[str] = field(default_factory=list)  # ISP over a resource out of service: taken out too
    messages: list[str] = field(default_factory=list)
    policy: Policy | None = None
    started: float = field(default_factory=time.monotonic)  # when the run began (time.monotonic)
    finished: dict[str, float] = field(default_factory=dict)  # tag -> s after ``started`` its action ended (done)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        if self.ok:
            what = ", ".join(self.done) or "nothing to do"
            return f"{self.action} of {self.target} succeeded: {what}"
        text = f"{self.action} of {self.target} failed: {'; '.join(self.messages)}; failed: {', '.join(self.failed)}"
        if self.recovered:
            text += f"; taken out of service again: {', '.join(self.recovered)}"
        if self.corrected:
            text += f"; out of service as something below them is: {', '.join(self.corrected)}"
        return text


def told(report: Report) -> Report:
    """Log a run's one-sentence story (INFO when it went well, ERROR when not) and return it."""
    logger.log(logging.INFO if report.ok else logging.ERROR, "%s", report.summary())
    return report


async def call(kit: Kit, action: str, resource: Resource, args: tuple[str, ...] = ()) -> Result:
    """Run one kit action with its timeout; never raises for the action's own failures."""
    seconds = kit.timeout(action, resource)
    try:
        async with asyncio.timeout(seconds):
            if action == "restore":
                return await kit.restore(resource, args)
            if action == "remove":
                return await kit.remove(resource, args)
            if action == "quick_check":
                return await kit.quick_check(resource)
            if action == "recover":
                return await kit.recover(resource)
            if action == "validate":
                return await kit.validate(resource)
            if action == "delete":
                return await kit.delete(resource)
            return Result.failure(f"unknown action {action!r}", Policy.CONFIG)
    except TimeoutError:
        message = f"{action} of {resource.tag} timed out after {seconds:g} s"
        return Result.failed(message) if action == "quick_check" else Result.failure(message)
    except HakeeperError as exc:
        return Result.failure(f"{action} of {resource.tag}: {exc}", Policy.CONFIG)
    except Exception as exc:  # a kit's bug must not take the engine down
        logger.exception("%s of %s: the %s kit raised", action, resource.tag, kit.meta.name)
        return Result.failure(f"{action} of {resource.tag}: kit error {type(exc).__name__}: {exc}")


@dataclass
class Cut:
    """What :meth:`Engine.cut_then_remove_everything` did: the cut, then the rest, timed from one start."""

    cut: Report  # the network face, removed at once
    rest: Report  # everything else, parents first
    cut_took: float  # s from the start until the last address of the cut was removed (0.0: nothing to cut)
    took: float  # s from the start until everything was out of service

    @property
    def ok(self) -> bool:
        return self.cut.ok and self.rest.ok

    def finished(self) -> dict[str, float]:
        """tag -> s after the start its remove ended, cut and rest together."""
        return {**self.rest.finished, **self.cut.finished}


class Busy(HakeeperError):
    """The resource has an action running, or is no longer what a caller saw (see :meth:`Engine.hold`)."""


class Hold:
    """Resources marked as having an action running until :meth:`release` (or the end of a ``with``)."""

    def __init__(self, engine: Engine, tag: str, tags: frozenset[str]) -> None:
        self.engine = engine
        self.tag = tag
        self.tags = tags
        self._held = True
        self._since = engine._touched[tag]

    async def intact(self) -> str | None:
        """Re-check under :meth:`Engine.exclusive`: why ``tag`` is no longer as held (None: it is).

        A run that was queued for the engine before the hold may have
        acted on it meanwhile; a hold does not stop an administrator's run.
        """
        engine = self.engine
        tag = self.tag
        state = (await engine.db.read(lambda lcd: lcd.resource(tag))).state
        if engine._touched.get(tag) != self._since or engine._acting[tag] > 1:  # after the read: nothing in between
            return "an action ran on it meanwhile"
        return None if state is State.ISP else f"it is {state.name}, not ISP"

    def release(self) -> None:
        if self._held:
            self._held = False
            self.engine._end(self.tags)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Engine:
    """Runs restore and remove over hierarchies of one node's LCD, one run at a time."""

    def __init__(
        self, lcd: Lcd, kits: Kits, *, max_parallel: int = DEFAULT_MAX_PARALLEL, db: Access | None = None
    ) -> None:
        self.lcd = lcd  # for the callers' own synchronous reads; the engine itself goes through ``db``
        self.db: Access = db if db is not None else Inline(lcd)
        self.kits = kits
        self.max_parallel = max_parallel
        self._lock = asyncio.Lock()  # one restore or remove run at a time on this node
        self._owner: asyncio.Task[Any] | None = None  # the task holding _lock (it may nest runs)
        self._acting: Counter[str] = Counter()  # tag -> actions (runs, holds) holding it now
        self._tick = 0  # goes up whenever an action starts or ends on some resource
        self._touched: dict[str, int] = {}  # tag -> the tick of the last start or end of an action on it

    def kit_of(self, resource: Resource) -> Kit:
        return self.kits.get(resource.app, resource.type)

    # ------------------------------------------------------------------ which resources have an action running

    @property
    def held_by(self) -> str | None:
        """The name of the task that runs a restore, remove or recovery now, if any."""
        return self._owner.get_name() if self._owner is not None else None

    @property
    def busy(self) -> frozenset[str]:
        """The resources that have an action (restore, remove, recover, local recovery) running now."""
        return frozenset(tag for tag, count in self._acting.items() if count > 0)

    def ticket(self) -> int:
        """Take this before a quickCheck starts; :meth:`stale` says later whether its answer still counts."""
        return self._tick

    async def stale(self, tag: str, ticket: int) -> str | None:
        """Why a quickCheck of ``tag`` that started at ``ticket`` no longer speaks for it; None when it does.

        It does not when an action runs on ``tag`` now, one started or ended
        since the check started, or ``tag`` is no longer ISP.
        """
        resource = await self.db.read(lambda lcd: lcd.resource(tag))
        return self._stale(tag, ticket, resource.state)

    def _stale(self, tag: str, ticket: int, state: State) -> str | None:
        """:meth:`stale` with the state read: judged after the read, so an action started during it counts."""
        if self._acting[tag] > 0:
            return "an action runs on it"
        if self._touched.get(tag, -1) > ticket:
            return "an action ran on it while it was checked"
        if state is not State.ISP:
            return f"it is {state.name}, not ISP"
        return None

    async def hold(self, tag: str, ticket: int | None = None) -> Hold:
        """Check that ``tag`` is ISP and idle (and that a check at ``ticket`` still speaks for it), and hold it.

        Check and mark are one step: nothing else runs between them (the LCD is
        read first; an action that starts or ends during the read makes the
        check fail). Raises :class:`Busy` with the reason when the check fails.
        The hold keeps ``tag`` and everything above it until released.
        """
        ticket = self._tick if ticket is None else ticket
        resource, edges = await self.db.read(lambda lcd: (lcd.resource(tag), lcd.edges()))
        why = self._stale(tag, ticket, resource.state)
        if why is not None:
            raise Busy(f"{tag}: {why}")
        tags = frozenset({tag} | graph.ancestors(edges, tag))
        self._begin(tags)
        return Hold(self, tag, tags)

    def _begin(self, tags: Iterable[str]) -> None:
        self._tick += 1
        for tag in tags:
            self._acting[tag] += 1
            self._touched[tag] = self._tick

    def _end(self, tags: Iterable[str]) -> None:
        self._tick += 1
        for tag in tags:
            self._acting[tag] -= 1
            if self._acting[tag] <= 0:
                del self._acting[tag]
            self._touched[tag] = self._tick

    @contextlib.contextmanager
    def _holding(self, tags: Iterable[str]) -> Iterator[frozenset[str]]:
        held = frozenset(tags)
        self._begin(held)
        try:
            yield held
        finally:
            self._end(held)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One restore, remove or recovery at a time on this node; the task that holds it may run several."""
        me = asyncio.current_task()
        if me is not None and self._owner is me:
            yield
            return
        async with self._lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    async def restore(
        self, tag: str, *, reason: str, only: bool = False, args: tuple[str, ...] = (), kits: Kits | None = None
    ) -> Report:
        """Bring ``tag``'s hierarchy in service here, children first. ``kits``: other than the engine's own."""
        async with self.exclusive():
            return await self._restore(tag, reason=reason, only=only, args=args, kits=kits or self.kits)

    async def _restore(self, tag: str, *, reason: str, only: bool, args: tuple[str, ...], kits: Kits) -> Report:
        _, edges = await self.db.read(lambda lcd: (lcd.resource(tag), lcd.edges()))
        members = plan.restore_set(edges, tag, only=only)
        with self._holding(members):
            return await self._restore_members(members, edges, reason=reason, args=args, kits=kits, target=tag)

    async def restore_all_of(self, tags: set[str], *, reason: str, target: str) -> Report:
        """Bring exactly ``tags`` in service here in one run, children first (what local recovery took down)."""
        async with self.exclusive():
            edges = await self.db.read(Lcd.edges)
            with self._holding(tags):
                return await self._restore_members(set(tags), edges, reason=reason, args=(), kits=self.kits,
                                                   target=target)  # fmt: skip

    async def _restore_members(
        self, members: set[str], edges: list[graph.Edge], *, reason: str, args: tuple[str, ...], kits: Kits,
        target: str,
    ) -> Report:  # fmt: skip
        report = Report("restore", target)
        cycle = graph.cyclic(edges, members)
        if cycle:  # no order exists: refused before anything runs, never "nothing to do"
            self._cannot_order(report, cycle, sorted(graph.unordered(edges, members)), "nothing was restored")
            return told(report)
        restored: list[str] = []
        recorded: list[asyncio.Future[State]] = []

        async def one(resource: Resource) -> bool:
            if resource.state is State.ISP:
                report.unchanged.append(resource.tag)
                return True
            if resource.state is State.ISU:
                await self._set(resource.tag, State.ISP, reason)  # ISU -> ISP, nothing to run
                report.unchanged.append(resource.tag)
                return True
            result = await self._act(kits, "restore", resource, args)
            if result.ok:
                recorded.append(self._queue(resource.tag, State.ISP, reason))  # OSU/OSF -> ISP, parents go on
                restored.append(resource.tag)
                report.done.append(resource.tag)
                return True
            await self._set(resource.tag, State.OSF, result.message)  # -> OSF: restore failed
            self._fail(report, resource.tag, result)
            return False

        await self._walk(members, edges, one, children_first=True, recorded=recorded)
        if not report.ok and restored:
            undo = f"undone: restore of {', '.join(report.failed)} failed"
            await self._undo(kits, restored, edges, report, reason=undo)
        await self._correct(kits, report, members)
        return told(report)

    async def remove(
        self, tag: str, *, reason: str, only: bool = False, args: tuple[str, ...] = (), kits: Kits | None = None
    ) -> Report:
        """Take ``tag`` and everything above it out of service, parents first. ``kits``: other than the engine's own."""
        async with self.exclusive():
            return await self._remove(tag, reason=reason, only=only, args=args, kits=kits or self.kits)

    async def _remove(self, tag: str, *, reason: str, only: bool, args: tuple[str, ...], kits: Kits) -> Report:
        _, edges = await self.db.read(lambda lcd: (lcd.resource(tag), lcd.edges()))
        members = plan.remove_set(edges, tag, only=only)
        report = Report("remove", tag)
        with self._holding(members):
            await self._remove_members(kits, members, edges, report, reason=reason, args=args)
            await self._correct(kits, report, members)
        return told(report)

    async def remove_everything(self, *, reason: str) -> Report:
        """Take every resource in service on this node out of service in one run, parents first (lkstop)."""
        return await self.remove_all_of(None, reason=reason, target="every hierarchy")

    async def remove_all_of(self, tags: set[str] | None, *, reason: str, target: str) -> Report:
        """Take ``tags`` (None: every resource) out of service here in one run, parents first."""
        async with self.exclusive():
            edges, summaries = await self.db.read(lambda lcd: (lcd.edges(), lcd.summaries()))
            members = {tag for tag, _id, state, _reason in summaries if state is not State.OSU}
            if tags is not None:
                members &= tags
            report = Report("remove", target)
            with self._holding(members):
                await self._remove_members(self.kits, members, edges, report, reason=reason)
                await self._correct(self.kits, report, members)
            return told(report)

    async def cut_then_remove_everything(
        self, *, reason: str, after_cut: Callable[[Report, float], None] | None = None
    ) -> Cut:
        """Quorum lost: cut every virtual address in service here at once, then remove the rest, parents first.

        The addresses are usually children of the applications: cutting them first
        is a deliberate exception to "parents first", so that no client reaches this
        node within milliseconds, however long the applications take to stop. An
        address cut here is OSU (with ``reason``) and is not removed again; one whose
        remove failed (OSF) is tried once more in its place among the rest.
        ``after_cut`` is called with the cut's report and duration before the rest begins.
        """
        async with self.exclusive():
            started = time.monotonic()
            edges, resources = await self.db.read(lambda lcd: (lcd.edges(), lcd.resources()))
            face = plan.network_face(resources)
            with self._holding({r.tag for r in resources if r.state is not State.OSU}):
                cut = Report("cut", "the network face", started=started)
                # No edges: every address at once, whatever depends on what; a failed one stops none of the others.
                await self._remove_members(self.kits, face, [], cut, reason=f"{reason}: clients cut first", stop=False)
                cut_took = max(cut.finished.values(), default=0.0)
                if face:
                    told(cut)
                if after_cut is not None:
                    after_cut(cut, cut_took)
                rest = Report("remove", "every hierarchy", started=started)
                members = {r.tag for r in resources if r.state is not State.OSU} - set(cut.done)
                await self._remove_members(self.kits, members, edges, rest, reason=reason)
            told(rest)
            await self._note("cut", cut.finished)
            return Cut(cut, rest, cut_took, time.monotonic() - started)

    async def cut_network_face(self, *, reason: str) -> Report:
        """Remove every virtual address in service here at once, nothing else (the guard's cut, see guard.py)."""
        async with self.exclusive():
            started = time.monotonic()
            face = plan.network_face(await self.db.read(Lcd.resources))
            cut = Report("cut", "the network face", started=started)
            with self._holding(face):
                await self._remove_members(self.kits, face, [], cut, reason=f"{reason}: clients cut", stop=False)
            await self._note("cut", cut.finished)  # the lease check (why, lkstart) learns the guard's cuts too
            return told(cut) if face else cut

    async def mark(self, tag: str, state: State, reason: str) -> State:
        """Record ``tag``'s new state (outside a run: local recovery's OSF); returns the previous one.

        A resource that leaves service this way may leave ISP resources above
        it: the caller then runs :meth:`correct`.
        """
        return await self._set(tag, state, reason)

    async def _set(self, tag: str, state: State, reason: str) -> State:
        """Record a state change (durable when this returns; in hakeeperd, committed with others queued with it)."""
        why = as_reason(reason)
        return await self.db.set_state(tag, state, why)

    def _queue(self, tag: str, state: State, reason: str) -> asyncio.Future[State]:
        """Record a state change after an action succeeded, without waiting for it (see :meth:`_walk`)."""
        return self.db.queue_state(tag, state, as_reason(reason))

    async def correct(self, *, reasons: Mapping[str, str] | None = None, alert: bool = True) -> Report:
        """Take out of service every ISP resource above one that is not in service (:func:`plan.parents_to_stop`).

        ``reasons``: the state reason of each one (default: which resource below it is down).
        """
        async with self.exclusive():
            report = Report("remove", "resources above one out of service")
            await self._correct(self.kits, report, None, reasons=reasons, alert=alert)
            report.done, report.corrected = report.corrected, []
            return report

    async def _correct(
        self,
        kits: Kits,
        report: Report,
        scope: set[str] | None,
        *,
        reasons: Mapping[str, str] | None = None,
        alert: bool = True,
    ) -> None:
        """The rule that states stay true: no ISP resource over one not in service. Adds to ``report``.

        ``scope``: the resources a run acted on (only what is above them is judged); None: all.
        """
        edges, summaries = await self.db.read(lambda lcd: (lcd.edges(), lcd.summaries()))
        states = {tag: state for tag, _id, state, _reason in summaries}
        above = plan.parents_to_stop(edges, states, below=scope)
        if not above:
            return
        why = {
            tag: (reasons or {}).get(tag) or f"{below} below it is {states.get(below, State.ILLSTATE).name}"
            for tag, below in above.items()
        }
        for tag, below in sorted(above.items()):
            (logger.error if alert else logger.warning)(
                "%s%s is ISP but %s below it is %s: taking %s out of service",
                "ALERT: " if alert else "", tag, below, states.get(below, State.ILLSTATE).name, tag,
            )  # fmt: skip
        fix = Report("remove", report.target)
        with self._holding(above):
            await self._remove_members(kits, set(above), edges, fix, reason="", reasons=why)
        report.corrected += fix.done + fix.unchanged
        if fix.failed:
            report.failed += fix.failed
            report.messages += fix.messages
            report.policy = report.policy or fix.policy

    async def _remove_members(
        self,
        kits: Kits,
        members: set[str],
        edges: list[graph.Edge],
        report: Report,
        *,
        reason: str,
        args: tuple[str, ...] = (),
        stop: bool = True,
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        recorded: list[asyncio.Future[State]] = []

        async def one(resource: Resource) -> bool:
            if resource.state is State.OSU:
                report.unchanged.append(resource.tag)
                return True
            result = await self._act(kits, "remove", resource, args)
            if result.ok:
                report.finished[resource.tag] = time.monotonic() - report.started
                why = (reasons or {}).get(resource.tag, reason)
                recorded.append(self._queue(resource.tag, State.OSU, why))  # ISP/ISU/OSF -> OSU, children go on
                report.done.append(resource.tag)
                return True
            await self._set(resource.tag, State.OSF, result.message)  # -> OSF: remove failed
            self._fail(report, resource.tag, result)
            return False

        stuck = graph.unordered(edges, members, children_first=False)
        if stuck:  # the rest is removed, parents first; what waits on a cycle stays, and the run fails
            self._cannot_order(report, graph.cyclic(edges, members), sorted(stuck), "they were left as they are")
            members = members - stuck
        await self._walk(members, edges, one, children_first=False, stop=stop, recorded=recorded)
        await self._note("remove", report.finished)

    async def _note(self, kind: str, seconds: dict[str, float]) -> None:
        """Keep how long the removes took (for ``hakeeper why``); failing to note it fails nothing."""
        if not seconds:
            return
        noted = dict(seconds)
        try:
            await self.db.write(lambda lcd: lcd.record_measurements(kind, noted))
        except HakeeperError as exc:
            logger.warning("could not note how long %s took: %s", kind, exc)

    async def _undo(
        self, kits: Kits, restored: list[str], edges: list[graph.Edge], report: Report, reason: str
    ) -> None:
        undo = Report("remove", report.target)
        await self._remove_members(kits, set(restored), edges, undo, reason=reason)
        report.recovered = undo.done
        if undo.failed:
            report.failed += undo.failed
            report.messages += undo.messages

    @staticmethod
    def _cannot_order(report: Report, cycle: list[str], stuck: list[str], outcome: str) -> None:
        """A run over a dependency cycle (an LCD damaged outside hakeeper): a configuration error naming it."""
        report.failed += stuck
        report.messages.append(
            f"dependency cycle among {', '.join(cycle)}: no order can {report.action} {', '.join(stuck)}, "
            f"so {outcome}; remove one of these dependencies (see: dep_list, dep_remove)"
        )
        report.policy = report.policy or Policy.CONFIG

    @staticmethod
    def _fail(report: Report, tag: str, result: Result) -> None:
        report.failed.append(tag)
        report.messages.append(result.message)
        if report.policy is None:
            report.policy = result.policy

    @staticmethod
    async def _act(kits: Kits, action: str, resource: Resource, args: tuple[str, ...]) -> Result:
        try:
            kit = kits.get(resource.app, resource.type)
        except HakeeperError as exc:
            return Result.failure(f"{action} of {resource.tag}: {exc}", Policy.CONFIG)
        return await call(kit, action, resource, args)

    async def _walk(
        self,
        members: set[str],
        edges: list[graph.Edge],
        one: Callable[[Resource], Awaitable[bool]],
        *,
        children_first: bool,
        stop: bool = True,
        recorded: list[asyncio.Future[State]],
    ) -> None:
        """Run ``one`` on every member once everything it waits for is done; stop starting new ones on failure.

        A resource waits for its children (restore) or its parents (remove). ``stop=False``:
        a failure does not keep the others from starting.

        A successful action's new state is queued (``recorded``), not awaited,
        before the resources waiting on it start: the writer makes changes in the
        order they were queued, so the LCD never shows a parent in service above
        a child that is not (nor, removing, a child out above a parent in), and
        the next level does not wait for a commit. Every recorded change is
        durable, or its error raised, when this returns.
        """
        inner = [(p, c) for p, c in edges if p in members and c in members]
        waits_on = graph.children_of(inner) if children_first else graph.parents_of(inner)
        unblocks = graph.parents_of(inner) if children_first else graph.children_of(inner)
        pending = {tag: len(waits_on.get(tag, ())) for tag in members}
        resources = {r.tag: r for r in await self.db.read(Lcd.resources) if r.tag in members}
        gate = asyncio.Semaphore(self.max_parallel)

        async def guarded(tag: str) -> bool:
            async with gate:
                return await one(resources[tag])

        running: dict[asyncio.Task[bool], str] = {}
        failed = False

        def start(tags: list[str]) -> None:
            for tag in sorted(tags):
                running[asyncio.ensure_future(guarded(tag))] = tag

        start([tag for tag, count in pending.items() if count == 0])
        try:
            while running:
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                ready: list[str] = []
                for task in finished:
                    tag = running.pop(task)
                    if not task.result():
                        failed = stop
                        continue
                    for nxt in unblocks.get(tag, ()):
                        pending[nxt] -= 1
                        if pending[nxt] == 0:
                            ready.append(nxt)
                if not failed:
                    start(ready)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            outcomes = await asyncio.gather(*recorded, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
