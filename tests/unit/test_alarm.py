"""Event handlers: LifeKeeper's events/<class>/<event> directories of executables."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hakeeper.events.alarm import Event, handlers_for, run_handlers


def handler(directory: Path, name: str, log: Path, code: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "{name} $* node=$HAKEEPER_NODE" >> {log}\nexit {code}\n')
    path.chmod(0o755)
    return path


def test_handlers_of_the_event_then_allclass_run_with_sendevents_options(tmp_path: Path) -> None:
    log = tmp_path / "log"
    events = tmp_path / "events"
    handler(events / "generic" / "failure", "10-page", log)
    handler(events / "generic" / "failure", "20-mail", log, code=3)  # a failing handler does not stop others
    handler(events / "genclass", "catch-all", log)
    handler(events / "allclass", "audit", log)
    (events / "generic" / "failure" / "README").write_text("not executable: ignored")
    event = Event("generic", "failure", "web", "CRITICAL", "my-monitor", "port 80 closed")
    names = [p.name for p in handlers_for(tmp_path, event)]
    assert names == ["10-page", "20-mail", "audit"], "genclass only serves events without handlers of their own"
    asyncio.run(run_handlers(tmp_path, event, "node1"))
    lines = sorted(log.read_text().splitlines())
    options = "-C generic -E failure -n web -s CRITICAL -m my-monitor -x port 80 closed node=node1"
    assert lines == [f"10-page {options}", f"20-mail {options}", f"audit {options}"]


def test_an_event_without_handlers_of_its_own_goes_to_genclass(tmp_path: Path) -> None:
    log = tmp_path / "log"
    handler(tmp_path / "events" / "genclass", "catch-all", log)
    asyncio.run(run_handlers(tmp_path, Event("disk", "full", "vol1"), "node1"))
    assert log.read_text() == "catch-all -C disk -E full -n vol1 -s MAJOR node=node1\n"
