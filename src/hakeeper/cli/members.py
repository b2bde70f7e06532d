"""Both ends of a join's registration (``hakeeper cluster serve-join`` / ``join``): the LCD side.

The member's side (:func:`registrar`) runs ``sys_create -s NODE -a ADDRESS ...`` as
any command: through this node's hakeeperd when it runs (the change then reaches
every member at once, by the two-phase commit of cluster-wide changes; one that is
down gets it when it is back), else on this LCD, kept in its outbox for the other
members until hakeeperd runs here. It answers the nodes this member knows, with
their addresses. The joiner's side (:func:`write_members`) writes those nodes, and a
path to each on every network it shares with them, into its own LCD, before its
identity is installed.

Both are idempotent (:meth:`hakeeper.db.Lcd.register_node`): a node or path that
exists stays; so a join retried after a lost answer, with a new token, registers
nothing twice, and one that failed halfway is completed by the retry.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from hakeeper.comm.join import OnAdmit
from hakeeper.db import Lcd
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument

logger = logging.getLogger(__name__)


def registrar(root: Path, own: list[str] | None) -> OnAdmit:
    """The join service's ``on_admit``: register the node on every member, answer the members."""

    def admit(node: str, addresses: list[str], witness: bool) -> list[dict[str, Any]] | None:
        from hakeeper.cli.base import run

        if not addresses:  # a joiner of an older version announces nothing: it writes its LCD by hand
            logger.warning("%s announced no address: not registered (sys_create and net_create by hand)", node)
            return None
        argv = ["-s", node, *[w for a in addresses for w in ("-a", a)], *[w for a in own or [] for w in ("-l", a)]]
        out, err = io.StringIO(), io.StringIO()
        code = run("sys_create", [*argv, *(["--witness"] if witness else [])], root=str(root), out=out, err=err,
                   actor="cluster-join")  # fmt: skip
        if code != 0:
            raise CommunicationFailed(err.getvalue().strip() or f"sys_create exited {code}")
        for line in out.getvalue().splitlines():
            logger.info("%s: %s", node, line)
        return members(root, node)

    return admit


def members(root: Path, joiner: str) -> list[dict[str, Any]]:
    """Every node this LCD knows but ``joiner``, with the addresses the joiner may pair with: this node's
    local addresses on its paths to the joiner, another node's remote addresses on this node's paths to it."""
    with Lcd.open(root, readonly=True) as lcd:
        witnesses = set(lcd.witnesses())
        me = lcd.local_node
        found = [{"node": me, "addresses": [p.local for p in lcd.paths(joiner)], "witness": me in witnesses}]
        for node in lcd.nodes():
            if node.name not in (me, joiner):
                remote = [p.remote for p in lcd.paths(node.name)]
                found.append({"node": node.name, "addresses": remote, "witness": node.name in witnesses})
        return found


def write_members(lcd: Lcd, found: list[dict[str, Any]] | None, addresses: list[str], witness: bool) -> list[str]:
    """The joiner's side: the members and paths to them into this LCD (and its witness flag); what was done."""
    from hakeeper.db.catalog import WITNESS

    if witness and not lcd.has_flag(WITNESS):
        lcd.create_flag(WITNESS)
    if found is None:
        return ["the member registered nothing (an older hakeeper): sys_create and net_create on each node"]
    lines = []
    me = lcd.local_node
    for entry in found:
        try:
            node, theirs, role = str(entry["node"]), [str(a) for a in entry["addresses"]], bool(entry["witness"])
        except (KeyError, TypeError) as exc:
            raise IllegalArgument(f"the member's list of nodes is malformed ({exc})") from None
        if node == me:
            continue
        try:
            created = lcd.register_node(node, theirs, {me: addresses}, witness=role)
        except HakeeperError as exc:
            raise type(exc)(f"cannot record node {node} here: {exc}") from None
        paths = ", ".join(f"{p.local} -> {p.remote}" for p in lcd.paths(node)) or "none (no shared network)"
        lines.append(f"{node}{' (witness)' if role else ''}: paths {paths}")
        if not created and not lcd.paths(node):
            logger.warning("%s shares no network with this node's addresses %s", node, ", ".join(addresses))
    return lines
