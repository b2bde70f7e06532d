"""``hakeeper cluster ACTION``: the cluster's identity (its CA, node certificates, join tokens).

One command with an action, because ``hakeeper`` runs commands by one name:
``init``, ``token``, ``join``, ``serve-join``, ``show``, and the CA's care:
``ca``, ``renew``, ``revoke`` (:mod:`hakeeper.cli.cluster_ca`). Options belong to
one action each, and an option given to another action is a usage error. The
command always runs here, never through hakeeperd: ``serve-join`` runs in the
foreground, and the files it touches are this node's own, not the LCD's
(``renew`` and ``revoke`` then tell this node's hakeeperd, if it runs).
No private key and no token secret is ever logged; ``token`` prints its token
once, on stdout, and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sys
import time

from hakeeper.cli.base import Context, arg, command
from hakeeper.cli.cluster_ca import CA_ACTIONS, ca, renew, revoke
from hakeeper.cli.members import registrar, write_members
from hakeeper.comm.addresses import format_address, parse_address
from hakeeper.comm.announce import announced
from hakeeper.comm.identity import cluster_dir, init_cluster, load_authority, load_identity
from hakeeper.comm.join import (
    DEFAULT_TTL,
    JOIN_PORT,
    MAX_TTL,
    MIN_TTL,
    Admission,
    JoinService,
    TokenStore,
    join,
    parse_token,
)
from hakeeper.comm.pki import DEFAULT_CLUSTER_NAME, RENEW_WARNING_DAYS, expiry_warning
from hakeeper.comm.revocation import load_revocations
from hakeeper.db.model import check_name
from hakeeper.errors import IllegalArgument, OutOfRange, SystemCallFailed, UsageError
from hakeeper.layout import PID_NAME, ensure_state_dir

ACTIONS = ("init", "token", "join", "serve-join", "show", "ca", "renew", "revoke")

#: Which options each action takes (argparse dest names); the others must stay unset.
ACTION_OPTIONS: dict[str, frozenset[str]] = {
    "init": frozenset({"name"}),
    "token": frozenset({"ttl", "node"}),
    "join": frozenset({"token", "timeout", "witness", "address"}),
    "serve-join": frozenset({"listen", "timeout", "address"}),
    "show": frozenset(),
    "ca": frozenset(),
    "renew": frozenset({"timeout", "new_key"}),
    "revoke": frozenset(),
}
#: What follows the action: (fewest, most) operands, and how they are written.
OPERANDS: dict[str, tuple[int, int, str]] = {
    "join": (1, 1, "ADDRESS[:PORT]"),
    "ca": (1, 2, f"{'|'.join(CA_ACTIONS)} [FILE]"),
    "renew": (0, 1, "[MEMBER]"),
    "revoke": (1, 1, "NODE"),
}
SHOWN = {"name": "--name", "ttl": "--ttl", "token": "--token", "listen": "--listen", "witness": "--witness",
         "timeout": "--timeout", "node": "--node", "new_key": "--new-key", "address": "--address"}  # fmt: skip

JOIN_TIMEOUT = 30.0
SERVE_TIMEOUT = 600.0
MAX_TIMEOUT = 86400.0

EPILOG = f"""actions:
  init [--name CLUSTER]         create the cluster CA and this node's certificate (first node only)
  token [--ttl SECONDS] [--node NAME]
                                on a node that holds the CA key: print a one-time join token
                                (default {DEFAULT_TTL} s, {MIN_TTL}..{MAX_TTL});
                                --node: it admits only a node of that name
  serve-join [--listen ADDRESS[:PORT]] [--address ADDRESS/PREFIX ...] [--timeout SECONDS]
                                on a node that holds the CA key: admit nodes that bring a token, in the foreground
                                (default 0.0.0.0:{JOIN_PORT}, for {SERVE_TIMEOUT:g} s), and register each
                                on every member (sys_create -a): the node, and paths on every network;
                                --address: this node's own, when it has no path yet (default: its
                                interfaces' global addresses)
  join --token TOKEN ADDRESS[:PORT] [--address ADDRESS/PREFIX ...] [--witness] [--timeout SECONDS]
                                on a new node: get a certificate from the member at ADDRESS
                                (default port {JOIN_PORT}); --token - reads the token from stdin;
                                announces --address (one per network, in priority order; default:
                                this host's global addresses) and writes every member, with a path
                                to it on each network, into this node's LCD
  show                          this node's cluster, CA fingerprint, certificate, nodes and tokens
                                (warns when the certificate expires within {RENEW_WARNING_DAYS} days)
  ca export FILE                copy the CA key to FILE (new, mode 0600): to move it or keep it offline
  ca import FILE                on another member: hold the CA key from FILE (checked: this cluster's)
  ca remove                     forget the CA key here: no tokens, joins or renewals here any more
  renew [MEMBER] [--new-key] [--timeout SECONDS]
                                a new certificate for this node from a member that holds the CA key
                                (MEMBER, else each node with paths in turn), over the message channel
  revoke NODE                   refuse NODE's certificates from now on, on every member (a node
                                removed from the cluster); hakeeperd tells the other members

A cluster of node1, node2 and node3 (the whole set-up: no sys_create or net_create):
  node1$ hakeeper cluster init --name prod
  node1$ hakeeper cluster serve-join --listen 198.18.0.11 &
  node1$ hakeeper cluster token                 # prints hk1.<id>.<secret>.<CA sha256>
  node2$ hakeeper cluster join --token hk1.... 198.18.0.11
  node1$ hakeeper cluster token
  node3$ hakeeper cluster join --token hk1.... --witness 198.18.0.11
('cluster token --node node2 --node node3' prints one token per node, each
good only for the node it names: 'node2 hk1....' lines.)
  node1$ lkstart; node2$ lkstart; node3$ lkstart

The token carries the SHA-256 of the cluster CA: the new node talks only to a
member of that cluster, and sends the secret only to it. Only a node that holds
the CA key ('init' ran there, or 'ca import') makes tokens, admits and renews:
'token' and 'serve-join' run there, 'join' on the new node."""


@command(
    "cluster",
    "cluster identity and membership: init, token, join, serve-join, show, ca, renew, revoke",
    arg("action", choices=ACTIONS, metavar="ACTION", help=" | ".join(ACTIONS)),
    arg("operands", nargs="*", metavar="ARG",
        help="join: ADDRESS[:PORT]; ca: export FILE | import FILE | remove; renew: [MEMBER]; revoke: NODE"),
    arg("--name", metavar="CLUSTER", help=f"init: the cluster's name (default {DEFAULT_CLUSTER_NAME})"),
    arg("--ttl", type=int, metavar="SECONDS", help=f"token: lifetime (default {DEFAULT_TTL})"),
    arg("--node", action="append", metavar="NAME",
        help="token: admit only a node of this name (repeat it: one token per node, printed as 'NAME TOKEN')"),
    arg("--new-key", dest="new_key", action="store_const", const=True,
        help="renew: make a new key too (default: keep this node's key)"),
    arg("--token", metavar="TOKEN", help="join: the token from 'hakeeper cluster token' ('-': read from stdin)"),
    arg("--witness", action="store_const", const=True,
        help="join: as a witness, a node that counts for quorum and holds no resources"),
    arg("--address", action="append", metavar="ADDRESS/PREFIX",
        help="join: an address this node announces, one per network, in priority order (repeat it; default: "
             "its global addresses); serve-join: this node's own, when it has no path yet"),
    arg("--listen", metavar="ADDRESS[:PORT]", help=f"serve-join: where to listen (default 0.0.0.0:{JOIN_PORT})"),
    arg("--timeout", type=float, metavar="SECONDS",
        help=f"join, renew: wait for the member (default {JOIN_TIMEOUT:g}); serve-join: serve (default "
             f"{SERVE_TIMEOUT:g})"),
    local=True,
    intermixed=True,
    epilog=EPILOG,
)  # fmt: skip
def _cluster(ctx: Context, args: argparse.Namespace) -> int:
    action: str = args.action
    for dest, flag in SHOWN.items():
        if getattr(args, dest) is not None and dest not in ACTION_OPTIONS[action]:
            raise UsageError(f"{flag} does not go with 'cluster {action}' (see: hakeeper cluster --help)")
    fewest, most, shown = OPERANDS.get(action, (0, 0, ""))
    if len(args.operands) < fewest:
        raise UsageError(f"cluster {action} needs {shown} (see: hakeeper cluster --help)")
    if len(args.operands) > most:
        extra = " ".join(args.operands[most:])
        usage = f"cluster {action} {shown}".rstrip()
        raise UsageError(f"unexpected {extra!r}: the usage is '{usage}' (see: hakeeper cluster --help)")
    return RUNNERS[action](ctx, args)


def _init(ctx: Context, args: argparse.Namespace) -> int:
    name = check_name(args.name if args.name is not None else DEFAULT_CLUSTER_NAME, "cluster name")
    root = ensure_state_dir(ctx.root)
    identity = init_cluster(root, ctx.lcd.local_node, name)
    ctx.print(f"cluster {identity.cluster} created; CA sha256:{identity.fingerprint}")
    ctx.print(f"{identity.node}'s key and certificate are in {identity.directory}")
    ctx.print("to add a node: 'hakeeper cluster serve-join' and 'hakeeper cluster token' here, then")
    ctx.print("'hakeeper cluster join --token TOKEN ADDRESS' there, then lkstart on each node")
    return 0


def _token(ctx: Context, args: argparse.Namespace) -> int:
    ttl = args.ttl if args.ttl is not None else DEFAULT_TTL
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise OutOfRange(f"--ttl {ttl} must be within {MIN_TTL}..{MAX_TTL} seconds")
    root = ensure_state_dir(ctx.root)
    identity = load_identity(root)
    load_authority(root)  # a token is good only where the CA key is
    names: list[str] = []
    for name in args.node or []:
        if check_name(name, "node name") == identity.node:
            raise IllegalArgument(f"--node {name} is this member's own name; a joining node needs one of its own")
        if name in names:
            raise IllegalArgument(f"--node {name} is given twice")
        names.append(name)
    store = TokenStore(identity.directory)
    if len(names) <= 1:
        ctx.print(store.create(identity.fingerprint, ttl, node=names[0] if names else None).text())
        return 0
    for name in names:  # one per node, each bound to its name
        ctx.print(f"{name} {store.create(identity.fingerprint, ttl, node=name).text()}")
    return 0


def _timeout(value: float | None, default: float) -> float:
    chosen = value if value is not None else default
    if not 0 < chosen <= MAX_TIMEOUT:
        raise OutOfRange(f"--timeout {chosen:g} must be within 0..{MAX_TIMEOUT:g} seconds")
    return chosen


def _read_token(text: str | None) -> str:
    if text is None:
        raise UsageError("join needs --token TOKEN (see: hakeeper cluster --help)")
    if text != "-":
        return text
    try:
        return sys.stdin.readline()
    except (OSError, ValueError, UnicodeDecodeError):
        raise IllegalArgument("--token -: cannot read the token from stdin") from None


def _join(ctx: Context, args: argparse.Namespace) -> int:
    token = parse_token(_read_token(args.token))
    host, port = parse_address(args.operands[0], JOIN_PORT, what="member address")
    timeout = _timeout(args.timeout, JOIN_TIMEOUT)
    root = ensure_state_dir(ctx.root)
    from hakeeper.config import load

    addresses = announced(args.address, load().listen)
    witness = bool(args.witness)
    said: list[str] = []

    def admitted(admission: Admission) -> None:  # before the identity is installed: see join()
        said.extend(write_members(ctx.lcd, admission.members, addresses, witness))

    identity = asyncio.run(
        join(root, ctx.lcd.local_node, token, host, port, addresses=addresses, witness=witness, admitted=admitted,
             timeout=timeout)
    )  # fmt: skip
    role = " as a witness" if args.witness else ""
    ctx.print(f"{identity.node} joined cluster {identity.cluster}{role} (CA sha256:{identity.fingerprint})")
    for line in said:
        ctx.print(line)
    from hakeeper.cli.daemon import holds_lock

    if holds_lock(root / PID_NAME):  # it started without an identity: no heartbeats, no messages
        ctx.print("hakeeperd runs here without the new identity: restart it (lkstop -f; lkstart)")
    return 0


def _serve_join(ctx: Context, args: argparse.Namespace) -> int:
    host, port = parse_address(
        args.listen if args.listen is not None else "0.0.0.0", JOIN_PORT, what="--listen", listen=True
    )
    timeout = _timeout(args.timeout, SERVE_TIMEOUT)
    root = ensure_state_dir(ctx.root)
    identity = load_identity(root)
    authority = load_authority(root)

    def joined(node: str) -> None:
        ctx.print(f"{node} joined")
        ctx.out.flush()

    own = announced(args.address) if args.address is not None else None
    service = JoinService(
        identity, authority, TokenStore(identity.directory), on_join=joined, on_admit=registrar(root, own)
    )

    async def serve() -> None:
        try:
            server = await service.start(host, port)
        except OSError as exc:
            raise SystemCallFailed(f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}") from None
        async with server:
            bound = server.sockets[0].getsockname()
            ctx.print(f"serving joins to cluster {identity.cluster} on {format_address(bound[0], bound[1])} "
                      f"for {timeout:g} s (CA sha256:{identity.fingerprint})")  # fmt: skip
            ctx.out.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.serve_forever(), timeout)

    # A foreground server tells what it refuses and why, as hakeeperd's log would.
    handler = logging.StreamHandler(ctx.err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    comm = logging.getLogger("hakeeper.comm")
    level = comm.level
    comm.addHandler(handler)
    comm.setLevel(logging.INFO)
    try:
        asyncio.run(serve())
    finally:
        comm.removeHandler(handler)
        comm.setLevel(level)
    return 0


def _show(ctx: Context, args: argparse.Namespace) -> int:
    root = ensure_state_dir(ctx.root)
    identity = load_identity(root)
    cert = identity.certificate
    ctx.print(f"cluster      {identity.cluster}")
    ctx.print(f"node         {identity.node}")
    ctx.print(f"CA           sha256:{identity.fingerprint}")
    ctx.print(f"certificate  serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    ctx.print(f"CA key       {'here: this node admits nodes' if identity.has_authority else 'not here'}")
    ctx.print(f"files        {cluster_dir(root)}")
    witnesses = set(ctx.lcd.witnesses())
    for member in ctx.lcd.nodes():
        role = ["witness (counts for quorum, runs no hierarchy)"] if member.name in witnesses else []
        where = ["this node"] if member.local else [f"{len(ctx.lcd.paths(member.name))} path(s)"]
        ctx.print(f"member       {member.name}: {', '.join(where + role)}")
    for node, entry in sorted(load_revocations(identity.directory).entries.items()):
        ctx.print(f"revoked      {node}: {entry.sentence()}")
    warning = expiry_warning(cert, dt.datetime.now(dt.UTC), RENEW_WARNING_DAYS)
    if warning is not None:
        ctx.warn(f"cluster: warning: {warning}")
    if identity.has_authority:
        now = time.time()
        for info in TokenStore(identity.directory).tokens():
            if info.used is not None:
                state = f"used by {info.node} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.used))}"
            elif info.expires <= now:
                state = "expired"
            else:
                state = f"valid until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.expires))}"
            bound = f" (for node {info.bound} only)" if info.bound is not None else ""
            ctx.print(f"token        {info.id} {state}{bound}")
    return 0


RUNNERS = {"init": _init, "token": _token, "join": _join, "serve-join": _serve_join, "show": _show, "ca": ca,
           "renew": renew, "revoke": revoke}  # fmt: skip
