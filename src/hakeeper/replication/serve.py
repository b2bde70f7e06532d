"""The replication process: serves one volume until SIGTERM (``python -m hakeeper.replication.serve``).

    python -m hakeeper.replication.serve --store PATH [--create-size BYTES] --state-dir DIR
                                         [--wrap MODULE:FUNCTION] [--max-threads N] [--max-idle-threads N]

It enters a private mount namespace (before any thread exists), hardens itself (PR_SET_IO_FLUSHER,
mlockall), opens the backing store as a :class:`~.device.LocalStore`, passes it through the ``--wrap``
factory when one is given (the seam for the mirror engine: ``FUNCTION(local_store) -> BlockStore``),
mounts the FUSE file on ``DIR/fuse`` (visible only in its namespace) and attaches a loop device.

When the volume is ready it writes the loop device's path to ``DIR/device`` (atomically) and prints the
same path on stdout as one line. On SIGTERM (or SIGINT) it stops: the loop device is let go and, once the
kernel detached it, the FUSE file is unmounted and ``DIR/device`` removed. While a filesystem on the
device is still mounted, the device cannot go: the process says so at ERROR and keeps serving until it is
unmounted (SIGKILL forces; the filesystem above then sees I/O errors, as with a failed disk).

Exit codes: 0 stopped cleanly, 1 the volume could not be served, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from hakeeper.errors import HakeeperError, UsageError
from hakeeper.replication.device import BlockStore, LocalStore
from hakeeper.replication.files import replace
from hakeeper.replication.loop import VolumeError
from hakeeper.replication.volume import (
    Volume,
    VolumeBusy,
    enter_private_mount_namespace,
    harden_process,
    stop_on_signals,
)

logger = logging.getLogger("hakeeper.replication.serve")

DEVICE_FILE = "device"
MOUNT_DIR = "fuse"
WATCH = 1.0  # s between two looks at libfuse's loop while serving
BUSY_RETRY = 1.0  # s between two attempts to stop while the device is still in use

StoreFactory = Callable[[LocalStore], BlockStore]


def load_factory(spec: str) -> StoreFactory:
    """``module:function`` -> the function (the mirror engine's factory, or a test's)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise UsageError(f"--wrap wants MODULE:FUNCTION, not {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--wrap {spec}: {exc}") from None
    return cast(StoreFactory, factory)


def write_device_file(state_dir: Path, device: str) -> None:
    replace(state_dir / DEVICE_FILE, device)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hakeeper.replication.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, type=Path, help="the backing store: a block device or image file")
    parser.add_argument("--create-size", type=int, help="create the image file with this many bytes if missing")
    parser.add_argument("--state-dir", required=True, type=Path, help="where the mount point and device file live")
    parser.add_argument("--wrap", help="MODULE:FUNCTION turning the LocalStore into the BlockStore served")
    parser.add_argument("--max-threads", type=int, default=8, help="libfuse's worker threads, at most")
    parser.add_argument("--max-idle-threads", type=int, default=4, help="libfuse's worker threads kept when idle")
    parser.add_argument(
        "--detach-timeout", type=float, default=10.0, help="s to wait for the loop device to go at each stop attempt"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    stop = stop_on_signals()
    try:
        state_dir = args.state_dir.absolute()
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / DEVICE_FILE).unlink(missing_ok=True)
        factory = load_factory(args.wrap) if args.wrap else None
        enter_private_mount_namespace(keep=(args.store.absolute(), state_dir))
        harden_process()
        local = LocalStore(args.store, create_size=args.create_size)
    except HakeeperError as exc:
        print(f"hakeeper: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        store = factory(local) if factory else local
        volume = Volume(
            store, state_dir / MOUNT_DIR, max_threads=args.max_threads, max_idle_threads=args.max_idle_threads
        )
        volume.open()
    except HakeeperError as exc:
        local.close()
        print(f"hakeeper: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        write_device_file(state_dir, volume.device)
        print(volume.device, flush=True)
        while True:
            while not stop.wait(WATCH):
                if not volume.serving:
                    raise VolumeError(f"the FUSE loop of {volume.image} ended by itself: {volume.device} is dead")
            try:
                volume.close(detach_timeout=args.detach_timeout)
                break
            except VolumeBusy as exc:
                logger.error("%s", exc)
                stop.clear()
                stop.wait(BUSY_RETRY)
                stop.set()
    except HakeeperError as exc:
        print(f"hakeeper: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        (state_dir / DEVICE_FILE).unlink(missing_ok=True)
        if store is not local:
            store.close()
        local.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
