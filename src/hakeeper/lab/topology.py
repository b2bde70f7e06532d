"""The address plan and names of a lab's LAN — pure data, no processes.

Network A is 198.18.0.0/24 (eth0), network B 198.18.1.0/24 (eth1); node i is .(10+i), the
client .100. Addresses .50-.99 are free for tests (VIPs). Every MAC is derived from the address
(02:68:6b = locally administered "hk"), so a node keeps its MACs across a power cycle, as hardware does.

With IPv6 (``Lan(ipv6=True)``) network A is also 2001:2::/64 and network B 2001:2:0:1::/64, inside
the benchmarking prefix 2001:2::/48 (RFC 5180, the IPv6 twin of 198.18.0.0/15). A host's IPv6 address
ends in the digits of its IPv4 host octet: node1 is 2001:2::11, the client 2001:2::100, and
2001:2::50-2001:2::99 are free for tests.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

PREFIXLEN = 24
PREFIXLEN6 = 64
IPV6_RANGE = ipaddress.IPv6Network("2001:2::/48")  # every IPv6 address of a lab is in here
FIRST_NODE_OCTET = 10
CLIENT_OCTET = 100
MAX_NODES = 80
BRIDGE = "br0"
CLIENT = "client"

# Host names become parts of interface names ("v-" + name <= 15 chars) and namespace names.
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
# <prefix>-<host>: what stale cleanup is willing to delete
PREFIX_RE = re.compile(r"^hk[0-9a-f]{6}$")
NETNS_RE = re.compile(r"^hk[0-9a-f]{6}-[a-zA-Z][a-zA-Z0-9]{0,11}$")


@dataclass(frozen=True)
class Network:
    """One broadcast domain: a bridge ``br0`` in a namespace of its own."""

    name: str  # "A", "B"
    index: int  # third octet: 198.18.<index>.0/24
    netns: str
    iface: str  # the hosts' interface on this network: eth0, eth1

    @property
    def cidr(self) -> str:
        return f"198.18.{self.index}.0/{PREFIXLEN}"

    def address(self, octet: int) -> str:
        """An address of this network, e.g. ``lan.networks[0].address(50)`` for a VIP."""
        if not 1 <= octet <= 254:
            raise ValueError(f"host octet {octet} is outside 1..254")
        return f"198.18.{self.index}.{octet}"

    @property
    def cidr6(self) -> str:
        """Its IPv6 prefix (used with ``Lan(ipv6=True)``): 2001:2::/64, 2001:2:0:1::/64."""
        return str(self._net6)

    @property
    def _net6(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network(f"2001:2:0:{self.index}::/{PREFIXLEN6}")

    def address6(self, octet: int) -> str:
        """The IPv6 address of host ``octet`` on this network (its digits read as hex): 50 -> 2001:2::50."""
        if not 1 <= octet <= 254:
            raise ValueError(f"host octet {octet} is outside 1..254")
        address = ipaddress.IPv6Address(f"2001:2:0:{self.index}::{octet}")
        assert address in IPV6_RANGE and address in self._net6
        return str(address)


@dataclass(frozen=True)
class Iface:
    """A host's interface and the ports that lead from it to its network's bridge."""

    name: str  # eth0 / eth1, inside the host's namespace
    network: Network
    address: str
    mac: str
    port: str  # "v-<host>": the other end of the veth, in the network's namespace (the switch port)
    relay_port: str  # "d-<host>": the delay relay's side of the detour used while netem is on
    relay_bridge_port: str  # "w-<host>": the bridge's side of that detour
    address6: str | None = None  # with Lan(ipv6=True)


def networks(prefix: str, count: int) -> tuple[Network, ...]:
    return tuple(Network(name, i, f"{prefix}-net{name}", f"eth{i}") for i, name in enumerate("AB"[:count]))


def ifaces(host: str, octet: int, nets: tuple[Network, ...], *, ipv6: bool = False) -> dict[str, Iface]:
    return {
        net.iface: Iface(
            name=net.iface,
            network=net,
            address=net.address(octet),
            mac=f"02:68:6b:{net.index:02x}:00:{octet:02x}",
            port=f"v-{host}",
            relay_port=f"d-{host}",
            relay_bridge_port=f"w-{host}",
            address6=net.address6(octet) if ipv6 else None,
        )
        for net in nets
    }


def node_names(nodes: int | list[str] | tuple[str, ...]) -> list[str]:
    names = [f"node{i}" for i in range(1, nodes + 1)] if isinstance(nodes, int) else list(nodes)
    if not 1 <= len(names) <= MAX_NODES:
        raise ValueError(f"a lab has 1..{MAX_NODES} nodes, not {len(names)}")
    for name in names:
        if not NAME_RE.match(name) or name == CLIENT:
            raise ValueError(f"bad node name {name!r}: lower-case letters and digits, at most 12, not 'client'")
    if len(set(names)) != len(names):
        raise ValueError(f"node names repeat: {names}")
    return names
