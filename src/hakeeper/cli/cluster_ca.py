"""``hakeeper cluster ca|renew|revoke``: the care of the cluster CA, apart from admitting nodes.

- ``ca export FILE`` copies the CA key to a new file (0600), to move it to another
  member (``ca import FILE`` there) or to keep it offline; ``ca remove`` forgets it
  here. A key that is not this cluster's CA's is refused and nothing changes.
- ``renew [MEMBER]`` asks a member that holds the CA key, over the message channel
  (mutual TLS with this node's current certificate), for a new certificate;
  ``node.crt`` (and ``node.key`` with ``--new-key``) is replaced atomically, and
  this node's hakeeperd, if it runs, shows the new certificate from its next
  connection on. Connections made keep the one they started with.
- ``revoke NODE`` adds NODE to the revocation list (:mod:`hakeeper.comm.revocation`);
  this node's hakeeperd, if it runs, tells every other member at once.

Part of the ``cluster`` command (:mod:`hakeeper.cli.cluster`); runs here, not in hakeeperd.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from hakeeper.cli.base import Context
from hakeeper.control import forward_to_daemon
from hakeeper.errors import CommunicationFailed, IllegalArgument, NotFound, OutOfRange, UsageError, error_for
from hakeeper.layout import ensure_state_dir

CA_ACTIONS = ("export", "import", "remove")
RENEW_TIMEOUT = 30.0
MAX_TIMEOUT = 86400.0


def ca(ctx: Context, args: argparse.Namespace) -> int:
    from hakeeper.comm.identity import export_ca_key, import_ca_key, load_identity, remove_ca_key

    what, *rest = args.operands
    if what not in CA_ACTIONS:
        raise UsageError(f"cluster ca {what}: expected {' | '.join(CA_ACTIONS)} (see: hakeeper cluster --help)")
    if (what == "remove") != (not rest):
        usage = "cluster ca remove" if what == "remove" else f"cluster ca {what} FILE"
        raise UsageError(f"the usage is '{usage}' (see: hakeeper cluster --help)")
    root = ensure_state_dir(ctx.root)
    if what == "export":
        target = export_ca_key(root, Path(rest[0]))
        ctx.print(f"the cluster CA key is in {target} (mode 0600); this node keeps its copy")
        ctx.print("keep the file offline, or 'hakeeper cluster ca import FILE' on another member")
    elif what == "import":
        identity = load_identity(root)
        if import_ca_key(root, Path(rest[0])):
            ctx.print(f"{identity.node} now holds the CA key of cluster {identity.cluster}: it makes tokens, "
                      "admits and renews")  # fmt: skip
        else:
            ctx.print(f"{identity.node} holds this CA key already; nothing was changed")
    else:
        remove_ca_key(root)
        ctx.print("the CA key is gone from this node: it no longer makes tokens, admits nodes or renews certificates")
        ctx.warn("cluster: keep a copy (another member, or offline): without it no node can join or renew")
    return 0


def renew(ctx: Context, args: argparse.Namespace) -> int:
    from hakeeper.cluster.credentials import request_renewal
    from hakeeper.comm.identity import load_identity, load_node_key, replace_certificate
    from hakeeper.comm.pki import new_key
    from hakeeper.comm.revocation import load_revocations

    timeout = args.timeout if args.timeout is not None else RENEW_TIMEOUT
    if not 0 < timeout <= MAX_TIMEOUT:
        raise OutOfRange(f"--timeout {timeout:g} must be within 0..{MAX_TIMEOUT:g} seconds")
    root = ensure_state_dir(ctx.root)
    identity = load_identity(root)
    lcd = ctx.lcd
    known = {n.name for n in lcd.nodes()} - {identity.node}
    if args.operands:
        member = args.operands[0]
        if member == identity.node:
            raise IllegalArgument(f"{member} is this node: name a member that holds the CA key, or none")
        if member not in known:
            raise NotFound(f"no node named {member!r} (see: sys_list)")
        members = {member: lcd.paths(member)}
    else:
        members = {node: lcd.paths(node) for node in sorted(known) if lcd.paths(node)}
    key = new_key() if args.new_key else load_node_key(identity)
    port = int(lcd.settings()["comm_port"])
    revoked = load_revocations(identity.directory).refusal
    cert, signer = asyncio.run(request_renewal(identity, members, port, key, timeout=timeout, revoked=revoked))
    replace_certificate(identity, cert, key if args.new_key else None)
    what = "a new key and certificate" if args.new_key else "a new certificate"
    ctx.print(f"{identity.node} has {what} from {signer}: serial {cert.serial_number:x}, "
              f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")  # fmt: skip
    _tell_daemon(ctx, root, "_renewed", "hakeeperd is not running here: it shows the new certificate when it starts")
    return 0


def revoke(ctx: Context, args: argparse.Namespace) -> int:
    from hakeeper.comm.identity import load_identity
    from hakeeper.comm.revocation import Revocations, merge_revocations
    from hakeeper.db.model import check_name

    node = check_name(args.operands[0], "node name")
    root = ensure_state_dir(ctx.root)
    identity = load_identity(root)
    if node == identity.node:
        raise IllegalArgument(f"{node} is this node: revoke it from another member")
    listed, _changed = merge_revocations(identity.directory, Revocations().revoke(node, time.time(), identity.node))
    ctx.print(f"{listed.entries[node].sentence()}: its certificates issued until now are refused")
    lcd = ctx.lcd
    if node in {n.name for n in lcd.nodes()}:
        ctx.warn(f"cluster: {node} is still a node of this LCD; to remove it: net_remove its paths, then sys_remove")
    _tell_daemon(ctx, root, "_revoked", "hakeeperd is not running here: the other members learn it when it starts")
    return 0


def _tell_daemon(ctx: Context, root: Path, command: str, absent: str) -> None:
    """Tell this node's hakeeperd what changed in the identity files (it answers what it did)."""
    try:
        answer = forward_to_daemon(root, command, [])
    except CommunicationFailed as exc:
        ctx.warn(f"cluster: {exc}; {absent.split(': ', 1)[1]}")
        return
    if answer is None:
        ctx.print(absent)
    elif answer.code == 0:
        ctx.print(answer.out.rstrip("\n"))
    else:
        raise error_for(answer.code, answer.err.strip() or f"hakeeperd answered {command} with exit {answer.code}")
