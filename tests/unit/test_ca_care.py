"""The care of the cluster CA: its key moved or kept offline, renewal warnings, revocation, bound tokens.

What a user relies on: the CA key leaves a node only into a new private file and
comes back only if it is this cluster's; a node without it says so; a revoked
node's certificates are refused by name and issue time (a later one of the same
name is not), in the TLS handshake, logged like a foreign CA; revocation lists
merge to the same list in any order; a token made for one node admits no other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from hakeeper.comm.identity import CA_KEY, Identity, init_cluster, load_authority, load_identity, replace_certificate
from hakeeper.comm.join import TokenRefused, TokenStore, public_reason
from hakeeper.comm.pki import Authority, PeerRefused, cert_pem, expiry_warning, issued_at, key_pem, new_key
from hakeeper.comm.revocation import REVOKED_FILE, Revocation, Revocations, load_revocations, merge_revocations
from hakeeper.comm.tls import accept_tls, open_connection, peer_certificate
from hakeeper.lab.cluster import add_node
from tests.conftest import Cli
from tests.ports import tracked_server
from tests.unit.test_tls import Greeter, attempt, impostor_context

OK, SYSCALL, SYNTAX, INTERNAL, EXISTS, ILLEGAL, RANGE, MISSING = range(8)
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
TIMEOUT = 5.0


def public_key(identity: Identity) -> ec.EllipticCurvePublicKey:
    key = identity.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Identity, Authority]:
    root = tmp_path / "node1"
    identity = init_cluster(root, "node1", "prod")
    return identity, load_authority(root)


# ---------------------------------------------------------------------- revocation lists (pure)


def test_a_revocation_covers_the_certificates_issued_until_then_and_no_later_one(
    cluster: tuple[Identity, Authority],
) -> None:
    _, authority = cluster
    key = new_key().public_key()
    old = authority.issue("node3", key, now=T0)
    renewed = authority.issue("node3", key, now=T0 + dt.timedelta(days=30))
    readmitted = authority.issue("node3", key, now=T0 + dt.timedelta(days=60))
    other = authority.issue("node2", key, now=T0)
    assert issued_at(old) == T0.replace(microsecond=0)
    revoked = Revocations().revoke("node3", (T0 + dt.timedelta(days=45)).timestamp(), "node1")
    why = revoked.refusal(old)
    assert why == "node node3's certificate was revoked by node1 at 2030-02-15 00:00:00 UTC"
    assert revoked.refusal(renewed) == why, "a renewal the revoking member never saw is covered too"
    assert revoked.refusal(readmitted) is None, "a node of that name admitted again later is not"
    assert revoked.refusal(other) is None


Entries = dict[str, tuple[int, str]]
entries = st.dictionaries(
    st.sampled_from(["node2", "node3", "node4"]),
    st.tuples(st.integers(0, 10**9), st.sampled_from(["node1", "node2"])),
    max_size=3,
)


@given(a=entries, b=entries, c=entries)
def test_lists_merge_to_the_same_list_in_any_order(a: Entries, b: Entries, c: Entries) -> None:
    lists = [Revocations({n: Revocation(n, float(t), by) for n, (t, by) in x.items()}) for x in (a, b, c)]
    x, y, z = lists
    assert x.merge(y).merge(z).as_json()["nodes"].keys() == z.merge(x).merge(y).as_json()["nodes"].keys()
    assert {n: e.revoked for n, e in x.merge(y).merge(z).entries.items()} == {
        n: e.revoked for n, e in y.merge(z).merge(x).entries.items()
    }
    assert x.merge(x) == x
    for node, entry in x.merge(y).entries.items():  # the later revocation wins: it covers more
        assert entry.revoked == max(e.entries[node].revoked for e in (x, y) if node in e.entries)


@pytest.mark.parametrize(
    "data", [None, {"nodes": []}, {"nodes": {"bad name!": {"revoked": 1}}}, {"nodes": {"node3": {"revoked": "x"}}}]
)
def test_a_malformed_list_is_refused(data: object) -> None:
    with pytest.raises(ValueError):
        Revocations.from_json(data)


def test_the_list_file_is_private_merged_atomically_and_a_damaged_one_is_an_error(
    cluster: tuple[Identity, Authority],
) -> None:
    identity, _ = cluster
    assert not load_revocations(identity.directory)
    listed, changed = merge_revocations(identity.directory, Revocations().revoke("node3", 100.0, "node1"))
    assert changed and set(listed.entries) == {"node3"}
    assert merge_revocations(identity.directory, Revocations().revoke("node3", 50.0, "node2")) == (listed, False)
    path = identity.directory / REVOKED_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_revocations(identity.directory) == listed
    path.write_text("{not json")
    with pytest.raises(Exception, match="is damaged"):
        load_revocations(identity.directory)


# ---------------------------------------------------------------------- revocation in the TLS handshake


def test_a_revoked_node_is_refused_both_ways_and_logged(
    cluster: tuple[Identity, Authority], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node1, authority = cluster
    node3 = add_node(authority, tmp_path / "node3", "node3")
    node2 = add_node(authority, tmp_path / "node2", "node2")
    revoked = Revocations().revoke("node3", issued_at(node3.certificate).timestamp() + 1, "node1").refusal
    greeter = Greeter()
    caplog.set_level(logging.WARNING, logger="hakeeper.comm")

    async def scenario() -> tuple[bytes, bytes]:
        async with tracked_server(accept_tls(node1, greeter, revoked=revoked)) as (port, finished):
            refused = await attempt(port, impostor_context(node1, node3))
            await asyncio.wait_for(finished.get(), TIMEOUT)
            served = await attempt(port, impostor_context(node1, node2))
            await asyncio.wait_for(finished.get(), TIMEOUT)
        async with tracked_server(accept_tls(node3, Greeter())) as (port, finished):
            with pytest.raises(PeerRefused, match="node node3's certificate was revoked by node1"):
                await open_connection(node1, "node3", "127.0.0.1", port, revoked=revoked)
        return refused, served

    refused, served = asyncio.run(scenario())
    assert refused == b"" and served == b"hello node2\n"
    assert [p.node for p in greeter.peers] == ["node2"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        line.startswith("refused TLS connection from 127.0.0.1:") and "node node3's certificate was revoked" in line
        for line in lines
    ), lines
    assert any(line.startswith("refused TLS connection to 127.0.0.1:") for line in lines), lines


def test_a_renewed_certificate_is_shown_from_the_next_connection_on(
    cluster: tuple[Identity, Authority], tmp_path: Path
) -> None:
    node1, authority = cluster
    node2 = add_node(authority, tmp_path / "node2", "node2")
    renewed = authority.issue("node1", public_key(node1))

    async def serial_seen(port: int) -> int:
        reader, writer = await open_connection(node2, "node1", "127.0.0.1", port)
        try:
            await asyncio.wait_for(reader.read(), TIMEOUT)
            return peer_certificate(writer.get_extra_info("ssl_object")).serial_number
        finally:
            writer.close()

    async def scenario() -> tuple[int, int]:
        acceptor = accept_tls(node1, Greeter())
        async with tracked_server(acceptor) as (port, _finished):
            before = await serial_seen(port)
            replace_certificate(node1, renewed)
            acceptor.reload()
            return before, await serial_seen(port)

    assert asyncio.run(scenario()) == (node1.certificate.serial_number, renewed.serial_number)
    assert load_identity(tmp_path / "node1").certificate == renewed


def test_a_certificate_for_another_key_or_node_is_never_installed(
    cluster: tuple[Identity, Authority], tmp_path: Path
) -> None:
    node1, authority = cluster
    before = node1.cert_path.read_bytes()
    with pytest.raises(Exception, match="not for this node's key"):
        replace_certificate(node1, authority.issue("node1", new_key().public_key()))
    with pytest.raises(Exception, match="names 'node2'"):
        replace_certificate(node1, authority.issue("node2", public_key(node1)))
    assert node1.cert_path.read_bytes() == before


# ---------------------------------------------------------------------- expiry


def test_expiry_warns_within_the_window_only(cluster: tuple[Identity, Authority]) -> None:
    _, authority = cluster
    cert = authority.issue("node2", new_key().public_key(), now=T0)
    end = cert.not_valid_after_utc
    assert expiry_warning(cert, end - dt.timedelta(days=31), 30) is None
    soon = expiry_warning(cert, end - dt.timedelta(days=12, hours=1), 30)
    assert soon is not None and soon.startswith("this node's certificate expires in 12 days (")
    assert soon.endswith("renew it (hakeeper cluster renew)")
    late = expiry_warning(cert, end + dt.timedelta(seconds=1), 30)
    assert late is not None and "expired" in late and "join again" in late


# ---------------------------------------------------------------------- tokens bound to a node name


def test_a_bound_token_admits_only_its_node_and_is_kept_for_it(cluster: tuple[Identity, Authority]) -> None:
    identity, _ = cluster
    store = TokenStore(identity.directory)
    token = store.create(identity.fingerprint, 3600, node="node3")
    with pytest.raises(TokenRefused, match="token is for node node3, not node4") as refused:
        store.check(token.id, token.secret, "node4")
    assert public_reason(refused.value) == "token is for node node3, not node4"
    with pytest.raises(TokenRefused):
        store.consume(token.id, token.secret, "node4")
    store.consume(token.id, token.secret, "node3")  # still unused after the refusal
    [info] = store.tokens()
    assert (info.node, info.bound) == ("node3", "node3")
    free = store.create(identity.fingerprint, 3600)
    store.consume(free.id, free.secret, "anyname")  # unbound tokens work as before
    entry = json.loads((identity.directory / "tokens.json").read_text())["tokens"][token.id]
    assert entry["for"] == "node3" and token.secret not in json.dumps(entry)


def test_the_token_command_binds_and_show_says_so(cli: Cli, root: Path) -> None:
    assert cli("cluster", "init").code == OK
    made = cli("cluster", "token", "--node", "node3")
    assert made.code == OK, made.err
    assert "(for node node3 only)" in cli("cluster", "show").out
    own = cli("cluster", "token", "--node", "node1")
    assert (own.code, own.out) == (ILLEGAL, "")
    assert "this member's own name" in own.err
    bad = cli("cluster", "token", "--node", "no such")
    assert bad.code == ILLEGAL and bad.err.count("\n") == 1
    wrong = cli("cluster", "show", "--node", "node3")
    assert wrong.code == SYNTAX and "--node does not go with 'cluster show'" in wrong.err
    two = cli("cluster", "token", "--node", "node2", "--node", "node4")
    assert two.code == OK, two.err
    lines = [line.split(" ") for line in two.out.splitlines()]
    assert [name for name, _token in lines] == ["node2", "node4"] and lines[0][1] != lines[1][1]
    shown = cli("cluster", "show").out
    assert "(for node node2 only)" in shown and "(for node node4 only)" in shown
    twice = cli("cluster", "token", "--node", "node2", "--node", "node2")
    assert (twice.code, twice.out) == (ILLEGAL, "") and "given twice" in twice.err


# ---------------------------------------------------------------------- the CA key: export, import, remove


def test_the_ca_key_moves_to_another_member_and_off_this_one(cli: Cli, root: Path, tmp_path: Path) -> None:
    assert cli("cluster", "init").code == OK
    exported = tmp_path / "offline" / "ca.key"
    exported.parent.mkdir()
    done = cli("cluster", "ca", "export", str(exported))
    assert done.code == OK, done.err
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert exported.read_bytes() == (root / "cluster" / CA_KEY).read_bytes()
    again = cli("cluster", "ca", "export", str(exported))
    assert again.code == EXISTS and "exists already" in again.err
    # node2 (no CA key) imports it and makes tokens; node1 forgets it and cannot any more.
    node2 = tmp_path / "node2"
    add_node(load_authority(root), node2, "node2")
    assert cli("cluster", "token", "--root", str(node2)).code == MISSING
    imported = cli("cluster", "ca", "import", str(exported), "--root", str(node2))
    assert imported.code == OK, imported.err
    assert "node2 now holds the CA key of cluster hakeeper" in imported.out
    assert cli("cluster", "token", "--root", str(node2)).code == OK
    assert "holds this CA key already" in cli("cluster", "ca", "import", str(exported), "--root", str(node2)).out
    removed = cli("cluster", "ca", "remove")
    assert removed.code == OK and "no longer makes tokens" in removed.out and "keep a copy" in removed.err
    refused = cli("cluster", "token")
    assert refused.code == MISSING
    assert "does not hold the cluster CA key" in refused.err and "ca import" in refused.err
    assert cli("cluster", "ca", "remove").code == MISSING
    assert "CA key       not here" in cli("cluster", "show").out


def test_a_foreign_or_broken_key_is_refused_and_nothing_changes(cli: Cli, root: Path, tmp_path: Path) -> None:
    assert cli("cluster", "init").code == OK
    before = (root / "cluster" / CA_KEY).read_bytes()
    node2 = tmp_path / "node2"
    add_node(load_authority(root), node2, "node2")
    foreign = tmp_path / "foreign.key"
    foreign.write_bytes(key_pem(new_key()))
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    node_cert = tmp_path / "cert.pem"
    node_cert.write_bytes(cert_pem(load_identity(node2).certificate))
    for path, why in ((foreign, "is not the key of this cluster's CA"), (garbage, "not an unencrypted PEM private key"),
                      (node_cert, "not an unencrypted PEM private key")):  # fmt: skip
        result = cli("cluster", "ca", "import", str(path), "--root", str(node2))
        assert (result.code, result.out) == (ILLEGAL, ""), result.err
        assert why in result.err and result.err.count("\n") == 1
        assert not (node2 / "cluster" / CA_KEY).exists()
    assert cli("cluster", "ca", "import", str(tmp_path / "nothing"), "--root", str(node2)).code == MISSING
    assert (root / "cluster" / CA_KEY).read_bytes() == before
    for argv, code in ((["ca"], SYNTAX), (["ca", "steal"], SYNTAX), (["ca", "export"], SYNTAX),
                       (["ca", "remove", "x"], SYNTAX), (["revoke"], SYNTAX), (["join"], SYNTAX),
                       (["show", "extra"], SYNTAX)):  # fmt: skip
        result = cli("cluster", *argv)
        assert result.code == code, (argv, result.err)
        assert result.err.count("\n") == 1


# ---------------------------------------------------------------------- revoke by hand (no hakeeperd here)


def test_revoke_records_the_node_and_says_the_others_learn_it_later(cli: Cli, root: Path) -> None:
    assert cli("cluster", "init").code == OK
    own = cli("cluster", "revoke", "node1")
    assert own.code == ILLEGAL and "revoke it from another member" in own.err
    assert cli("sys_create", "-s", "node3").code == OK
    done = cli("cluster", "revoke", "node3")
    assert done.code == OK, done.err
    assert done.out.startswith("node node3's certificate was revoked by node1 at ")
    assert "hakeeperd is not running here: the other members learn it when it starts" in done.out
    assert "still a node of this LCD" in done.err
    assert set(load_revocations(root / "cluster").entries) == {"node3"}
    assert "revoked      node3: node node3's certificate was revoked" in cli("cluster", "show").out
