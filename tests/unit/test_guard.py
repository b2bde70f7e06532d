"""The guard: it tells a stop on purpose from a dead or a silent hakeeperd; and a failing hakeeperd releases it."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import threading
import time
from pathlib import Path

import pytest

from hakeeper.db import Lcd, State
from hakeeper.guard import GuardLink, watch
from tests.conftest import Cli


def test_a_stop_on_purpose_is_told_apart_from_death_and_silence() -> None:
    r, w = os.pipe()
    os.write(w, b'{"tick": 1, "timeout": 5}\n{"stop": true}\n')
    assert watch(r, 5.0) == "stopped"
    os.close(w)
    assert watch(r, 5.0) == "gone", "the pipe closed: hakeeperd died"
    os.close(r)


def drained(fd: int) -> bool:
    """Whether everything written to the pipe ``fd`` reads from has been read."""
    return not select.select([fd], [], [], 0)[0]


def test_ticks_keep_it_calm_and_silence_wakes_it() -> None:
    """Ticks hold it off past its first timeout; silence after the last one wakes it.

    It starts with a 0.2 s timeout, and the first tick sets 2 s; the ticks come 0.3 s
    apart, so a watcher that ignored them would fall silent before the second. No
    clock is asserted: what it had read when it fell silent is.
    """
    r, w = os.pipe()
    written = []

    def ticks() -> None:
        for i in range(5):
            os.write(w, b'{"tick": 1, "timeout": 2.0}\n')
            written.append(i)
            for _ in range(2000):  # bounded: the watcher reads a tick at once
                if drained(r):
                    break
                time.sleep(0.001)
            time.sleep(0.3)

    feeder = threading.Thread(target=ticks)
    feeder.start()
    result = watch(r, 0.2)
    seen = list(written)
    feeder.join(10)
    assert result == "silent"
    assert seen == [0, 1, 2, 3, 4], f"it fell silent after tick {seen[-1] if seen else None} while ticks still came"
    assert drained(r), "a tick was left unread"
    os.close(r)
    os.close(w)


def test_garbage_is_not_a_tick() -> None:
    r, w = os.pipe()
    os.write(w, b"not json\n")
    assert watch(r, 0.2) == "silent"
    assert drained(r), "it read the line, and took it for no tick"
    os.close(r)
    os.close(w)


def test_a_guard_told_to_stand_down_is_not_started_again(tmp_path: Path) -> None:
    """hakeeperd stopping on purpose: a guard started after the stand-down would act when hakeeperd exits."""
    link = GuardLink(tmp_path, lambda: 5.0)

    async def scenario() -> None:
        running = asyncio.create_task(link.run())
        for _ in range(200):  # bounded: 10 s for the guard process to start
            if link._proc is not None:
                break
            await asyncio.sleep(0.05)
        await link.stand_down()
        done, _ = await asyncio.wait({running}, timeout=10)  # a restart would come after 1 s
        assert running in done, "the link ended instead of starting another guard"
        assert link._proc is not None and link._proc.returncode == 0

    asyncio.run(scenario())


def test_a_released_guard_acts_as_on_a_death_and_hakeeperd_waits_until_it_is_done(root: Path, cli: Cli) -> None:
    """hakeeperd's fatal exit (a service it cannot live without died): the guard takes web down, then it may go."""
    true = shutil.which("true") or "/bin/true"
    assert cli("create", "gen/app", "-t", "web", f"restore={true}", f"remove={true}").code == 0
    assert cli("perform_action", "-t", "web", "-a", "restore").code == 0
    link = GuardLink(root, lambda: 5.0)

    async def scenario() -> tuple[bool, bool, int | None]:
        running = asyncio.create_task(link.run())
        for _ in range(200):  # bounded: 10 s for the guard process to start
            if link.alive:
                break
            await asyncio.sleep(0.05)
        running.cancel()  # the link ends first (it would start the guard again), the guard process runs on
        await asyncio.gather(running, return_exceptions=True)
        alive = link.alive
        acted = await link.release(60)
        return alive, acted, link._proc.returncode if link._proc else None

    alive, acted, code = asyncio.run(scenario())
    assert alive and acted and code == 0
    with Lcd.open(root) as lcd:
        web = lcd.resource("web")
    assert web.state is State.OSU and web.reason == "guard: hakeeperd gone"


def test_without_a_guard_release_says_so(tmp_path: Path) -> None:
    assert asyncio.run(GuardLink(tmp_path, lambda: 5.0).release(1)) is False, "hakeeperd must act itself"


def test_a_lower_guard_timeout_changes_the_feeding_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lowered from 400 s to 1 s: the next feed must not wait out a quarter of the old timeout (100 s).

    The guard (here ``cat``, which echoes what it is fed) would kill a healthy
    hakeeperd otherwise: the test LAN saw it when ``guard_timeout=1`` reached a peer.
    """
    timeout = [400.0]
    link = GuardLink(tmp_path, lambda: timeout[0])
    real_exec = asyncio.create_subprocess_exec

    async def fake_guard(*_argv: object, **_kw: object) -> asyncio.subprocess.Process:
        return await real_exec("cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    monkeypatch.setattr("hakeeper.guard.asyncio.create_subprocess_exec", fake_guard)

    async def scenario() -> list[float]:
        running = asyncio.create_task(link.run())
        for _ in range(200):  # bounded: 10 s for the process to start
            if link._proc is not None:
                break
            await asyncio.sleep(0.05)
        assert link._proc is not None and link._proc.stdout is not None
        fed = [json.loads(await asyncio.wait_for(link._proc.stdout.readline(), 10))["timeout"]]
        timeout[0] = 1.0
        link.reconfigure()
        for _ in range(3):  # the reconfigure's own line, then the loop's, then one a quarter second on
            fed.append(json.loads(await asyncio.wait_for(link._proc.stdout.readline(), 10))["timeout"])
        link._down = True  # as stand_down(), but cat does not read a stop: it ends when its input closes
        assert link._proc.stdin is not None
        link._proc.stdin.close()
        await asyncio.wait_for(running, 10)
        return fed

    assert asyncio.run(scenario()) == [400.0, 1.0, 1.0, 1.0]
