"""The DNS kit without a network: parameters, key files, answers as policies, back-off, the key kept 0600.

What needs a DNS server (restore, quickCheck against records, remove putting records back, a refused key)
is in tests/integration/test_dns_kit.py, against a real BIND on the test LAN.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import dns.name
import dns.rcode
import dns.tsig
import pytest

from hakeeper.db import Resource, State
from hakeeper.errors import IllegalArgument, OutOfRange
from hakeeper.kits.base import Health, KitContext, Policy
from hakeeper.kits.dns import DnsKit, absolute_name, parse_addresses
from hakeeper.kits.dnsupdate import (
    Client,
    DnsError,
    Server,
    backoff_delays,
    parse_key,
    parse_servers,
    rcode_error,
    tsig_error,
    unreachable,
    worst_step,
)
from hakeeper.kits.registry import Kits

SECRET = base64.b64encode(b"a secret no message may show!!!!").decode()  # 32 bytes, like tsig-keygen's
KEY = f'key "ddns-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'
ZONE = dns.name.from_text("example.test")


def key_file(tmp_path: Path, text: str = KEY, name: str = "ddns-key.conf") -> Path:
    path = tmp_path / "keys" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def params(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "name": "app",
        "zone": "example.test",
        "servers": "198.18.0.100",
        "key": str(key_file(tmp_path)),
        "addresses": "node1=198.18.0.11,node2=198.18.0.12",
        **extra,
    }


def make(tmp_path: Path, node: str = "node1", **extra: str) -> tuple[DnsKit, Resource]:
    kit = DnsKit(KitContext(tmp_path / node, node))
    created = kit.create("app-dns", kit.check_params(params(tmp_path, **extra)), None)
    return kit, Resource("app-dns", created.id, "comm", "dns", info=created.info, state=State.OSU)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- parameters --------------------------------------------------------------------------------


def test_addresses_map_each_node_to_its_address() -> None:
    assert parse_addresses("node1=198.18.0.11, node2=198.18.0.12") == {"node1": "198.18.0.11", "node2": "198.18.0.12"}
    assert parse_addresses("a=2001:db8::0011") == {"a": "2001:db8::11"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "names no node"),
        ("198.18.0.11", "is not NODE=ADDRESS"),
        ("node1=198.18.0.11,node1=198.18.0.12", "node node1 is given twice"),
        ("node1=app.example.test", "'app.example.test' (for node1) is not an IP address"),
        ("node1=198.18.0.11,node2=2001:db8::12", "the same family"),
    ],
)
def test_bad_addresses_are_refused_saying_why(text: str, error: str) -> None:
    with pytest.raises(IllegalArgument, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_addresses(text)


def test_servers_are_addresses_with_an_optional_port() -> None:
    servers = parse_servers("198.18.0.100, 198.18.0.101:5353,2001:db8::1,[2001:db8::2]:5300")
    assert servers == [
        Server("198.18.0.100", 53),
        Server("198.18.0.101", 5353),
        Server("2001:db8::1", 53),
        Server("2001:db8::2", 5300),
    ]
    assert [s.text for s in servers] == [
        "198.18.0.100:53",
        "198.18.0.101:5353",
        "[2001:db8::1]:53",
        "[2001:db8::2]:5300",
    ]
    with pytest.raises(IllegalArgument, match="DNS must not need DNS"):
        parse_servers("ns1.example.test")
    with pytest.raises(IllegalArgument, match="no valid port"):
        parse_servers("198.18.0.100:0")
    with pytest.raises(IllegalArgument, match="names no server"):
        parse_servers(" , ")


def test_the_name_is_relative_to_the_zone_unless_it_is_in_it_already() -> None:
    for text in ("app", "app.example.test", "app.example.test."):
        assert absolute_name(text, ZONE) == dns.name.from_text("app.example.test.")
    assert absolute_name("www.app", ZONE).to_text() == "www.app.example.test."
    with pytest.raises(IllegalArgument, match=r"not in zone example\.test\."):
        absolute_name("app.other.test.", ZONE)


def test_check_params_refuses_what_cannot_work_naming_the_parameter(tmp_path: Path) -> None:
    kit = DnsKit(KitContext(tmp_path, "node1"))
    assert kit.check_params(params(tmp_path))["ttl"] == 60
    cases = {
        "on_remove": ("delete", "on_remove='delete' is not one of leave | restore"),
        "ptr": ("maybe", "not a yes/no value"),
        "reverse_zone": ("1.18.198.in-addr.arpa", r"address of node1 \(198.18.0.11\) is not in reverse_zone"),
    }
    for name, (value, error) in cases.items():
        with pytest.raises(IllegalArgument, match=error):
            kit.check_params(params(tmp_path, **{name: value}))
    bounded = {
        "ttl": ("-1", r"ttl=-1 is outside 0\.\.604800"),
        "tries": ("0", r"tries=0 is outside 1\.\.20"),
        "timeout": ("99999999999999999999", r"timeout=999.* is outside 1\.\.3600"),
        "check_timeout": ("0", r"check_timeout=0 is outside 1\.\.3600"),
        "query_timeout": ("61", r"query_timeout=61 is outside 1\.\.60"),
    }
    for name, (value, error) in bounded.items():
        with pytest.raises(OutOfRange, match=error):
            kit.check_params(params(tmp_path, **{name: value}))
    with pytest.raises(IllegalArgument, match="no parameter 'server'"):
        kit.check_params({**params(tmp_path), "server": "198.18.0.100"})


def test_timing_rules_keep_retries_within_the_action_timeouts(tmp_path: Path) -> None:
    """tries x servers x query_timeout + back-off must fit in timeout, and quickCheck's tries in check_timeout."""
    kit = DnsKit(KitContext(tmp_path, "node1"))
    assert backoff_delays(4) == [1.0, 2.0, 4.0]
    assert backoff_delays(7) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0], "each wait at most 10 s"
    assert worst_step(4, 2, 2) == 4 * 2 * 2 + 7
    with pytest.raises(IllegalArgument, match=r"tries=8 .* may take 61 s .* 90% of timeout=60 s: raise timeout"):
        kit.check_params(params(tmp_path, tries="8"))
    kit.check_params(params(tmp_path, tries="8", timeout="70"))
    with pytest.raises(IllegalArgument, match=r"quickCheck may take 12 s .* check_timeout=10 s"):
        kit.check_params(params(tmp_path, query_timeout="3", check_timeout="10"))


# --- the key -------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["PR//ZWGWvABeM0y5LnkL1mrWtEdM4Y3VNZqua0iYp1E=", "//8A", "Zm9v//8="])
def test_a_secret_holding_what_looks_like_a_comment_is_read_whole(secret: str) -> None:
    """base64 has '/': a secret with '//' in it is a string, not a comment (a random secret had it)."""
    text = f'key "ddns-key" {{\n\talgorithm hmac-sha256; // the algorithm\n\tsecret "{secret}"; /* the secret */\n}};\n'
    assert parse_key(text, "ddns-key.key").secret == base64.b64decode(secret)


def test_a_tsig_keygen_key_is_read_and_its_secret_never_shown(tmp_path: Path) -> None:
    text = "# made by tsig-keygen\n/* a comment */\n" + KEY.replace('"ddns-key"', '"ddns-key."') + "// end\n"
    key = parse_key(text, "ddns-key.conf")
    assert (key.name, key.algorithm, key.secret) == ("ddns-key", "hmac-sha256", base64.b64decode(SECRET))
    for shown in (repr(key), str(key)):
        assert SECRET not in shown and "a secret no message" not in shown, shown
    assert parse_key(key.bind_text(), "copy") == key, "the kept copy reads back the same"
    assert parse_key('key ddns-key { algorithm HMAC-SHA512; secret "' + SECRET + '"; };', "f").algorithm == (
        "hmac-sha512"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (SECRET, "has no key statement"),
        ('secret "' + SECRET + '";', "has no key statement"),
        (KEY + KEY.replace("ddns-key", "other"), "has 2 keys ('ddns-key', 'other')"),
        (KEY.replace("\talgorithm hmac-sha256;\n", ""), "has no algorithm"),
        (KEY.replace("hmac-sha256", "rsa-" + SECRET[:8]), "is not one of hmac-md5"),
        (KEY.replace(f'secret "{SECRET}";', ""), "has no secret"),
        (KEY.replace(SECRET, SECRET[:-2] + "!!"), "is not valid base64"),
        (KEY.replace(SECRET, ""), "is empty"),
    ],
)
def test_a_bad_key_file_is_refused_without_quoting_it(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(IllegalArgument) as refused:
        parse_key(text, "/etc/bind/ddns-key.conf")
    message = str(refused.value)
    assert error in message
    assert message.startswith("/etc/bind/ddns-key.conf")
    assert SECRET not in message and SECRET[:12] not in message and SECRET[:-2] not in message


def test_create_keeps_the_key_0600_in_the_instance_directory_and_out_of_the_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    old = os.umask(0o022)
    try:
        kit, resource = make(tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / "node1" / "subsys" / "comm" / "resources" / "dns" / "instances" / "app-dns" / "tsig.key"
    assert kit.key_path("app-dns") == path
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert parse_key(path.read_text(), "copy").secret == base64.b64decode(SECRET)
    info = json.dumps(resource.info)
    assert SECRET not in info and base64.b64decode(SECRET).decode() not in info
    assert resource.info["key_name"] == "ddns-key" and resource.info["algorithm"] == "hmac-sha256"
    assert resource.info["name"] == "app.example.test." and resource.info["servers"] == ["198.18.0.100:53"]
    assert SECRET not in caplog.text
    assert [p.name for p in path.parent.iterdir()] == ["tsig.key"]


def test_create_with_a_key_it_cannot_use_leaves_nothing(tmp_path: Path) -> None:
    kit = DnsKit(KitContext(tmp_path / "node1", "node1"))
    bad = key_file(tmp_path, KEY.replace("hmac-sha256", "hmac-sha3"), "bad.conf")
    with pytest.raises(IllegalArgument, match="algorithm 'hmac-sha3' is not one of") as refused:
        kit.create("app-dns", kit.check_params({**params(tmp_path), "key": str(bad)}), None)
    assert SECRET not in str(refused.value)
    with pytest.raises(IllegalArgument, match="cannot read the key file"):
        kit.create("app-dns", kit.check_params({**params(tmp_path), "key": str(tmp_path / "none")}), None)
    assert not (tmp_path / "node1").exists()


def test_export_then_adopt_on_another_node_keeps_the_same_key_0600(tmp_path: Path) -> None:
    source, resource = make(tmp_path)
    payload = json.loads(json.dumps(source.export(resource)))  # it crosses the network as JSON
    target = DnsKit(KitContext(tmp_path / "node2", "node2"))
    old = os.umask(0)
    try:
        target.adopt("app-dns", resource.info, payload)
    finally:
        os.umask(old)
    assert target.key_path("app-dns").read_bytes() == source.key_path("app-dns").read_bytes()
    assert mode(target.key_path("app-dns")) == 0o600 and mode(target.key_path("app-dns").parent) == 0o700
    target.discard("app-dns")
    assert not target.instance_dir("app-dns").exists()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({}, "holds no TSIG key"),
        ({"key": "not base64!"}, "not valid base64"),
        ({"key": base64.b64encode(b"\xff\xfe").decode()}, "not valid base64 text"),
        ({"key": base64.b64encode(KEY.replace("ddns-key", "other").encode()).decode()}, "not the one the resource's"),
        ({"key": base64.b64encode(KEY.replace(SECRET, "x" + SECRET[1:-2] + "!").encode()).decode()}, "base64"),
    ],
)
def test_adopt_refuses_a_bad_payload_leaves_nothing_and_never_shows_the_secret(
    tmp_path: Path, payload: dict[str, object], error: str
) -> None:
    _source, resource = make(tmp_path)
    target = DnsKit(KitContext(tmp_path / "node2", "node2"))
    with pytest.raises(IllegalArgument, match=error) as refused:
        target.adopt("app-dns", resource.info, payload)
    assert SECRET[1:-2] not in str(refused.value)
    assert not (tmp_path / "node2").exists()


# --- what the server says, as policies ------------------------------------------------------------


def test_answers_that_will_not_change_are_configuration_errors_and_servfail_is_retried() -> None:
    assert rcode_error(dns.rcode.NOERROR, "ns:53", "x") is None
    servfail = rcode_error(dns.rcode.SERVFAIL, "ns:53", "the update")
    assert servfail is not None and servfail.retry and servfail.policy is Policy.SOFT
    for rcode, words in [
        (dns.rcode.REFUSED, "refused it (does the server allow this key"),
        (dns.rcode.NOTAUTH, "not authoritative for the zone"),
        (dns.rcode.NOTZONE, "not in the zone"),
        (dns.rcode.NOTIMP, "does not implement dynamic update"),
        (dns.rcode.BADKEY, "BADKEY"),
        (dns.rcode.BADSIG, "BADSIG"),
        (dns.rcode.BADTIME, "clocks differ"),
    ]:
        error = rcode_error(rcode, "198.18.0.100:53", "the update of app.example.test. A")
        assert error is not None, rcode
        assert error.policy is Policy.CONFIG and not error.retry, rcode
        assert str(error) == f"198.18.0.100:53 {error.args[0].split(' ', 1)[1]}"
        assert words in str(error) and str(error).endswith(": the update of app.example.test. A"), str(error)


def test_tsig_errors_name_the_key_and_what_to_check_never_the_secret() -> None:
    key = parse_key(KEY, "f")
    cases = [
        (
            dns.tsig.PeerBadKey(),  # type: ignore[no-untyped-call]
            "does not know key 'ddns-key' (hmac-sha256) (BADKEY)",
        ),
        (
            dns.tsig.PeerBadSignature(),  # type: ignore[no-untyped-call]
            "refused key 'ddns-key' (hmac-sha256): its secret is not the server's (BADSIG)",
        ),
        (
            dns.tsig.PeerBadTime(),  # type: ignore[no-untyped-call]
            "the clocks differ too much (BADTIME)",
        ),
        (
            dns.tsig.BadSignature(),  # type: ignore[no-untyped-call]
            "does not verify with key 'ddns-key'",
        ),
    ]
    for exc, words in cases:
        error = tsig_error(exc, "198.18.0.100:53", key, "the key check")
        assert error.policy is Policy.CONFIG and not error.retry
        assert words in str(error), str(error)
        assert SECRET not in str(error)


# --- back-off --------------------------------------------------------------------------------------


def client(tries: int, *, first_delay: float = 0.01, deadline: float = 1e9) -> Client:
    return Client("app-dns", [Server("198.18.0.100")], 0.01, None, deadline=deadline, tries=tries,
                  first_delay=first_delay)  # fmt: skip


def test_a_silent_server_is_retried_with_growing_waits_and_each_retry_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "hakeeper.kits.dnsupdate")
    answers: Iterator[DnsError | str] = iter([unreachable("no answer"), unreachable("no answer"), "records"])
    calls: list[float] = []

    async def attempt() -> str:
        calls.append(asyncio.get_running_loop().time())
        answer = next(answers)
        if isinstance(answer, DnsError):
            raise answer
        return answer

    talk = client(5)
    assert asyncio.run(talk.retrying("the query", attempt)) == "records"
    assert talk.retries == 2
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02, gaps
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == ["app-dns: no answer; try 2 of 5 in 0.01 s", "app-dns: no answer; try 3 of 5 in 0.02 s"]


def test_retries_are_bounded_and_a_refusal_is_never_retried() -> None:
    tried: list[int] = []

    async def silent() -> str:
        tried.append(1)
        raise unreachable("no answer")

    with pytest.raises(DnsError, match=r"no answer; gave up after 3 tries in 0 s") as gave_up:
        asyncio.run(client(3).retrying("q", silent))
    assert len(tried) == 3 and gave_up.value.policy is Policy.SOFT

    tried.clear()

    async def refused() -> str:
        tried.append(1)
        raise DnsError("198.18.0.100:53 refused it")

    with pytest.raises(DnsError, match="refused it") as no:
        asyncio.run(client(5).retrying("q", refused))
    assert len(tried) == 1 and no.value.policy is Policy.CONFIG


def test_retries_stop_before_the_action_s_deadline_with_their_own_message() -> None:
    tried: list[int] = []

    async def silent() -> str:
        tried.append(1)
        raise unreachable("no answer")

    async def run() -> None:
        deadline = asyncio.get_running_loop().time() + 0.5
        await Client("t", [Server("198.18.0.100")], 0.01, None, deadline=deadline, tries=10, first_delay=0.2).retrying(
            "q", silent
        )

    with pytest.raises(DnsError, match="the action's time is nearly up"):
        asyncio.run(run())
    assert len(tried) == 2, "0.2 s, then a 0.4 s wait would pass the deadline"


# --- actions that need no server --------------------------------------------------------------------


def test_quick_check_and_remove_of_what_this_node_never_published(tmp_path: Path) -> None:
    kit, resource = make(tmp_path)
    check = asyncio.run(kit.quick_check(resource))
    assert check.health is Health.STOPPED and not check.ok
    assert asyncio.run(kit.remove(resource)).ok, "removing what is not published succeeds"


def test_validate_refuses_a_node_without_an_address_and_a_key_others_can_read(tmp_path: Path) -> None:
    source, resource = make(tmp_path)
    node3 = DnsKit(KitContext(tmp_path / "node3", "node3"))
    node3.adopt("app-dns", resource.info, source.export(resource))
    result = asyncio.run(node3.validate(resource))
    assert not result.ok and result.policy is Policy.CONFIG
    assert "no address for node node3 in addresses= (node1, node2)" in result.message

    source.key_path("app-dns").chmod(0o644)
    result = asyncio.run(source.validate(resource))
    assert result.policy is Policy.CONFIG and "readable by others (mode 644): chmod 600 it" in result.message
    source.key_path("app-dns").unlink()
    result = asyncio.run(source.restore(resource))
    assert not result.ok and result.policy is Policy.CONFIG and "no TSIG key at" in result.message


def test_the_registry_serves_comm_dns(tmp_path: Path) -> None:
    kit = Kits(KitContext(tmp_path, "node1")).get("comm", "dns")
    assert isinstance(kit, DnsKit)
    assert kit.timeout("restore", Resource("t", "t", "comm", "dns", info={"timeout": 45})) == 45.0
