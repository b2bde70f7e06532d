"""The cluster identity (init, files, tokens) and mutual TLS between nodes, on 127.0.0.1.

What a user relies on: init makes a CA and this node's certificate in private
files and never twice; a token works once and not after it expires, and the
member keeps only its hash; a node talks only to nodes of its own cluster — a
peer with a certificate of another CA, or with none, gets nothing, and the
refusal is in the log with the peer's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hakeeper.comm.addresses import parse_address
from hakeeper.comm.identity import (
    CA_CERT,
    CA_KEY,
    NODE_CERT,
    NODE_KEY,
    Identity,
    cluster_dir,
    init_cluster,
    install_identity,
    load_authority,
    load_identity,
)
from hakeeper.comm.join import KEEP_SPENT, TOKEN_FILE, TokenRefused, TokenStore, parse_token
from hakeeper.comm.pki import Authority, PeerRefused, cert_pem, fingerprint
from hakeeper.comm.tls import Peer, accept_tls, client_context, open_connection, server_context
from hakeeper.errors import IllegalArgument
from hakeeper.lab.cluster import add_node
from tests.conftest import Cli
from tests.ports import tracked_server

OK, SYSCALL, SYNTAX, INTERNAL, EXISTS, ILLEGAL, RANGE, MISSING = range(8)
TIMEOUT = 5.0


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Identity, Authority]:
    """node1, the first node of cluster 'prod' (holds the CA key)."""
    root = tmp_path / "node1"
    identity = init_cluster(root, "node1", "prod")
    return identity, load_authority(root)


# ---------------------------------------------------------------------- init


def test_init_makes_a_private_ca_and_node_certificate(cli: Cli, root: Path) -> None:
    result = cli("cluster", "init", "--name", "prod")
    assert result.code == OK, result.err
    directory = cluster_dir(root)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert modes(directory) == {CA_CERT: 0o600, CA_KEY: 0o600, NODE_CERT: 0o600, NODE_KEY: 0o600}

    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    cert = x509.load_pem_x509_certificate((directory / NODE_CERT).read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1"]
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert fingerprint(ca) in result.out
    assert "PRIVATE" not in result.out + result.err
    for key in (CA_KEY, NODE_KEY):
        body = (directory / key).read_text().splitlines()[1]
        assert body not in result.out

    identity = load_identity(root)
    assert (identity.node, identity.cluster) == ("node1", "prod")
    shown = cli("cluster", "show")
    assert shown.code == OK
    assert "prod" in shown.out
    assert f"sha256:{fingerprint(ca)}" in shown.out


def test_second_init_is_refused_and_changes_nothing(cli: Cli, root: Path) -> None:
    assert cli("cluster", "init").code == OK
    before = {p.name: p.read_bytes() for p in cluster_dir(root).iterdir()}
    again = cli("cluster", "init", "--name", "other")
    assert again.code == EXISTS
    assert again.out == ""
    assert "exists already" in again.err
    assert again.err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in cluster_dir(root).iterdir()} == before


def test_init_with_a_bad_name_creates_nothing(cli: Cli, root: Path) -> None:
    result = cli("cluster", "init", "--name", "bad name")
    assert result.code == ILLEGAL
    assert not cluster_dir(root).exists()


def test_install_replaces_an_empty_directory_but_never_an_identity(tmp_path: Path) -> None:
    """The identity appears whole, in one rename: an empty cluster/ is taken over, leftovers are not."""
    (tmp_path / "cluster").mkdir()
    install_identity(tmp_path, {"a": b"1"})
    assert (tmp_path / "cluster" / "a").read_bytes() == b"1"
    with pytest.raises(Exception, match="exists already"):
        install_identity(tmp_path, {"b": b"2"})
    assert sorted(p.name for p in (tmp_path / "cluster").iterdir()) == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["cluster"]  # no staging directory left behind


def test_a_private_key_open_to_others_is_refused(cluster: tuple[Identity, Authority]) -> None:
    identity, _ = cluster
    identity.key_path.chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        load_identity(identity.directory.parent)


def test_show_without_identity_says_what_to_do(cli: Cli) -> None:
    result = cli("cluster", "show")
    assert result.code == MISSING
    assert "cluster init" in result.err


# ---------------------------------------------------------------------- tokens


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_carries_the_ca_fingerprint_and_only_its_hash_is_stored(cli: Cli, root: Path) -> None:
    assert cli("cluster", "init").code == OK
    result = cli("cluster", "token")
    assert result.code == OK, result.err
    assert result.err == ""
    token = parse_token(result.out)
    assert result.out == token.text() + "\n"
    assert token.fingerprint == load_identity(root).fingerprint
    stored = cluster_dir(root) / TOKEN_FILE
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert token.secret not in stored.read_text()
    entries = json.loads(stored.read_text())["tokens"]
    assert list(entries) == [token.id]
    assert entries[token.id]["expires"] - entries[token.id]["created"] == 3600
    assert token.secret not in repr(token)


@pytest.mark.parametrize("ttl", ["59", "86401", "-1"])
def test_token_lifetime_is_bounded(cli: Cli, ttl: str) -> None:
    assert cli("cluster", "init").code == OK
    result = cli("cluster", "token", "--ttl", ttl)
    assert result.code == RANGE
    assert result.out == ""


def test_token_needs_the_ca_key(cli: Cli, root: Path, cluster: tuple[Identity, Authority]) -> None:
    assert cli("cluster", "token").code == MISSING  # no identity at all
    add_node(cluster[1], root, "node1")  # a joined node: no CA key
    result = cli("cluster", "token")
    assert result.code == MISSING
    assert "CA key" in result.err


def test_a_token_works_once(cluster: tuple[Identity, Authority]) -> None:
    identity, _ = cluster
    store = TokenStore(identity.directory, clock=Clock())
    token = store.create(identity.fingerprint, 600)
    store.check(token.id, token.secret)  # checking uses nothing
    store.consume(token.id, token.secret, "node2")
    with pytest.raises(TokenRefused, match=r"used already.*node2"):
        store.consume(token.id, token.secret, "node3")
    with pytest.raises(TokenRefused, match="used already"):
        store.check(token.id, token.secret)
    [info] = store.tokens()
    assert info.node == "node2"


def test_a_token_expires(cluster: tuple[Identity, Authority]) -> None:
    identity, _ = cluster
    clock = Clock()
    store = TokenStore(identity.directory, clock=clock)
    token = store.create(identity.fingerprint, 60)
    clock.now += 59.9
    store.check(token.id, token.secret)
    clock.now += 0.1
    with pytest.raises(TokenRefused, match="expired"):
        store.consume(token.id, token.secret, "node2")
    clock.now += KEEP_SPENT + 1
    store.create(identity.fingerprint, 60)  # writing forgets long-spent tokens
    assert token.id not in [info.id for info in store.tokens()]
    with pytest.raises(TokenRefused, match="unknown token"):
        store.check(token.id, token.secret)


def test_a_wrong_secret_or_unknown_id_is_refused(cluster: tuple[Identity, Authority]) -> None:
    identity, _ = cluster
    store = TokenStore(identity.directory, clock=Clock())
    token = store.create(identity.fingerprint, 600)
    with pytest.raises(TokenRefused, match="wrong secret"):
        store.consume(token.id, "a" * 32, "node2")
    with pytest.raises(TokenRefused, match="unknown token"):
        store.consume("zzzzzz", token.secret, "node2")
    store.consume(token.id, token.secret, "node2")  # the failed tries did not use it up


@pytest.mark.parametrize(
    "text",
    ["", "hk1.abc", "hk2.abcdef." + "a" * 32 + "." + "0" * 64, "hk1.abcdef." + "a" * 31 + "." + "0" * 64],
)
def test_a_malformed_token_is_refused_without_repeating_it(text: str) -> None:
    with pytest.raises(IllegalArgument) as refused:
        parse_token(text)
    assert not text or text not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", ("10.0.0.1", 7367)),
        ("10.0.0.1:99", ("10.0.0.1", 99)),
        ("node-1.example", ("node-1.example", 7367)),
        ("[::1]:80", ("::1", 80)),
        ("fe80::1", ("fe80::1", 7367)),
    ],
)
def test_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, 7367) == expected


@pytest.mark.parametrize("text", ["", ":80", "host:", "host:70000", "host:x", "[::1", "a b", "[::1]x", "1:2:3"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(IllegalArgument):
        parse_address(text, 7367)


# ---------------------------------------------------------------------- TLS contexts


def test_contexts_are_tls13_mutual_and_trust_only_the_cluster_ca(cluster: tuple[Identity, Authority]) -> None:
    identity, _ = cluster
    for context in (server_context(identity), client_context(identity)):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
        anchors = context.get_ca_certs(binary_form=True)
        assert [x509.load_der_x509_certificate(der) for der in anchors] == [identity.ca]


# ---------------------------------------------------------------------- mutual TLS on 127.0.0.1


class Greeter:
    """A node's service: greets the peer by the node name its certificate gives."""

    def __init__(self) -> None:
        self.peers: list[Peer] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
        self.peers.append(peer)
        writer.write(f"hello {peer.node}\n".encode())
        await writer.drain()


@contextlib.asynccontextmanager
async def serving(identity: Identity, greeter: Greeter) -> AsyncIterator[tuple[int, asyncio.Queue[None]]]:
    """A mutual-TLS server on 127.0.0.1; the queue gets an item when a connection is over (refused or served)."""
    async with tracked_server(accept_tls(identity, greeter)) as served:
        yield served


async def attempt(port: int, context: ssl.SSLContext) -> bytes:
    """Connect with ``context`` and read all the server sends (nothing, if it refused us)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), TIMEOUT)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


def impostor_context(trusted: Identity, shown: Identity | None) -> ssl.SSLContext:
    """A client that trusts the cluster CA (it is public) and shows ``shown``'s certificate, or none."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(cadata=cert_pem(trusted.ca).decode())
    if shown is not None:
        context.load_cert_chain(shown.cert_path, shown.key_path)
    return context


def test_a_node_of_the_cluster_is_served_and_named(cluster: tuple[Identity, Authority], tmp_path: Path) -> None:
    node1, authority = cluster
    node2 = add_node(authority, tmp_path / "node2", "node2")
    greeter = Greeter()

    async def scenario() -> bytes:
        async with serving(node1, greeter) as (port, finished):
            reader, writer = await open_connection(node2, "node1", "127.0.0.1", port)
            try:
                return await asyncio.wait_for(reader.read(), TIMEOUT)
            finally:
                writer.close()
                await finished.get()

    assert asyncio.run(scenario()) == b"hello node2\n"
    assert [peer.node for peer in greeter.peers] == ["node2"]
    assert greeter.peers[0].address.startswith("127.0.0.1:")


@pytest.mark.parametrize("shows", ["another CA's certificate", "no certificate"])
def test_a_client_without_a_cluster_certificate_gets_nothing(
    shows: str, cluster: tuple[Identity, Authority], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node1, _ = cluster
    foreign = init_cluster(tmp_path / "foreign", "node2", "elsewhere") if shows.startswith("another") else None
    greeter = Greeter()
    caplog.set_level(logging.WARNING, logger="hakeeper.comm")

    async def scenario() -> bytes:
        async with serving(node1, greeter) as (port, finished):
            received = await attempt(port, impostor_context(node1, foreign))
            await asyncio.wait_for(finished.get(), TIMEOUT)
            return received

    assert asyncio.run(scenario()) == b""
    assert greeter.peers == []
    [line] = [r.getMessage() for r in caplog.records if r.name == "hakeeper.comm.tls" and r.levelno >= logging.WARNING]
    assert line.startswith("refused TLS connection from 127.0.0.1:")
    expected = "certificate verify failed" if foreign else "peer did not return a certificate"
    assert expected in line


def test_a_client_of_another_cluster_refuses_the_server(
    cluster: tuple[Identity, Authority], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node1, _ = cluster
    foreign = init_cluster(tmp_path / "foreign", "node2", "elsewhere")
    greeter = Greeter()
    caplog.set_level(logging.WARNING, logger="hakeeper.comm")

    async def scenario() -> None:
        async with serving(node1, greeter) as (port, finished):
            with pytest.raises(PeerRefused, match="certificate verify failed"):
                await open_connection(foreign, "node1", "127.0.0.1", port)
            await asyncio.wait_for(finished.get(), TIMEOUT)

    asyncio.run(scenario())
    assert greeter.peers == []
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("refused TLS connection to 127.0.0.1:") for line in lines), lines
    assert any(line.startswith("refused TLS connection from 127.0.0.1:") for line in lines), lines


def test_a_client_checks_it_reached_the_node_it_meant(
    cluster: tuple[Identity, Authority], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node1, authority = cluster
    node2 = add_node(authority, tmp_path / "node2", "node2")
    caplog.set_level(logging.WARNING, logger="hakeeper.comm")

    async def scenario() -> None:
        async with serving(node1, Greeter()) as (port, finished):
            with pytest.raises(PeerRefused, match="is node 'node1', not 'node3'"):
                await open_connection(node2, "node3", "127.0.0.1", port)
            await asyncio.wait_for(finished.get(), TIMEOUT)

    asyncio.run(scenario())
    assert any("refused TLS connection to 127.0.0.1:" in r.getMessage() for r in caplog.records)


def test_nobody_listening_is_a_communication_failure(cluster: tuple[Identity, Authority]) -> None:
    node1, _ = cluster

    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await open_connection(node1, "node1", "127.0.0.1", port)

    with pytest.raises(Exception, match="cannot reach node 'node1'") as failed:
        asyncio.run(scenario())
    assert failed.value.__class__.__name__ == "CommunicationFailed"
