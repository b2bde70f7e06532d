"""A joining node is registered on every member, with paths on every network, idempotently (issue 13 item 5).

The rules (which addresses pair), the LCD's ``register_node`` (both ends of a path,
the witness role, a retry that changes nothing), the replication (every other member
is told, the joiner is not told of itself; without hakeeperd the change waits in
the outbox), and what ``sys_list`` shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cli.members import members, write_members
from hakeeper.cluster.configsync import participants
from hakeeper.comm.announce import global_addresses
from hakeeper.db import Lcd
from hakeeper.db.members import pair, parse_announced
from hakeeper.errors import IllegalArgument
from tests.conftest import Cli

N1 = ["198.18.0.11/24", "198.18.1.11/24"]
N2 = ["198.18.0.12/24", "198.18.1.12/24"]
N3 = ["198.18.0.13/24", "198.18.1.13/24"]


def test_addresses_pair_by_network_in_the_announced_order() -> None:
    assert pair(N1, list(reversed(N2))) == [("198.18.1.11", "198.18.1.12"), ("198.18.0.11", "198.18.0.12")]
    assert pair(["198.18.0.11", "198.18.1.11"], N3) == [("198.18.0.11", "198.18.0.13"), ("198.18.1.11", "198.18.1.13")]
    assert pair(N1, ["198.18.0.13"]) == [("198.18.0.11", "198.18.0.13")], "the own prefix decides when theirs lacks one"
    assert pair(["198.18.0.11"], ["198.18.0.13"]) == [], "no prefix on either side: no network known"
    assert pair(["198.18.2.11/24", "10.0.0.1/8"], N3) == [], "no shared network: no path"
    assert pair(["198.18.0.11/24", "198.18.0.50/24"], N3[:1]) == [("198.18.0.11", "198.18.0.13")], "one per network"
    assert parse_announced(" 2001:2:0:0::13/64 ") == "2001:2::13/64"
    with pytest.raises(IllegalArgument):
        parse_announced("node3")


def test_announced_addresses_are_the_global_primary_ones() -> None:
    sample: list[dict[str, Any]] = [
        {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [{"family": "inet", "local": "127.0.0.1",
                                                                      "prefixlen": 8, "scope": "host"}]},
        {"ifname": "eth0", "flags": ["UP"], "addr_info": [
            {"family": "inet6", "local": "2001:2::13", "prefixlen": 64, "scope": "global"},
            {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
            {"family": "inet", "local": "198.18.0.13", "prefixlen": 24, "scope": "global"},
            {"family": "inet", "local": "198.18.0.50", "prefixlen": 24, "scope": "global", "secondary": True},
        ]},
        {"ifname": "eth1", "flags": ["UP"], "addr_info": [{"family": "inet", "local": "198.18.1.13",
                                                            "prefixlen": 24, "scope": "global"}]},
    ]  # fmt: skip
    assert global_addresses(sample) == ["198.18.0.13/24", "198.18.1.13/24", "2001:2::13/64"]


def _paths(lcd: Lcd, node: str) -> list[tuple[str, str, int]]:
    return [(p.local, p.remote, p.priority) for p in lcd.paths(node)]


def test_register_node_makes_the_node_and_a_path_per_network_and_a_retry_changes_nothing(lcd: Lcd) -> None:
    created = lcd.register_node("node3", N3, {"node1": N1}, witness=True)
    assert [(p.local, p.remote, p.priority) for p in created] == _paths(lcd, "node3")
    assert _paths(lcd, "node3") == [("198.18.0.11", "198.18.0.13", 1), ("198.18.1.11", "198.18.1.13", 2)]
    assert lcd.witnesses() == ["node3"]
    assert lcd.register_node("node3", N3, {"node1": N1}, witness=True) == [], "a retry creates nothing"
    assert len(lcd.paths("node3")) == 2
    assert [n.name for n in lcd.nodes()] == ["node1", "node3"]
    assert lcd.register_node("node1", N1, {"node3": N3}) == [], "registering this node itself changes nothing"
    assert lcd.paths("node1") == []
    lcd.register_node("node3", N3, {"node1": N1}, witness=False)
    assert lcd.witnesses() == [], "the latest registration says the role"


def test_a_member_pairs_its_own_path_addresses_when_the_change_names_only_the_coordinators(lcd: Lcd) -> None:
    """node2 (this LCD, with a path to node1 on each network) replays node1's registration of node3."""
    lcd.register_node("node2", N2, {"node1": N1})
    change = {"node": "node3", "addresses": N3, "known": {"node1": N1}, "witness": False}
    assert lcd.apply_replicated("node1-1-1", "register_node", change, "root via node1#7")
    assert not lcd.apply_replicated("node1-1-1", "register_node", change, "root via node1#7"), "applied once"
    assert _paths(lcd, "node3") == [("198.18.0.11", "198.18.0.13", 1), ("198.18.1.11", "198.18.1.13", 2)]


def test_the_registration_concerns_every_member_but_the_node_itself(lcd: Lcd) -> None:
    lcd.register_node("node2", N2, {"node1": N1})
    lcd.register_node("node3", N3, {"node1": N1})
    assert participants(lcd, "register_node", {"node": "node3"}) == ["node2"]
    assert participants(lcd, "register_node", {"node": "node4"}) == ["node2", "node3"]


def test_without_hakeeperd_the_registration_waits_in_the_outbox_for_the_other_members(cli: Cli, root: Path) -> None:
    assert cli("sys_create", "-s", "node2", "-a", N2[0], "-a", N2[1], "-l", N1[0], "-l", N1[1]).code == 0
    done = cli("sys_create", "-s", "node3", "-a", N3[0], "-a", N3[1], "--witness")
    assert done.code == 0, done.err
    assert "198.18.0.11 -> 198.18.0.13" in done.out
    with Lcd.open(root) as lcd:
        assert lcd.outbox("node3") == [], "the joiner is not told of itself"
        [(_txid, text)] = lcd.outbox("node2")
        message = json.loads(text)
        assert message["op"] == "register_node" and message["args"]["node"] == "node3"
        assert message["args"]["witness"] is True
    again = cli("sys_create", "-s", "node3", "-a", N3[0], "-a", N3[1], "--witness")
    assert (again.code, again.out) == (0, ""), "a retry creates nothing"
    listed = cli("sys_list", "-f:")
    assert listed.out == "node1\nnode2\nnode3:witness\n"
    assert json.loads(cli("sys_list", "--json").out)[2] == {"name": "node3", "local": False, "witness": True}


def test_the_joiner_writes_every_member_from_the_answer(cli: Cli, root: Path, tmp_path: Path) -> None:
    """node1's answer to node3 (node1 knows node2), written into node3's fresh LCD."""
    assert cli("sys_create", "-s", "node2", "-a", N2[0], "-a", N2[1], "-l", N1[0], "-l", N1[1]).code == 0
    assert cli("sys_create", "-s", "node3", "-a", N3[0], "-a", N3[1]).code == 0
    answer = members(root, "node3")
    assert answer == [
        {"node": "node1", "addresses": ["198.18.0.11", "198.18.1.11"], "witness": False},
        {"node": "node2", "addresses": ["198.18.0.12", "198.18.1.12"], "witness": False},
    ]
    with Lcd.open(tmp_path / "node3", node="node3") as lcd:
        said = write_members(lcd, answer, N3, witness=True)
        assert said == [
            "node1: paths 198.18.0.13 -> 198.18.0.11, 198.18.1.13 -> 198.18.1.11",
            "node2: paths 198.18.0.13 -> 198.18.0.12, 198.18.1.13 -> 198.18.1.12",
        ]
        assert write_members(lcd, answer, N3, witness=True) == said, "again: the same, nothing twice"
        assert len(lcd.paths()) == 4
        assert lcd.witnesses() == ["node3"], "its own flag"


def test_sys_create_without_addresses_is_lifekeepers(cli: Cli) -> None:
    assert cli("sys_create", "-s", "node2").code == 0
    assert cli("sys_create", "-s", "node2").code == 4, "exists already"
    assert cli("sys_create", "-s", "node3", "--witness").code == 2, "--witness goes with -a"


def test_why_and_switchover_on_a_witness_without_hakeeperd_explain_themselves(cli: Cli) -> None:
    assert cli("why", "web").code == 7, "not a witness: no resource tagged web, as before"
    assert cli("flg_create", "-f", "witness").code == 0
    why = cli("why", "web")
    assert why.code == 0 and why.out.startswith("node1 is a witness: it runs no hierarchy;"), why
    moved = cli("switchover", "web")
    assert moved.code == 7 and "node1 is a witness: it runs no hierarchy" in moved.err, moved
    assert "no resource tagged" not in moved.err
    assert cli("sys_list", "-f:").out == "node1:witness\n"


def test_a_failed_registration_spends_no_token_and_issues_nothing(tmp_path: Path) -> None:
    from hakeeper.comm.identity import init_cluster, load_authority
    from hakeeper.comm.join import JoinService, TokenRefused, TokenStore
    from hakeeper.comm.pki import make_csr, new_key
    from hakeeper.errors import CommunicationFailed

    identity = init_cluster(tmp_path / "node1", "node1", "prod")
    tokens = TokenStore(identity.directory)
    token = tokens.create(identity.fingerprint)
    calls: list[tuple[str, list[str], bool]] = []
    failing = [True]

    def on_admit(node: str, addresses: list[str], witness: bool) -> list[dict[str, Any]]:
        calls.append((node, addresses, witness))
        if failing[0]:
            raise CommunicationFailed("node2 refused the change")
        return [{"node": "node1", "addresses": ["198.18.0.11"], "witness": False}]

    service = JoinService(identity, load_authority(tmp_path / "node1"), tokens, on_admit=on_admit)
    csr = make_csr("node3", new_key())
    with pytest.raises(CommunicationFailed):
        service._admit(token.id, token.secret, csr, "node3", (N3, True))
    assert tokens.tokens()[0].used is None, "the token stays unused: the join can be tried again"
    failing[0] = False
    cert, found = service._admit(token.id, token.secret, csr, "node3", (N3, True))
    assert found == [{"node": "node1", "addresses": ["198.18.0.11"], "witness": False}]
    assert calls == [("node3", N3, True)] * 2
    assert tokens.tokens()[0].node == "node3"
    with pytest.raises(TokenRefused):
        service._admit(token.id, token.secret, csr, "node3", (N3, True))
    assert len(calls) == 2, "a spent token registers nothing"
    assert cert.subject is not None


def test_net_create_without_hakeeperd_makes_this_end_and_says_what_to_run_there(cli: Cli, root: Path) -> None:
    assert cli("sys_create", "-s", "node2").code == 0
    made = cli("net_create", "-s", "node2", "-l", "198.18.0.11", "-r", "198.18.0.12")
    assert made.code == 0, "the path asked for exists here: LifeKeeper's net_create succeeds"
    assert made.err == (
        "net_create: warning: this end only: node2 did not create its end (hakeeperd does not run here to ask it); "
        "there: net_create -s node1 -l 198.18.0.12 -r 198.18.0.11\n"
    )
    with Lcd.open(root) as lcd:
        assert _paths(lcd, "node2") == [("198.18.0.11", "198.18.0.12", 1)]
    quiet = cli("net_create", "-s", "node2", "-l", "198.18.1.11", "-r", "198.18.1.12", "--local-only")
    assert (quiet.code, quiet.err) == (0, "")


def test_a_node_made_a_witness_by_its_flag_is_told_to_the_members(cli: Cli, root: Path, tmp_path: Path) -> None:
    assert cli("sys_create", "-s", "node2", "-a", N2[0], "-l", N1[0]).code == 0
    assert cli("flg_create", "-f", "witness").code == 0
    assert cli("flg_create", "-f", "witness").code == 4, "as any flag: it exists already"
    assert cli("sys_list", "-f:").out == "node1:witness\nnode2\n"
    with Lcd.open(root) as lcd:
        [(txid, text)] = lcd.outbox("node2")
    message = json.loads(text)
    with Lcd.open(tmp_path / "node2", node="node2") as node2:
        node2.register_node("node1", N1, {"node2": N2})
        assert node2.apply_replicated(txid, message["op"], message["args"], "root via node1#9")
        assert node2.witnesses() == ["node1"]
        assert node2.paths("node1"), "the paths stay"
    assert cli("flg_remove", "-f", "witness").code == 0
    assert cli("flg_test", "-f", "witness").code == 7
    with Lcd.open(root) as lcd:
        assert json.loads(lcd.outbox("node2")[-1][1])["args"]["witness"] is False


def test_cluster_show_lists_the_nodes_with_their_paths_and_the_witness(cli: Cli) -> None:
    assert cli("cluster", "init", "--name", "prod").code == 0
    assert cli("sys_create", "-s", "node2", "-a", N2[0], "-a", N2[1], "-l", N1[0], "-l", N1[1]).code == 0
    assert cli("sys_create", "-s", "node3", "-a", N3[0], "--witness").code == 0
    shown = cli("cluster", "show")
    assert shown.code == 0, shown.err
    lines = [line for line in shown.out.splitlines() if line.startswith("member")]
    assert lines == [
        "member       node1: this node",
        "member       node2: 2 path(s)",
        "member       node3: 1 path(s), witness (counts for quorum, runs no hierarchy)",
    ]


def test_announced_addresses_given_are_checked_and_kept_in_order() -> None:
    from hakeeper.comm.announce import announced

    assert announced(["198.18.1.13/24", "198.18.0.13/24", "198.18.1.13/24"]) == ["198.18.1.13/24", "198.18.0.13/24"]
    with pytest.raises(IllegalArgument):
        announced(["198.18.0.13/33"])


def test_the_configuration_s_listen_addresses_are_announced_with_their_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """[listen] addresses (HOST or HOST:PORT) choose what a join announces, in the file's order."""
    from hakeeper.comm import announce

    monkeypatch.setattr(announce, "interface_addresses", lambda: ["198.18.0.13/24", "198.18.1.13/24", "2001:2::13/64"])
    assert announce.announced(None) == ["198.18.0.13/24", "198.18.1.13/24", "2001:2::13/64"]
    assert announce.announced(None, ["198.18.1.13:7365", "198.18.0.13"]) == ["198.18.1.13/24", "198.18.0.13/24"]
    assert announce.announced(["198.18.0.13/24"], ["198.18.1.13"]) == ["198.18.0.13/24"], "--address wins"
    with pytest.raises(IllegalArgument, match=r"names 198\.18\.2\.13, which no interface here has"):
        announce.announced(None, ["198.18.0.13", "198.18.2.13"])
