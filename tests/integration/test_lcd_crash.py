"""Crash safety of the LCD: SIGKILL a process that is changing it, hundreds of times.

A writer process (``lcd_writer.py``) applies a long, seeded sequence of LCDI
operations to an LCD, each as actor ``op<index>``; the test kills it with
SIGKILL at a random moment, inspects the database, starts a new writer that
carries on after the last committed operation, and so on. Three kills in four
come from the test after a random delay (most land while a change commits);
every fourth the writer SIGKILLs itself just before a random one of its
INSERT/UPDATE/DELETE statements, in the middle of a change, often in the middle
of a removal of a whole hierarchy. After every kill:

* the database opens, and ``PRAGMA integrity_check`` says ok (through a plain
  SQLite connection and through :class:`Lcd`);
* its whole contents, change log included (but its times), equal those of a
  reference LCD to which the test itself applied operations 0..k, where k is
  the last operation the change log records: the state after a prefix of the
  operations, never half of one;
* nothing committed is lost, and an operation the writer was killed in before
  it started to commit is not there at all.

Half the inspections leave the write-ahead log in place (the next writer starts
on a WAL holding whatever the killed one wrote); the others checkpoint it. A
database that does not open makes the next writer fail, which fails the test.

A second test aims its kills at the very first open, when the LCD is created:
the schema and the local node must come whole or not at all.

The operations depend on HAKEEPER_CRASH_SEED (default 20240611); the moments of
the kills are random, so a failure message names the kill and where it landed.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from hakeeper.db import Lcd
from hakeeper.db.schema import SCHEMA_VERSION
from hakeeper.layout import LCD_NAME
from tests.integration.lcd_writer import LOCAL_NODE, OPEN_ACTOR, REMOVALS, apply, last_op_index, operation

WRITER = Path(__file__).with_name("lcd_writer.py")
SEED = int(os.environ.get("HAKEEPER_CRASH_SEED", "20240611"))
KILLS = 280
AIMED_EVERY = 4  # every 4th kill the writer SIGKILLs itself before one of its statements, in a change
MIN_KILLS = 200  # kills by the test itself after a random time: the other 3 in 4
FRESH_KILLS = 30
EARLY_KILL_SHARE = 0.1  # kills aimed at the writer's start-up rather than at its changes
MAX_DELAY_AFTER_READY = 0.030
READY_TIMEOUT = 30.0
TIME_LIMIT = 400.0  # bounds the loops; not a performance requirement

Dump = dict[str, list[tuple[Any, ...]]]


def dump(conn: sqlite3.Connection) -> Dump:
    """Everything in the database but the change log's times: schema, user_version, every row of every table."""
    out: Dump = {
        "user_version": [tuple(conn.execute("PRAGMA user_version").fetchone())],
        "sqlite_master": conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY 1, 2").fetchall(),
    }
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
        columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")') if row[1] != "time"]
        listed = ", ".join(f'"{c}"' for c in columns)
        out[f"table {table}"] = conn.execute(f'SELECT {listed} FROM "{table}" ORDER BY {listed}').fetchall()
    return out


def migrated_only(initialized: Dump) -> Dump:
    """The dump of an LCD whose schema is in place but whose tables are all still empty."""
    return {key: rows if not key.startswith("table ") else [] for key, rows in initialized.items()}


EMPTY: Dump = {"user_version": [(0,)], "sqlite_master": []}


def difference(live: Dump, expected: Dump) -> str:
    """The first part of two dumps that differs, a few rows each way."""
    for key in sorted(set(live) | set(expected)):
        mine, theirs = live.get(key, []), expected.get(key, [])
        if mine != theirs:
            extra = [row for row in mine if row not in set(theirs)][:3]
            missing = [row for row in theirs if row not in set(mine)][:3]
            return f"{key}: only in the killed LCD {_short(extra)}; only in the reference {_short(missing)}"
    return "no difference"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 600 else f"{text[:600]}...<{len(text)} chars>"


@dataclass
class Seen:
    """What an inspection after a kill found."""

    stage: str  # "absent", "empty", "schema only" or "initialized"
    last_op: int  # the last operation the change log records, -1 if none
    dump: Dump | None


def inspect(root: Path, *, keep_wal: bool) -> Seen:
    """Open the killed writer's LCD, check it is sound, and read its contents.

    With ``keep_wal`` a read-only connection stays open until the others have
    closed, so none of them checkpoints and the next writer finds the WAL as is.
    """
    path = root / LCD_NAME
    if not path.exists():
        return Seen("absent", -1, None)
    conn = sqlite3.connect(path)
    keeper: sqlite3.Connection | None = None
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        snapshot = dump(conn)
        changes = snapshot.get("table changes", [])
        if not changes:
            return Seen("schema only" if snapshot["sqlite_master"] else "empty", -1, snapshot)
        if keep_wal:
            keeper = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            keeper.execute("SELECT count(*) FROM sqlite_master").fetchall()
        last_actor = changes[-1][1]  # rows are (seq, actor, op, args), by seq
        last = int(last_actor[2:]) if last_actor.startswith("op") else -1
        with Lcd.open(root, actor="crash-check") as lcd:  # writes nothing to an initialized LCD
            assert lcd.integrity_ok()
            assert last_op_index(lcd) == last
        return Seen("initialized", last, snapshot)
    finally:
        conn.close()
        if keeper is not None:
            keeper.close()


@dataclass
class Reference:
    """A second LCD to which the test applies the operations itself, one prefix after another."""

    root: Path
    seed: int
    applied: int = -1
    committed: set[int] = field(default_factory=set)
    removed: dict[int, int] = field(default_factory=dict)  # operation index -> resources it removed

    def __post_init__(self) -> None:
        self.lcd = Lcd.open(self.root, actor=OPEN_ACTOR, node=LOCAL_NODE)
        self.conn = sqlite3.connect(self.root / LCD_NAME)
        self.initialized = dump(self.conn)
        self.migrated = migrated_only(self.initialized)
        self._dump = self.initialized

    def advance(self, last: int) -> Dump:
        """Apply the operations up to ``last`` and return the dump of the result."""
        assert last >= self.applied, f"committed operations op{last + 1}..op{self.applied} were lost"
        for index in range(self.applied + 1, last + 1):
            op = operation(self.seed, index)
            committed, result = apply(self.lcd, op)
            if committed:
                self.committed.add(index)
                if op.method in REMOVALS:
                    self.removed[index] = len(result)
        if last > self.applied:
            self.applied = last
            self._dump = dump(self.conn)
        return self._dump

    def close(self) -> None:
        self.conn.close()
        self.lcd.close()


@dataclass
class Landing:
    """Where in the writer's work a kill landed, from its progress file."""

    where: str
    op: int  # the operation it was in or had just finished, -1 before the first
    done: list[int]  # operations it saw commit in this run
    opened_at: float | None
    ready_at: float | None
    writes_done: int  # for a kill aimed inside a change: how many of its data-changing statements had run


def landing(progress: Path) -> Landing:
    text = progress.read_text()
    lines = text.split("\n")[:-1]  # a line cut short by the kill does not count
    op, done, writes_done = -1, [], 0
    opened_at = ready_at = None
    for line in lines:
        word, *rest = line.split()
        if word == "open":
            opened_at = float(rest[0])
        elif word == "ready":
            ready_at = float(rest[1])
        elif word == "op":
            op = int(rest[0])
        elif word == "done" and rest[1] == "1":
            done.append(int(rest[0]))
        elif word == "kill":
            writes_done = int(rest[0])
    last = lines[-1].split()[0] if lines else ""
    where = {
        "": "starting",
        "open": "opening the LCD",
        "ready": "between changes",
        "done": "between changes",
        "op": "checking an operation",
        "begin": "inside a transaction",
        "kill": "inside a transaction (aimed)",
        "commit": "committing",
        "rollback": "rolling back",
    }[last]
    return Landing(where, op, done, opened_at, ready_at, writes_done)


def read_line(stream: IO[bytes], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline().decode() if ready else ""


@dataclass
class Writer:
    """One run of lcd_writer.py, killed by PID."""

    root: Path
    seed: int
    progress: Path
    errors: Path
    started: float = 0.0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, aim: str = "none") -> None:
        """Start a writer; with an ``aim`` (see lcd_writer.py) it SIGKILLs itself in the middle of a change."""
        self.progress.write_bytes(b"")
        with self.errors.open("wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(self.root), str(self.seed), str(self.progress), aim],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=self.root.parent,
            )

    def wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = read_line(self.proc.stdout, READY_TIMEOUT)
        assert line.startswith("ready"), f"the writer did not start: {self.stderr()}"

    def kill(self) -> None:
        """SIGKILL the writer and reap it; it must not have ended by itself."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        self._forget()
        assert code == -signal.SIGKILL, f"the writer ended by itself with {code}: {self.stderr()}"

    def reap(self, timeout: float) -> None:
        """Reap a writer that was told to SIGKILL itself; kill it if it has not within ``timeout``."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the writer did not kill itself within {timeout} s")
        self._forget()
        assert code == -signal.SIGKILL, f"the writer ended with {code}, not its own SIGKILL: {self.stderr()}"

    def stop(self) -> None:
        """Clean-up when the test ends early: kill the writer if it still runs."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self._forget()

    def _forget(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None

    def stderr(self) -> str:
        return self.errors.read_text(errors="replace")[-3000:]


@pytest.mark.slow
def test_sigkilled_writer_leaves_the_lcd_after_a_prefix_of_its_changes(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    live = tmp_path / "live"
    reference = Reference(tmp_path / "reference", SEED)
    writer = Writer(live, SEED, tmp_path / "progress", tmp_path / "stderr")
    startup = 0.1  # seconds from spawning a writer to its ready line, learned as we go
    kills: Counter[str] = Counter()  # "timed" by the test, "aimed" by the writer at one of its statements
    landings: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    commits: Counter[str] = Counter()  # kills while committing: was the change kept?
    in_transaction: list[int] = []  # operations killed after BEGIN, before COMMIT started
    half_done: list[tuple[int, int]] = []  # (operation, how many of its data-changing statements had run)
    wal_starts = 0  # writers started on a WAL left by a killed one
    progressed = 0
    last = -1
    began = time.monotonic()
    try:
        for round_ in range(KILLS):
            assert time.monotonic() - began < TIME_LIMIT, f"only {kills.total()} kills in {TIME_LIMIT} s"
            aimed = round_ % AIMED_EVERY == AIMED_EVERY - 1
            context = f"seed {SEED}, kill {round_ + 1}"
            wal = live / f"{LCD_NAME}-wal"
            wal_starts += wal.exists() and wal.stat().st_size > 0
            if aimed:
                if rng.random() < 0.5:
                    writer.start(aim=f"write:{rng.randint(1, 80)}")
                else:  # after one to four of the removed resources (3 statements each), or more
                    writer.start(aim=f"removal:{rng.choice((3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 18))}")
                writer.reap(READY_TIMEOUT)
                kills["aimed"] += 1
            else:
                writer.start()
                if rng.random() < EARLY_KILL_SHARE:
                    time.sleep(rng.uniform(0, startup * 1.1))
                else:
                    writer.wait_ready()
                    startup = 0.8 * startup + 0.2 * (time.monotonic() - writer.started)
                    time.sleep(rng.uniform(0, MAX_DELAY_AFTER_READY))
                writer.kill()
                kills["timed"] += 1
            where = landing(writer.progress)
            landings[where.where] += 1

            seen = inspect(live, keep_wal=rng.random() < 0.5)
            stages[seen.stage] += 1
            context += f", killed {where.where} (op{where.op}), LCD {seen.stage} at op{seen.last_op}"
            assert seen.last_op >= last, f"{context}: committed operations after op{seen.last_op} were lost"
            assert all(index <= seen.last_op for index in where.done), f"{context}: a committed change was lost"
            if where.where.startswith(("checking", "inside", "rolling")):
                assert seen.last_op < where.op, f"{context}: op{where.op} is there though it never committed"
            if where.where.startswith("inside"):
                in_transaction.append(where.op)
            if where.writes_done:
                half_done.append((where.op, where.writes_done))
            if where.where == "committing":
                commits["kept" if seen.last_op == where.op else "lost"] += 1
            if seen.stage == "initialized":
                assert seen.dump is not None
                expected = reference.advance(seen.last_op)
                assert seen.dump == expected, f"{context}: {difference(seen.dump, expected)}"
            elif seen.stage != "absent":
                assert seen.dump in (EMPTY, reference.migrated), f"{context}: half-made LCD {_short(seen.dump)}"
            if seen.last_op > last:
                progressed += 1
            last = seen.last_op
    finally:
        writer.stop()
        reference.close()

    elapsed = time.monotonic() - began
    redone = [i for i in in_transaction if i in reference.committed]
    removals = [i for i, w in half_done if operation(SEED, i).method in REMOVALS and w >= 3]
    several = [i for i in removals if reference.removed.get(i, 0) >= 2]
    print(
        f"\n{kills.total()} kills {dict(kills)} in {elapsed:.1f} s (seed {SEED}):"
        f" {progressed} after the writer had committed changes in that run;"
        f" {last + 1} operations done, {len(reference.committed)} committed, the others refused;"
        f" kills landed {dict(landings)}; LCD found {dict(stages)}; kills while committing {dict(commits)};"
        f" {len(redone)} kills inside the transaction of a change that committed when redone,"
        f" {len(half_done)} after some of its rows were written,"
        f" {len(removals)} in a removal after whole resources were deleted"
        f" ({len(several)} of them removing several resources when redone);"
        f" {wal_starts} writers started on a WAL left by a killed one"
    )
    assert kills["timed"] >= MIN_KILLS
    assert progressed >= kills.total() // 4, f"the writer made progress before only {progressed} kills"
    assert landings["committing"] >= 10, f"too few kills landed while committing: {landings}"
    assert len(half_done) >= 10, f"too few kills landed after part of a change was written: {half_done}"
    assert len(removals) >= 10, f"too few kills landed in the middle of a removal: {removals}"
    assert wal_starts >= KILLS // 10, f"only {wal_starts} writers started on a WAL left by a killed one"


@pytest.mark.slow
def test_sigkill_while_the_lcd_is_created_leaves_it_whole_or_not_at_all(tmp_path: Path) -> None:
    """Kills aimed at the first open: the schema and the local node come whole or not at all."""
    rng = random.Random(SEED)
    reference = Reference(tmp_path / "reference", SEED)
    stages: Counter[str] = Counter()
    landings: Counter[str] = Counter()
    writer: Writer | None = None
    began = time.monotonic()
    # When (after spawning) a writer starts and ends opening, measured on this machine now (it varies with the
    # machine's load: a guess made kills land before the interpreter is up), then learned as we go.
    probe = Writer(tmp_path / "calibration", SEED, tmp_path / "progress", tmp_path / "stderr")
    probe.start()
    probe.wait_ready()
    probe.kill()
    first = landing(probe.progress)
    assert first.opened_at is not None and first.ready_at is not None, "the writer reported its opening"
    opening = (first.opened_at - probe.started, first.ready_at - probe.started)
    shift = 0.0
    try:
        for round_ in range(FRESH_KILLS):
            assert time.monotonic() - began < TIME_LIMIT, f"only {round_} kills in {TIME_LIMIT} s"
            root = tmp_path / f"fresh{round_}"
            writer = Writer(root, SEED, tmp_path / "progress", tmp_path / "stderr")
            writer.start()
            time.sleep(max(0.0, shift + rng.uniform(opening[0] - 0.002, opening[1] + 0.002)))
            writer.kill()
            where = landing(writer.progress)
            landings[where.where] += 1
            if where.opened_at is not None and where.ready_at is not None:
                opening = (where.opened_at - writer.started, where.ready_at - writer.started)
            # Aim: a start slower than measured (a busy machine) puts kills before the opening; move later, or back.
            if where.where == "starting":
                shift += 0.002
            elif where.where != "opening the LCD":
                shift -= 0.002
            seen = inspect(root, keep_wal=rng.random() < 0.5)
            stages[seen.stage] += 1
            context = f"seed {SEED}, fresh kill {round_ + 1}, killed {where.where}, LCD {seen.stage}"
            if seen.stage == "initialized":
                assert seen.dump is not None
                if seen.last_op == -1:
                    expected = reference.initialized
                else:  # the writer got as far as its first changes: compare with a reference of its own
                    other = Reference(tmp_path / f"reference{round_}", SEED)
                    try:
                        expected = other.advance(seen.last_op)
                    finally:
                        other.close()
                assert seen.dump == expected, f"{context}: {difference(seen.dump, expected)}"
            elif seen.stage != "absent":
                assert seen.dump in (EMPTY, reference.migrated), f"{context}: half-made LCD {_short(seen.dump)}"
            # Whatever the kill left, the next open completes it.
            with Lcd.open(root, actor=OPEN_ACTOR, node=LOCAL_NODE) as lcd:
                assert lcd.integrity_ok()
                assert lcd._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
                assert [n.name for n in lcd.nodes() if n.local] == [LOCAL_NODE]
            writer = None
    finally:
        if writer is not None:
            writer.stop()
        reference.close()
    print(f"\n{FRESH_KILLS} kills of a writer creating its LCD: landed {dict(landings)}; LCD found {dict(stages)}")
    assert landings["opening the LCD"] >= 3, f"too few kills landed while the LCD was being opened: {landings}"
