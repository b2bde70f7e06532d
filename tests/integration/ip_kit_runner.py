"""The IP kit inside a node of the test LAN, for tests/integration/test_ip_kit.py.

``python ip_kit_runner.py NODE`` runs in the node's namespaces (started with ``node.popen``) and serves
one JSON request per line on stdin with one JSON answer per line on stdout, in ONE event loop for its
whole life, as hakeeperd does: the background announcements of a restore go on while it waits for the
next request, and a later remove must stop them.

Requests::

    {"action": "restore" | "remove" | "quick_check" | "recover" | "validate",
     "params": {"address": "198.18.0.50/24", ...}, "state": "OSU", "tag": "vip"}
    {"action": "probe", "ifname": "eth0", "mac": "02:68:6b:00:00:0c", "address": "198.18.0.50", "wait": 0.2}
    {"action": "sleep", "seconds": 1.0}

Answers: ``{"ok": ..., "message": ..., "health": ..., "policy": ..., "ms": ...}`` (``ms``: how long the
action took, on CLOCK_MONOTONIC; ``t``: when it ended, also monotonic, shared by every namespace; ``wall``:
the same moment on the wall clock, to compare with timestamps of ``ip -ts monitor``). The
kit's log goes to stderr. It exits when stdin closes, or after ``LIFETIME`` seconds of silence.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hakeeper.db.model import Resource
from hakeeper.db.states import State
from hakeeper.errors import HakeeperError
from hakeeper.kits import neighbour
from hakeeper.kits.base import KitContext
from hakeeper.kits.ip import IpKit
from hakeeper.recovery.engine import call

LIFETIME = 300.0  # s without a request: the test is gone


async def handle(kit: IpKit, request: dict[str, Any]) -> dict[str, Any]:
    action = request["action"]
    started = time.monotonic()
    if action == "sleep":
        await asyncio.sleep(float(request["seconds"]))
        return {"ok": True, "ms": (time.monotonic() - started) * 1000, "t": time.monotonic()}
    if action == "probe":
        holder = await neighbour.probe(
            request["ifname"],
            neighbour.mac_bytes(request["mac"]),
            ipaddress.ip_address(request["address"]),
            float(request.get("wait", 0.2)),
        )
        found = neighbour.mac_text(holder) if holder else None
        return {"ok": True, "holder": found, "ms": (time.monotonic() - started) * 1000, "t": time.monotonic()}
    try:
        info = kit.check_params(request["params"])
    except HakeeperError as exc:
        return {"ok": False, "message": str(exc), "policy": "config", "health": None, "ms": 0.0}
    resource = Resource(request.get("tag", "vip"), "ip", "comm", "ip", info=info, state=State[request["state"]])
    result = await call(kit, action, resource)
    return {
        "ok": result.ok,
        "message": result.message,
        "health": result.health.value if result.health else None,
        "policy": result.policy.value,
        "ms": (time.monotonic() - started) * 1000,
        "t": time.monotonic(),
        "wall": time.time(),
    }


async def serve(node: str) -> None:
    kit = IpKit(KitContext(Path("/nonexistent"), node))
    loop = asyncio.get_running_loop()
    for _ in range(100_000):  # bounded: one request per pass
        try:
            async with asyncio.timeout(LIFETIME):
                line = await loop.run_in_executor(None, sys.stdin.readline)
        except TimeoutError:
            return
        if not line:
            return
        try:
            answer = await handle(kit, json.loads(line))
        except Exception as exc:  # noqa: BLE001 - the test reads the error instead of a hang
            answer = {"ok": False, "message": f"runner: {type(exc).__name__}: {exc}", "error": True}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(sys.argv[1]))
