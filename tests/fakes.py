"""A kit that lives in memory, for tests of the engine, local recovery and monitoring.

It implements the real Kit interface; tests tell it which resources fail and
how long actions take, and read what it did from ``calls``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hakeeper.db import Lcd, Resource
from hakeeper.kits.base import Created, Kit, KitContext, KitMeta, Param, Policy, Result, Takeover, takeover
from hakeeper.kits.registry import Kits


@dataclass
class Script:
    """What the fake kit does; change it between calls."""

    delay: float = 0.0
    fail_restore: set[str] = field(default_factory=set)
    fail_remove: set[str] = field(default_factory=set)
    unhealthy: set[str] = field(default_factory=set)
    check_delay: dict[str, float] = field(default_factory=dict)
    restore_policy: Policy = Policy.SOFT
    recover_ok: bool | None = None  # None: no recover action
    recover_policy: Policy = Policy.SOFT  # what a failed recover asks for


class FakeKit(Kit):
    meta = KitMeta("fake", "svc", "in-memory test kit", (Param("info", "free text", default=""),))

    def __init__(self, ctx: KitContext, script: Script | None = None) -> None:
        super().__init__(ctx)
        self.script = script or Script()
        self.running: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.active = 0
        self.peak = 0
        self.checking: set[str] = set()
        self.overlapping_checks = 0
        self.takeovers: list[tuple[str, Takeover | None]] = []  # each restore, with the takeover it belonged to

    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        return Created(id or tag, values.get("info", ""))

    async def _work(self, action: str, tag: str, delay: float | None = None) -> None:
        self.calls.append((action, tag))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.script.delay if delay is None else delay)
        finally:
            self.active -= 1

    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        self.takeovers.append((resource.tag, takeover()))
        await self._work("restore", resource.tag)
        if resource.tag in self.script.fail_restore:
            return Result.failure(f"cannot start {resource.tag}", self.script.restore_policy)
        self.running.add(resource.tag)
        self.script.unhealthy.discard(resource.tag)
        return Result.success()

    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        await self._work("remove", resource.tag)
        if resource.tag in self.script.fail_remove:
            return Result.failure(f"cannot stop {resource.tag}")
        self.running.discard(resource.tag)
        return Result.success()

    async def quick_check(self, resource: Resource) -> Result:
        tag = resource.tag
        if tag in self.checking:
            self.overlapping_checks += 1
        self.checking.add(tag)
        try:
            await self._work("quick_check", tag, self.script.check_delay.get(tag, 0.0))
        finally:
            self.checking.discard(tag)
        if tag in self.script.unhealthy:
            return Result.failed(f"{tag} is unhealthy")
        return Result.running() if tag in self.running else Result.stopped()

    def has_recover(self, resource: Resource) -> bool:
        return self.script.recover_ok is not None

    async def recover(self, resource: Resource) -> Result:
        await self._work("recover", resource.tag)
        if self.script.recover_ok:
            self.script.unhealthy.discard(resource.tag)
            return Result.success()
        return Result.failure(f"recover of {resource.tag} failed", self.script.recover_policy)

    def timeout(self, action: str, resource: Resource) -> float:
        return 2.0


def fake_kits(lcd: Lcd, script: Script | None = None) -> tuple[Kits, FakeKit]:
    kits = Kits(KitContext(lcd.path.parent, lcd.local_node))
    kit = FakeKit(kits.ctx, script)
    kits.add(kit)
    return kits, kit


def build(lcd: Lcd, edges: list[tuple[str, str]], extra: tuple[str, ...] = ()) -> None:
    """Create fake/svc resources for every tag named in ``edges`` and ``extra``, and the dependencies."""
    tags = sorted({t for e in edges for t in e} | set(extra))
    for tag in tags:
        lcd.create_resource(tag, f"id-{tag}", "fake", "svc", ensure_type=True)
    for parent, child in edges:
        lcd.create_dependency(parent, child)
