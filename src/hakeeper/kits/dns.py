"""DNS kit (``comm/dns``): a name that points at the node where the hierarchy runs, by RFC 2136 dynamic update.

A resource is one record name in one zone, the zone's primary server(s), a TSIG
key, and the address each node publishes (``addresses=node1=198.18.0.11,
node2=198.18.0.12``), so the resource is the same on every node::

    hakeeper create comm/dns -t app-dns name=app zone=example.test servers=198.18.0.100 \\
        key=/etc/bind/ddns-key.conf addresses=node1=198.18.0.11,node2=198.18.0.12

``restore``      replaces the name's A (or AAAA) rrset with this node's address and, with ``ptr=yes``,
                 the PTR rrset of that address with the name; it also deletes the PTR records that point
                 the other nodes' addresses at the name (a failed node cannot take its own back). Before
                 any change, one signed empty update per zone checks that the server takes the key, so a
                 refused key changes nothing. Then it reads the records back from the server.
``quick_check``  asks the server for the records: running when they are this node's, stopped when this
                 node has not published them (or removed them) or the name points at another node of
                 the resource, failed otherwise.
``recover``      publishes again (the same as restore).
``remove``       ``on_remove=leave`` (default) leaves the records; ``on_remove=restore`` puts back what
                 was there before this node's restore (recorded then), unless another node has taken the
                 name since.
``validate``     (at create and on the node extend carries it to) the info, this node's address, the
                 key file; then, if a server answers, an empty signed update per zone: a key the server
                 refuses is refused at creation.

Failures: a server that does not answer (or answers SERVFAIL) is retried ``tries`` times with growing
delays (1, 2, 4 ... s) within the action's timeout, each retry logged, and then the action fails SOFT
(local recovery, then failover, can act). A server that says no (REFUSED, NOTAUTH, NOTZONE, a TSIG
error: BADKEY, BADSIG, BADTIME) is not retried: the result is a CONFIG error naming the server, the zone
and what to check.

The TSIG key (``key=``: a file in BIND's format, as ``tsig-keygen`` prints it) is read at creation and
kept, mode 0600, in ``<root>/subsys/comm/resources/dns/instances/<tag>/tsig.key``; extend carries it to
the new node (:meth:`DnsKit.export` / :meth:`DnsKit.adopt`). The LCD's info has the key's name and
algorithm, never its secret, and no message, log line or error of this module shows the secret (note
that dnspython's ``dns.tsig.Key`` shows it in its repr: never format one). Beside the key, the instance
directory has ``published`` (this node published the records and has not removed them) and, with
``on_remove=restore``, ``previous.json`` (the records before this node's restore). The conversation
with the servers (key files, retries and back-off, answers as policies) is :mod:`hakeeper.kits.dnsupdate`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.reversename

from hakeeper.db.model import Resource
from hakeeper.errors import IllegalArgument, SystemCallFailed
from hakeeper.kits.base import Created, Kit, KitMeta, Param, Policy, Result, install_files, seconds
from hakeeper.kits.dnsupdate import (
    BACKOFF_FIRST,
    Change,
    Client,
    DnsError,
    Rrset,
    Server,
    TsigKey,
    parse_key,
    parse_server,
    parse_servers,
    read_key,
    worst_step,
)
from hakeeper.layout import SUBSYS_DIR

logger = logging.getLogger(__name__)

KEY_FILE = "tsig.key"
MARKER = "published"
PREVIOUS = "previous.json"
ON_REMOVE = ("leave", "restore")

CHECK_TRIES = 2  # quickCheck: one retry at once (a lost datagram), no back-off: recovery has that
MARGIN = 0.9  # an action gives up, with its own message, before this share of its timeout is used


# ---------------------------------------------------------------------- parameters


def parse_addresses(text: str) -> dict[str, str]:
    """``node1=198.18.0.11,node2=198.18.0.12`` -> node -> address (one family for all)."""
    addresses: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        node, eq, value = item.partition("=")
        node = node.strip()
        if not eq or not node:
            raise IllegalArgument(f"addresses: {item.strip()!r} is not NODE=ADDRESS (e.g. addresses=node1=10.0.0.11)")
        if node in addresses:
            raise IllegalArgument(f"addresses: node {node} is given twice")
        try:
            addresses[node] = str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise IllegalArgument(f"addresses: {value.strip()!r} (for {node}) is not an IP address") from None
    if not addresses:
        raise IllegalArgument("addresses= names no node (e.g. addresses=node1=10.0.0.11,node2=10.0.0.12)")
    families = {ipaddress.ip_address(a).version for a in addresses.values()}
    if len(families) > 1:
        raise IllegalArgument("addresses: give every node an address of the same family (all IPv4 or all IPv6)")
    return addresses


def absolute_name(name: str, zone: dns.name.Name) -> dns.name.Name:
    """``app`` (relative to the zone), ``app.example.test`` or ``app.example.test.`` -> the absolute name."""
    try:
        if name.endswith("."):
            absolute = dns.name.from_text(name)
        else:
            relative = dns.name.from_text(name, origin=None)
            candidate = dns.name.from_text(name)
            absolute = candidate if candidate.is_subdomain(zone) else relative.concatenate(zone)
    except dns.exception.DNSException as exc:
        raise IllegalArgument(f"name={name!r} is not a DNS name: {exc}") from None
    if not absolute.is_subdomain(zone):
        raise IllegalArgument(f"name={name!r} is not in zone {zone.to_text()}")
    return absolute


def zone_name(text: str, param: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise IllegalArgument(f"{param}={text!r} is not a DNS name: {exc}") from None


@dataclass(frozen=True)
class Config:
    """A resource's info, checked."""

    name: dns.name.Name
    zone: dns.name.Name
    servers: tuple[Server, ...]
    addresses: Mapping[str, str]
    ttl: int
    ptr: bool
    reverse_zone: dns.name.Name | None
    on_remove: str
    key_name: str
    algorithm: str
    tries: int
    query_timeout: float
    timeout: float
    check_timeout: float

    @property
    def rdtype(self) -> dns.rdatatype.RdataType:
        version = ipaddress.ip_address(next(iter(self.addresses.values()))).version
        return dns.rdatatype.A if version == 4 else dns.rdatatype.AAAA

    def as_info(self) -> dict[str, Any]:
        return {
            "name": self.name.to_text(),
            "zone": self.zone.to_text(),
            "servers": [s.text for s in self.servers],
            "addresses": dict(self.addresses),
            "ttl": self.ttl,
            "ptr": self.ptr,
            "reverse_zone": self.reverse_zone.to_text() if self.reverse_zone else "",
            "on_remove": self.on_remove,
            "key_name": self.key_name,
            "algorithm": self.algorithm,
            "tries": self.tries,
            "query_timeout": self.query_timeout,
            "timeout": self.timeout,
            "check_timeout": self.check_timeout,
        }

    @classmethod
    def build(cls, values: Mapping[str, Any], key_name: str, algorithm: str) -> Config:
        """From creation parameters (or info): checked, with the timing rules."""
        zone = zone_name(str(values["zone"]), "zone")
        reverse = str(values.get("reverse_zone") or "")
        on_remove = str(values.get("on_remove", "leave"))
        if on_remove not in ON_REMOVE:
            raise IllegalArgument(f"on_remove={on_remove!r} is not one of {' | '.join(ON_REMOVE)}")
        servers = values["servers"]
        addresses = values["addresses"]
        config = cls(
            name=absolute_name(str(values["name"]), zone),
            zone=zone,
            servers=tuple(parse_servers(servers) if isinstance(servers, str) else map(parse_server, servers)),
            addresses=parse_addresses(addresses) if isinstance(addresses, str) else parse_addresses(_joined(addresses)),
            ttl=int(values.get("ttl", 60)),
            ptr=bool(values.get("ptr", True)),
            reverse_zone=zone_name(reverse, "reverse_zone") if reverse else None,
            on_remove=on_remove,
            key_name=key_name,
            algorithm=algorithm,
            tries=int(values.get("tries", 4)),
            query_timeout=float(values.get("query_timeout", 2)),
            timeout=float(values.get("timeout", 60)),
            check_timeout=float(values.get("check_timeout", 20)),
        )
        config.check()
        return config

    def check(self) -> None:
        if not 0 <= self.ttl <= 604800:
            raise IllegalArgument(f"ttl={self.ttl} is not 0..604800 seconds")
        if not 1 <= self.tries <= 20:
            raise IllegalArgument(f"tries={self.tries} is not 1..20")
        if not 0 < self.query_timeout <= 60:
            raise IllegalArgument(f"query_timeout={self.query_timeout:g} is not 1..60 seconds")
        if self.reverse_zone is not None and self.ptr:
            for node, address in self.addresses.items():
                if not dns.reversename.from_address(address).is_subdomain(self.reverse_zone):
                    raise IllegalArgument(
                        f"the address of {node} ({address}) is not in reverse_zone={self.reverse_zone.to_text()} "
                        "(leave reverse_zone empty to ask the server which zone holds each PTR record)"
                    )
        # Timing rules: a step retried against silent servers must end, with this kit's own message, within
        # the action's timeout, and quickCheck's tries within its own.
        step = worst_step(self.tries, len(self.servers), self.query_timeout)
        if step > MARGIN * self.timeout:
            raise IllegalArgument(
                f"tries={self.tries} with query_timeout={self.query_timeout:g} s and {len(self.servers)} server(s) "
                f"may take {step:g} s when no server answers, more than {MARGIN:.0%} of timeout={self.timeout:g} s: "
                "raise timeout or lower tries or query_timeout"
            )
        check = worst_step(CHECK_TRIES, len(self.servers), self.query_timeout, 0.0) * (2 if self.ptr else 1)
        if check > MARGIN * self.check_timeout:
            raise IllegalArgument(
                f"quickCheck may take {check:g} s when no server answers, more than {MARGIN:.0%} of "
                f"check_timeout={self.check_timeout:g} s: raise check_timeout or lower query_timeout"
            )

    @classmethod
    def of(cls, resource: Resource) -> Config:
        info = resource.info
        try:
            if not isinstance(info, dict):
                raise IllegalArgument("its info is not the comm/dns kit's (a JSON object)")
            return cls.build(info, str(info["key_name"]), str(info["algorithm"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DnsError(f"{resource.tag}: its info lacks or garbles {exc} (re-create the resource)") from None
        except IllegalArgument as exc:
            raise DnsError(f"{resource.tag}: {exc}") from None

    def address_of(self, node: str) -> str:
        address = self.addresses.get(node)
        if address is None:
            known = ", ".join(self.addresses)
            raise DnsError(
                f"no address for node {node} in addresses= ({known}): add it to the resource's info "
                "(ins_setinfo) before extending the resource to that node"
            )
        return address


def _joined(addresses: object) -> str:
    if not isinstance(addresses, dict):
        raise IllegalArgument("addresses is not a node -> address map")
    return ",".join(f"{node}={address}" for node, address in addresses.items())


def retried(client: Client) -> str:
    return f", after {client.retries} retries" if client.retries else ""


# ---------------------------------------------------------------------- the kit


class DnsKit(Kit):
    meta = KitMeta(
        app="comm",
        type="dns",
        description="a DNS name (A/AAAA and PTR) that points at the node in service, by dynamic update with TSIG",
        params=(
            Param(
                "name", "the record's name: relative to the zone (app) or absolute (app.example.test.)", required=True
            ),
            Param("zone", "the zone that holds the name (example.test)", required=True),
            Param("servers", "the zone's primary server(s), by address: ADDR[:PORT][,ADDR[:PORT]...]", required=True),
            Param("key", "TSIG key file in BIND's format (tsig-keygen output); copied, mode 0600", required=True),
            Param("addresses", "the address each node publishes: NODE=ADDR[,NODE=ADDR...]", required=True),
            Param("ttl", "the records' TTL, seconds", "integer", default="60", minimum=0, maximum=604800),
            Param("ptr", "also keep the PTR record of the address pointing at the name", "boolean", default="yes"),
            Param("reverse_zone", "the zone of the PTR records (default: ask the server)", default=""),
            Param("on_remove", "leave: keep the records; restore: put back what restore replaced", default="leave"),
            Param(
                "tries",
                "tries per step when no server answers (with waits of 1, 2, 4 ... s)",
                "integer",
                default="4",
                minimum=1,
                maximum=20,
            ),
            seconds("query_timeout", "seconds to wait for one answer", 2, maximum=60),
            seconds("timeout", "seconds restore, remove and recover may take", 60),
            seconds("check_timeout", "seconds quickCheck may take", 20),
        ),
    )

    # ---- the instance directory

    def instance_dir(self, tag: str) -> Path:
        return self.ctx.root / SUBSYS_DIR / "comm" / "resources" / "dns" / "instances" / tag

    def key_path(self, tag: str) -> Path:
        return self.instance_dir(tag) / KEY_FILE

    def _install_key(self, tag: str, key: TsigKey) -> None:
        """Write the key, mode 0600, in a new instance directory (0700), all at once or not at all."""
        install_files(
            self.instance_dir(tag), {KEY_FILE: key.bind_text().encode("ascii")}, 0o600, f"the TSIG key of {tag}"
        )

    def _key(self, resource: Resource, config: Config) -> TsigKey:
        path = self.key_path(resource.tag)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            raise DnsError(
                f"{resource.tag}: no TSIG key at {path} (create the resource again, or extend it here again)"
            ) from None
        except OSError as exc:
            raise DnsError(f"{resource.tag}: cannot read the TSIG key {path}: {exc.strerror or exc}") from None
        if mode & 0o077:
            raise DnsError(f"{resource.tag}: the TSIG key {path} is readable by others (mode {mode:o}): chmod 600 it")
        try:
            key = read_key(path)
        except IllegalArgument as exc:
            raise DnsError(f"{resource.tag}: {exc}") from None
        if (key.name, key.algorithm) != (config.key_name, config.algorithm):
            raise DnsError(
                f"{resource.tag}: the TSIG key {path} is {key.name!r} ({key.algorithm}), "
                f"the resource's is {config.key_name!r} ({config.algorithm})"
            )
        return key

    def _write_state(self, tag: str, name: str, text: str) -> None:
        path = self.instance_dir(tag) / name
        try:
            with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".new-", delete=False) as file:
                file.write(text)
            os.replace(file.name, path)
        except OSError as exc:
            raise DnsError(f"{tag}: cannot write {path}: {exc.strerror or exc}", Policy.HARD) from None

    def _published(self, tag: str) -> bool:
        return (self.instance_dir(tag) / MARKER).exists()

    def _forget(self, tag: str) -> None:
        for name in (MARKER, PREVIOUS):
            (self.instance_dir(tag) / name).unlink(missing_ok=True)

    # ---- creation and carrying to other nodes

    def check_params(self, params: Mapping[str, str]) -> dict[str, Any]:
        values = super().check_params(params)
        Config.build(values, "check", "hmac-sha256")  # every rule that needs no file and no server
        return values

    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        key = read_key(Path(str(values["key"])))
        config = Config.build(values, key.name, key.algorithm)
        self._install_key(tag, key)
        return Created(id or tag, config.as_info())

    def discard(self, tag: str) -> None:
        shutil.rmtree(self.instance_dir(tag), ignore_errors=True)

    def export(self, resource: Resource) -> dict[str, Any]:
        """The TSIG key file, base64 (it travels inside the cluster's mutual-TLS connection)."""
        path = self.key_path(resource.tag)
        try:
            return {"key": base64.b64encode(path.read_bytes()).decode("ascii")}
        except OSError as exc:
            raise SystemCallFailed(f"cannot read the TSIG key of {resource.tag}: {exc.strerror or exc}") from None

    def adopt(self, tag: str, info: Any, payload: Mapping[str, Any]) -> None:
        sent = payload.get("key")
        if not isinstance(sent, str):
            raise IllegalArgument(f"{tag}: the comm/dns payload holds no TSIG key")
        try:
            text = base64.b64decode(sent, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise IllegalArgument(f"{tag}: the TSIG key sent is not valid base64 text") from None
        key = parse_key(text, f"the TSIG key of {tag} sent by the other node")
        if isinstance(info, dict) and (info.get("key_name"), info.get("algorithm")) != (key.name, key.algorithm):
            raise IllegalArgument(f"{tag}: the TSIG key sent is not the one the resource's info names")
        self._install_key(tag, key)

    async def delete(self, resource: Resource) -> Result:
        self.discard(resource.tag)
        return Result.success()

    def timeout(self, action: str, resource: Resource) -> float:
        info = resource.info if isinstance(resource.info, dict) else {}
        if action == "quick_check":
            return float(info.get("check_timeout", 20))
        if action in ("restore", "remove", "recover", "validate"):
            return float(info.get("timeout", 60))
        return super().timeout(action, resource)

    # ---- the actions

    def _client(
        self,
        resource: Resource,
        config: Config,
        key: TsigKey | None,
        *,
        tries: int,
        budget: float,
        first_delay: float = BACKOFF_FIRST,
    ) -> Client:
        deadline = asyncio.get_running_loop().time() + MARGIN * budget
        return Client(
            resource.tag,
            config.servers,
            config.query_timeout,
            key,
            deadline=deadline,
            tries=tries,
            first_delay=first_delay,
        )

    async def _changes(self, client: Client, config: Config, address: str) -> list[Change]:
        """What this node publishes: its address at the name, the name at its address, no other node's PTR."""
        name = config.name
        changes = [Change(config.zone, name, config.rdtype, (address,), config.ttl)]
        if config.ptr:
            target = (name.to_text(),)
            own = dns.reversename.from_address(address)
            zone = config.reverse_zone or await client.zone_of(own)
            changes.append(Change(zone, own, dns.rdatatype.PTR, target, config.ttl))
            for other in sorted(set(config.addresses.values()) - {address}):
                reverse = dns.reversename.from_address(other)
                zone = config.reverse_zone or await client.zone_of(reverse)
                changes.append(Change(zone, reverse, dns.rdatatype.PTR, target, config.ttl, drop=True))
        return changes

    @staticmethod
    def _by_zone(changes: Iterable[Change]) -> dict[dns.name.Name, list[Change]]:
        zones: dict[dns.name.Name, list[Change]] = {}
        for change in changes:
            zones.setdefault(change.zone, []).append(change)
        return zones

    async def _read(self, client: Client, changes: list[Change]) -> list[Rrset]:
        return [await client.read(c.name, c.rdtype) for c in changes]

    async def _publish(self, resource: Resource, action: str) -> Result:
        config = Config.of(resource)
        address = config.address_of(self.ctx.node)
        key = self._key(resource, config)
        client = self._client(resource, config, key, tries=config.tries, budget=config.timeout)
        changes = await self._changes(client, config, address)
        current = await self._read(client, changes)
        tag = resource.tag
        if all(c.done(r) for c, r in zip(changes, current, strict=True)):
            if not self._published(tag):
                self._write_state(tag, MARKER, f"{address}\n")
            message = f"{self._describe(config, address)}: published already on {client.server.text}{retried(client)}"
            logger.info("%s (%s of %s)", message, action, tag)
            return Result.success(message)
        zones = self._by_zone(changes)
        for zone in zones:
            await client.check_key(zone)  # a refused key changes nothing
        if config.on_remove == "restore" and not self._published(tag):
            before = [
                {"zone": c.zone.to_text(), "name": c.name.to_text(), "type": dns.rdatatype.to_text(c.rdtype)}
                | r.as_json()
                for c, r in zip(changes, current, strict=True)
            ]
            self._write_state(tag, PREVIOUS, json.dumps(before, indent=1) + "\n")
        self._write_state(tag, MARKER, f"{address}\n")
        started = time.monotonic()
        for zone, group in zones.items():
            await client.apply(zone, group)
        updated = time.monotonic()
        after = await self._read(client, changes)
        read_back = time.monotonic()
        pairs = zip(changes, after, strict=True)
        wrong = [f"{c.what} is {', '.join(r.rdata) or 'absent'}" for c, r in pairs if not c.shows(r)]
        if wrong:
            return Result.failure(
                f"{tag}: {client.server.text} took the update but answers: {'; '.join(wrong)}", Policy.SOFT
            )
        message = (
            f"{self._describe(config, address)} published on {client.server.text} "
            f"(update {1000 * (updated - started):.1f} ms, read-back {1000 * (read_back - updated):.1f} ms)"
            f"{retried(client)}"
        )
        logger.info("%s (%s of %s)", message, action, tag)
        return Result.success(message)

    def _describe(self, config: Config, address: str) -> str:
        rdtype = dns.rdatatype.to_text(config.rdtype)
        text = f"{config.name.to_text()} {rdtype} {address}"
        if config.ptr:
            text += f", PTR {dns.reversename.from_address(address).to_text()}"
        return text

    async def _guarded(self, resource: Resource, action: str, work: Callable[[], Awaitable[Result]]) -> Result:
        """Run ``work``; a DnsError becomes a result with its policy (quickCheck: a health too)."""
        try:
            return await work()
        except DnsError as exc:
            message = str(exc) if str(exc).startswith(resource.tag) else f"{resource.tag}: {exc}"
            if action == "quick_check":
                return Result.failed(message, exc.policy)
            return Result.failure(message, exc.policy)

    async def validate(self, resource: Resource) -> Result:
        """The info, this node's address, the key file; then, if a server answers, that it takes the key."""

        async def work() -> Result:
            config = Config.of(resource)
            address = config.address_of(self.ctx.node)
            key = self._key(resource, config)
            client = self._client(resource, config, key, tries=1, budget=self.timeout("validate", resource))
            try:
                zones = {config.zone}
                if config.ptr:
                    reverse = dns.reversename.from_address(address)
                    zones.add(config.reverse_zone or await client.zone_of(reverse))
                for zone in sorted(zones):
                    await client.check_key(zone)
            except DnsError as exc:
                if exc.retry:
                    return Result.success(f"not checked with a server: {exc}")
                raise
            return Result.success(f"{client.server.text} takes key {key.name!r} for {', '.join(map(str, zones))}")

        return await self._guarded(resource, "validate", work)

    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        return await self._guarded(resource, "restore", lambda: self._publish(resource, "restore"))

    def has_recover(self, resource: Resource) -> bool:
        return True

    async def recover(self, resource: Resource) -> Result:
        return await self._guarded(resource, "recover", lambda: self._publish(resource, "recover"))

    async def quick_check(self, resource: Resource) -> Result:
        async def work() -> Result:
            if not self._published(resource.tag):
                return Result.stopped(f"{resource.tag}: not published by {self.ctx.node}")
            config = Config.of(resource)
            address = config.address_of(self.ctx.node)
            client = self._client(
                resource, config, None, tries=CHECK_TRIES, budget=config.check_timeout, first_delay=0.0
            )
            wanted = [Change(config.zone, config.name, config.rdtype, (address,), config.ttl)]
            if config.ptr:
                ptr = dns.reversename.from_address(address)
                wanted.append(Change(config.zone, ptr, dns.rdatatype.PTR, (config.name.to_text(),), config.ttl))
            found = await self._read(client, wanted)
            wrong = [
                f"{c.what} is {', '.join(r.rdata) or 'absent'}, not {', '.join(c.rdata)}"
                for c, r in zip(wanted, found, strict=True)
                if not c.shows(r)
            ]
            if not wrong:
                return Result.running(f"{self._describe(config, address)} on {client.server.text}")
            holders = [n for n, a in config.addresses.items() if found[0].rdata == (a,) and n != self.ctx.node]
            if holders:  # another node of the cluster has published it since: not running here, not broken
                return Result.stopped(
                    f"{resource.tag}: {config.name.to_text()} points at {holders[0]} ({found[0].rdata[0]}) "
                    f"on {client.server.text}, not here"
                )
            return Result.failed(f"{resource.tag}: on {client.server.text}: {'; '.join(wrong)}")

        return await self._guarded(resource, "quick_check", work)

    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        async def work() -> Result:
            tag = resource.tag
            if not self._published(tag):
                return Result.success(f"{tag}: not published by {self.ctx.node}")
            config = Config.of(resource)
            previous = self.instance_dir(tag) / PREVIOUS
            if config.on_remove == "leave" or not previous.exists():
                self._forget(tag)
                why = "on_remove=leave" if config.on_remove == "leave" else "they were this node's before its restore"
                return Result.success(f"{tag}: records left as they are ({why})")
            try:
                message = await self._put_back(resource, config, previous)
            except DnsError as exc:
                if exc.policy is Policy.CONFIG:
                    raise
                # Remove must not hang a switchover on a silent server: the next node's restore overwrites anyway.
                logger.warning("%s: could not put back the previous records: %s", tag, exc)
                message = f"{tag}: could not put back the previous records ({exc}); left as they are"
            self._forget(tag)
            return Result.success(message)

        return await self._guarded(resource, "remove", work)

    async def _put_back(self, resource: Resource, config: Config, previous: Path) -> str:
        """on_remove=restore: the records before this node's restore, unless another node took the name since."""
        address = config.address_of(self.ctx.node)
        key = self._key(resource, config)
        client = self._client(resource, config, key, tries=config.tries, budget=config.timeout)
        try:
            saved = json.loads(previous.read_text())
            changes = [
                Change(
                    zone_name(item["zone"], "zone"),
                    dns.name.from_text(item["name"]),
                    dns.rdatatype.from_text(item["type"]),
                    tuple(item["rdata"]),
                    int(item["ttl"] if item["ttl"] is not None else config.ttl),
                )
                for item in saved
            ]
        except (OSError, ValueError, KeyError, TypeError, IllegalArgument, dns.exception.DNSException) as exc:
            raise DnsError(f"cannot read the previous records in {previous}: {exc}", Policy.SOFT) from None
        forward = await client.read(config.name, config.rdtype)
        if forward.rdata != (address,):
            return (
                f"{resource.tag}: {config.name.to_text()} is {', '.join(forward.rdata) or 'absent'} now, "
                "not this node's: left as it is"
            )
        for zone, group in self._by_zone(changes).items():
            await client.apply(zone, group)
        shown = "; ".join(f"{c.what} {', '.join(c.rdata) or '(none)'}" for c in changes)
        logger.info("%s: put back the previous records: %s", resource.tag, shown)
        return f"{resource.tag}: put back {shown}"
