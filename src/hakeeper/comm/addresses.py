"""Addresses of nodes as administrators write them: ``HOST``, ``HOST:PORT``, ``[IPV6]:PORT``."""

from __future__ import annotations

import ipaddress

from hakeeper.errors import IllegalArgument


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, default_port: int, *, what: str = "address", listen: bool = False) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPV6]:PORT`` or a bare IPv6 address, as (host, port).

    Port 0 (any free port) is allowed only where we ``listen``.
    """
    host, port_text, has_port = text.strip(), "", False
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise IllegalArgument(f"{what} {text!r} is not HOST[:PORT] or [IPV6][:PORT]")
        host, port_text, has_port = inside, rest[1:], bool(rest)
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        has_port = True
    if host.count(":") > 1:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise IllegalArgument(f"{what} {text!r} is not a valid IPv6 address") from None
    if not host or not all(c.isascii() and (c.isalnum() or c in "-._:") for c in host):
        raise IllegalArgument(f"{what} {text!r} is not HOST[:PORT] (a host name or an IP address)")
    if not has_port:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not (0 if listen else 1) <= int(port_text) <= 65535:
        raise IllegalArgument(f"{what} {text!r} has no valid port (1..65535)")
    return host, int(port_text)
