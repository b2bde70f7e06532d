"""This node's cluster identity on disk: the CA certificate, its own key and certificate.

Files, in ``<root>/cluster/`` (mode 0700; every file 0600, written atomically)::

    ca.crt       the cluster CA certificate (its SHA-256 fingerprint names the cluster)
    ca.key       the CA's private key: only on the node(s) that admit new nodes
                 (moved or kept offline with ``hakeeper cluster ca export|import|remove``)
    node.crt     this node's certificate (replaced atomically when renewed)
    node.key     this node's private key
    tokens.json  join tokens (see :mod:`hakeeper.comm.join`): hashes only
    revoked.json revoked node certificates (see :mod:`hakeeper.comm.revocation`)

A new identity is written into a fresh directory beside ``cluster/`` and renamed
into place in one step, so a crash leaves either no identity or a whole one, and
of two ``init`` (or ``join``) racing, exactly one wins. What the certificates
are: :mod:`hakeeper.comm.pki`.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hakeeper.comm.pki import (
    DEFAULT_CLUSTER_NAME,
    Authority,
    PeerRefused,
    attribute,
    cert_pem,
    check_issued_by,
    fingerprint,
    key_pem,
    make_ca,
    new_key,
    node_of,
)
from hakeeper.db.model import check_name
from hakeeper.errors import AlreadyExists, IllegalArgument, NotFound, SystemCallFailed
from hakeeper.layout import CLUSTER_DIR, ensure_state_dir

logger = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"

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
        return attribute(self.ca.subject, NameOID.ORGANIZATION_NAME) or DEFAULT_CLUSTER_NAME

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
            f"this node does not hold the cluster CA key ({directory / CA_KEY}); run this on a member that "
            "holds it (the node where 'hakeeper cluster init' ran, or one that ran 'hakeeper cluster ca import')"
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


def load_node_key(identity: Identity) -> ec.EllipticCurvePrivateKey:
    """This node's private key (checked private and matching its certificate)."""
    key = _load_key(identity.key_path, "private key")
    if key.public_key() != identity.certificate.public_key():
        raise SystemCallFailed(f"{identity.key_path} does not belong to {identity.cert_path}")
    return key


def replace_certificate(
    identity: Identity, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None
) -> Identity:
    """Install a renewed certificate (and its new key, if one was made), each file replaced atomically.

    With the same key, one rename replaces ``node.crt``: a reader sees the old
    certificate or the new one. With a new key, ``node.key`` is replaced first
    and ``node.crt`` right after; a handshake that loads the two between the
    renames fails once and is made again (it never mixes them: the key and
    certificate are checked together when loaded).
    """
    check_issued_by(cert, identity.ca)
    if node_of(cert) != identity.node:
        raise SystemCallFailed(f"the renewed certificate names {node_of(cert)!r}, not this node {identity.node!r}")
    if key is not None:
        if key.public_key() != cert.public_key():
            raise SystemCallFailed("the renewed certificate is not for the new key")
        write_private(identity.key_path, key_pem(key))
    elif cert.public_key() != identity.certificate.public_key():
        raise SystemCallFailed("the renewed certificate is not for this node's key")
    write_private(identity.cert_path, cert_pem(cert))
    return load_identity(identity.directory.parent)


# ---------------------------------------------------------------------- the CA key: moved, or kept offline


def export_ca_key(root: Root, target: Path) -> Path:
    """Copy the CA key to ``target`` (a new file, mode 0600); refused if ``target`` exists. This node keeps it."""
    authority = load_authority(root)
    if target.exists() or target.is_symlink():
        raise AlreadyExists(f"{target} exists already; the CA key is written only to a new file")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        _write_file(temporary, key_pem(authority.key))
        os.link(temporary, target)  # never replaces a file: fails if target appeared meanwhile
        _sync_dir(target.parent)
    except FileExistsError:
        raise AlreadyExists(f"{target} exists already; the CA key is written only to a new file") from None
    except OSError as exc:
        raise SystemCallFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("the cluster CA key was exported to %s", target)
    return target


def import_ca_key(root: Root, source: Path) -> bool:
    """Install the CA key from ``source`` here, after checking it is the key of this cluster's CA certificate.

    Returns False when this node holds that key already. A key of another CA, or
    no key at all, is refused and nothing changes.
    """
    identity = load_identity(root)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no file {source}") from None
    except OSError as exc:
        raise SystemCallFailed(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise IllegalArgument(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != identity.ca.public_key():
        raise IllegalArgument(
            f"{source} is not the key of this cluster's CA (sha256:{identity.fingerprint[:16]}...); nothing was changed"
        )
    if identity.has_authority:
        load_authority(root)  # the key there must be whole and this CA's too
        return False
    write_private(identity.directory / CA_KEY, key_pem(key))
    logger.info("the cluster CA key was imported from %s", source)
    return True


def remove_ca_key(root: Root) -> None:
    """Forget the CA key here (this node no longer issues tokens, admits or renews); the join tokens go with it."""
    load_authority(root)  # there, whole, and this CA's: never remove something else by mistake
    directory = cluster_dir(root)
    try:
        (directory / CA_KEY).unlink()
        (directory / "tokens.json").unlink(missing_ok=True)  # only the CA key could honour them
        _sync_dir(directory)
    except OSError as exc:
        raise SystemCallFailed(f"cannot remove {directory / CA_KEY}: {exc.strerror or exc}") from None
    logger.info("the cluster CA key was removed from this node")
