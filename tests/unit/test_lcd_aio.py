"""hakeeperd's LCD off the event loop (hakeeper.db.aio): group commit, a caller's own error, locks, death."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hakeeper.db import Lcd, Resource, State
from hakeeper.db.aio import LcdWriterDied, Threaded
from hakeeper.db.settings import SETTINGS, daemon_busy_timeout, defaults
from hakeeper.db.store import LcdBusy
from hakeeper.errors import NotFound
from hakeeper.kits.base import KitContext, Result
from hakeeper.kits.registry import Kits
from hakeeper.recovery.engine import Engine
from tests.fakes import FakeKit, build

T = TypeVar("T")
TAGS = [f"r{i}" for i in range(6)]


def with_facade(root: Path, scenario: Callable[[Threaded], Awaitable[T]], **kw: Any) -> T:
    """Run ``scenario`` with a started facade over ``root``'s LCD, closed afterwards whatever happens."""

    async def main() -> T:
        lcd = Lcd.open(root, actor="hakeeperd")
        db = Threaded(lcd, busy_timeout=kw.pop("busy_timeout", 2.0), **kw)
        db.start()
        try:
            return await scenario(db)
        finally:
            await db.aclose()
            lcd.close()

    return asyncio.run(main())


def held_writer(db: Threaded) -> tuple[threading.Event, Awaitable[bool]]:
    """Keep the writer thread busy until the event is set, so that what is queued meanwhile is grouped."""
    release = threading.Event()
    return release, asyncio.ensure_future(db.write(lambda _lcd: release.wait(30)))


def to(tag: str, state: State) -> Callable[[Lcd], State]:
    """The change that sets ``tag``'s state."""
    return lambda lcd: lcd.set_state(tag, state, "test")


def changes(root: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(root / "lcd.sqlite")) as conn:
        return [(op, args) for op, args in conn.execute("SELECT op, args FROM changes WHERE op = 'set_state'")]


def test_changes_queued_together_commit_together_each_its_own_record(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=tuple(TAGS))

    async def scenario(db: Threaded) -> list[State]:
        release, busy = held_writer(db)
        states = [asyncio.ensure_future(db.change(to(t, State.ISP))) for t in TAGS]
        await asyncio.sleep(0)  # every change is queued behind the held writer
        release.set()
        await busy
        olds = await asyncio.gather(*states)
        assert db.stats.commits == 1, "ONE transaction for the six changes queued behind the held writer"
        assert db.stats.largest == len(TAGS)
        return olds

    olds = with_facade(root, scenario)
    assert olds == [State.OSU] * len(TAGS), "each caller gets its own result"
    assert len(changes(root)) == len(TAGS), "each change has its own change-log record"
    with Lcd.open(root) as lcd:
        assert {r.tag: r.state for r in lcd.resources()} == dict.fromkeys(TAGS, State.ISP)


def test_a_failing_change_fails_alone_and_only_its_caller_learns_it(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=tuple(TAGS))

    async def scenario(db: Threaded) -> list[object]:
        release, busy = held_writer(db)
        tags = [*TAGS[:3], "missing", *TAGS[3:]]
        queued = [asyncio.ensure_future(db.change(to(t, State.ISP))) for t in tags]
        await asyncio.sleep(0)
        release.set()
        await busy
        return await asyncio.gather(*queued, return_exceptions=True)

    outcomes = with_facade(root, scenario)
    assert isinstance(outcomes[3], NotFound) and "missing" in str(outcomes[3])
    assert [o for i, o in enumerate(outcomes) if i != 3] == [State.OSU] * len(TAGS)
    assert len(changes(root)) == len(TAGS), "the failed change left no record, the others all did"


def test_a_change_waits_for_another_writer_then_is_made(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=("web",))

    async def scenario(db: Threaded) -> State:
        other = sqlite3.connect(root / "lcd.sqlite", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a command holds the write lock
        change = asyncio.ensure_future(db.change(lambda w: w.set_state("web", State.ISP, "up")))
        for _ in range(200):  # until the writer has given up once and tries again
            if db.stats.busy_retries:
                break
            await asyncio.sleep(0.05)
        assert db.stats.busy_retries, "the writer met the lock"
        assert not change.done()
        other.execute("ROLLBACK")
        other.close()
        return await change

    assert with_facade(root, scenario, busy_timeout=0.05) is State.OSU
    with Lcd.open(root) as lcd:
        assert lcd.resource("web").state is State.ISP


def test_state_changes_queued_together_are_made_together_and_a_bad_one_fails_alone(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=tuple(TAGS))

    async def scenario(db: Threaded) -> list[object]:
        release, busy = held_writer(db)
        wanted = [(t, State.ISP) for t in TAGS[:3]] + [("missing", State.ISP), (TAGS[0], State.OSF)]
        queued = [asyncio.ensure_future(db.set_state(t, s, "test")) for t, s in wanted]
        await asyncio.sleep(0)
        release.set()
        await busy
        outcomes: list[object] = list(await asyncio.gather(*queued, return_exceptions=True))
        assert db.stats.commits == 1
        return outcomes

    outcomes = with_facade(root, scenario)
    assert outcomes[:3] == [State.OSU] * 3 and outcomes[4] is State.ISP, "the second change of r0 saw the first"
    assert isinstance(outcomes[3], NotFound)
    assert len(changes(root)) == 4
    with Lcd.open(root) as lcd:
        assert [lcd.resource(t).state for t in TAGS[:3]] == [State.OSF, State.ISP, State.ISP]


def test_a_lock_held_past_the_patience_is_a_clear_error_and_nothing_is_written(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=("web",))

    async def scenario(db: Threaded) -> None:
        other = sqlite3.connect(root / "lcd.sqlite", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LcdBusy, match=r"busy.*not recorded"):
                await db.change(lambda w: w.set_state("web", State.ISP, "up"))
        finally:
            other.execute("ROLLBACK")
            other.close()

    with_facade(root, scenario, busy_timeout=0.05, patience=0.2)
    with Lcd.open(root) as lcd:
        assert lcd.resource("web").state is State.OSU
    assert changes(root) == []


def test_a_change_whose_caller_is_cancelled_is_made_all_the_same(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=("web",))

    async def scenario(db: Threaded) -> None:
        release, busy = held_writer(db)
        change = asyncio.ensure_future(db.change(lambda w: w.set_state("web", State.ISP, "restored")))
        await asyncio.sleep(0)
        change.cancel()  # e.g. a run cancelled at shutdown, after its restore action succeeded
        release.set()
        await busy
        await db.write(lambda _lcd: None)  # the writer is serial: the change came before this
        assert change.cancelled()
        assert await db.read(lambda r: r.resource("web").state) is State.ISP

    with_facade(root, scenario)


def test_reads_see_what_an_awaited_change_wrote(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=("web",))

    async def scenario(db: Threaded) -> list[State]:
        seen = []
        for state in (State.ISP, State.OSU, State.OSF):
            await db.change(to("web", state))
            seen.append(await db.read(lambda r: r.resource("web").state))
        return seen

    assert with_facade(root, scenario) == [State.ISP, State.OSU, State.OSF]


def test_the_writer_s_death_is_reported_and_later_changes_fail(root: Path) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [], extra=("web",))

    def bug(_lcd: Lcd) -> None:
        raise SystemExit("a bug in the writer itself")  # not a change's own error: it ends the thread

    async def scenario(db: Threaded) -> None:
        watch = asyncio.ensure_future(db.watch())
        with pytest.raises(LcdWriterDied, match="died making this change"):
            await db.write(bug)
        with pytest.raises(LcdWriterDied, match="died"):
            await watch
        assert not db.alive
        with pytest.raises(LcdWriterDied):
            await db.change(lambda w: w.set_state("web", State.ISP, "up"))

    with_facade(root, scenario)


def test_hakeeperd_s_busy_timeout_stays_below_guard_timeout_over_its_whole_range() -> None:
    setting = SETTINGS["guard_timeout"]
    assert setting.low is not None and setting.high is not None
    values = defaults()
    for guard in (setting.low, 2.0, setting.default, 10.0, setting.high):
        values["guard_timeout"] = guard
        assert 0 < daemon_busy_timeout(values) < guard


CHAIN = [f"c{i}" for i in range(5)]  # c0 at the bottom, c4 on top


def committed_states(root: Path) -> dict[str, State]:
    """What a fresh connection reads: what is committed."""
    with closing(sqlite3.connect(root / "lcd.sqlite")) as conn:
        return {tag: State(state) for tag, state in conn.execute("SELECT tag, state FROM resources")}


def test_a_level_goes_on_before_the_commit_below_it_yet_the_lcd_never_shows_a_parent_in_above_a_child_out(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine queues a state and starts the next level; the writer's order keeps every commit consistent.

    Each commit is slowed (20 ms) and checked, as it lands, from a fresh
    connection: restoring, no resource ISP above one that is not; removing, no
    resource OSU below one that is still ISP. And the pipelining happened: some
    restore started while the state of the child it waited on was not committed yet.
    """
    with Lcd.open(root) as lcd:
        build(lcd, list(itertools.pairwise(reversed(CHAIN))))  # (c4, c3), (c3, c2)...: parent, child
    real_group = Lcd.group
    broken: list[str] = []

    def slow_checked_group(self: Lcd, works: Any) -> Any:
        time.sleep(0.02)
        outcome = real_group(self, works)
        states = committed_states(root)
        for parent, child in itertools.pairwise(reversed(CHAIN)):
            if states[parent] is State.ISP and states[child] is not State.ISP:
                broken.append(f"{parent} ISP above {child} {states[child].name}")
        return outcome

    monkeypatch.setattr(Lcd, "group", slow_checked_group)
    ahead: list[str] = []

    class Watching(FakeKit):
        async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
            below = CHAIN[CHAIN.index(resource.tag) - 1] if resource.tag != CHAIN[0] else None
            if below is not None and committed_states(root)[below] is not State.ISP:
                ahead.append(resource.tag)
            return await super().restore(resource, args)

    async def scenario(db: Threaded) -> tuple[bool, bool]:
        kits = Kits(KitContext(root, db.lcd.local_node))
        kits.add(Watching(kits.ctx))
        engine = Engine(db.lcd, kits, db=db)
        restored = await engine.restore(CHAIN[-1], reason="test")
        removed = await engine.remove(CHAIN[0], reason="test")
        return restored.ok, removed.ok

    assert with_facade(root, scenario) == (True, True)
    assert not broken, broken
    assert ahead, "no restore started before the commit below it: the test did not test the pipelining"
    assert set(committed_states(root).values()) == {State.OSU}
