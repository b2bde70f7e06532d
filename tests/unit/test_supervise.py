"""The supervisor of hakeeperd's services: restart with back-off, escalation, fatal deaths, a clean stop.

Time is a fake clock: the back-off "sleeps" only move it, and a service "runs
for a while" by moving it too, so nothing here waits or measures real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from hakeeper.errors import IllegalArgument, NotFound
from hakeeper.supervise import FATAL, Failure, InjectedFault, Restart, Service, Supervisor

SAFETY = 10.0  # a bound on waiting for the loop to get somewhere, never an assertion


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Script:
    """A service's coroutine factory: run ``i`` does ``steps[i]``, and every run after the last one waits forever.

    A step is ``("die", seconds)``: run that long (on the fake clock), then raise; or ``("return", seconds)``.
    """

    def __init__(self, time: FakeTime, steps: list[tuple[str, float]]) -> None:
        self.time = time
        self.steps = steps
        self.runs = 0
        self.settled = asyncio.Event()  # set when the run after the last step starts

    def __call__(self) -> Coroutine[Any, Any, None]:
        return self._run()

    async def _run(self) -> None:
        step = self.steps[self.runs] if self.runs < len(self.steps) else None
        self.runs += 1
        if step is None:
            self.settled.set()
            await asyncio.Event().wait()
            return
        what, seconds = step
        self.time.now += seconds
        await asyncio.sleep(0)
        if what == "die":
            raise RuntimeError(f"run {self.runs} failed")


def supervise(
    time: FakeTime, *, faults: bool = False, sleep: Callable[[float], Awaitable[object]] | None = None
) -> tuple[Supervisor, list[Failure]]:
    fatal: list[Failure] = []
    return Supervisor(fatal.append, clock=time.clock, sleep=sleep or time.sleep, faults=faults), fatal


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(SAFETY):
        while not predicate():
            await asyncio.sleep(0)


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == level and r.name == "hakeeper.supervise"]


POLICY = Restart(first=1.0, factor=2.0, cap=5.0, healthy=60.0, limit=10, window=1000.0)


def test_a_dying_service_is_logged_and_restarted_with_a_doubling_capped_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    script = Script(time, [("die", 0.0)] * 6)

    async def scenario() -> list[Failure]:
        supervisor, fatal = supervise(time)
        async with supervisor:
            supervisor.start(Service("catch-up", script, POLICY))
            await asyncio.wait_for(script.settled.wait(), SAFETY)
        return fatal

    with caplog.at_level(logging.WARNING):
        fatal = asyncio.run(scenario())
    assert time.slept == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert script.runs == 7 and fatal == []
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 6
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in errors), "each with its traceback"
    assert errors[0].getMessage() == (
        "the catch-up service failed after 0.0 s; restarting it in 1 s (restart 1 of at most 10 within 1000 s)"
    )


def test_a_run_that_lasted_starts_the_back_off_again_from_the_first_delay() -> None:
    time = FakeTime()
    script = Script(time, [("die", 0.0), ("die", 0.0), ("die", 100.0), ("die", 0.0)])

    async def scenario() -> None:
        supervisor, _ = supervise(time)
        async with supervisor:
            supervisor.start(Service("monitor", script, POLICY))
            await asyncio.wait_for(script.settled.wait(), SAFETY)

    asyncio.run(scenario())
    assert time.slept == [1.0, 2.0, 1.0, 2.0], "the 100 s run was healthy (>= 60 s): back to 1 s"


def test_too_many_restarts_within_the_window_escalate_to_a_fatal_failure(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    script = Script(time, [("die", 0.0)] * 10)
    policy = Restart(first=1.0, factor=2.0, cap=30.0, healthy=60.0, limit=3, window=100.0)

    async def scenario() -> list[Failure]:
        supervisor, fatal = supervise(time)
        async with supervisor:
            supervisor.start(Service("messages", script, policy))
            await until(lambda: bool(fatal))
        return fatal

    with caplog.at_level(logging.WARNING):
        fatal = asyncio.run(scenario())
    assert script.runs == 4, "three restarts, and the fourth death is not restarted"
    assert time.slept == [1.0, 2.0, 4.0]
    [failure] = fatal
    assert failure.service == "messages" and failure.escalated and isinstance(failure.error, RuntimeError)
    assert failure.describe() == (
        "the messages service failed (RuntimeError: run 4 failed) and died too often to be restarted again"
    )
    [critical] = records(caplog, logging.CRITICAL)
    assert critical.exc_info is not None and critical.exc_info[1] is failure.error
    assert "4 deaths within 100 s; giving up on it" in critical.getMessage()


def test_deaths_older_than_the_window_do_not_count() -> None:
    time = FakeTime()
    script = Script(time, [("die", 60.0)] * 6)  # one death a minute
    policy = Restart(first=1.0, factor=2.0, cap=30.0, healthy=1000.0, limit=1, window=50.0)

    async def scenario() -> list[Failure]:
        supervisor, fatal = supervise(time)
        async with supervisor:
            supervisor.start(Service("anti-entropy", script, policy))
            await asyncio.wait_for(script.settled.wait(), SAFETY)
        return fatal

    assert asyncio.run(scenario()) == [], "never two restarts within 50 s"
    assert script.runs == 7


def test_a_fatal_service_is_reported_once_at_critical_and_its_siblings_run_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    heartbeats = Script(time, [("die", 3.0)])
    guard = Script(time, [("die", 0.0)])
    monitor = Script(time, [])

    async def scenario() -> tuple[list[Failure], bool]:
        supervisor, fatal = supervise(time)
        async with supervisor:
            supervisor.start(Service("monitor", monitor, POLICY))
            supervisor.start(Service("heartbeats", heartbeats, FATAL))
            await until(lambda: bool(fatal))
            supervisor.start(Service("guard", guard, FATAL))
            await until(lambda: guard.runs == 1 and len(records(caplog, logging.CRITICAL)) == 2)
            monitor_runs = monitor.settled.is_set() and monitor.runs == 1
        return fatal, monitor_runs

    with caplog.at_level(logging.WARNING):
        fatal, monitor_runs = asyncio.run(scenario())
    assert [f.service for f in fatal] == ["heartbeats"], "the first fatal failure is the one reported"
    assert not fatal[0].escalated and str(fatal[0].error) == "run 1 failed"
    assert heartbeats.runs == 1 and guard.runs == 1, "a fatal service is never restarted"
    assert monitor_runs, "a fatal death does not cancel the other services: hakeeperd stops them in its order"
    first, second = records(caplog, logging.CRITICAL)
    assert first.getMessage() == "the heartbeats service failed after 3.0 s; hakeeperd cannot run without it"
    assert first.exc_info is not None and first.exc_info[0] is RuntimeError
    assert second.getMessage().startswith("the guard service failed")


def test_a_service_that_returns_is_a_death_too(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    script = Script(time, [("return", 2.0)])

    async def scenario() -> None:
        supervisor, _ = supervise(time)
        async with supervisor:
            supervisor.start(Service("catch-up", script, POLICY))
            await asyncio.wait_for(script.settled.wait(), SAFETY)

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert script.runs == 2
    [error] = records(caplog, logging.ERROR)
    assert error.getMessage().startswith("the catch-up service returned after 2.0 s; restarting it in 1 s")


@pytest.mark.parametrize("faults", [False, True], ids=["plain", "with-fault-injection"])
def test_leaving_the_group_cancels_every_service_and_leaves_no_task_behind(faults: bool) -> None:
    time = FakeTime()
    cleaned: list[str] = []

    async def waits_forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(name)

    async def restarting() -> None:
        raise RuntimeError("dies at once")

    async def scenario() -> set[asyncio.Task[Any]]:
        started = asyncio.Event()

        async def back_off(_seconds: float) -> None:  # the back-off of "restarting" lasts until cancelled
            started.set()
            await asyncio.Event().wait()

        supervisor, _ = supervise(time, faults=faults, sleep=back_off)
        async with supervisor:
            supervisor.start(Service("heartbeats", lambda: waits_forever("heartbeats"), FATAL))
            supervisor.start(Service("monitor", lambda: waits_forever("monitor"), POLICY))
            supervisor.start(Service("catch-up", restarting, POLICY))
            await asyncio.wait_for(started.wait(), SAFETY)
            await asyncio.sleep(0)
        return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}

    assert asyncio.run(scenario()) == set(), "no task left once the group has ended"
    assert sorted(cleaned) == ["heartbeats", "monitor"], "each service's own cleanup ran"


def test_once_winding_down_a_service_that_ends_is_neither_restarted_nor_fatal(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()

    async def scenario() -> tuple[list[Failure], int]:
        down = asyncio.Event()
        runs = 0

        async def guard_link() -> None:  # GuardLink.run returns after stand_down()
            nonlocal runs
            runs += 1
            await down.wait()

        async def dies_late() -> None:
            await down.wait()
            raise RuntimeError("late")

        supervisor, fatal = supervise(time)
        async with supervisor:
            supervisor.start(Service("guard", guard_link, FATAL))
            supervisor.start(Service("catch-up", dies_late, POLICY))
            await asyncio.sleep(0)
            supervisor.wind_down()
            down.set()
            await until(lambda: "the catch-up service failed while hakeeperd stops" in caplog.text)
        return fatal, runs

    with caplog.at_level(logging.WARNING):
        fatal, runs = asyncio.run(scenario())
    assert fatal == [] and runs == 1 and time.slept == []
    [error] = records(caplog, logging.ERROR)
    assert error.exc_info is not None and str(error.exc_info[1]) == "late", "still logged with its traceback"


def test_cancel_stops_the_named_services_only_and_names_those_that_do_not_end() -> None:
    time = FakeTime()

    async def scenario() -> tuple[list[str], list[str], bool]:
        release = asyncio.Event()

        async def plain() -> None:
            await asyncio.Event().wait()

        async def stubborn() -> None:  # swallows one cancellation, as a careless cleanup might
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()

        supervisor, _ = supervise(time)
        async with supervisor:
            for name in ("monitor", "messages"):
                supervisor.start(Service(name, plain, POLICY))
            supervisor.start(Service("guard", stubborn, FATAL))
            await asyncio.sleep(0)
            first = await supervisor.cancel("monitor")
            still = supervisor._tasks["messages"].done()
            late = await supervisor.cancel("guard", timeout=0.01)
            release.set()
        return first, late, still

    first, late, messages_done = asyncio.run(scenario())
    assert first == [] and not messages_done
    assert late == ["guard"]


def test_an_injected_fault_comes_out_of_the_await_where_the_service_waits(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()

    async def scenario() -> tuple[list[str], list[Failure]]:
        seen: list[str] = []
        wake = asyncio.Event()

        async def service() -> None:
            try:
                await wake.wait()
            except InjectedFault as exc:
                seen.append(str(exc))
                raise
            seen.append("woke normally")
            await asyncio.Event().wait()

        supervisor, fatal = supervise(time, faults=True)
        async with supervisor:
            supervisor.start(Service("messages", service, POLICY))
            await asyncio.sleep(0)
            assert supervisor.inject("messages") == "fault injected into the messages service"
            wake.set()
            await until(lambda: len(seen) == 2)  # the fault, then the restarted run
        return seen, fatal

    with caplog.at_level(logging.WARNING):
        seen, fatal = asyncio.run(scenario())
    assert seen == ["fault injected into the messages service (test-only, HAKEEPER_TEST_FAULTS=1)", "woke normally"]
    assert fatal == []
    [error] = records(caplog, logging.ERROR)
    assert error.exc_info is not None and error.exc_info[0] is InjectedFault


def test_fault_injection_is_refused_when_off_for_an_unknown_service_and_between_restarts() -> None:
    time = FakeTime()

    async def scenario() -> list[str]:
        answers: list[str] = []
        off, _ = supervise(time)
        on, _ = supervise(time, sleep=lambda _s: asyncio.Event().wait(), faults=True)

        async def dies() -> None:
            raise RuntimeError("dies at once")

        async def runs() -> None:
            await asyncio.Event().wait()

        async with off, on:
            off.start(Service("monitor", runs, POLICY))
            on.start(Service("catch-up", dies, POLICY))
            await asyncio.sleep(0)
            for supervisor, name in ((off, "monitor"), (on, "nothing"), (on, "catch-up")):
                try:
                    supervisor.inject(name)
                except (IllegalArgument, NotFound) as exc:
                    answers.append(f"{type(exc).__name__}: {exc}")
        return answers

    assert asyncio.run(scenario()) == [
        "IllegalArgument: fault injection is off (for tests: HAKEEPER_TEST_FAULTS=1 in hakeeperd's environment)",
        "NotFound: no service 'nothing' (services: catch-up)",
        "IllegalArgument: the catch-up service is not running now (it is restarting, or it ended)",
    ]
