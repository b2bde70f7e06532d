"""The shell the docs recommend does what the docs say it does.

The zombie check of docs/kits.md (and of the demo's scripts) must tell a live
process from a zombie: ``grep -q '^State:[[:space:]]*[^Z]'`` did not (the class
may match nothing, and ``[^Z]`` then matches the tab before ``Z (zombie)``), and
a remove that followed it waited on a zombie.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = re.compile(r"grep -q '(\^State:[^']*)'")
PLACES = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md", REPO / "src" / "hakeeper" / "demo.py"]


def zombie_checks() -> list[tuple[str, str]]:
    found = []
    for path in PLACES:
        for pattern in CHECK.findall(path.read_text()):
            found.append((str(path.relative_to(REPO)), pattern))
    return found


def test_the_docs_recommend_a_zombie_check() -> None:
    assert any(place == "docs/kits.md" for place, _ in zombie_checks())


@pytest.mark.parametrize("place, pattern", zombie_checks())
def test_a_zombie_check_tells_a_live_process_from_a_zombie(place: str, pattern: str) -> None:
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen(["true"])
    try:
        for _ in range(1000):  # bounded: "true" exits at once, and stays a zombie until waited for
            status = Path(f"/proc/{zombie.pid}/status").read_text()
            if re.search(r"^State:\s*Z", status, re.M):
                break
            subprocess.run(["sleep", "0.01"], check=True)
        else:
            pytest.fail("the child never became a zombie")
        ran = [subprocess.run(["grep", "-q", pattern, f"/proc/{p.pid}/status"], check=False).returncode
               for p in (alive, zombie)]  # fmt: skip
        assert ran == [0, 1], f"{place}: {pattern!r} says alive={ran[0] == 0}, zombie={ran[1] == 0}"
    finally:
        alive.kill()
        alive.wait()
        zombie.wait()
