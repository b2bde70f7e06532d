"""Which addresses of two nodes make a communication path: pure rules for a node's registration.

A node *announces* its addresses, one per network, as ``ADDRESS/PREFIX``
(``198.18.0.13/24``) or a bare ``ADDRESS`` (``198.18.0.13``). Two addresses
pair when they are of one IP version and one of them lies in the other's
network (the one whose prefix is known). :func:`pair` pairs a node's own
addresses with another node's, in the order the other node announced them:
that order is the paths' priority order (the first network is priority 1).
Each address is in one pair at most: one path per network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hakeeper.errors import IllegalArgument

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def parse_announced(text: str) -> str:
    """``ADDRESS[/PREFIX]`` in normal form (``198.18.0.13/24``, ``2001:2::13/64``, ``198.18.0.13``)."""
    raw = str(text).strip()
    try:
        if "/" not in raw:
            return str(ipaddress.ip_address(raw))
        iface = ipaddress.ip_interface(raw)
    except ValueError:
        raise IllegalArgument(f"address {text!r} is not ADDRESS or ADDRESS/PREFIX (e.g. 198.18.0.13/24)") from None
    return f"{iface.ip}/{iface.network.prefixlen}"


def address_of(announced: str) -> str:
    """The address alone: ``198.18.0.13/24`` -> ``198.18.0.13``."""
    return announced.partition("/")[0]


def _interface(announced: str) -> tuple[Interface, bool]:
    """The address as an interface, and whether its prefix was given (else a host route, matching only itself)."""
    return ipaddress.ip_interface(announced), "/" in announced


def same_network(one: str, other: str) -> bool:
    """Whether two announced addresses are on one network (by whichever prefix is known)."""
    a, a_has = _interface(one)
    b, b_has = _interface(other)
    if a.version != b.version or a.ip == b.ip:
        return False
    return (a_has and b.ip in a.network) or (b_has and a.ip in b.network)


def pair(own: Sequence[str], theirs: Sequence[str]) -> list[tuple[str, str]]:
    """(own address, their address) for each of ``theirs`` that one of ``own`` shares a network with.

    In the order of ``theirs``; the first free own address on that network is taken.
    Bare addresses come back bare: ``pair(["198.18.0.11"], ["198.18.0.13/24"])`` is
    ``[("198.18.0.11", "198.18.0.13")]``.
    """
    used: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for their in theirs:
        for mine in own:
            if address_of(mine) in used or not same_network(mine, their):
                continue
            used.add(address_of(mine))
            pairs.append((address_of(mine), address_of(their)))
            break
    return pairs
