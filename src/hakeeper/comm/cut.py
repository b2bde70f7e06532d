"""The heartbeat process's own cut: this node's virtual addresses removed the moment it hears no majority.

hakeeperd cuts the network face when it loses quorum (:mod:`hakeeper.cluster.lease`), but
it learns of the loss from the heartbeat process and acts on a loop that a busy machine
may slow by tenths of a second, more than the lease (0.10 s by default). The heartbeat
process runs SCHED_FIFO with its memory locked and sees the loss first, so it removes
the addresses itself, in a millisecond, whatever hakeeperd is doing. hakeeperd then
records them OSU as it goes on (their remove finds them gone, which succeeds).

hakeeperd sends the addresses to cut (its *face*: tag -> address of every comm/ip
resource in service here, only when the lease applies) with its ticks.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyroute2 import AsyncIPRoute, NetlinkError

logger = logging.getLogger(__name__)

GONE = (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV)


@dataclass
class Outcome:
    cut: list[str] = field(default_factory=list)  # tags whose address was removed or was not here
    failed: dict[str, str] = field(default_factory=dict)  # tag -> why


async def cut_addresses(face: Mapping[str, str]) -> Outcome:
    """Remove every address of ``face`` (tag -> address) from every interface that has it."""
    outcome = Outcome()
    wanted = {}
    for tag, text in face.items():
        try:
            wanted[tag] = ipaddress.ip_address(text)
        except ValueError:
            outcome.failed[tag] = f"not an address: {text!r}"
    try:
        async with AsyncIPRoute() as ipr:
            held = []
            async for msg in await ipr.addr("dump"):
                text = msg.get("local") or msg.get("address")  # IPv4: IFA_LOCAL is the interface's own address
                if text:
                    held.append((msg["index"], ipaddress.ip_address(text), msg["prefixlen"]))
            for tag, ip in wanted.items():
                try:
                    for index, address, prefixlen in held:
                        if address == ip:
                            await _delete(ipr, index, str(ip), prefixlen)
                except (NetlinkError, OSError) as exc:
                    outcome.failed[tag] = str(exc)
                else:
                    outcome.cut.append(tag)
    except (NetlinkError, OSError) as exc:  # no netlink at all: every address not cut yet failed
        for tag in wanted:
            if tag not in outcome.cut:
                outcome.failed.setdefault(tag, f"netlink: {exc}")
    return outcome


async def _delete(ipr: AsyncIPRoute, index: int, address: str, prefixlen: int) -> None:
    try:
        await ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        if exc.code not in GONE:
            raise
