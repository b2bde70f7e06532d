"""The addresses a node announces when it joins: one per network, ``ADDRESS/PREFIX``.

By default, every address of this host's interfaces that is up, of global scope and
primary: no loopback, no link-local, and no secondary address (a virtual address an
IP resource added in a subnet the interface has already). ``--address`` chooses them
instead, in priority order, or else the configuration file's ``[listen] addresses``.
Read from ``ip -json address`` (iproute2), in the network namespace the command runs in.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

from hakeeper.comm.addresses import parse_address
from hakeeper.db.members import parse_announced
from hakeeper.errors import IllegalArgument, SystemCallFailed

IP_TIMEOUT = 10.0


def interface_addresses() -> list[str]:
    """This host's global, primary addresses of interfaces that are up (IPv4 first), as ``ADDRESS/PREFIX``."""
    try:
        done = subprocess.run(
            ["ip", "-json", "address", "show", "up"], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemCallFailed(f"cannot list this host's addresses (ip -json address): {exc}; give --address") from None
    if done.returncode != 0:
        raise SystemCallFailed(f"cannot list this host's addresses: {done.stderr.strip()}; give --address")
    try:
        return global_addresses(json.loads(done.stdout or "[]"))
    except (ValueError, TypeError, KeyError):
        raise SystemCallFailed("cannot read the output of 'ip -json address'; give --address") from None


def global_addresses(links: list[dict[str, object]]) -> list[str]:
    """The announced addresses in ``ip -json address`` output (pure: tested on samples)."""
    found: list[str] = []
    for link in links:
        flags = link.get("flags", [])
        if not isinstance(flags, list) or "LOOPBACK" in flags:
            continue
        infos = link.get("addr_info", [])
        for info in infos if isinstance(infos, list) else []:
            if info.get("scope") != "global" or info.get("secondary") or info.get("family") not in ("inet", "inet6"):
                continue
            found.append(parse_announced(f"{info['local']}/{info['prefixlen']}"))
    return sorted(found, key=lambda a: ":" in a)  # IPv4 first, else in the kernel's order


def announced(given: list[str] | None, configured: Sequence[str] = ()) -> list[str]:
    """The addresses to announce: ``given`` (checked), else those of ``configured`` (the configuration
    file's ``[listen] addresses``, "HOST" or "HOST:PORT", in its order) with the prefix their interface
    has, else all of this host's (:func:`interface_addresses`)."""
    if given:
        return list(dict.fromkeys(parse_announced(a) for a in given))
    found = interface_addresses()
    if configured:
        by_host = {a.split("/")[0]: a for a in found}
        hosts = [parse_address(a, 0, what="listen.addresses address", listen=True)[0] for a in configured]
        missing = [h for h in hosts if h not in by_host]
        if missing:
            raise IllegalArgument(
                f"[listen] addresses names {', '.join(missing)}, which no interface here has (up, global): "
                "fix the configuration file, or give --address"
            )
        return list(dict.fromkeys(by_host[h] for h in hosts))
    if not found:
        raise IllegalArgument("this host has no global address on an interface that is up: give --address")
    return found
