"""``hakeeper lab ACTION`` and ``hakeeper demo``: a cluster on this machine, to try before deploying.

``lab up`` builds a LAN of network namespaces (:mod:`hakeeper.lab`) with a
cluster of hakeeperd on it and leaves it running; ``lab status`` shows it;
``lab down`` removes exactly what ``up`` made, from any shell
(:mod:`hakeeper.lab.keeper`). ``demo`` is the tour ``make demo`` runs. Neither
works on a node's state directory, so neither takes ``--root`` or ``-d``, and
both always run here, never through hakeeperd.
"""

from __future__ import annotations

import argparse

from hakeeper.cli.base import Context, arg, command
from hakeeper.errors import UsageError
from hakeeper.lab.errors import LabError

ACTIONS = ("up", "down", "status")

#: Which options each action takes (argparse dest names); the others must stay unset.
ACTION_OPTIONS: dict[str, frozenset[str]] = {
    "up": frozenset({"nodes", "networks", "bare", "dir"}),
    "down": frozenset(),
    "status": frozenset(),
}
SHOWN = {"nodes": "--nodes", "networks": "--networks", "bare": "--bare", "dir": "--dir"}
DEFAULT_NODES = 3
DEFAULT_NETWORKS = 2

EPILOG = """actions:
  up [--nodes N] [--networks 1|2] [--bare] [--dir DIR]
               build a LAN of network namespaces here: N nodes (default 3) and a
               client on one or two bridged networks (198.18.0.0/24, 198.18.1.0/24);
               each node gets a state directory in DIR (default: a new
               /tmp/hakeeper-lab-*) of one cluster, with a communication path to
               every other node on every network, and runs hakeeperd (--bare: the
               LAN alone). Needs root. It ends by itself after 24 hours.
  status       what is up: the hosts, their addresses and namespaces, each
               node's hakeeperd and which nodes it sees; exit 1 if part of the
               lab is gone
  down         stop every process of the lab and delete its namespaces (and
               so its bridges and links); the state directories and logs stay

Nothing is created in this machine's own network namespace, and every address is
in 198.18.0.0/15. The lab's record is <run dir>/hakeeper-lab.json; up, status and
down find it there from any shell (--run-dir: another directory than /run, for a
second lab). Trying a configuration:
  hakeeper lab up
  HAKEEPER_ROOT=/tmp/hakeeper-lab-.../node1 hakeeper create gen/app -t web ...
  hakeeper lab status; ...; hakeeper lab down"""


@command(
    "lab",
    "a cluster on a LAN of network namespaces on this machine, to try a configuration: up, down, status",
    arg("action", choices=ACTIONS, metavar="ACTION", help="up | down | status"),
    arg("--nodes", type=int, metavar="N", help=f"up: how many nodes (default {DEFAULT_NODES})"),
    arg("--networks", type=int, metavar="1|2", help=f"up: how many networks (default {DEFAULT_NETWORKS})"),
    arg("--bare", action="store_const", const=True, help="up: the LAN alone, no state directories, no hakeeperd"),
    arg("--dir", metavar="DIR", help="up: the nodes' state directories and the logs (a new or empty directory)"),
    arg("--run-dir", metavar="DIR", help="where the lab's record is (default /run)"),
    stateless=True,
    epilog=EPILOG,
)  # fmt: skip
def _lab(ctx: Context, args: argparse.Namespace) -> int:
    action: str = args.action
    for dest, flag in SHOWN.items():
        if getattr(args, dest) is not None and dest not in ACTION_OPTIONS[action]:
            raise UsageError(f"{flag} does not go with 'lab {action}' (see: hakeeper lab --help)")
    from hakeeper.lab import keeper

    if action == "up":
        plan = keeper.Plan(
            nodes=args.nodes if args.nodes is not None else DEFAULT_NODES,
            networks=args.networks if args.networks is not None else DEFAULT_NETWORKS,
            cluster=not args.bare,
            directory=keeper.check_directory(args.dir) if args.dir is not None else "",
            record=str(keeper.record_path(args.run_dir)),
        )
        keeper.up(plan, say=ctx.print)
        lines, _ = keeper.status(args.run_dir)
        ctx.out.write("".join(line + "\n" for line in lines))
        return 0
    if action == "down":
        if not keeper.down(args.run_dir, say=ctx.print):
            ctx.print("no lab is up")
        return 0
    lines, problems = keeper.status(args.run_dir)
    ctx.out.write("".join(line + "\n" for line in lines))
    if problems:
        raise LabError(f"the lab is not whole: {'; '.join(problems)} (remove what is left: hakeeper lab down)")
    return 0


@command(
    "demo",
    "a tour of hakeeper on this machine: a configuration, a live node, a live cluster that fails over",
    arg("--part", type=int, choices=(1, 2, 3), metavar="N",
        help="only part N: 1 a configuration, 2 a live node, 3 a live three-node cluster (default: all three)"),
    stateless=True,
    epilog="Part 3 runs on a LAN of network namespaces as root (see: hakeeper lab), on loopback otherwise.\n"
    "From a terminal it waits for keys (1-3 fail or bring back a node, s status, q quit); with\n"
    "its input not a terminal (hakeeper demo < /dev/null) it runs one scripted failover and ends.",
)  # fmt: skip
def _demo(ctx: Context, args: argparse.Namespace) -> int:
    from hakeeper import demo

    return demo.main(demo.PARTS if args.part is None else (args.part,))
