"""Admitting a node to the cluster: one-time join tokens and the join exchange.

Design
------
Modelled on kubeadm's bootstrap tokens, with the CA hash carried in the token as
k3s does. ``hakeeper cluster token`` on a member that holds the CA key prints::

    hk1.<id>.<secret>.<ca-sha256>

``id`` is 6 characters ``[a-z0-9]`` (public: it names the token in logs),
``secret`` 32 characters of base32 (160 random bits), ``ca-sha256`` the 64-hex
SHA-256 fingerprint of the cluster CA certificate. The member stores only
SHA-256(secret) with the token's expiry in ``<root>/cluster/tokens.json`` (0600);
a token works once. A token made with ``--node NAME`` stores NAME beside the hash
(``"for"``) and admits only a request whose CN is NAME. The member's address is not in the token: it is given on the
join command line (``hakeeper cluster join --token TOKEN ADDRESS[:PORT]``).

The exchange is one TLS 1.3 connection to the member's join service (default
port :data:`JOIN_PORT`). Frames are a 4-byte big-endian length and a UTF-8 JSON
object of at most :data:`MAX_FRAME` bytes.

1. member → joiner: ``{"hakeeper": "join", "version": 1, "ca": PEM}``. The joiner
   trusts nothing yet but the fingerprint in its token: it checks that the CA's
   SHA-256 is that fingerprint and that the certificate the member showed in the
   handshake is signed by that CA and valid now (the handshake itself proved the
   member holds that certificate's key). Otherwise it hangs up: the secret never
   goes to a server that is not a member of the token's cluster.
2. joiner → member: ``{"id": ID, "secret": SECRET, "csr": PEM, "addresses": [...],
   "witness": BOOL}``, a certificate request for a key the joiner just made, CN = its
   node name, and the addresses it announces (``ADDRESS/PREFIX``, one per network, in
   priority order; see :mod:`hakeeper.db.members`).
3. member → joiner: ``{"ok": true, "certificate": PEM, "members": [{"node": NAME,
   "addresses": [...], "witness": BOOL}, ...]}``, or ``{"ok": false, "error": TEXT}``.
   The member refuses an unknown, used or expired token (the reason is logged, with
   the token's id, never its secret), a token bound to another node name, a malformed
   request and a request for its own name. Otherwise it first *registers* the joiner
   (``on_admit``: the node and its paths in every member's LCD, idempotent, see
   :mod:`hakeeper.cli.members`), then marks the token used and signs the request. Nothing is
   issued for a refused token or a failed registration (the token stays unused).
   ``members`` is every node the member knows, itself included, with the addresses
   the joiner pairs with its own to write its LCD.

The joiner stores its key, its certificate and the CA certificate in
``<root>/cluster/`` (:func:`hakeeper.comm.identity.install_identity`). It gets no CA
key: only a member that holds it (``cluster init`` ran there, or ``cluster ca
import``) makes tokens and admits nodes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hakeeper.comm import tls
from hakeeper.comm.addresses import format_address
from hakeeper.comm.frames import FrameError, read_frame, write_frame
from hakeeper.comm.identity import (
    CA_CERT,
    NODE_CERT,
    NODE_KEY,
    Identity,
    cluster_dir,
    identity_exists,
    install_identity,
    load_identity,
    write_private,
)
from hakeeper.comm.pki import (
    Authority,
    PeerRefused,
    cert_pem,
    check_issued_by,
    fingerprint,
    key_pem,
    make_csr,
    new_key,
    node_of,
    parse_csr,
)
from hakeeper.comm.tls import close_writer, peer_address, reason, start_tls
from hakeeper.db.members import parse_announced
from hakeeper.db.model import check_name
from hakeeper.errors import (
    AlreadyExists,
    CommunicationFailed,
    HakeeperError,
    IllegalArgument,
    OutOfRange,
    SystemCallFailed,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

JOIN_PORT = 7367  # messages use comm_port (7365, LifeKeeper's LCM port), heartbeats 7366, joins this one
TOKEN_PREFIX = "hk1"
TOKEN_FILE = "tokens.json"
DEFAULT_TTL = 3600
MIN_TTL = 60
MAX_TTL = 86400
KEEP_SPENT = 86400.0  # used and expired tokens are remembered this long, to log why they are refused
MAX_FRAME = 64 * 1024
MAX_ADDRESSES = 16  # a joiner announces one address per network
JOIN_TIMEOUT = 30.0  # one whole exchange, on either side
PROTOCOL_VERSION = 1

_TOKEN = re.compile(r"hk1\.([a-z0-9]{6})\.([a-z2-7]{32})\.([0-9a-f]{64})")
_ID = re.compile(r"[a-z0-9]{6}")
_SECRET = re.compile(r"[a-z2-7]{32}")


class TokenRefused(IllegalArgument):
    """A member refused a join token (unknown, used or expired)."""


class WrongCluster(CommunicationFailed):
    """The server asked to admit us is not a member of the token's cluster."""


# ---------------------------------------------------------------------- tokens


@dataclass(frozen=True, repr=False)
class Token:
    """A join token. Its text holds the secret: print it once, never log it (``repr`` shows the id only)."""

    id: str
    secret: str
    fingerprint: str

    def text(self) -> str:
        return f"{TOKEN_PREFIX}.{self.id}.{self.secret}.{self.fingerprint}"

    def __repr__(self) -> str:
        return f"Token(id={self.id!r}, fingerprint={self.fingerprint[:16]}...)"


def parse_token(text: str) -> Token:
    """A token from its text; the error never repeats the text (it holds a secret)."""
    match = _TOKEN.fullmatch(text.strip())
    if match is None:
        raise IllegalArgument(
            "the join token is malformed: expected hk1.ID.SECRET.FINGERPRINT (see: hakeeper cluster token on a member)"
        )
    return Token(*match.groups())


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """What a member knows of a token (no secret)."""

    id: str
    created: float
    expires: float
    used: float | None
    node: str | None
    bound: str | None = None  # the only node the token admits, if it names one


class TokenStore:
    """The join tokens of a member: ``tokens.json`` in the cluster directory, 0600, locked while changed.

    ``clock`` gives the time (seconds since the epoch); tests pass their own.
    """

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.path = directory / TOKEN_FILE
        self.clock = clock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The tokens, under an exclusive lock of the directory (across processes: CLI and daemon)."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SystemCallFailed(f"cannot open {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes())
            tokens = data["tokens"]
            if not isinstance(tokens, dict):
                raise TypeError
            return tokens
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SystemCallFailed(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError):
            raise SystemCallFailed(
                f"{self.path} is damaged; remove it (tokens not yet used are lost) and make new ones"
            ) from None

    def _write(self, tokens: dict[str, dict[str, Any]]) -> None:
        now = self.clock()
        kept = {k: v for k, v in tokens.items() if v["expires"] + KEEP_SPENT > now}
        data = json.dumps({"version": 1, "tokens": kept}, indent=1, sort_keys=True).encode()
        write_private(self.path, data + b"\n")

    def create(self, fingerprint: str, ttl: float = DEFAULT_TTL, *, node: str | None = None) -> Token:
        """A new token valid for ``ttl`` seconds; only the hash of its secret is stored.

        ``node``: the token admits only a node of that name (a request with another CN is refused).
        """
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise OutOfRange(f"--ttl {ttl:g} must be within {MIN_TTL}..{MAX_TTL} seconds")
        if node is not None:
            check_name(node, "node name")
        secret = base64.b32encode(secrets.token_bytes(20)).decode().lower()
        with self._locked() as tokens:
            token_id = _new_id(tokens)
            now = self.clock()
            tokens[token_id] = {"hash": _hash(secret), "created": now, "expires": now + ttl, "used": None, "node": None,
                                "for": node}  # fmt: skip
            self._write(tokens)
        bound = f", for node {node} only" if node is not None else ""
        logger.info("join token %s created, valid %g s%s", token_id, ttl, bound)
        return Token(token_id, secret, fingerprint)

    def check(self, token_id: str, secret: str, node: str | None = None) -> None:
        """Raise :class:`TokenRefused` unless the token may be used now (by ``node``, if given); nothing changes."""
        with self._locked() as tokens:
            self._refusal(tokens, token_id, secret, node)

    def consume(self, token_id: str, secret: str, node: str) -> None:
        """Mark the token used by ``node``, or raise :class:`TokenRefused`; atomic, so a token works once."""
        self.spend(token_id, secret, node, lambda: None)

    def spend(self, token_id: str, secret: str, node: str, work: Callable[[], T]) -> T:
        """Check the token, run ``work``, then mark the token used by ``node``: all under the token lock.

        The check and the use it guards are one transaction: two joins with one token
        cannot both pass the check, and when ``work`` raises the token stays unused.
        """
        with self._locked() as tokens:
            entry = self._refusal(tokens, token_id, secret, node)
            result = work()
            entry["used"] = self.clock()
            entry["node"] = node
            self._write(tokens)
            return result

    def _refusal(
        self, tokens: dict[str, dict[str, Any]], token_id: str, secret: str, node: str | None = None
    ) -> dict[str, Any]:
        entry = tokens.get(token_id)
        if entry is None:
            raise TokenRefused("unknown token")
        if not hmac.compare_digest(str(entry.get("hash", "")), _hash(secret)):
            raise TokenRefused("unknown token (wrong secret)")
        if entry.get("used") is not None:
            raise TokenRefused(f"token used already (by {entry.get('node')} at {_when(entry['used'])})")
        if self.clock() >= float(entry["expires"]):
            raise TokenRefused(f"token expired (at {_when(entry['expires'])})")
        bound = entry.get("for")
        if node is not None and bound is not None and node != bound:
            raise TokenRefused(f"token is for node {bound}, not {node}")
        return entry

    def tokens(self) -> list[TokenInfo]:
        with self._locked() as tokens:
            return [
                TokenInfo(k, float(v["created"]), float(v["expires"]), v.get("used"), v.get("node"), v.get("for"))
                for k, v in sorted(tokens.items(), key=lambda item: float(item[1]["created"]))
            ]


def _new_id(taken: dict[str, Any]) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(6))
        if candidate not in taken:
            return candidate


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch)))


def public_reason(refusal: TokenRefused) -> str:
    """What the joiner is told: why only when it proved it knows the secret."""
    text = str(refusal)
    return "unknown token" if text.startswith("unknown token") else text.split(" (", 1)[0]


# ---------------------------------------------------------------------- the member's side


def _join_server_context(identity: Identity) -> ssl.SSLContext:
    """TLS 1.3 with this node's certificate; no client certificate (the joiner has none yet)."""
    return tls.load_own_certificate(tls.tls13_context(ssl.PROTOCOL_TLS_SERVER), identity)


def _request_fields(request: dict[str, Any]) -> tuple[str, str, x509.CertificateSigningRequest, str]:
    """(token id, secret, CSR, node) from a join request; ValueError naming what is wrong."""
    token_id, secret, csr_pem = request.get("id"), request.get("secret"), request.get("csr")
    if not isinstance(token_id, str) or not _ID.fullmatch(token_id):
        raise ValueError("no valid token id")
    if not isinstance(secret, str) or not _SECRET.fullmatch(secret):
        raise ValueError(f"no valid secret for token {token_id}")
    csr, node, _key = parse_csr(csr_pem)
    return token_id, secret, csr, node


def _announced(request: dict[str, Any]) -> tuple[list[str], bool]:
    """(addresses, witness) a join request announces; none from a joiner that announces nothing."""
    addresses, witness = request.get("addresses", []), request.get("witness", False)
    if not isinstance(addresses, list) or len(addresses) > MAX_ADDRESSES or not isinstance(witness, bool):
        raise ValueError(f"addresses must be a list of at most {MAX_ADDRESSES}, witness true or false")
    try:
        return [parse_announced(str(a)) for a in addresses], witness
    except IllegalArgument as exc:
        raise ValueError(str(exc)) from None


#: Registers a node being admitted, with the addresses it announced and whether it is a witness, on
#: every member; returns the members it may pair with: {"node", "addresses", "witness"} each.
OnAdmit = Callable[[str, list[str], bool], list[dict[str, Any]] | None]


class JoinService:
    """A member's join service: admits nodes that bring a valid token.

    ``handle`` is an :func:`asyncio.start_server` callback (hakeeperd will host
    it); ``start`` listens by itself (``hakeeper cluster serve-join``).
    ``on_join`` is called with the name of each node admitted; ``on_admit``
    registers it first (see :data:`OnAdmit`); a refusal there is the joiner's answer.
    """

    def __init__(
        self,
        identity: Identity,
        authority: Authority,
        tokens: TokenStore,
        *,
        on_join: Callable[[str], None] | None = None,
        on_admit: OnAdmit | None = None,
        timeout: float = JOIN_TIMEOUT,
    ) -> None:
        if fingerprint(authority.certificate) != identity.fingerprint:
            raise SystemCallFailed("the cluster CA key does not belong to this node's cluster CA")
        self.identity = identity
        self.authority = authority
        self.tokens = tokens
        self.on_join = on_join
        self.on_admit = on_admit
        self.timeout = timeout
        self._context = _join_server_context(identity)

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = peer_address(writer)
        if not await start_tls(writer, self._context):
            return
        try:
            async with asyncio.timeout(self.timeout):
                request = await self._request(reader, writer, address)
            if request is not None:  # the admission (a registration on every member) has its own bounds
                await self._answer(request, writer, address)
        except TimeoutError:
            logger.warning(
                "join from %s refused: no complete request within %g s; nothing issued", address, self.timeout
            )
        except FrameError as exc:
            logger.warning("join from %s refused: %s; nothing issued", address, exc)
        except (OSError, asyncio.IncompleteReadError) as exc:
            logger.warning("join from %s failed: %s", address, reason(exc))
        except HakeeperError as exc:  # this member's own trouble (a damaged token file, a full disk)
            logger.error("join from %s failed: %s; nothing issued", address, exc)
        except Exception:  # a loop boundary: one bad join never takes the service down
            logger.exception("join from %s failed; nothing issued", address)
        finally:
            await close_writer(writer)

    async def _request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> dict[str, Any] | None:
        """The greeting, then the joiner's request (None: it hung up, not accepting this member)."""
        await write_frame(
            writer,
            {"hakeeper": "join", "version": PROTOCOL_VERSION, "ca": cert_pem(self.identity.ca).decode()},
            MAX_FRAME,
        )
        try:
            request = await read_frame(reader, MAX_FRAME)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise FrameError("the request stops in the middle") from None
            logger.info("join from %s: the joiner hung up after the greeting (it did not accept this member)", address)
            return None
        return request

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter, address: str) -> None:
        """Admit the joiner or say why not. The joiner may give up meanwhile (its own timeout): the admission
        is then logged and done, and the joiner joins again with a new token, which registers nothing twice."""
        try:
            token_id, secret, csr, node = _request_fields(request)
            addresses, witness = _announced(request)
        except ValueError as exc:
            logger.warning("join from %s refused: malformed request (%s); nothing issued", address, exc)
            await write_frame(writer, {"ok": False, "error": f"malformed request: {exc}"}, MAX_FRAME)
            return
        try:
            cert, members = await asyncio.to_thread(self._admit, token_id, secret, csr, node, (addresses, witness))
        except TokenRefused as exc:
            logger.warning("join from %s refused: token %s: %s; nothing issued", address, token_id, exc)
            await write_frame(
                writer, {"ok": False, "error": f"the member refused the join token: {public_reason(exc)}"}, MAX_FRAME
            )
            return
        except IllegalArgument as exc:
            logger.warning("join from %s refused: %s; nothing issued", address, exc)
            await write_frame(writer, {"ok": False, "error": str(exc)}, MAX_FRAME)
            return
        except HakeeperError as exc:  # the registration (or this member) failed: nothing issued, the token unused
            logger.error("join of %s from %s failed: %s; nothing issued", node, address, exc)
            await write_frame(writer, {"ok": False, "error": f"admission of {node} failed: {exc}"}, MAX_FRAME)
            return
        logger.info(
            "admitted node %s from %s (token %s, certificate serial %x)", node, address, token_id, cert.serial_number
        )
        answer: dict[str, Any] = {"ok": True, "certificate": cert_pem(cert).decode()}
        if members is not None:
            answer["members"] = members
        await write_frame(writer, answer, MAX_FRAME)
        if self.on_join is not None:
            self.on_join(node)

    def _admit(
        self,
        token_id: str,
        secret: str,
        csr: x509.CertificateSigningRequest,
        node: str,
        announced: tuple[list[str], bool] = ([], False),
    ) -> tuple[x509.Certificate, list[dict[str, Any]] | None]:
        """Check the token, refuse this node's own name, register the node, mark the token used, sign.

        Blocking: run in a thread. The registration runs between the token's check and its
        use, under the token lock (:meth:`TokenStore.spend`): when it fails, the same token
        can be tried again; it is idempotent, so a retry with a new token (the answer was
        lost) registers nothing twice.
        """
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # checked by _request_fields
        addresses, witness = announced

        def admit() -> tuple[x509.Certificate, list[dict[str, Any]] | None]:
            if node == self.identity.node:
                raise IllegalArgument(
                    f"node name {node!r} is this member's own; a joining node needs a name of its own"
                )
            members = self.on_admit(node, list(addresses), witness) if self.on_admit is not None else None
            return self.authority.issue(node, key), members

        return self.tokens.spend(token_id, secret, node, admit)


# ---------------------------------------------------------------------- the joiner's side


def _join_client_context() -> ssl.SSLContext:
    """TLS 1.3, the member's certificate unchecked by OpenSSL: we have no CA yet, only its fingerprint.

    :func:`request_join` checks the member's certificate against the CA the
    fingerprint pins before it sends anything.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Admission:
    """What a member gave a joining node."""

    ca: x509.Certificate
    certificate: x509.Certificate
    member: str  # the member's node name
    members: list[dict[str, Any]] | None = None  # every node the member knows (None: it registered nothing)


def _check_greeting(greeting: dict[str, Any], token: Token, member_der: bytes | None, address: str) -> x509.Certificate:
    if greeting.get("hakeeper") != "join" or greeting.get("version") != PROTOCOL_VERSION:
        raise CommunicationFailed(f"{address} is not a hakeeper join service of this version")
    try:
        ca = x509.load_pem_x509_certificate(str(greeting.get("ca", "")).encode())
    except ValueError:
        raise CommunicationFailed(f"{address} sent no readable CA certificate") from None
    found = fingerprint(ca)
    if not hmac.compare_digest(found, token.fingerprint):
        raise WrongCluster(
            f"{address} belongs to another cluster (CA sha256:{found[:16]}..., the token's is "
            f"sha256:{token.fingerprint[:16]}...): wrong address, or someone in between; nothing was sent"
        )
    if not member_der:
        raise WrongCluster(f"{address} showed no certificate; nothing was sent")
    try:
        check_issued_by(x509.load_der_x509_certificate(member_der), ca)
    except (ValueError, PeerRefused) as exc:
        raise WrongCluster(f"{address} is not a member of the token's cluster ({exc}); nothing was sent") from None
    return ca


async def request_join(
    token: Token,
    host: str,
    port: int,
    node: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    addresses: list[str] | None = None,
    witness: bool = False,
    timeout: float = JOIN_TIMEOUT,
) -> Admission:
    """Ask the member at ``host:port`` to admit ``node`` with ``token``; the certificate it gives, checked."""
    address = format_address(host, port)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=_join_client_context(), ssl_handshake_timeout=timeout
            )
            try:
                greeting = await read_frame(reader, MAX_FRAME)
                member_der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                try:
                    ca = _check_greeting(greeting, token, member_der, address)
                except WrongCluster as exc:
                    logger.warning("refused member %s: %s", address, exc)
                    raise
                member = node_of(x509.load_der_x509_certificate(member_der))
                csr = make_csr(node, key).public_bytes(serialization.Encoding.PEM).decode()
                request = {"id": token.id, "secret": token.secret, "csr": csr, "addresses": list(addresses or []),
                           "witness": witness}  # fmt: skip
                await write_frame(writer, request, MAX_FRAME)
                answer = await read_frame(reader, MAX_FRAME)
            finally:
                await close_writer(writer)
    except TimeoutError:
        raise CommunicationFailed(f"the member at {address} did not answer within {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        raise CommunicationFailed(f"the member at {address} hung up (see its log)") from None
    except PeerRefused as exc:
        raise WrongCluster(f"{address}: {exc}") from None
    except OSError as exc:
        raise CommunicationFailed(f"cannot join through {address}: {reason(exc)}") from None
    if answer.get("ok") is not True:
        error = str(answer.get("error", "refused"))
        if "join token" in error and "is for node" in error:
            raise TokenRefused(f"{error} (ask for one for {node}: hakeeper cluster token --node {node}, on a member)")
        if "join token" in error:
            raise TokenRefused(f"{error} (ask for a new one: hakeeper cluster token, on a member)")
        raise IllegalArgument(f"the member at {address} refused: {error}")
    try:
        cert = x509.load_pem_x509_certificate(str(answer.get("certificate", "")).encode())
        check_issued_by(cert, ca)
    except (ValueError, PeerRefused) as exc:
        raise CommunicationFailed(f"the member at {address} sent an unusable certificate ({exc})") from None
    if cert.public_key() != key.public_key() or node_of(cert) != node:
        raise CommunicationFailed(f"the member at {address} sent a certificate for another key or node")
    members = answer.get("members")
    return Admission(ca, cert, member, members if isinstance(members, list) else None)


async def join(
    root: str | os.PathLike[str],
    node: str,
    token: Token,
    host: str,
    port: int,
    *,
    addresses: list[str] | None = None,
    witness: bool = False,
    admitted: Callable[[Admission], None] | None = None,
    timeout: float = JOIN_TIMEOUT,
) -> Identity:
    """Join the cluster of ``token`` through the member at ``host:port``; this node's identity, installed.

    ``admitted`` is called with the member's answer before the identity is installed (the
    CLI writes the members into this node's LCD there): if it fails, this node has no
    identity and joins again with a new token, which registers nothing twice.
    """
    check_name(node, "node name")
    if identity_exists(root):
        raise AlreadyExists(
            f"this node has a cluster identity already in {cluster_dir(root)} (see: hakeeper cluster show)"
        )
    key = new_key()
    admission = await request_join(token, host, port, node, key, addresses=addresses, witness=witness, timeout=timeout)
    if admitted is not None:
        admitted(admission)
    install_identity(
        root,
        {CA_CERT: cert_pem(admission.ca), NODE_CERT: cert_pem(admission.certificate), NODE_KEY: key_pem(key)},
    )
    logger.info("joined cluster (CA sha256:%s) as %s through %s", token.fingerprint, node, admission.member)
    return load_identity(root)
