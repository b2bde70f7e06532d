"""Failure detection: "power off" a node of a 3-node test LAN and time until every survivor declares it dead.

Runs as root (it builds the test LAN of network namespaces). The figure is the
time from power-off (processes killed, links dropped) to the moment the last
survivor's hakeeperd records the node DEAD (all its paths DEAD), polled every
5 ms; median of 10 runs. It is printed against the configured budget
(heartbeat_interval x heartbeat_misses), which is the best a heartbeat scheme
with those settings can do: the baseline this run measures against.
LifeKeeper's defaults would take 15 s (5 s x 3), keepalived's advert_int 1 about 3.6 s.

Last line: detection_median_s=<seconds>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hakeeper.comm.paths import PathState
from hakeeper.db.settings import defaults, detection_budget
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan, unavailable_reason

POLL = 0.005


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    reason = unavailable_reason()
    if reason:
        print(f"detection benchmark needs the test LAN: {reason}")
        return 1
    budget = detection_budget(defaults())
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hakeeper-bench-detection-") as base, Lan(3, second_network=True) as lan:
        cluster = HaCluster(lan, Path(base))
        cluster.start_all()
        cluster.wait(cluster.all_alive, 30, "every path ALIVE")
        victim = lan.node("node3")
        survivors = ["node1", "node2"]
        for run in range(1, runs + 1):
            time.sleep(0.5)  # a random-ish phase against the heartbeat timer
            start = time.monotonic()
            lan.power_off(victim)
            seen: dict[str, float] = {}
            deadline = start + 30
            while len(seen) < len(survivors) and time.monotonic() < deadline:
                for observer in survivors:
                    if observer not in seen and cluster.node_seen_by(observer, "node3") is PathState.DEAD:
                        seen[observer] = time.monotonic() - start
                time.sleep(POLL)
            if len(seen) < len(survivors):
                print(f"run {run}: node3 not declared dead by every survivor within 30 s\n{cluster.logs()}")
                return 1
            took = max(seen.values())
            times.append(took)
            detail = ", ".join(f"{o} {seen[o]:.3f} s" for o in survivors)
            print(f"run {run}: declared dead by both survivors after {took:.3f} s ({detail})")
            lan.power_on(victim)
            cluster.start(victim)
            cluster.wait(cluster.all_alive, 30, "node3 back and every path ALIVE")
    median = statistics.median(times)
    print(f"configured budget (heartbeat_interval x heartbeat_misses): {budget:.3f} s")
    print(f"detection: median {median:.3f} s, min {min(times):.3f} s, max {max(times):.3f} s over {len(times)} runs")
    print(f"detection / budget: {median / budget:.2f}")
    print(f"detection_median_s={median:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
