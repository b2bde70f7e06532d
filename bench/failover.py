"""Failover: power off the node that serves a web app and time until the client is served again, in parts.

Runs as root (it builds the test LAN of network namespaces: 3 nodes on two
networks, so two communication paths per pair, and a client). ``web`` is a
gen/app resource whose server answers every GET with its node's name (the
failover tests' app, ``tests/harness/webapp.py``), extended to every node
(node1 priority 1, node2 2, node3 3) and in service on node1. A prober in the
client asks every node's address:8080 who serves, every 10 ms, each probe on a
new connection (``tests/harness/probe.py``).

One run: with every path ALIVE, web ISP on node1 and OSU elsewhere, and the
client served by node1, node1 is powered off (its links dropped, every process
in it SIGKILLed). The **outage** is the start of the first probe round answered
by another node minus the moment just before the power-off: what a user sees.
No round may be answered by two nodes (the run fails if one is). Its parts come
from the wall-clock timestamps of the taking-over node's hakeeperd log
(millisecond resolution), against the wall clock noted at power-off:

* **detection**: power-off to ``node1 DEAD: all … paths DEAD`` (every path
  silent for heartbeat_interval x heartbeat_misses);
* **decision**: from there to ``… has the highest live priority …; restoring
  web``: catching up on the configuration, quorum, ``takeover_delay``, and asking
  the other live node whether it sees node1 dead too (remote_verify);
* **restore**: from there to ``web OSU -> ISP (failover from node1)``: the plan,
  the restore script (start the server, poll until it listens: 50 ms steps), the
  state change recorded;
* **client**: the outage minus the three: until the next probe round is
  answered (ARP is warm, the client has kept probing node2, so this is mostly
  the 10 ms round spacing). It is usually slightly negative: the server listens
  before the restore script's poll (50 ms steps) notices and hakeeperd records
  ISP, so the client is served before the log says so. Each run line also
  gives when the server began to listen (its pid file's mtime, written once it
  listens), which places the client's part: the first answer comes within one
  round of that.

Between runs node1 is powered on, its hakeeperd started, and web switched back
to it (``perform_action -t web -a restore`` on node1); each run waits a random
fraction of a heartbeat interval first, so the power-off falls at a random
phase of the heartbeat timers. The figures are medians of 10 runs, printed
against the configured budget (heartbeat_interval x heartbeat_misses +
takeover_delay, from the LCD): the wait a failover cannot avoid with those
settings. A run without a takeover within 20 s ends the benchmark with the
reason and the daemons' logs, exit 1; the LAN, its processes and the temporary
directory are removed in every case.

Last line: failover_median_s=<median outage in seconds>
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.cluster import HaCluster
from tests.harness.lan import Lan, unavailable_reason
from tests.harness.probe import Prober, Round, double_service, served_by
from tests.harness.webapp import write_scripts

from hakeeper.db import Lcd, State
from hakeeper.db.settings import detection_budget

BIN = Path(sys.executable).parent
PORT = 8080
TAG = "web"
VICTIM = "node1"
TAKEOVER_LIMIT = 20.0  # s from power-off until another node must serve
LOG_LIMIT = 5.0  # s the takeover's log lines may lag the client's first answer
READY_LIMIT = 20.0  # s for node1 to be back, alive everywhere, and serving again
AFTER = 0.3  # s of probing after the takeover, for a double service to show
COMMAND_TIMEOUT = 120.0


class BenchFailed(Exception):
    """A run could not be measured; the message says why."""


@dataclass(frozen=True)
class Run:
    taker: str
    power_off: float  # s the harness's power_off() call took
    outage: float  # s from power-off to the first round answered by another node
    detection: float
    decision: float
    restore: float
    listening: float  # s from power-off until the new server listened (its pid file written)
    paused: bool  # remote_verify paused the takeover (the other survivor still saw node1 alive)

    @property
    def client(self) -> float:
        return self.outage - self.detection - self.decision - self.restore


def cli(ha: HaCluster, node: str, *argv: str) -> str:
    """Run a hakeeper command against ``node``'s hakeeperd; BenchFailed if it fails."""
    done = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        env=ha.env(node),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BenchFailed(f"on {node}: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def state(ha: HaCluster, node: str) -> State:
    with Lcd.open(ha.root(node)) as lcd:
        return lcd.resource(TAG).state


def states(ha: HaCluster) -> dict[str, State]:
    return {name: state(ha, name) for name in ha.names}


def in_place(ha: HaCluster) -> bool:
    """Every path ALIVE, web ISP on node1 and OSU on the others: where every run starts."""
    expected = {name: State.ISP if name == VICTIM else State.OSU for name in ha.names}
    return ha.all_alive() and states(ha) == expected


def setup_web(ha: HaCluster, scripts: dict[str, Path]) -> None:
    """web on every node (node1 priority 1, node2 2, node3 3), in service on node1."""
    params = [f"{action}={path}" for action, path in scripts.items()]
    cli(ha, VICTIM, "hakeeper", "create", "gen/app", "-t", TAG, "-s", "INTELLIGENT", "-Q", "120",
        "-I", "INIT_OSU", *params)  # fmt: skip
    for priority, node in enumerate(ha.names[1:], start=2):
        cli(ha, VICTIM, "hakeeper", "extend", "-t", TAG, "-s", node, "-p", str(priority))
    cli(ha, VICTIM, "perform_action", "-t", TAG, "-a", "restore")


def bring_back(ha: HaCluster, lan: Lan) -> None:
    """Power node1 on, start its hakeeperd, and switch web back to it."""
    node = lan.node(VICTIM)
    lan.power_on(node)
    ha.start(node)
    ha.wait(ha.all_alive, READY_LIMIT, f"{VICTIM} back and every path ALIVE")
    for attempt in range(5):  # bounded: a daemon just started may not have caught up yet
        try:
            cli(ha, VICTIM, "perform_action", "-t", TAG, "-a", "restore")
            break
        except BenchFailed:
            if attempt == 4:
                raise
            time.sleep(1.0)


def marks(path: Path, offset: int) -> list[tuple[float, str]]:
    """hakeeperd's log lines past byte ``offset``: (wall-clock time, line)."""
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue  # a traceback's continuation lines
        found.append((at, line[24:]))
    return found


def first_mark(found: list[tuple[float, str]], *texts: str) -> float | None:
    return next((at for at, line in found if all(t in line for t in texts)), None)


def first_other(rounds: list[Round], after: float) -> Round | None:
    """The first round started at or after ``after`` that a node other than node1 answered."""
    return next((r for r in rounds if r.t >= after and r.names - {VICTIM}), None)


def only_victim(rounds: list[Round]) -> bool:
    return bool(rounds) and rounds[-1].names == {VICTIM}


def one_run(ha: HaCluster, lan: Lan, out: Path, interval: float) -> Run:
    targets = [(n.address, PORT) for n in lan.nodes]
    logs = {name: ha.root(name) / "hakeeperd.log" for name in ha.names}
    with Prober(lan, targets, out) as prober:
        prober.wait_for(only_victim, 10, f"{VICTIM} serving, alone")
        time.sleep(0.3 + random.uniform(0, interval))  # a random phase against the heartbeat timers
        offsets = {name: path.stat().st_size for name, path in logs.items()}
        t0 = time.monotonic()
        wall0 = time.time()
        lan.power_off(lan.node(VICTIM))
        off_took = time.monotonic() - t0
        try:
            prober.wait_for(lambda r: first_other(r, t0) is not None, TAKEOVER_LIMIT, "another node serving")
        except AssertionError:
            raise BenchFailed(
                f"no other node served within {TAKEOVER_LIMIT:g} s of powering off {VICTIM} "
                f"(web: {', '.join(f'{n} {s.name}' for n, s in states(ha).items() if n != VICTIM)})"
            ) from None
        time.sleep(AFTER)
        rounds = prober.rounds()
    twice = double_service(rounds)
    if twice:
        who = [f"{t - t0:+.3f} s {name}" for t, name in served_by(rounds)]
        raise BenchFailed(f"{len(twice)} round(s) answered by two nodes at once: {', '.join(who)}")
    served = first_other(rounds, t0)
    assert served is not None  # waited for above
    taker = min(served.names - {VICTIM})
    wanted = {
        "detection": (f"{VICTIM} DEAD: all",),
        "decision": (f"{TAG}: {VICTIM} dead on all", f"{taker} has the highest live priority"),
        "restore": (f"{TAG} OSU -> ISP (failover from {VICTIM})",),
    }
    at: dict[str, float | None] = {}
    deadline = time.monotonic() + LOG_LIMIT
    for _ in range(int(LOG_LIMIT / 0.05) + 1):  # the ISP line may come after the client's first answer
        found = marks(logs[taker], offsets[taker])
        at = {part: first_mark(found, *texts) for part, texts in wanted.items()}
        if all(v is not None for v in at.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    missing = [" & ".join(wanted[part]) for part, v in at.items() if v is None]
    if missing:
        raise BenchFailed(f"{taker} serves, but its log lacks: {'; '.join(missing)}")
    dead, decided, restored = (float(at[p] or 0.0) for p in ("detection", "decision", "restore"))
    paused = first_mark(marks(logs[taker], offsets[taker]), "PAUSING takeover") is not None
    listening = (ha.root(taker) / f"webapp-{PORT}.pid").stat().st_mtime - wall0
    return Run(
        taker=taker,
        power_off=off_took,
        outage=served.t - t0,
        detection=dead - wall0,
        decision=decided - dead,
        restore=restored - decided,
        listening=listening,
        paused=paused,
    )


def describe(run: Run) -> str:
    paused = ", remote_verify paused" if run.paused else ""
    return (
        f"outage {run.outage:.3f} s = detection {run.detection:.3f} + decision {run.decision:.3f}"
        f" + restore {run.restore:.3f} + client {run.client:+.3f}; served by {run.taker},"
        f" its server listening at {run.listening:.3f} s (power_off() took {run.power_off:.3f} s{paused})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.quick else max(1, args.runs)
    reason = unavailable_reason()
    if reason:
        print(f"failover benchmark needs the test LAN: {reason}")
        return 1
    done: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="hakeeper-bench-failover-") as base, Lan(3, second_network=True) as lan:
        ha = HaCluster(lan, Path(base))
        try:
            ha.start_all()
            ha.wait(ha.all_alive, READY_LIMIT, "every path ALIVE")
            setup_web(ha, write_scripts(Path(base) / "webapp", PORT))
            with Lcd.open(ha.root(VICTIM)) as lcd:
                settings = lcd.settings()
            interval = float(settings["heartbeat_interval"])
            for run in range(1, runs + 1):
                if run > 1:
                    bring_back(ha, lan)
                ha.wait(lambda: in_place(ha), READY_LIMIT, f"web ISP on {VICTIM} only, every path ALIVE")
                result = one_run(ha, lan, Path(base) / f"probe-{run}.jsonl", interval)
                done.append(result)
                print(f"run {run}: {describe(result)}", flush=True)
        except (BenchFailed, AssertionError) as e:
            print(f"run {len(done) + 1} failed: {e}\n{ha.logs()}")
            return 1
    detection = detection_budget(settings)
    delay = float(settings["takeover_delay"])

    def median(part: str) -> float:
        return statistics.median(float(getattr(r, part)) for r in done)

    outages = [r.outage for r in done]
    print(
        f"configured budget: heartbeat_interval x heartbeat_misses = {interval:g} x "
        f"{settings['heartbeat_misses']} = {detection:.3f} s, takeover_delay {delay:.3f} s, "
        f"together {detection + delay:.3f} s"
    )
    print(
        f"medians over {len(done)} runs: detection {median('detection'):.3f} s, decision {median('decision'):.3f} s, "
        f"restore {median('restore'):.3f} s, client {median('client'):+.3f} s"
    )
    print(f"outage: median {median('outage'):.3f} s, min {min(outages):.3f} s, max {max(outages):.3f} s")
    print(f"outage / budget: {median('outage') / (detection + delay):.2f}")
    print(f"failover_median_s={median('outage'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
