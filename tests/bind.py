"""A real BIND 9 (Debian's ``bind9``) on the test LAN (:mod:`hakeeper.lab`): authoritative for a zone and its
reverse zone, updates by TSIG.

    with Bind(lan.client, tmp_path / "bind") as bind:          # named in the client namespace, 198.18.0.100
        bind.key_file                                          # tsig-keygen's format: key "ddns-key" { ... };
        bind.query("app.example.test", "A")                    # ["198.18.0.99"]  (dig, inside the LAN)
        bind.stop(); bind.start()                              # the records survive (named's journal)

Everything is private to ``directory``: named.conf, the zone files (pristine copies named may rewrite), the
journal, the pid file, the session key and named's log (``named -g``: foreground, log on stderr). named runs
inside the chosen host's namespaces (``host.popen``), never in the root namespace, as root (``-u`` would need
the directory writable by user bind), IPv4 only (``-4``), authoritative only (``recursion no; notify no;``,
no control channel), and answers on the host's address and its loopback. Updates are allowed to one TSIG key
(``allow-update { key NAME; };``) whose secret is made here from ``os.urandom`` (``tsig-keygen`` would be
another process for the same 32 random bytes).

``start()`` waits (bounded) until named answers the zone's SOA; ``stop()`` ends it by its PID (SIGTERM, then
SIGKILL) and is called by ``close()`` / the ``with`` block on every exit path; the LAN's cleanup would kill it
anyway. ``query()`` runs ``dig`` inside a LAN host: the test process lives in the root namespace and cannot
reach 198.18.0.0/15.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from hakeeper.lab import LabError, LanUnavailable, Node

NAMED = "/usr/sbin/named"
DIG = "/usr/bin/dig"
ZONE = "example.test"
REVERSE_ZONE = "0.18.198.in-addr.arpa"
KEY_NAME = "ddns-key"
ALGORITHM = "hmac-sha256"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

#: The records the zones start with (relative names; the reverse zone's are the last octets).
FORWARD_RECORDS: Mapping[str, tuple[str, str]] = {
    "node1": ("A", "198.18.0.11"),
    "node2": ("A", "198.18.0.12"),
    "node3": ("A", "198.18.0.13"),
    "app": ("A", "198.18.0.99"),  # an old address of the name the tests publish: what on_remove=restore gives back
}
REVERSE_RECORDS: Mapping[str, str] = {
    "11": "node1.example.test.",
    "12": "node2.example.test.",
    "13": "node3.example.test.",
    "99": "app.example.test.",
}


def unavailable_reason() -> str | None:
    """Why BIND cannot run here (the packages are missing), or None."""
    for path, package in ((NAMED, "bind9"), (DIG, "bind9-dnsutils")):
        if not os.access(path, os.X_OK):
            return f"needs {path} (apt-get install {package}; make test installs it as root)"
    return None


def make_secret() -> str:
    """A new HMAC-SHA256 secret, base64, as tsig-keygen makes them."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def key_text(name: str, secret: str, algorithm: str = ALGORITHM) -> str:
    """A key statement in BIND's format (what ``tsig-keygen -a ALGORITHM NAME`` prints)."""
    return f'key "{name}" {{\n\talgorithm {algorithm};\n\tsecret "{secret}";\n}};\n'


def zone_text(origin: str, records: Mapping[str, tuple[str, str]], ns_address: str) -> str:
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 60",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. ( 1 3600 600 86400 60 )",
        f"  IN NS ns1.{ZONE}.",
    ]
    if origin == ZONE:
        lines.append(f"ns1 IN A {ns_address}")
    lines += [f"{name} IN {rdtype} {value}" for name, (rdtype, value) in records.items()]
    return "\n".join(lines) + "\n"


class Bind:
    """named on ``host`` with the zones ``example.test`` and ``0.18.198.in-addr.arpa``; a context manager."""

    def __init__(self, host: Node, directory: Path, *, key_name: str = KEY_NAME) -> None:
        self.host = host
        self.directory = directory
        self.address = host.address
        self.key_name = key_name
        self.secret = make_secret()
        self.key_file = directory / f"{key_name}.key"
        self.conf = directory / "named.conf"
        self.log_file = directory / "named.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.starts = 0

    # ---- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Bind:
        self.setup()
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def setup(self) -> None:
        """Write the key, named.conf and the zone files (once: a restart keeps what named wrote since)."""
        reason = unavailable_reason()
        if reason:
            raise LanUnavailable(reason)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        self.key_file.write_text(key_text(self.key_name, self.secret))
        self.key_file.chmod(0o600)
        forward = {**FORWARD_RECORDS}
        reverse = {octet: ("PTR", name) for octet, name in REVERSE_RECORDS.items()}
        (self.directory / f"{ZONE}.zone").write_text(zone_text(ZONE, forward, self.address))
        (self.directory / f"{REVERSE_ZONE}.zone").write_text(zone_text(REVERSE_ZONE, reverse, self.address))
        self.conf.write_text(self._named_conf())

    def _named_conf(self) -> str:
        d = self.directory
        zones = "".join(
            f'zone "{zone}" {{\n    type primary;\n    file "{d}/{zone}.zone";\n'
            f'    allow-update {{ key "{self.key_name}"; }};\n}};\n'
            for zone in (ZONE, REVERSE_ZONE)
        )
        return (
            "// private named.conf of the hakeeper test LAN (tests/bind.py)\n"
            f'include "{self.key_file}";\n'
            "options {\n"
            f'    directory "{d}";\n'
            f'    pid-file "{d}/named.pid";\n'
            f'    session-keyfile "{d}/session.key";\n'
            f'    managed-keys-directory "{d}";\n'
            f"    listen-on port 53 {{ {self.address}; 127.0.0.1; }};\n"
            "    listen-on-v6 { none; };\n"
            "    recursion no;\n"
            "    allow-recursion { none; };\n"
            "    allow-transfer { none; };\n"
            "    notify no;\n"
            "    dnssec-validation no;\n"
            "    allow-query { any; };\n"
            "};\n"
            "controls { };\n" + zones
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start named in the host and wait until it answers the zone's SOA (at most ``timeout`` s)."""
        if self.running:
            return
        if not self.conf.exists():
            self.setup()
        log = open(self.log_file, "ab")  # noqa: SIM115 - named's stderr, closed with it
        try:
            argv = [NAMED, "-g", "-4", "-n", "2", "-c", str(self.conf)]
            self.proc = self.host.popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"named exited ({self.proc.returncode}) at start:\n{self.log()[-3000:]}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise LabError(f"named did not answer within {timeout} s:\n{self.log()[-3000:]}")

    def _answers(self) -> bool:
        done = self.host.run([DIG, "+short", "+norecurse", "+time=1", "+tries=1", f"@{self.address}", ZONE, "SOA"])
        return done.returncode == 0 and bool(done.stdout.strip())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    def stop(self) -> None:
        """Stop named by its PID: SIGTERM (it writes its journal and exits), SIGKILL after ``STOP_TIMEOUT``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if self.host.is_on:
            self.host.kill_daemon(proc.pid, sig=signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()  # by its PID: it is our child
            proc.wait(timeout=STOP_TIMEOUT)

    def set_secret(self, secret: str) -> str:
        """Give the key ``secret`` (the DNS administrator rotates it) and restart named; returns the old secret."""
        old, self.secret = self.secret, secret
        self.key_file.write_text(key_text(self.key_name, self.secret))
        self.stop()
        self.start()
        return old

    def rotate_key(self) -> str:
        """A new secret for the key; returns the old one."""
        return self.set_secret(make_secret())

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # ---- asking it ------------------------------------------------------------------------------

    def query(self, name: str, rdtype: str = "A", *, via: Node | None = None) -> list[str]:
        """The records named answers for ``name`` (sorted, as dig prints them), asked from ``via`` (default: its host).

        Raises LabError when named does not answer (dig's exit status 9) or answers an error.
        """
        host = via or self.host
        argv = [DIG, "+norecurse", "+time=2", "+tries=2", "+noall", "+answer", "+comments", f"@{self.address}"]
        done = host.run([*argv, name, rdtype], timeout=15)
        if done.returncode != 0:
            raise LabError(f"dig @{self.address} {name} {rdtype}: exit {done.returncode}: {done.stdout.strip()}")
        status = next((line for line in done.stdout.splitlines() if "status:" in line), "")
        if "status: NOERROR" not in status and "status: NXDOMAIN" not in status:
            raise LabError(f"dig @{self.address} {name} {rdtype}: {status.strip()}")
        answers = []
        for line in done.stdout.splitlines():
            fields = line.split()
            if line.startswith(";") or len(fields) < 5 or fields[3] != rdtype:
                continue
            answers.append(" ".join(fields[4:]))
        return sorted(answers)

    def ttl(self, name: str, rdtype: str = "A") -> int | None:
        """The TTL named gives ``name``'s ``rdtype`` records, or None when there are none."""
        argv = [DIG, "+norecurse", "+time=2", "+tries=2", "+noall", "+answer", f"@{self.address}", name, rdtype]
        done = self.host.run(argv, timeout=15)
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[3] == rdtype:
                return int(fields[1])
        return None

    def snapshot(self, names: Mapping[str, str]) -> dict[str, list[str]]:
        """``{"name TYPE": records}`` for each name -> type: what a test compares before and after."""
        return {f"{name} {rdtype}": self.query(name, rdtype) for name, rdtype in names.items()}


def reverse_name(address: str) -> str:
    """``198.18.0.12`` -> ``12.0.18.198.in-addr.arpa``."""
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"
