"""Shared fixtures, and HAKEEPER_REQUIRE_ALL: in CI a skipped test is a failed test."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cli.base import run
from hakeeper.db import Lcd
from tests.lan_fixtures import ha_cluster_fixture, lan_fixture, make_lan_fixture, needs_lan_fixture  # noqa: F401
from tests.wheel_fixtures import wheel_fixture  # noqa: F401

REQUIRE_ALL = os.environ.get("HAKEEPER_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"HAKEEPER_REQUIRE_ALL=1 turns this skip into a failure: {reason}"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh state directory whose LCD belongs to node1."""
    path = tmp_path / "state"
    Lcd.open(path, node="node1").close()
    return path


@pytest.fixture
def lcd(root: Path) -> Iterator[Lcd]:
    with Lcd.open(root) as db:
        yield db


@pytest.fixture
def cli(root: Path) -> Cli:
    """Run a command in this process against ``root``: ``cli("ins_list", "-t", "web")``."""

    def invoke(name: str, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = run(name, list(argv), root=str(root), out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    return invoke
