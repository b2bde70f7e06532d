"""Cluster identities for tests: a CA and nodes, made as init and join would make them, without the network."""

from __future__ import annotations

from pathlib import Path

from hakeeper.comm.identity import (
    CA_CERT,
    NODE_CERT,
    NODE_KEY,
    Identity,
    init_cluster,
    install_identity,
    load_authority,
    load_identity,
)
from hakeeper.comm.pki import Authority, cert_pem, key_pem, new_key


def add_node(authority: Authority, root: Path, node: str) -> Identity:
    """A node of ``authority``'s cluster, as a join would make it."""
    key = new_key()
    cert = authority.issue(node, key.public_key())
    install_identity(
        root, {CA_CERT: cert_pem(authority.certificate), NODE_CERT: cert_pem(cert), NODE_KEY: key_pem(key)}
    )
    return load_identity(root)


def make_cluster(base: Path, nodes: list[str], cluster: str = "prod") -> dict[str, Identity]:
    """Identities for ``nodes`` in state directories ``base/<node>``; the first holds the CA."""
    first = nodes[0]
    identities = {first: init_cluster(base / first, first, cluster)}
    authority = load_authority(base / first)
    for node in nodes[1:]:
        identities[node] = add_node(authority, base / node, node)
    return identities
