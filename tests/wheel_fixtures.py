"""The wheel as ``pip wheel`` builds it, once per test session (test_install and test_deploy install it).

pip resolves the build backend from whatever index pip is configured with (offline: a local one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HAKEEPER_ROOT")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


@pytest.fixture(name="wheel", scope="session")
def wheel_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, as ``pip wheel`` builds it from a copy of the sources."""
    base = tmp_path_factory.mktemp("wheel")
    assert REPO not in base.parents, f"{base} is inside the checkout"
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"), str(source)]
    done = subprocess.run(build, env=clean_env(base), cwd=base, capture_output=True, text=True, timeout=900,
                          check=False)  # fmt: skip
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (found,) = (base / "dist").glob("hakeeper-*.whl")
    return found
