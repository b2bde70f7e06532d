"""Joining a node to the cluster over real TLS on 127.0.0.1: the member's join service and the joiner.

A good token gets the new node a certificate of the cluster CA in its name; a
wrong, used or expired token gets nothing (and the member logs why); a joiner
whose token names another cluster's CA refuses the member before it sends its
secret; and the command line does the same with ``serve-join`` as a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import select
import signal
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from hakeeper.cli.base import run
from hakeeper.comm.frames import read_frame, write_frame
from hakeeper.comm.identity import (
    CA_CERT,
    NODE_CERT,
    NODE_KEY,
    Identity,
    cluster_dir,
    init_cluster,
    load_authority,
    load_identity,
)
from hakeeper.comm.join import (
    MAX_FRAME,
    JoinService,
    Token,
    TokenRefused,
    TokenStore,
    WrongCluster,
    join,
)
from hakeeper.comm.pki import cert_pem
from hakeeper.comm.tls import Peer, accept_tls, open_connection
from hakeeper.db import Lcd
from hakeeper.errors import CommunicationFailed, HakeeperError
from tests.conftest import Result
from tests.ports import tracked_server

OK, EXISTS, ILLEGAL, COMM = 0, 4, 5, 9
TIMEOUT = 10.0
BIN = Path(sys.executable).parent


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


class Member:
    """node1, first node of cluster 'prod', with a join service (not yet listening) and a settable clock."""

    def __init__(self, root: Path, cluster: str = "prod") -> None:
        self.root = root
        self.identity = init_cluster(root, "node1", cluster)
        self.clock = Clock()
        self.tokens = TokenStore(self.identity.directory, clock=self.clock)
        self.joined: list[str] = []
        self.service = JoinService(
            self.identity, load_authority(root), self.tokens, on_join=self.joined.append, timeout=TIMEOUT
        )

    def token(self, ttl: float = 600) -> Token:
        return self.tokens.create(self.identity.fingerprint, ttl)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[tuple[int, asyncio.Queue[None]]]:
        """Listen on 127.0.0.1; the queue gets an item when a connection is over."""
        async with tracked_server(self.service.handle) as served:
            yield served


@pytest.fixture
def member(tmp_path: Path) -> Member:
    return Member(tmp_path / "node1")


def new_node(tmp_path: Path, name: str, directory: str | None = None) -> Path:
    root = tmp_path / (directory or name)
    Lcd.open(root, node=name).close()
    return root


def join_through(member: Member, root: Path, node: str, token: Token) -> Identity:
    """``node`` (state directory ``root``) joins through ``member``; raises what the joiner raises."""

    async def scenario() -> Identity:
        async with member.serving() as (port, finished):
            try:
                return await join(root, node, token, "127.0.0.1", port, timeout=TIMEOUT)
            finally:
                await asyncio.wait_for(finished.get(), TIMEOUT)

    return asyncio.run(scenario())


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("hakeeper")]


# ---------------------------------------------------------------------- the join service and the joiner


def test_a_good_token_gets_a_certificate_of_the_cluster(
    member: Member, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hakeeper")
    root = new_node(tmp_path, "node2")
    token = member.token()
    identity = join_through(member, root, "node2", token)

    directory = cluster_dir(root)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {
        CA_CERT: 0o600,
        NODE_CERT: 0o600,
        NODE_KEY: 0o600,
    }  # and no CA key: only the first node admits others
    cert = x509.load_pem_x509_certificate((directory / NODE_CERT).read_bytes())
    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    assert ca == member.identity.ca
    cert.verify_directly_issued_by(member.identity.ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node2"
    assert (identity.node, identity.cluster) == ("node2", "prod")
    assert member.joined == ["node2"]
    [info] = member.tokens.tokens()
    assert (info.id, info.node) == (token.id, "node2")
    assert any(r.getMessage().startswith("admitted node node2 from 127.0.0.1:") for r in caplog.records)
    assert token.secret not in caplog.text

    # The new node and the member now talk over mutual TLS, each knowing the other by name.
    peers: list[Peer] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
        peers.append(peer)
        writer.write(b"welcome\n")
        await writer.drain()

    async def talk() -> bytes:
        server = await asyncio.start_server(accept_tls(member.identity, handler), "127.0.0.1", 0)
        try:
            reader, writer = await open_connection(identity, "node1", "127.0.0.1", server.sockets[0].getsockname()[1])
            try:
                return await asyncio.wait_for(reader.readline(), TIMEOUT)
            finally:
                writer.close()
                await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(talk()) == b"welcome\n"
    assert [peer.node for peer in peers] == ["node2"]


def _wrong_secret(token: Token) -> Token:
    return Token(token.id, "a" * 32 if token.secret != "a" * 32 else "b" * 32, token.fingerprint)


@pytest.mark.parametrize("case", ["wrong secret", "unknown token", "used", "expired"])
def test_a_bad_token_gets_nothing(case: str, member: Member, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hakeeper")
    token = member.token(ttl=60)
    if case == "wrong secret":
        offered, logged, told = _wrong_secret(token), "wrong secret", "unknown token"
    elif case == "unknown token":
        offered, logged, told = Token("zzzzzz", token.secret, token.fingerprint), "unknown token", "unknown token"
    elif case == "used":
        join_through(member, new_node(tmp_path, "node3"), "node3", token)
        offered, logged, told = token, "used already (by node3", "token used already"
    else:
        member.clock.now += 60
        offered, logged, told = token, "expired", "token expired"
    root = new_node(tmp_path, "node2")
    with pytest.raises(TokenRefused, match=told) as refused:
        join_through(member, root, "node2", offered)
    assert refused.value.exit_code == ILLEGAL
    assert not cluster_dir(root).exists()  # nothing issued, nothing installed
    assert "node2" not in member.joined
    [line] = [w for w in warnings_of(caplog) if w.startswith("join from")]
    assert f"token {offered.id}: " in line
    assert logged in line
    assert line.endswith("nothing issued")
    assert token.secret not in caplog.text
    if case in ("wrong secret", "unknown token"):  # the real token is still good
        join_through(member, root, "node2", token)
        assert member.joined == ["node2"]


def test_a_joiner_refuses_a_member_of_another_cluster(
    member: Member, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The token pins prod's CA; a member of another cluster never sees the secret."""
    caplog.set_level(logging.INFO, logger="hakeeper")
    other = Member(tmp_path / "other-node1", cluster="other")
    token = member.token()  # valid at prod's member
    root = new_node(tmp_path, "node2")
    caplog.clear()
    with pytest.raises(WrongCluster, match="another cluster") as refused:
        join_through(other, root, "node2", token)
    assert refused.value.exit_code == COMM
    assert not cluster_dir(root).exists()
    assert other.joined == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("hung up after the greeting" in m for m in messages), messages
    assert not any(token.id in m for m in messages), "the other member learnt of the token"
    assert any(m.startswith("refused member 127.0.0.1:") for m in messages)
    join_through(member, root, "node2", token)  # the token was not spent
    assert member.joined == ["node2"]


def test_a_joiner_refuses_a_server_that_only_relays_the_ca(member: Member, tmp_path: Path) -> None:
    """Someone in between can send prod's CA certificate, but cannot show a certificate it signed."""
    impostor = init_cluster(tmp_path / "impostor", "node1", "prod")  # same names, its own CA
    received: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await write_frame(
            writer, {"hakeeper": "join", "version": 1, "ca": cert_pem(member.identity.ca).decode()}, MAX_FRAME
        )
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            received.append(await reader.read())
        writer.close()

    async def scenario() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(impostor.cert_path, impostor.key_path)
        server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
        try:
            port = server.sockets[0].getsockname()[1]
            await join(new_node(tmp_path, "node2"), "node2", member.token(), "127.0.0.1", port, timeout=TIMEOUT)
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(WrongCluster, match="not a member of the token's cluster"):
        asyncio.run(scenario())
    assert received in ([], [b""])  # the joiner hung up without sending anything


def test_the_member_refuses_its_own_name_and_keeps_the_token(member: Member, tmp_path: Path) -> None:
    token = member.token()
    root = new_node(tmp_path, "node1", "twin")
    with pytest.raises(HakeeperError, match="this member's own"):
        join_through(member, root, "node1", token)
    assert not cluster_dir(root).exists()
    [info] = member.tokens.tokens()
    assert info.used is None


def test_a_token_bound_to_a_node_admits_only_that_node(
    member: Member, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = member.tokens.create(member.identity.fingerprint, 600, node="node3")
    root = new_node(tmp_path, "node4")
    with pytest.raises(TokenRefused, match="token is for node node3, not node4") as refused:
        join_through(member, root, "node4", token)
    assert "hakeeper cluster token --node node4" in str(refused.value)
    assert not cluster_dir(root).exists(), "nothing issued, nothing installed"
    assert any("token is for node node3, not node4; nothing issued" in line for line in warnings_of(caplog))
    [info] = member.tokens.tokens()
    assert info.used is None, "the refused join did not spend the token"
    identity = join_through(member, new_node(tmp_path, "node3"), "node3", token)
    assert identity.node == "node3" and member.joined == ["node3"]


def test_malformed_frames_are_refused_and_the_service_goes_on(
    member: Member, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hakeeper")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE

    async def send(port: int, payload: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        try:
            await read_frame(reader, MAX_FRAME)  # the greeting
            writer.write(payload)
            await writer.drain()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await asyncio.wait_for(reader.read(), TIMEOUT)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    root = new_node(tmp_path, "node2")

    async def scenario() -> Identity:
        async with member.serving() as (port, finished):
            for payload in (
                (1 << 30).to_bytes(4, "big"),  # oversized
                (5).to_bytes(4, "big") + b"[1,2]",  # not an object
                (2).to_bytes(4, "big") + b"{}",  # no token
                (1).to_bytes(4, "big") + b"{",  # not JSON
            ):
                await send(port, payload)
                await asyncio.wait_for(finished.get(), TIMEOUT)
            try:
                return await join(root, "node2", member.token(), "127.0.0.1", port, timeout=TIMEOUT)
            finally:
                await asyncio.wait_for(finished.get(), TIMEOUT)

    assert asyncio.run(scenario()).node == "node2"
    refusals = [w for w in warnings_of(caplog) if w.startswith("join from")]
    assert len(refusals) == 4, refusals
    assert "larger than" in refusals[0]
    assert all("refused" in line and line.endswith("nothing issued") for line in refusals)


def test_both_sides_are_bounded_in_time(member: Member, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A joiner that says nothing is dropped by the member; a member that says nothing fails the join."""
    member.service.timeout = 0.3
    caplog.set_level(logging.INFO, logger="hakeeper")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE

    async def silent_joiner() -> None:
        async with member.serving() as (port, finished):
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            await asyncio.wait_for(finished.get(), TIMEOUT)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    asyncio.run(silent_joiner())
    assert any("no complete request within 0.3 s" in w for w in warnings_of(caplog))

    async def silent_member() -> None:
        done = asyncio.Event()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read()  # until the joiner gives up
            finally:
                writer.close()
                done.set()

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            await join(new_node(tmp_path, "node2"), "node2", member.token(), "127.0.0.1", port, timeout=0.3)
        finally:
            server.close()
            await server.wait_closed()
            await asyncio.wait_for(done.wait(), TIMEOUT)

    with pytest.raises(CommunicationFailed, match=r"did not answer within 0\.3 s"):
        asyncio.run(silent_member())


# ---------------------------------------------------------------------- the commands


def cluster_cli(root: Path, *argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = run("cluster", list(argv), root=str(root), out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def serve_join(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str], int]]:
    """``hakeeper cluster serve-join`` on a fresh member, as a real process on 127.0.0.1; its port."""
    root = new_node(tmp_path, "node1")
    assert cluster_cli(root, "init", "--name", "prod").code == OK
    proc = subprocess.Popen(
        [BIN / "hakeeper", "--root", str(root), "cluster", "serve-join", "--listen", "127.0.0.1:0", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, "serve-join did not start"
        line = proc.stdout.readline()
        assert line.startswith("serving joins to cluster prod on 127.0.0.1:"), line
        yield root, proc, int(line.split("127.0.0.1:")[1].split()[0])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_the_commands_join_a_node(serve_join: tuple[Path, subprocess.Popen[str], int], tmp_path: Path) -> None:
    member_root, proc, port = serve_join
    token = cluster_cli(member_root, "token", "--ttl", "300")
    assert token.code == OK, token.err
    secret = token.out.split(".")[2]

    node2 = new_node(tmp_path, "node2")
    joined = cluster_cli(node2, "join", "--token", token.out.strip(), f"127.0.0.1:{port}")
    assert joined == Result(OK, joined.out, ""), joined.err
    assert joined.out.startswith("node2 joined cluster prod")
    identity = load_identity(node2)
    assert identity.fingerprint == load_identity(member_root).fingerprint
    assert identity.node == "node2"

    node3 = new_node(tmp_path, "node3")
    again = cluster_cli(node3, "join", "--token", token.out.strip(), f"127.0.0.1:{port}")
    assert again.code == ILLEGAL
    assert again.out == ""
    assert "token used already" in again.err
    assert again.err.count("\n") == 1
    assert not cluster_dir(node3).exists()

    twice = cluster_cli(node2, "join", "--token", token.out.strip(), f"127.0.0.1:{port}")
    assert twice.code == EXISTS

    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert "node2 joined" in out
    assert "admitted node node2" in err
    assert "used already (by node2" in err
    assert secret not in out + err


def test_join_command_errors(tmp_path: Path) -> None:
    member = Member(tmp_path / "node1")
    token = member.token().text()
    node2 = new_node(tmp_path, "node2")
    nobody = cluster_cli(node2, "join", "--token", token, "127.0.0.1:1")
    assert nobody.code == COMM
    assert "127.0.0.1:1" in nobody.err
    bad = cluster_cli(node2, "join", "--token", token[:-1], "127.0.0.1")
    assert bad.code == ILLEGAL
    assert token[:-1] not in bad.err
    assert cluster_cli(node2, "join", "127.0.0.1").code == 2  # no token
    assert cluster_cli(node2, "join", "--token", token).code == 2  # no address
    assert cluster_cli(node2, "join", "--token", token, "127.0.0.1", "--timeout", "0").code == 6
    assert not cluster_dir(node2).exists()


def test_join_reads_the_token_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--token -`` keeps the secret out of the process list; what it reads is checked the same."""
    member = Member(tmp_path / "node1")
    node2 = new_node(tmp_path, "node2")
    monkeypatch.setattr(sys, "stdin", io.StringIO("not a token\n"))
    assert cluster_cli(node2, "join", "--token", "-", "127.0.0.1:1").code == ILLEGAL
    monkeypatch.setattr(sys, "stdin", io.StringIO(member.token().text() + "\n"))
    assert cluster_cli(node2, "join", "--token", "-", "127.0.0.1:1").code == COMM  # read, then nobody listens
