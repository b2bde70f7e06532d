"""DNS kit benchmark: how long the kit's restore takes against a real BIND 9, against the bare protocol.

A one-node test LAN with named in the client (tests/bind.py). Inside node1, one process (this
file with ``--worker``) times, ``--runs`` times each, alternating:

* **kit**: ``DnsKit.restore`` of ``app.example.test`` (addresses node1=198.18.0.11, node2=198.18.0.12,
  PTR kept), from its call to its return: the zone lookups (SOA), reading the records, the empty signed
  update per zone (the key check), the two updates and the read-back;
* **bare**, the baseline: the least the same change needs on the wire: one signed update per zone (A
  replaced; own PTR replaced, node2's PTR to the name deleted) and the read-back of A and PTR.

Before every timed run the records are put back to what the zone started with (untimed), so every run
really changes them. The kit's own log line splits its time into update and read-back. Every figure is
a median. The last line is ``dns_restore_ratio=<kit median / bare median>``: what the kit's checks cost
over the protocol itself. It exits 1 only when it cannot measure (not root, no bind9).

Run from the repository root, as root: ``.venv/bin/python bench/dns_restore.py [--runs N]``. Nothing
runs in the root namespace; the LAN and named are removed at the end, also after an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE1, NODE2, OLD = "198.18.0.11", "198.18.0.12", "198.18.0.99"


async def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Inside node1: time the kit's restore and the bare update + read-back, alternating."""
    import dns.asyncquery
    import dns.message
    import dns.name
    import dns.update

    from hakeeper.db import Resource, State
    from hakeeper.kits.base import KitContext
    from hakeeper.kits.dns import DnsKit
    from hakeeper.kits.dnsupdate import read_key

    server = spec["server"]
    key = read_key(Path(spec["key"]))
    kit = DnsKit(KitContext(Path(spec["state"]), "node1"))
    params = {"name": "app", "zone": "example.test", "servers": server, "key": spec["key"],
              "addresses": f"node1={NODE1},node2={NODE2}"}  # fmt: skip
    created = kit.create("app-dns", kit.check_params(params), None)
    resource = Resource("app-dns", created.id, "comm", "dns", info=created.info, state=State.OSU)

    async def send(message: dns.message.Message) -> dns.message.Message:
        answer: dns.message.Message = await dns.asyncquery.udp(message, server, timeout=2)
        return answer

    def update(zone: str) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(zone, keyring=key.tsig(), keyname=dns.name.from_text(key.name))

    async def reset() -> None:
        forward = update("example.test")
        forward.replace("app", 60, "A", OLD)
        reverse = update("0.18.198.in-addr.arpa")
        reverse.replace("11", 60, "PTR", "node1.example.test.")
        reverse.replace("12", 60, "PTR", "node2.example.test.", "app.example.test.")
        for message in (forward, reverse):
            await send(message)
        kit.instance_dir("app-dns").joinpath("published").unlink(missing_ok=True)

    async def bare() -> None:
        forward = update("example.test")
        forward.replace("app", 60, "A", NODE1)
        reverse = update("0.18.198.in-addr.arpa")
        reverse.replace("11", 60, "PTR", "app.example.test.")
        reverse.delete("12", "PTR", "app.example.test.")
        for message in (forward, reverse):
            await send(message)
        for name, rdtype in (("app.example.test", "A"), ("11.0.18.198.in-addr.arpa", "PTR")):
            await send(dns.message.make_query(name, rdtype))

    kit_ms: list[float] = []
    bare_ms: list[float] = []
    split: list[tuple[float, float]] = []
    for run in range(spec["runs"] + 1):  # run 0 warms up both
        await reset()
        started = time.perf_counter()
        result = await kit.restore(resource)
        took = 1000 * (time.perf_counter() - started)
        if not result.ok:
            raise SystemExit(f"the kit's restore failed: {result.message}")
        await reset()
        started = time.perf_counter()
        await bare()
        bare_took = 1000 * (time.perf_counter() - started)
        if run:
            kit_ms.append(took)
            bare_ms.append(bare_took)
            match = re.search(r"update ([\d.]+) ms, read-back ([\d.]+) ms", result.message)
            if match:
                split.append((float(match.group(1)), float(match.group(2))))
    return {"kit": kit_ms, "bare": bare_ms, "split": split}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker(json.loads(args.worker)))))
        return 0

    sys.path.insert(0, str(ROOT))
    from tests.bind import Bind

    from hakeeper.lab.errors import LanUnavailable
    from hakeeper.lab.lan import Lan

    with tempfile.TemporaryDirectory(prefix="hk-dns-bench-") as tmp:
        try:
            lan = Lan(nodes=1).start()
        except LanUnavailable as exc:
            print(f"cannot measure: {exc}", file=sys.stderr)
            return 1
        try:
            with Bind(lan.client, Path(tmp) / "bind") as bind:
                spec = {"server": bind.address, "key": str(bind.key_file), "state": f"{tmp}/state", "runs": args.runs}
                argv = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
                done = lan.nodes[0].run(argv, timeout=60 + args.runs * 2, cwd=ROOT)
                if done.returncode != 0:
                    print(f"cannot measure: {done.stderr.strip()[-2000:]}", file=sys.stderr)
                    return 1
        except LanUnavailable as exc:
            print(f"cannot measure: {exc}", file=sys.stderr)
            return 1
        finally:
            lan.close()
    figures = json.loads(done.stdout)
    kit, bare = statistics.median(figures["kit"]), statistics.median(figures["bare"])
    update = statistics.median(u for u, _ in figures["split"])
    read_back = statistics.median(r for _, r in figures["split"])
    print(f"runs: {args.runs} of each, alternating, after one warm-up")
    print(f"kit restore (zone lookups, reads, key check, updates, read-back): median {kit:.1f} ms")
    print(f"  of which the updates {update:.1f} ms and the read-back {read_back:.1f} ms")
    print(f"bare protocol (two updates, two reads): median {bare:.1f} ms")
    print(f"dns_restore_ratio={kit / bare:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
