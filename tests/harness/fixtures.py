"""pytest fixtures for the test LAN. Import them into a conftest (or a test module) to use them:

    from tests.harness.fixtures import lan_fixture, make_lan_fixture, needs_lan_fixture  # noqa: F401

``lan``: a started 3-node LAN, closed after the test. Other shapes by indirect parametrization::

    @pytest.mark.parametrize("lan", [{"nodes": 2, "second_network": True}], indirect=True)
    def test_x(lan): ...

``make_lan(**kwargs)``: build LANs inside the test (several, or with arguments computed there).
``needs_lan``: skip a test that builds LANs by other means (a subprocess) where no LAN can be built.
Where this machine cannot build one, each skips with the reason (e.g. "needs root (network
namespaces)"); with HAKEEPER_REQUIRE_ALL=1 the conftest turns that skip into a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .errors import HarnessError, LanUnavailable
from .lan import Lan, unavailable_reason


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
        errors: list[HarnessError] = []
        for lan in reversed(lans):
            try:
                lan.close()
            except HarnessError as e:  # close every LAN, then report
                errors.append(e)
        if errors:
            raise errors[0]
