"""Events and their handlers (LifeKeeper's alarm interface).

A monitor, a kit or an administrator reports a failure with ``sendevent -C
CLASS -E EVENT -n TAG``. The executables in ``<root>/events/<class>/<event>/``
run with sendevent's options (or, when that directory has none, those in
``<root>/events/genclass/``), then those in ``<root>/events/allclass/``, as
LifeKeeper's event directories do; each runs in its own process group with a
time limit. Then, when the event names a resource in service here, local
recovery takes over (:mod:`hakeeper.events.local`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hakeeper.kits.actions import executable
from hakeeper.kits.process import run_script

logger = logging.getLogger(__name__)

HANDLER_TIMEOUT = 60.0
SEVERITIES = ("INFO", "WARNING", "MAJOR", "CRITICAL")


@dataclass(frozen=True)
class Event:
    cls: str
    event: str
    tag: str
    severity: str = "MAJOR"
    monitor: str = ""
    text: str = ""

    def argv(self) -> list[str]:
        args = ["-C", self.cls, "-E", self.event, "-n", self.tag, "-s", self.severity]
        if self.monitor:
            args += ["-m", self.monitor]
        if self.text:
            args += ["-x", self.text]
        return args

    def describe(self) -> str:
        by = f" from {self.monitor}" if self.monitor else ""
        text = f": {self.text}" if self.text else ""
        return f"{self.cls}/{self.event} on {self.tag} ({self.severity}){by}{text}"


def handlers_for(root: Path, event: Event) -> list[Path]:
    """The handlers an event runs: its own directory's, else genclass's, then allclass's; sorted by name."""
    events = root / "events"

    def scripts(directory: Path) -> list[Path]:
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if executable(p) is not None)

    own = scripts(events / event.cls / event.event)
    return (own or scripts(events / "genclass")) + scripts(events / "allclass")


async def run_handlers(root: Path, event: Event, node: str) -> None:
    """Run every handler of ``event`` concurrently, each bounded by :data:`HANDLER_TIMEOUT`."""
    paths = handlers_for(root, event)
    if not paths:
        return
    env = dict(os.environ, HAKEEPER_ROOT=str(root), LKROOT=str(root), HAKEEPER_NODE=node)

    async def one(path: Path) -> None:
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT):
                done = await run_script([str(path), *event.argv()], env=env, cwd=root)
        except TimeoutError:
            logger.warning("event handler %s timed out after %g s (%s)", path, HANDLER_TIMEOUT, event.describe())
            return
        if done.returncode != 0:
            logger.warning("%s", done.describe(f"event handler {path}"))

    await asyncio.gather(*(one(p) for p in paths))
