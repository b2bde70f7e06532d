"""Mutual TLS between the nodes of a cluster.

Connections between nodes are TLS 1.3 and nothing older, with a certificate
required on both sides and the cluster CA as the only trust anchor (no system
CAs; the certificates: :mod:`hakeeper.comm.pki`, this node's:
:mod:`hakeeper.comm.identity`). A node name is not a host name (a node is
reached by address), so OpenSSL's hostname check is off; instead the name is
read from the verified certificate: a server learns who called (:class:`Peer`),
a client checks that it reached the node it meant (:func:`open_connection`). A
handshake that fails — a certificate from another CA, no certificate, the wrong
node — gives the peer nothing, and is logged as one WARNING line with the
peer's address and the reason. So is a peer whose certificate was revoked
(:mod:`hakeeper.comm.revocation`), when the caller passes the revocation list
(``revoked``): servers check it after the handshake, clients after theirs, and
the RPC server again before each request on a kept connection.

Servers take plain TCP connections and start TLS themselves (:func:`accept_tls`),
because asyncio's ``start_server(ssl=...)`` drops a failed handshake silently,
with no chance to log who was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from hakeeper.comm.addresses import format_address
from hakeeper.comm.identity import Identity
from hakeeper.comm.pki import PeerRefused, cert_pem, node_of
from hakeeper.errors import CommunicationFailed, SystemCallFailed

logger = logging.getLogger(__name__)

#: Why a peer's certificate is refused although the CA signed it (revoked), or None: RevocationWatch.refusal.
Refusal = Callable[[x509.Certificate], str | None]

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


def tls13_context(protocol: int) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its certificate
    return context


def load_own_certificate(context: ssl.SSLContext, identity: Identity) -> ssl.SSLContext:
    """Make ``context`` show this node's certificate (and prove it holds the key)."""
    try:
        context.load_cert_chain(identity.cert_path, identity.key_path)
    except (OSError, ssl.SSLError) as exc:
        raise SystemCallFailed(
            f"cannot load this node's key and certificate from {identity.directory}: {exc}"
        ) from None
    return context


def _mutual(context: ssl.SSLContext, identity: Identity) -> ssl.SSLContext:
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=cert_pem(identity.ca).decode())  # the one trust anchor
    return load_own_certificate(context, identity)


def server_context(identity: Identity) -> ssl.SSLContext:
    """What a node accepts: TLS 1.3, a client certificate signed by the cluster CA required."""
    return _mutual(tls13_context(ssl.PROTOCOL_TLS_SERVER), identity)


def client_context(identity: Identity) -> ssl.SSLContext:
    """What a node connects with: TLS 1.3, its own certificate, the server's checked against the cluster CA.

    Hostname checking is off because nodes are reached by address; the node name
    is checked from the certificate (:func:`open_connection`, :func:`peer_node`).
    """
    context = tls13_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    return _mutual(context, identity)


def peer_node_name(ssl_object: Any, revoked: Refusal | None = None) -> str | None:
    """:func:`peer_node`, or None when the peer's certificate names no node (or was revoked)."""
    try:
        return peer_node(ssl_object, revoked)
    except PeerRefused:
        return None


def peer_certificate(ssl_object: Any) -> x509.Certificate:
    """The certificate a TLS peer showed (``writer.get_extra_info("ssl_object")``)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerRefused("the peer showed no certificate")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise PeerRefused("the peer's certificate cannot be read") from None


def check_peer(cert: x509.Certificate, revoked: Refusal | None = None) -> str:
    """The node ``cert`` names; :class:`PeerRefused` when it names none or ``revoked`` refuses it."""
    node = node_of(cert)
    why = revoked(cert) if revoked is not None else None
    if why is not None:
        raise PeerRefused(why)
    return node


def peer_node(ssl_object: Any, revoked: Refusal | None = None) -> str:
    """The node name of a verified TLS peer (``writer.get_extra_info("ssl_object")``), checked against ``revoked``."""
    return check_peer(peer_certificate(ssl_object), revoked)


def reason(exc: BaseException) -> str:
    """A short, one-line reason for a failed handshake or connection."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionError) and not exc.strerror:
        return "the peer hung up during the handshake (it may have refused this node's certificate)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_address(str(peer[0]), int(peer[1]))
    return str(peer)


async def close_writer(writer: asyncio.StreamWriter, *, wait: bool = True) -> None:
    """Close a connection; wait (a bounded time) for it to be gone unless ``wait`` is false."""
    writer.close()
    if wait:
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await writer.wait_closed()


async def start_tls(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, *, timeout: float = HANDSHAKE_TIMEOUT
) -> bool:
    """Server side of a TLS handshake on an accepted connection; False (logged, closed) when it fails."""
    address = peer_address(writer)
    try:
        await writer.start_tls(context, ssl_handshake_timeout=timeout)
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        logger.warning("refused TLS connection from %s: %s", address, reason(exc))
        await close_writer(writer, wait=False)  # the stream never saw the connection made: nothing to wait for
        return False
    except BaseException:  # cancelled (a server shutting down): leave no socket open
        writer.close()
        raise
    return True


@dataclass(frozen=True)
class Peer:
    """An authenticated peer: the node its certificate names, and where it connected from."""

    node: str
    address: str
    certificate: x509.Certificate | None = field(default=None, compare=False, repr=False)


PeerHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]
ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Acceptor:
    """A callback for :func:`asyncio.start_server`: mutual TLS, then ``handler(reader, writer, peer)``.

    A peer that fails the handshake, or whose certificate ``revoked`` refuses,
    never reaches ``handler``; the refusal is logged. The connection is closed
    when ``handler`` returns.
    """

    def __init__(
        self,
        identity: Identity,
        handler: PeerHandler,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        revoked: Refusal | None = None,
    ) -> None:
        self.identity = identity
        self.handler = handler
        self.handshake_timeout = handshake_timeout
        self.revoked = revoked
        self.context = server_context(identity)

    def reload(self) -> None:
        """Show the certificate now on disk (renewed) from the next handshake on; connections made keep theirs."""
        load_own_certificate(self.context, self.identity)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = peer_address(writer)
        if not await start_tls(writer, self.context, timeout=self.handshake_timeout):
            return
        try:
            cert = peer_certificate(writer.get_extra_info("ssl_object"))
            node = check_peer(cert, self.revoked)
        except PeerRefused as exc:
            logger.warning("refused TLS connection from %s: %s", address, exc)
            await close_writer(writer)
            return
        try:
            await self.handler(reader, writer, Peer(node, address, cert))
        except Exception:  # a loop boundary: one bad connection never takes the server down
            logger.exception("connection of node %s from %s failed", node, address)
        finally:
            await close_writer(writer)


def accept_tls(
    identity: Identity,
    handler: PeerHandler,
    *,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    revoked: Refusal | None = None,
) -> Acceptor:
    """An :class:`Acceptor`: the callback for :func:`asyncio.start_server` of a server of cluster nodes."""
    return Acceptor(identity, handler, handshake_timeout=handshake_timeout, revoked=revoked)


async def start_server(
    identity: Identity, handler: PeerHandler, host: str, port: int, *, revoked: Refusal | None = None
) -> asyncio.Server:
    """Listen on ``host:port`` for mutually authenticated connections of cluster nodes."""
    return await asyncio.start_server(accept_tls(identity, handler, revoked=revoked), host, port)


async def open_connection(
    identity: Identity,
    node: str,
    host: str,
    port: int,
    *,
    timeout: float = CONNECT_TIMEOUT,
    context: ssl.SSLContext | None = None,
    revoked: Refusal | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to cluster node ``node`` at ``host:port`` with mutual TLS; refuse any other peer.

    Raises :class:`PeerRefused` (logged) when the server's certificate is not
    the cluster CA's, names another node or was revoked, :class:`CommunicationFailed`
    when it cannot be reached.
    """
    address = format_address(host, port)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context or client_context(identity), ssl_handshake_timeout=timeout
            )
    except ssl.SSLError as exc:
        logger.warning("refused TLS connection to %s (node %s): %s", address, node, reason(exc))
        raise PeerRefused(f"node {node!r} at {address} refused: {reason(exc)}") from None
    except (OSError, TimeoutError) as exc:
        raise CommunicationFailed(f"cannot reach node {node!r} at {address}: {reason(exc)}") from None
    try:
        found = peer_node(writer.get_extra_info("ssl_object"), revoked)
        if found != node:
            raise PeerRefused(f"{address} is node {found!r}, not {node!r}")
    except PeerRefused as exc:
        logger.warning("refused TLS connection to %s (node %s): %s", address, node, exc)
        await close_writer(writer)
        raise
    return reader, writer
