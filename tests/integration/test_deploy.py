"""docs/deploy.md, followed literally on three fresh nodes of the test LAN (issue 13: at most ten commands).

Each node gets what section 1 and 3 of the guide give it: the wheel installed into a venv of its own
(``pip install``, then ``python -m hakeeper.install`` writing the commands, the units and the example
configuration into the node's own directories), and a configuration file (``HAKEEPER_CONFIG`` stands for
/etc/hakeeper/hakeeper.toml: the node's name, state directory and log file come from it alone). Then the
numbered commands of section 4 run as they are written, in the node they name: a token printed by one is
pasted into the next, ``/etc/hakeeper`` is the node's configuration directory, a command ending in ``&``
runs in the background, and ``systemctl enable --now hakeeperd`` runs the installed unit's ExecStart with
a notify socket the test owns, waiting for READY=1 as systemd would. The guide must stay at most ten
commands, none of them ``sys_create`` or ``net_create``; and the result must be a protected web service
on a virtual address that a client sees move to node2 when node1 loses power.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab.lan import Lan
from hakeeper.lab.node import Node
from hakeeper.lab.probe import Prober, double_service, first_answer_from
from hakeeper.lab.webapp import write_scripts
from tests.wheel_fixtures import REPO, clean_env

pytestmark = pytest.mark.slow

GUIDE = REPO / "docs" / "deploy.md"
STEP = re.compile(r"^(node\d)# (.+?)\s+# (\d+)\b")
MOST_COMMANDS = 10
PORT = 8080  # the webapp's
ETC = "/etc/hakeeper/"


def guide_section() -> str:
    text = GUIDE.read_text()
    start = text.index("## 4.")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def documented_steps() -> list[tuple[str, str]]:
    """The numbered commands of section 4: (node, command line), in order."""
    block = guide_section().split("```sh\n", 1)[1].split("```", 1)[0]
    steps = [(m[1], m[2].strip(), int(m[3])) for line in block.splitlines() if (m := STEP.match(line))]
    assert [n for _, _, n in steps] == list(range(1, len(steps) + 1)), "the guide numbers its commands 1, 2, 3..."
    return [(node, line) for node, line, _ in steps]


def documented_yaml() -> str:
    """The file section 4 applies (the guide indents it under its bullet)."""
    return textwrap.dedent(guide_section().split("```yaml\n", 1)[1].split("```", 1)[0])


@dataclass
class Machine:
    """One node as the guide leaves it after sections 1 and 3."""

    node: Node
    base: Path

    @property
    def venv(self) -> Path:
        return self.base / "opt-hakeeper"

    @property
    def sbin(self) -> Path:
        return self.base / "sbin"

    @property
    def etc(self) -> Path:
        return self.base / "etc-hakeeper"

    @property
    def state(self) -> Path:
        return self.base / "var-lib-hakeeper"

    def env(self) -> dict[str, str]:
        env = clean_env(self.venv, HAKEEPER_CONFIG=str(self.etc / "hakeeper.toml"))
        env["PATH"] = f"{self.sbin}:/usr/sbin:/usr/bin:/sbin:/bin"
        return env

    def unit(self, name: str) -> configparser.SectionProxy:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read(self.base / "units" / name)
        return parser["Service"]


def install(machine: Machine, built: Path) -> None:
    """Section 1, "from the wheel alone", into the machine's own places; section 3's configuration file."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(machine.venv)], check=True, timeout=120)
    python = str(machine.venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", str(built)]
    done = subprocess.run(pip, env=clean_env(machine.venv), cwd=machine.base, capture_output=True, text=True,
                          timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, f"pip install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    place = [python, "-m", "hakeeper.install", "--sbindir", str(machine.sbin), "--unitdir", str(machine.base / "units"),
             "--confdir", str(machine.etc)]  # fmt: skip
    done = subprocess.run(place, env=clean_env(machine.venv), cwd=machine.base, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, f"hakeeper.install failed:\n{done.stdout}\n{done.stderr}"
    (machine.etc / "hakeeper.toml").write_text(
        f'[node]\nname = "{machine.node.name}"\nstate_dir = "{machine.state}"\n\n'
        f'[log]\ntarget = "file"\nfile = "{machine.base / "hakeeperd.log"}"\n'
    )
    write_scripts(machine.etc / "web", PORT)


@pytest.mark.parametrize("lan", [{"nodes": 3, "second_network": True}], indirect=True)
def test_the_deploy_guide_makes_a_protected_service_in_ten_commands(
    lan: Lan,
    tmp_path: Path,
    wheel: Path,
) -> None:
    steps = documented_steps()
    assert len(steps) <= MOST_COMMANDS, f"the guide takes {len(steps)} commands"
    assert not [line for _, line in steps if re.search(r"\b(sys_create|net_create)\b", line)]
    machines = {n.name: Machine(n, tmp_path / n.name) for n in lan.nodes}
    for m in machines.values():
        m.base.mkdir()
    with ThreadPoolExecutor(3) as pool:  # sections 1 and 3, on the three machines at once
        list(pool.map(lambda m: install(m, wheel), machines.values()))
    assert lan.node("node1").address == "198.18.0.11", "the guide's addresses are the lab's"
    assert len(lan.networks) == 2

    tokens: dict[str, str] = {}
    background: list[subprocess.Popen[Any]] = []
    daemons: dict[str, subprocess.Popen[Any]] = {}
    log: list[str] = []

    def typed(name: str, line: str) -> None:
        m = machines[name]
        log.append(f"{name}# {line}")
        line = line.replace(ETC, f"{m.etc}/")
        if line == "systemctl enable --now hakeeperd":
            daemons[name] = start_as_unit(m)
            return
        argv = shlex.split(line.removesuffix("&"))
        argv = [tokens[name] if a == "hk1...." else a for a in argv]
        argv[0] = str(m.sbin / argv[0])
        if line.endswith("&"):
            background.append(m.node.popen(argv, env=m.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_listening(m.node, argv)
            return
        done = m.node.run(argv, env=m.env(), timeout=180)
        assert done.returncode == 0, f"{log[-1]}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        for out in done.stdout.splitlines():  # 'cluster token --node ...' prints "NODE TOKEN" lines
            if re.fullmatch(r"node\d hk1\.\S+", out):
                node, token = out.split()
                tokens[node] = token

    (machines["node1"].etc / "web.yaml").write_text(documented_yaml().replace(ETC, f"{machines['node1'].etc}/"))
    try:
        with Prober(lan, [("198.18.0.50", PORT)], tmp_path / "probe.jsonl") as prober:
            for name, line in steps:
                typed(name, line)
            for proc in background:  # serve-join: the joins are done
                proc.kill()
                proc.wait(10)
            prober.wait_for(lambda r: first_answer_from(r, "node1") is not None, 60, "node1 serving web on the VIP")
            served = machines["node1"].node
            extended = machines["node1"].node.run([str(machines["node1"].sbin / "eqv_list"), "-t", "web", "-f:"],
                                                  env=machines["node1"].env(), timeout=60)  # fmt: skip
            assert {line.split(":")[2] for line in extended.stdout.splitlines()} == {"node2", "node3"}, extended
            lan.power_off(served)
            prober.wait_for(lambda r: first_answer_from(r, "node2") is not None, 30, "node2 serving web after node1")
            rounds = prober.rounds()
            views = {name: status(machines[name]) for name in ("node2", "node3")}
        assert not double_service(rounds), "two nodes answered for the VIP at once"
        for name, view in views.items():  # what the client saw, every survivor's hakeeper status says
            assert {n["name"]: n["state"] for n in view["nodes"]} == {
                "node1": "DEAD", "node2": "ALIVE", "node3": "ALIVE"
            }, (name, view["nodes"])  # fmt: skip
            (web,) = [h for h in view["hierarchies"] if h["name"] == "web"]
            assert [r["node"] for r in web["running"]] == ["node2"], (name, web)
            assert web["owner"]["node"] == "node2" and web["owner"]["agreed"], (name, web["owner"])
    finally:
        for proc in [*background, *daemons.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert "hakeeperd serving node node2" in (machines["node2"].base / "hakeeperd.log").read_text(), (
        "node2's log went where its configuration file says"
    )


def status(m: Machine) -> dict[str, Any]:
    """``hakeeper status --json`` on the machine, once web runs on node2 (bounded: the record settles)."""
    for _ in range(50):
        done = m.node.run([str(m.sbin / "hakeeper"), "status", "--json"], env=m.env(), timeout=60)
        assert done.returncode == 0, done.stderr
        view: dict[str, Any] = json.loads(done.stdout)
        webs = [h for h in view["hierarchies"] if h["name"] == "web"]
        if webs and [r["node"] for r in webs[0]["running"]] == ["node2"] and webs[0]["owner"]["agreed"]:
            return view
        time.sleep(0.2)
    return view


def start_as_unit(m: Machine) -> subprocess.Popen[Any]:
    """``systemctl enable --now hakeeperd``: the installed unit's ExecStart, Type=notify (READY=1 awaited)."""
    service = m.unit("hakeeperd.service")
    assert service["Type"] == "notify"
    path = m.base / "notify"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    env = dict(m.env(), NOTIFY_SOCKET=str(path), PATH="/usr/bin:/bin")  # systemd's PATH: the unit names its paths
    proc = m.node.popen(shlex.split(service["ExecStart"]), env=env, cwd="/", stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(20):  # bounded: STATUS and WATCHDOG lines may come first
            if "READY=1" in sock.recv(4096).decode().split("\n"):
                return proc
        raise AssertionError(f"{m.node.name}: hakeeperd never said READY=1")
    finally:
        sock.close()


def wait_listening(node: Node, argv: list[str]) -> None:
    """A server started in the background (serve-join) listens before the next command uses it."""
    address = argv[argv.index("--listen") + 1]
    probe = f"import socket; socket.create_connection(({address!r}, 7367), timeout=0.2).close()"
    for _ in range(150):  # bounded: 30 s and more
        if node.run([sys.executable, "-c", probe], timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{' '.join(argv)} does not listen")
