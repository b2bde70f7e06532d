"""pytest fixtures for the test LAN (:mod:`hakeeper.lab`). tests/conftest.py imports them for every test:

    from tests.lan_fixtures import ha_cluster_fixture, lan_fixture, make_lan_fixture, needs_lan_fixture

``lan``: a started 3-node LAN, closed after the test. Other shapes by indirect parametrization::

    @pytest.mark.parametrize("lan", [{"nodes": 2, "second_network": True}], indirect=True)
    def test_x(lan): ...

``make_lan(**kwargs)``: build LANs inside the test (several, or with arguments computed there).
``needs_lan``: skip a test that builds LANs by other means (a subprocess) where no LAN can be built.
``ha_cluster``: hakeeperd running on every node of ``lan``, every path ALIVE.
Where this machine cannot build one, each skips with the reason (e.g. "needs root (network
namespaces)"); with HAKEEPER_REQUIRE_ALL=1 the conftest turns that skip into a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab import LabError, Lan, LanUnavailable, unavailable_reason
from hakeeper.lab.cluster import ALIVE_TIMEOUT, HaCluster


def start_or_skip(lan: Lan) -> Lan:
    try:
        return lan.start()
    except LanUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(name="needs_lan")
def needs_lan_fixture() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(name="lan")
def lan_fixture(request: pytest.FixtureRequest) -> Iterator[Lan]:
    params: dict[str, Any] = dict(getattr(request, "param", None) or {})
    lan = start_or_skip(Lan(**params))
    try:
        yield lan
    finally:
        lan.close()


@pytest.fixture(name="make_lan")
def make_lan_fixture() -> Iterator[Callable[..., Lan]]:
    lans: list[Lan] = []

    def make(*args: Any, **kwargs: Any) -> Lan:
        lan = start_or_skip(Lan(*args, **kwargs))
        lans.append(lan)
        return lan

    try:
        yield make
    finally:
        errors: list[LabError] = []
        for lan in reversed(lans):
            try:
                lan.close()
            except LabError as e:  # close every LAN, then report
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture(name="ha_cluster")
def ha_cluster_fixture(lan: Lan, tmp_path: Path) -> HaCluster:
    """hakeeperd running on every node of ``lan``, every path ALIVE."""
    ha = HaCluster(lan, tmp_path)
    ha.start_all()
    ha.wait(ha.all_alive, ALIVE_TIMEOUT, "every path ALIVE on every node")
    return ha
