"""How long an LCDI command takes as a whole process, against ``python3 -c pass``, on an LCD of 1,000 resources.

LifeKeeper's LCDI commands are small C programs that administrators call in
loops; hakeeper's are Python console scripts, and their fixed cost (the
interpreter, then every module a command imports) is paid at every call. This
benchmark measures what a user sees, in two modes, in the same run:

* **with hakeeperd**, the normal state of a node: the command line goes to the
  daemon, and the command's process imports only :mod:`hakeeper.wire` and
  :mod:`hakeeper.cli.console` (:func:`hakeeper.cli.main.front`);
* **alone**, no daemon on the state directory: the command parses and opens
  the LCD itself.

Each mode: an LCD of 1,000 gen/app resources (built through the Python API,
not timed), INIT_OSU: they have no scripts, and AUTORES_ISP would have hakeeperd
try (and fail) to restore each of them at start, a storm of some 25 s that the
first measurements of this benchmark ran inside; ``ins_list`` (all 1,000), ``lcdstatus -e`` (the short form) and
``ins_create`` (one more resource, a new tag each time) run as processes from
the environment's console scripts, stdout to /dev/null, interleaved with
``python -c pass`` run by the same interpreter, in a random order per round;
bytecode cached in the usual ``__pycache__`` directories, as on an installed
system (a first untimed run of each command writes it). With
PYTHONPYCACHEPREFIX every command took about 0.25 s longer here: the
standard library's own caches are not used then.

Each command's figure is the median of its runs; the ratio is that median over
the median of ``python -c pass`` of the same mode. The last two lines are
``cli_alone_vs_bare_python=<ratio>`` and ``cli_vs_bare_python=<ratio>`` (with
hakeeperd), each the largest of the three ratios. Target (issue 11): <= 2.5.
It exits 0 whether or not the target is met, 1 when a command fails.

Run from the repository root: ``.venv/bin/python bench/cli_latency.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hakeeper.db import Init, Lcd

BIN = Path(sys.executable).parent
RESOURCES = 1000
TARGET = 2.5
BARE = "python -c pass"


def build(root: Path, count: int) -> None:
    with Lcd.open(root, node="node1") as lcd:
        lcd.register_kits(["gen/app"])
        for i in range(count):
            lcd.create_resource(f"r{i:04d}", f"id{i:04d}", "gen", "app", init=Init.INIT_OSU)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, timeout=120)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    return took


def measure(
    commands: dict[str, Callable[[], list[str]]], env: dict[str, str], runs: int, rng: random.Random
) -> dict[str, list[float]]:
    """Every command's wall times over ``runs`` rounds, each round in a random order."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():  # once each, untimed: bytecode compiled, caches warm
        timed(argv(), env)
    for _ in range(max(1, runs)):  # bounded: runs rounds of four processes
        order = list(commands)
        rng.shuffle(order)
        for name in order:
            times[name].append(timed(commands[name](), env))
    return times


def report(title: str, times: dict[str, list[float]]) -> float:
    """Print one mode's medians; the largest ratio to bare python."""
    bare = statistics.median(times[BARE])
    ratios = {}
    print(f"{title}: python -c pass {bare * 1000:.1f} ms")
    for name, values in times.items():
        if name == BARE:
            continue
        median = statistics.median(values)
        ratios[name] = median / bare
        print(f"  {name}: {median * 1000:.1f} ms ({ratios[name]:.1f} x bare python, +{(median - bare) * 1000:.0f} ms)")
    return max(ratios.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds of every command per mode (default 15)")
    parser.add_argument("--resources", type=int, default=RESOURCES, help=f"resources in the LCD (default {RESOURCES})")
    args = parser.parse_args()
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="hakeeper-bench-cli-") as tmp:
        root = Path(tmp) / "state"
        root.mkdir()
        build(root, args.resources)
        env = dict(os.environ, HAKEEPER_ROOT=str(root), HAKEEPER_NODE="node1")
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached in __pycache__, as on an installed system
        counter = iter(range(1_000_000))

        def create() -> list[str]:
            tag = f"new{next(counter)}"
            return [str(BIN / "ins_create"), "-a", "gen", "-r", "app", "-t", tag, "-i", tag]

        commands: dict[str, Callable[[], list[str]]] = {
            BARE: lambda: [sys.executable, "-c", "pass"],
            "ins_list": lambda: [str(BIN / "ins_list")],
            "lcdstatus -e": lambda: [str(BIN / "lcdstatus"), "-e"],
            "ins_create": create,
        }
        print(f"LCD of {args.resources} resources; {args.runs} rounds a mode, medians (bytecode cached)")
        try:
            alone = report("alone (no hakeeperd)", measure(commands, env, args.runs, rng))
            timed([str(BIN / "lkstart")], env)
            try:
                with_daemon = report("with hakeeperd", measure(commands, env, args.runs, rng))
            finally:
                subprocess.run([str(BIN / "lkstop")], env=env, capture_output=True, check=False, timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"cli latency benchmark failed: {exc}")
            return 1
    print(f"target <= {TARGET:g} x bare python: alone {'met' if alone <= TARGET else 'not met'}, "
          f"with hakeeperd {'met' if with_daemon <= TARGET else 'not met'}")  # fmt: skip
    print(f"cli_alone_vs_bare_python={alone:.2f}")
    print(f"cli_vs_bare_python={with_daemon:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
