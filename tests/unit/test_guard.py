"""The guard's watch: it tells a stop on purpose from a dead or a silent hakeeperd."""

from __future__ import annotations

import os
import threading
import time

from hakeeper.guard import watch


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
    assert 0.4 <= took < 2.0, f"silent after {took:.2f} s: the ticks held it off, then 0.2 s of silence woke it"
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
