"""CPU hogs: one busy loop per core, in the LAN's switch namespace so that cleanup finds them by namespace."""

from __future__ import annotations

import subprocess
import sys
from types import TracebackType

from . import procs, shell
from .errors import LabError

HOG_MAX_SECONDS = 1800.0  # a hog without a duration still stops by itself after this
HOG_CODE = """\
import os, sys, time
os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[2]))
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


class CpuHog:
    """Busy-loop processes (nice 0 unless told), one per core by default. ``stop()`` or leave the ``with`` block."""

    def __init__(self, netns: str, count: int, seconds: float | None, table: procs.ProcessTable, nice: int = 0) -> None:
        duration = HOG_MAX_SECONDS if seconds is None else float(seconds)
        if not 0 < duration <= HOG_MAX_SECONDS or not 1 <= count <= 1024 or not -20 <= nice <= 19:
            raise ValueError(f"cpu_hog: 1..1024 processes at nice -20..19 for 0..{HOG_MAX_SECONDS} s")
        self._owner = f"hog@{id(self):x}"
        self._table = table
        argv = [shell.tool("nsenter"), f"--net={procs.NETNS_DIR}/{netns}", sys.executable, "-I", "-S", "-c", HOG_CODE]
        self.processes: list[subprocess.Popen[bytes]] = []
        for _ in range(count):
            proc = subprocess.Popen([*argv, str(duration), str(nice)], stdin=subprocess.DEVNULL, start_new_session=True)
            table.add(self._owner, proc)
            self.processes.append(proc)
        for proc in self.processes:  # inside the namespace, where cleanup looks for them
            if not procs.await_entry(proc, "net", procs.netns_id(netns)):
                self.stop()
                raise LabError(f"a CPU hog did not enter {netns} within 5 s")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def stop(self) -> None:
        """Kill and reap every hog (they are our children: no pid can have been reused)."""
        self._table.finish(self._owner)
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)

    def __enter__(self) -> CpuHog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
