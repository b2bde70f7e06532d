"""IP Recovery Kit (``comm/ip``): a virtual address that moves with its hierarchy, IPv4 or IPv6.

``hakeeper create comm/ip -t vip address=198.18.0.50/24 [interface=eth0] [backup_interface=eth1]
[ping_list=198.18.0.1,198.18.0.2] [duplicate_check=no]`` protects an address. The resource's id is
``ip-<address>``, so one node cannot hold two resources of one address. The interface may be left
out: each node then uses its interface whose own address is on the virtual address's subnet (so the
nodes' NICs need not share a name). Creation and ``hakeeper extend`` validate everything on the node
concerned: the address, the interfaces, the ping list.

restore
    If the address is on this node already (on the interface or the backup one, link up), it only
    announces it again. Otherwise it probes the LAN (an ARP Probe, or a DAD Neighbor Solicitation;
    ``probe_ms``, default 50 ms) and **refuses** when another host answers for the address, naming
    its MAC (``duplicate_check=no`` skips the probe, as LifeKeeper's ``NOIPUNIQUE``; so does a failover
    from nodes whose lease lapsed, see below); adds the address
    through netlink (pyroute2); and announces it at once with a gratuitous ARP or an unsolicited
    Neighbor Advertisement (:mod:`hakeeper.kits.neighbour`). The remaining ``announcements - 1``
    repeats go out in the background, :data:`ANNOUNCE_SPACING` apart, each only while the address is
    still on that interface; restore does not wait for them. IPv6 addresses are added without the
    kernel's DAD (``nodad``: the probe did that, and a tentative address would not answer for a
    second) and deprecated (preferred lifetime 0), so the node never picks the virtual address as
    the source of its own connections — as a secondary IPv4 address on the same subnet never is.

    **No probe in a failover.** When the restore takes the hierarchy over from dead nodes whose lease a
    majority of the voters saw lapse (:func:`hakeeper.kits.base.takeover`), the probe is skipped: it
    would wait ``probe_ms`` for an answer that the lease rules out. The only nodes of the cluster that
    may have held the address are those nodes; each is powered off, or was cut off from the majority and
    removed its virtual addresses first, within its lease (``takeover_delay - heartbeat_interval`` from
    its own detection, checked and ALERTed by it), or had hakeeperd killed or frozen and its guard cut
    them. What the probe would still catch is a host outside the cluster that took the address, or a
    losing node whose cut overran its lease (which that node ALERTs); a switchover, the cluster's start,
    local recovery and an administrator's restore keep the probe.
remove
    Stops the repeats first (a late announcement would pull the clients back), then deletes the
    address from every interface of the node, and succeeds only once it is gone. Removing an absent
    address succeeds.
quick_check
    Running: the address is on the interface (or the backup one), its link is up (administratively
    and with carrier), and, with a ping list, one host on it answers an echo sent out of that
    interface within ``ping_timeout``. Stopped: the address is not on this node. Failed: otherwise.
recover
    Local recovery: the address is added again (after the duplicate probe) and announced on the
    interface; if its link is down, or the ping list does not answer there, on the backup interface;
    only when neither works does the hierarchy fail over.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute, NetlinkError

from hakeeper.db.model import Resource
from hakeeper.errors import HakeeperError, IllegalArgument
from hakeeper.kits import neighbour
from hakeeper.kits.base import Created, Kit, KitMeta, Param, Policy, Result, Revision, seconds, takeover
from hakeeper.kits.neighbour import Address
from hakeeper.kits.ping import any_answers

logger = logging.getLogger(__name__)

Interface = IPv4Interface | IPv6Interface

ANNOUNCE_SPACING = 0.3  # s between the repeated announcements after a restore
MAX_ANNOUNCEMENTS = 20
MAX_PING_HOSTS = 16
MAX_IFNAME = 15  # IFNAMSIZ - 1

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_LOWER_UP = 0x10000  # the link has carrier
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40


# ---------------------------------------------------------------------- parameters


def parse_address(text: str) -> Interface:
    """``198.18.0.50/24`` or ``2001:db8::50/64`` -> the address with its prefix; errors name what is wrong."""
    text = text.strip()
    if "/" not in text:
        raise IllegalArgument(f"address={text!r} needs its prefix length, e.g. 198.18.0.50/24 or 2001:db8::50/64")
    try:
        vip = ipaddress.ip_interface(text)
    except ValueError:
        raise IllegalArgument(f"address={text!r} is not an IPv4 or IPv6 address with a prefix length") from None
    ip = vip.ip
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise IllegalArgument(f"address={text!r}: an unspecified, loopback or multicast address cannot be a VIP")
    if isinstance(ip, IPv4Address):
        if ip.is_reserved or ip == IPv4Address("255.255.255.255"):
            raise IllegalArgument(f"address={text!r} is a reserved address")
        if vip.network.prefixlen <= 30 and ip in (vip.network.network_address, vip.network.broadcast_address):
            what = "network's own" if ip == vip.network.network_address else "broadcast"
            raise IllegalArgument(f"address={text!r} is the {what} address of {vip.network}")
    else:
        if ip.is_link_local:
            raise IllegalArgument(f"address={text!r}: a link-local address cannot move between nodes")
        if ip.ipv4_mapped is not None:
            raise IllegalArgument(f"address={text!r}: write an IPv4 address as such, not IPv4-mapped")
    return vip


def parse_interface(text: str, what: str) -> str:
    """An interface name ('' for none): at most 15 characters, no '/', ':' or white space."""
    name = text.strip()
    if not name:
        return ""
    if len(name) > MAX_IFNAME or name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        raise IllegalArgument(f"{what}={text!r} is not an interface name (at most 15 characters, no '/', ':', space)")
    return name


def parse_ping_list(text: str, vip: Interface) -> tuple[Address, ...]:
    """``198.18.0.1,198.18.0.2`` (commas or spaces) -> the addresses, each once, in order."""
    hosts: list[Address] = []
    for word in text.replace(",", " ").split():
        try:
            host = ipaddress.ip_address(word)
        except ValueError:
            raise IllegalArgument(
                f"ping_list: {word!r} is not an IPv4 or IPv6 address (names are not resolved)"
            ) from None
        if host.is_unspecified or host.is_multicast:
            raise IllegalArgument(f"ping_list: {word} is not the address of one host")
        if host == vip.ip:
            raise IllegalArgument(f"ping_list: {word} is the virtual address itself; list other hosts")
        if host not in hosts:
            hosts.append(host)
    if len(hosts) > MAX_PING_HOSTS:
        raise IllegalArgument(f"ping_list: at most {MAX_PING_HOSTS} hosts, not {len(hosts)}")
    return tuple(hosts)


def _in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise IllegalArgument(f"{name}={value} is outside {low}..{high}")
    return value


@dataclass(frozen=True)
class IpConfig:
    """What a comm/ip resource holds (its info, as JSON in the LCD)."""

    address: Interface
    interface: str = ""  # "" = on each node, the interface on the address's subnet
    backup_interface: str = ""
    ping_list: tuple[Address, ...] = ()
    ping_timeout: int = 1  # s
    duplicate_check: bool = True
    probe_ms: int = 50
    announcements: int = 4

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> IpConfig:
        """Build and check a configuration from parsed parameters or from a resource's info."""
        address = parse_address(str(values.get("address", "")))
        interface = parse_interface(str(values.get("interface") or ""), "interface")
        backup = parse_interface(str(values.get("backup_interface") or ""), "backup_interface")
        if backup and backup == interface:
            raise IllegalArgument(f"backup_interface={backup} is the interface itself; name another one")
        pings = values.get("ping_list") or ""
        ping_text = " ".join(str(p) for p in pings) if isinstance(pings, list | tuple) else str(pings)
        try:
            timeout = int(values.get("ping_timeout", 1))
            probe_ms = int(values.get("probe_ms", 50))
            count = int(values.get("announcements", 4))
        except (TypeError, ValueError) as exc:
            raise IllegalArgument(f"a number of the IP resource is not a whole number: {exc}") from None
        check = values.get("duplicate_check", True)
        if not isinstance(check, bool):
            raise IllegalArgument(f"duplicate_check={check!r} is not yes or no")
        return cls(
            address=address,
            interface=interface,
            backup_interface=backup,
            ping_list=parse_ping_list(ping_text, address),
            ping_timeout=_in_range("ping_timeout", timeout, 1, 60),
            duplicate_check=check,
            probe_ms=_in_range("probe_ms", probe_ms, 1, 5000),
            announcements=_in_range("announcements", count, 1, MAX_ANNOUNCEMENTS),
        )

    @classmethod
    def of(cls, resource: Resource) -> IpConfig:
        if not isinstance(resource.info, dict):
            raise IllegalArgument(f"{resource.tag}: the info of a comm/ip resource is not a JSON object")
        return cls.from_values(resource.info)

    def as_info(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "interface": self.interface,
            "backup_interface": self.backup_interface,
            "ping_list": [str(h) for h in self.ping_list],
            "ping_timeout": self.ping_timeout,
            "duplicate_check": self.duplicate_check,
            "probe_ms": self.probe_ms,
            "announcements": self.announcements,
        }

    @property
    def ip(self) -> Address:
        return self.address.ip


# ---------------------------------------------------------------------- this node's links and addresses


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: str
    flags: int

    @property
    def up(self) -> bool:
        """Administratively up and with carrier."""
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)

    @property
    def why_down(self) -> str:
        return "is down" if not self.flags & IFF_UP else "has no carrier (cable or switch port down)"


@dataclass(frozen=True)
class Addr:
    index: int
    interface: Interface
    flags: int


@dataclass(frozen=True)
class Snapshot:
    """The node's links and addresses at one moment (one netlink dump of each)."""

    links: tuple[Link, ...]
    addrs: tuple[Addr, ...]

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def by_index(self, index: int) -> Link | None:
        return next((link for link in self.links if link.index == index), None)

    def holding(self, ip: Address) -> list[tuple[Link, Addr]]:
        """Where ``ip`` is configured on this node (any prefix), in interface order."""
        found = [(self.by_index(a.index), a) for a in self.addrs if a.interface.ip == ip]
        return sorted(((link, a) for link, a in found if link is not None), key=lambda pair: pair[0].index)

    def names(self) -> str:
        return ", ".join(link.name for link in self.links) or "none"


def subnet_interface(vip: Interface, snap: Snapshot) -> Link | None:
    """The interface whose own address's network contains ``vip`` (the lowest index if several), or None.

    The virtual address itself does not count: it may sit on the backup interface.
    """
    indexes = sorted(
        {
            a.index
            for a in snap.addrs
            if a.interface.version == vip.version and a.interface.ip != vip.ip and vip.ip in a.interface.network
        }
    )
    for index in indexes:
        link = snap.by_index(index)
        if link is not None and not link.flags & IFF_LOOPBACK:
            return link
    return None


@dataclass(frozen=True)
class Placement:
    """Where an address goes on this node: its interface, and the backup interface if there is one."""

    primary: Link
    backup: Link | None

    def candidates(self) -> list[Link]:
        return [self.primary, *([self.backup] if self.backup else [])]


def place(config: IpConfig, snap: Snapshot, node: str) -> Placement:
    """Find the configured interfaces on this node; IllegalArgument (a configuration error) if one is missing."""
    if config.interface:
        primary = snap.link(config.interface)
        if primary is None:
            raise IllegalArgument(f"{node} has no interface {config.interface} (it has: {snap.names()})")
    else:
        found = subnet_interface(config.address, snap)
        if found is None:
            raise IllegalArgument(
                f"no interface of {node} has an address on {config.address.network}: give one with interface=NAME"
            )
        primary = found
    backup = None
    if config.backup_interface:
        backup = snap.link(config.backup_interface)
        if backup is None:
            raise IllegalArgument(f"{node} has no backup interface {config.backup_interface} (it has: {snap.names()})")
        if backup.index == primary.index:
            raise IllegalArgument(f"backup_interface {backup.name} is the address's own interface on {node}")
    return placement_checked(config, Placement(primary, backup))


def placement_checked(config: IpConfig, placement: Placement) -> Placement:
    if isinstance(config.ip, IPv6Address):
        for link in placement.candidates():
            if ipv6_disabled(link.name):
                raise IllegalArgument(f"IPv6 is disabled on {link.name} (net.ipv6.conf.{link.name}.disable_ipv6=1)")
    return placement


def ipv6_disabled(ifname: str) -> bool:
    """Whether IPv6 is off on ``ifname`` in this network namespace (/proc/sys/net is per namespace)."""
    try:
        return Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").read_text().strip() == "1"
    except OSError:
        return False


class Netlink:
    """This node's links and addresses through one rtnetlink socket (pyroute2's AsyncIPRoute)."""

    def __init__(self, ipr: AsyncIPRoute) -> None:
        self.ipr = ipr

    async def snapshot(self) -> Snapshot:
        links = []
        async for msg in await self.ipr.link("dump"):
            links.append(Link(msg["index"], msg.get("ifname") or "", msg.get("address") or "", msg["flags"]))
        addrs = []
        async for msg in await self.ipr.addr("dump"):
            text = msg.get("local") or msg.get("address")  # IPv4: IFA_LOCAL is the interface's own address
            if not text:
                continue
            flags = msg.get("IFA_FLAGS") or msg["flags"]
            addrs.append(Addr(msg["index"], ipaddress.ip_interface(f"{text}/{msg['prefixlen']}"), flags))
        return Snapshot(tuple(links), tuple(addrs))

    async def add(self, link: Link, vip: Interface) -> bool:
        """Add ``vip`` on ``link``; False if it was there already."""
        options: dict[str, Any] = {}
        if isinstance(vip, IPv4Interface):
            if vip.network.prefixlen <= 30:
                options["broadcast"] = str(vip.network.broadcast_address)
        else:
            options.update(flags=IFA_F_NODAD, preferred_lft=0)
        try:
            await self.ipr.addr(
                "add", index=link.index, address=str(vip.ip), prefixlen=vip.network.prefixlen, **options
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise
        return True

    async def delete(self, addr: Addr) -> bool:
        """Delete one configured address; False if it was gone already."""
        iface = addr.interface
        try:
            await self.ipr.addr("del", index=addr.index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True


@contextlib.asynccontextmanager
async def netlink() -> AsyncIterator[Netlink]:
    async with AsyncIPRoute() as ipr:
        yield Netlink(ipr)


class InUse(HakeeperError):
    """Another host answers for the address."""


# ---------------------------------------------------------------------- the repeated announcements


class Repeats:
    """The background announcement repeats of this process, one task per address.

    Kits are instantiated more than once in a daemon (the engine's, a command's), so the tasks live
    here, not in a kit: a remove must stop the repeats that another instance's restore started.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        self.stop(key)
        task = asyncio.get_running_loop().create_task(coro, name=f"announce {key}")
        self._tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is done:
                del self._tasks[key]

        task.add_done_callback(forget)

    def stop(self, key: str) -> None:
        """Cancel the repeats of ``key``: at once in this loop (a step already due does not run), else soon."""
        task = self._tasks.pop(key, None)
        if task is None or task.done():
            return
        try:
            here = asyncio.get_running_loop() is task.get_loop()
        except RuntimeError:
            here = False
        if here:
            task.cancel()
        else:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the task is over anyway
                task.get_loop().call_soon_threadsafe(task.cancel)

    def running(self, key: str) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()


REPEATS = Repeats()


# ---------------------------------------------------------------------- the kit


class IpKit(Kit):
    meta = KitMeta(
        app="comm",
        type="ip",
        description="a virtual IPv4 or IPv6 address, announced by gratuitous ARP / neighbour advertisement",
        params=(
            Param("address", "the virtual address and its prefix: 198.18.0.50/24, 2001:db8::50/64", required=True),
            Param("interface", "its interface (default: on each node, the one on that subnet)", default=""),
            Param("backup_interface", "where local recovery moves it when the interface fails", default=""),
            Param("ping_list", "hosts that always answer, comma-separated; quickCheck needs one answer", default=""),
            seconds("ping_timeout", "seconds the ping list has to answer", 1, maximum=60),
            Param("duplicate_check", "refuse to restore while another host answers for it", "boolean", default="yes"),
            Param(
                "probe_ms",
                "how long the duplicate probe waits for an answer, in ms",
                "integer",
                default="50",
                minimum=1,
                maximum=5000,
            ),
            Param(
                "announcements",
                "announcements after each restore (the first at once)",
                "integer",
                default="4",
                minimum=1,
                maximum=MAX_ANNOUNCEMENTS,
            ),
        ),
        timeouts={
            "restore": 10.0,
            "remove": 10.0,
            "quick_check": 10.0,
            "recover": 20.0,
            "validate": 10.0,
            "delete": 10.0,
        },
    )

    def check_params(self, params: Mapping[str, str]) -> dict[str, Any]:
        return IpConfig.from_values(super().check_params(params)).as_info()

    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        config = IpConfig.from_values(values)
        return Created(id or f"ip-{config.ip}", config.as_info())

    def revise(self, resource: Resource, params: Mapping[str, str]) -> Revision:
        """Everything but the address (the resource's identity); the interfaces only while it runs nowhere."""
        if "address" in params:
            raise IllegalArgument(
                f"{resource.tag}: the address is what the resource is (its id is {resource.id}): "
                "create another comm/ip resource for another address"
            )
        old = IpConfig.of(resource).as_info()
        new = IpConfig.from_values({**old, **self.parse_changes(params)}).as_info()
        changed = tuple(sorted(name for name in params if new.get(name) != old.get(name)))
        moving = tuple(name for name in changed if name in ("interface", "backup_interface"))
        return Revision(new, {}, changed, out_of_service=moving)

    def timeout(self, action: str, resource: Resource) -> float:
        base = super().timeout(action, resource)
        if action in ("quick_check", "recover"):
            with contextlib.suppress(IllegalArgument):
                return base + IpConfig.of(resource).ping_timeout * (2 if action == "recover" else 1)
        return base

    # -- actions

    async def validate(self, resource: Resource) -> Result:
        try:
            config = IpConfig.of(resource)
            async with netlink() as net:
                snap = await net.snapshot()
            held = snap.holding(config.ip)
            if held and not resource.state.in_service:
                raise IllegalArgument(
                    f"{config.ip} is already an address of {self.ctx.node} ({held[0][0].name}): a virtual address "
                    "must not be one the node holds by itself"
                )
            placement = place(config, snap, self.ctx.node)
        except IllegalArgument as exc:
            return Result.failure(str(exc), Policy.CONFIG)
        backup = f", backup {placement.backup.name}" if placement.backup else ""
        return Result.success(f"{config.address} on {placement.primary.name}{backup}")

    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        started = time.monotonic()
        try:
            config = IpConfig.of(resource)
            async with netlink() as net:
                snap = await net.snapshot()
                placement = place(config, snap, self.ctx.node)
                return await self._bring_up(resource, config, net, snap, placement.candidates(), started=started)
        except IllegalArgument as exc:
            return Result.failure(f"{resource.tag}: {exc}", Policy.CONFIG)
        except InUse as exc:
            return Result.failure(f"{resource.tag}: {exc}", Policy.HARD)
        except (OSError, NetlinkError) as exc:
            return Result.failure(f"{resource.tag}: cannot add the address: {_why(exc)}")

    async def _bring_up(
        self,
        resource: Resource,
        config: IpConfig,
        net: Netlink,
        snap: Snapshot,
        candidates: list[Link],
        *,
        started: float,
    ) -> Result:
        """Have the address on the first usable of ``candidates``, announced; the duplicate probe before adding.

        Raises :class:`InUse` when another host answers the probe.
        """
        usable = [link for link in candidates if link.up]
        for link, _addr in snap.holding(config.ip):
            if any(link.index == u.index for u in usable):
                self._announce(resource, config, link)
                return Result.success(f"{config.address} is on {link.name} already; announced again")
        if not usable:
            downs = "; ".join(f"{link.name} {link.why_down}" for link in candidates)
            return Result.failure(f"{resource.tag}: no interface to hold {config.address}: {downs}", Policy.HARD)
        target = usable[0]
        for _link, addr in snap.holding(config.ip):  # a copy on a dead link, or on a wrong interface: ours to move
            await net.delete(addr)
        probed = ""
        gone = takeover()
        if config.duplicate_check and gone is not None:
            probed = f", no duplicate probe ({gone.describe()})"
        elif config.duplicate_check:
            before = time.monotonic()
            holder = await neighbour.probe(
                target.name, neighbour.mac_bytes(target.mac), config.ip, config.probe_ms / 1000
            )
            if holder is not None:
                raise InUse(
                    f"{config.ip} is in use on the network: {neighbour.mac_text(holder)} answers for it on "
                    f"{target.name}; refusing to add it twice (remove it there, or set duplicate_check=no)"
                )
            probed = f", duplicate probe {(time.monotonic() - before) * 1000:.1f} ms"
        await net.add(target, config.address)
        self._announce(resource, config, target)
        took = (time.monotonic() - started) * 1000
        fallback = f" (backup: {candidates[0].name} {candidates[0].why_down})" if target is not candidates[0] else ""
        logger.info(
            "%s: %s added on %s%s and announced in %.1f ms%s; %d more announcement(s) within %.1f s",
            resource.tag, config.address, target.name, fallback, took, probed,
            config.announcements - 1, (config.announcements - 1) * ANNOUNCE_SPACING,
        )  # fmt: skip
        return Result.success(f"{config.address} added on {target.name}{fallback} and announced")

    def _announce(self, resource: Resource, config: IpConfig, link: Link) -> None:
        """Announce now, and start the repeats in the background (replacing any still running)."""
        mac = neighbour.mac_bytes(link.mac)
        neighbour.announce(link.name, mac, config.ip)
        if config.announcements > 1:
            REPEATS.start(str(config.ip), _repeat(resource.tag, link, mac, config.ip, config.announcements - 1))

    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        try:
            config = IpConfig.of(resource)
        except IllegalArgument as exc:
            return Result.failure(f"{resource.tag}: {exc}", Policy.CONFIG)
        REPEATS.stop(str(config.ip))  # before the delete: no announcement may follow it
        try:
            async with netlink() as net:
                held = (await net.snapshot()).holding(config.ip)
                for _link, addr in held:
                    await net.delete(addr)
                left = (await net.snapshot()).holding(config.ip)
        except (OSError, NetlinkError) as exc:
            return Result.failure(f"{resource.tag}: cannot delete {config.address}: {_why(exc)}", Policy.HARD)
        if left:
            where = ", ".join(link.name for link, _ in left)
            return Result.failure(f"{resource.tag}: {config.ip} is still on {where} after deleting it", Policy.HARD)
        if not held:
            return Result.success(f"{config.address} was not on this node")
        return Result.success(f"{config.address} deleted from {', '.join(link.name for link, _ in held)}")

    async def quick_check(self, resource: Resource) -> Result:
        try:
            config = IpConfig.of(resource)
            async with netlink() as net:
                snap = await net.snapshot()
        except IllegalArgument as exc:
            return Result.failed(f"{resource.tag}: {exc}", Policy.CONFIG)
        except (OSError, NetlinkError) as exc:
            return Result.failed(f"{resource.tag}: cannot read the addresses: {_why(exc)}")
        return await self._check(config, snap)

    async def _check(self, config: IpConfig, snap: Snapshot) -> Result:
        held = snap.holding(config.ip)
        if not held:
            return Result.stopped(f"{config.ip} is not on this node")
        link, addr = next((pair for pair in held if pair[0].up), held[0])
        if not link.up:
            return Result.failed(f"{config.ip} is on {link.name}, which {link.why_down}")
        if addr.flags & (IFA_F_DADFAILED | IFA_F_TENTATIVE):
            return Result.failed(f"{config.ip} on {link.name} is not usable (duplicate address detection)")
        if config.ping_list:
            answer = await any_answers(config.ping_list, link.name, link.index, config.ping_timeout)
            if answer is None:
                hosts = ", ".join(str(h) for h in config.ping_list)
                return Result.failed(
                    f"no host of the ping list ({hosts}) answered on {link.name} in {config.ping_timeout} s"
                )
            return Result.running(f"{config.address} on {link.name}; {answer} answers")
        return Result.running(f"{config.address} on {link.name}")

    def has_recover(self, resource: Resource) -> bool:
        return True

    async def recover(self, resource: Resource) -> Result:
        """Add and announce the address again on its interface, else on the backup one."""
        started = time.monotonic()
        try:
            config = IpConfig.of(resource)
            async with netlink() as net:
                snap = await net.snapshot()
                placement = place(config, snap, self.ctx.node)
                tried: list[str] = []
                for link in placement.candidates():
                    if not link.up:
                        tried.append(f"{link.name} {link.why_down}")
                        continue
                    result = await self._bring_up(resource, config, net, snap, [link], started=started)
                    if not result.ok:
                        tried.append(result.message)
                        continue
                    check = await self._check(config, await net.snapshot())
                    if check.ok:
                        return Result.success(f"{result.message}; {check.message}")
                    tried.append(f"on {link.name}: {check.message}")
                    snap = await net.snapshot()
        except IllegalArgument as exc:
            return Result.failure(f"{resource.tag}: {exc}", Policy.CONFIG)
        except InUse as exc:  # another host has it: adding it here would make it worse
            return Result.failure(f"{resource.tag}: {exc}", Policy.HARD)
        except (OSError, NetlinkError) as exc:
            return Result.failure(f"{resource.tag}: recover failed: {_why(exc)}")
        return Result.failure(f"{resource.tag}: cannot recover {config.address} here: {'; '.join(tried)}")


async def _repeat(tag: str, link: Link, mac: bytes, ip: Address, count: int) -> None:
    """The later announcements, :data:`ANNOUNCE_SPACING` apart, each only while ``ip`` is still on ``link``."""
    for _ in range(count):
        await asyncio.sleep(ANNOUNCE_SPACING)
        try:
            async with netlink() as net:
                snap = await net.snapshot()
            if not any(held.index == link.index for held, _ in snap.holding(ip)):
                logger.info("%s: %s is no longer on %s; announcements stop", tag, ip, link.name)
                return
            neighbour.announce(link.name, mac, ip)
        except (OSError, NetlinkError) as exc:
            logger.warning("%s: announcing %s on %s failed: %s", tag, ip, link.name, _why(exc))
            return


def _why(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        return f"netlink: {exc.args[1] if len(exc.args) > 1 else errno.errorcode.get(exc.code, exc.code)}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
