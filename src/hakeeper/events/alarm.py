"""Events and their handlers (LifeKeeper's alarm interface).

A monitor, a kit or an administrator reports a failure with ``sendevent -C
CLASS -E EVENT -n TAG``. The executables in ``<root>/events/<class>/<event>/``
run with sendevent's options (or, when that directory has none, those in
``<root>/events/genclass/``), then those in ``<root>/events/allclass/``, as
LifeKeeper's event directories do; each runs in its own process group with a
time limit. Handlers get ``-A`` (advisory) when an action already runs on the
object, and their output goes to sendevent's ``-O`` file when one was named.
Then, when the event names a resource in service here, local recovery takes
over (:mod:`hakeeper.events.local`).
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
#: ``sendevent -s`` as a number. LifeKeeper does not publish its numbers; hakeeper reads 1-4 in rising order.
NUMBERED_SEVERITIES = {str(number): name for number, name in enumerate(SEVERITIES, start=1)}


def severity_name(value: str) -> str | None:
    """The severity ``sendevent -s value`` names (a name in any case, or a number 1-4); None if none."""
    name = NUMBERED_SEVERITIES.get(value.strip(), value.upper())
    return name if name in SEVERITIES else None


@dataclass(frozen=True)
class Event:
    """One event, with sendevent's options: those hakeeper acts on have fields, the others ride in ``extra``."""

    cls: str
    event: str
    tag: str
    severity: str = "MAJOR"  # as the monitor gave it: a name or a number (see severity_name)
    monitor: str = ""
    text: str = ""
    system: str = ""  # -S: the system the event happened on; empty: this node
    outfile: str = ""  # -O: the file the handlers' output is appended to
    extra: tuple[str, ...] = ()  # sendevent's other LifeKeeper options, as given (-c -i -t -T -o -z -w -a -P -p -d)
    advisory: bool = False  # -A for the handlers: an action already runs on the object

    @property
    def level(self) -> str:
        return severity_name(self.severity) or self.severity

    def argv(self) -> list[str]:
        """The options the handlers get: sendevent's own, as LifeKeeper passes them on."""
        args = ["-C", self.cls, "-E", self.event, "-n", self.tag, "-s", self.severity]
        if self.monitor:
            args += ["-m", self.monitor]
        if self.text:
            args += ["-x", self.text]
        if self.system:
            args += ["-S", self.system]
        if self.outfile:
            args += ["-O", self.outfile]
        args += self.extra
        if self.advisory:
            args.append("-A")
        return args

    def describe(self) -> str:
        by = f" from {self.monitor}" if self.monitor else ""
        text = f": {self.text}" if self.text else ""
        where = f" on system {self.system}" if self.system else ""
        return f"{self.cls}/{self.event} on {self.tag}{where} ({self.level}){by}{text}"


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
        if event.outfile:
            try:
                await asyncio.to_thread(_append, Path(event.outfile), f"{path}: exit {done.returncode}\n{done.output}")
            except OSError as exc:
                logger.warning("event handler %s: cannot append its output to %s: %s", path, event.outfile, exc)

    await asyncio.gather(*(one(p) for p in paths))


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(text if text.endswith("\n") else text + "\n")
