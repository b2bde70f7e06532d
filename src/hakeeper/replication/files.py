"""Files of a mirrored volume's state directory replaced whole: readers see the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path


def replace_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``, durable when this returns (the file and its directory entry synced):
    what a crash must not lose (a bitmap's creation, a generation record, a handover)."""
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fdatasync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path: Path, text: str) -> None:
    """Replace ``path`` by the line ``text``, not synced: what a process says about itself (pid, device)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
