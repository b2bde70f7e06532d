"""States stay true: a quickCheck never undoes an action, an administrator's remove is intent,
and a parent is never ISP over a child that is not in service."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakeeper.daemon import Config, Daemon
from hakeeper.db import Lcd, Resource, State, graph
from hakeeper.events.local import LocalRecovery
from hakeeper.events.monitor import Monitor
from hakeeper.kits.actions import script_env
from hakeeper.kits.base import KitContext, Result
from hakeeper.recovery import plan
from hakeeper.recovery.engine import Engine
from tests.fakes import Script, build, fake_kits

WEB = [("web", "web-ip"), ("web", "web-fs"), ("web-fs", "web-disk")]

# ------------------------------------------------------------------ the rule, pure


def test_every_isp_resource_above_one_out_of_service_must_go_down_naming_it() -> None:
    states = {"web": State.ISP, "web-ip": State.ISP, "web-fs": State.ISP, "web-disk": State.OSF}
    assert plan.parents_to_stop(WEB, states) == {"web": "web-disk", "web-fs": "web-disk"}


def test_what_is_above_an_isu_resource_is_judged_by_what_is_below_it() -> None:
    states = {"web": State.ISP, "web-ip": State.ISP, "web-fs": State.ISU, "web-disk": State.OSU}
    assert plan.parents_to_stop(WEB, states) == {"web": "web-disk"}, "ISU is left alone, not what is above it"


def test_a_run_judges_only_what_is_above_the_resources_it_acted_on() -> None:
    states = {"web": State.ISP, "web-ip": State.OSU, "web-fs": State.ISP, "web-disk": State.OSF}
    assert plan.parents_to_stop(WEB, states, below={"web-disk"}) == {"web": "web-disk", "web-fs": "web-disk"}
    assert plan.parents_to_stop(WEB, states, below={"web-ip"}) == {"web": "web-ip"}
    assert plan.parents_to_stop(WEB, states, below={"web-fs"}) == {}


def test_a_consistent_hierarchy_needs_nothing() -> None:
    states = {"web": State.OSU, "web-ip": State.ISP, "web-fs": State.OSU, "web-disk": State.ISP}
    assert plan.parents_to_stop(WEB, states) == {}


TAGS = [f"r{i}" for i in range(8)]
STATES = st.sampled_from([State.ISP, State.ISU, State.OSU, State.OSF])


@st.composite
def hierarchies(draw: st.DrawFn) -> tuple[list[graph.Edge], dict[str, State]]:
    edges: list[graph.Edge] = []
    for parent, child in draw(st.lists(st.tuples(st.sampled_from(TAGS), st.sampled_from(TAGS)), max_size=20)):
        if (parent, child) not in edges and not graph.creates_cycle(edges, parent, child):
            edges.append((parent, child))
    return edges, {tag: draw(STATES) for tag in TAGS}


@given(hierarchies())
def test_once_those_go_down_no_isp_resource_is_over_one_out_of_service(
    case: tuple[list[graph.Edge], dict[str, State]],
) -> None:
    edges, states = case
    above = plan.parents_to_stop(edges, states)
    for tag, below in above.items():
        assert states[tag] is State.ISP and not states[below].in_service
        assert below in graph.descendants(edges, tag)
    after = {tag: State.OSU if tag in above else state for tag, state in states.items()}
    assert plan.parents_to_stop(edges, after) == {}, "one pass is enough"
    for parent, child in edges:
        assert not (after[parent] is State.ISP and not after[child].in_service)
    untouched = {tag for tag, state in states.items() if state is State.ISP} - set(above)
    for tag in untouched:
        assert all(states[d].in_service for d in graph.descendants(edges, tag)), "nothing taken down needlessly"


@given(hierarchies(), st.sets(st.sampled_from(TAGS)))
def test_a_run_s_scope_takes_down_exactly_what_is_above_its_resources_out_of_service(
    case: tuple[list[graph.Edge], dict[str, State]], scope: set[str]
) -> None:
    edges, states = case
    above = plan.parents_to_stop(edges, states, below=scope)
    down = {t for t in scope if not states[t].in_service}
    expected = {t for t, s in states.items() if s is State.ISP and graph.descendants(edges, t) & down}
    assert set(above) == expected
    assert all(above[t] in down for t in above)


# ------------------------------------------------------------------ the engine records it


def test_a_child_removed_alone_takes_its_isp_parents_down_with_an_alert(
    lcd: Lcd, caplog: pytest.LogCaptureFixture
) -> None:
    build(lcd, WEB)
    kits, kit = fake_kits(lcd)
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="test"))
    with caplog.at_level(logging.ERROR):
        report = asyncio.run(engine.remove("web-disk", reason="perform_action by root", only=True))
    assert lcd.resource("web-disk").state is State.OSU
    assert lcd.resource("web-fs").state is State.OSU and lcd.resource("web").state is State.OSU
    assert lcd.resource("web").reason == "web-disk below it is OSU"
    assert lcd.resource("web-ip").state is State.ISP
    assert sorted(report.corrected) == ["web", "web-fs"]
    assert "ALERT: web-fs is ISP but web-disk below it is OSU" in caplog.text
    assert "web" not in kit.running and "web-fs" not in kit.running, "their remove actions ran"


# ------------------------------------------------------------------ quickCheck and an action at once


async def _until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_a_quickcheck_that_overlaps_a_remove_reports_nothing(lcd: Lcd) -> None:
    """The check starts while web runs and answers once the remove has stopped it: that answer is dropped."""
    build(lcd, [], extra=("web",))
    kits, kit = fake_kits(lcd, Script(delay=0.2, check_delay={"web": 0.1}))
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="test"))
    lcd.set_check_interval("web", 1)
    failures: list[str] = []

    def on_failure(resource: Resource, result: Result, ticket: int) -> None:
        failures.append(resource.tag)

    async def scenario() -> None:
        monitor = Monitor(engine, on_failure, refresh=0.01, rng=random.Random(3))
        task = asyncio.create_task(monitor.run())
        await _until(lambda: "web" in kit.checking, "a check of web")
        kit.running.discard("web")  # the remove stops it at once, and records OSU 0.2 s later
        await engine.remove("web", reason="perform_action by root")
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert failures == []
    assert lcd.resource("web").state is State.OSU


def test_a_failure_reported_during_a_remove_does_not_bring_it_back(lcd: Lcd) -> None:
    """The user's defect: a check's "stopped" reaches local recovery while the administrator's remove runs."""
    build(lcd, [], extra=("web",))
    kits, _kit = fake_kits(lcd, Script(delay=0.2))
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="test"))
    recovery = LocalRecovery(engine)

    async def scenario() -> tuple[str, str]:
        ticket = engine.ticket()  # the check started before the remove
        remove = asyncio.create_task(engine.remove("web", reason="perform_action by root"))
        await asyncio.sleep(0.05)  # the remove runs; web is still recorded ISP
        quick = await recovery.failed("web", "quickCheck: stopped", ticket=ticket)
        event = await recovery.failed("web", "generic/failure")  # a sendevent meanwhile
        await remove
        return quick, event

    quick, event = asyncio.run(scenario())
    assert "no recovery" in quick and "no recovery" in event
    assert lcd.resource("web").state is State.OSU
    assert lcd.resource("web").reason == "perform_action by root"


def test_a_remove_asked_for_during_local_recovery_wins(lcd: Lcd) -> None:
    """Recovery's remove and restore are one step: the administrator's remove is not squeezed between them."""
    build(lcd, WEB)
    kits, kit = fake_kits(lcd, Script(delay=0.05))
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="test"))
    recovery = LocalRecovery(engine)

    async def scenario() -> None:
        recover = asyncio.create_task(recovery.failed("web-fs", "quickCheck: stopped"))
        await _until(lambda: ("remove", "web") in kit.calls, "recovery to start")
        await engine.remove("web", reason="perform_action by root")
        await recover

    asyncio.run(scenario())
    assert lcd.resource("web").state is State.OSU
    assert lcd.resource("web").reason == "perform_action by root"
    assert lcd.resource("web-fs").state is State.ISP


def test_local_recovery_brings_back_only_what_it_took_down(lcd: Lcd) -> None:
    """web was removed by the administrator; a failure of web-fs below it does not restore web."""
    build(lcd, WEB)
    kits, kit = fake_kits(lcd)
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="test"))
    asyncio.run(engine.remove("web", reason="perform_action by root", only=True))
    kit.calls.clear()
    outcome = asyncio.run(LocalRecovery(engine).failed("web-fs", "quickCheck: stopped"))
    assert outcome.startswith("web-fs recovered in place")
    assert kit.calls == [("remove", "web-fs"), ("restore", "web-fs")]
    assert lcd.resource("web").state is State.OSU
    assert lcd.resource("web").reason == "perform_action by root"


# ------------------------------------------------------------------ hakeeperd's start: judged from what runs here


def test_at_start_a_parent_whose_check_another_node_answers_goes_down_with_its_child(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Lcd.open(root) as lcd:
        build(lcd, [("web", "vip")])
        for tag in ("web", "vip"):
            lcd.set_state(tag, State.ISP, "before the power went off")

    async def scenario() -> Daemon:
        daemon = Daemon(Config(root), dispatch=None)  # type: ignore[arg-type]
        kits, kit = fake_kits(daemon.lcd)
        kit.running.add("web")  # web's check asks the virtual address, which node2 answers
        daemon.engine.kits = kits
        await daemon._reconcile()
        await daemon.db.aclose()
        return daemon

    with caplog.at_level(logging.WARNING):
        daemon = asyncio.run(scenario())
    try:
        assert daemon.lcd.resource("vip").state is State.OSU
        assert daemon.lcd.resource("web").state is State.OSU, "never ISP over a child that is not"
        reason = daemon.lcd.resource("web").reason
        assert reason == "not running when hakeeperd started: vip below it is not running here"
        assert "ALERT: web is ISP but vip below it is OSU" in caplog.text
        assert "web: its quickCheck said running" in caplog.text
    finally:
        daemon.lcd.close()


# ------------------------------------------------------------------ what a script knows of "here"


def test_scripts_are_told_this_node_and_the_resource_s_state_here(tmp_path: Path) -> None:
    ctx = KitContext(tmp_path, "node1")
    for state in (State.ISP, State.OSU):
        resource = Resource("web", "web", "gen", "app", state=state)
        env = script_env(ctx, resource, "quick_check")
        assert (env["HAKEEPER_NODE"], env["HAKEEPER_STATE"], env["HAKEEPER_ACTION"]) == (
            "node1",
            state.name,
            "quickCheck",
        )
