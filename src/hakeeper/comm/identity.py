"""This node's cluster identity on disk: the CA certificate, its own key and certificate.

Files, in ``<root>/cluster/`` (mode 0700; every file 0600, written atomically)::

    ca.crt       the cluster CA certificate (its SHA-256 fingerprint names the cluster)
    ca.key       the CA's private key: only on the node(s) that admit new nodes
    node.crt     this node's certificate
    node.key     this node's private key
    tokens.json  join tokens (see :mod:`hakeeper.comm.join`): hashes only

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
from hakeeper.errors import AlreadyExists, NotFound, SystemCallFailed
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
