"""The users' view of a service: a prober in the client asks every node every 10 ms who serves.

    with Prober(lan, [(n.address, 8080) for n in lan.nodes], tmp_path / "probe.jsonl") as prober:
        ... fail node1 over to node2 ...
        prober.wait_for(lambda rounds: first_answer_from(rounds, "node2", after=t0) is not None, 30, "node2 serves")
    rounds = prober.rounds()
    assert not double_service(rounds), "the client got answers from two nodes at once"
    print(outage(rounds, after=t0))

The probing process runs inside the LAN's client (this file as a script, stdlib only, like ``icmp.py``).
Every ``interval`` (10 ms) it starts a *round*: one HTTP/1.0 ``GET /`` to every target at once, each on a
new connection with its own deadline ``timeout`` (50 ms) for connecting and reading the whole answer.
Rounds overlap, so a dead target (no ARP answer, a SYN lost) does not slow down the next rounds. A round
is written as one JSON line once all its probes ended (answered, refused or timed out)::

    {"n": 17, "t": 12345.678901, "answers": {"198.18.0.11:8080": "node1", "198.18.0.12:8080": null}}

``t`` is when the round started, on CLOCK_MONOTONIC (shared by every namespace: compare it with
``time.monotonic()`` of the test); an answer is the body of a 200 reply (the webapp's node name), null for
anything else. The probe stops on SIGTERM (finishing the rounds in flight) and by itself after
``max_seconds``; ``Prober.stop()`` (and leaving the ``with`` block, also on failure) sends SIGTERM by PID,
then SIGKILL if it lingers, and reaps it.

"At once" means within one round: two different names in the same round were both serving within the
same ``timeout`` window after ``t``; rounds are ``interval`` apart, so a double service shorter than about
one round can be missed, one of two rounds or more cannot.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import json
import os
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # this file also runs as a script with -I -S: nothing of ours at run time up here
    from .lan import Lan

LAN_NETWORK = ipaddress.ip_network("198.18.0.0/15")
INTERVAL = 0.01  # s between rounds
TIMEOUT = 0.05  # s a probe may take, connecting included
MAX_SECONDS = 600.0  # a probe nobody stops stops by itself
MAX_ANSWER = 4096  # bytes of a reply read at most
SCRIPT = str(Path(__file__).resolve())


@dataclass(frozen=True)
class Round:
    """One round of probes: when it started (CLOCK_MONOTONIC) and what each ``address:port`` answered."""

    n: int
    t: float
    answers: Mapping[str, str | None]

    @property
    def names(self) -> frozenset[str]:
        """The different names that answered."""
        return frozenset(a for a in self.answers.values() if a is not None)


class Prober:
    """Probe ``targets`` (address, port) from the client of ``lan``, rounds written to ``out`` (JSON lines).

    A context manager; or ``start()`` and ``stop()``. ``rounds()`` reads what is recorded so far.
    """

    def __init__(
        self,
        lan: Lan,
        targets: Sequence[tuple[str, int]],
        out: str | os.PathLike[str],
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        check_targets(targets)
        if not 0.001 <= interval <= 10 or not 0.001 <= timeout <= 10 or not 0 < max_seconds <= 3600:
            raise ValueError("probe: interval and timeout 0.001..10 s, max_seconds 0..3600")
        self.lan = lan
        self.targets = [(str(a), int(p)) for a, p in targets]
        self.out = Path(out)
        self.errors = self.out.with_name(self.out.name + ".stderr")
        self.request = {"targets": self.targets, "interval": interval, "timeout": timeout, "max": max_seconds}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        self._rounds: list[Round] = []  # parsed so far: the file's first _read bytes
        self._read = 0

    def start(self) -> Prober:
        """Start probing; return once the first round is recorded (at most 5 s)."""
        if self.proc is not None:
            raise RuntimeError("the prober was started already")
        with open(self.out, "wb") as out, open(self.errors, "wb") as err:
            argv = [sys.executable, "-I", "-S", SCRIPT, json.dumps(self.request)]
            self.proc = self.lan.client.popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            self.wait_for(bool, 5.0, "the first round")
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def stop(self, *, check: bool = True) -> None:
        """SIGTERM the probe by PID, SIGKILL it after 5 s, reap it. ``check``: raise if it had failed."""
        proc = self.proc
        if proc is None or self.stopped:
            return
        self.stopped = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # our child, not reaped yet: the pid cannot have been reused
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if check and proc.returncode != 0:
            from .errors import LabError

            raise LabError(f"the probe exited with {proc.returncode}: {self.stderr()}")

    def __enter__(self) -> Prober:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(check=exc is None)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return self.errors.read_text(errors="replace")[-2000:]
        return ""

    def rounds(self) -> list[Round]:
        """The rounds recorded so far, in order (a line being written is left for the next call)."""
        try:
            with open(self.out, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line without its newline is still being written
        self._read += len(complete)
        self._rounds += [parse_round(line) for line in complete.decode().splitlines()]
        return list(self._rounds)

    def wait_for(
        self, predicate: Callable[[list[Round]], object], timeout: float, what: str, *, step: float = 0.02
    ) -> list[Round]:
        """Poll ``rounds()`` until ``predicate(rounds)`` is true; return them. :class:`TimedOut` after ``timeout``."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / step) + 2):
            ended = not self.running  # before reading: an ended probe has written all it will
            rounds = self.rounds()
            if predicate(rounds):
                return rounds
            if ended or time.monotonic() > deadline:
                break
            time.sleep(step)
        state = "running" if self.running else f"exited with {self.proc.returncode if self.proc else None}"
        from .errors import TimedOut

        raise TimedOut(f"waited {timeout} s for {what}; the probe is {state}: {self.stderr()}")

    def wait_past(self, t: float, timeout: float = 5.0) -> list[Round]:
        """Wait until a round that started after ``t`` is recorded; return the rounds."""
        return self.wait_for(lambda rounds: bool(rounds) and rounds[-1].t > t, timeout, f"a round after {t:.3f}")


def check_targets(targets: Sequence[tuple[str, int]]) -> None:
    """Refuse a target outside the lab: the probe never sends anything anywhere else."""
    if not targets:
        raise ValueError("probe: no targets")
    for address, port in targets:
        if ipaddress.ip_address(address) not in LAN_NETWORK or not 1 <= int(port) <= 65535:
            raise ValueError(f"probe: {address}:{port} is not a port of the lab ({LAN_NETWORK})")


def parse_round(line: str) -> Round:
    data = json.loads(line)
    return Round(int(data["n"]), float(data["t"]), dict(data["answers"]))


# ---- analysis -----------------------------------------------------------------------------------------


def double_service(rounds: Sequence[Round]) -> list[Round]:
    """The rounds in which two or more different names answered: served by two nodes at once."""
    return [r for r in rounds if len(r.names) >= 2]


def answered(r: Round) -> bool:
    return bool(r.names)


def outage(rounds: Sequence[Round], after: float) -> float:
    """The longest time without any answer from ``after`` on, in s (0.0 if every round was answered).

    A silent stretch lasts from its first silent round (or ``after``, if silence reigned then already) to the
    first answered round after it; ``math.inf`` if no answer came by the last round. So, when the service
    is down at ``after``, the result is at least the first answer after ``after`` minus ``after``.
    """
    later = [r for r in rounds if r.t >= after]
    if not later:
        raise ValueError(f"no round at or after {after:.3f} (the last one: {rounds[-1].t if rounds else None})")
    longest = 0.0
    silent_since: float | None = None
    for r in later:
        if not answered(r):
            if silent_since is None:
                silent_since = after if r is later[0] else r.t
        elif silent_since is not None:
            longest = max(longest, r.t - silent_since)
            silent_since = None
    return float("inf") if silent_since is not None else longest


def first_answer_from(rounds: Sequence[Round], name: str, after: float = 0.0) -> float | None:
    """When (round start) ``name`` first answered at or after ``after``; None if it did not."""
    return next((r.t for r in rounds if r.t >= after and name in r.names), None)


def served_by(rounds: Sequence[Round]) -> list[tuple[float, str | None]]:
    """Who served, at each change: (round start, name); None for nobody, "node1+node2" for two at once."""
    changes: list[tuple[float, str | None]] = []
    for r in rounds:
        who = "+".join(sorted(r.names)) or None
        if not changes or changes[-1][1] != who:
            changes.append((r.t, who))
    return changes


def servers(rounds: Sequence[Round]) -> list[str]:
    """Who served, in turn: a gap with no answer between two stretches of the same node does not count as a move
    (a busy machine can leave a 50 ms probe unanswered); "node1+node2" for two at once."""
    turns: list[str] = []
    for _t, name in served_by(rounds):
        if name and (not turns or turns[-1] != name):
            turns.append(name)
    return turns


def spacing(rounds: Sequence[Round]) -> float:
    """The median time between consecutive rounds, in s (the prober's own resolution)."""
    if len(rounds) < 2:
        raise ValueError("spacing: fewer than two rounds")
    return statistics.median(b.t - a.t for a, b in itertools.pairwise(rounds))


# ---- the probing process (runs inside the client) -------------------------------------------------------

REQUEST = b"GET / HTTP/1.0\r\nHost: probe\r\nUser-Agent: hakeeper-probe\r\n\r\n"


class Probe:
    """One HTTP GET on a non-blocking socket: connect, send, read to EOF, by ``deadline``."""

    def __init__(self, n: int, key: str, address: tuple[str, int], deadline: float) -> None:
        self.n, self.key, self.deadline = n, key, deadline
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        # close with RST: no TIME_WAIT pile-up of 100 connections a second per target
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sent = 0
        self.reply = b""
        self.code = self.sock.connect_ex(address)

    def answer(self) -> str | None:
        head, sep, body = self.reply.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)
        if not sep or len(status) < 2 or not status[0].startswith(b"HTTP/") or status[1] != b"200":
            return None
        return body.decode(errors="replace").strip() or None


def probe(targets: list[tuple[str, int]], interval: float, timeout: float, max_seconds: float, out: IO[str]) -> int:
    """Run rounds until SIGTERM or ``max_seconds``; write each finished round to ``out``. Returns rounds written."""
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    keys = [f"{a}:{p}" for a, p in targets]
    selector = selectors.DefaultSelector()
    live: dict[socket.socket, Probe] = {}
    rounds: dict[int, tuple[float, dict[str, str | None]]] = {}  # n -> (t, answers so far)
    written = 0
    start = time.monotonic()
    end = start + max_seconds
    next_round = start

    def finish(p: Probe, answer: str | None) -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(p.sock)
        p.sock.close()
        del live[p.sock]
        rounds[p.n][1][p.key] = answer

    # bounded: at most ~100 rounds a second for max_seconds, each a few events per target
    limit = int((max_seconds / interval + 10) * (len(targets) * 8 + 4))
    for _ in range(limit):
        now = time.monotonic()
        scheduling = not stopping and now < end
        if scheduling and now >= next_round:
            n = written + len(rounds)
            rounds[n] = (now, {})
            for key, address in zip(keys, targets, strict=True):
                p = Probe(n, key, address, now + timeout)
                live[p.sock] = p
                if p.code in (0, errno.EINPROGRESS):
                    selector.register(p.sock, selectors.EVENT_WRITE, p)
                else:
                    finish(p, None)  # refused or unreachable at once
            next_round = max(next_round + interval, now)  # late: start the next one at once, skip nothing
        for p in [p for p in live.values() if p.deadline <= now]:
            finish(p, None)
        while rounds and len(rounds[min(rounds)][1]) == len(keys):  # finished rounds, in order
            n = min(rounds)
            t, answers = rounds.pop(n)
            out.write(json.dumps({"n": n, "t": round(t, 6), "answers": {k: answers[k] for k in keys}}) + "\n")
            out.flush()
            written += 1
        if not scheduling and not rounds:
            return written
        waits = [p.deadline for p in live.values()] + ([next_round] if scheduling else [])
        wait = max(0.0, min(waits, default=now + interval) - time.monotonic())
        for key_event, events in selector.select(wait):
            p = key_event.data
            try:
                if events & selectors.EVENT_WRITE:
                    error = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        finish(p, None)
                        continue
                    p.sent += p.sock.send(REQUEST[p.sent :])
                    if p.sent == len(REQUEST):
                        selector.modify(p.sock, selectors.EVENT_READ, p)
                elif events & selectors.EVENT_READ:
                    chunk = p.sock.recv(MAX_ANSWER)
                    p.reply += chunk
                    if not chunk or len(p.reply) >= MAX_ANSWER:
                        finish(p, p.answer())
            except OSError:
                finish(p, None)  # reset by the peer and the like: no answer
    print(f"probe: stopped after {limit} steps", file=sys.stderr)
    return written


def main(argv: list[str]) -> int:
    request: dict[str, Any] = json.loads(argv[0])
    targets = [(str(a), int(p)) for a, p in request["targets"]]
    check_targets(targets)
    probe(targets, float(request["interval"]), float(request["timeout"]), float(request["max"]), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
