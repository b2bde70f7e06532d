"""A slow disk under node1's state directory is no failover (docs/lcd.md, "How hakeeperd writes the LCD").

node1's hakeeperd runs with an LD_PRELOAD shim (slow_fsync.c, compiled here with gcc) that delays every
fsync()/fdatasync() of a file in its state directory by DELAY_MS, while a switch file exists: every
commit of its LCD then takes seconds. The test sets web up with the disk fast, turns the slow disk on,
and makes node1 write its LCD: a local recovery of a second resource (``app``: its server is killed,
quickCheck fails, hakeeperd records the states of the recovery) and a few ``ins_setinfo`` commands run
through hakeeperd. Over at least WINDOW seconds web's quickChecks keep coming at their interval, no
peer declares node1 dead, nobody takes web over (the client sees node1 alone), the guard kills no one,
and the writes were made (through the shim: its log names the LCD's files).

FUSE and cgroup I/O limits are not used: the test machines have no libfuse, no io controller in cgroup
v2 and no device-mapper; a shim needs gcc alone (Makefile's DEB_PACKAGES).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hakeeper.comm.paths import PathState
from hakeeper.db import Lcd, State
from hakeeper.lab.cluster import ALIVE_TIMEOUT, HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.lab.probe import Prober, double_service, servers
from hakeeper.lab.webapp import write_scripts

SHIM = Path(__file__).with_name("slow_fsync.c")
DELAY_MS = 3000  # each fsync in node1's state directory, while the disk is slow
INTERVAL = 1  # s: web's and app's quickCheck interval
WINDOW = 20.0  # s of slow disk observed, at least
WEB_PORT, APP_PORT = 8080, 8081
SETINFOS = 3


def build_shim(directory: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc (to build the slow-fsync LD_PRELOAD shim; Makefile's DEB_PACKAGES has it)")
    lib = directory / "slow_fsync.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(lib), str(SHIM), "-ldl"], check=True)
    return lib


def shim_env(lib: Path, slow_dir: Path, switch: Path, log: Path) -> dict[str, str]:
    return {
        "LD_PRELOAD": str(lib),
        "HAKEEPER_TEST_SLOW_FSYNC_DIR": str(slow_dir),
        "HAKEEPER_TEST_SLOW_FSYNC_MS": str(DELAY_MS),
        "HAKEEPER_TEST_SLOW_FSYNC_SWITCH": str(switch),
        "HAKEEPER_TEST_SLOW_FSYNC_LOG": str(log),
    }


FSYNC_TIMES = """
import os, sys, time
times = []
for name in sys.argv[1:]:
    fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"x")
    start = time.monotonic()
    os.fsync(fd)
    os.fdatasync(fd)
    times.append(time.monotonic() - start)
    os.close(fd)
print(" ".join(f"{t:.3f}" for t in times))
"""


def check_shim(lib: Path, tmp_path: Path) -> None:
    """The shim delays fsync and fdatasync under its directory only, and only while the switch exists."""
    slow, fast = tmp_path / "shim-slow", tmp_path / "shim-fast"
    slow.mkdir()
    fast.mkdir()
    switch, log = tmp_path / "shim-on", tmp_path / "shim.log"
    switch.touch()
    env = dict(os.environ, **shim_env(lib, slow, switch, log))
    argv = [sys.executable, "-c", FSYNC_TIMES, str(slow / "f"), str(fast / "f")]
    took = [float(t) for t in subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.split()]
    assert took[0] >= 2 * DELAY_MS / 1000, f"fsync + fdatasync under the slow directory took {took[0]:.3f} s"
    switch.unlink()
    off = [float(t) for t in subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.split()]
    delayed = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert delayed == [str(slow / "f")] * 2, f"fsync and fdatasync delayed, in the slow directory only: {delayed}"
    print(f"shim: fsync+fdatasync slow dir {took[0]:.3f} s, other dir {took[1]:.3f} s, switch off {off[0]:.3f} s")


def counting(scripts: dict[str, Path], record: Path) -> dict[str, Path]:
    """``scripts`` with a quickCheck that appends its start time (epoch seconds) to ``record`` first."""
    wrapper = record.with_name(record.name + ".quickCheck")
    wrapper.write_text(f'#!/bin/sh\ndate +%s.%N >> {record}\nexec {scripts["quickCheck"]} "$@"\n')
    wrapper.chmod(0o755)
    return {**scripts, "quickCheck": wrapper}


def create(ha: HaCluster, tag: str, scripts: dict[str, Path]) -> None:
    params = [f"{name}={scripts[name]}" for name in ("restore", "remove", "quickCheck")]
    ha.ok("node1", "hakeeper", "create", "gen/app", "-t", tag, "-Q", str(INTERVAL), "-I", "INIT_OSU", *params)


def state(ha: HaCluster, tag: str, node: str = "node1") -> State:
    with Lcd.open(ha.root(node)) as lcd:
        return lcd.resource(tag).state


def checks_between(record: Path, start: float, end: float) -> list[float]:
    times = [float(t) for t in record.read_text().split()] if record.exists() else []
    return [t for t in times if start <= t <= end]


@pytest.mark.slow
def test_a_slow_disk_on_node1_stalls_neither_monitoring_nor_heartbeats_and_nobody_fails_over(
    lan: Lan, tmp_path: Path
) -> None:
    lib = build_shim(tmp_path)
    check_shim(lib, tmp_path)

    ha = HaCluster(lan, tmp_path / "cluster")
    switch, shim_log = tmp_path / "slow-disk-on", tmp_path / "slow-fsync.log"
    ha.daemon_env["node1"] = shim_env(lib, ha.root("node1"), switch, shim_log)
    ha.start_all()
    ha.wait(ha.all_alive, ALIVE_TIMEOUT, "every path ALIVE on every node")

    web_checks, app_checks = tmp_path / "web-checks", tmp_path / "app-checks"
    create(ha, "web", counting(write_scripts(tmp_path / "web", WEB_PORT), web_checks))
    for backup in ("node2", "node3"):
        ha.ok("node1", "hakeeper", "extend", "-t", "web", "-s", backup, "-p", backup[-1])
    create(ha, "app", counting(write_scripts(tmp_path / "app", APP_PORT), app_checks))  # node1 alone
    for tag in ("web", "app"):
        ha.ok("node1", "perform_action", "-t", tag, "-a", "restore")
        assert state(ha, tag) is State.ISP
    assert not shim_log.exists(), "the disk was fast so far"
    daemon = ha.procs["node1"]

    targets = [(n.address, WEB_PORT) for n in lan.nodes]
    with Prober(lan, targets, tmp_path / "probe.jsonl") as prober:
        prober.wait_for(lambda rounds: "node1" in servers(rounds), 10, "node1 serving web")
        switch.touch()  # the disk is slow from now on
        start = time.time()
        os.kill(int((ha.root("node1") / f"webapp-{APP_PORT}.pid").read_text()), 9)  # app's local recovery
        for n in range(SETINFOS):  # commands through hakeeperd, each a commit of its own
            ha.ok("node1", "ins_setinfo", "-t", "web", "-v", f"slow-disk-{n}")
        ha.wait(lambda: "app recovered in place" in ha.log("node1"), 60, "app's local recovery", step=0.2)
        ha.wait(lambda: time.time() >= start + WINDOW, WINDOW + 1, "the window", step=0.2)
        end = time.time()
        delayed = shim_log.read_text().splitlines() if shim_log.exists() else []
        switch.unlink()  # the disk is fast again
        rounds = prober.rounds()

    log1 = ha.log("node1")
    seen = checks_between(web_checks, start, end)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    lcd_syncs = [line for line in delayed if ".sqlite" in line]
    print(
        f"slow disk {end - start:.1f} s: {len(delayed)} fsyncs delayed {DELAY_MS} ms each ({len(lcd_syncs)} of the "
        f"LCD); web's quickChecks {len(seen)} (interval {INTERVAL} s, longest gap {max(gaps, default=0):.2f} s); "
        f"app's {len(checks_between(app_checks, start, end))}"
    )
    # The slow disk was real: hakeeperd's LCD commits went through the shim, again and again.
    assert len(lcd_syncs) >= SETINFOS, f"{delayed}\n{log1[-3000:]}"
    # (a) monitoring kept its interval (± 10 % jitter; a loaded machine: half of them is plenty, while a loop
    # stalled DELAY_MS per commit would miss most of them)
    assert len(seen) >= 0.5 * (end - start) / INTERVAL, f"{len(seen)} quickChecks in {end - start:.1f} s\n{log1}"
    # (b) the heartbeats went on: no peer lost node1
    for peer in ("node2", "node3"):
        assert ha.declared_dead(peer, "node1") == 0, ha.logs()
        assert ha.node_seen_by(peer, "node1") is PathState.ALIVE, ha.logs()
        assert "restoring web" not in ha.log(peer), ha.logs()
    # ... and the guard did not kill hakeeperd
    assert daemon.poll() is None, log1
    assert "is silent: killing it" not in log1, log1
    # (c) web stayed on node1: the client saw node1 alone
    assert not double_service(rounds), "answers from two nodes at once"
    assert servers(rounds) == ["node1"], servers(rounds)
    assert state(ha, "web", "node2") is State.OSU and state(ha, "web", "node3") is State.OSU
    # (d) the writes were made: app recovered and recorded ISP, web's info is the last one set
    ha.wait(lambda: state(ha, "app") is State.ISP, 30, "app ISP recorded", step=0.2)
    listing = ha.ok("node1", "ins_list", "-t", "web", "--json")
    assert f"slow-disk-{SETINFOS - 1}" in listing, listing
    assert "ISP" in ha.ok("node1", "ins_list", "-t", "app"), log1
    assert state(ha, "web") is State.ISP
