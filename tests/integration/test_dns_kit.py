"""The DNS kit (comm/dns) against a real BIND 9 on the test LAN, run by hakeeperd on every node.

named runs in the LAN's client (198.18.0.100), authoritative for ``example.test`` and
``0.18.198.in-addr.arpa``, taking updates signed with one TSIG key (tests/bind.py). The resource
``app-dns`` publishes ``app.example.test``: node1 publishes 198.18.0.11, node2 198.18.0.12. What the
tests check, they ask BIND (dig inside the LAN), not the kit. Every test also checks that the TSIG
secret appears in no daemon log, no ``ins_list`` output and no LCD file, and that the key kept on each
node is mode 0600.
"""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakeeper.db import Lcd, State
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from tests.bind import Bind, reverse_name
from tests.bind import unavailable_reason as bind_unavailable

TAG = "app-dns"
NAME = "app.example.test"
FQDN = NAME + "."
NODE1, NODE2 = "198.18.0.11", "198.18.0.12"
OLD = "198.18.0.99"  # app's address in the zone before any restore
RECORDS = {NAME: "A", reverse_name(NODE1): "PTR", reverse_name(NODE2): "PTR", reverse_name(OLD): "PTR"}
BUDGET = 0.8 + 0.4  # heartbeat_interval x heartbeat_misses + takeover_delay (defaults)
SLACK = 3.0  # polling, process start, the restore's queries and updates, a loaded CI machine


@pytest.fixture
def bind(lan: Lan, tmp_path: Path) -> Iterator[Bind]:
    """named in the client namespace; stopped by PID after the test, also when it fails."""
    reason = bind_unavailable()
    if reason:
        pytest.skip(reason)  # HAKEEPER_REQUIRE_ALL=1 makes it a failure
    server = Bind(lan.client, tmp_path / "bind")
    try:
        server.setup()
        server.start()
        yield server
    finally:
        server.stop()


def state(ha: HaCluster, node: str, tag: str = TAG) -> State:
    with Lcd.open(ha.root(node)) as lcd:
        return lcd.resource(tag).state


def create(ha: HaCluster, bind: Bind, *params: str, interval: int = 120, key: Path | None = None) -> None:
    """app-dns on node1, out of service, extended to node2 (priority 2)."""
    ha.ok("node1", "hakeeper", "create", "comm/dns", "-t", TAG, "-I", "INIT_OSU", "-Q", str(interval),
       "name=app", "zone=example.test", f"servers={bind.address}", f"key={key or bind.key_file}",
       f"addresses=node1={NODE1},node2={NODE2}", *params)  # fmt: skip
    ha.ok("node1", "hakeeper", "extend", "-t", TAG, "-s", "node2", "-p", "2")


def key_copy(ha: HaCluster, node: str) -> Path:
    return ha.root(node) / "subsys" / "comm" / "resources" / "dns" / "instances" / TAG / "tsig.key"


def assert_secret_kept(ha: HaCluster, bind: Bind, *secrets: str) -> None:
    """No secret in the daemons' logs, in ins_list, in the LCD's files; each node's copy of the key is 0600."""
    for secret in (bind.secret, *secrets):
        for node in ha.names:
            assert secret not in ha.log(node), f"the TSIG secret is in {node}'s log"
            listing = ha.command(node, "ins_list")
            assert secret not in listing.stdout + listing.stderr, f"the TSIG secret is in ins_list on {node}"
            for path in ha.root(node).glob("lcd.sqlite*"):
                assert secret.encode() not in path.read_bytes(), f"the TSIG secret is in {path}"
    for node in ("node1", "node2"):
        path = key_copy(ha, node)
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is not mode 0600"
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, f"{path.parent} is not mode 0700"


def published(bind: Bind, address: str) -> bool:
    return bind.query(NAME) == [address] and bind.query(reverse_name(address), "PTR") == [FQDN]


@pytest.mark.slow
def test_restore_publishes_a_and_ptr_and_a_failover_moves_both_to_node2(
    ha_cluster: HaCluster, lan: Lan, bind: Bind
) -> None:
    ha = ha_cluster
    create(ha, bind, "ttl=30")
    assert bind.query(NAME) == [OLD], "creating and extending the resource changes no record"
    listing = ha.ok("node1", "ins_list", "-t", TAG)
    assert '"key_name":"ddns-key"' in listing and '"algorithm":"hmac-sha256"' in listing, listing
    assert key_copy(ha, "node2").read_bytes() == key_copy(ha, "node1").read_bytes(), "extend carried the key"

    out = ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore")
    assert out == f"{TAG} in service on node1\n", out
    assert bind.query(NAME) == [NODE1] and bind.ttl(NAME) == 30
    assert bind.query(reverse_name(NODE1), "PTR") == [FQDN]
    assert bind.query(reverse_name(NODE2), "PTR") == ["node2.example.test."], "node2's own PTR is not node1's"
    assert re.search(rf"{FQDN} A {NODE1}, PTR \S+ published on {bind.address}:53 \(update [\d.]+ ms", ha.log("node1"))
    assert ha.ok("node1", "perform_action", "-t", TAG, "-a", "quickCheck").startswith(f"{TAG} running")
    assert ha.command("node2", "perform_action", "-t", TAG, "-a", "quickCheck").returncode == 7, (
        "node2 has not published"
    )

    start = time.monotonic()
    lan.power_off(lan.node("node1"))
    ha.wait(lambda: published(bind, NODE2), BUDGET + SLACK, "BIND to answer node2's address and PTR", step=0.05)
    moved = time.monotonic() - start
    assert bind.query(reverse_name(NODE1), "PTR") == [], "node2 took node1's PTR to the name away"
    assert state(ha, "node2") is State.ISP
    assert "has the highest live priority (2); restoring app-dns" in ha.log("node2")
    assert ha.ok("node2", "perform_action", "-t", TAG, "-a", "quickCheck").startswith(f"{TAG} running")
    print(f"power-off of node1 -> BIND answers node2's address: {moved:.2f} s")

    # node1 boots: its LCD said ISP, its check finds the name at node2 (stopped here, not failed); nothing moves.
    lan.power_on(lan.node("node1"))
    ha.start(lan.node("node1"))
    ha.wait(ha.all_alive, 20, "node1 ALIVE again")
    ha.wait(lambda: state(ha, "node1") is State.OSU, 10, "node1 to see app-dns is not its own any more")
    with Lcd.open(ha.root("node1")) as lcd:
        reason = lcd.resource(TAG).reason
    assert f"{FQDN} points at node2 ({NODE2}) on {bind.address}:53, not here" in reason, reason
    assert ha.command("node1", "perform_action", "-t", TAG, "-a", "quickCheck").returncode == 7
    time.sleep(1.0)
    assert published(bind, NODE2) and state(ha, "node2") is State.ISP, "INTELLIGENT: app-dns stays on node2"
    assert_secret_kept(ha, bind)


@pytest.mark.slow
def test_the_kit_contract_on_real_bind(ha_cluster: HaCluster, bind: Bind, tmp_path: Path) -> None:
    """Restoring what runs succeeds and changes nothing; removing twice succeeds; stopped, not failed, after."""
    ha = ha_cluster
    create(ha, bind)
    never = ha.command("node1", "perform_action", "-t", TAG, "-a", "quickCheck")
    assert (never.returncode, never.stdout.split(":")[0]) == (7, f"{TAG} stopped"), never

    ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore", "-s")
    serial = bind.query("example.test", "SOA")
    time.sleep(0.2)  # named's log lines of the first restore's updates
    updates = bind.log().count("updating zone")
    ha.ok("node1", "ins_setstate", "-t", TAG, "-S", "OSU")  # the LCD forgets; the records are there
    ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore", "-s")
    assert bind.query("example.test", "SOA") == serial, "the second restore changed the zone"
    time.sleep(0.2)
    assert bind.log().count("updating zone") == updates, "the second restore sent updates again"
    assert published(bind, NODE1)

    ha.ok("node1", "perform_action", "-t", TAG, "-a", "remove")
    ha.ok("node1", "ins_setstate", "-t", TAG, "-S", "ISP")
    ha.ok("node1", "perform_action", "-t", TAG, "-a", "remove")  # removing what is removed succeeds
    after = ha.command("node1", "perform_action", "-t", TAG, "-a", "quickCheck")
    assert after.returncode == 7, after
    assert bind.query(NAME) == [NODE1], "on_remove=leave (the default) leaves the records"

    bad = ha.command("node1", "hakeeper", "create", "comm/dns", "-t", "bad", "name=app", "zone=example.test",
             f"servers={bind.address}", f"key={bind.key_file}", "addresses=node1=not-an-address")  # fmt: skip
    assert bad.returncode == 5 and "'not-an-address' (for node1) is not an IP address" in bad.stderr, bad
    assert_secret_kept(ha, bind)


@pytest.mark.slow
def test_a_key_the_server_does_not_take_is_refused_with_a_clear_message_and_nothing_changes(
    ha_cluster: HaCluster, bind: Bind, tmp_path: Path
) -> None:
    ha = ha_cluster
    wrong = tmp_path / "wrong.key"
    wrong.write_text('key "ddns-key" {\n\talgorithm hmac-sha256;\n\tsecret "' + "A" * 43 + '=";\n};\n')
    refused = ha.command("node1", "hakeeper", "create", "comm/dns", "-t", TAG, "name=app", "zone=example.test",
                 f"servers={bind.address}", f"key={wrong}", f"addresses=node1={NODE1}")  # fmt: skip
    assert refused.returncode == 5, refused
    assert "refused key 'ddns-key' (hmac-sha256): its secret is not the server's (BADSIG)" in refused.stderr, refused
    assert ha.command("node1", "ins_list", "-t", TAG).returncode != 0, "no resource was created"
    assert not key_copy(ha, "node1").parent.exists(), "a refused create leaves no key behind"

    create(ha, bind, interval=1)
    before = bind.snapshot(RECORDS)
    old_secret = bind.rotate_key()  # the DNS administrator changes the key; the cluster still has the old one
    failed = ha.command("node1", "perform_action", "-t", TAG, "-a", "restore")
    assert failed.returncode == 1, failed
    assert f"{bind.address}:53 refused key 'ddns-key' (hmac-sha256): its secret is not the server's (BADSIG)" in (
        failed.stderr
    ), failed.stderr
    assert bind.snapshot(RECORDS) == before, "a refused key changed records"
    assert state(ha, "node1") is State.OSF

    # In service, then the key is rotated and a record goes wrong: recovery says CONFIG, does not retry or move.
    rotated = bind.set_secret(old_secret)  # named takes the cluster's key again
    ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore")
    assert published(bind, NODE1)
    bind.rotate_key()
    update = f"server {bind.address}\nupdate delete {NAME} A\nupdate add {NAME} 60 A {OLD}\nsend\n"
    bind.host.run(["nsupdate", "-k", str(bind.key_file)], input=update, check=True)
    ha.wait(lambda: "configuration error" in ha.log("node1"), 20, "recovery to give up with a configuration error")
    ha.wait(lambda: state(ha, "node1") is State.OSF, 5, "app-dns OSF on node1")
    time.sleep(1.5)  # time for a wrong failover to show
    assert state(ha, "node2") is State.OSU, "a configuration error does not move the resource"
    assert "BADSIG" in ha.log("node1") and " try 2 of " not in ha.log("node1"), "a refused key is not retried"
    assert bind.query(NAME) == [OLD]
    assert_secret_kept(ha, bind, old_secret, rotated)


@pytest.mark.slow
def test_bind_stopped_quick_check_fails_and_recovery_retries_with_back_off_until_bind_is_back(
    ha_cluster: HaCluster, bind: Bind
) -> None:
    """BIND stops while app-dns is in service on node1: quickCheck fails, the recover action retries the update
    with waits of 1, 2, 4 s; BIND comes back during them, and app-dns is recovered in place (no failover)."""
    ha = ha_cluster
    create(ha, bind, "tries=5", interval=1)
    ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore")
    ha.wait(lambda: published(bind, NODE1), 5, "node1's records")

    bind.stop()
    ha.wait(lambda: "quickCheck of app-dns: app-dns: no DNS server answered" in ha.log("node1"), 15, "quickCheck fail")
    ha.wait(lambda: "; try 3 of 5 in 2 s" in ha.log("node1"), 30, "the recovery's second retry")
    bind.start()
    ha.wait(lambda: "app-dns recovered in place by its recover action" in ha.log("node1"), 30, "recovery")

    log = ha.log("node1")
    retries = re.findall(r"app-dns: no DNS server answered .*; try (\d) of 5 in (\d+) s", log)
    assert retries[:2] == [("2", "1"), ("3", "2")], retries
    assert len(retries) <= 4, "bounded: at most tries - 1 retries per recovery"
    assert re.search(r"app\.example\.test\. A 198\.18\.0\.11, .* after [23] retries \(recover of app-dns\)", log), (
        "the recover's success says it retried"
    )
    assert state(ha, "node1") is State.ISP and state(ha, "node2") is State.OSU, "recovered in place, not moved"
    assert published(bind, NODE1)
    assert_secret_kept(ha, bind)


@pytest.mark.slow
def test_bind_down_longer_than_the_back_off_moves_app_dns_and_node2_publishes_once_bind_is_back(
    ha_cluster: HaCluster, bind: Bind
) -> None:
    """Past its tries the recovery fails SOFT: app-dns fails over; node2's restore retries with back-off too."""
    ha = ha_cluster
    create(ha, bind, "tries=3", "timeout=60", interval=1)
    ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore")
    bind.stop()
    ha.wait(lambda: "local recovery failed" in ha.log("node1"), 40, "node1's recovery to give up")
    ha.wait(lambda: "no DNS server answered" in ha.log("node2"), 20, "node2's restore to try")
    bind.start()
    ha.wait(lambda: published(bind, NODE2), 30, "node2's records", step=0.2)
    ha.wait(lambda: state(ha, "node2") is State.ISP, 10, "app-dns ISP on node2")
    assert state(ha, "node1") is not State.ISP
    assert re.search(r"app-dns: no DNS server answered .*; try 2 of 3 in 1 s", ha.log("node2"))
    assert_secret_kept(ha, bind)


@pytest.mark.slow
def test_on_remove_restore_puts_the_old_records_back(ha_cluster: HaCluster, bind: Bind) -> None:
    ha = ha_cluster
    create(ha, bind, "on_remove=restore")
    before = bind.snapshot(RECORDS)
    assert before[f"{NAME} A"] == [OLD] and before[f"{reverse_name(NODE1)} PTR"] == ["node1.example.test."]

    ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore")
    assert published(bind, NODE1)
    ha.ok("node1", "perform_action", "-t", TAG, "-a", "remove")
    assert bind.snapshot(RECORDS) == before, "remove put back what restore replaced"

    # A switchover: node1 puts its previous records back, node2 publishes; node2's remove puts those back.
    ha.ok("node1", "perform_action", "-t", TAG, "-a", "restore")
    ha.ok("node2", "perform_action", "-t", TAG, "-a", "restore")
    assert published(bind, NODE2) and state(ha, "node1") is State.OSU
    assert bind.query(reverse_name(NODE1), "PTR") == ["node1.example.test."]
    ha.ok("node2", "perform_action", "-t", TAG, "-a", "remove")
    assert bind.snapshot(RECORDS) == before
    assert_secret_kept(ha, bind)
