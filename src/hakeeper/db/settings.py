"""Cluster-wide settings, their bounds, and the timing rules between them.

Settings live in the LCD (table ``meta``) and are the same on every node:
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

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("heartbeat_interval", float, 0.2, 0.05, 10.0, "s",
                "seconds between heartbeats on every communication path", "LCMHBEATTIME"),
        Setting("heartbeat_misses", int, 4, 2, 100, "",
                "heartbeats missed in a row before a path is DEAD", "LCMNUMHBEATS"),
        Setting("comm_port", int, 7365, 1024, 65535, "", "TCP port of communication paths"),
        Setting("shutdown_strategy", str, SHUTDOWN_STRATEGIES[0], None, None, "",
                "what lkstop does with this node's hierarchies", choices=SHUTDOWN_STRATEGIES),
    )
}  # fmt: skip

MIN_DETECTION = 0.2  # below this, ordinary scheduling noise declares nodes dead
MAX_DETECTION = 120.0


def detection_budget(values: dict[str, Any]) -> float:
    """Seconds from a node's last heartbeat until it is declared dead: interval x misses."""
    return float(values["heartbeat_interval"]) * int(values["heartbeat_misses"])


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


def defaults() -> dict[str, Any]:
    return {name: s.default for name, s in SETTINGS.items()}
