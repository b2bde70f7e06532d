"""The recovery engine: order, parallelism, timeouts, and what a failed restore leaves behind."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakeeper.db import Lcd, State, graph
from hakeeper.recovery.engine import Engine
from tests.fakes import Script, build, fake_kits

WEB = [("web", "web-ip"), ("web", "web-fs"), ("web-fs", "web-disk")]


def restore(engine: Engine, tag: str, **kw: object) -> object:
    return asyncio.run(engine.restore(tag, reason="test", **kw))  # type: ignore[arg-type]


def states(lcd: Lcd) -> dict[str, State]:
    return {r.tag: r.state for r in lcd.resources()}


def test_restore_brings_children_up_before_parents(lcd: Lcd) -> None:
    build(lcd, WEB)
    kits, kit = fake_kits(lcd)
    report = asyncio.run(Engine(lcd, kits).restore("web-fs", reason="perform_action by root"))
    assert report.ok
    order = [tag for action, tag in kit.calls if action == "restore"]
    assert sorted(order) == ["web", "web-disk", "web-fs", "web-ip"], "restore takes all above and below"
    assert order.index("web-disk") < order.index("web-fs") < order.index("web")
    assert order.index("web-ip") < order.index("web")
    assert set(states(lcd).values()) == {State.ISP}
    assert lcd.resource("web").reason == "perform_action by root"


def test_remove_takes_parents_down_first_and_leaves_children(lcd: Lcd) -> None:
    build(lcd, WEB)
    kits, kit = fake_kits(lcd)
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="test"))
    kit.calls.clear()
    report = asyncio.run(engine.remove("web-fs", reason="test"))
    assert report.ok
    assert [tag for _, tag in kit.calls] == ["web", "web-fs"]
    assert states(lcd) == {"web": State.OSU, "web-fs": State.OSU, "web-disk": State.ISP, "web-ip": State.ISP}


def test_independent_branches_run_in_parallel_within_the_bound(lcd: Lcd) -> None:
    edges = [("top", f"leaf{i}") for i in range(10)]
    build(lcd, edges)
    kits, kit = fake_kits(lcd, Script(delay=0.05))
    report = asyncio.run(Engine(lcd, kits, max_parallel=4).restore("top", reason="test"))
    assert report.ok
    assert kit.peak == 4
    kits, kit = fake_kits(lcd, Script(delay=0.05))
    asyncio.run(Engine(lcd, kits, max_parallel=64).remove("top", reason="test"))
    lcd_tags = [r.tag for r in lcd.resources() if r.state is State.ISP]
    assert len(lcd_tags) == 10  # remove of top leaves the leaves


def test_isu_becomes_isp_without_running_restore(lcd: Lcd) -> None:
    build(lcd, [("app", "ip")])
    lcd.set_state("ip", State.ISU, "maintenance")
    kits, kit = fake_kits(lcd)
    report = asyncio.run(Engine(lcd, kits).restore("app", reason="test"))
    assert report.ok
    assert ("restore", "ip") not in kit.calls
    assert report.unchanged == ["ip"]
    assert states(lcd) == {"app": State.ISP, "ip": State.ISP}


def test_a_failed_restore_is_undone_and_reported(lcd: Lcd) -> None:
    build(lcd, WEB)
    kits, kit = fake_kits(lcd, Script(fail_restore={"web-fs"}))
    report = asyncio.run(Engine(lcd, kits).restore("web", reason="test"))
    assert not report.ok
    assert report.failed == ["web-fs"]
    assert "cannot start web-fs" in report.summary()
    assert "web-disk" in report.recovered
    assert ("restore", "web") not in kit.calls, "a parent never starts when a child failed"
    final = states(lcd)
    assert final["web-fs"] is State.OSF
    assert final["web"] is State.OSU
    assert final["web-disk"] is State.OSU
    assert kit.running == set(), "what this run started was stopped again"
    assert lcd.resource("web-fs").reason == "cannot start web-fs"


def test_an_action_past_its_timeout_fails(lcd: Lcd) -> None:
    build(lcd, [], extra=("slow",))
    kits, _kit = fake_kits(lcd, Script(delay=5.0))
    report = asyncio.run(Engine(lcd, kits).restore("slow", reason="test"))
    assert report.messages == ["restore of slow timed out after 2 s"]
    assert lcd.resource("slow").state is State.OSF


def test_a_missing_kit_is_a_configuration_failure(lcd: Lcd) -> None:
    lcd.create_resource("orphan", "o", "nokit", "none", ensure_type=True)
    kits, _ = fake_kits(lcd)
    report = asyncio.run(Engine(lcd, kits).restore("orphan", reason="test"))
    assert not report.ok
    assert "no kit for nokit/none" in report.messages[0]


def close_cycle(lcd: Lcd, parent: str, child: str) -> None:
    """A dependency written behind the LCD's checks, as two racing dep_create could leave one before."""
    with closing(sqlite3.connect(lcd.path)) as db:
        db.execute("INSERT INTO dependencies (parent, child) VALUES (?, ?)", (parent, child))
        db.commit()


def test_a_restore_over_a_dependency_cycle_fails_and_runs_nothing(lcd: Lcd) -> None:
    build(lcd, [("p", "q"), ("q", "base")])
    close_cycle(lcd, "q", "p")
    kits, kit = fake_kits(lcd)
    report = asyncio.run(Engine(lcd, kits).restore("base", reason="test"))
    assert not report.ok, report.summary()
    assert "dependency cycle among p, q" in report.summary()
    assert report.failed == ["p", "q"]
    assert kit.calls == [], "not even base below the cycle: nothing is restored that would have to be undone"
    assert set(states(lcd).values()) == {State.OSU}


def test_a_remove_over_a_dependency_cycle_removes_what_it_can_order_and_fails(lcd: Lcd) -> None:
    build(lcd, [("top", "p"), ("p", "q")])
    kits, kit = fake_kits(lcd)
    engine = Engine(lcd, kits)
    assert asyncio.run(engine.restore("top", reason="test")).ok
    close_cycle(lcd, "q", "p")
    kit.calls.clear()
    report = asyncio.run(engine.remove("q", reason="test"))
    assert not report.ok, report.summary()
    assert "dependency cycle among p, q" in report.summary()
    assert kit.calls == [("remove", "top")]
    assert states(lcd) == {"top": State.OSU, "p": State.ISP, "q": State.ISP}


TAGS = [f"r{i}" for i in range(8)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from(TAGS), st.sampled_from(TAGS)), max_size=14),
    st.sets(st.sampled_from(TAGS), max_size=3),
    st.sets(st.sampled_from(TAGS), max_size=3),
    st.sampled_from(TAGS),
)
def test_a_failing_restore_never_leaves_a_parent_up_with_a_child_down(
    tmp_path_factory: pytest.TempPathFactory,
    attempts: list[tuple[str, str]],
    failing: set[str],
    already_up: set[str],
    target: str,
) -> None:
    edges: list[graph.Edge] = []
    for parent, child in attempts:
        if (parent, child) not in edges and not graph.creates_cycle(edges, parent, child):
            edges.append((parent, child))
    path: Path = tmp_path_factory.mktemp("lcd")
    with Lcd.open(path, node="node1") as lcd:
        build(lcd, edges, extra=tuple(TAGS))
        kits, kit = fake_kits(lcd, Script(fail_restore=failing))
        # Bring some resources up first, bottom-up, so that the starting point is consistent.
        closure = already_up | {d for t in already_up for d in graph.descendants(edges, t)}
        for tag in graph.restore_order(edges, closure):
            if not ({tag} | graph.descendants(edges, tag)) & failing:
                lcd.set_state(tag, State.ISP, "before")
                kit.running.add(tag)
        before = states(lcd)
        report = asyncio.run(Engine(lcd, kits, max_parallel=3).restore(target, reason="test"))
        after = states(lcd)
        for tag, state in after.items():
            assert state in (before[tag], State.OSF) or (report.ok and state is State.ISP), tag
            if state is State.ISP:
                for child in graph.descendants(edges, tag):
                    assert after[child] is State.ISP, f"{tag} is ISP but its child {child} is {after[child].name}"
        assert kit.running == {t for t, s in after.items() if s is State.ISP}
        assert report.ok == (not report.failed)
