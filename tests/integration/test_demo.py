"""``hakeeper demo``'s live cluster (part 3), run as CI would: non-interactive, one scripted failover, then
everything stops. It runs in a directory outside the checkout: the demo needs nothing of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def demo(where: Path, *, private_loopback: bool = False, **env: str) -> tuple[str, Path]:
    """``hakeeper demo --part 3 < /dev/null`` (its input not a terminal: the scripted failover) in ``where``."""
    argv = [str(BIN / "hakeeper"), "demo", "--part", "3"]
    if private_loopback:  # the loopback mode's traffic stays in a network namespace of its own
        argv = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "demo", *argv]
    done = subprocess.run(
        argv, cwd=where, env=dict(os.environ, **env), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    base = re.search(r"state directories in (\S+)", done.stdout)
    assert base is not None, done.stdout
    return done.stdout, Path(base.group(1))


def leftovers(base: Path) -> list[str]:
    """Processes still running from the demo's state directories (by command line and environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(base).encode() in text:
            found.append(proc.name)
    return found


@pytest.mark.slow
@pytest.mark.usefixtures("needs_lan")
def test_the_demo_cluster_on_the_test_lan_fails_over_and_cleans_up(tmp_path: Path) -> None:
    out, base = demo(tmp_path)
    assert "on a LAN of network namespaces" in out
    assert "# power off node1" in out
    assert re.search(r"served by node[23] again after \d\.\d\d s without an answer", out), out
    assert "web: ISP (failover from node1)" in out
    assert "stays on node" in out and "(switchback INTELLIGENT)" in out
    assert leftovers(base) == []


@pytest.mark.slow
@pytest.mark.usefixtures("needs_lan")  # root, for a network namespace of its own
def test_the_demo_cluster_on_loopback_joins_with_tokens_and_fails_over(tmp_path: Path) -> None:
    """What a user without root gets; here in a private network namespace, so that nothing reaches this host's."""
    out, base = demo(tmp_path, private_loopback=True, HAKEEPER_DEMO_LOOPBACK="1")
    assert "loopback" in out
    assert "cluster join --token -" in out
    assert re.search(r"kill -9 \d+ +\(node1's hakeeperd\)", out), out
    assert re.search(r"served by node[23] again after \d\.\d\d s without an answer", out), out
    assert leftovers(base) == []
