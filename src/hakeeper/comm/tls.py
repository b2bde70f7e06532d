"""Cluster identity and mutual TLS between nodes.

Design
------
A cluster has a certificate authority of its own, made by ``hakeeper cluster init``
on the first node. Every node holds a P-256 ECDSA key and a certificate signed by
that CA whose subject CN, and only SAN DNS name, is the node's name (the LCD's
local node); the CA's subject O is the cluster's name. P-256 ECDSA because every
OpenSSL that Python's :mod:`ssl` links to signs TLS 1.3 handshakes with it, small
and fast, and FIPS builds allow it (Ed25519 works with OpenSSL 3 as well, but not
everywhere).

Files, in ``<root>/cluster/`` (mode 0700; every file 0600, written atomically)::

    ca.crt       the cluster CA certificate (its SHA-256 fingerprint names the cluster)
    ca.key       the CA's private key: only on the node(s) that admit new nodes
    node.crt     this node's certificate
    node.key     this node's private key
    tokens.json  join tokens (see :mod:`hakeeper.comm.join`): hashes only

A new identity is written into a fresh directory beside ``cluster/`` and renamed
into place in one step, so a crash leaves either no identity or a whole one, and
of two ``init`` (or ``join``) racing, exactly one wins.

Connections between nodes are TLS 1.3 and nothing older, with a certificate
required on both sides and the cluster CA as the only trust anchor (no system
CAs). A node name is not a host name (a node is reached by address), so OpenSSL's
hostname check is off; instead the name is read from the verified certificate: a
server learns who called (:class:`Peer`), a client checks that it reached the
node it meant (:func:`open_connection`). A handshake that fails — a certificate
from another CA, no certificate, the wrong node — gives the peer nothing, and is
logged as one WARNING line with the peer's address and the reason.

Servers take plain TCP connections and start TLS themselves (:func:`accept_tls`),
because asyncio's ``start_server(ssl=...)`` drops a failed handshake silently,
with no chance to log who was refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import shutil
import ssl
import stat
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hakeeper.db.model import check_name
from hakeeper.db.store import ensure_state_dir
from hakeeper.errors import AlreadyExists, CommunicationFailed, IllegalArgument, NotFound, SystemCallFailed

logger = logging.getLogger(__name__)

CLUSTER_DIR = "cluster"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"
DEFAULT_CLUSTER_NAME = "hakeeper"

CA_LIFETIME = dt.timedelta(days=20 * 365)
NODE_LIFETIME = dt.timedelta(days=10 * 365)
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates start a little in the past: clocks of nodes differ
HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
CURVE = ec.SECP256R1


class PeerRefused(CommunicationFailed):
    """A TLS peer was refused: no certificate, one from another CA, or not the node expected."""


# ---------------------------------------------------------------------- keys and certificates


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, in lower-case hex (``openssl x509 -fingerprint -sha256``, no colons)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _subject(common_name: str, cluster: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    return values[0].value


def make_ca(cluster: str, key: ec.EllipticCurvePrivateKey, *, now: dt.datetime | None = None) -> x509.Certificate:
    """A self-signed CA certificate for ``cluster`` that may sign node certificates only (path length 0)."""
    start = (now or _now()) - CLOCK_SKEW
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = _subject(f"{cluster} cluster CA", cluster)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_csr(node: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """What a joining node sends: its public key and its name, signed with its key."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Authority:
    """The cluster CA with its private key: what admits a node to the cluster."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cluster(self) -> str:
        return _attribute(self.certificate.subject, NameOID.ORGANIZATION_NAME) or DEFAULT_CLUSTER_NAME

    def issue(
        self, node: str, public_key: ec.EllipticCurvePublicKey, *, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """A certificate for ``node``: CN and the only SAN DNS name are the node name; server and client use."""
        check_name(node, "node name")
        start = (now or _now()) - CLOCK_SKEW
        end = min(start + NODE_LIFETIME, self.certificate.not_valid_after_utc)
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(_subject(node, self.cluster))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(self.key, hashes.SHA256())
        )


def node_of(cert: x509.Certificate) -> str:
    """The node a certificate names: its CN, which must also be its one SAN DNS name."""
    common_name = _attribute(cert.subject, NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if common_name is None or dns != [common_name]:
        raise PeerRefused("the certificate does not name one node (its CN and SAN DNS name differ)")
    try:
        return check_name(common_name, "node name")
    except IllegalArgument:
        raise PeerRefused("the certificate names no valid node") from None


def check_issued_by(cert: x509.Certificate, ca: x509.Certificate, *, now: dt.datetime | None = None) -> None:
    """Raise :class:`PeerRefused` unless ``cert`` is a node certificate signed by ``ca`` and valid now.

    The cluster CA signs node certificates directly (its path length is 0), so
    this is the whole chain.
    """
    moment = now or _now()
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise PeerRefused("the certificate is not signed by the cluster CA") from None
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise PeerRefused(f"the certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} "
                          f"to {cert.not_valid_after_utc:%Y-%m-%d})")  # fmt: skip
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise PeerRefused("the certificate is a CA's, not a node's")
    except x509.ExtensionNotFound:
        raise PeerRefused("the certificate has no basic constraints") from None


# ---------------------------------------------------------------------- files


Root = str | os.PathLike[str]


def cluster_dir(root: Root) -> Path:
    return Path(root) / CLUSTER_DIR


def identity_exists(root: Root) -> bool:
    """Whether ``<root>/cluster/`` holds anything (an identity, or what is left of one)."""
    directory = cluster_dir(root)
    return directory.exists() and (not directory.is_dir() or any(directory.iterdir()))


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file of mode 0600 and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600: a reader sees the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        _write_file(temporary, data)
        os.replace(temporary, path)
        _sync_dir(path.parent)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise SystemCallFailed(f"cannot write {path}: {exc.strerror or exc}") from None


def install_identity(root: Root, files: dict[str, bytes]) -> Path:
    """Create ``<root>/cluster/`` holding ``files`` (name → content, each 0600) in one atomic step.

    Refused (:class:`AlreadyExists`) when ``<root>/cluster/`` holds anything already.
    """
    root = ensure_state_dir(Path(root))
    target = cluster_dir(root)
    if identity_exists(root):
        raise AlreadyExists(f"a cluster identity exists already in {target} (see: hakeeper cluster show)")
    try:
        staging = Path(tempfile.mkdtemp(prefix=".cluster-", suffix=".tmp", dir=root))  # mode 0700
    except OSError as exc:
        raise SystemCallFailed(f"cannot write in {root}: {exc.strerror or exc}") from None
    try:
        for name, data in files.items():
            _write_file(staging / name, data)
        _sync_dir(staging)
        try:
            os.rename(staging, target)  # replaces an empty directory, fails on a non-empty one
        except OSError as exc:
            if target.exists():
                raise AlreadyExists(
                    f"a cluster identity exists already in {target} (see: hakeeper cluster show)"
                ) from None
            raise SystemCallFailed(f"cannot create {target}: {exc.strerror or exc}") from None
        _sync_dir(root)
    except OSError as exc:
        raise SystemCallFailed(f"cannot write the cluster identity in {root}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(
            f"this node has no {what} ({path} is missing) (see: hakeeper cluster init, hakeeper cluster join)"
        ) from None
    except OSError as exc:
        raise SystemCallFailed(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_cert(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, what))
    except ValueError:
        raise SystemCallFailed(f"{path} is not a PEM certificate (the cluster identity is damaged)") from None


def _check_private(path: Path) -> None:
    """Refuse a private key that others may read, as ssh does."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise NotFound(f"this node has no private key ({path} is missing) (see: hakeeper cluster show)") from None
    except OSError as exc:
        raise SystemCallFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise SystemCallFailed(f"private key {path} is open to others (mode {mode:04o}): chmod 600 it")


def _load_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    _check_private(path)
    try:
        key = serialization.load_pem_private_key(_read(path, what), password=None)
    except (ValueError, TypeError):
        raise SystemCallFailed(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemCallFailed(f"{path} is not an EC private key")
    return key


@dataclass(frozen=True)
class Identity:
    """This node's place in the cluster: its name, its certificate and the cluster CA (files on disk)."""

    directory: Path
    node: str
    ca: x509.Certificate
    certificate: x509.Certificate

    @property
    def cluster(self) -> str:
        return _attribute(self.ca.subject, NameOID.ORGANIZATION_NAME) or DEFAULT_CLUSTER_NAME

    @property
    def fingerprint(self) -> str:
        """The cluster CA's SHA-256 fingerprint (hex): what join tokens carry."""
        return fingerprint(self.ca)

    @property
    def ca_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def cert_path(self) -> Path:
        return self.directory / NODE_CERT

    @property
    def key_path(self) -> Path:
        return self.directory / NODE_KEY

    @property
    def has_authority(self) -> bool:
        return (self.directory / CA_KEY).exists()


def load_identity(root: Root) -> Identity:
    """This node's identity from ``<root>/cluster/``, checked: the certificate is the CA's and its key is private."""
    directory = cluster_dir(root)
    ca = _load_cert(directory / CA_CERT, "cluster identity")
    cert = _load_cert(directory / NODE_CERT, "cluster identity")
    _check_private(directory / NODE_KEY)
    try:
        check_issued_by(cert, ca)
        node = node_of(cert)
    except PeerRefused as exc:
        raise SystemCallFailed(f"{directory / NODE_CERT} is not usable: {exc}") from None
    return Identity(directory, node, ca, cert)


def load_authority(root: Root) -> Authority:
    """The cluster CA with its key; only nodes that admit others have it."""
    directory = cluster_dir(root)
    ca = _load_cert(directory / CA_CERT, "cluster identity")
    if not (directory / CA_KEY).exists():
        raise NotFound(
            f"this node does not hold the cluster CA key ({directory / CA_KEY}); "
            "run this on the node where 'hakeeper cluster init' ran"
        )
    key = _load_key(directory / CA_KEY, "cluster CA key")
    if key.public_key() != ca.public_key():
        raise SystemCallFailed(f"{directory / CA_KEY} does not belong to {directory / CA_CERT}")
    return Authority(ca, key)


def init_cluster(root: Root, node: str, cluster: str = DEFAULT_CLUSTER_NAME) -> Identity:
    """Create the cluster CA and this node's key and certificate in ``<root>/cluster/``."""
    check_name(node, "node name")
    check_name(cluster, "cluster name")
    if identity_exists(root):
        raise AlreadyExists(f"a cluster identity exists already in {cluster_dir(root)} (see: hakeeper cluster show)")
    ca_key = new_key()
    authority = Authority(make_ca(cluster, ca_key), ca_key)
    node_key = new_key()
    cert = authority.issue(node, node_key.public_key())
    install_identity(
        root,
        {
            CA_CERT: cert_pem(authority.certificate),
            CA_KEY: key_pem(ca_key),
            NODE_CERT: cert_pem(cert),
            NODE_KEY: key_pem(node_key),
        },
    )
    logger.info("created cluster %s (CA sha256:%s) with node %s", cluster, fingerprint(authority.certificate), node)
    return load_identity(root)


# ---------------------------------------------------------------------- TLS contexts


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


def peer_node_name(ssl_object: Any) -> str | None:
    """:func:`peer_node`, or None when the peer's certificate names no node."""
    try:
        return peer_node(ssl_object)
    except PeerRefused:
        return None


def peer_node(ssl_object: Any) -> str:
    """The node name of a verified TLS peer (``writer.get_extra_info("ssl_object")``)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerRefused("the peer showed no certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise PeerRefused("the peer's certificate cannot be read") from None
    return node_of(cert)


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


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_address(str(peer[0]), int(peer[1]))
    return str(peer)


def parse_address(text: str, default_port: int, *, what: str = "address", listen: bool = False) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPV6]:PORT`` or a bare IPv6 address, as (host, port).

    Port 0 (any free port) is allowed only where we ``listen``.
    """
    host, port_text, has_port = text.strip(), "", False
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise IllegalArgument(f"{what} {text!r} is not HOST[:PORT] or [IPV6][:PORT]")
        host, port_text, has_port = inside, rest[1:], bool(rest)
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        has_port = True
    if host.count(":") > 1:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise IllegalArgument(f"{what} {text!r} is not a valid IPv6 address") from None
    if not host or not all(c.isascii() and (c.isalnum() or c in "-._:") for c in host):
        raise IllegalArgument(f"{what} {text!r} is not HOST[:PORT] (a host name or an IP address)")
    if not has_port:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not (0 if listen else 1) <= int(port_text) <= 65535:
        raise IllegalArgument(f"{what} {text!r} has no valid port (1..65535)")
    return host, int(port_text)


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


PeerHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]
ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def accept_tls(
    identity: Identity, handler: PeerHandler, *, handshake_timeout: float = HANDSHAKE_TIMEOUT
) -> ConnectionHandler:
    """A callback for :func:`asyncio.start_server`: mutual TLS, then ``handler(reader, writer, peer)``.

    A peer that fails the handshake never reaches ``handler``; the refusal is
    logged. The connection is closed when ``handler`` returns.
    """
    context = server_context(identity)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = peer_address(writer)
        if not await start_tls(writer, context, timeout=handshake_timeout):
            return
        try:
            node = peer_node(writer.get_extra_info("ssl_object"))
        except PeerRefused as exc:
            logger.warning("refused TLS connection from %s: %s", address, exc)
            await close_writer(writer)
            return
        try:
            await handler(reader, writer, Peer(node, address))
        except Exception:  # a loop boundary: one bad connection never takes the server down
            logger.exception("connection of node %s from %s failed", node, address)
        finally:
            await close_writer(writer)

    return accept


async def start_server(identity: Identity, handler: PeerHandler, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` for mutually authenticated connections of cluster nodes."""
    return await asyncio.start_server(accept_tls(identity, handler), host, port)


async def open_connection(
    identity: Identity,
    node: str,
    host: str,
    port: int,
    *,
    timeout: float = CONNECT_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to cluster node ``node`` at ``host:port`` with mutual TLS; refuse any other peer.

    Raises :class:`PeerRefused` (logged) when the server's certificate is not
    the cluster CA's or names another node, :class:`CommunicationFailed` when
    it cannot be reached.
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
        found = peer_node(writer.get_extra_info("ssl_object"))
        if found != node:
            raise PeerRefused(f"{address} is node {found!r}, not {node!r}")
    except PeerRefused as exc:
        logger.warning("refused TLS connection to %s (node %s): %s", address, node, exc)
        await close_writer(writer)
        raise
    return reader, writer
