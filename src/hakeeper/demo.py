"""``hakeeper demo`` (and ``make demo``): a tour of hakeeper on this machine, in fresh state directories.

Part 1 builds a sample cluster configuration with the LifeKeeper-style commands
and shows it with ``lcdstatus``. Part 2 runs a live node: hakeeperd protects a
small web server (a gen/app resource on 127.0.0.1), which is killed with
SIGKILL twice and comes back by itself — once found by quickCheck, once
reported by a monitor with sendevent. Part 3 (:mod:`hakeeper.demo_cluster`)
runs a live three-node cluster and fails nodes over. Every command is printed
before it runs. ``hakeeper demo --part N`` runs one part alone. Everything the
demo needs is in the installed package: it runs from anywhere, not only from a
checkout of the repository.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path

from hakeeper.cli.base import run
from hakeeper.config import without_config_file
from hakeeper.db import Lcd, State

#: A step of part 1 that is not a command: it does something and says what.
Recorded = Callable[[Path], str]


def equivalent(tag: str, node: str, priority: int | None = None, other_priority: int | None = None) -> Recorded:
    """What eqv_create records once ``node`` agreed (part 1 has no node2 or node3 to agree: they are names)."""

    def record(root: Path) -> str:
        with Lcd.open(root) as lcd:
            done = lcd.create_equivalency(tag, node, priority=priority, other_priority=other_priority)
        return f"  (recorded here as extend would once {node} agreed: {tag} on {node}, priority {done.priority})"

    return record


STEPS: list[tuple[str, list[list[str] | Recorded]]] = [
    (
        "The cluster's nodes (this LCD belongs to node1) and the kinds of resources: every kit's, and one more",
        [
            ["sys_create", "-s", "node2"],
            ["sys_create", "-s", "node3"],
            ["app_create", "-a", "filesys"],
            ["typ_create", "-a", "filesys", "-r", "volume"],
            ["typ_list", "-f/"],
        ],
    ),
    (
        "A web service: the application needs its address, its DNS name and its volume",
        [
            [
                "ins_create",
                "-a",
                "comm",
                "-r",
                "ip",
                "-t",
                "web-ip",
                "-i",
                "198.18.0.100/24",
                "-v",
                '{"address": "198.18.0.100/24", "interface": "eth0"}',
            ],
            [
                "ins_create",
                "-a",
                "comm",
                "-r",
                "dns",
                "-t",
                "web-dns",
                "-i",
                "www.cluster.test",
                "-v",
                '{"name": "www.cluster.test", "ttl": 30}',
            ],
            ["ins_create", "-a", "filesys", "-r", "volume", "-t", "web-vol", "-i", "/srv/www"],
            [
                "ins_create",
                "-a",
                "gen",
                "-r",
                "app",
                "-t",
                "web",
                "-i",
                "web-server",
                "-s",
                "AUTOMATIC",
                "-Q",
                "30",
                "-v",
                "nginx serving /srv/www",
            ],
            ["dep_create", "-p", "web", "-c", "web-ip"],
            ["dep_create", "-p", "web", "-c", "web-vol"],
            ["dep_create", "-p", "web-dns", "-c", "web-ip"],
            ["dep_create", "-p", "web", "-c", "web-dns"],
        ],
    ),
    (
        "Extend it: node2 is the first backup, node3 the second. An equivalency is recorded on both nodes\n"
        "# or on neither, through hakeeperd (extend, or eqv_create): here node2 and node3 are only names",
        [
            ["eqv_create", "-t", "web", "-S", "node2", "-e", "SHARED"],
            *(equivalent(tag, node) for tag in ("web", "web-ip", "web-dns", "web-vol") for node in ("node2", "node3")),
        ],
    ),
    (
        "Mark it in service here (the recovery engine will do this by running restore actions)",
        [["ins_setstate", "-t", tag, "-S", "ISP", "-R", "demo"] for tag in ("web-vol", "web-ip", "web-dns", "web")],
    ),
    (
        "A second hierarchy that prefers node2, and a refused change: a dependency cycle",
        [
            ["ins_create", "-a", "gen", "-r", "app", "-t", "db", "-i", "postgres"],
            equivalent("db", "node2", priority=2, other_priority=1),
            ["dep_create", "-p", "web-ip", "-c", "web"],
        ],
    ),
]


PARTS = (1, 2, 3)


def main(parts: Collection[int] = PARTS) -> int:
    """The demo's ``parts`` (1: a configuration, 2: a live node, 3: a live cluster), in order."""
    with without_config_file():  # the demo's nodes are not this machine's: its hakeeper.toml stays out
        return _parts(parts)


def _parts(parts: Collection[int]) -> int:
    if 1 in parts:
        configuration()
    if 2 in parts:
        code = live()
        if code:
            return code
    if 3 in parts:
        from hakeeper.demo_cluster import run_demo

        return run_demo()
    return 0


def configuration() -> None:
    """Part 1: a sample configuration, made with the LifeKeeper-style commands and shown by lcdstatus."""
    root = Path(tempfile.mkdtemp(prefix="hakeeper-demo-"))
    base = ["--root", str(root)]
    print(f"hakeeper demo: a fresh state directory in {root}\n")
    Lcd.open(root, node="node1").close()
    for title, commands in STEPS:
        print(f"# {title}")
        for argv in commands:
            if callable(argv):
                print(argv(root))
                continue
            print("$ " + shlex.join(argv))
            code = run(argv[0], argv[1:] + base, prog=argv[0])
            if code:
                print(f"  (exit {code}: refused, and the LCD is unchanged)")
        print()
    print("$ lcdstatus -e")
    run("lcdstatus", ["-e", *base])
    print("\n$ lcdstatus -r web")
    run("lcdstatus", ["-r", "web", *base])
    bin_dir = Path(sys.executable).parent
    print(
        f"\nExplore it yourself:\n  export HAKEEPER_ROOT={root} PATH={bin_dir}:$PATH\n"
        "  lcdstatus -e; ins_list -f:; dep_list -C web -f:; eqv_list -f:; hakeeper changes -f' '\n"
        "  hakeeper --help   (every command; each also takes --help)\n"
    )


RESTORE = """#!/bin/sh
# start the web server unless it runs; succeed once it answers
pidfile="$HAKEEPER_ROOT/web.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then exit 0; fi
cd "$HAKEEPER_ROOT" && nohup {python} -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &
echo $! > "$pidfile"
i=0
while [ $i -lt 200 ]; do
  {python} -c "import socket; socket.create_connection(('127.0.0.1', {port}), 0.2)" 2>/dev/null && exit 0
  sleep 0.05; i=$((i+1))
done
echo "the web server did not answer"; exit 1
"""
REMOVE = """#!/bin/sh
pidfile="$HAKEEPER_ROOT/web.pid"
[ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null
rm -f "$pidfile"; exit 0
"""
CHECK = """#!/bin/sh
# running = the server's process exists and is not a zombie
pidfile="$HAKEEPER_ROOT/web.pid"
[ -f "$pidfile" ] || exit 7
grep -q '^State:[[:space:]]*[^Z[:space:]]' "/proc/$(cat "$pidfile")/status" 2>/dev/null || exit 7
"""


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _pid(root: Path) -> int | None:
    try:
        return int((root / "web.pid").read_text())
    except (OSError, ValueError):
        return None


def _back(root: Path, port: int, old: int, limit: float = 20.0) -> float | None:
    """Seconds until recovery is over: the resource ISP again, served by a new process; None if not in ``limit``."""
    start = time.monotonic()
    with Lcd.open(root) as lcd:
        while time.monotonic() - start < limit:  # bounded: at most `limit` seconds of 20 ms polls
            if _pid(root) not in (None, old) and _serving(port) and lcd.resource("web").state is State.ISP:
                return time.monotonic() - start
            time.sleep(0.02)
    return None


def live() -> int:
    """Part 2: one live node protecting a web server."""
    root = Path(tempfile.mkdtemp(prefix="hakeeper-demo-live-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    scripts = root / "scripts"
    scripts.mkdir()
    for name, text in (("restore", RESTORE), ("remove", REMOVE), ("check", CHECK)):
        (scripts / name).write_text(text.format(python=sys.executable, port=port))
        (scripts / name).chmod(0o755)
    Lcd.open(root, node="node1").close()
    base = ["--root", str(root)]

    def step(*argv: str) -> int:
        print("$ " + shlex.join(argv))
        if argv[0] == "hakeeper":
            return run(argv[1], [*argv[2:], *base], prog=f"hakeeper {argv[1]}")
        return run(argv[0], [*argv[1:], *base], prog=argv[0])

    print(f"# Part 2: a live node (state directory {root}) protects a web server on 127.0.0.1:{port}")
    try:
        step("hakeeper", "create", "gen/app", "-t", "web", "-Q", "1", f"restore={scripts / 'restore'}",
             f"remove={scripts / 'remove'}", f"quickCheck={scripts / 'check'}")  # fmt: skip
        if step("lkstart") or step("perform_action", "-t", "web", "-a", "restore"):
            print("the live part could not start; see the messages above")
            return 1
        step("lcdstatus", "-e")
        print(f"GET http://127.0.0.1:{port}/ -> {'200 OK' if _serving(port) else 'no answer'}\n")
        for how in ("quickCheck finds it (checked every second)", "a monitor reports it with sendevent"):
            pid = _pid(root)
            if pid is None:
                print("the web server is not running; stopping the demo")
                return 1
            if how.startswith("a monitor"):
                step("ins_setchkint", "-t", "web", "-v", "0")
            print(f"# kill -9 {pid} (the web server); {how}")
            os.kill(pid, signal.SIGKILL)
            if how.startswith("a monitor"):
                step("sendevent", "-C", "generic", "-E", "failure", "-n", "web", "-m", "demo-monitor")
            took = _back(root, port, pid)
            print(f"  serving again after {took:.2f} s\n" if took is not None else "  not back within 20 s\n")
        print("# what hakeeperd logged:")
        log = (root / "hakeeperd.log").read_text(errors="replace").splitlines()
        print("\n".join("  " + line for line in log if " -> " in line or "recovered" in line or "quickCheck" in line))
        print()
        step("lkstop")
        step("lcdstatus", "-e")
        print(f"GET http://127.0.0.1:{port}/ -> {'200 OK' if _serving(port) else 'no answer (out of service)'}")
    finally:
        run("lkstop", ["-f", *base], out=open(os.devnull, "w"))  # noqa: SIM115 - if anything above failed
        pid = _pid(root)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
