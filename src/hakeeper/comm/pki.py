"""The cluster's certificate authority, its keys and certificates.

A cluster has a certificate authority of its own, made by ``hakeeper cluster init``
on the first node. Every node holds a P-256 ECDSA key and a certificate signed by
that CA whose subject CN, and only SAN DNS name, is the node's name (the LCD's
local node); the CA's subject O is the cluster's name. P-256 ECDSA because every
OpenSSL that Python's :mod:`ssl` links to signs TLS 1.3 handshakes with it, small
and fast, and FIPS builds allow it (Ed25519 works with OpenSSL 3 as well, but not
everywhere). Where they are kept: :mod:`hakeeper.comm.identity`; how nodes use
them to talk: :mod:`hakeeper.comm.tls`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hakeeper.db.model import check_name
from hakeeper.errors import CommunicationFailed, IllegalArgument

DEFAULT_CLUSTER_NAME = "hakeeper"
CA_LIFETIME = dt.timedelta(days=20 * 365)
NODE_LIFETIME = dt.timedelta(days=10 * 365)
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates start a little in the past: clocks of nodes differ
RENEW_WARNING_DAYS = 30  # `cluster show` and hakeeperd warn when this node's certificate expires sooner
CURVE = ec.SECP256R1


class PeerRefused(CommunicationFailed):
    """A TLS peer was refused: no certificate, one from another CA, or not the node expected."""


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


def attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
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
        return attribute(self.certificate.subject, NameOID.ORGANIZATION_NAME) or DEFAULT_CLUSTER_NAME

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


def parse_csr(text: Any) -> tuple[x509.CertificateSigningRequest, str, ec.EllipticCurvePublicKey]:
    """(CSR, the node it names, its key) from PEM text; :class:`ValueError` saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError("no certificate request")
    try:
        csr = x509.load_pem_x509_csr(text.encode())
    except ValueError:
        raise ValueError("the certificate request is not PEM") from None
    if not csr.is_signature_valid:
        raise ValueError("the certificate request's signature is wrong")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the certificate request's key is not P-256 ECDSA")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    node = names[0].value if len(names) == 1 else None
    if not isinstance(node, str):
        raise ValueError("the certificate request names no node")
    try:
        check_name(node, "node name")
    except IllegalArgument as exc:
        raise ValueError(str(exc)) from None
    return csr, node, key


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def issued_at(cert: x509.Certificate) -> dt.datetime:
    """When a node certificate was issued, on the issuer's clock: :meth:`Authority.issue` starts it CLOCK_SKEW
    earlier."""
    return cert.not_valid_before_utc + CLOCK_SKEW


def expiry_warning(cert: x509.Certificate, now: dt.datetime, days: int) -> str | None:
    """A warning when ``cert`` expires within ``days`` days of ``now`` (or has expired), else None."""
    left = cert.not_valid_after_utc - now
    if left > dt.timedelta(days=days):
        return None
    until = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if left <= dt.timedelta(0):
        return f"this node's certificate expired at {until}: join again (hakeeper cluster join with a new token)"
    return (
        f"this node's certificate expires in {left.days} day{'s' if left.days != 1 else ''} ({until}): "
        "renew it (hakeeper cluster renew)"
    )


def node_of(cert: x509.Certificate) -> str:
    """The node a certificate names: its CN, which must also be its one SAN DNS name."""
    common_name = attribute(cert.subject, NameOID.COMMON_NAME)
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
