"""A tiny web app for failover tests: gen/app action scripts for a server that answers with its node's name.

    scripts = write_scripts(tmp_path / "webapp", port=8080)   # {"restore": Path, "remove": ..., "quickCheck": ...}
    node1.run([str(scripts["restore"])], env=script_env(tmp_path / "node1", "node1"), check=True)
    # GET http://198.18.0.11:8080/  ->  "node1"

The scripts follow hakeeper's script contract (``hakeeper.kits.actions``), so a gen/app resource can use them
as they are (``restore=``, ``remove=``, ``quickCheck=``); tests may also run them by hand in a node with
``script_env``. They read ``HAKEEPER_ROOT`` (the node's state directory: the pid file and the server's log
go there, so every node needs its own; unset = exit 6, configuration error) and ``HAKEEPER_NODE`` (the name
the server answers with; unset = the node's hostname, ``uname -n``, which the test LAN sets per node).

- ``restore`` starts the server unless it runs already (then it succeeds), and succeeds once it listens on
  0.0.0.0:PORT (or ``address``) in the node's network namespace. It does not poll: the server's first
  process binds and listens, forks the server proper, and exits 0 once that one has written its pid file
  (a daemon's readiness told by its parent's exit, as ``Type=forking`` services do), or exits non-zero
  at once when it cannot listen; restore waits for that exit. The server leaves restore's process group
  and session (hakeeper kills a script's group when it times out), so the pid file names a listening
  server.
- ``remove`` stops it by the pid in the pid file (SIGTERM, then SIGKILL; never by name), waits until it is
  gone (at most 7 s; exit 1 if it will not die) and deletes the pid file; nothing running is success.
- ``quickCheck`` exits 0 running, 7 stopped (no pid file: removed or never started), 1 failed (the pid
  file names no live server of ours: it crashed, or it is frozen by SIGSTOP).

A process is live when ``/proc/PID/status`` has a state other than Z or X (``kill -0`` succeeds on
zombies), and ours when its command line is this server for this port (a recycled pid is not).

The server (this file, run as ``python -I -S webapp.py serve PORT NAME PIDFILE LIFETIME STOP_DELAY``:
stdlib only) is a ``ThreadingHTTPServer`` without request logging that answers every GET with the name as
its body, over HTTP/1.0 (one request per connection). On SIGTERM it goes on serving for STOP_DELAY seconds
(``write_scripts(stop_delay=...)``: an application that takes time to stop), then exits; it ends by itself
after LIFETIME seconds.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SERVER = Path(__file__).resolve()
SCRIPT_NAMES = ("restore", "remove", "quickCheck")
LIFETIME = 3600.0  # s: a server that nobody removes stops by itself (the LAN kills it at close anyway)

COMMON = """\
#!/bin/sh
# {action} of the test web app on port {port} (hakeeper/lab/webapp.py)
[ -n "$HAKEEPER_ROOT" ] || {{ echo "webapp: HAKEEPER_ROOT is not set"; exit 6; }}
pidfile="$HAKEEPER_ROOT/webapp-{port}.pid"
log="$HAKEEPER_ROOT/webapp-{port}.log"
# the kernel's one-letter state of a process, empty when there is none
state() {{ sed -n 's/^State:[[:space:]]*\\([A-Za-z]\\).*/\\1/p' "/proc/$1/status" 2>/dev/null; }}
# live: exists and has not died (kill -0 succeeds on a zombie)
live() {{ s=$(state "$1"); [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]; }}
# ours: this app's server for this port, not a process that got a recycled pid
ours() {{ tr '\\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- {marker}; }}
# running: the pid file names a live server of ours (sets $pid)
running() {{ pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] && live "$pid" && ours "$pid"; }}
"""

RESTORE = """\
if running; then echo "webapp: running already (pid $pid)"; exit 0; fi
rm -f "$pidfile"
name=${{HAKEEPER_NODE:-$(uname -n)}}
# returns once the server listens (its first process exits 0 then, the server itself running on), or at once
# with the reason in the log when it cannot: no polling
if WEBAPP_ADDRESS={address} {python} -I -S {server} serve {port} "$name" "$pidfile" {lifetime} {stop_delay} \
  </dev/null >>"$log" 2>&1 && pid=$(cat "$pidfile" 2>/dev/null); then
  echo "webapp: serving as $name (pid $pid)"; exit 0
fi
echo "webapp: the server exited: $(tail -n 3 "$log")"; exit 1
"""

REMOVE = """\
if running; then
  kill -TERM "$pid"; kill -CONT "$pid" 2>/dev/null
  i=0
  while live "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  if live "$pid"; then
    kill -KILL "$pid"
    i=0
    while live "$pid" && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
    if live "$pid"; then echo "webapp: pid $pid survived SIGKILL"; exit 1; fi
  fi
fi
rm -f "$pidfile"
exit 0
"""

QUICK_CHECK = """\
[ -f "$pidfile" ] || {{ echo "webapp: stopped"; exit 7; }}
if ! running; then echo "webapp: pid $(cat "$pidfile") is not running (crashed)"; exit 1; fi
case $(state "$pid") in T | t) echo "webapp: pid $pid is frozen"; exit 1 ;; esac
exit 0
"""

BODIES = {"restore": RESTORE, "remove": REMOVE, "quickCheck": QUICK_CHECK}


def write_scripts(
    directory: str | os.PathLike[str],
    port: int,
    *,
    stop_delay: float = 0.0,
    python: str = sys.executable,
    lifetime: float = LIFETIME,
    address: str = "0.0.0.0",
) -> dict[str, Path]:
    """Write ``restore``, ``remove`` and ``quickCheck`` (executable) into ``directory``; name -> path.

    ``address``: where the server listens (the demo's loopback cluster shares one network namespace).

    ``stop_delay``: seconds the server goes on serving after SIGTERM (an application that drains slowly;
    past 5 s, remove kills it). ``lifetime``: seconds after which the server stops by itself.
    """
    if not 1 <= port <= 65535 or not 0 < lifetime <= 86_400 or not 0 <= stop_delay <= 60:
        raise ValueError("webapp: port 1..65535, lifetime 0..86400 s, stop_delay 0..60 s")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    values = {
        "port": port,
        "python": q(python),
        "server": q(str(SERVER)),
        "marker": q(f"{SERVER} serve {port} "),
        "lifetime": lifetime,
        "stop_delay": stop_delay,
        "address": q(address),
    }
    paths: dict[str, Path] = {}
    for action in SCRIPT_NAMES:
        path = folder / action
        path.write_text(COMMON.format(action=action, **values) + BODIES[action].format(**values))
        path.chmod(0o755)
        paths[action] = path
    return paths


def script_env(root: str | os.PathLike[str], node: str | None, **extra: str) -> dict[str, str]:
    """The environment hakeeper gives the scripts, for running them by hand (``node=None``: the hostname)."""
    env = dict(os.environ, HAKEEPER_ROOT=os.fspath(root), HAKEEPER_TAG="webapp")
    env.pop("HAKEEPER_NODE", None)
    env.update(extra)
    if node is not None:
        env["HAKEEPER_NODE"] = node
    return env


# ---- the server (runs inside a node) --------------------------------------------------------------------


def serve(port: int, name: str, pidfile: Path, lifetime: float, stop_delay: float) -> None:
    """Answer GET with ``name`` on 0.0.0.0:``port``; this process returns once a forked server listens.

    This process binds and listens, then forks: the child is the server (its own session; it writes the
    pid file, then tells this process through a pipe, and serves until ``lifetime`` s have passed or
    ``stop_delay`` s after SIGTERM); this process exits 0 when told, or raises when the child died
    first. So whoever started it waits for an exit, not for a pid file to appear.
    """
    body = name.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a line per probe every 10 ms would be noise

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the probes of several rounds may be in flight at once

    server = Server((os.environ.get("WEBAPP_ADDRESS", "0.0.0.0"), port), Handler)  # listening from here on
    ready, told = os.pipe()
    child = os.fork()
    if child:
        server.socket.close()
        os.close(told)
        answer = os.read(ready, 16)  # b"ready", or b"" when the child died before it wrote its pid file
        if answer != b"ready":
            raise SystemExit(f"webapp: the server (pid {child}) exited before it was ready")
        os._exit(0)  # at once: tearing the interpreter down would keep restore waiting for nothing (~30 ms)
    os.close(ready)
    try:
        _serve_here(server, pidfile, told, lifetime, stop_delay)
    except BaseException:  # noqa: BLE001 - the forked server must never return into its parent's code
        traceback.print_exc()
        os._exit(1)
    os._exit(0)  # the forked server never returns into its parent's code


def _serve_here(server: ThreadingHTTPServer, pidfile: Path, told: int, lifetime: float, stop_delay: float) -> None:
    """The forked server: its own session, the pid file, ``ready`` on ``told``, then serve until stopped."""
    with contextlib.suppress(OSError):  # EPERM: a group leader already
        os.setsid()  # leave restore's process group and session: hakeeper kills those with the script
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # for sigtimedwait; threads inherit the mask
    with server:
        temporary = pidfile.with_name(pidfile.name + ".new")
        temporary.write_text(f"{os.getpid()}\n")
        os.replace(temporary, pidfile)  # whole: the scripts never read half a pid
        os.write(told, b"ready")
        os.close(told)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
        if signal.sigtimedwait({signal.SIGTERM}, lifetime) is not None:
            time.sleep(stop_delay)
            print(f"webapp: pid {os.getpid()} stopped by SIGTERM", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 6 or argv[0] != "serve":
        print("usage: webapp.py serve PORT NAME PIDFILE LIFETIME STOP_DELAY", file=sys.stderr)
        return 2
    serve(int(argv[1]), argv[2], Path(argv[3]), float(argv[4]), float(argv[5]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
