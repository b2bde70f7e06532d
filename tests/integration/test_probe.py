"""The tools of the failover tests: the web app's action scripts, and the client's prober that must see
who serves, every 10 ms, and catch two nodes serving at once. Each test here fails if a tool lies."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hakeeper.lab import procs
from hakeeper.lab.lan import Lan
from hakeeper.lab.node import Node
from hakeeper.lab.probe import (
    Prober,
    Round,
    double_service,
    first_answer_from,
    outage,
    served_by,
    spacing,
)
from hakeeper.lab.shell import read_line
from hakeeper.lab.webapp import script_env, write_scripts

PORT = 8080
TWO_NODES = pytest.mark.parametrize("lan", [{"nodes": 2}], indirect=True)


class App:
    """The web app's scripts, run by hand in the nodes as hakeeper would run them (each node its own root)."""

    def __init__(self, base: Path, *, stop_delay: float = 0.0) -> None:
        self.base = base
        self.scripts = write_scripts(base / "actions", PORT, stop_delay=stop_delay)

    def root(self, node: Node) -> Path:
        path = self.base / node.name
        path.mkdir(exist_ok=True)
        return path

    def run(self, node: Node, action: str, *, named: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        env = script_env(self.root(node), node.name if named else None, **extra)
        return node.run([str(self.scripts[action])], env=env, timeout=20)

    def code(self, node: Node, action: str) -> int:
        return self.run(node, action).returncode

    def pid(self, node: Node) -> int:
        return int((self.root(node) / f"webapp-{PORT}.pid").read_text())


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))


def get(client: Node, address: str, port: int = PORT) -> str:
    """One GET from the client (curl-less: a python one-liner inside the client)."""
    url = f"http://{address}:{port}/"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=2).read().decode())"
    return client.run(["python3", "-I", "-c", code], check=True, timeout=10).stdout.strip()


# ---- the analysis, on rounds made up here -------------------------------------------------------------------


def rounds_of(*who: str) -> list[Round]:
    """Rounds 10 ms apart from t=100.0; "" = nobody, "a+b" = both answered."""
    targets = ["198.18.0.11:8080", "198.18.0.12:8080"]
    made = []
    for n, names in enumerate(who):
        answers: dict[str, str | None] = dict.fromkeys(targets)
        for target, name in zip(targets, [x for x in names.split("+") if x], strict=False):
            answers[target] = name
        made.append(Round(n, 100.0 + n / 100, answers))
    return made


def test_double_service_is_two_names_in_one_round_not_one_name_twice() -> None:
    rounds = rounds_of("node1", "node1+node2", "node2", "node2+node2", "", "node1+node2")
    assert [r.n for r in double_service(rounds)] == [1, 5]
    assert double_service(rounds_of("node1", "", "node2")) == []


def test_outage_is_the_longest_silence_and_infinite_when_nobody_comes_back() -> None:
    rounds = rounds_of("node1", "", "", "node1", "", "", "", "node2", "node2")
    assert outage(rounds, after=100.0) == pytest.approx(0.03)  # rounds 4..6 silent, node2 at round 7
    assert outage(rounds, after=100.045) == pytest.approx(0.025)  # silent at `after` already: from `after`
    assert outage(rounds, after=100.07) == 0.0
    assert outage(rounds_of("node1", "", ""), after=100.0) == math.inf
    with pytest.raises(ValueError, match="no round"):
        outage(rounds, after=200.0)


def test_first_answer_and_who_served_when() -> None:
    rounds = rounds_of("node1", "node1+node2", "", "node2", "node2")
    assert first_answer_from(rounds, "node2") == pytest.approx(100.01)
    assert first_answer_from(rounds, "node2", after=100.015) == pytest.approx(100.03)
    assert first_answer_from(rounds, "node1", after=100.015) is None
    assert [(round(t, 3), who) for t, who in served_by(rounds)] == [
        (100.0, "node1"),
        (100.01, "node1+node2"),
        (100.02, None),
        (100.03, "node2"),
    ]
    assert spacing(rounds) == pytest.approx(0.01)


def test_the_prober_refuses_targets_outside_the_test_lan(tmp_path: Path) -> None:
    for target in [("127.0.0.1", 80), ("8.8.8.8", 53), ("198.20.0.1", 80), ("198.18.0.11", 0)]:
        with pytest.raises(ValueError, match="not a port of the lab"):
            Prober(Lan(nodes=1), [target], tmp_path / "probe.jsonl")


# ---- on the test LAN ---------------------------------------------------------------------------------------


@pytest.mark.slow
@TWO_NODES
def test_the_webapp_scripts_keep_the_ocf_contract(lan: Lan, tmp_path: Path) -> None:
    node1 = lan.node("node1")
    app = App(tmp_path)
    assert app.code(node1, "quickCheck") == 7, "never started: stopped"
    assert app.code(node1, "remove") == 0, "stopping what is stopped succeeds"
    first = app.run(node1, "restore")
    assert first.returncode == 0, first.stdout + first.stderr
    pid = app.pid(node1)
    assert pid in node1.pids(), "the server runs inside node1's namespaces"
    assert app.code(node1, "restore") == 0 and app.pid(node1) == pid, "starting what runs succeeds, no second one"
    assert app.code(node1, "quickCheck") == 0
    assert get(lan.client, node1.address) == "node1"

    # bound to node1's namespace: the port is free in node2 and in the client
    node2 = lan.node("node2")
    with pytest.raises(subprocess.CalledProcessError):
        get(lan.client, node2.address)

    node1.freeze(pid)
    frozen = app.run(node1, "quickCheck")
    assert frozen.returncode == 1 and "frozen" in frozen.stdout
    node1.thaw(pid)
    assert app.code(node1, "quickCheck") == 0

    node1.kill_daemon(pid)  # SIGKILL: a crash leaves the pid file behind
    crashed = app.run(node1, "quickCheck")
    assert crashed.returncode == 1 and "crashed" in crashed.stdout
    # restore's whole process group is SIGKILLed when it is done (hakeeper does so to a script it gives up on)
    restore = shlex.quote(str(app.scripts["restore"]))
    env = script_env(app.root(node1), "node1")
    node1.run(["setsid", "sh", "-c", f"{restore} >/dev/null && kill -KILL 0"], env=env, timeout=20)
    assert app.pid(node1) != pid, "restore replaced the crashed server"
    assert app.code(node1, "quickCheck") == 0, "a daemon: the server left restore's process group"
    pid = app.pid(node1)
    assert app.code(node1, "remove") == 0
    assert pid not in node1.pids(), "remove returns once the server is gone"
    assert app.code(node1, "quickCheck") == 7
    assert not (app.root(node1) / f"webapp-{PORT}.pid").exists()

    unset = node1.run([str(app.scripts["quickCheck"])], env={"PATH": os.environ["PATH"]}, timeout=20)
    assert unset.returncode == 6 and "HAKEEPER_ROOT" in unset.stdout, "no state directory: configuration error"


# Runs restore as a daemon that adopts orphans but never reaps them might: the server's corpse stays a zombie.
REAPER = """
import ctypes, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
print("restored", subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
@TWO_NODES
def test_remove_waits_for_a_slow_stop_and_is_not_fooled_by_a_zombie(lan: Lan, tmp_path: Path) -> None:
    node1 = lan.node("node1")
    app = App(tmp_path, stop_delay=0.5)  # the server serves on for 0.5 s after SIGTERM
    argv = [sys.executable, "-I", "-c", REAPER, str(app.scripts["restore"])]
    env = script_env(app.root(node1), "node1")
    reaper = node1.popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert reaper.stdout is not None and read_line(reaper.stdout.fileno(), time.monotonic() + 15) == "restored 0"
        pid = app.pid(node1)
        assert parent(pid) == reaper.pid, "the server was adopted by the reaper"
        assert get(lan.client, node1.address) == "node1"
        removed = app.run(node1, "remove")
        assert removed.returncode == 0, removed.stdout
        assert not procs.alive(pid), "remove returned before the server had stopped"
        log = (app.root(node1) / f"webapp-{PORT}.log").read_text()
        assert f"pid {pid} stopped by SIGTERM" in log, "remove let the server stop by itself (no SIGKILL)"
        assert procs.state(pid) == "Z", "the server's corpse is a zombie (kill -0 would call it running)"
        with pytest.raises(subprocess.CalledProcessError):
            get(lan.client, node1.address)
        assert app.code(node1, "quickCheck") == 7
    finally:
        reaper.kill()
        reaper.communicate(timeout=5)


@pytest.mark.slow
@TWO_NODES
def test_restore_fails_fast_when_the_port_is_taken(lan: Lan, tmp_path: Path) -> None:
    node1 = lan.node("node1")
    code = f"import socket, time; s = socket.create_server(('', {PORT})); print('ready', flush=True); time.sleep(60)"
    squatter = node1.popen(["python3", "-I", "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert squatter.stdout is not None and read_line(squatter.stdout.fileno(), time.monotonic() + 5) == "ready"
        app = App(tmp_path)
        result = app.run(node1, "restore")
        # reported when the server exits, with its reason, rather than after restore's 5 s of waiting
        assert result.returncode == 1 and "exited" in result.stdout and "in use" in result.stdout, result.stdout
        assert app.code(node1, "quickCheck") == 7
    finally:
        squatter.kill()
        squatter.communicate(timeout=5)


@pytest.mark.slow
@TWO_NODES
def test_the_prober_sees_who_serves_catches_two_at_once_and_measures_an_outage(lan: Lan, tmp_path: Path) -> None:
    node1, node2 = lan.node("node1"), lan.node("node2")
    app = App(tmp_path)
    assert app.code(node1, "restore") == 0
    targets = [(node1.address, PORT), (node2.address, PORT)]
    with Prober(lan, targets, tmp_path / "probe.jsonl") as prober:
        begun = time.monotonic()
        rounds = prober.wait_for(lambda rs: len(rs) >= 100, 10, "100 rounds")
        assert spacing(rounds) < 0.03, "the prober's resolution: a round every ~10 ms"
        assert all(r.names == {"node1"} for r in rounds if r.t >= begun)
        assert app.code(node1, "quickCheck") == 0 and app.code(node2, "quickCheck") == 7

        # a second server, named by node2's own hostname: the detector must see both
        assert app.run(node2, "restore", named=False).returncode == 0
        both = prober.wait_for(double_service, 5, "node1 and node2 answering in one round")
        assert double_service(both)[0].names == {"node1", "node2"}

        assert app.code(node1, "remove") == 0
        removed = time.monotonic()
        assert app.code(node1, "quickCheck") == 7
        rounds = prober.wait_past(removed + 0.5)
        after = [r for r in rounds if r.t >= removed]
        assert len(after) >= 30 and all(r.names == {"node2"} for r in after), "only node2 once node1 removed"
        assert outage(rounds, after=removed) == 0.0, "node2 served all along"
        assert [who for _, who in served_by([r for r in rounds if r.t >= begun])] == ["node1", "node1+node2", "node2"]

        # node2 dies; node1 takes over by hand after a while: the outage covers that while, no more
        before = time.monotonic()
        lan.power_off(node2)
        off = time.monotonic()
        prober.wait_past(time.monotonic() + 0.3)
        restoring = time.monotonic()
        assert app.code(node1, "restore") == 0
        restored = time.monotonic()
        rounds = prober.wait_for(lambda rs: first_answer_from(rs, "node1", after=off) is not None, 5, "node1 back")
        gap = outage(rounds, after=before)
        assert restoring - off - 0.1 <= gap <= restored - before + 0.1, (before, off, restoring, restored, gap)
        assert first_answer_from(rounds, "node2", after=off + 0.1) is None, "a powered-off node answers nothing"
        assert not double_service([r for r in rounds if r.t >= removed])
    assert not prober.running
    assert prober.proc is not None and prober.proc.returncode == 0, prober.stderr()
    assert prober.proc.pid not in lan.client.pids()
    with open(tmp_path / "probe.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert [x["n"] for x in lines] == list(range(len(lines))), "every round recorded, in order"
    assert 0 <= begun - lines[0]["t"] < 5.0, "t is on the test's own monotonic clock"


@pytest.mark.slow
@TWO_NODES
def test_the_prober_stops_on_failure_and_by_itself(lan: Lan, tmp_path: Path) -> None:
    node1 = lan.node("node1")
    target = [(node1.address, PORT)]
    with pytest.raises(RuntimeError, match="the test failed"), Prober(lan, target, tmp_path / "a") as p:
        pid = p.proc.pid if p.proc else 0
        assert pid in lan.client.pids(), "the probe runs inside the client"
        raise RuntimeError("the test failed")
    assert pid not in lan.client.pids() and p.proc is not None and p.proc.returncode is not None

    bounded = Prober(lan, [(node1.address, PORT)], tmp_path / "b", max_seconds=0.5).start()
    assert bounded.proc is not None
    bounded.proc.wait(timeout=5)  # raises if it outlives its bound
    assert bounded.proc.returncode == 0
    rounds = bounded.rounds()
    assert 15 <= len(rounds) <= 60 and all(r.names == frozenset() for r in rounds), "nobody serves: no answers"
    bounded.stop()

    # SIGTERM ends it cleanly even when every probe times out (an address nobody has)
    silent = Prober(lan, [("198.18.0.99", PORT)], tmp_path / "c").start()
    assert silent.proc is not None
    silent.wait_past(time.monotonic() + 0.3)
    silent.proc.send_signal(signal.SIGTERM)
    silent.proc.wait(timeout=5)
    assert silent.proc.returncode == 0
    silent.stop()
    assert spacing(silent.rounds()) < 0.03, "a target that never answers does not slow the rounds down"
