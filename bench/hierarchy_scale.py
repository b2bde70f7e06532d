"""Scale benchmark of the recovery engine: a 500-resource hierarchy, 50 independent branches x 10 levels.

Every action of the 500 resources sleeps 100 ms and succeeds, so a perfect
engine restores the hierarchy in the time of its longest chain, the critical
path: 10 actions = 1.0 s. The figure is ``restore_vs_critical_path`` = restore
time / 1.0 s (target from issue 12: <= 1.05), against a baseline taken in the
same process: the same engine with ``max_parallel=1``, one action at a time.

The shape. The 50 branches are chains of 10 ``bench/sleep`` resources (level 0
at the bottom, level 9 on top) that share nothing with each other. To make them
one hierarchy that one engine run restores and one run removes, every level-0
resource depends on one shared ``bench/base`` resource (think of a volume or an
address all the branches need) whose actions take no time:

* ``restore base`` brings in service the base, everything above it and
  everything those need, i.e. all 501 resources; ``remove base`` takes out of
  service the base and everything above it, parents first, again all 501. A
  joining resource on top instead would need 50 remove runs, one per branch,
  because a remove only takes out what depends on its target.
* The base's actions are instant, so the critical path stays exactly 10 x 100
  ms = 1.0 s and every one of the 500 resources of the issue sleeps 100 ms. The
  base still costs one kit call and one state change, counted in the measured
  time like any other engine overhead.

What is measured, as medians of ``--reps`` runs (3; 1 with ``--quick``):

* the restore of the whole hierarchy with the engine's default ``max_parallel``,
  then its remove;
* the serial baseline: one restore with ``max_parallel=1``. Over the whole
  hierarchy that is about 50 s, run once by default; ``--serial-branches N``
  (5 with ``--quick``) runs it instead on a hierarchy of the same shape with N
  branches, in its own state directory, and scales the time linearly to 50
  branches (one action after the other: the time is proportional to the number
  of actions), saying so;
* the engine's overhead per action: (restore time - critical path) / actions,
  how the LCD was written, and the latency between a resource's last child
  finishing and its own restore starting.

The engine reaches the LCD as hakeeperd's does: through :mod:`hakeeper.db.aio`,
its state changes committed by the writer thread (changes queued together in
one transaction: the grouping is printed) and its reads on the reader thread.
``--inline`` runs them on the event loop instead, as hakeeperd did before (and
``perform_action`` without hakeeperd still does): each state change is then a
durable transaction that blocks the loop, and the time spent in
:meth:`Lcd.set_state` is printed.

The benchmark checks that the figures mean something and exits 1 if not: every
run succeeds, after a restore every resource is ISP and after a remove OSU,
every action ran once, children were restored before their parents and parents
removed before their children (the kit records when each action started and
finished), and the baseline really ran one action at a time. Whether the target
is met or not, it exits 0.

Run from the repository root: ``.venv/bin/python bench/hierarchy_scale.py
[--quick]``. The state directories are made in a temporary directory (``--dir``
chooses where: the file system decides the cost of each commit's fsync) and
removed at the end. The last line is ``restore_vs_critical_path=<value>``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakeeper.db import Lcd, Resource, State
from hakeeper.db.aio import Access, Inline, Threaded
from hakeeper.kits.base import Created, Kit, KitContext, KitMeta, Result
from hakeeper.kits.registry import Kits
from hakeeper.recovery.engine import DEFAULT_MAX_PARALLEL, Engine, Report

BRANCHES = 50
LEVELS = 10
ACTION_S = 0.1
CRITICAL_PATH_S = LEVELS * ACTION_S  # the base is instant: the longest chain is 10 sleeping actions
TARGET = 1.05  # issue 12 (it was 1.5 before the LCD left the event loop)
NODE = "node1"
APP = "bench"
BASE = "base"


class BenchError(Exception):
    """The run did not do what the figures assume: they would be meaningless."""


# ---------------------------------------------------------------------- the kits


@dataclass(frozen=True)
class Span:
    """One action as the kit saw it: when it started and finished (perf_counter seconds)."""

    action: str
    tag: str
    start: float
    end: float


@dataclass
class Recorder:
    """What the kits did, shared by both kits so that orders can be checked across them."""

    spans: list[Span] = field(default_factory=list)


class TimedKit(Kit):
    """A kit whose restore and remove sleep ``seconds`` and succeed; quick_check says running."""

    def __init__(self, ctx: KitContext, meta: KitMeta, seconds: float, recorder: Recorder) -> None:
        super().__init__(ctx)
        self.meta = meta
        self.seconds = seconds
        self.recorder = recorder

    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        return Created(id or tag, "")

    async def _act(self, action: str, tag: str) -> Result:
        start = time.perf_counter()
        await asyncio.sleep(self.seconds)
        self.recorder.spans.append(Span(action, tag, start, time.perf_counter()))
        return Result.success()

    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        return await self._act("restore", resource.tag)

    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        return await self._act("remove", resource.tag)

    async def quick_check(self, resource: Resource) -> Result:
        return Result.running()


SLEEP_META = KitMeta(APP, "sleep", f"benchmark kit: restore and remove sleep {ACTION_S:g} s and succeed")
BASE_META = KitMeta(APP, "base", "benchmark kit: restore and remove succeed at once")


def bench_kits(lcd: Lcd, recorder: Recorder) -> Kits:
    kits = Kits(KitContext(lcd.path.parent, lcd.local_node))
    kits.add(TimedKit(kits.ctx, SLEEP_META, ACTION_S, recorder))
    kits.add(TimedKit(kits.ctx, BASE_META, 0.0, recorder))
    return kits


class TimedLcd(Lcd):
    """The LCD, counting the time spent in :meth:`set_state` (it runs on the event loop and blocks it)."""

    def __init__(self, path: Path, *, actor: str | None = None, node: str | None = None) -> None:
        super().__init__(path, actor=actor, node=node)
        self.set_state_calls = 0
        self.set_state_s = 0.0

    def set_state(self, tag: str, state: State, reason: str = "") -> State:
        started = time.perf_counter()
        try:
            return super().set_state(tag, state, reason)
        finally:
            self.set_state_s += time.perf_counter() - started
            self.set_state_calls += 1

    def reset_counters(self) -> None:
        self.set_state_calls = 0
        self.set_state_s = 0.0


# ---------------------------------------------------------------------- the hierarchy


def tag_of(branch: int, level: int) -> str:
    return f"b{branch:02d}-l{level}"


def build(lcd: Lcd, branches: int) -> list[tuple[str, str]]:
    """Create the base and ``branches`` chains of LEVELS above it; returns the edges (parent, child)."""
    lcd.create_resource(BASE, f"/bench/{BASE}", APP, BASE_META.type, ensure_type=True)
    edges: list[tuple[str, str]] = []
    for branch in range(branches):
        for level in range(LEVELS):
            tag = tag_of(branch, level)
            lcd.create_resource(tag, f"/bench/{tag}", APP, SLEEP_META.type, ensure_type=True)
            edges.append((tag, tag_of(branch, level - 1) if level else BASE))
    for parent, child in edges:
        lcd.create_dependency(parent, child)
    return edges


# ---------------------------------------------------------------------- checks


def check_run(
    lcd: Lcd, report: Report, spans: list[Span], edges: list[tuple[str, str]], action: str, *, serial: bool = False
) -> None:
    """Raise BenchError unless the run succeeded, left every resource in its state, ran in dependency order."""
    if not report.ok:
        raise BenchError(f"the {action} failed at {', '.join(report.failed)}: {'; '.join(report.messages)}")
    wanted = State.ISP if action == "restore" else State.OSU
    wrong = [f"{r.tag}={r.state.name}" for r in lcd.resources() if r.state is not wanted]
    if wrong:
        raise BenchError(f"after the {action}, {len(wrong)} resources are not {wanted.name}: {', '.join(wrong[:5])}")
    tags = {r.tag for r in lcd.resources()}
    by_tag = {s.tag: s for s in spans}
    if len(spans) != len(tags) or set(by_tag) != tags or any(s.action != action for s in spans):
        raise BenchError(f"the {action} ran {len(spans)} kit actions for {len(tags)} resources, not one each")
    for parent, child in edges:
        first, then = (by_tag[child], by_tag[parent]) if action == "restore" else (by_tag[parent], by_tag[child])
        if then.start < first.end:
            raise BenchError(f"the {action} of {then.tag} started before that of {first.tag} had finished")
    if serial:
        ordered = sorted(spans, key=lambda s: s.start)
        for before, after in itertools.pairwise(ordered):
            if after.start < before.end:
                raise BenchError(f"max_parallel=1, yet {before.tag} and {after.tag} ran at the same time")


def start_latencies(spans: list[Span], edges: list[tuple[str, str]]) -> list[float]:
    """For each resource with children: from its last child's restore finishing to its own restore starting."""
    by_tag = {s.tag: s for s in spans}
    last_child: dict[str, float] = {}
    for parent, child in edges:
        last_child[parent] = max(last_child.get(parent, 0.0), by_tag[child].end)
    return [by_tag[parent].start - end for parent, end in last_child.items()]


# ---------------------------------------------------------------------- measurement


@dataclass
class Run:
    seconds: float
    set_state_s: float
    set_state_calls: int
    latencies: list[float]


async def timed(
    lcd: TimedLcd, engine: Engine, recorder: Recorder, edges: list[tuple[str, str]], action: str, *, serial: bool
) -> Run:
    """One restore or remove of the whole hierarchy (from the base), checked."""
    recorder.spans.clear()
    lcd.reset_counters()
    run = engine.restore if action == "restore" else engine.remove
    started = time.perf_counter()
    report = await run(BASE, reason=f"bench {action}")
    seconds = time.perf_counter() - started
    spans = list(recorder.spans)
    check_run(lcd, report, spans, edges, action, serial=serial)
    latencies = start_latencies(spans, edges) if action == "restore" else []
    return Run(seconds, lcd.set_state_s, lcd.set_state_calls, latencies)


async def sleep_floor() -> float:
    """The best any asyncio engine can do here: the branches as bare chains of sleeps, all at once."""

    async def chain() -> None:
        for _ in range(LEVELS):
            await asyncio.sleep(ACTION_S)

    started = time.perf_counter()
    await asyncio.gather(*(chain() for _ in range(BRANCHES)))
    return time.perf_counter() - started


def open_lcd(root: Path) -> TimedLcd:
    root.mkdir(mode=0o700)
    return TimedLcd(root / "lcd.sqlite", actor="bench", node=NODE)


def access(lcd: Lcd, inline: bool) -> Access:
    """How the engine reaches the LCD: hakeeperd's threads (started here), or inline on the loop."""
    if inline:
        return Inline(lcd)
    db = Threaded(lcd, busy_timeout=2.0, actor="bench")
    db.start()
    return db


async def close(db: Access) -> None:
    if isinstance(db, Threaded):
        await db.aclose()


async def measure(tmp: Path, reps: int, serial_branches: int, inline: bool = False) -> float:
    recorder = Recorder()
    lcd = open_lcd(tmp / "state")
    db: Access = Inline(lcd)
    try:
        started = time.perf_counter()
        edges = build(lcd, BRANCHES)
        resources = len(lcd.resources())
        print(
            f"built {BRANCHES} branches x {LEVELS} levels = {BRANCHES * LEVELS} bench/sleep resources "
            f"({ACTION_S * 1000:g} ms per action) on one instant bench/base: {resources} resources, "
            f"{len(edges)} dependencies, in {time.perf_counter() - started:.1f} s"
        )
        kits = bench_kits(lcd, recorder)
        db = access(lcd, inline)
        engine = Engine(lcd, kits, db=db)
        restores: list[Run] = []
        removes: list[Run] = []
        for _ in range(reps):
            restores.append(await timed(lcd, engine, recorder, edges, "restore", serial=False))
            removes.append(await timed(lcd, engine, recorder, edges, "remove", serial=False))

        floor_s = await sleep_floor()
        if serial_branches == BRANCHES:
            serial = await timed(lcd, Engine(lcd, kits, max_parallel=1, db=db), recorder, edges, "restore", serial=True)
            await timed(lcd, engine, recorder, edges, "remove", serial=False)
            serial_actions = resources
        else:
            small = open_lcd(tmp / "serial")
            try:
                small_edges = build(small, serial_branches)
                serial_actions = len(small.resources())
                small_db = access(small, inline)
                small_engine = Engine(small, bench_kits(small, recorder), max_parallel=1, db=small_db)
                try:
                    serial = await timed(small, small_engine, recorder, small_edges, "restore", serial=True)
                finally:
                    await close(small_db)
            finally:
                small.close()
    finally:
        await close(db)
        lcd.close()

    restore_s = statistics.median(r.seconds for r in restores)
    scale = BRANCHES / serial_branches
    serial_s = serial.seconds * scale
    print(
        f"engine max_parallel={DEFAULT_MAX_PARALLEL} (default), median of {reps} run(s), "
        f"critical path {LEVELS} x {ACTION_S * 1000:g} ms = {CRITICAL_PATH_S:.1f} s"
    )
    print(f"  restore             {_line([r.seconds for r in restores])}")
    print(f"  remove              {_line([r.seconds for r in removes])}")
    if scale == 1:
        print(f"  serial restore      {serial.seconds:7.3f} s  (max_parallel=1, the whole hierarchy, once)")
    else:
        print(
            f"  serial restore      {serial_s:7.3f} s  (max_parallel=1, estimated: {serial.seconds:.3f} s measured on "
            f"{serial_branches} branches, {serial_actions} resources, x {scale:g})"
        )
    print(f"  speed-up            {serial_s / restore_s:7.1f} x  (serial restore / restore)")
    print(
        f"  overhead per action {(restore_s - CRITICAL_PATH_S) / resources * 1000:7.3f} ms  "
        f"((restore - critical path) / {resources} actions)"
    )
    serial_overhead = serial.seconds / serial_actions - ACTION_S * (serial_actions - 1) / serial_actions
    print(f"  serial overhead     {serial_overhead * 1000:7.3f} ms per action  (serial restore / actions - sleep)")
    print(
        f"  floor               {floor_s:7.3f} s  ({BRANCHES} concurrent chains of {LEVELS} bare asyncio.sleep"
        f"({ACTION_S:g}), no engine, no LCD: {floor_s / CRITICAL_PATH_S:.3f} x the critical path)"
    )
    middle = sorted(restores, key=lambda r: r.seconds)[(reps - 1) // 2]  # the median run (the lower one if even)
    if isinstance(db, Threaded):
        stats = db.stats
        print(
            f"  LCD writer thread   {stats.changes} changes in {stats.commits} transactions over every run "
            f"({stats.changes / max(stats.commits, 1):.1f} per commit, largest group {stats.largest}); "
            "the event loop never blocked on a commit"
        )
    else:
        print(
            f"  in Lcd.set_state    {middle.set_state_s:7.3f} s  ({middle.set_state_calls} calls, "
            f"{middle.set_state_s / middle.set_state_calls * 1e6:.0f} us each, the event loop blocked) in a restore "
            f"of {middle.seconds:.3f} s (--inline)"
        )
    latencies = sorted(middle.latencies)
    print(
        f"  start latency       {statistics.median(latencies) * 1000:7.3f} ms median, "
        f"{latencies[int(0.99 * (len(latencies) - 1))] * 1000:.3f} ms p99, {latencies[-1] * 1000:.3f} ms max  "
        "(last child finished -> parent's restore started)"
    )
    return restore_s / CRITICAL_PATH_S


def _line(values: list[float]) -> str:
    return (
        f"{statistics.median(values):7.3f} s  (min {min(values):.3f}, max {max(values):.3f}, n={len(values)}; "
        f"{statistics.median(values) / CRITICAL_PATH_S:.3f} x the critical path)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one run, serial baseline on 5 branches (~10 s)")
    parser.add_argument("--reps", type=int, help="restore and remove runs (default 3, 1 with --quick)")
    parser.add_argument(
        "--serial-branches",
        type=int,
        help=f"branches of the serial baseline (default {BRANCHES}, the whole hierarchy, ~50 s; 5 with --quick); "
        "fewer are scaled linearly",
    )
    parser.add_argument("--dir", help="where to make the temporary state directories (default: the system's)")
    parser.add_argument(
        "--inline", action="store_true", help="write the LCD on the event loop (hakeeperd before db.aio), to compare"
    )
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    serial_branches = args.serial_branches or (5 if args.quick else BRANCHES)
    if reps < 1 or not 1 <= serial_branches <= BRANCHES:
        parser.error(f"--reps must be at least 1 and --serial-branches between 1 and {BRANCHES}")

    with tempfile.TemporaryDirectory(prefix="hakeeper-bench-", dir=args.dir) as tmp:
        print(f"hierarchy scale benchmark: python {sys.version.split()[0]}, state directories in {tmp}")
        try:
            ratio = asyncio.run(measure(Path(tmp), reps, serial_branches, args.inline))
        except BenchError as exc:
            print(f"hierarchy_scale: {exc}; the figures would be meaningless", file=sys.stderr)
            return 1
    print(f"target restore <= {TARGET} x the critical path: {'met' if ratio <= TARGET else 'NOT met'} ({ratio:.3f})")
    print(f"restore_vs_critical_path={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
