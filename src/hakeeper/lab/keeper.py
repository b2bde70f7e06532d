"""A lab that outlives the command that made it: ``hakeeper lab up``, ``down`` and ``status``.

A LAN of namespaces lives as long as the process that holds it (its :class:`~hakeeper.lab.lan.Lan`: the
namespace holders are its children, their namespaces its open file descriptors). So ``lab up`` starts a
*keeper*, ``python -m hakeeper.lab.keeper``, which detaches (a double fork: it is nobody's child), builds the
LAN, gives every node a state directory of one cluster and starts hakeeperd in it (:class:`HaCluster`, unless
``--bare``), writes the lab's *record*, says "ready" and waits. ``lab down`` sends it SIGTERM by PID: the keeper
closes the LAN as a test does (every process of its namespaces killed by PID, the namespaces deleted, the
bridges with them). Should the keeper be gone, or not end in time, ``lab down`` does that work itself, from
the record. A keeper ends its lab by itself after :data:`LIFETIME`.

The record, ``<run dir>/hakeeper-lab.json`` (``/run`` unless told), says what was made: the keeper (PID and
start time, so that a recycled PID is never signalled), the LAN's prefix, namespaces and state file, every
host's addresses and namespace holder, the state directories. It is created (``O_EXCL``, under a lock of the
run directory) before anything else, so two ``lab up`` never race, and ``lab down`` works from any shell.
The LAN's own state file stays in ``/run`` (:mod:`.state`), owned by the keeper: a test run's stale-LAN
cleanup leaves a live keeper's LAN alone, and removes it should the keeper die without cleaning up.

Nothing is created in the root network namespace, and every address is in 198.18.0.0/15 (see :mod:`.lan`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from hakeeper.errors import AlreadyExists, IllegalArgument, OutOfRange

from . import procs, state, topology
from .errors import LabError, LanUnavailable
from .node import HOLDER_SECONDS

logger = logging.getLogger("hakeeper.lab.keeper")  # also when run as __main__

RECORD_NAME = "hakeeper-lab.json"
RUN_DIR = Path("/run")
LOG_NAME = "lab.log"
LIFETIME = HOLDER_SECONDS - 600.0  # s: a keeper takes its lab down by itself before its holders' sleep ends
READY_TIMEOUT = 120.0  # s `lab up` waits for the keeper's "ready"
STOP_TIMEOUT = 30.0  # s `lab down` waits for the keeper to take its lab down
KILL_TIMEOUT = 5.0
MAX_NETWORKS = 2


@dataclass(frozen=True)
class Plan:
    """What ``lab up`` asks the keeper for."""

    nodes: int
    networks: int
    cluster: bool
    directory: str  # the nodes' state directories and the lab's log ("": a new one in the temporary directory)
    record: str

    def check(self) -> None:
        if not 1 <= self.nodes <= topology.MAX_NODES:
            raise OutOfRange(f"--nodes {self.nodes} must be within 1..{topology.MAX_NODES}")
        if not 1 <= self.networks <= MAX_NETWORKS:
            raise OutOfRange(f"--networks {self.networks} must be 1 or 2")


# ---- the record ---------------------------------------------------------------------------------------


def record_path(run_dir: str | os.PathLike[str] | None) -> Path:
    if run_dir is not None and not os.fspath(run_dir):
        raise IllegalArgument("--run-dir needs a directory name")
    return Path(run_dir if run_dir is not None else RUN_DIR) / RECORD_NAME


def read_record(path: Path) -> dict[str, Any] | None:
    """The lab's record, None when there is none; :class:`LabError` when it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LabError(f"cannot read the lab's record {path}: {e.strerror}") from e
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise LabError(f"the lab's record {path} is damaged; check 'ip netns list', then remove it")
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Replace the record as a whole: a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, path)


def _identity(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start": procs.start_time(pid)}


def is_alive(who: Any) -> bool:
    """Whether the process a record names (``{"pid", "start"}``) runs still: same PID, same start time."""
    if not isinstance(who, dict) or not isinstance(who.get("pid"), int):
        return False
    return procs.alive(who["pid"]) and procs.start_time(who["pid"]) == who.get("start")


def owner(record: dict[str, Any]) -> dict[str, Any] | None:
    """Who answers for the lab: its keeper, or the ``lab up`` that is starting one."""
    who = record.get("keeper") or record.get("starter")
    return who if isinstance(who, dict) else None


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """One ``lab up`` or ``lab down`` at a time in a run directory."""
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise LabError(f"cannot use {run_dir} for the lab's record: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- lab up -------------------------------------------------------------------------------------------


def up(plan: Plan, say: Any = print) -> dict[str, Any]:
    """Start a keeper for ``plan`` and wait until its lab is ready; return the lab's record."""
    plan.check()
    if plan.directory:
        directory = Path(plan.directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise AlreadyExists(f"--dir {directory} is not an empty directory: name a new one, or leave --dir out")
    from .lan import unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise LanUnavailable(f"{reason}: run 'hakeeper lab up' as root" if os.geteuid() else reason)
    path = Path(plan.record)
    with _locked(path.parent):
        record = read_record(path)
        if record is not None:
            if is_alive(owner(record)):
                raise AlreadyExists(
                    f"a lab is up already ({record.get('prefix') or 'starting'}, see: hakeeper lab status); "
                    "take it down first: hakeeper lab down"
                )
            say(f"removing a lab whose keeper has died ({record.get('prefix') or 'never started'})")
            _remove(path, record, say)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError as e:
            raise AlreadyExists(f"{path} appeared while this lab was starting: see hakeeper lab status") from e
        except OSError as e:
            raise LabError(f"cannot write the lab's record {path}: {e.strerror}") from e
        with os.fdopen(fd, "w") as f:
            json.dump({"status": "starting", "starter": _identity(os.getpid()), "plan": asdict(plan)}, f)
    try:
        try:
            if plan.directory:
                Path(plan.directory).mkdir(mode=0o700, parents=True, exist_ok=True)
            else:
                plan = replace(plan, directory=tempfile.mkdtemp(prefix="hakeeper-lab-"))
        except OSError as e:
            raise LabError(f"cannot make the lab's directory {plan.directory or 'in /tmp'}: {e.strerror}") from e
        record = _spawn(plan, Path(plan.directory))
    except BaseException:
        _remove(path, read_record(path) or {}, say)
        raise
    return record


def _spawn(plan: Plan, directory: Path) -> dict[str, Any]:
    """Start the keeper; return its record once it says ready. On any failure, nothing of it is left."""
    path = Path(plan.record)
    log = open(directory / LOG_NAME, "ab")  # noqa: SIM115 - the keeper's stderr, closed with it
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hakeeper.lab.keeper", json.dumps(asdict(plan))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd="/", start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()
    assert proc.stdout is not None
    keeper: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        words = Lines(proc.stdout.fileno())
        proc.wait(timeout=30)  # the first process forks the keeper, says its pid and leaves
        first = words.next(started + 30)
        if first.isdigit():
            keeper = _identity(int(first))
        line = words.next(started + READY_TIMEOUT) if keeper else first
        record = read_record(path) or {}
        if line != "ready" or record.get("status") != "up":
            waited = time.monotonic() - started
            silent = f"no word from it within {READY_TIMEOUT:g} s" if waited >= READY_TIMEOUT else "it ended"
            why = line.removeprefix("error: ") or silent
            raise LabError(f"the lab did not come up: {why} (see {directory / LOG_NAME})")
        return record
    except BaseException:  # a failure, or Ctrl-C while waiting: the keeper and its lab go
        if keeper is not None and is_alive(keeper):
            _signal(keeper, signal.SIGTERM)
            if not _gone(keeper, STOP_TIMEOUT):
                _signal(keeper, signal.SIGKILL)
                _gone(keeper, KILL_TIMEOUT)
        state.cleanup_stale()  # a keeper killed while it built its LAN left a stale one
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()


class Lines:
    """Lines from a pipe, each waited for until a deadline (a pipe may bring two lines in one read)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def next(self, deadline: float) -> str:
        """The next line ('' at end of file or at the deadline)."""
        for _ in range(10_000):  # bounded: each turn reads a chunk or ends
            if b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                return line.decode(errors="replace")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                return ""
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return ""
            self.buffer += chunk
        return ""


# ---- the keeper -------------------------------------------------------------------------------------------


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


def keep(plan: Plan) -> int:
    """The keeper (after the fork): build the lab, record it, say ready on stdout, wait for SIGTERM."""
    signal.signal(signal.SIGTERM, _sigterm)  # `lab down`: unwind, closing the LAN on the way out
    signal.signal(signal.SIGINT, _sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    path = Path(plan.record)
    directory = Path(plan.directory)
    ready = os.fdopen(os.dup(1), "w")
    with open(os.devnull, "w") as null:  # stdout is `lab up`'s pipe, which ends with it
        os.dup2(null.fileno(), 1)
    record: dict[str, Any] = {"status": "starting", "keeper": _identity(os.getpid()), "plan": asdict(plan)}
    write_record(path, record)
    from .cluster import ALIVE_TIMEOUT, HaCluster
    from .lan import Lan

    lan = Lan(plan.nodes, second_network=plan.networks == 2)
    try:
        lan.start()
        cluster = None
        if plan.cluster:
            cluster = HaCluster(lan, directory)
            cluster.start_all()
            cluster.wait(cluster.all_alive, ALIVE_TIMEOUT, "every path ALIVE on every node")
        record.update(describe(lan, cluster, plan), status="up", since=time.time(), until=time.time() + LIFETIME)
        write_record(path, record)
        logger.info("lab %s up: %s", lan.prefix, ", ".join(lan.namespaces))
        _say(ready, "ready")
        deadline = time.monotonic() + LIFETIME
        while time.monotonic() < deadline:  # bounded by LIFETIME; SIGTERM (lab down) ends it sooner
            time.sleep(min(60.0, max(0.0, deadline - time.monotonic())))
        logger.info("lab %s: its lifetime (%g s) is over: taking it down", lan.prefix, LIFETIME)
    except KeyboardInterrupt:
        logger.info("lab %s: asked to stop: taking it down", lan.prefix or "(not started)")
    except Exception as e:  # the keeper's loop boundary: say why, then clean up
        logger.exception("lab %s failed", lan.prefix or "(not started)")
        _say(ready, f"error: {' '.join(str(e).split())[:2000]}")
        return 1
    finally:
        with state.deferred_signals():
            try:
                lan.close()
            finally:
                current = read_record(path) if path.exists() else None
                if current is not None and current.get("keeper") == record["keeper"]:
                    path.unlink(missing_ok=True)
                logger.info("lab %s down", lan.prefix or "(not started)")
    return 0


def _say(stream: Any, line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # `lab up` may be gone (Ctrl-C): nobody to tell
        stream.write(line + "\n")
        stream.flush()
        stream.close()


def describe(lan: Any, cluster: Any, plan: Plan) -> dict[str, Any]:
    """What the record says of a built lab."""
    hosts = []
    for host in lan.hosts:
        entry: dict[str, Any] = {
            "name": host.name,
            "netns": host.netns,
            "addresses": host.addresses,
            "holder": _identity(host.holder_pid) if host.holder_pid else None,
        }
        if cluster is not None and host in lan.nodes:
            entry["root"] = str(cluster.root(host.name))
            daemon = cluster.procs.get(host.name)
            entry["hakeeperd"] = _identity(daemon.pid) if daemon is not None else None
        hosts.append(entry)
    return {
        "prefix": lan.prefix,
        "lan_state": str(lan.state_file),
        "namespaces": lan.namespaces,
        "networks": [{"name": n.name, "cidr": n.cidr, "netns": n.netns, "iface": n.iface} for n in lan.networks],
        "hosts": hosts,
        "directory": plan.directory,
    }


# ---- lab down ---------------------------------------------------------------------------------------------


def down(run_dir: str | os.PathLike[str] | None = None, say: Any = print) -> bool:
    """Take the lab down (its keeper does it; what the keeper leaves, this does); False if there was none."""
    path = record_path(run_dir)
    if read_record(path) is None:
        return False
    if os.geteuid() != 0:
        raise LanUnavailable("needs root (network namespaces): run 'hakeeper lab down' as root")
    with _locked(path.parent):
        record = read_record(path)
        if record is None:
            return False
        _remove(path, record, say)
    return True


def _remove(path: Path, record: dict[str, Any], say: Any) -> None:
    """End the lab's keeper (SIGTERM, then SIGKILL) by PID, then remove whatever of the lab is left."""
    prefix = str(record.get("prefix") or "")
    names = _namespaces(record)
    idents = {i for i in (procs.netns_id(n) for n in names) if i is not None}
    running = len(procs.pids_in(idents))
    who = owner(record)
    if who is not None and is_alive(who) and who["pid"] != os.getpid():
        _signal(who, signal.SIGTERM)
        if not _gone(who, STOP_TIMEOUT):
            say(f"the lab's keeper (pid {who['pid']}) did not stop within {STOP_TIMEOUT:g} s: killing it")
            _signal(who, signal.SIGKILL)
            _gone(who, KILL_TIMEOUT)
    stuck = state.teardown(names)  # what the keeper did not remove: processes by PID, then the namespaces
    if who is not None and not names:
        state.cleanup_stale()  # a keeper that died while it built its LAN: the LAN's own state file names it
    lan_state = record.get("lan_state")
    if prefix and isinstance(lan_state, str) and Path(lan_state).name == f"hakeeper-testlan-{prefix}.json":
        Path(lan_state).unlink(missing_ok=True)
    left = [n for n in names if os.path.exists(f"{procs.NETNS_DIR}/{n}")]
    path.unlink(missing_ok=True)
    if stuck or left:
        raise LabError(f"lab {prefix}: processes {stuck} survived SIGKILL; namespaces {left} are left")
    if names:
        say(f"lab {prefix} is down: {len(names)} namespaces deleted ({', '.join(names)}), {running} processes ended")
    directory = record.get("directory") or (record.get("plan") or {}).get("directory")
    if directory:
        say(f"its state directories and logs stay in {directory}")


def _namespaces(record: dict[str, Any]) -> list[str]:
    """The record's namespaces that are really this lab's (its prefix, the LAN's name pattern)."""
    prefix = record.get("prefix")
    if not isinstance(prefix, str) or not topology.PREFIX_RE.match(prefix):
        return []
    named = record.get("namespaces") or []
    return [n for n in named if isinstance(n, str) and n.startswith(prefix + "-") and topology.NETNS_RE.match(n)]


def _signal(who: dict[str, Any], sig: int) -> None:
    """Signal a process that is not our child, through a pidfd opened before its start time is checked."""
    try:
        pidfd = os.pidfd_open(who["pid"])
    except OSError:
        return
    try:
        if is_alive(who):
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def _gone(who: dict[str, Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded by `timeout`
        if not is_alive(who):
            return True
        time.sleep(0.05)
    return not is_alive(who)


# ---- lab status -------------------------------------------------------------------------------------------


def status(run_dir: str | os.PathLike[str] | None = None) -> tuple[list[str], list[str]]:
    """The lab as it is: lines to print, and what is wrong with it (empty when it is whole)."""
    path = record_path(run_dir)
    record = read_record(path)
    if record is None:
        return ["no lab is up (start one: hakeeper lab up)"], []
    who = owner(record)
    if record.get("status") != "up":
        if is_alive(who):
            return [f"a lab is starting (pid {who['pid'] if who else '?'})"], []
        return [f"a lab that never came up is recorded in {path}"], ["its keeper has died: hakeeper lab down"]
    problems: list[str] = []
    prefix = record["prefix"]
    keeper = record.get("keeper") or {}
    lines = [
        f"lab {prefix}: up since {_when(record.get('since'))}, keeper pid {keeper.get('pid')}"
        f" ({'running' if is_alive(keeper) else 'GONE'}); it ends by itself at {_when(record.get('until'))}",
        f"state directories and logs: {record.get('directory')}",
    ]
    if not is_alive(keeper):
        problems.append(f"its keeper (pid {keeper.get('pid')}) has died")
    for net in record.get("networks", []):
        lines.append(f"network {net['name']}: {net['cidr']} on {net['iface']} (its switch: namespace {net['netns']})")
    lines.append(f"{'HOST':<8} {'ADDRESSES':<28} {'NAMESPACE':<16} HAKEEPERD")
    for host in record.get("hosts", []):
        name, netns = host["name"], host["netns"]
        if not os.path.exists(f"{procs.NETNS_DIR}/{netns}"):
            problems.append(f"namespace {netns} is gone")
        addresses = " ".join(host["addresses"].values())
        lines.append(f"{name:<8} {addresses:<28} {netns:<16} {_daemon(host, problems)}")
    lines += _how_to(record)
    return lines, problems


def _daemon(host: dict[str, Any], problems: list[str]) -> str:
    root = host.get("root")
    if not root:
        return "-"
    from hakeeper.comm.paths import PathState, node_state, read_states
    from hakeeper.layout import PID_NAME

    try:
        pid = int(Path(root, PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return "not running"
    if not procs.alive(pid) or procs.ns_id(f"/proc/{pid}/ns/net") != procs.netns_id(host["netns"]):
        return "not running"
    paths = read_states(Path(root))
    peers = sorted({key.split("/", 1)[0] for key in paths})
    alive = [p for p in peers if node_state([s for k, s in paths.items() if k.startswith(p + "/")]) is PathState.ALIVE]
    return f"pid {pid}, sees {', '.join(alive) or 'nobody'} alive"


def _how_to(record: dict[str, Any]) -> list[str]:
    nodes = [h for h in record.get("hosts", []) if h.get("root")]
    first = next(iter(record.get("hosts", [])), None)
    lines = []
    if first and first.get("holder"):
        lines.append(
            f"a shell on {first['name']}: nsenter --target {first['holder']['pid']} --net --mount --uts --ipc"
            f" (or: ip netns exec {first['netns']} sh)"
        )
    if nodes:
        lines.append(f"{nodes[0]['name']}'s commands: HAKEEPER_ROOT={nodes[0]['root']} lcdstatus -e  (from any shell)")
    lines.append("take it down: hakeeper lab down")
    return lines


def _when(epoch: object) -> str:
    if not isinstance(epoch, int | float):
        return "?"
    return dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def check_directory(text: str) -> str:
    if not text or "\0" in text:
        raise IllegalArgument("--dir needs a directory name")
    return os.path.abspath(text)


# ---- python -m hakeeper.lab.keeper PLAN ------------------------------------------------------------------


def main(argv: list[str]) -> int:
    plan = Plan(**json.loads(argv[0]))
    child = os.fork()
    if child:  # `lab up` waits for the keeper's word, not for this first process: it only says who the keeper is
        os.write(1, f"{child}\n".encode())
        os._exit(0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return keep(plan)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
