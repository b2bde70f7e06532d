"""The IP kit without a network: its parameters, the interface on the subnet, and its frames, byte for byte.

The frames are checked against the layouts of the RFCs, written out field by field here (not with the
kit's own helpers): ARP (RFC 826) in the RFC 5227 forms, and IPv6 neighbour discovery (RFC 4861) with
the ICMPv6 checksum over the pseudo-header (RFC 8200 §8.1) computed independently.
"""

from __future__ import annotations

import asyncio
import struct
from ipaddress import IPv4Address, IPv6Address, ip_interface

import pytest

from hakeeper.errors import IllegalArgument, OutOfRange
from hakeeper.kits import neighbour
from hakeeper.kits.base import KitContext
from hakeeper.kits.ip import (
    IFF_LOOPBACK,
    IFF_LOWER_UP,
    IFF_UP,
    Addr,
    IpConfig,
    IpKit,
    Link,
    Repeats,
    Snapshot,
    parse_address,
    parse_ping_list,
    place,
    subnet_interface,
)
from hakeeper.kits.ping import echo_reply, echo_request
from hakeeper.kits.registry import Kits

MAC = bytes.fromhex("02686b00000c")  # node2 of the test LAN
OTHER = bytes.fromhex("02686b00000b")
VIP4 = IPv4Address("198.18.0.50")
VIP6 = IPv6Address("2001:2::50")
UP = IFF_UP | IFF_LOWER_UP


def kit(tmp_path) -> IpKit:
    return IpKit(KitContext(tmp_path, "node1"))


# ---------------------------------------------------------------------- parameters


def test_the_registry_serves_comm_ip_with_the_ip_kit(tmp_path) -> None:
    found = Kits(KitContext(tmp_path, "node1")).get("comm", "ip")
    assert isinstance(found, IpKit)
    assert found.meta.name == "comm/ip"


def test_parameters_become_the_info_with_defaults_and_the_id_names_the_address(tmp_path) -> None:
    ip = kit(tmp_path)
    values = ip.check_params({"address": "198.18.0.50/24", "ping_list": "198.18.0.1, 198.18.0.2 198.18.0.1"})
    assert values == {
        "address": "198.18.0.50/24",
        "interface": "",
        "backup_interface": "",
        "ping_list": ["198.18.0.1", "198.18.0.2"],
        "ping_timeout": 1,
        "duplicate_check": True,
        "probe_ms": 50,
        "announcements": 4,
    }
    created = ip.create("vip", values, None)
    assert created.id == "ip-198.18.0.50"
    assert created.info == values
    assert IpConfig.from_values(created.info) == IpConfig.from_values(values)  # the info reads back the same
    six = ip.create("vip6", ip.check_params({"address": "2001:2:0:0::50/64", "duplicate_check": "no"}), None)
    assert six.id == "ip-2001:2::50"
    assert six.info["address"] == "2001:2::50/64" and six.info["duplicate_check"] is False


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("198.18.0.50", "needs its prefix length"),
        ("198.18.0.500/24", "not an IPv4 or IPv6 address"),
        ("vip.example/24", "not an IPv4 or IPv6 address"),
        ("198.18.0.50/33", "not an IPv4 or IPv6 address"),
        ("198.18.0.0/24", "network's own address"),
        ("198.18.0.255/24", "broadcast address"),
        ("224.0.0.18/32", "multicast"),
        ("127.0.0.2/8", "loopback"),
        ("0.0.0.0/0", "unspecified"),
        ("240.0.0.1/24", "reserved"),
        ("fe80::50/64", "link-local"),
        ("::ffff:198.18.0.50/128", "IPv4-mapped"),
        ("ff02::1/128", "multicast"),
    ],
)
def test_an_address_that_cannot_be_a_vip_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(IllegalArgument, match=why):
        parse_address(text)


def test_a_point_to_point_prefix_has_no_network_or_broadcast_address_to_refuse() -> None:
    assert parse_address("198.18.0.50/32") == ip_interface("198.18.0.50/32")
    assert parse_address("198.18.0.50/31") == ip_interface("198.18.0.50/31")


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"address": "198.18.0.50/24", "ping_list": "router.example"}, "names are not resolved"),
        ({"address": "198.18.0.50/24", "ping_list": "198.18.0.50"}, "the virtual address itself"),
        ({"address": "198.18.0.50/24", "ping_list": "198.18.0.255,224.0.0.1"}, "not the address of one host"),
        ({"address": "198.18.0.50/24", "interface": "eth0", "backup_interface": "eth0"}, "the interface itself"),
        ({"address": "198.18.0.50/24", "interface": "eth0:1"}, "not an interface name"),
        ({"address": "198.18.0.50/24", "interface": "a-very-long-ifname"}, "not an interface name"),
        ({"address": "198.18.0.50/24", "probe_ms": "soon"}, "probe_ms='soon' is not a whole number"),
        ({"address": "198.18.0.50/24", "duplicate_check": "perhaps"}, "is not a yes/no value"),
        ({"address": "198.18.0.50/24", "nic": "eth0"}, "has no parameter 'nic'"),
        ({"interface": "eth0"}, "needs parameter address="),
    ],
)
def test_bad_parameters_are_refused_by_name(tmp_path, params: dict[str, str], why: str) -> None:
    with pytest.raises(IllegalArgument, match=why):
        kit(tmp_path).check_params(params)


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"address": "198.18.0.50/24", "announcements": "0"}, r"announcements=0 is outside 1\.\.20"),
        ({"address": "198.18.0.50/24", "ping_timeout": "61"}, r"ping_timeout=61 is outside 1\.\.60"),
        ({"address": "198.18.0.50/24", "probe_ms": "99999999999999999999"}, r"probe_ms=99999.* is outside 1\.\.5000"),
    ],
)
def test_numbers_outside_their_bounds_are_out_of_range(tmp_path, params: dict[str, str], why: str) -> None:
    with pytest.raises(OutOfRange, match=why):
        kit(tmp_path).check_params(params)


def test_a_ping_list_of_the_other_family_and_ipv6_hosts_are_accepted() -> None:
    assert parse_ping_list("2001:2::100,198.18.0.100", ip_interface("2001:2::50/64")) == (
        IPv6Address("2001:2::100"),
        IPv4Address("198.18.0.100"),
    )


def test_info_edited_into_nonsense_is_refused_when_read(tmp_path) -> None:
    good = kit(tmp_path).check_params({"address": "198.18.0.50/24"})
    with pytest.raises(IllegalArgument, match="not yes or no"):
        IpConfig.from_values(good | {"duplicate_check": "maybe"})
    with pytest.raises(IllegalArgument, match="needs its prefix"):
        IpConfig.from_values(good | {"address": "198.18.0.50"})


# ---------------------------------------------------------------------- the interface on that subnet


def snapshot(*addrs: tuple[int, str], links: tuple[Link, ...] | None = None) -> Snapshot:
    links = links or (
        Link(1, "lo", "00:00:00:00:00:00", UP | IFF_LOOPBACK),
        Link(2, "eth0", "02:68:6b:00:00:0b", UP),
        Link(3, "eth1", "02:68:6b:01:00:0b", UP),
    )
    return Snapshot(links, tuple(Addr(index, ip_interface(text), 0) for index, text in addrs))


NODE = ((1, "127.0.0.1/8"), (2, "198.18.0.11/24"), (3, "198.18.1.11/24"), (2, "2001:2::11/64"))


def on_subnet(address: str, snap: Snapshot) -> str | None:
    link = subnet_interface(ip_interface(address), snap)
    return link.name if link else None


def test_the_interface_on_the_subnet_is_the_one_whose_own_address_contains_the_vip() -> None:
    snap = snapshot(*NODE)
    assert on_subnet("198.18.0.50/24", snap) == "eth0"
    assert on_subnet("198.18.1.50/24", snap) == "eth1"
    assert on_subnet("2001:2::50/64", snap) == "eth0"
    assert on_subnet("198.19.0.50/24", snap) is None
    assert on_subnet("2001:2:0:1::50/64", snap) is None


def test_the_vip_itself_on_the_backup_interface_does_not_make_that_the_subnet_s_interface() -> None:
    moved = snapshot((3, "198.18.0.50/24"), (2, "198.18.0.11/24"), (3, "198.18.1.11/24"))
    assert on_subnet("198.18.0.50/24", moved) == "eth0"
    alone = snapshot((3, "198.18.0.50/24"))
    assert on_subnet("198.18.0.50/24", alone) is None


def test_two_interfaces_on_the_subnet_give_the_lower_index_and_loopback_never_counts() -> None:
    snap = snapshot((3, "198.18.0.12/24"), (2, "198.18.0.11/16"), (1, "198.18.0.1/24"))
    assert on_subnet("198.18.0.50/24", snap) == "eth0"


def test_placement_names_what_is_missing_on_this_node() -> None:
    snap = snapshot(*NODE)
    by_subnet = place(IpConfig(ip_interface("198.18.0.50/24"), backup_interface="eth1"), snap, "node2")
    assert (by_subnet.primary.name, by_subnet.backup and by_subnet.backup.name) == ("eth0", "eth1")
    with pytest.raises(IllegalArgument, match=r"node2 has no interface eth7 \(it has: lo, eth0, eth1\)"):
        place(IpConfig(ip_interface("198.18.0.50/24"), interface="eth7"), snap, "node2")
    with pytest.raises(IllegalArgument, match="node2 has no backup interface bond0"):
        place(IpConfig(ip_interface("198.18.0.50/24"), backup_interface="bond0"), snap, "node2")
    with pytest.raises(IllegalArgument, match=r"no interface of node2 has an address on 198\.18\.7\.0/24"):
        place(IpConfig(ip_interface("198.18.7.50/24")), snap, "node2")
    with pytest.raises(IllegalArgument, match="backup_interface eth0 is the address's own interface"):
        place(IpConfig(ip_interface("198.18.0.50/24"), backup_interface="eth0"), snap, "node2")


def test_a_link_is_up_only_when_administratively_up_and_with_carrier() -> None:
    assert Link(2, "eth0", "", IFF_UP | IFF_LOWER_UP).up
    assert not Link(2, "eth0", "", IFF_UP).up
    assert "no carrier" in Link(2, "eth0", "", IFF_UP).why_down
    assert not Link(2, "eth0", "", IFF_LOWER_UP).up
    assert Link(2, "eth0", "", 0).why_down == "is down"


# ---------------------------------------------------------------------- ARP frames (RFC 826, RFC 5227)


def arp_packet(op: int, sha: bytes, spa: str, tha: bytes, tpa: str) -> bytes:
    """RFC 826 for Ethernet/IPv4, written out: hrd=1, pro=0x0800, hln=6, pln=4, op, sha, spa, tha, tpa."""
    return (
        b"\x00\x01"
        + b"\x08\x00"
        + b"\x06"
        + b"\x04"
        + op.to_bytes(2, "big")
        + sha
        + IPv4Address(spa).packed
        + tha
        + IPv4Address(tpa).packed
    )


def test_the_gratuitous_arp_is_an_rfc_5227_announcement_broadcast_and_padded_to_60_bytes() -> None:
    frame = neighbour.arp_announcement(MAC, VIP4)
    expected = b"\xff" * 6 + MAC + b"\x08\x06" + arp_packet(1, MAC, "198.18.0.50", b"\0" * 6, "198.18.0.50")
    assert frame == expected + b"\0" * (60 - len(expected))
    assert len(frame) == 60


def test_the_arp_probe_asks_from_0_0_0_0_so_that_it_changes_no_cache() -> None:
    frame = neighbour.arp_probe(MAC, VIP4)
    expected = b"\xff" * 6 + MAC + b"\x08\x06" + arp_packet(1, MAC, "0.0.0.0", b"\0" * 6, "198.18.0.50")
    assert frame == expected.ljust(60, b"\0")


def test_an_arp_packet_claiming_the_address_from_another_mac_names_the_holder() -> None:
    reply = b"\x02" * 6 + OTHER + b"\x08\x06" + arp_packet(2, OTHER, "198.18.0.50", MAC, "0.0.0.0")
    assert neighbour.arp_holder(reply, VIP4, MAC) == OTHER  # the answer to our probe
    assert neighbour.arp_holder(neighbour.arp_announcement(OTHER, VIP4), VIP4, MAC) == OTHER  # its own GARP
    assert neighbour.arp_holder(neighbour.arp_announcement(MAC, VIP4), VIP4, MAC) is None  # ours
    assert neighbour.arp_holder(neighbour.arp_probe(OTHER, VIP4), VIP4, MAC) is None  # asking, not holding
    assert neighbour.arp_holder(reply, IPv4Address("198.18.0.51"), MAC) is None  # another address
    assert neighbour.arp_holder(reply[:30], VIP4, MAC) is None  # truncated


# ---------------------------------------------------------------------- neighbour discovery (RFC 4861)


def ones_complement_sum_checksum(data: bytes) -> int:
    """RFC 1071, the plain way."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def split_ipv6(frame: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """Ethernet dst, src, type; the IPv6 header; the ICMPv6 message."""
    return frame[0:6], frame[6:12], frame[12:14], frame[14:54], frame[54:]


def test_the_unsolicited_neighbour_advertisement_follows_rfc_4861() -> None:
    frame = neighbour.unsolicited_na(MAC, VIP6)
    dst, src, ethertype, ip6, icmp = split_ipv6(frame)
    assert (dst, src, ethertype) == (bytes.fromhex("333300000001"), MAC, b"\x86\xdd")  # to all-nodes ff02::1
    version_tc_flow, length, next_header, hop_limit = struct.unpack("!IHBB", ip6[:8])
    assert version_tc_flow >> 28 == 6 and (version_tc_flow & 0x0FFFFFFF) == 0
    assert (length, next_header, hop_limit) == (32, 58, 255)  # 24 + 8 of the option; ICMPv6; 255 or dropped
    assert ip6[8:24] == VIP6.packed and ip6[24:40] == IPv6Address("ff02::1").packed
    message = icmp[:length]
    assert message[0] == 136 and message[1] == 0  # Neighbor Advertisement, code 0
    assert message[4:8] == bytes([0x20, 0, 0, 0])  # R=0, S=0 (unsolicited), O=1 (override)
    assert message[8:24] == VIP6.packed  # target
    assert message[24:32] == b"\x02\x01" + MAC  # Target Link-Layer Address, 1 unit of 8 bytes
    pseudo = ip6[8:24] + ip6[24:40] + struct.pack("!I", length) + b"\0\0\0\x3a"
    zeroed = message[:2] + b"\0\0" + message[4:]
    assert struct.unpack("!H", message[2:4])[0] == ones_complement_sum_checksum(pseudo + zeroed)
    assert len(frame) == 14 + 40 + 32


def test_the_duplicate_probe_is_a_dad_solicitation_from_the_unspecified_address() -> None:
    frame = neighbour.dad_solicitation(MAC, VIP6)
    dst, src, _type, ip6, icmp = split_ipv6(frame)
    group = IPv6Address("ff02::1:ff00:50")  # solicited-node: ff02::1:ff + the low 24 bits
    assert neighbour.solicited_node(VIP6) == group
    assert dst == bytes.fromhex("3333ff000050") and src == MAC
    assert ip6[8:24] == bytes(16) and ip6[24:40] == group.packed and ip6[7] == 255
    length = struct.unpack("!H", ip6[4:6])[0]
    assert length == 24  # no Source Link-Layer option from ::
    message = icmp[:length]
    assert message[0] == 135 and message[4:8] == bytes(4) and message[8:24] == VIP6.packed
    pseudo = bytes(16) + group.packed + struct.pack("!I", length) + b"\0\0\0\x3a"
    assert ones_complement_sum_checksum(pseudo + message) == 0  # a correct checksum sums to all ones


def test_an_advertisement_for_the_address_from_another_host_names_its_mac() -> None:
    theirs = neighbour.unsolicited_na(OTHER, VIP6)
    assert neighbour.na_holder(theirs, VIP6, MAC) == OTHER
    assert neighbour.na_holder(neighbour.unsolicited_na(MAC, VIP6), VIP6, MAC) is None  # our own
    assert neighbour.na_holder(theirs, IPv6Address("2001:2::51"), MAC) is None
    assert neighbour.na_holder(neighbour.dad_solicitation(OTHER, VIP6), VIP6, MAC) is None  # a question
    forwarded = theirs[:21] + b"\xfe" + theirs[22:]  # hop limit 254: it crossed a router, not neighbour discovery
    assert neighbour.na_holder(forwarded, VIP6, MAC) is None
    no_option = theirs[:18] + struct.pack("!H", 24) + theirs[20:78]  # payload length 24: no TLLA
    assert neighbour.na_holder(no_option, VIP6, MAC) == OTHER  # then the frame's source


def test_the_frame_for_each_family_is_chosen_by_the_address() -> None:
    assert neighbour.announcement(MAC, VIP4) == neighbour.arp_announcement(MAC, VIP4)
    assert neighbour.announcement(MAC, VIP6) == neighbour.unsolicited_na(MAC, VIP6)
    assert neighbour.probe_frame(MAC, VIP4) == neighbour.arp_probe(MAC, VIP4)
    assert neighbour.probe_frame(MAC, VIP6) == neighbour.dad_solicitation(MAC, VIP6)
    assert neighbour.mac_text(neighbour.mac_bytes("02:68:6B:00:00:0c")) == "02:68:6b:00:00:0c"
    with pytest.raises(ValueError, match="not a MAC address"):
        neighbour.mac_bytes("02:68:6b:00:0c")


# ---------------------------------------------------------------------- ICMP echo for the ping list


def test_echo_requests_and_replies_of_both_families() -> None:
    request = echo_request(False, 0x1234, 7)
    assert request[0] == 8 and struct.unpack("!HH", request[4:8]) == (0x1234, 7)
    assert ones_complement_sum_checksum(request) == 0
    ip_header = bytes([0x45]) + bytes(19)
    assert echo_reply(ip_header + b"\x00" + request[1:], False) == (0x1234, 7)
    assert echo_reply(ip_header + request, False) is None  # a request is no reply
    six = echo_request(True, 0x1234, 7)
    assert six[0] == 128 and six[2:4] == b"\0\0"  # the kernel fills in the ICMPv6 checksum
    assert echo_reply(b"\x81" + six[1:], True) == (0x1234, 7)


# ---------------------------------------------------------------------- the repeats in the background


def test_a_new_restore_replaces_the_repeats_and_remove_stops_them() -> None:
    async def scenario() -> list[str]:
        repeats = Repeats()
        sent: list[str] = []

        async def announcing(name: str) -> None:
            for _ in range(100):
                await asyncio.sleep(0.001)
                sent.append(name)

        repeats.start("198.18.0.50", announcing("first"))
        await asyncio.sleep(0.01)
        repeats.start("198.18.0.50", announcing("second"))  # replaces the first
        await asyncio.sleep(0.01)
        assert repeats.running("198.18.0.50")
        repeats.stop("198.18.0.50")
        await asyncio.sleep(0.01)
        assert not repeats.running("198.18.0.50")
        stopped_at = len(sent)
        await asyncio.sleep(0.02)
        assert len(sent) == stopped_at, "announcements went on after stop"
        repeats.stop("198.18.0.51")  # nothing running: nothing to do
        return sent

    sent = asyncio.run(scenario())
    first, second = sent.count("first"), sent.count("second")
    assert first and second
    assert sent.index("second") > max(i for i, name in enumerate(sent) if name == "first")
