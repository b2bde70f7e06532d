"""``make demo``: build a sample cluster configuration in a fresh state directory and show it.

Until the node daemon exists this shows the configuration side: the LCD, the
LifeKeeper-style commands that fill it, and ``lcdstatus``. Every command is
printed before it runs, so the demo doubles as a tour.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

from hakeeper.cli.main import run
from hakeeper.db import Lcd

STEPS: list[tuple[str, list[list[str]]]] = [
    (
        "The cluster's nodes (this LCD belongs to node1) and the kinds of resources it protects",
        [
            ["sys_create", "-s", "node2"],
            ["sys_create", "-s", "node3"],
            ["app_create", "-a", "gen"],
            ["typ_create", "-a", "gen", "-r", "app"],
            ["app_create", "-a", "comm"],
            ["typ_create", "-a", "comm", "-r", "ip"],
            ["typ_create", "-a", "comm", "-r", "dns"],
            ["app_create", "-a", "filesys"],
            ["typ_create", "-a", "filesys", "-r", "volume"],
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
        "Extend it: node2 is the first backup, node3 the second",
        [
            ["eqv_create", "-t", tag, "-S", node, "-e", "SHARED"]
            for tag in ("web", "web-ip", "web-dns", "web-vol")
            for node in ("node2", "node3")
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
            ["eqv_create", "-t", "db", "-p", "2", "-S", "node2", "-r", "1"],
            ["dep_create", "-p", "web-ip", "-c", "web"],
        ],
    ),
]


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="hakeeper-demo-"))
    base = ["--root", str(root)]
    print(f"hakeeper demo: a fresh state directory in {root}\n")
    Lcd.open(root, node="node1").close()
    for title, commands in STEPS:
        print(f"# {title}")
        for argv in commands:
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
        "  hakeeper --help   (every command; each also takes --help)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
