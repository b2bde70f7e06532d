"""The replication process's control socket: JSON lines over a Unix socket, and hakeeperd's client of it.

The socket is ``<root>/replication/<VOL>/control.sock`` (mode 0600, root's only). One request per
connection, one line each way::

    -> {"verb": "status"}
    <- {"ok": true, "status": {"volume": "data", "role": "source", "device": "/dev/loop3", "targets": [...]}}
    -> {"verb": "pause", "target": "node2"}            (target null: every target)
    <- {"ok": true, "said": "data: mirror to node2 paused"}
    <- {"ok": false, "error": "...", "code": 5}          (code: the exit code of hakeeper's error kinds)

Verbs: ``status``, ``pause``, ``continue``, ``break``, ``resync`` (``checksum``), ``verify``,
``resolve`` (``keep``); for a switchover ``handover`` (``target``, ``timeout``) and ``thaw`` on the
source, ``forget_handover`` on the target. A verb answers once the process has *accepted* it (a resync or
verify runs on in the process). :class:`ProcessControl` is the :class:`~.control.MirrorControl` that
hakeeperd hands to ``hakeeper mirror``: every call blocks (hakeeperd calls it in a worker thread) and
is bounded by its timeout; a process that does not answer is :class:`~.control.MirrorNotRunning`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hakeeper.errors import HakeeperError, error_for

from .control import MirrorNotRunning, TargetStatus, VolumeStatus
from .states import MirrorState

logger = logging.getLogger(__name__)

CONTROL_NAME = "control.sock"
MAX_LINE = 1 << 20
CALL_TIMEOUT = 10.0  # s for the process to answer one request
ACCEPT_POLL = 0.5  # s between two looks at the stop flag of the accepting thread

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def read_line(sock: socket.socket) -> bytes:
    """One ``\\n``-terminated line (at most MAX_LINE bytes), within the socket's timeout."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the peer closed the control connection mid-line")
        data += chunk
        if len(data) > MAX_LINE:
            raise ConnectionError(f"a control line longer than {MAX_LINE} bytes")
    return bytes(data)


# ---------------------------------------------------------------------- the process's side


class ControlServer:
    """Answers requests on the control socket in a thread of its own until :meth:`close`."""

    def __init__(self, path: Path, handle: Handler) -> None:
        self.path = path
        self.handle = handle
        self._stop = threading.Event()
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: only root talks to the process
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._sock.listen(8)
        self._sock.settimeout(ACCEPT_POLL)
        self._thread = threading.Thread(target=self._serve, name="replication-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(CALL_TIMEOUT)
        try:
            request = json.loads(read_line(conn))
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except (OSError, ValueError) as exc:
            logger.warning("control socket: a malformed request refused: %s", exc)
            with contextlib.suppress(OSError):
                conn.sendall(
                    json.dumps({"ok": False, "error": f"malformed request: {exc}", "code": 2}).encode() + b"\n"
                )
            return
        try:
            answer = {"ok": True, **self.handle(request)}
        except HakeeperError as exc:
            answer = {"ok": False, "error": str(exc), "code": exc.exit_code}
        except Exception as exc:  # one bad request must not end the control thread
            logger.exception("control socket: %s failed", request.get("verb"))
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "code": 1}
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._thread.is_alive():
            self._thread.join(CALL_TIMEOUT + ACCEPT_POLL)
        self.path.unlink(missing_ok=True)


def status_json(status: VolumeStatus) -> dict[str, Any]:
    return {
        "volume": status.volume,
        "role": status.role,
        "device": status.device,
        "targets": [
            {
                "node": t.node,
                "state_code": int(t.state),
                "resync_percent": t.resync_percent,
                "dirty_bytes": t.dirty_bytes,
                "split_brain": t.split_brain,
                "resync_bytes_sent": t.resync_bytes_sent,
            }
            for t in status.targets
        ],
    }


def status_from_json(value: Any) -> VolumeStatus:
    if not isinstance(value, dict):
        raise ValueError("a status is a JSON object")
    targets = tuple(
        TargetStatus(
            node=str(t["node"]),
            state=MirrorState(int(t["state_code"])),
            resync_percent=None if t.get("resync_percent") is None else float(t["resync_percent"]),
            dirty_bytes=None if t.get("dirty_bytes") is None else int(t["dirty_bytes"]),
            split_brain=bool(t.get("split_brain")),
            resync_bytes_sent=None if t.get("resync_bytes_sent") is None else int(t["resync_bytes_sent"]),
        )
        for t in value.get("targets", [])
    )
    device = value.get("device")
    return VolumeStatus(str(value["volume"]), str(value["role"]), targets, str(device) if device else None)


# ---------------------------------------------------------------------- hakeeperd's side


class ProcessControl:
    """:class:`~.control.MirrorControl` over the control socket of ``volume``'s replication process."""

    def __init__(self, volume: str, path: Path, *, timeout: float = CALL_TIMEOUT) -> None:
        self.volume = volume
        self.path = path
        self.timeout = timeout

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(json.dumps(request).encode() + b"\n")
                answer = json.loads(read_line(sock))
        except (OSError, ValueError) as exc:
            raise MirrorNotRunning(
                f"the replication process of {self.volume!r} did not answer {request.get('verb')}: {exc}"
            ) from None
        if not isinstance(answer, dict):
            raise MirrorNotRunning(f"the replication process of {self.volume!r} answered garbage")
        if not answer.get("ok"):
            raise error_for(int(answer.get("code", 1)), str(answer.get("error", "refused")))
        return answer

    def _verb(self, verb: str, **more: Any) -> str:
        return str(self.call({"verb": verb, **more}).get("said", ""))

    def status(self) -> VolumeStatus:
        answer = self.call({"verb": "status"})
        try:
            return status_from_json(answer.get("status"))
        except (KeyError, ValueError, TypeError) as exc:
            raise MirrorNotRunning(f"the replication process of {self.volume!r} sent a bad status: {exc}") from None

    def pause(self, target: str | None) -> str:
        return self._verb("pause", target=target)

    def resume(self, target: str | None) -> str:
        return self._verb("continue", target=target)

    def break_mirror(self, target: str | None) -> str:
        return self._verb("break", target=target)

    def resync(self, target: str | None, *, checksum: bool) -> str:
        return self._verb("resync", target=target, checksum=checksum)

    def verify(self, target: str | None) -> str:
        return self._verb("verify", target=target)

    def handover(self, to: str, *, timeout: float) -> dict[str, Any]:
        slow = ProcessControl(self.volume, self.path, timeout=timeout + CALL_TIMEOUT)  # the drain takes its time
        return slow.call({"verb": "handover", "target": to, "timeout": timeout})

    def thaw(self) -> str:
        return self._verb("thaw")

    def forget_handover(self) -> str:
        return self._verb("forget_handover")

    def resolve(self, keep: str) -> str:
        return self._verb("resolve", keep=keep)
