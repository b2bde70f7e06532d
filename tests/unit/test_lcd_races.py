"""Two commands at once never both pass a check that only one of them may pass.

Every check a change depends on (does the tag exist, would the dependency close
a cycle, is the priority free, does anything depend on what is removed) runs in
the write transaction of the change, so commands that run at the same time give
the result of running them one after the other, in some order. The tests run
LCDI commands from two real processes at once (``lcd_racers``) and check after
each race that:

* the LCD is whole: ``PRAGMA integrity_check`` ok, no row referring to a
  missing resource or node, no dependency cycle, priorities unique per resource;
* the exit codes and the whole LCD, change log included, are exactly those of
  one of the two orders run one after the other: a command that lost the race
  was refused with the code it gets when it comes second, and changed nothing.

The first test races each pair of conflicting commands 100 times on fresh
resources; the second has hypothesis choose sequences of pairs of commands.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakeeper.cli.base import run
from hakeeper.db import Lcd, graph
from hakeeper.errors import InternalError
from hakeeper.layout import LCD_NAME
from tests.conftest import Result
from tests.unit.lcd_racers import Racers, agreed

APP, TYPE = "x", "nokit"  # a type no kit serves: ins_remove has no delete action to run
ROUNDS = 100

Contents = tuple[tuple[str, tuple[tuple[object, ...], ...]], ...]


class Outcome(NamedTuple):
    codes: tuple[int, ...]
    contents: Contents


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    pair = Racers(2)
    yield pair
    pair.close()


def create(tag: str, id: str | None = None) -> list[str]:
    return ["ins_create", "-a", APP, "-r", TYPE, "-t", tag, "-i", id or tag]


def lcd_with(root: Path, commands: Sequence[Sequence[str]]) -> Path:
    """A fresh LCD of node1 that knows node2 and node3 and the type x/nokit, after ``commands``."""
    Lcd.open(root, node="node1").close()
    base = [["app_create", "-a", APP], ["typ_create", "-a", APP, "-r", TYPE], ["sys_create", "-s", "node2"]]
    for argv in [*base, ["sys_create", "-s", "node3"], *commands]:
        assert execute(root, argv).code == 0, argv
    return root


def execute(root: Path, argv: Sequence[str]) -> Result:
    """Run one command in this process, as a console script would."""
    out, err = io.StringIO(), io.StringIO()
    code = run(argv[0], list(argv[1:]), root=str(root), out=out, err=err, replicator=agreed)
    return Result(code, out.getvalue(), err.getvalue())


def copy_lcd(source: Path, target: Path) -> Path:
    """A copy of the LCD of state directory ``source`` as the LCD of ``target`` (SQLite's backup API)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(mode=0o700, parents=True)
    with closing(sqlite3.connect(source / LCD_NAME)) as src, closing(sqlite3.connect(target / LCD_NAME)) as dst:
        src.backup(dst)
    return target


def contents(root: Path) -> Contents:
    """Every row of every table, the change log without its times: what must be equal to be the same LCD."""
    with closing(sqlite3.connect(root / LCD_NAME)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = []
        for table in tables:
            if table == "changes":
                rows = db.execute("SELECT seq, actor, op, args FROM changes ORDER BY seq").fetchall()
            else:
                rows = sorted(db.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            out.append((table, tuple(rows)))
    return tuple(out)


def assert_whole(root: Path, context: str) -> None:
    """The LCD's invariants: integrity, no dangling row, no cycle, unique priorities per resource."""
    with closing(sqlite3.connect(root / LCD_NAME)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], context
        assert db.execute("PRAGMA foreign_key_check").fetchall() == [], f"{context}: a row refers to something missing"
        tags = {tag for (tag,) in db.execute("SELECT tag FROM resources")}
        nodes = {name for (name,) in db.execute("SELECT name FROM nodes")}
        edges = db.execute("SELECT parent, child FROM dependencies").fetchall()
        equivalencies = db.execute("SELECT tag, node, priority FROM equivalencies").fetchall()
    assert all(p in tags and c in tags for p, c in edges), f"{context}: a dependency on a missing resource: {edges}"
    assert all(t in tags and n in nodes for t, n, _ in equivalencies), (
        f"{context}: a dangling equivalency: {equivalencies}"
    )
    try:
        graph.restore_order(edges, tags)
    except InternalError as exc:
        pytest.fail(f"{context}: {exc}")
    by_tag: dict[str, list[int]] = {}
    for tag, _node, priority in equivalencies:
        by_tag.setdefault(tag, []).append(priority)
    assert all(len(set(p)) == len(p) for p in by_tag.values()), (
        f"{context}: two nodes share a priority: {equivalencies}"
    )


def without_local_node(root: Path) -> Path:
    """An LCD with its schema and nothing else, as a crash between creating them and naming this node leaves it.

    The next command to open it names the local node. (Two commands on a state
    directory without any LCD race on something else first: putting a new file
    in WAL mode, which SQLite may refuse with "database is locked".)
    """
    Lcd.open(root, node="node1").close()
    with closing(sqlite3.connect(root / LCD_NAME)) as db:
        db.executescript("DELETE FROM nodes; DELETE FROM changes; DELETE FROM sqlite_sequence;")
    return root


def one_after_the_other(before: Path, commands: Sequence[Sequence[str]], scratch: Path) -> list[Outcome]:
    """What ``commands`` give run in this process one at a time, in each order, from the LCD ``before``."""
    outcomes = []
    for order in ((0, 1), (1, 0)):
        root = copy_lcd(before, scratch / "serial")
        codes = [0] * len(commands)
        for i in order:
            codes[i] = execute(root, commands[i]).code
        outcomes.append(Outcome(tuple(codes), contents(root)))
    shutil.rmtree(scratch / "serial")
    return outcomes


def assert_serial(
    root: Path, commands: Sequence[Sequence[str]], results: Sequence[Result], serial: list[Outcome], context: str
) -> None:
    """The race gave what one of the orders gives, codes and LCD alike."""
    codes = tuple(r.code for r in results)
    errors = [r.err for r in results]
    assert all("constraint" not in e and "internal error" not in e for e in errors), f"{context}: {errors}"
    got = Outcome(codes, contents(root))
    if got in serial:
        return
    if codes not in [o.codes for o in serial]:
        orders = [o.codes for o in serial]
        pytest.fail(f"{context}: {commands}: exit codes {codes} ({errors}); one after the other gives {orders}")
    want = dict(next(o.contents for o in serial if o.codes == codes))
    differ = {table: rows for table, rows in got.contents if rows != want.get(table)}
    pytest.fail(f"{context}: {commands}: exit codes {codes}, but the LCD is no order's: {differ} instead of "
                f"{ {t: want.get(t) for t in differ} }")  # fmt: skip


# ---------------------------------------------------------------------- each conflicting pair, 100 times


class Pair(NamedTuple):
    setup: list[list[str]] | None  # None: an LCD without its local node yet
    commands: tuple[list[str], list[str]]


PAIRS = {
    # Each may pass the cycle check alone; together they close a cycle.
    "dep_create both ways": Pair(
        [create("p"), create("q")], (["dep_create", "-p", "p", "-c", "q"], ["dep_create", "-p", "q", "-c", "p"])
    ),
    # ins_remove of what ins_create makes: removed or "no resource", never half.
    "ins_create / ins_remove": Pair([], (create("x"), ["ins_remove", "-t", "x"])),
    # The same tag twice: exit 4 "exists already" for the second, never a constraint error.
    "ins_create twice": Pair([], (create("x", "id-1"), create("x", "id-2"))),
    "eqv_create / eqv_remove": Pair(
        [create("x")], (["eqv_create", "-t", "x", "-S", "node2"], ["eqv_remove", "-t", "x", "-S", "node2"])
    ),
    # Two equivalencies of one resource: each takes the next free priority, never the same one.
    "eqv_create on two nodes": Pair(
        [create("x")], (["eqv_create", "-t", "x", "-S", "node2"], ["eqv_create", "-t", "x", "-S", "node3"])
    ),
    # The first two commands on a new LCD: one names the local node, never both.
    "first commands on a new LCD": Pair(None, (["app_create", "-a", "a1"], ["sys_create", "-s", "node2"])),
    # A dependent made while x is removed: removed with x, or refused because x is gone.
    "ins_remove / dep_create": Pair(
        [create("x"), create("y")], (["ins_remove", "-t", "x"], ["dep_create", "-p", "y", "-c", "x"])
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_conflicting_commands_at_once_give_the_result_of_one_after_the_other(
    name: str, racers: Racers, tmp_path: Path
) -> None:
    pair = PAIRS[name]
    template = tmp_path / "template"
    if pair.setup is None:
        without_local_node(template)
    else:
        lcd_with(template, pair.setup)
    serial = one_after_the_other(template, pair.commands, tmp_path)
    seen: Counter[tuple[int, ...]] = Counter()
    for round in range(1, ROUNDS + 1):
        root = copy_lcd(template, tmp_path / "race")
        results = racers.race(str(root), pair.commands)
        assert_whole(root, f"round {round}")
        assert_serial(root, pair.commands, results, serial, f"round {round}")
        seen[tuple(r.code for r in results)] += 1
    assert sum(seen.values()) == ROUNDS, seen


# ---------------------------------------------------------------------- random sequences of pairs

TAGS = ("a", "b", "c")
TAG = st.sampled_from(TAGS)
NODE = st.sampled_from(("node2", "node3"))
COMMAND = st.one_of(
    st.builds(create, TAG, st.sampled_from(("a", "b", "c", "d"))),
    st.builds(lambda t: ["ins_remove", "-t", t], TAG),
    st.builds(lambda t: ["ins_remove", "-R", t], TAG),
    st.builds(lambda p, c: ["dep_create", "-p", p, "-c", c], TAG, TAG),
    st.builds(lambda p, c: ["dep_remove", "-p", p, "-c", c], TAG, TAG),
    st.builds(
        lambda t, n, r: ["eqv_create", "-t", t, "-S", n, *(["-r", str(r)] if r else [])],
        TAG,
        NODE,
        st.sampled_from((None, 2, 3)),
    ),
    st.builds(lambda t, n: ["eqv_remove", "-t", t, "-S", n], TAG, NODE),
)


# Each step races two processes and then replays both orders here (two copies of the LCD,
# four commands): some 50 ms on a busy machine. 30 examples of at most 6 steps bound the
# test to 180 steps, about 10 s; the test above gives each known conflict its 100 races,
# this one looks for conflicts nobody thought of among the combinations of commands.
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.tuples(COMMAND, COMMAND), min_size=1, max_size=6))
def test_random_commands_from_two_processes_keep_the_lcd_whole(
    steps: list[tuple[list[str], list[str]]], racers: Racers, tmp_path: Path
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as name:
        scratch = Path(name)
        root = lcd_with(scratch / "lcd", [create("a"), create("b"), ["eqv_create", "-t", "b", "-S", "node2"]])
        for step, commands in enumerate(steps, 1):
            before = copy_lcd(root, scratch / "before")
            results = racers.race(str(root), commands)
            assert_whole(root, f"step {step}")
            assert_serial(root, commands, results, one_after_the_other(before, commands, scratch), f"step {step}")
