"""RFC 2136 dynamic update with TSIG, for the DNS kit: key files, servers, retries with back-off, answers as policies.

:class:`Client` is one action's conversation with a zone's servers (in order, the last one that
answered first): each request is tried on every server until one answers, and a step that no
server answers (or that gets SERVFAIL) is tried again, ``tries`` times, after waits of 1, 2, 4 ... s,
within the action's deadline; every retry is logged. A server that says no (REFUSED, NOTAUTH,
a TSIG error) is not asked again: :class:`DnsError` carries the policy (CONFIG) and a message for
the administrator. :func:`parse_key` reads a key in BIND's format; no message of this module shows
a key's secret (dnspython's ``dns.tsig.Key`` shows it in its repr: never format one).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from hakeeper.errors import HakeeperError, IllegalArgument
from hakeeper.kits.base import Policy

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: BIND's algorithm names -> dnspython's.
ALGORITHMS: Mapping[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}

BACKOFF_FIRST = 1.0  # s before the second try; doubled for each further try
BACKOFF_MAX = 10.0

# Answers that are definite: asking again gets the same. SERVFAIL (a zone still loading, a journal that
# cannot be written) is worth another try.
RCODE_HINTS: Mapping[dns.rcode.Rcode, str] = {
    dns.rcode.REFUSED: "refused it (does the server allow this key to update the zone? allow-update/update-policy)",
    dns.rcode.NOTAUTH: "is not authoritative for the zone, or did not accept the key (NOTAUTH)",
    dns.rcode.NOTZONE: "says the name is not in the zone (NOTZONE)",
    dns.rcode.FORMERR: "could not parse the request (FORMERR)",
    dns.rcode.NOTIMP: "does not implement dynamic update (NOTIMP)",
    dns.rcode.YXDOMAIN: "refused a prerequisite (YXDOMAIN)",
    dns.rcode.YXRRSET: "refused a prerequisite (YXRRSET)",
    dns.rcode.NXRRSET: "refused a prerequisite (NXRRSET)",
    dns.rcode.NXDOMAIN: "refused a prerequisite (NXDOMAIN)",
    dns.rcode.BADKEY: "does not know the key (BADKEY)",
    dns.rcode.BADSIG: "says the key's secret is wrong (BADSIG)",
    dns.rcode.BADTIME: "says the clocks differ too much (BADTIME): check the time here and on the server",
}
RETRY_RCODES = frozenset({dns.rcode.SERVFAIL})


class DnsError(HakeeperError):
    """A DNS server said no (``policy`` CONFIG), or could not be asked (``retry``: worth another try)."""

    def __init__(self, message: str, policy: Policy = Policy.CONFIG, *, retry: bool = False) -> None:
        super().__init__(message)
        self.policy = policy
        self.retry = retry


def unreachable(message: str) -> DnsError:
    return DnsError(message, Policy.SOFT, retry=True)


def rcode_error(rcode: dns.rcode.Rcode, server: str, what: str) -> DnsError | None:
    """What an answer's rcode means for ``what`` (None: NOERROR). SERVFAIL is retried, the others are CONFIG."""
    if rcode == dns.rcode.NOERROR:
        return None
    name = dns.rcode.to_text(rcode)
    if rcode in RETRY_RCODES:
        return unreachable(f"{server} answered {name} to {what}")
    hint = RCODE_HINTS.get(rcode, f"answered {name}")
    return DnsError(f"{server} {hint}: {what}")


def tsig_error(exc: Exception, server: str, key: TsigKey, what: str) -> DnsError:
    """A TSIG failure, named for the administrator (never with the secret)."""
    which = f"key {key.name!r} ({key.algorithm})"
    if isinstance(exc, dns.tsig.PeerBadKey):
        why = f"does not know {which} (BADKEY): is the key name and algorithm the same as in named.conf?"
    elif isinstance(exc, dns.tsig.PeerBadSignature):
        why = f"refused {which}: its secret is not the server's (BADSIG)"
    elif isinstance(exc, dns.tsig.PeerBadTime):
        why = f"refused {which}: the clocks differ too much (BADTIME): check the time here and on the server"
    elif isinstance(exc, dns.tsig.PeerError):
        why = f"refused {which} ({type(exc).__name__})"
    else:
        why = f"answered with a signature that does not verify with {which} ({type(exc).__name__})"
    return DnsError(f"{server} {why}: {what}")


# ---------------------------------------------------------------------- keys and servers


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key. Its secret is left out of repr() and of every message."""

    name: str
    algorithm: str
    secret: bytes = field(repr=False)

    def tsig(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, ALGORITHMS[self.algorithm])

    def bind_text(self) -> str:
        """The key as BIND (and ``nsupdate -k``) read it."""
        secret = base64.b64encode(self.secret).decode("ascii")
        return f'key "{self.name}" {{\n\talgorithm {self.algorithm};\n\tsecret "{secret}";\n}};\n'


KEY_FORMAT = 'key "NAME" { algorithm hmac-sha256; secret "BASE64"; }; (as tsig-keygen prints it)'
# A quoted string (kept whole: a base64 secret may hold "//" or "/*"), or a comment (dropped).
_COMMENTS = re.compile(r'("(?:[^"\\\n]|\\.)*")|/\*.*?\*/|//[^\n]*|#[^\n]*', re.S)
_KEY = re.compile(r'\bkey\s+("([^"]+)"|([A-Za-z0-9._-]+))\s*\{(.*?)\}\s*;', re.S)
_ALGORITHM = re.compile(r'\balgorithm\s+"?([A-Za-z0-9._-]+)"?\s*;')
_SECRET = re.compile(r'\bsecret\s+"([^"]*)"\s*;')
_KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,255}$")


def parse_key(text: str, source: str) -> TsigKey:
    """The one key statement of ``text`` (a file's content, named ``source`` in errors, which never quote it)."""
    keys = list(_KEY.finditer(_COMMENTS.sub(lambda m: m.group(1) or " ", text)))
    if not keys:
        raise IllegalArgument(f"{source} has no key statement; a TSIG key file reads: {KEY_FORMAT}")
    if len(keys) > 1:
        names = ", ".join(repr(k.group(2) or k.group(3)) for k in keys)
        raise IllegalArgument(f"{source} has {len(keys)} keys ({names}): give a file with the one key to use")
    match = keys[0]
    name, body = (match.group(2) or match.group(3)).rstrip("."), match.group(4)
    if not _KEY_NAME.match(name):
        raise IllegalArgument(f"{source}: the key's name is not a DNS name of letters, digits, '.', '-', '_'")
    algorithm = _ALGORITHM.search(body)
    if algorithm is None:
        raise IllegalArgument(f"{source}: key {name!r} has no algorithm; a TSIG key file reads: {KEY_FORMAT}")
    algo = algorithm.group(1).lower()
    if algo not in ALGORITHMS:
        raise IllegalArgument(f"{source}: key {name!r}: algorithm {algo!r} is not one of {', '.join(ALGORITHMS)}")
    secret_match = _SECRET.search(body)
    if secret_match is None:
        raise IllegalArgument(f'{source}: key {name!r} has no secret "..."; a TSIG key file reads: {KEY_FORMAT}')
    try:
        secret = base64.b64decode("".join(secret_match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise IllegalArgument(f"{source}: the secret of key {name!r} is not valid base64") from None
    if not secret:
        raise IllegalArgument(f"{source}: the secret of key {name!r} is empty")
    return TsigKey(name, algo, secret)


def read_key(path: Path) -> TsigKey:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise IllegalArgument(f"{path} is not a text file; a TSIG key file reads: {KEY_FORMAT}") from None
    except OSError as exc:
        raise IllegalArgument(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    return parse_key(text, str(path))


@dataclass(frozen=True)
class Server:
    address: str
    port: int = 53

    @property
    def text(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def parse_server(text: str) -> Server:
    """``198.18.0.100``, ``198.18.0.100:5353``, ``2001:db8::1`` or ``[2001:db8::1]:5353``; addresses only."""
    word = text.strip()
    host, port = word, "53"
    if word.startswith("["):
        host, _, rest = word[1:].partition("]")
        port = rest.removeprefix(":") if rest else "53"
    elif word.count(":") == 1:
        host, _, port = word.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise IllegalArgument(
            f"servers: {text!r} is not an IP address (name the servers by address: DNS must not need DNS)"
        ) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise IllegalArgument(f"servers: {text!r} has no valid port (1-65535)")
    return Server(str(address), int(port))


def parse_servers(text: str) -> list[Server]:
    servers = [parse_server(word) for word in text.split(",") if word.strip()]
    if not servers:
        raise IllegalArgument("servers= names no server (e.g. servers=198.18.0.100 or servers=10.0.0.1,10.0.0.2:5353)")
    return servers


def backoff_delays(tries: int, first: float = BACKOFF_FIRST) -> list[float]:
    """The waits between ``tries`` tries: 1, 2, 4 ... s, at most ``BACKOFF_MAX`` each."""
    return [min(first * 2**i, BACKOFF_MAX) for i in range(max(tries - 1, 0))]


def worst_step(tries: int, servers: int, query_timeout: float, first: float = BACKOFF_FIRST) -> float:
    """How long one step (one query or update, retried) may take when no server answers."""
    return tries * servers * query_timeout + sum(backoff_delays(tries, first))


# ---------------------------------------------------------------------- talking to the servers


@dataclass(frozen=True)
class Rrset:
    """The records of one name and type, as text (sorted), and their TTL (None: there are none)."""

    rdata: tuple[str, ...]
    ttl: int | None

    def as_json(self) -> dict[str, Any]:
        return {"rdata": list(self.rdata), "ttl": self.ttl}


@dataclass(frozen=True)
class Change:
    """Set ``name``'s ``rdtype`` records to ``rdata`` (``drop``: delete only those records)."""

    zone: dns.name.Name
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    rdata: tuple[str, ...]
    ttl: int
    drop: bool = False

    @property
    def what(self) -> str:
        return f"{self.name.to_text()} {dns.rdatatype.to_text(self.rdtype)}"

    def done(self, current: Rrset) -> bool:
        if self.drop:
            return not set(self.rdata) & set(current.rdata)
        return current.rdata == self.rdata and current.ttl == self.ttl

    def shows(self, current: Rrset) -> bool:
        """What quickCheck and the read-back compare: the records, not their TTL."""
        return (not set(self.rdata) & set(current.rdata)) if self.drop else current.rdata == self.rdata


class Client:
    """One action's conversation with a resource's servers: retries, back-off, the action's deadline."""

    def __init__(
        self,
        tag: str,
        servers: Sequence[Server],
        query_timeout: float,
        key: TsigKey | None,
        *,
        deadline: float,
        tries: int,
        first_delay: float = BACKOFF_FIRST,
    ) -> None:
        self.tag = tag  # the resource, for the log
        self.servers = tuple(servers)
        self.query_timeout = query_timeout
        self.key = key
        self.deadline = deadline  # event loop time
        self.tries = tries
        self.first_delay = first_delay
        self.server: Server = self.servers[0]  # the last one that answered: asked first
        self.retries = 0

    def _order(self) -> list[Server]:
        return [self.server, *[s for s in self.servers if s != self.server]]

    async def exchange(self, message: dns.message.Message, what: str, *, query: bool = False) -> dns.message.Message:
        """One try: each server in turn until one answers; DnsError(retry) when none does.

        ``query``: NXDOMAIN is an answer (there is no such name), not an error.
        """
        silent: list[str] = []
        for server in self._order():
            try:
                answer, _tcp = await dns.asyncquery.udp_with_fallback(
                    message, server.address, timeout=self.query_timeout, port=server.port
                )
            except dns.exception.Timeout:
                silent.append(f"{server.text}: no answer in {self.query_timeout:g} s")
                continue
            except OSError as exc:
                silent.append(f"{server.text}: {exc.strerror or exc}")
                continue
            except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime, dns.message.UnknownTSIGKey) as exc:
                assert self.key is not None
                raise tsig_error(exc, server.text, self.key, what) from None
            except dns.exception.DNSException as exc:  # a garbled or unexpected answer: try the next
                silent.append(f"{server.text}: {type(exc).__name__}: {exc}")
                continue
            self.server = server
            if query and answer.rcode() == dns.rcode.NXDOMAIN:
                return answer
            error = rcode_error(answer.rcode(), server.text, what)
            if error is not None:
                raise error
            return answer
        raise unreachable(f"no DNS server answered {what} ({'; '.join(silent)})")

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt`` up to ``tries`` times, with growing waits, while it fails in a way worth retrying."""
        delays = backoff_delays(self.tries, self.first_delay)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for number in range(1, self.tries + 1):
            try:
                return await attempt()
            except DnsError as exc:
                if not exc.retry:
                    raise
                spent = f"{number} tries in {loop.time() - started:.0f} s"
                if number == self.tries:
                    raise (unreachable(f"{exc}; gave up after {spent}") if number > 1 else exc) from None
                delay = delays[number - 1]
                worst = len(self.servers) * self.query_timeout
                if loop.time() + delay + worst > self.deadline:
                    raise unreachable(f"{exc}; gave up after {spent}: the action's time is nearly up") from None
                self.retries += 1
                # The story of a back-off, one line per retry (quickCheck's retry at once is routine: DEBUG).
                level = logging.WARNING if delay else logging.DEBUG
                logger.log(level, "%s: %s; try %d of %d in %g s", self.tag, exc, number + 1, self.tries, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def read(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Rrset:
        """``name``'s records of ``rdtype`` as the server has them (authoritative answers only)."""
        what = f"the query for {name.to_text()} {dns.rdatatype.to_text(rdtype)}"

        async def attempt() -> Rrset:
            query = dns.message.make_query(name, rdtype)
            query.flags &= ~dns.flags.RD
            answer = await self.exchange(query, what, query=True)
            if not answer.flags & dns.flags.AA:
                raise DnsError(f"{self.server.text} is not authoritative for {name.to_text()} (no AA flag)")
            for rrset in answer.answer:
                if rrset.name == name and rrset.rdtype == dns.rdatatype.CNAME:
                    raise DnsError(f"{name.to_text()} is a CNAME on {self.server.text}: it cannot have other records")
                if rrset.name == name and rrset.rdtype == rdtype:
                    return Rrset(tuple(sorted(r.to_text() for r in rrset)), rrset.ttl)
            return Rrset((), None)

        return await self.retrying(what, attempt)

    async def zone_of(self, name: dns.name.Name) -> dns.name.Name:
        """The zone that holds ``name`` on the server (its SOA, as nsupdate finds it)."""
        what = f"the SOA query for {name.to_text()}"

        async def attempt() -> dns.name.Name:
            query = dns.message.make_query(name, dns.rdatatype.SOA)
            query.flags &= ~dns.flags.RD
            try:
                answer = await self.exchange(query, what, query=True)
            except DnsError as exc:
                if exc.retry:
                    raise
                raise DnsError(
                    f"{exc} ({self.server.text} holds no zone for {name.to_text()}: set reverse_zone= or ptr=no)"
                ) from None
            for rrset in (*answer.answer, *answer.authority):
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    return rrset.name
            raise DnsError(f"{self.server.text} gave no SOA for {name.to_text()}: set reverse_zone= or ptr=no")

        return await self.retrying(what, attempt)

    def _update(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        assert self.key is not None
        return dns.update.UpdateMessage(zone, keyring=self.key.tsig(), keyname=dns.name.from_text(self.key.name))

    async def check_key(self, zone: dns.name.Name) -> None:
        """A signed update with nothing in it: the server checks the key (and allow-update) and changes nothing."""
        what = f"an empty update of zone {zone.to_text()} (the key check)"
        await self.retrying(what, lambda: self.exchange(self._update(zone), what))

    async def apply(self, zone: dns.name.Name, changes: Iterable[Change], previous: bool = False) -> None:
        update = self._update(zone)
        shown = []
        for change in changes:
            if change.drop:
                for rdata in change.rdata:
                    update.delete(change.name, change.rdtype, rdata)
            elif change.rdata:
                update.replace(change.name, change.ttl, change.rdtype, *change.rdata)
            else:
                update.delete(change.name, change.rdtype)
            shown.append(change.what)
        what = f"the update of {', '.join(shown)} in zone {zone.to_text()}"
        await self.retrying(what, lambda: self.exchange(update, what))
