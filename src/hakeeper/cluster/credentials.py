"""hakeeperd's care of the cluster identity: the revocation list, certificate renewal, expiry warnings.

- **Revocations** (:mod:`hakeeper.comm.revocation`): hakeeperd keeps the list in
  memory (:class:`RevocationWatch`) and checks it in every TLS handshake, both
  ways, and before each request on a kept connection. Members exchange their
  lists (RPC ``revocations``: each side merges the other's and answers its own)
  at start, whenever a peer's paths come back, and when ``hakeeper cluster
  revoke`` ran here (pushed to every peer; those not reached are tried again
  every few seconds). Lists only grow, so they converge in any order.
- **Renewal** (RPC ``renew``): a member that holds the CA key signs a new
  certificate for the node that asks, in its own name only. The node is
  authenticated by its current certificate in the mutual TLS handshake of the
  message channel (so an expired or revoked one gets nothing); a node whose
  certificate expired joins again with a token.
- **Expiry**: hakeeperd logs a warning at start and once a day while this
  node's certificate expires within :data:`~hakeeper.comm.pki.RENEW_WARNING_DAYS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from hakeeper.comm.identity import Identity, load_authority, load_identity
from hakeeper.comm.pki import (
    RENEW_WARNING_DAYS,
    PeerRefused,
    cert_pem,
    check_issued_by,
    csr_pem,
    expiry_warning,
    make_csr,
    node_of,
    parse_csr,
)
from hakeeper.comm.revocation import Revocations, RevocationWatch
from hakeeper.comm.rpc import RemoteError, call
from hakeeper.comm.tls import Peer, Refusal
from hakeeper.db.model import CommPath
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, NotFound

logger = logging.getLogger(__name__)

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]

EXCHANGE_TIMEOUT = 5.0
EXPIRY_CHECK_EVERY = 86400.0  # seconds: a daily warning


class Credentials:
    """The revocation list, renewals and expiry warnings of one hakeeperd."""

    def __init__(self, root: Path, identity: Identity, send: Send, peers: Callable[[], list[str]]) -> None:
        self.root = root
        self.identity = identity
        self.watch = RevocationWatch(identity.directory)
        self.send = send
        self.peers = peers  # the other nodes of the LCD
        #: Peers that have not heard this node's latest list: told again by :meth:`retry`.
        self.owed: set[str] = set()
        self.changed: Callable[[], None] = lambda: None  # the daemon drops connections kept to revoked nodes

    def refusal(self, cert: x509.Certificate) -> str | None:
        return self.watch.refusal(cert)

    def handlers(self) -> dict[str, Callable[[Peer, dict[str, Any]], Awaitable[dict[str, Any]]]]:
        return {"revocations": self.on_revocations, "renew": self.on_renew}

    # ------------------------------------------------------------------ revocations

    async def _merge(self, other: Revocations, source: str) -> None:
        before = self.watch.current
        if not await asyncio.to_thread(self.watch.merge, other):
            return
        for node, entry in sorted(self.watch.current.entries.items()):
            if before.entries.get(node) != entry:
                logger.warning("from %s: %s; its connections are refused from now on", source, entry.sentence())
        self.changed()

    async def on_revocations(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """A peer's list: merged here; the answer is this node's list, which the peer merges in turn."""
        try:
            theirs = Revocations.from_json(args.get("list"))
        except ValueError as exc:
            raise IllegalArgument(f"malformed revocation list: {exc}") from None
        await self._merge(theirs, peer.node)
        return {"list": self.watch.current.as_json()}

    async def exchange(self, node: str, *, quiet: bool = False) -> bool:
        """Exchange lists with ``node``; False (and owed to it) when it could not be reached."""
        try:
            answer = await self.send(node, "revocations", {"list": self.watch.current.as_json()}, EXCHANGE_TIMEOUT)
            theirs = Revocations.from_json(answer.get("list") if isinstance(answer, dict) else None)
        except (HakeeperError, TimeoutError, ValueError) as exc:
            (logger.debug if quiet else logger.info)("revocation list not exchanged with %s: %s", node, exc)
            if self.watch.current:
                self.owed.add(node)
            return False
        self.owed.discard(node)
        await self._merge(theirs, node)
        return True

    async def exchange_all(self, *, quiet: bool = True) -> tuple[list[str], list[str]]:
        """Exchange lists with every peer at once: (those reached, those not)."""
        peers = self.peers()
        results = await asyncio.gather(*(self.exchange(p, quiet=quiet) for p in peers))
        reached = [p for p, ok in zip(peers, results, strict=True) if ok]
        return reached, [p for p in peers if p not in reached]

    async def revoked_here(self) -> str:
        """``hakeeper cluster revoke`` changed the file: read it, tell every peer; what to print."""
        await asyncio.to_thread(self.watch.reload)
        self.changed()
        reached, missed = await self.exchange_all(quiet=False)
        told = f"told {', '.join(reached)}" if reached else "no other member reached"
        later = f"; not reached: {', '.join(missed)} (told when they are back)" if missed else ""
        return told + later

    async def retry(self) -> None:
        """Tell the peers that missed this node's list (called every few seconds)."""
        for node in sorted(self.owed & set(self.peers())):
            await self.exchange(node, quiet=True)

    # ------------------------------------------------------------------ renewal

    async def on_renew(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Sign a new certificate for ``peer``, in its own name, if this node holds the CA key."""
        try:
            _csr, node, key = parse_csr(args.get("csr"))
        except ValueError as exc:
            raise IllegalArgument(f"renewal refused: {exc}") from None
        if node != peer.node:
            logger.warning("renewal refused: node %s at %s asked for a certificate naming %s", peer.node,
                           peer.address, node)  # fmt: skip
            raise IllegalArgument(f"renewal refused: node {peer.node} may renew only its own certificate, not {node}'s")
        authority = await asyncio.to_thread(load_authority, self.root)  # NotFound (exit 7) without the CA key
        cert = authority.issue(node, key)
        logger.info("renewed node %s's certificate (serial %x, valid until %s)", node, cert.serial_number,
                    f"{cert.not_valid_after_utc:%Y-%m-%d}")  # fmt: skip
        return {"certificate": cert_pem(cert).decode()}

    # ------------------------------------------------------------------ expiry

    def expiry(self, now: dt.datetime | None = None) -> str | None:
        return expiry_warning(self.identity.certificate, now or dt.datetime.now(dt.UTC), RENEW_WARNING_DAYS)

    async def reload_identity(self) -> Identity:
        """This node's certificate was renewed: read it again (the caller reloads its TLS contexts)."""
        self.identity = await asyncio.to_thread(load_identity, self.root)
        return self.identity

    async def watch_expiry(self) -> None:
        """Warn at start and once a day while this node's certificate expires soon."""
        while True:
            try:
                self.identity = await asyncio.to_thread(load_identity, self.root)
            except HakeeperError as exc:
                logger.error("cannot read this node's certificate: %s", exc)
            else:
                warning = self.expiry()
                if warning is not None:
                    logger.warning("%s", warning)
            await asyncio.sleep(EXPIRY_CHECK_EVERY)


# ---------------------------------------------------------------------- the renewing node's side


async def request_renewal(
    identity: Identity,
    members: dict[str, list[CommPath]],
    port: int,
    key: ec.EllipticCurvePrivateKey,
    *,
    timeout: float,
    revoked: Refusal | None = None,
) -> tuple[x509.Certificate, str]:
    """Ask ``members`` (node -> its paths), in order, for a new certificate for ``key``: (certificate, who signed).

    A member without the CA key says so (exit 7) and the next is asked. Raises
    :class:`NotFound` when every member reached lacks the CA key,
    :class:`CommunicationFailed` when none could be reached.
    """
    request = {"csr": csr_pem(make_csr(identity.node, key))}
    lacking, unreachable = [], []
    for member, paths in members.items():
        try:
            answer = await call(identity, paths, port, "renew", request, timeout=timeout, revoked=revoked)
        except RemoteError as exc:
            if exc.code == NotFound.exit_code:
                lacking.append(member)
                continue
            raise
        except CommunicationFailed as exc:
            unreachable.append(f"{member}: {exc}")
            continue
        try:
            cert = x509.load_pem_x509_certificate(str(answer.get("certificate", "")).encode())
            check_issued_by(cert, identity.ca)
        except (AttributeError, ValueError, PeerRefused) as exc:
            raise CommunicationFailed(f"{member} sent an unusable certificate ({exc}); nothing was changed") from None
        if cert.public_key() != key.public_key() or node_of(cert) != identity.node:
            raise CommunicationFailed(f"{member} sent a certificate for another key or node; nothing was changed")
        return cert, member
    if lacking:
        missed = f"; not reached: {'; '.join(unreachable)}" if unreachable else ""
        raise NotFound(
            f"no member reached holds the cluster CA key (asked {', '.join(lacking)}{missed}); "
            "run 'hakeeper cluster ca import' on one of them, or renew when the one that holds it is back"
        )
    if not members:
        raise CommunicationFailed("no other member to ask: no node with communication paths (see: net_list)")
    raise CommunicationFailed(f"no member could be reached ({'; '.join(unreachable)}); nothing was changed")
