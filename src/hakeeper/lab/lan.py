"""The lab's LAN: nodes and a client in namespaces on one or two bridged networks, and the faults to inject.

    with Lan(nodes=3, second_network=True) as lan:
        node1, node2, node3 = lan.nodes
        lan.partition([node1], [node2, node3])
        assert not node2.can_reach(node1.address, timeout=0.5)

Topology (nothing is created in the root network namespace, every address is in 198.18.0.0/15)::

    <prefix>-netA : br0 + v-<host> ports          <prefix>-node1 : eth0 198.18.0.11 (eth1 198.18.1.11)
    <prefix>-netB : br0 + v-<host> ports (opt.)   <prefix>-client: eth0 198.18.0.100 (eth1 198.18.1.100)

Faults are modelled on hardware. ``power_off`` pulls the plugs (deletes the node's veths) and kills
every process of the node, holder included; ``power_on`` boots it again: a fresh network, mount, UTS and
IPC namespace (addresses added by daemons, mounts and hostname changes are gone, as after a reboot),
with the same MACs, and with the LAN's faults (partition, pulled cables, netem) still applying.
``link_down`` pulls a cable (the switch port goes down; the node sees NO-CARRIER). ``partition`` drops
frames by source MAC at the ingress of the nodes' interfaces (nftables netdev tables, inside the node
namespaces), so it also covers ARP and addresses a node takes later (VIPs). ``netem`` delays and drops the
frames delivered to a host; this kernel has no sch_netem, so a relay process on the switch side does it
(see relay.py). ``cpu_hog`` runs busy loops. Everything the LAN starts lives in its namespaces, so
``close()`` - and ``cleanup_stale()`` after a crashed run - find it all by namespace and kill it by PID.

IPv6 is off by default: the hosts' links get no IPv6 at all (``net.ipv6.conf.default.disable_ipv6=1``
before they are created), so nothing but 198.18.0.0/15 goes on the wire. ``Lan(ipv6=True)`` opts in: every
host interface also gets an address of the benchmarking prefix 2001:2::/48 (RFC 5180) - network A
2001:2::/64, B 2001:2:0:1::/64, node1 2001:2::11, the client 2001:2::100 (see topology.py) - added without
DAD, so it is usable at once. The kernel makes no link-local addresses there (``addr_gen_mode=1``) and
neither solicits nor accepts router advertisements, so the only IPv6 addresses on the wire are of 2001:2::/48
(and ``::`` as the source of duplicate address detection). The switches never get IPv6 of their own: they
forward frames.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from . import procs, shell, state, topology
from .errors import LabError, LanUnavailable
from .hog import CpuHog
from .netem import Impairment, Relay, detour_lines
from .node import Node
from .shell import Command

NEEDS_ROOT = "needs root (network namespaces)"
NFT_TABLE = "testlan"

DEFAULT_SYSCTLS = {
    # one host, one answer: a node answers ARP only for addresses of the interface asked
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
}
# Interfaces created after this (eth0, eth1, the bridges) get no IPv6, so nothing but 198.18.0.0/15 ever
# goes on the wire; lo exists already and keeps ::1 for daemons that listen on localhost.
NO_IPV6 = {"net.ipv6.conf.default.disable_ipv6": "1"}
# With Lan(ipv6=True): only the addresses of 2001:2::/48 the lab adds; no link-local, no router discovery.
IPV6_ONLY_OURS = {
    "net.ipv6.conf.default.addr_gen_mode": "1",
    "net.ipv6.conf.default.accept_ra": "0",
    "net.ipv6.conf.default.router_solicitations": "0",
}

Hosts = Node | Iterable[Node] | None


def unavailable_reason() -> str | None:
    """Why this process cannot build a LAN of namespaces, or None when it can."""
    if os.geteuid() != 0:
        return NEEDS_ROOT
    try:
        for name in ("ip", "nsenter", "unshare", "nft", "sh", "true"):
            shell.tool(name)
    except LanUnavailable as e:
        return str(e)
    return _probe()


@functools.cache
def _probe() -> str | None:
    proc = shell.run([shell.tool("unshare"), "--net", "--mount", "--uts", "--ipc", shell.tool("true")], check=False)
    return None if proc.returncode == 0 else f"{NEEDS_ROOT}: unshare: {proc.stderr.strip()}"


class Lan:
    """A LAN of nodes and a client; a context manager (or ``start()`` / ``close()``).

    ``nodes``: how many (named node1..nodeN), or the names. ``second_network``: also eth1 on 198.18.1.0/24.
    ``tmpfs``: directories that every node gets as an empty private tmpfs (its RAM: gone at power-off).
    ``sysctls``: extra or overriding ``net.*`` settings for every host. ``ipv6``: IPv6 on the hosts' links too,
    an address of 2001:2::/48 on each (``node.address6``; see the module's docstring).
    ``state_dir``: where the state file goes (``/run``; tests of the lab itself use their tmp dir).
    """

    def __init__(
        self,
        nodes: int | Sequence[str] = 3,
        *,
        second_network: bool = False,
        tmpfs: Sequence[str] = (),
        sysctls: Mapping[str, str] | None = None,
        ipv6: bool = False,
        state_dir: str | os.PathLike[str] = state.STATE_DIR,
    ) -> None:
        self._names = topology.node_names(nodes if isinstance(nodes, int) else list(nodes))
        for path in tmpfs:
            if not os.path.isabs(path):
                raise ValueError(f"tmpfs mount point must be absolute: {path!r}")
        self._network_count = 2 if second_network else 1
        self._tmpfs = list(tmpfs)
        self._sysctls = {**DEFAULT_SYSCTLS, **(IPV6_ONLY_OURS if ipv6 else NO_IPV6), **(sysctls or {})}
        self._ipv6 = ipv6
        self._state_dir = Path(state_dir)
        self._lock = threading.RLock()
        self._table = procs.ProcessTable()
        self.prefix = ""
        self.state_file: Path | None = None
        self.networks: tuple[topology.Network, ...] = ()
        self.nodes: list[Node] = []
        self._client: Node | None = None
        self._blocked: set[frozenset[str]] = set()
        self._cables_out: set[tuple[str, str]] = set()
        self._impairments: dict[tuple[str, str], Impairment] = {}
        self._detoured: set[tuple[str, str]] = set()
        self._relays: dict[str, Relay] = {}
        self._hogs: list[CpuHog] = []
        self._open = False

    def __repr__(self) -> str:
        return f"<Lan {self.prefix or '(not started)'} {[n.name for n in self.nodes]} nets={self._network_count}>"

    # ---- the hosts ----------------------------------------------------------------------------------

    @property
    def client(self) -> Node:
        """The host that plays the users (198.18.0.100)."""
        if self._client is None:
            raise LabError(f"{self!r} has not been started")
        return self._client

    @property
    def hosts(self) -> list[Node]:
        """The nodes and the client."""
        return [*self.nodes, *([self._client] if self._client else [])]

    def node(self, name: str) -> Node:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} on {self!r}")

    @property
    def namespaces(self) -> list[str]:
        """Every network namespace of this LAN (networks first)."""
        return [net.netns for net in self.networks] + [h.netns for h in self.hosts]

    # ---- life cycle --------------------------------------------------------------------------------

    def __enter__(self) -> Lan:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        except LabError as error:
            if exc is None:
                raise
            exc.add_note(f"and the lab did not clean up: {error}")

    def start(self) -> Lan:
        """Build the LAN (removing stale LANs of dead test runs first); ``LanUnavailable`` if this machine can't."""
        if self._open or self.prefix:
            raise LabError(f"{self!r} was started already")
        reason = unavailable_reason()
        if reason:
            raise LanUnavailable(reason)
        state.cleanup_stale(self._state_dir)
        state.register(self)
        try:
            with state.deferred_signals():
                nets = ["netA", "netB"][: self._network_count]
                self.prefix, self.state_file = state.claim(self._state_dir, [*nets, *self._names, topology.CLIENT])
                self._open = True
                self.networks = topology.networks(self.prefix, self._network_count)
                octets = [topology.FIRST_NODE_OCTET + i for i in range(1, len(self._names) + 1)]
                self.nodes = [self._host(name, octet) for name, octet in zip(self._names, octets, strict=True)]
                self._client = self._host(topology.CLIENT, topology.CLIENT_OCTET)
                self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _host(self, name: str, octet: int) -> Node:
        ifaces = topology.ifaces(name, octet, self.networks, ipv6=self._ipv6)
        return Node(name, f"{self.prefix}-{name}", ifaces, self._table, sysctls=self._sysctls, tmpfs=self._tmpfs)

    def _build(self) -> None:
        batch = "".join(f"netns add {ns}\n" for ns in self.namespaces)
        proc = shell.run([shell.tool("ip"), "-batch", "-"], input=batch, check=False)
        if proc.returncode != 0:
            if "permitted" in proc.stderr or "denied" in proc.stderr:
                raise LanUnavailable(f"{NEEDS_ROOT}: ip netns add: {proc.stderr.strip()}")
            raise LabError(f"ip netns add: {proc.stderr.strip()}")
        self._boot(self.hosts)
        # the switches: bridge, then every host's port (the host's sysctls are set: no IPv6 on its new eth)
        commands = []
        for net in self.networks:
            lines = ["link set lo up", f"link add {topology.BRIDGE} type bridge stp_state 0 forward_delay 0"
                     " mcast_snooping 0", f"link set {topology.BRIDGE} up"]  # fmt: skip
            for host in self.hosts:
                lines += self._port_lines(host, net)
            commands.append(self._switch_command(net, lines))
        shell.run_all(commands)
        shell.run_all([self._address_command(host) for host in self.hosts])

    def _boot(self, hosts: Sequence[Node]) -> None:
        for host in hosts:
            host._start_holder()
        deadline = time.monotonic() + 10
        for host in hosts:
            host._await_holder(deadline)

    def _switch_command(self, net: topology.Network, lines: list[str]) -> Command:
        """``ip -batch`` in a network's namespace, after its own sysctls (no IPv6 on the bridge, ever)."""
        path = "/proc/sys/net/ipv6/conf/default/disable_ipv6"
        sysctls = f"if [ -e {path} ]; then printf 1 > {path}; fi\n"
        script = f"{sysctls}exec {shell.tool('ip')} -batch -"
        argv = [shell.tool("nsenter"), f"--net={procs.NETNS_DIR}/{net.netns}", shell.tool("sh"), "-c", script]
        return Command(argv, input="".join(line + "\n" for line in lines))

    def _port_lines(self, host: Node, net: topology.Network) -> list[str]:
        iface = host.ifaces[net.iface]
        lines = [
            f"link add {iface.port} type veth peer name {iface.name} address {iface.mac} netns {host.netns}",
            f"link set {iface.port} master {topology.BRIDGE}",
        ]
        if (host.name, iface.name) not in self._cables_out:
            lines.append(f"link set {iface.port} up")
        return lines

    def _address_command(self, host: Node) -> Command:
        lines = ["link set lo up"]
        for iface in host.ifaces.values():
            lines.append(f"addr add {iface.address}/{topology.PREFIXLEN} brd + dev {iface.name}")
            if iface.address6 is not None:
                lines.append(f"addr add {iface.address6}/{topology.PREFIXLEN6} dev {iface.name} nodad")
            lines.append(f"link set {iface.name} up")
        return Command([shell.tool("ip"), "-n", host.netns, "-batch", "-"], input="".join(f"{x}\n" for x in lines))

    def close(self) -> None:
        """Kill everything the LAN started or that runs in its namespaces, delete them and the state file.

        Runs on every exit path (the ``with`` block, fixtures, SIGINT/SIGTERM, interpreter exit).
        """
        with self._lock:
            if not self._open:
                state.unregister(self)
                return
            problems: list[str] = []
            try:
                with state.deferred_signals():
                    for relay in self._relays.values():
                        relay.stop()
                    self._relays.clear()
                    for hog in self._hogs:
                        hog.stop()
                    for host in self.hosts:
                        host._release()
                    stuck = state.teardown(self.namespaces)
                    if stuck:
                        problems.append(f"processes {stuck} survived SIGKILL")
                    unreaped = self._table.finish(close_pipes=True)
                    if unreaped:
                        problems.append(f"children {unreaped} could not be reaped")
                    left = [ns for ns in self.namespaces if os.path.exists(f"{procs.NETNS_DIR}/{ns}")]
                    if left:
                        problems.append(f"namespaces {left} could not be deleted")
                    if self.state_file is not None:
                        self.state_file.unlink(missing_ok=True)
                    self._open = False
            finally:
                state.unregister(self)
            if problems:
                raise LabError(f"lab LAN {self.prefix}: " + "; ".join(problems))

    # ---- power --------------------------------------------------------------------------------------

    def power_off(self, node: Node) -> None:
        """Pull the plugs and stop the machine: its links vanish and every process in it dies (SIGKILL).

        Its processes are stopped (SIGSTOP) first, so that the node falls silent on every
        link at the same moment, as a machine losing power does; the links are deleted
        one network at a time, and a node still running between two deletions would send
        one more heartbeat on the link deleted last.
        """
        with self._lock, state.deferred_signals():
            self._own(node)
            if not node.is_on:
                return
            ident = procs.netns_id(node.netns)
            procs.stop_all_in({ident} if ident else set())
            for name in node.ifaces:
                if (node.name, name) in self._detoured:
                    self._undetour(node, name, reattach=False)
            commands = []
            for iface in node.ifaces.values():
                lines = [f"link del {iface.port}"]
                commands.append(self._switch_command(iface.network, lines))
            shell.run_all(commands)
            node._release()
            stuck = procs.kill_all_in({ident} if ident else set())
            unreaped = self._table.finish(node.name)
            shell.run([shell.tool("ip"), "netns", "del", node.netns])
            if stuck or unreaped:
                raise LabError(f"{node.name}: processes {stuck or unreaped} survived the power-off")

    def power_on(self, node: Node) -> None:
        """Boot the node again: fresh namespaces, same addresses and MACs, the LAN's faults applying."""
        with self._lock, state.deferred_signals():
            self._own(node)
            if node.is_on:
                return
            shell.run([shell.tool("ip"), "netns", "add", node.netns])
            self._boot([node])
            shell.run_all([self._switch_command(net, self._port_lines(node, net)) for net in self.networks])
            shell.run_all([self._address_command(node)])
            if any(node.name in pair for pair in self._blocked):
                self._apply_filters([node])
            for (name, iface), impairment in self._impairments.items():
                if name == node.name:
                    self._impair(node, iface, impairment)

    # ---- faults of the network ------------------------------------------------------------------------

    def partition(self, group_a: Iterable[Node], group_b: Iterable[Node]) -> None:
        """Drop every frame between a host of ``group_a`` and a host of ``group_b`` (both ways, all networks).

        Within a group, and with hosts in neither group, traffic flows. Partitions add up; ``heal()`` ends them.
        """
        a, b = list(group_a), list(group_b)
        with self._lock:
            for host in (*a, *b):
                self._own(host)
            if not a or not b or {h.name for h in a} & {h.name for h in b}:
                raise ValueError("partition: two non-empty groups with no host in both")
            self._blocked |= {frozenset((x.name, y.name)) for x in a for y in b}
            self._apply_filters([*a, *b])

    def heal(self) -> None:
        """End every partition."""
        with self._lock:
            affected = {name for pair in self._blocked for name in pair}
            self._blocked.clear()
            self._apply_filters([h for h in self.hosts if h.name in affected])

    def _apply_filters(self, hosts: Iterable[Node]) -> None:
        commands = []
        for host in hosts:
            if not host.is_on:
                continue  # power_on applies them
            peers = {other for pair in self._blocked if host.name in pair for other in pair if other != host.name}
            macs = sorted(i.mac for p in peers for i in self.node(p).ifaces.values())
            rules = f"table netdev {NFT_TABLE}\ndelete table netdev {NFT_TABLE}\n"
            if macs:
                rules += f"table netdev {NFT_TABLE} {{\n"
                for iface in host.ifaces:
                    rules += (
                        f"  chain drop_{iface} {{\n"
                        f'    type filter hook ingress device "{iface}" priority -500; policy accept;\n'
                        f"    ether saddr {{ {', '.join(macs)} }} counter drop\n"
                        "  }\n"
                    )
                rules += "}\n"
            argv = [shell.tool("nsenter"), f"--net={procs.NETNS_DIR}/{host.netns}", shell.tool("nft"), "-f", "-"]
            commands.append(Command(argv, input=rules))
        shell.run_all(commands)

    def link_down(self, node: Node, iface: str = "eth0") -> None:
        """Pull the cable of ``node``'s ``iface``: its switch port goes down, the node sees NO-CARRIER."""
        self._cable(node, iface, up=False)

    def link_up(self, node: Node, iface: str = "eth0") -> None:
        self._cable(node, iface, up=True)

    def _cable(self, node: Node, iface: str, *, up: bool) -> None:
        with self._lock:
            port = self._iface(node, iface)
            if up:
                self._cables_out.discard((node.name, iface))
            else:
                self._cables_out.add((node.name, iface))
            if node.is_on:
                lines = [f"link set {port.port} {'up' if up else 'down'}"]
                if up:
                    # The kernel finishes a carrier change (the bridge port forwarding again) in its linkwatch
                    # work, which runs at most once a second; asking for the port's state runs it now. So the
                    # cable works as soon as it is back, as a cable does, not up to a second later.
                    lines.append(f"link show dev {port.port}")
                shell.run_all([self._switch_command(port.network, lines)])

    def netem(
        self,
        target: Hosts = None,
        *,
        delay_ms: float = 20.0,
        jitter_ms: float = 10.0,
        loss_pct: float = 0.0,
        iface: str = "eth0",
        seed: int | None = None,
    ) -> None:
        """Delay (``delay_ms`` ± ``jitter_ms``, uniform) and drop (``loss_pct``) the frames delivered to
        ``target`` (a host, several, or None for every host) on ``iface``. Calling it again changes the values.
        """
        impairment = Impairment(delay_ms, jitter_ms, loss_pct, seed)
        with self._lock:
            for host in self._targets(target):
                self._iface(host, iface)
                self._impairments[(host.name, iface)] = impairment
                if host.is_on:
                    self._impair(host, iface, impairment)

    def clear_netem(self, target: Hosts = None, iface: str | None = None) -> None:
        """Remove delay and loss from ``target``'s interfaces (``iface``, or all)."""
        with self._lock:
            for host in self._targets(target):
                for name in [iface] if iface else list(host.ifaces):
                    self._impairments.pop((host.name, name), None)
                    if (host.name, name) in self._detoured:
                        self._undetour(host, name, reattach=True)
            for net_name, relay in list(self._relays.items()):
                if not any(self._iface(self.node(h), i).network.name == net_name for h, i in self._detoured):
                    relay.stop()
                    del self._relays[net_name]

    def _impair(self, host: Node, iface_name: str, impairment: Impairment) -> None:
        iface = host.ifaces[iface_name]
        net = iface.network
        relay = self._relays.get(net.name)
        if relay is None:
            relay = self._relays[net.name] = Relay(net, self._table)
        if (host.name, iface_name) not in self._detoured:
            shell.run_all([self._switch_command(net, detour_lines(iface))])
            relay.add(iface)
            shell.run_all([self._switch_command(net, [f"link set {iface.port} nomaster"])])
            self._detoured.add((host.name, iface_name))
        relay.set(iface, impairment)

    def _undetour(self, host: Node, iface_name: str, *, reattach: bool) -> None:
        iface = host.ifaces[iface_name]
        self._relays[iface.network.name].remove(iface)
        lines = [f"link del {iface.relay_port}"]
        if reattach:
            lines.append(f"link set {iface.port} master {topology.BRIDGE}")
        shell.run_all([self._switch_command(iface.network, lines)])
        self._detoured.discard((host.name, iface_name))

    # ---- faults of the machines -----------------------------------------------------------------------

    def cpu_hog(self, seconds: float | None = None, *, processes: int | None = None, nice: int = 0) -> CpuHog:
        """Start one busy loop per core (or ``processes``) at nice 0, for ``seconds`` or until ``stop()``."""
        with self._lock:
            if not self._open:
                raise LabError(f"{self!r} is not running")
            count = processes if processes is not None else len(os.sched_getaffinity(0))
            hog = CpuHog(self.networks[0].netns, count, seconds, self._table, nice)
            self._hogs.append(hog)
            return hog

    # ---- helpers ----------------------------------------------------------------------------------------

    def _own(self, host: Node) -> None:
        if not self._open or all(h is not host for h in self.hosts):
            raise LabError(f"{host!r} is not a host of {self!r}")

    def _iface(self, host: Node, iface: str) -> topology.Iface:
        self._own(host)
        if iface not in host.ifaces:
            raise ValueError(f"{host.name} has no {iface} (interfaces: {sorted(host.ifaces)})")
        return host.ifaces[iface]

    def _targets(self, target: Hosts) -> list[Node]:
        if target is None:
            return self.hosts
        hosts = [target] if isinstance(target, Node) else list(target)
        for host in hosts:
            self._own(host)
        return hosts
