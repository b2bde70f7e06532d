"""A hakeeper cluster on the lab's LAN: one hakeeperd per node, with identities and communication paths.

``HaCluster(lan, base)`` gives every node a state directory ``base/<node>``
(an LCD naming the node, a certificate of one cluster CA, the other nodes and a
path to each on every network of the LAN), starts ``hakeeperd`` inside each
node, and offers what the demo, ``hakeeper lab up``, the tests and the benchmarks
ask of it: path and node states as each node sees them, waiting for a state, the
daemons' logs. The daemons are processes of their nodes, so the LAN's cleanup
(and power-off) kills them.

The identities are made here, in one process, as ``hakeeper cluster init`` and
``join`` would make them (:func:`make_cluster`): a lab needs no join service.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hakeeper.comm.identity import (
    CA_CERT,
    NODE_CERT,
    NODE_KEY,
    Identity,
    init_cluster,
    install_identity,
    load_authority,
    load_identity,
)
from hakeeper.comm.paths import PathState, node_state, read_states
from hakeeper.comm.pki import Authority, cert_pem, key_pem, new_key
from hakeeper.db import Lcd

from .errors import LabError, TimedOut
from .lan import Lan
from .node import Node

ALIVE_TIMEOUT = 20.0
BIN = Path(sys.executable).parent  # the console scripts of this environment


def add_node(authority: Authority, root: Path, node: str) -> Identity:
    """A node of ``authority``'s cluster, as a join would make it."""
    key = new_key()
    cert = authority.issue(node, key.public_key())
    install_identity(
        root, {CA_CERT: cert_pem(authority.certificate), NODE_CERT: cert_pem(cert), NODE_KEY: key_pem(key)}
    )
    return load_identity(root)


def make_cluster(base: Path, nodes: list[str], cluster: str = "prod") -> dict[str, Identity]:
    """Identities for ``nodes`` in state directories ``base/<node>``; the first holds the CA."""
    first = nodes[0]
    identities = {first: init_cluster(base / first, first, cluster)}
    authority = load_authority(base / first)
    for node in nodes[1:]:
        identities[node] = add_node(authority, base / node, node)
    return identities


class HaCluster:
    def __init__(self, lan: Lan, base: Path, settings: Mapping[str, str] | None = None) -> None:
        self.lan = lan
        self.base = base
        self.names = [n.name for n in lan.nodes]
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.daemon_env: dict[str, dict[str, str]] = {}  # node -> more environment for its hakeeperd alone
        for node in lan.nodes:
            Lcd.open(self.root(node.name), node=node.name).close()
        make_cluster(base, self.names)
        for node in lan.nodes:
            with Lcd.open(self.root(node.name)) as lcd:
                if settings:
                    lcd.set_settings(dict(settings))
                for other in lan.nodes:
                    if other is node:
                        continue
                    lcd.create_node(other.name)
                    for iface, local in sorted(node.addresses.items()):
                        lcd.create_path(other.name, str(local), str(other.addresses[iface]))

    def root(self, name: str) -> Path:
        return self.base / name

    def env(self, name: str) -> dict[str, str]:
        # HAKEEPER_CONFIG: the machine's /etc/hakeeper/hakeeper.toml (its log file...) is not the lab nodes'
        return dict(os.environ, HAKEEPER_ROOT=str(self.root(name)), HAKEEPER_NODE=name, HAKEEPER_CONFIG=os.devnull)

    def command(self, node: str, *argv: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run a console script (``lcdstatus``, ``hakeeper`` ...) as ``node``'s administrator: through its hakeeperd."""
        return subprocess.run(
            [str(BIN / argv[0]), *argv[1:]], env=self.env(node), capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    def ok(self, node: str, *argv: str, timeout: float = 180.0) -> str:
        """:meth:`command`, which must succeed (else :class:`LabError`, with its output and the logs); its output."""
        done = self.command(node, *argv, timeout=timeout)
        if done.returncode != 0:
            raise LabError(
                f"{node}: {' '.join(argv)} exited {done.returncode}\n{done.stdout}{done.stderr}\n{self.logs()}"
            )
        return done.stdout

    def start(self, node: Node) -> subprocess.Popen[Any]:
        """Start hakeeperd inside ``node`` (its log: <root>/hakeeperd.log), with ``daemon_env[node]`` added to its
        environment (e.g. an ``LD_PRELOAD`` for this daemon and its children, not for :meth:`command`)."""
        root = self.root(node.name)
        log = open(root / "hakeeperd.log", "ab")  # noqa: SIM115 - the daemon's stdout, closed with it
        argv = [sys.executable, "-c", "from hakeeper.cli.daemon import hakeeperd; hakeeperd()", "--root", str(root)]
        proc = node.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**self.env(node.name), **self.daemon_env.get(node.name, {})},
        )
        log.close()
        self.procs[node.name] = proc
        return proc

    def start_all(self) -> None:
        for node in self.lan.nodes:
            self.start(node)

    def paths_seen_by(self, name: str) -> dict[str, PathState]:
        """Path states as ``name``'s hakeeperd last wrote them (node/local/remote → state)."""
        return read_states(self.root(name))

    def node_seen_by(self, observer: str, other: str) -> PathState:
        states = [s for key, s in self.paths_seen_by(observer).items() if key.split("/", 1)[0] == other]
        expected = len(self.lan.networks)
        if len(states) < expected:
            states += [PathState.UNKNOWN] * (expected - len(states))
        return node_state(states)

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str, *, step: float = 0.01) -> float:
        """Poll ``predicate`` until true; returns when (monotonic). Raises :class:`TimedOut` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.monotonic()
            time.sleep(step)
        raise TimedOut(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    def all_alive(self, names: list[str] | None = None) -> bool:
        names = names or self.names
        return all(
            state is PathState.ALIVE
            for observer in names
            for key, state in self.paths_seen_by(observer).items()
            if key.split("/", 1)[0] in names
        ) and all(len(self.paths_seen_by(o)) == (len(self.names) - 1) * len(self.lan.networks) for o in names)

    def log(self, name: str) -> str:
        path = self.root(name) / "hakeeperd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)[-3000:]}" for n in self.names)

    def declared_dead(self, observer: str, other: str) -> int:
        """How often ``observer``'s log says ``other`` was declared dead."""
        return self.log(observer).count(f"{other} DEAD: all")
