"""Scale benchmark of the LCD: 10,000 resources in 1,000 hierarchies of 10.

Everything is measured in one run, against baselines taken in the same run,
because the machine is shared and noisy:

* the build, through the Python API, one change per call (``create_resource``,
  ``create_dependency``, ``create_equivalency``): time and rate per kind, and
  the rate of the first and last 1,000 calls, which shows whether a call slows
  down as the LCD grows;
* single-resource changes per second on the full LCD: the median over batches
  of 500 ``set_state`` calls on random resources, each its own transaction
  (``set_info`` too, for comparison), interleaved with batches of raw SQLite
  transactions of the same shape in the same directory: the storage's own
  ceiling, so that a low figure can be told apart from a slow disk;
* ``lcdstatus`` as a whole process, as a user runs it: the console script with
  ``-e`` (the short form), without (the long form) and with ``--json``, stdout
  to /dev/null, interleaved with ``python -c pass`` run by the same interpreter.
  The overhead is the median of a form minus the median of ``python -c pass``.
  Bytecode is cached (in the temporary directory) as on an installed system,
  even under PYTHONDONTWRITEBYTECODE; one more run shows the cost without.

The last line is ``lcdstatus_overhead_s=<seconds>`` for ``lcdstatus -e``, the
line before it ``changes_per_s=<median set_state rate>``. Targets (from the
issue): overhead <= 0.5 s, >= 2,000 changes per second. The benchmark says
whether they are met and exits 0 either way; it exits 1 only when it cannot
measure (a command fails).

Run from the repository root: ``.venv/bin/python bench/lcd_scale.py [--quick]``.
``--quick`` takes fewer runs and batches but keeps the full scale, so its
figures stay those of the targets; ``--hierarchies 50`` makes a smoke test of
seconds. The state directory is made in a temporary directory (``--dir``
chooses where: the file system decides the cost of each commit's fsync) and
removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from hakeeper.db import Lcd, State

OVERHEAD_TARGET_S = 0.5
CHANGES_TARGET_PER_S = 2000
BATCH = 500
CHUNK = 1000
HIERARCHIES = 1000  # of 10 resources each: the scale of the targets
NODE, OTHER_NODE = "node1", "node2"
APP = "bench"

# One hierarchy: an application on a database and an IP address, each on file
# systems over volumes of one disk. fs1 is needed by both app and db (a diamond)
# and the disk by every volume, so lcdstatus shows shared children, as real
# hierarchies have.
TEMPLATE: tuple[tuple[str, str], ...] = (
    ("app", "app"),
    ("db", "db"),
    ("ip", "ip"),
    ("fs1", "fs"),
    ("fs2", "fs"),
    ("fs3", "fs"),
    ("vol1", "vol"),
    ("vol2", "vol"),
    ("vol3", "vol"),
    ("disk", "disk"),
)
TEMPLATE_EDGES: tuple[tuple[str, str], ...] = (
    ("app", "db"),
    ("app", "ip"),
    ("app", "fs1"),
    ("app", "fs2"),
    ("db", "fs1"),
    ("db", "fs3"),
    ("fs1", "vol1"),
    ("fs2", "vol2"),
    ("fs3", "vol3"),
    ("vol1", "disk"),
    ("vol2", "disk"),
    ("vol3", "disk"),
)
TYPES = sorted({rtype for _, rtype in TEMPLATE})
SETTABLE = (State.ISP, State.ISU, State.OSU)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and batches (a smoke test)")
    parser.add_argument("--runs", type=int, help="runs of each command (default 11, 3 with --quick)")
    parser.add_argument("--batches", type=int, help=f"batches of {BATCH} changes (default 9, 3 with --quick)")
    parser.add_argument(
        "--hierarchies",
        type=int,
        default=HIERARCHIES,
        help=f"hierarchies of 10 resources to build (default {HIERARCHIES}, the scale of the targets; "
        "fewer for a faster smoke test)",
    )
    parser.add_argument("--dir", help="where to make the temporary state directory (default: the system's)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random choices (default 1)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 11)
    batches = args.batches or (3 if args.quick else 9)
    if runs < 1 or batches < 1 or args.hierarchies < 1:
        parser.error("--runs, --batches and --hierarchies must be at least 1")
    script = Path(sys.executable).parent / "lcdstatus"
    if not script.exists():
        print(f"lcd_scale: no console script {script} (install the project: make venv)", file=sys.stderr)
        return 1
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="hakeeper-bench-", dir=args.dir) as tmp:
        root = Path(tmp) / "state"
        print(f"LCD scale benchmark: python {sys.version.split()[0]}, state directory in {tmp}")
        if args.hierarchies != HIERARCHIES:
            print(f"note: {args.hierarchies} hierarchies, not {HIERARCHIES}: the figures are not those of the targets")
        with Lcd.open(root, node=NODE, actor="bench") as lcd:
            tags = build(lcd, args.hierarchies)
            changes_per_s = measure_changes(lcd, Path(tmp), tags, batches, rng)
        overheads = measure_lcdstatus(script, root, Path(tmp) / "pycache", runs, rng)

    short = overheads["lcdstatus -e"]
    print(
        f"target lcdstatus -e overhead <= {OVERHEAD_TARGET_S} s: "
        f"{'met' if short <= OVERHEAD_TARGET_S else 'NOT met'} ({short:.3f} s)"
    )
    print(
        f"target >= {CHANGES_TARGET_PER_S} changes/s: "
        f"{'met' if changes_per_s >= CHANGES_TARGET_PER_S else 'NOT met'} ({changes_per_s:.0f}/s)"
    )
    print(f"changes_per_s={changes_per_s:.0f}")
    print(f"lcdstatus_overhead_s={short:.3f}")
    return 0


# ---------------------------------------------------------------------- build


def build(lcd: Lcd, hierarchies: int) -> list[str]:
    """Create the hierarchies one change per call; print the time and rate of each kind. Returns every tag."""
    lcd.create_node(OTHER_NODE)
    lcd.create_app(APP)
    for rtype in TYPES:
        lcd.create_type(APP, rtype)
    names = [f"h{n:04d}" for n in range(hierarchies)]
    tags = [f"{h}-{part}" for h in names for part, _ in TEMPLATE]
    print(
        f"building {hierarchies} hierarchies x {len(TEMPLATE)} = {len(tags)} resources, "
        f"{hierarchies * len(TEMPLATE_EDGES)} dependencies, {len(tags)} equivalencies to {OTHER_NODE}"
    )

    phases: list[tuple[str, list[Callable[[], object]]]] = [
        (
            "create_resource",
            [
                partial(
                    lcd.create_resource, f"{h}-{part}", f"/bench/{h}/{part}", APP, rtype, info=_info(n, h, part, rtype)
                )
                for n, h in enumerate(names)
                for part, rtype in TEMPLATE
            ],
        ),
        (
            "create_dependency",
            [partial(lcd.create_dependency, f"{h}-{p}", f"{h}-{c}") for h in names for p, c in TEMPLATE_EDGES],
        ),
        ("create_equivalency", [partial(lcd.create_equivalency, tag, OTHER_NODE) for tag in tags]),
    ]
    total_calls = 0
    started = time.perf_counter()
    for name, calls in phases:
        chunk_rates: list[float] = []
        count = 0
        phase_started = chunk_started = time.perf_counter()
        for call in calls:
            call()
            count += 1
            if count % CHUNK == 0:
                now = time.perf_counter()
                chunk_rates.append(CHUNK / (now - chunk_started))
                chunk_started = now
        elapsed = time.perf_counter() - phase_started
        total_calls += count
        trend = (
            f" (first {CHUNK}: {chunk_rates[0]:.0f}/s, last {CHUNK}: {chunk_rates[-1]:.0f}/s)"
            if len(chunk_rates) >= 2
            else ""
        )
        print(f"  {name:<18} {count:>6} calls in {elapsed:6.1f} s = {count / elapsed:6.0f}/s{trend}")
    elapsed = time.perf_counter() - started
    print(f"  build total        {total_calls:>6} changes in {elapsed:6.1f} s = {total_calls / elapsed:6.0f}/s")
    return tags


def _info(n: int, h: str, part: str, rtype: str) -> Any:
    """A small info value like a kit would keep: JSON for file systems and addresses, a string otherwise."""
    if rtype == "fs":
        return {"mount": f"/srv/{h}/{part}", "fstype": "ext4", "options": "noatime"}
    if rtype == "ip":
        return {"address": f"10.{n // 250}.{n % 250}.10", "prefix": 24, "nic": "eth0"}
    return f"/dev/mapper/{h}-{part}"


# ---------------------------------------------------------------------- single-resource changes


def measure_changes(lcd: Lcd, tmp: Path, tags: list[str], batches: int, rng: random.Random) -> float:
    """Median changes per second of set_state (and set_info) batches, against raw SQLite of the same shape."""
    raw = RawSqlite(tmp / "baseline.sqlite", len(tags))
    rates: dict[str, list[float]] = {"set_state": [], "set_info": [], "raw SQLite": []}
    try:
        for _ in range(batches):
            picks = [rng.choice(tags) for _ in range(BATCH)]
            set_state = [partial(lcd.set_state, tag, rng.choice(SETTABLE), "bench") for tag in picks]
            set_info = [partial(lcd.set_info, tag, {"bench": i}) for i, tag in enumerate(picks)]
            raw_changes = [partial(raw.change, rng.randrange(len(tags))) for _ in range(BATCH)]
            rates["set_state"].append(_rate(set_state))
            rates["set_info"].append(_rate(set_info))
            rates["raw SQLite"].append(_rate(raw_changes))
    finally:
        raw.close()
    print(
        f"single-resource changes on {len(tags)} resources: median of {batches} batches of {BATCH}, "
        "each change its own transaction"
    )
    for name, values in rates.items():
        print(f"  {name:<10} {_median_line(values, '/s', 0)}")
    ceiling = statistics.median(rates["raw SQLite"])
    changes_per_s = statistics.median(rates["set_state"])
    print(
        f"  set_state reaches {changes_per_s / ceiling:.0%} of the raw SQLite rate "
        "(the same transaction shape, WAL, synchronous=FULL, same directory)"
    )
    return changes_per_s


def _rate(calls: Sequence[Callable[[], object]]) -> float:
    """Changes per second of ``calls``, made one after the other."""
    started = time.perf_counter()
    for call in calls:
        call()
    return len(calls) / (time.perf_counter() - started)


class RawSqlite:
    """The storage's ceiling: one transaction per change, as the LCD does it, without hakeeper's code."""

    def __init__(self, path: Path, rows: int) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("CREATE TABLE r (tag TEXT PRIMARY KEY, state INTEGER, reason TEXT)")
        self.conn.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, args TEXT)")
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO r VALUES (?, 3, '')", ((f"t{i}",) for i in range(rows)))
        self.conn.execute("COMMIT")

    def change(self, row: int) -> None:
        tag = f"t{row}"
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("SELECT * FROM r WHERE tag = ?", (tag,)).fetchall()
        self.conn.execute("UPDATE r SET state = ?, reason = 'bench' WHERE tag = ?", (row % 3, tag))
        self.conn.execute("INSERT INTO log (time, args) VALUES (?, ?)", (time.time(), tag))
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------------- lcdstatus as a process


def measure_lcdstatus(script: Path, root: Path, pycache: Path, runs: int, rng: random.Random) -> dict[str, float]:
    """Median wall-clock time of each form of lcdstatus minus that of ``python -c pass``; returns the overheads.

    The commands run as on an installed system, where hakeeper's modules are
    byte-compiled: bytecode is cached in the usual ``__pycache__`` directories
    whatever PYTHONDONTWRITEBYTECODE says (PYTHONPYCACHEPREFIX would also move
    the standard library's cache away, and every command took about 0.25 s
    longer with it). One more command, ``lcdstatus -e (no .pyc)``, shows what
    compiling every module on every run costs on top (a first run of an
    installed system, or one whose caches cannot be written): its cache prefix
    is an empty directory (``pycache``) it may not write (PYTHONDONTWRITEBYTECODE).
    No hakeeperd runs on the LCD: the commands work on it themselves.
    """
    python = sys.executable
    env = dict(os.environ, HAKEEPER_ROOT=str(root))
    for name in ("HAKEEPER_DEBUG", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
        env.pop(name, None)
    uncached = dict(env, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(pycache))
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([python, "-c", "pass"], env),
        "import hakeeper.cli.status": ([python, "-c", "import hakeeper.cli.status"], env),
        "lcdstatus -e": ([str(script), "-e"], env),
        "lcdstatus": ([str(script)], env),
        "lcdstatus --json": ([str(script), "--json"], env),
        "lcdstatus -e (no .pyc)": ([str(script), "-e"], uncached),
    }
    print("lcdstatus output on this LCD (a warm-up run of each command, which also checks that it works):")
    for name, (argv, environ) in commands.items():  # warm up: page cache, .pyc files
        result = subprocess.run(argv, env=environ, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"lcd_scale: {name} failed with exit code {result.returncode}: {result.stderr.strip()}")
        if name in ("lcdstatus -e", "lcdstatus", "lcdstatus --json"):
            lines = result.stdout.count("\n")
            print(f"  {name:<26} prints {lines} lines, {len(result.stdout.encode()) / 1e6:.1f} MB")

    times: dict[str, list[float]] = {name: [] for name in commands}
    order = list(commands)
    for _ in range(runs):
        rng.shuffle(order)  # interleaved, in a new order each round, so drift hits every command alike
        for name in order:
            argv, environ = commands[name]
            started = time.perf_counter()
            code = subprocess.call(argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - started)
            if code != 0:
                raise SystemExit(f"lcd_scale: {name} failed with exit code {code}")

    base = statistics.median(times["python -c pass"])
    print(
        f"whole processes, median of {runs} interleaved runs, stdout to /dev/null, bytecode cached "
        "(overhead = beyond python -c pass)"
    )
    overheads: dict[str, float] = {}
    for name, values in times.items():
        overhead = statistics.median(values) - base
        overheads[name] = overhead
        extra = "" if name == "python -c pass" else f"  overhead {overhead:.3f} s"
        print(f"  {name:<26} {_median_line(values, ' s', 3)}{extra}")
    return overheads


def _median_line(values: list[float], unit: str, decimals: int) -> str:
    return (
        f"median {statistics.median(values):8.{decimals}f}{unit}"
        f"  (min {min(values):.{decimals}f}, max {max(values):.{decimals}f}, n={len(values)})"
    )


if __name__ == "__main__":
    sys.exit(main())
