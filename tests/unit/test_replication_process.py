"""The replication process's control socket and hakeeperd's supervision of the processes (no FUSE, no LAN)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hakeeper.db import Lcd
from hakeeper.errors import IllegalArgument, NotFound
from hakeeper.replication.control import MirrorNotRunning, TargetStatus, VolumeStatus
from hakeeper.replication.controlsock import CONTROL_NAME, ControlServer, ProcessControl, status_json
from hakeeper.replication.dataport import data_port
from hakeeper.replication.process import BUSY_NAME, read_plan, volume_dir
from hakeeper.replication.states import MirrorState
from hakeeper.replication.supervisor import ReplicationProcesses, Wanted


def test_the_data_port_is_beside_the_other_ports_of_a_node() -> None:
    assert data_port(7365) == 7368  # messages 7365, heartbeats 7366, joins 7367


def test_the_control_socket_answers_status_and_verbs_and_refusals(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    status = VolumeStatus("data", "source", (TargetStatus("node2", MirrorState.PAUSED, None, 65536, False, 4096),),
                          "/dev/loop7")  # fmt: skip

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        if request["verb"] == "status":
            return {"status": status_json(status)}
        if request["verb"] == "handover":
            raise IllegalArgument("the mirror to node2 is Paused, not Mirroring")
        return {"said": f"{request['verb']} done"}

    server = ControlServer(tmp_path / CONTROL_NAME, handle).start()
    try:
        assert stat.S_IMODE(os.stat(tmp_path / CONTROL_NAME).st_mode) == 0o600
        control = ProcessControl("data", tmp_path / CONTROL_NAME, timeout=5)
        assert control.status() == status
        assert control.pause("node2") == "pause done"
        assert control.resync(None, checksum=True) == "resync done"
        with pytest.raises(IllegalArgument, match="Paused, not Mirroring"):
            control.handover("node2", timeout=1)
        assert control.thaw() == "thaw done"
        assert seen[1] == {"verb": "pause", "target": "node2"}
        assert seen[2] == {"verb": "resync", "target": None, "checksum": True}
    finally:
        server.close()
    assert not (tmp_path / CONTROL_NAME).exists()
    with pytest.raises(MirrorNotRunning, match="did not answer pause"):
        ProcessControl("data", tmp_path / CONTROL_NAME, timeout=1).pause(None)


async def _until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_hakeeperd_keeps_one_process_per_volume_restarts_it_and_stops_it(tmp_path: Path) -> None:
    def argv(volume: str) -> list[str]:  # a stand-in that makes the control socket appear, as the process does
        sock = volume_dir(tmp_path, volume) / CONTROL_NAME
        script = f"import pathlib, time; p = pathlib.Path({str(sock)!r}); p.parent.mkdir(parents=True, exist_ok=True)"
        return [sys.executable, "-c", f"{script}; p.touch(); time.sleep(120)"]

    async def main() -> None:
        wanted: Wanted = {"data": ("node1", "node2")}

        async def read() -> Wanted:
            return wanted

        procs = ReplicationProcesses(tmp_path, read, argv=argv, first_backoff=0.05)
        service = asyncio.create_task(procs.run())
        try:
            await _until(lambda: procs.pid("data") is not None, "the first process")
            first = procs.pid("data")
            assert first is not None
            await _until(lambda: procs.control("data") is not None, "its control socket")
            os.kill(first, signal.SIGKILL)  # it dies: started again after the back-off
            await _until(lambda: procs.pid("data") not in (None, first), "a second process")
            second = procs.pid("data")

            wanted["data"] = ("node1", "node2", "node3")  # a target added: the process starts again with it
            procs.changed()
            await _until(lambda: procs.pid("data") not in (None, second), "a process for the new definition")
            third = procs.pid("data")

            del wanted["data"]  # the mirror deleted: its process stops
            procs.changed()
            await _until(lambda: procs.pid("data") is None and procs.control("data") is None, "the process stopped")
            assert third is not None
            with pytest.raises(ProcessLookupError):
                os.kill(third, 0)

            wanted["logs"] = ("node1", "node2")
            procs.changed()
            await _until(lambda: procs.pid("logs") is not None, "a process for a new volume")
            last = procs.pid("logs")
            await asyncio.wait_for(procs.stop_all(), 40)  # lkstop: SIGTERM, every process gone
            assert last is not None and procs.pid("logs") is None
            with pytest.raises(ProcessLookupError):
                os.kill(last, 0)
        finally:
            await procs.stop_all()
            service.cancel()
            await asyncio.gather(service, return_exceptions=True)

    asyncio.run(main())


def test_the_process_reads_its_role_store_port_and_peer_addresses_from_the_lcd(tmp_path: Path) -> None:
    root = tmp_path / "node1"
    with Lcd.open(root, node="node1") as lcd:
        for other in ("node2", "node3"):
            lcd.create_node(other)
        lcd.create_path("node2", "198.18.1.11", "198.18.1.12", priority=2)
        lcd.create_path("node2", "198.18.0.11", "198.18.0.12", priority=1)
        store = tmp_path / "data.img"
        store.write_bytes(bytes(1 << 20))
        lcd.create_mirror("data", "node2", store=str(store), target_store="/srv/data.img", mode="async")
    plan = read_plan(root, "data")
    assert (plan.role, plan.node, plan.store, plan.port) == ("source", "node1", str(store), 7368)
    assert plan.peers["node2"] == ["198.18.0.12", "198.18.1.12"], "by path priority"
    assert plan.local["node2"] == ["198.18.0.11", "198.18.1.11"]
    assert plan.state_dir == root / "replication" / "data"
    with pytest.raises(NotFound):
        read_plan(root, "logs")


@pytest.mark.parametrize("busy", [False, True])
def test_a_process_that_ignores_sigterm_is_killed_unless_a_mounted_volume_keeps_it_busy(
    tmp_path: Path, busy: bool
) -> None:
    def argv(volume: str) -> list[str]:  # ignores SIGTERM, as a source whose volume is mounted does
        state = volume_dir(tmp_path, volume)
        mark = f"(d / {BUSY_NAME!r}).write_text('mounted'); " if busy else ""
        script = (
            f"import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"d = pathlib.Path({str(state)!r}); d.mkdir(parents=True, exist_ok=True); {mark}"
            f"(d / {CONTROL_NAME!r}).touch(); time.sleep(120)"
        )
        return [sys.executable, "-c", script]

    async def main() -> None:
        async def read() -> Wanted:
            return {"data": 1}

        procs = ReplicationProcesses(tmp_path, read, argv=argv, stop_timeout=0.5)
        await procs.reconcile(await read())
        await _until(lambda: procs.control("data") is not None, "the process ready")
        pid = procs.pid("data")
        assert pid is not None
        await asyncio.wait_for(procs.stop_all(), 10)
        if not busy:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            return
        os.kill(pid, 0)  # left serving the mounted volume: it stops once unmounted, not killed
        os.kill(pid, signal.SIGKILL)  # the test's own cleanup, by PID
        await _until(lambda: not procs._leaving, "the process left serving to end")

    asyncio.run(main())
