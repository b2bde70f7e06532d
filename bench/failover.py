"""Failover against keepalived: power off the node that serves a virtual address and time the client's outage.

Runs as root (it builds the test LAN of network namespaces: 3 nodes on two
networks, so two communication paths per pair, and a client; and it runs
keepalived, Debian's package, inside the nodes). The client sees one service
at one virtual address, port 8080: the failover tests' web app
(``hakeeper/lab/webapp.py``), which answers every GET with its node's name. A
prober in the client asks the virtual address who serves, every 10 ms, each
probe on a new connection (``hakeeper/lab/probe.py``). The fault is the same
for both contenders: node1, which serves, is powered off (its links dropped,
then every process in it SIGKILLed). The **outage** is the start of the first
probe round answered by another node minus the moment just before the
power-off: what a user sees. The same LAN serves both phases, one after the
other, in one run of this script.

**Phase 1, hakeeper.** ``vip`` (comm/ip, 198.18.0.50/24) below ``web`` (a
gen/app resource running the web app), the hierarchy extended to every node
(node1 priority 1, node2 2, node3 3) and in service on node1. On takeover the
new node restores vip (add and a gratuitous ARP at once: in a failover from a
node whose lease lapsed the IP kit skips its duplicate probe), then web (start
the server; its restore script returns when the server's first process exits,
once the server listens). The parts come from the wall-clock timestamps of the
taking-over node's hakeeperd log (millisecond resolution), against the wall
clock noted at power-off:

* **detection**: power-off to ``node1 DEAD: all … paths DEAD`` (every path
  silent for heartbeat_interval x heartbeat_misses);
* **decision**: from there to ``… has the highest live priority …; restoring
  …``: catching up on the configuration, quorum, ``takeover_delay``, and asking
  the other live node whether it sees node1 dead too (remote_verify);
* **vip**: from there to ``vip OSU -> ISP (failover from node1)``: the plan,
  the IP kit's restore (its own log line gives its time and the duplicate
  probe's), the state change recorded;
* **web**: from there to ``web OSU -> ISP (failover from node1)``: the restore
  script (start the server, until it listens), the state change recorded;
* **client**: the outage minus the four: until the next probe round is
  answered. The gratuitous ARP went out before web's restore began, so the
  client's neighbour entry points at the new node already; what is left is the
  10 ms round spacing, and it is usually slightly negative: the server listens
  before its restore script has returned and hakeeperd has recorded ISP. Each run
  line also gives when the server began to listen (its pid file's mtime,
  written once it listens).

Between runs node1 is powered on, its hakeeperd started, and web switched back
to it (``perform_action -t web -a restore`` on node1); each run waits a random
fraction of a heartbeat interval first, so the power-off falls at a random
phase of the heartbeat timers. The figures are medians, printed against the
configured budget (heartbeat_interval x heartbeat_misses + takeover_delay, from
the LCD). At the end of the phase every hakeeperd stops with ``lkstop`` (its
hierarchies out of service, nothing moves).

**Phase 2, keepalived** (``bench/keepalived.py``): node1 (``state MASTER``,
priority 150) and node2 (``BACKUP``, 100) run keepalived, which moves
198.18.0.51/24 between them by VRRP; the same web app runs all the time on
both (started by hand with its restore script). One series with ``advert_int
1`` (VRRPv2, the default), one with ``advert_int 0.1`` (VRRPv3), each on
freshly powered-on nodes. The backup takes over after ``master_down_interval``
(3 x advert_int + skew) without an advertisement: 2.61-3.61 s after the
fault with advert_int 1, depending on when the last advertisement went out.
Between runs node1 is powered on, its web app and keepalived started; it
starts as a backup, takes the address back after its own master-down interval
(preemption) and node2 drops it: the benchmark waits for that, unmeasured.
Each run waits a random fraction of advert_int first.

No round may be answered by two nodes (the run fails if one is). A run
without a takeover within 20 s ends the benchmark with the reason and the
daemons' logs, exit 1; the LAN, its processes and the temporary directory are
removed in every case. ``--runs N`` (default 10) runs per series, ``--quick``
3.

Last lines: failover_median_s=<hakeeper's median outage in seconds>, then
failover_ratio_vs_keepalived_fast=<hakeeper median / keepalived advert_int 0.1 median>, then, last as
before, failover_ratio_vs_keepalived=<hakeeper median / keepalived advert_int 1 median>. Both ratios come
from series measured in the same run, on the same LAN, one after the other.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.keepalived import Keepalived, KeepalivedFailed, holds, master_down_interval
from bench.keepalived import unavailable_reason as keepalived_missing
from hakeeper.db import Lcd, State
from hakeeper.db.settings import detection_budget
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.errors import LabError, TimedOut
from hakeeper.lab.lan import Lan, unavailable_reason
from hakeeper.lab.node import Node
from hakeeper.lab.probe import Prober, Round, double_service, served_by
from hakeeper.lab.webapp import script_env, write_scripts

BIN = Path(sys.executable).parent
PORT = 8080
TAG = "web"
VIP_TAG = "vip"
VIP = "198.18.0.50"  # hakeeper's virtual address
VRRP_VIP = "198.18.0.51"  # keepalived's
PREFIX = 24
VICTIM = "node1"
BACKUP = "node2"  # keepalived's other node
PRIORITIES = {VICTIM: 150, BACKUP: 100}  # keepalived's
ADVERTS = (1.0, 0.1)  # keepalived's advert_int per series; the first is the baseline of the ratio
FAST = 0.1  # the advert_int of the second ratio (failover_ratio_vs_keepalived_fast)
TAKEOVER_LIMIT = 20.0  # s from power-off until another node must serve
LOG_LIMIT = 5.0  # s the takeover's log lines may lag the client's first answer
READY_LIMIT = 20.0  # s for node1 to be back, alive everywhere, and serving again
AFTER = 0.3  # s of probing after the takeover, for a double service to show
COMMAND_TIMEOUT = 120.0
KIT_LINE = re.compile(r"announced in ([0-9.]+) ms(?:, duplicate probe ([0-9.]+) ms)?")


class BenchFailed(Exception):
    """A run could not be measured; the message says why."""


@dataclass(frozen=True)
class Run:
    """One hakeeper failover."""

    taker: str
    power_off: float  # s the lab's power_off() call took
    outage: float  # s from power-off to the first round answered by another node
    detection: float
    decision: float
    vip: float  # s from the decision until vip ISP
    web: float  # s from vip ISP until web ISP
    listening: float  # s from power-off until the new server listened (its pid file written)
    kit_ms: float | None  # the IP kit's restore as it logs it (probe, add, first announcement)
    probe_ms: float | None  # its duplicate probe
    paused: bool  # remote_verify paused the takeover (the other survivor still saw node1 alive)

    @property
    def client(self) -> float:
        return self.outage - self.detection - self.decision - self.vip - self.web


@dataclass(frozen=True)
class VrrpRun:
    """One keepalived failover."""

    power_off: float
    outage: float


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` (bounded); BenchFailed after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 2):
        if predicate():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(step)
    raise BenchFailed(f"timed out after {timeout:g} s waiting for {what}")


# ---- the client's view (both phases) ---------------------------------------------------------------------


def first_other(rounds: list[Round], after: float) -> Round | None:
    """The first round started at or after ``after`` that a node other than node1 answered."""
    return next((r for r in rounds if r.t >= after and r.names - {VICTIM}), None)


def only_victim(rounds: list[Round]) -> bool:
    return bool(rounds) and rounds[-1].names == {VICTIM}


def power_off_and_watch(lan: Lan, prober: Prober, phase: float, what: str) -> tuple[float, float, list[Round]]:
    """With the client served by node1, wait ``phase`` s, power node1 off, wait until another node serves.

    Returns (t0 on CLOCK_MONOTONIC, how long power_off() took, the rounds); BenchFailed if none does in time,
    or if any round was answered by two nodes.
    """
    ready = prober.wait_for(only_victim, READY_LIMIT, f"{VICTIM} serving {what}, alone")[-1].t
    time.sleep(phase)
    t0 = time.monotonic()
    lan.power_off(lan.node(VICTIM))
    off_took = time.monotonic() - t0
    before = [r for r in prober.rounds() if ready <= r.t < t0 - 0.1]  # the last 0.1 s: rounds still in flight
    if any(r.names != {VICTIM} for r in before):
        who = [f"{t - t0:+.3f} s {name}" for t, name in served_by(before)]
        raise BenchFailed(f"the client lost {VICTIM} before the power-off: {', '.join(who)}")
    try:
        prober.wait_for(lambda r: first_other(r, t0) is not None, TAKEOVER_LIMIT, "another node serving")
    except TimedOut:
        raise BenchFailed(f"no other node served {what} within {TAKEOVER_LIMIT:g} s of powering off {VICTIM}") from None
    time.sleep(AFTER)
    rounds = prober.rounds()
    twice = double_service(rounds)
    if twice:
        who = [f"{t - t0:+.3f} s {name}" for t, name in served_by(rounds)]
        raise BenchFailed(f"{len(twice)} round(s) answered by two nodes at once: {', '.join(who)}")
    return t0, off_took, rounds


# ---- phase 1: hakeeper -----------------------------------------------------------------------------------


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


def states(ha: HaCluster) -> dict[tuple[str, str], State]:
    """(node, tag) -> state, for vip and web on every node."""
    found = {}
    for name in ha.names:
        with Lcd.open(ha.root(name)) as lcd:
            for tag in (VIP_TAG, TAG):
                found[(name, tag)] = lcd.resource(tag).state
    return found


def in_place(ha: HaCluster) -> bool:
    """Every path ALIVE, vip and web ISP on node1 and OSU on the others: where every run starts."""
    expected = {(n, t): State.ISP if n == VICTIM else State.OSU for n in ha.names for t in (VIP_TAG, TAG)}
    return ha.all_alive() and states(ha) == expected


def setup_hierarchy(ha: HaCluster, scripts: dict[str, Path]) -> None:
    """vip below web, on every node (node1 priority 1, node2 2, node3 3), in service on node1."""
    cli(ha, VICTIM, "hakeeper", "create", "comm/ip", "-t", VIP_TAG, "-I", "INIT_OSU", f"address={VIP}/{PREFIX}")
    params = [f"{action}={path}" for action, path in scripts.items()]
    cli(ha, VICTIM, "hakeeper", "create", "gen/app", "-t", TAG, "-s", "INTELLIGENT", "-Q", "120",
        "-I", "INIT_OSU", *params)  # fmt: skip
    cli(ha, VICTIM, "dep_create", "-p", TAG, "-c", VIP_TAG)
    for priority, node in enumerate(ha.names[1:], start=2):
        cli(ha, VICTIM, "hakeeper", "extend", "-t", TAG, "-s", node, "-p", str(priority))
    cli(ha, VICTIM, "perform_action", "-t", TAG, "-a", "restore")


def bring_back(ha: HaCluster, lan: Lan) -> None:
    """Power node1 on, start its hakeeperd, and switch the hierarchy back to it."""
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
    for line in text.splitlines():  # 2026-01-01T12:00:00.123+00:00 hakeeperd[PID] LEVEL logger: message
        stamp, _, rest = line.partition(" ")
        try:
            at = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            continue  # a traceback's continuation lines
        found.append((at, rest.partition(" ")[2]))
    return found


def first_mark(found: list[tuple[float, str]], *texts: str) -> float | None:
    return next((at for at, line in found if all(t in line for t in texts)), None)


def kit_timing(found: list[tuple[float, str]]) -> tuple[float | None, float | None]:
    """The IP kit's own account of its restore: (ms in all, ms of the duplicate probe)."""
    for _, line in found:
        if f"{VIP}/{PREFIX} added on" in line and (m := KIT_LINE.search(line)):
            return float(m.group(1)), float(m.group(2)) if m.group(2) else None
    return None, None


def one_run(ha: HaCluster, lan: Lan, out: Path, interval: float) -> Run:
    logs = {name: ha.root(name) / "hakeeperd.log" for name in ha.names}
    with Prober(lan, [(VIP, PORT)], out) as prober:
        offsets = {name: path.stat().st_size for name, path in logs.items()}
        wall0 = time.time() - time.monotonic()  # + t0 below: the wall clock at power-off
        # a random phase against the heartbeat timers
        t0, off_took, rounds = power_off_and_watch(lan, prober, 0.3 + random.uniform(0, interval), VIP)
        wall0 += t0
    served = first_other(rounds, t0)
    assert served is not None  # waited for above
    taker = min(served.names - {VICTIM})
    wanted = {
        "detection": (f"{VICTIM} DEAD: all",),
        "decision": (f"{VICTIM} dead on all", f"{taker} has the highest live priority"),
        "vip": (f"{VIP_TAG} OSU -> ISP (failover from {VICTIM})",),
        "web": (f"{TAG} OSU -> ISP (failover from {VICTIM})",),
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
    dead, decided, vip_up, web_up = (float(at[p] or 0.0) for p in wanted)
    kit_ms, probe_ms = kit_timing(found)
    paused = first_mark(found, "PAUSING takeover") is not None
    listening = (ha.root(taker) / f"webapp-{PORT}.pid").stat().st_mtime - wall0
    return Run(
        taker=taker,
        power_off=off_took,
        outage=served.t - t0,
        detection=dead - wall0,
        decision=decided - dead,
        vip=vip_up - decided,
        web=web_up - vip_up,
        listening=listening,
        kit_ms=kit_ms,
        probe_ms=probe_ms,
        paused=paused,
    )


def describe(run: Run) -> str:
    paused = ", remote_verify paused" if run.paused else ""
    probe = "" if run.probe_ms is None else f", its duplicate probe {run.probe_ms:.1f} ms"
    kit = "" if run.kit_ms is None else f" (the IP kit: {run.kit_ms:.1f} ms{probe})"
    return (
        f"outage {run.outage:.3f} s = detection {run.detection:.3f} + decision {run.decision:.3f}"
        f" + vip {run.vip:.3f}{kit} + web {run.web:.3f} + client {run.client:+.3f}; served by {run.taker},"
        f" its server listening at {run.listening:.3f} s (power_off() took {run.power_off:.3f} s{paused})"
    )


def hakeeper_phase(
    ha: HaCluster, lan: Lan, base: Path, scripts: dict[str, Path], runs: int
) -> tuple[list[Run], dict[str, Any]]:
    """Phase 1: set up vip and web, then ``runs`` failovers; returns them and the cluster's settings."""
    ha.start_all()
    ha.wait(ha.all_alive, READY_LIMIT, "every path ALIVE")
    setup_hierarchy(ha, scripts)
    with Lcd.open(ha.root(VICTIM)) as lcd:
        settings = lcd.settings()
    interval = float(settings["heartbeat_interval"])
    done: list[Run] = []
    print(f"hakeeper: {VIP_TAG} ({VIP}/{PREFIX}, comm/ip) below {TAG}, on node1..node3", flush=True)
    for run in range(1, runs + 1):
        if run > 1:
            bring_back(ha, lan)
        ha.wait(lambda: in_place(ha), READY_LIMIT, f"vip and web ISP on {VICTIM} only, every path ALIVE")
        result = one_run(ha, lan, base / f"probe-hakeeper-{run}.jsonl", interval)
        done.append(result)
        print(f"  run {run}: {describe(result)}", flush=True)
    return done, settings


def stop_hakeeper(ha: HaCluster, lan: Lan) -> None:
    """lkstop on every node that is on: the hierarchy out of service, nothing moves, every hakeeperd gone."""
    for name in ha.names:
        if lan.node(name).is_on:
            cli(ha, name, "lkstop")
            try:
                ha.procs[name].wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise BenchFailed(f"hakeeperd on {name} still runs 30 s after lkstop") from None
    for name in ha.names:
        node = lan.node(name)
        if not node.is_on:
            continue  # node1, powered off by the last run (its server's pid file is a stale one)
        if holds(node, VIP):
            raise BenchFailed(f"{name} still holds {VIP} after lkstop")
        if (ha.root(name) / f"webapp-{PORT}.pid").exists():
            raise BenchFailed(f"hakeeper's web server on {name} still runs after lkstop")


# ---- phase 2: keepalived ---------------------------------------------------------------------------------


def start_web(node: Node, root: Path, scripts: dict[str, Path]) -> None:
    """The web app in ``node``, by hand, as hakeeper would start it (state in ``root``)."""
    root.mkdir(parents=True, exist_ok=True)
    done = node.run([str(scripts["restore"])], env=script_env(root, node.name), timeout=30)
    if done.returncode != 0:
        raise BenchFailed(f"the web app did not start on {node.name}: {(done.stdout + done.stderr).strip()}")


def power_cycle(lan: Lan, node: Node) -> None:
    if node.is_on:
        lan.power_off(node)
    lan.power_on(node)


def vrrp_in_place(vrrp: dict[str, Keepalived]) -> bool:
    """keepalived runs on both nodes, node1 holds the address and node2 does not."""
    if not all(k.running() for k in vrrp.values()):
        dead = [name for name, k in vrrp.items() if not k.running()]
        raise BenchFailed(f"keepalived exited on {', '.join(dead)}: {vrrp[dead[0]].log_tail(1000)}")
    return vrrp[VICTIM].holds() and not vrrp[BACKUP].holds()


def keepalived_phase(lan: Lan, base: Path, scripts: dict[str, Path], advert_int: float, runs: int) -> list[VrrpRun]:
    """Phase 2, one series: keepalived on node1 and node2 with ``advert_int``, ``runs`` failovers."""
    work = base / f"keepalived-{advert_int:g}"
    nodes = {name: lan.node(name) for name in (VICTIM, BACKUP)}
    vrrp = {
        name: Keepalived(node, work, vip=f"{VRRP_VIP}/{PREFIX}", priority=PRIORITIES[name], master=name == VICTIM,
                         advert_int=advert_int)
        for name, node in nodes.items()
    }  # fmt: skip
    down = master_down_interval(advert_int, PRIORITIES[BACKUP])
    version = "VRRPv2" if float(advert_int).is_integer() else "VRRPv3"
    print(
        f"keepalived advert_int {advert_int:g} ({version}): {VRRP_VIP}/{PREFIX} on {VICTIM} (MASTER, priority "
        f"{PRIORITIES[VICTIM]}) and {BACKUP} (BACKUP, {PRIORITIES[BACKUP]}); master_down_interval {down:.3f} s",
        flush=True,
    )
    for node in nodes.values():
        power_cycle(lan, node)  # fresh machines: nothing of the previous phase or series left
        start_web(node, work / node.name, scripts)
    for k in vrrp.values():
        k.start()
    done: list[VrrpRun] = []
    for run in range(1, runs + 1):
        if run > 1:
            lan.power_on(nodes[VICTIM])
            start_web(nodes[VICTIM], work / VICTIM, scripts)
            vrrp[VICTIM].start()
        # node1 starts as a backup, becomes master after its master-down interval, node2 steps back (preemption)
        wait_until(lambda: vrrp_in_place(vrrp), READY_LIMIT, f"{VICTIM} holding {VRRP_VIP}, {BACKUP} not")
        with Prober(lan, [(VRRP_VIP, PORT)], base / f"probe-keepalived-{advert_int:g}-{run}.jsonl") as prober:
            # a random phase against the advertisement timer
            t0, off_took, rounds = power_off_and_watch(lan, prober, 0.3 + random.uniform(0, advert_int), VRRP_VIP)
        served = first_other(rounds, t0)
        assert served is not None  # waited for above
        result = VrrpRun(power_off=off_took, outage=served.t - t0)
        done.append(result)
        print(f"  run {run}: outage {result.outage:.3f} s (power_off() took {result.power_off:.3f} s)", flush=True)
    return done


def keepalived_logs(base: Path) -> str:
    return "\n".join(
        f"--- {path.relative_to(base)}\n{path.read_text(errors='replace')[-2000:]}"
        for path in sorted(base.glob("keepalived-*/keepalived-*.log"))
    )


# ---- the report ------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s, min {min(values):.3f} s, max {max(values):.3f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per series (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 runs per series")
    parser.add_argument("--keep-logs", type=Path, help="copy every node's hakeeperd log here after hakeeper's phase")
    args = parser.parse_args()
    runs = 3 if args.quick else max(1, args.runs)
    reason = unavailable_reason()
    if reason:
        print(f"failover benchmark needs the test LAN: {reason}")
        return 1
    reason = keepalived_missing()
    if reason:
        print(f"failover benchmark needs keepalived as its baseline: {reason}")
        return 1
    done: list[Run] = []
    vrrp: dict[float, list[VrrpRun]] = {}
    with tempfile.TemporaryDirectory(prefix="hakeeper-bench-failover-") as tmp, Lan(3, second_network=True) as lan:
        base = Path(tmp)
        ha = HaCluster(lan, base)
        scripts = write_scripts(base / "webapp", PORT)
        phase = "hakeeper"
        try:
            done, settings = hakeeper_phase(ha, lan, base, scripts, runs)
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for name in ha.names:
                    (args.keep_logs / f"{name}.log").write_text(ha.log(name))
            phase = "stopping hakeeper (lkstop)"
            stop_hakeeper(ha, lan)
            for advert_int in ADVERTS:
                phase = f"keepalived advert_int {advert_int:g}"
                vrrp[advert_int] = keepalived_phase(lan, base, scripts, advert_int, runs)
        except (BenchFailed, KeepalivedFailed, LabError, AssertionError, subprocess.TimeoutExpired) as e:
            logs = keepalived_logs(base) if phase.startswith("keepalived") else ha.logs()
            print(f"{phase} failed: {e}\n{logs}")
            return 1
    detection = detection_budget(settings)
    delay = float(settings["takeover_delay"])
    interval = float(settings["heartbeat_interval"])

    def median(part: str) -> float:
        return statistics.median(float(getattr(r, part)) for r in done)

    outage = median("outage")
    print(
        f"hakeeper's configured budget: heartbeat_interval x heartbeat_misses = {interval:g} x "
        f"{settings['heartbeat_misses']} = {detection:.3f} s, takeover_delay {delay:.3f} s, "
        f"together {detection + delay:.3f} s"
    )
    print(
        f"hakeeper medians over {len(done)} runs: detection {median('detection'):.3f} s, decision "
        f"{median('decision'):.3f} s, vip {median('vip'):.3f} s, web {median('web'):.3f} s, "
        f"client {median('client'):+.3f} s"
    )
    print(f"hakeeper outage: {spread([r.outage for r in done])}; outage / budget {outage / (detection + delay):.2f}")
    medians = {}
    for advert_int, series in vrrp.items():
        medians[advert_int] = statistics.median(r.outage for r in series)
        print(f"keepalived advert_int {advert_int:g} outage: {spread([r.outage for r in series])}")
    for advert_int, value in medians.items():
        print(f"hakeeper / keepalived advert_int {advert_int:g}: {outage / value:.3f}")
    print(f"failover_median_s={outage:.3f}")
    print(f"failover_ratio_vs_keepalived_fast={outage / medians[FAST]:.3f}")
    print(f"failover_ratio_vs_keepalived={outage / medians[ADVERTS[0]]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
