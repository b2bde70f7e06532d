"""Properties of the dependency graph: never a cycle, and orders that respect every dependency."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.db import Lcd, graph
from hakeeper.errors import IllegalArgument, InternalError

TAGS = [f"r{i}" for i in range(12)]
pairs = st.lists(st.tuples(st.sampled_from(TAGS), st.sampled_from(TAGS)), max_size=60)


def build_dag(attempts: list[tuple[str, str]]) -> list[graph.Edge]:
    """Add each attempted edge unless it would close a cycle, as the LCD does."""
    edges: list[graph.Edge] = []
    for parent, child in attempts:
        if (parent, child) not in edges and not graph.creates_cycle(edges, parent, child):
            edges.append((parent, child))
    return edges


def has_path(edges: list[graph.Edge], start: str, goal: str) -> bool:
    """Brute force: is there a path start -> ... -> goal following parent -> child edges."""
    frontier, seen = [start], set()
    while frontier:
        node = frontier.pop()
        for p, c in edges:
            if p == node and c not in seen:
                if c == goal:
                    return True
                seen.add(c)
                frontier.append(c)
    return False


@given(pairs)
def test_creates_cycle_is_exactly_a_path_back(attempts: list[tuple[str, str]]) -> None:
    edges = build_dag(attempts)
    for parent in TAGS:
        for child in TAGS:
            expected = parent == child or has_path(edges, child, parent)
            assert graph.creates_cycle(edges, parent, child) == expected


@given(pairs)
def test_no_cycle_can_be_built(attempts: list[tuple[str, str]]) -> None:
    edges = build_dag(attempts)
    assert not any(has_path(edges, tag, tag) for tag in TAGS)


@given(pairs, st.sets(st.sampled_from(TAGS), min_size=1))
def test_restore_order_puts_children_first_and_remove_is_its_reverse(
    attempts: list[tuple[str, str]], subset: set[str]
) -> None:
    edges = build_dag(attempts)
    order = graph.restore_order(edges, subset)
    assert sorted(order) == sorted(subset)
    position = {tag: i for i, tag in enumerate(order)}
    for parent, child in edges:
        if parent in subset and child in subset:
            assert position[child] < position[parent], f"{child} must be restored before {parent}"
    assert graph.remove_order(edges, subset) == order[::-1]


@given(pairs)
def test_restore_levels_are_independent_and_ordered(attempts: list[tuple[str, str]]) -> None:
    edges = build_dag(attempts)
    levels = graph.restore_levels(edges, TAGS)
    level_of = {tag: i for i, level in enumerate(levels) for tag in level}
    assert sorted(level_of) == sorted(TAGS)
    for parent, child in edges:
        assert level_of[child] < level_of[parent]
    # Each level is as early as it can be: something in level n > 0 depends on something in level n-1.
    for tag, n in level_of.items():
        if n:
            assert any(level_of[c] == n - 1 for p, c in edges if p == tag)


@given(pairs, st.sets(st.sampled_from(TAGS), min_size=1, max_size=3))
def test_rooted_at_keeps_shared_children(attempts: list[tuple[str, str]], tops: set[str]) -> None:
    edges = build_dag(attempts)
    chosen = set(graph.rooted_at(edges, tops))
    assert tops <= chosen
    for tag in chosen - tops:
        parents = {p for p, c in edges if c == tag}
        assert parents and parents <= chosen, f"{tag} is needed by something outside"
        assert any(has_path(edges, top, tag) for top in tops)


@given(pairs)
def test_tree_lines_show_every_resource_once_in_full(attempts: list[tuple[str, str]]) -> None:
    edges = build_dag(attempts)
    lines = graph.tree_lines(edges, TAGS)
    full = [tag for _depth, tag, repeated in lines if not repeated]
    assert sorted(full) == sorted(TAGS)
    for i, (depth, tag, _repeated) in enumerate(lines):
        if depth:
            parent = next(t for d, t, _ in reversed(lines[:i]) if d == depth - 1)
            assert (parent, tag) in edges


def test_a_cycle_in_the_input_is_reported_not_looped_on() -> None:
    with pytest.raises(InternalError, match="cycle"):
        graph.restore_order([("a", "b"), ("b", "a")], ["a", "b"])
    with pytest.raises(InternalError, match="cycle"):
        graph.restore_levels([("a", "b"), ("b", "c"), ("c", "a")], ["a", "b", "c"])


def test_order_is_deterministic_among_independent_resources() -> None:
    edges = [("app", "ip"), ("app", "fs"), ("fs", "disk")]
    assert graph.restore_order(edges, ["app", "ip", "fs", "disk"]) == ["disk", "fs", "ip", "app"]
    assert graph.restore_levels(edges, ["app", "ip", "fs", "disk"]) == [["disk", "ip"], ["fs"], ["app"]]


# --------------------------------------------------------------------- the same rules, through the LCD


def _populated(path: Path) -> Lcd:
    lcd = Lcd.open(path, node="node1")
    lcd.create_app("gen")
    lcd.create_type("gen", "app")
    lcd.create_node("node2")
    for tag in TAGS:
        lcd.create_resource(tag, f"id-{tag}", "gen", "app")
    return lcd


@settings(max_examples=40, deadline=None)
@given(pairs, st.lists(st.sampled_from(TAGS), max_size=4), st.sets(st.sampled_from(TAGS), max_size=4))
def test_lcd_refuses_cycles_and_removal_leaves_nothing_dangling(
    tmp_path_factory: pytest.TempPathFactory,
    attempts: list[tuple[str, str]],
    eqv_tags: list[str],
    doomed: set[str],
) -> None:
    path = tmp_path_factory.mktemp("lcd")
    with _populated(path) as lcd:
        for tag in set(eqv_tags):
            lcd.create_equivalency(tag, "node2")
        for parent, child in attempts:
            if parent == child or graph.creates_cycle(lcd.edges(), parent, child):
                with pytest.raises(IllegalArgument):
                    lcd.create_dependency(parent, child)
            elif (parent, child) not in lcd.edges():
                lcd.create_dependency(parent, child)
        edges = lcd.edges()
        assert not any(has_path(edges, tag, tag) for tag in TAGS)
        if doomed:
            removed = lcd.remove_resources(doomed)
            expected = set(doomed) | {a for d in doomed for a in graph.ancestors(edges, d)}
            assert set(removed) == expected
            position = {tag: i for i, tag in enumerate(removed)}
            for parent, child in edges:
                if parent in position and child in position:
                    assert position[parent] < position[child], "parents are removed first"
        left = {r.tag for r in lcd.resources()}
        assert left == set(TAGS) - set(removed if doomed else [])
        assert all(p in left and c in left for p, c in lcd.edges())
        assert all(e.tag in left for e in lcd.equivalencies())
    db = sqlite3.connect(path / "lcd.sqlite")
    try:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()
