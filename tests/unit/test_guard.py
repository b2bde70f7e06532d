"""The guard: it tells a stop on purpose from a dead or a silent hakeeperd; and a failing hakeeperd releases it."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

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


def test_ticks_keep_it_calm_and_silence_wakes_it() -> None:
    r, w = os.pipe()

    def ticks() -> None:
        for _ in range(5):  # 0.25 s of ticks, then silence
            os.write(w, b'{"tick": 1, "timeout": 0.2}\n')
            time.sleep(0.05)

    feeder = threading.Thread(target=ticks)
    started = time.monotonic()
    feeder.start()
    assert watch(r, 0.2) == "silent"
    took = time.monotonic() - started
    feeder.join()
    assert took >= 0.4, f"silent after {took:.2f} s: the ticks held it off, then 0.2 s of silence woke it"
    os.close(r)
    os.close(w)


def test_garbage_is_not_a_tick() -> None:
    r, w = os.pipe()
    os.write(w, b"not json\n")
    started = time.monotonic()
    assert watch(r, 0.2) == "silent"
    assert time.monotonic() - started >= 0.2
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
