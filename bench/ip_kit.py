"""The IP kit's part of a takeover: how long its restore takes, and how soon the client follows the address.

Runs as root (it builds the test LAN: 2 nodes and a client; hakeeper.lab). The kit runs inside
each node (tests/integration/ip_kit_runner.py: one event loop per node, as in hakeeperd), never
in the benchmark's own namespace. One run moves 198.18.0.50/24 from the node that holds it to the
other, as a switchover does: the client has just pinged the address, so its neighbour entry is
fresh (REACHABLE, the holder's MAC); the kit removes it on the holder, then restores it on the
other. Per run:

* **restore**: the kit's restore action on the new node as the runner times it: read the links
  and addresses (netlink), the duplicate probe (``probe_ms`` 50), add, first announcement;
* **remove**: the kit's remove on the old node (stop the repeats, delete, check it is gone);
* **move**: from the end of the restore (the first announcement goes out just before it
  returns) to the change of the client's entry to the new node's MAC, as ``ip -ts monitor
  neigh`` in the client timestamps it (wall clock, microseconds; slightly negative when the
  entry changed before the restore had returned).

Besides: restore without the probe (``duplicate_check=no``; remove and restore on one node), and,
once, the **baseline**: the same move by hand (``ip addr del`` / ``add``) without any
announcement, the client (its entry just learned by its own ARP request, so REACHABLE) sending an
echo every 20 ms, until its entry moves by itself (Linux: 15-45 s of REACHABLE, then 5 s of DELAY
and 3 unicast probes to the old MAC, 1 s apart). It is bounded at 60 s;
``--no-baseline`` skips it. The LAN and its processes are removed in every case.

Last line: ip_neighbour_move_median_ms=<median move>
"""

from __future__ import annotations

import argparse
import json
import select
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hakeeper.lab.lan import Lan, unavailable_reason
from hakeeper.lab.node import ICMP_SCRIPT, Node

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "integration" / "ip_kit_runner.py"
VIP = "198.18.0.50"
ADDRESS = f"{VIP}/24"
MOVE_LIMIT = 2.0  # s for the client's entry to follow an announced move
BASELINE_LIMIT = 60.0  # s for the client's entry to follow a silent move


class BenchFailed(Exception):
    """A run could not be measured; the message says why."""


class Kit:
    """The IP kit in a node: one runner process, one JSON request and answer per line."""

    def __init__(self, node: Node, log: Path) -> None:
        with open(log, "ab") as err:
            self.proc = node.popen(
                [sys.executable, str(RUNNER), node.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )

    def __call__(self, action: str, **params: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"action": action, "params": params, "state": "OSU"}) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        if not ready:
            raise BenchFailed(f"the kit did not answer {action} within 20 s")
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise BenchFailed(f"{action} failed: {answer.get('message')}")
        return answer


def neighbour_mac(client: Node) -> str | None:
    entries = json.loads(client.run(["ip", "-j", "neigh", "show", "to", VIP, "dev", "eth0"]).stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def moved_at(monitor: Path, mac: str, after: float, limit: float) -> float:
    """Wall-clock time of the first ``ip -ts monitor`` line after ``after`` giving VIP the MAC ``mac``."""
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.005) + 2):
        for line in monitor.read_text().splitlines():
            if line.startswith("[") and f"{VIP} " in line and f"lladdr {mac}" in line:
                when = datetime.fromisoformat(line[1 : line.index("]")]).timestamp()
                if when >= after:
                    return when
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    raise BenchFailed(f"the client's entry for {VIP} did not move to {mac} within {limit} s")


def baseline(lan: Lan, holder: Node, other: Node, monitor: Path) -> float:
    """Seconds until the client follows a move made without any announcement (``holder`` has the address)."""
    client = lan.client
    client.run(["ip", "neigh", "flush", "to", VIP, "dev", "eth0"], check=True)
    client.ping(VIP, timeout=1)  # a fresh ARP exchange: the entry is REACHABLE, as a client's usually is
    if neighbour_mac(client) != holder.mac:
        raise BenchFailed(f"baseline: the client's entry for {VIP} is not {holder.name}'s")
    holder.run(["ip", "addr", "del", ADDRESS, "dev", "eth0"], check=True)
    other.run(["ip", "addr", "add", ADDRESS, "dev", "eth0"], check=True)
    start = time.time()
    request = json.dumps({"targets": [VIP], "count": int(BASELINE_LIMIT / 0.02), "timeout": 1, "interval": 0.02})
    pinger = client.popen([sys.executable, "-I", "-S", ICMP_SCRIPT, request], stdout=subprocess.DEVNULL)
    try:
        return moved_at(monitor, other.mac, start, BASELINE_LIMIT) - start
    finally:
        pinger.kill()  # our child, not reaped yet
        pinger.wait(timeout=5)
        other.run(["ip", "addr", "del", ADDRESS, "dev", "eth0"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true", help="skip the silent move (up to 60 s)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"IP kit benchmark needs the test LAN: {reason}")
        return 1
    restores, removes, moves, bare = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="hakeeper-bench-ip-") as base, Lan(2) as lan:
        node1, node2 = lan.nodes
        client = lan.client
        monitor = Path(base) / "neigh.log"
        try:
            with open(monitor, "wb") as out:
                client.popen(["ip", "-ts", "monitor", "neigh"], stdout=out, stderr=subprocess.DEVNULL)
            kits = {n.name: Kit(n, Path(base) / f"kit-{n.name}.log") for n in lan.nodes}
            kits["node1"]("restore", address=ADDRESS)
            holder, other = node1, node2
            for run in range(1, max(1, args.runs) + 1):
                if not client.can_reach(VIP, timeout=2) or neighbour_mac(client) != holder.mac:
                    raise BenchFailed(f"run {run}: the client does not reach {VIP} at {holder.name}")
                removed = kits[holder.name]("remove", address=ADDRESS)
                restored = kits[other.name]("restore", address=ADDRESS)
                move = moved_at(monitor, other.mac, restored["wall"] - restored["ms"] / 1000, MOVE_LIMIT)
                moves.append((move - restored["wall"]) * 1000)
                restores.append(restored["ms"])
                removes.append(removed["ms"])
                took = f"remove {removed['ms']:.1f} ms, restore {restored['ms']:.1f} ms"
                print(f"run {run}: {holder.name} -> {other.name}: {took}, client moved {moves[-1]:+.2f} ms after it")
                holder, other = other, holder
            for _ in range(max(1, args.runs)):
                kits[holder.name]("remove", address=ADDRESS)
                bare.append(kits[holder.name]("restore", address=ADDRESS, duplicate_check="no")["ms"])
            time.sleep(1.0)  # the last repeats are out: the baseline starts from a quiet LAN
            silent = None if args.no_baseline else baseline(lan, holder, other, monitor)
        except BenchFailed as e:
            print(f"IP kit benchmark failed: {e}")
            return 1
    med = statistics.median
    print(f"restore (probe 50 ms): median {med(restores):.1f} ms, max {max(restores):.1f} ms")
    print(f"restore without the probe: median {med(bare):.1f} ms, max {max(bare):.1f} ms")
    print(f"remove: median {med(removes):.1f} ms, max {max(removes):.1f} ms")
    print(f"client's entry moved after the restore: median {med(moves):+.2f} ms, max {max(moves):+.2f} ms")
    if silent is not None:
        print(f"baseline, no announcement: the client followed after {silent:.1f} s")
        print(f"announced restore + move / silent move: {(med(restores) + max(0.0, med(moves))) / 1000 / silent:.5f}")
    print(f"ip_neighbour_move_median_ms={med(moves):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
