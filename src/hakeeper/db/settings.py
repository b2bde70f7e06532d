"""Cluster-wide settings, their bounds, and the timing rules between them.

Settings live in the LCD (table ``meta``) and are the same on every node,
but for the few a node has of its own (``node=True``: the shutdown strategy,
a per-server property in LifeKeeper too), which are never replicated:
a heartbeat interval that differs between two nodes makes LifeKeeper's paths
flap, so hakeeper's heartbeats carry the values and a peer whose values differ
is refused (see :mod:`hakeeper.comm`). The rules here are code, checked when a
setting changes (CONVENTIONS: "Timing rules are code"): a value out of bounds
or a combination that makes no sense is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hakeeper.errors import IllegalArgument, OutOfRange


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type
    default: Any
    low: float | None
    high: float | None
    unit: str
    description: str
    lifekeeper: str = ""
    choices: tuple[str, ...] = ()
    node: bool = False  # this node's own (LifeKeeper's per-server property): never replicated

    def parse(self, text: str) -> Any:
        if self.choices:
            if text not in self.choices:
                raise IllegalArgument(f"{self.name}={text!r} is not one of: {', '.join(self.choices)}")
            return text
        try:
            value = self.kind(text)
        except ValueError:
            raise IllegalArgument(f"{self.name}={text!r} is not a {self.kind.__name__}") from None
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise OutOfRange(f"{self.name}={text} is outside {self.low:g}..{self.high:g} {self.unit}".rstrip())
        return value


SHUTDOWN_STRATEGIES = ("Do Not Switch Over Resources", "Switch Over Resources")
QUORUM_MODES = ("majority", "tcp_remote", "none")
WITNESS_MODES = ("remote_verify", "none")
QUORUM_LOSS_ACTIONS = ("osu", "fastkill", "fastboot")
#: Time the losing side of a partition is given to take its resources out of service (quorum_loss_action=osu),
#: beyond the heartbeat interval by which its detection may lag the others'.
OSU_ALLOWANCE = 0.1

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("heartbeat_interval", float, 0.05, 0.05, 10.0, "s",
                "seconds between heartbeats on every communication path", "LCMHBEATTIME"),
        Setting("heartbeat_misses", int, 4, 2, 100, "",
                "heartbeats missed in a row before a path is DEAD", "LCMNUMHBEATS"),
        Setting("comm_port", int, 7365, 1024, 65535, "", "TCP port of communication paths"),
        Setting("shutdown_strategy", str, SHUTDOWN_STRATEGIES[0], None, None, "",
                "what lkstop does with this node's hierarchies (this node's own)", choices=SHUTDOWN_STRATEGIES,
                node=True),
        Setting("quorum_mode", str, "majority", None, None, "",
                "who may act after a failure: majority of nodes, of quorum_hosts (tcp_remote), or none",
                "QUORUM_MODE", choices=QUORUM_MODES),
        Setting("quorum_hosts", str, "", None, None, "",
                "host:port,... reached by TCP for quorum_mode=tcp_remote", "QUORUM_HOSTS"),
        Setting("quorum_timeout", float, 0.5, 0.05, 60.0, "s",
                "how long a node tries to reach each of quorum_hosts", "QUORUM_TIMEOUT_SECS"),
        Setting("witness_mode", str, "remote_verify", None, None, "",
                "before acting on a dead node, ask the others whether they see it dead too", "WITNESS_MODE",
                choices=WITNESS_MODES),
        Setting("quorum_loss_action", str, "osu", None, None, "",
                "what a node that loses quorum does: osu (resources out of service), fastkill, fastboot",
                "QUORUM_LOSS_ACTION", choices=QUORUM_LOSS_ACTIONS),
        Setting("takeover_delay", float, 0.15, 0.0, 60.0, "s",
                "seconds a node waits after declaring a peer dead before taking over, so that a peer "
                "that lost quorum has stopped first"),
        Setting("fence_command", str, "", None, None, "",
                "program run before a takeover ({node}: the dead node's name); the takeover needs exit 0"),
        Setting("confirmso_timeout", float, 600.0, 1.0, 86400.0, "s",
                "how long a failover waits for lk_confirmso (with the flag confirmso!NODE)", "CONFIRMSOTO"),
        Setting("confirmso_default", str, "proceed", None, None, "",
                "what an unconfirmed failover does after confirmso_timeout: proceed or block", "CONFIRMSODEF",
                choices=("proceed", "block")),
        Setting("guard_timeout", float, 5.0, 1.0, 60.0, "s",
                "seconds hakeeperd may be silent before its guard kills it and takes this node's resources "
                "out of service (a dead hakeeperd is noticed at once)"),
        Setting("guard_action", str, "osu", None, None, "",
                "what the guard does when hakeeperd dies or hangs: osu (resources out of service) or reboot",
                choices=("osu", "reboot")),
    )
}  # fmt: skip

#: hakeeperd's own LCD connections wait at most this long for another writer's lock (see daemon_busy_timeout).
DAEMON_BUSY_TIMEOUT = 2.0
MIN_DETECTION = 0.2  # below this, ordinary scheduling noise declares nodes dead
MAX_DETECTION = 120.0


def detection_budget(values: dict[str, Any]) -> float:
    """Seconds from a node's last heartbeat until it is declared dead: interval x misses."""
    return float(values["heartbeat_interval"]) * int(values["heartbeat_misses"])


def daemon_busy_timeout(values: dict[str, Any]) -> float:
    """How long hakeeperd's LCD connections wait for another writer's lock: always below ``guard_timeout``.

    The guard kills a hakeeperd that is silent for ``guard_timeout``; no wait on
    SQLite's lock may come near it, wherever it happens (docs/lcd.md, "How
    hakeeperd writes the LCD"). Half of it, and never more than DAEMON_BUSY_TIMEOUT.
    """
    return min(DAEMON_BUSY_TIMEOUT, float(values["guard_timeout"]) / 2)


def check_rules(values: dict[str, Any]) -> None:
    """Refuse combinations of settings that make no sense together."""
    budget = detection_budget(values)
    if budget < MIN_DETECTION:
        raise OutOfRange(
            f"heartbeat_interval x heartbeat_misses = {budget:g} s is below {MIN_DETECTION:g} s: "
            "nodes would be declared dead on scheduling noise"
        )
    if budget > MAX_DETECTION:
        raise OutOfRange(f"heartbeat_interval x heartbeat_misses = {budget:g} s is above {MAX_DETECTION:g} s")
    if values["quorum_mode"] == "tcp_remote":
        parse_hosts(str(values["quorum_hosts"]))
    if values["quorum_mode"] != "none" and values["quorum_loss_action"] == "osu":
        least = min_takeover_delay(values)
        if float(values["takeover_delay"]) < least:
            quorum = " + quorum_timeout" if values["quorum_mode"] == "tcp_remote" else ""
            raise OutOfRange(
                f"takeover_delay={values['takeover_delay']:g} s is below heartbeat_interval{quorum} + "
                f"{OSU_ALLOWANCE:g} s = {least:g} s: a node that lost quorum could still be serving when another "
                "takes over"
            )


def min_takeover_delay(values: dict[str, Any]) -> float:
    """The shortest takeover delay that lets the losing side of a partition stop first (quorum_loss_action=osu).

    Its detection may lag by a heartbeat interval; with tcp_remote it then tries
    the quorum hosts for up to quorum_timeout before it knows it lost.
    """
    quorum = float(values["quorum_timeout"]) if values["quorum_mode"] == "tcp_remote" else 0.0
    return round(float(values["heartbeat_interval"]) + quorum + OSU_ALLOWANCE, 6)


def parse_hosts(text: str) -> list[tuple[str, int]]:
    """``host:port,...`` of quorum_hosts; at least one, each with a port."""
    hosts = []
    for item in (part.strip() for part in text.split(",")):
        host, sep, port = item.rpartition(":")
        if not item or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise IllegalArgument(f"quorum_hosts: {item!r} is not host:port (quorum_mode=tcp_remote needs them)")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def defaults() -> dict[str, Any]:
    return {name: s.default for name, s in SETTINGS.items()}
