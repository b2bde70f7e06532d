"""``hakeeper demo``, part 3: a live three-node cluster on this machine, and failovers you cause.

As root, the cluster runs on the lab's LAN (:mod:`hakeeper.lab`: a network namespace
per node, a bridge, a client): each node runs hakeeperd; a web service that
answers with its node's name is protected on node1 behind a virtual address
(the IP kit, ``comm/ip``, when it is there), extended to node2 and node3. The
client asks the service every 10 ms and the demo prints who answers, and how
long nobody did, whenever that changes.

Without root, the three nodes share this machine's loopback (127.0.0.11-13),
join the cluster with real join tokens, and the service is a gen/app web
server on 127.0.0.1. A "failure" is then a SIGKILL of hakeeperd: the guard
takes the service down and another node takes it over.

Interactive (a terminal): keys to fail and bring back nodes; ``q`` or Ctrl-C
stops everything cleanly. Otherwise (``hakeeper demo < /dev/null``, CI): one
scripted failover and return. Everything it uses is in the installed package.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hakeeper.comm.paths import PathState, node_state, read_states
from hakeeper.db import Lcd, State

NAMES = ("node1", "node2", "node3")
PORT = 8080
VIP = "198.18.0.50"
WAIT = 30.0  # s: the most any step of the demo waits
BIN = Path(sys.executable).parent
SILENCE = 0.03  # s without an answer (3 probe rounds) before the watcher calls it an outage


class Watcher:
    """Who serves, every 10 ms; prints each change with how long nobody answered."""

    def __init__(self, ask: Callable[[], str | None], say: Callable[[str], None] = print) -> None:
        self.ask = ask
        self.say = say
        self.current: str | None = None
        self.silent_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        first_silence: float | None = None
        while not self._stop.wait(0.01):
            who = self.ask()
            now = time.monotonic()
            if who is None:  # one lost probe on a busy machine is not an outage: 3 rounds in a row are
                first_silence = first_silence if first_silence is not None else now
                if self.current is None or now - first_silence < SILENCE:
                    continue
            else:
                first_silence = None
            if who == self.current:
                continue
            if who is None:
                self.silent_since = first_silence
                self.say(f"  client: no answer from the service (was {self.current})")
            elif self.silent_since is not None:
                self.say(f"  client: served by {who} again after {now - self.silent_since:.2f} s without an answer")
                self.silent_since = None
            else:
                self.say(f"  client: served by {who}")
            self.current = who

    def wait_for(self, test: Callable[[str | None], bool], limit: float = WAIT) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:  # bounded by `limit`
            if test(self.current):
                return True
            time.sleep(0.02)
        return False


class Loopback:
    """Three nodes on 127.0.0.11-13 in this network namespace; failure = SIGKILL of hakeeperd."""

    title = "three nodes on this machine's loopback (not root: no namespaces, no virtual address)"
    how_to_fail = "kill -9 its hakeeperd (the guard stops the service; a peer takes it over)"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.addresses = {name: f"127.0.0.{11 + i}" for i, name in enumerate(NAMES)}
        self.port = _free_port("127.0.0.1")  # this machine's own ports: take a free one

    def root(self, name: str) -> Path:
        return self.base / name

    def env(self, name: str) -> dict[str, str]:
        # HAKEEPER_CONFIG: the machine's /etc/hakeeper/hakeeper.toml (its log file...) is not the demo nodes'
        return dict(os.environ, HAKEEPER_ROOT=str(self.root(name)), HAKEEPER_NODE=name, HAKEEPER_CONFIG=os.devnull)

    def hk(self, name: str, *argv: str, show: bool = True, stdin: str | None = None) -> str:
        if show:
            print(f"  {name}$ {shlex.join(argv)}")
        done = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]], env=self.env(name), input=stdin, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{name}: {shlex.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def build(self) -> None:
        print("# Each node: a state directory, the cluster identity (node1 makes it; the others join with a token)")
        for name in NAMES:
            Lcd.open(self.root(name), node=name).close()
        self.hk("node1", "hakeeper", "cluster", "init", "--name", "demo")
        join_port = _free_port(self.addresses["node1"])
        listen = f"{self.addresses['node1']}:{join_port}"
        own = f"{self.addresses['node1']}/8"  # loopback: no interface address to announce by default
        server = subprocess.Popen(
            [str(BIN / "hakeeper"), "cluster", "serve-join", "--listen", listen, "--address", own, "--timeout", "60"],
            env=self.env("node1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for name in NAMES[1:]:
                token = self.hk("node1", "hakeeper", "cluster", "token", show=False).strip().splitlines()[-1]
                print(f"  node1$ hakeeper cluster token    # -> {token[:12]}...")
                for _ in range(50):  # bounded: the join service may need a moment to listen
                    try:
                        self.hk(name, "hakeeper", "cluster", "join", "--token", "-", "--address",
                                f"{self.addresses[name]}/8", listen, stdin=token + "\n")  # fmt: skip
                        break
                    except RuntimeError:
                        time.sleep(0.1)
        finally:
            server.terminate()
            server.wait(10)
        print("# The joins made the nodes and their communication paths on every node: no sys_create, no net_create")
        print("  node1$ net_list -f:")
        print("".join(f"    {line}\n" for line in self.hk("node1", "net_list", "-f:", show=False).splitlines()), end="")
        for name in NAMES:
            self.start(name)

    def start(self, name: str) -> None:
        log = open(self.root(name) / "hakeeperd.log", "ab")  # noqa: SIM115 - handed to the daemon
        self.procs[name] = subprocess.Popen(
            [str(BIN / "hakeeperd")], env=self.env(name), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def fail(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            print(f"# kill -9 {proc.pid}   ({name}'s hakeeperd)")
            proc.kill()
            proc.wait(10)

    def back(self, name: str) -> None:
        print(f"# hakeeperd starts again on {name}")
        self.start(name)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def service_scripts(self) -> dict[str, Path]:
        from hakeeper.lab.webapp import write_scripts

        return write_scripts(self.base / "webapp", self.port, address="127.0.0.1")

    def ask(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=0.05) as reply:
                return str(reply.read().decode())
        except OSError:
            return None

    def close(self) -> None:
        for name in NAMES:  # lkstop: each takes what it runs out of service, then stops
            self.stop(name)
        _wait(lambda: self.ask() is None, 5)

    def stop(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(subprocess.CalledProcessError, RuntimeError, subprocess.TimeoutExpired):
                subprocess.run([str(BIN / "lkstop")], env=self.env(name), capture_output=True, timeout=30, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


class LabLan(Loopback):
    """Three namespaces on the lab's LAN, and a client; failure = power off (every process, every cable)."""

    title = "three nodes on a LAN of network namespaces (the lab), a client, a virtual address"
    how_to_fail = "power it off: every process of the node dies and its cables are pulled"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.port = PORT
        from hakeeper.lab.lan import Lan

        self.lan = Lan(nodes=3, second_network=True).start()
        self.addresses = {n.name: str(n.address) for n in self.lan.nodes}
        self.target = self.addresses["node1"]
        self._prober: Any = None

    def build(self) -> None:
        from hakeeper.lab.cluster import HaCluster

        print("# Namespaces node1-3 and a client on two bridged networks (198.18.0.0/24, 198.18.1.0/24);")
        print("# each node: a state directory, a certificate of one cluster CA, a path to each peer on each network")
        self.ha = HaCluster(self.lan, self.base)
        self.ha.start_all()
        if not _wait(self.ha.all_alive, WAIT):
            raise RuntimeError("the paths did not come ALIVE")

    def env(self, name: str) -> dict[str, str]:
        return self.ha.env(name)

    def fail(self, name: str) -> None:
        print(f"# power off {name}")
        self.lan.power_off(self.lan.node(name))

    def back(self, name: str) -> None:
        print(f"# power on {name}; hakeeperd starts")
        node = self.lan.node(name)
        self.lan.power_on(node)
        self.ha.start(node)

    def alive(self, name: str) -> bool:
        return self.lan.node(name).is_on

    def service_scripts(self) -> dict[str, Path]:
        from hakeeper.lab.webapp import write_scripts

        return write_scripts(self.base / "webapp", self.port)

    def watch(self, target: str) -> None:
        from hakeeper.lab.probe import Prober

        self.target = target
        targets = [(target, PORT)] if target == VIP else [(a, PORT) for a in self.addresses.values()]
        self._prober = Prober(self.lan, targets, self.base / "probe.jsonl", max_seconds=3600).start()

    def ask(self) -> str | None:
        if self._prober is None:
            return None
        rounds = self._prober.rounds()
        if not rounds:
            return None
        names = rounds[-1].names
        return next(iter(names)) if len(names) == 1 else (" and ".join(sorted(names)) or None)

    def close(self) -> None:
        if self._prober is not None:
            self._prober.stop(check=False)
        self.lan.close()


def _free_port(address: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _wait(test: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:  # bounded by `limit`
        if test():
            return True
        time.sleep(0.05)
    return False


def _holder(cluster: Loopback) -> str | None:
    for name in NAMES:
        if not cluster.alive(name):
            continue
        with Lcd.open(cluster.root(name)) as lcd:
            if lcd.resource("web").state is State.ISP:
                return name
    return None


def _seen(cluster: Loopback) -> str:
    states = []
    for name in NAMES:
        paths = read_states(cluster.root(name))
        others = [other for other in NAMES if other != name]
        alive = [o for o in others if node_state([s for k, s in paths.items() if k.startswith(o + "/")])
                 is PathState.ALIVE]  # fmt: skip
        states.append(f"{name} sees {', '.join(alive) or 'nobody'}")
    return "; ".join(states)


def run_demo(interactive: bool | None = None) -> int:
    """Part 3 of ``hakeeper demo``."""
    interactive = sys.stdin.isatty() if interactive is None else interactive
    base = Path(tempfile.mkdtemp(prefix="hakeeper-demo-cluster-"))
    cluster: Loopback
    if os.geteuid() == 0 and not os.environ.get("HAKEEPER_DEMO_LOOPBACK"):
        from hakeeper.lab.lan import unavailable_reason

        why = unavailable_reason()
        cluster = Loopback(base) if why else LabLan(base)
    else:
        cluster = Loopback(base)
    print(f"\n=== Part 3: a live cluster — {cluster.title}\n    state directories in {base}\n")
    watcher: Watcher | None = None
    previous = signal.getsignal(signal.SIGINT)
    try:
        cluster.build()
        target = protect(cluster)
        if isinstance(cluster, LabLan):
            cluster.watch(target)
        watcher = Watcher(cluster.ask).start()
        if not watcher.wait_for(lambda who: who == "node1"):
            print("the service did not come up on node1; stopping")
            return 1
        _explain(cluster, target)
        return _interact(cluster, watcher) if interactive else _scripted(cluster, watcher)
    except KeyboardInterrupt:
        print("\nstopping the cluster")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave namespaces behind
        if watcher is not None:
            watcher.stop()
        cluster.close()
        signal.signal(signal.SIGINT, previous)
        print(f"cluster stopped; its logs stay in {base}")


def protect(cluster: Loopback) -> str:
    """The service on node1, extended to node2 and node3; returns the address clients use."""
    scripts = cluster.service_scripts()
    print("\n# The service: a web server answering with its node's name, protected by a gen/app resource")
    params = [f"restore={scripts['restore']}", f"remove={scripts['remove']}", f"quickCheck={scripts['quickCheck']}"]
    cluster.hk("node1", "hakeeper", "create", "gen/app", "-t", "web", "-Q", "2", "-I", "INIT_OSU", *params)
    target = "127.0.0.1" if not isinstance(cluster, LabLan) else "198.18.0.11-13 (whichever node runs it)"
    kits = cluster.hk("node1", "hakeeper", "kits", show=False)
    if isinstance(cluster, LabLan) and "comm/ip" in kits:
        print("# ... behind a virtual address, which moves with it (the IP kit)")
        cluster.hk("node1", "hakeeper", "create", "comm/ip", "-t", "vip", "-I", "INIT_OSU", f"address={VIP}/24")
        cluster.hk("node1", "dep_create", "-p", "web", "-c", "vip")
        target = VIP
    for priority, name in enumerate(NAMES[1:], start=2):
        cluster.hk("node1", "hakeeper", "extend", "-t", "web", "-s", name, "-p", str(priority))
    cluster.hk("node1", "perform_action", "-t", "web", "-a", "restore")
    print()
    return target


def _explain(cluster: Loopback, target: str) -> None:
    root = cluster.root("node1")
    print(
        f"\nThe service answers on port {cluster.port} of {target}; the client asks every 10 ms.\n"
        f"Watch it from another terminal:\n"
        f"  export PATH={BIN}:$PATH HAKEEPER_ROOT={root}     # node1's view; node2, node3 beside it\n"
        f"  hakeeper status; lcdstatus -e; hakeeper why web; tail -f {root}/hakeeperd.log\n"
        f"A failure here means: {cluster.how_to_fail}.\n"
    )


def _scripted(cluster: Loopback, watcher: Watcher) -> int:
    holder = _holder(cluster) or "node1"
    cluster.fail(holder)
    if not watcher.wait_for(lambda who: who not in (None, holder)):
        print("  no other node took the service over")
        return 1
    new = watcher.current or "?"
    time.sleep(0.5)
    print(f"\n  {new}$ lcdstatus -e")
    print("    " + cluster.hk(new, "lcdstatus", "-e", show=False).replace("\n", "\n    ").rstrip())
    print(f"  {new}$ hakeeper why web")
    print("    " + cluster.hk(new, "hakeeper", "why", "web", show=False).replace("\n", "\n    ").rstrip())
    cluster.back(holder)
    if not _wait(lambda: "nobody" not in _seen(cluster), WAIT):
        print("  the node did not come back")
        return 1
    time.sleep(1.0)
    print(f"  {holder} is back: {_seen(cluster)}; the service stays on {watcher.current} (switchback INTELLIGENT)\n")
    return 0


KEYS = "[1-3] fail or bring back that node   [s] status   [q] quit"


def _interact(cluster: Loopback, watcher: Watcher) -> int:
    print(KEYS)
    while True:  # until q, Ctrl-C or end of input
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            return 0
        key = line.strip().lower()
        if key == "q":
            return 0
        if key == "s":
            print(f"  served by {watcher.current or 'nobody'}; {_seen(cluster)}")
            holder = _holder(cluster)
            if holder:
                print("    " + cluster.hk(holder, "lcdstatus", "-e", show=False).replace("\n", "\n    ").rstrip())
        elif key in ("1", "2", "3"):
            name = f"node{key}"
            (cluster.fail if cluster.alive(name) else cluster.back)(name)
        else:
            print(KEYS)
