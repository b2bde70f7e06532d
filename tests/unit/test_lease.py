"""The lease: a node that loses quorum cuts its virtual addresses first, then removes the rest; ``why`` warns.

Engine runs use the in-memory kit (tests/fakes.py) for every type, ``comm/ip`` included: what matters here
is the order in which the engine calls the kits and what it records, not what a kit does.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from hakeeper.cluster import lease
from hakeeper.cluster.decide import Hierarchy
from hakeeper.cluster.failover import hierarchy_of
from hakeeper.db import Lcd, Resource, State
from hakeeper.kits.base import KitMeta
from hakeeper.kits.registry import Kits
from hakeeper.recovery import plan
from hakeeper.recovery.engine import Engine
from tests.conftest import Cli
from tests.fakes import FakeKit, Script, build, fake_kits

# ---------------------------------------------------------------------- which resources are the network face


def resource(tag: str, kind: str, state: State = State.ISP) -> Resource:
    app, rtype = kind.split("/")
    return Resource(tag, f"id-{tag}", app, rtype, state=state)


def test_the_network_face_is_every_virtual_address_not_already_out_of_service() -> None:
    found = plan.network_face(
        [
            resource("vip", "comm/ip"),
            resource("vip6", "comm/ip", State.ISU),
            resource("stuck", "comm/ip", State.OSF),  # may still hold its address: remove is a force action
            resource("gone", "comm/ip", State.OSU),
            resource("web", "gen/app"),
            resource("name", "comm/dns"),  # a DNS change reaches clients only as their caches expire
        ]
    )
    assert found == {"vip", "vip6", "stuck"}


def test_nothing_is_the_network_face_of_a_node_without_virtual_addresses() -> None:
    assert plan.network_face([resource("web", "gen/app"), resource("db", "ocf/ra")]) == set()


def test_the_lease_is_the_takeover_delay_less_what_the_losing_node_may_lag() -> None:
    settings = {"takeover_delay": 0.25, "heartbeat_interval": 0.1, "quorum_mode": "majority", "quorum_timeout": 0.5}
    assert lease.lease(settings) == pytest.approx(0.15)
    assert lease.lease(settings | {"quorum_mode": "tcp_remote", "takeover_delay": 0.9}) == pytest.approx(0.3)


# ---------------------------------------------------------------------- the engine: cut, then the rest


class FakeIpKit(FakeKit):
    meta = KitMeta("comm", "ip", "in-memory virtual address")


def kits_with_ip(lcd: Lcd, script: Script, ip_script: Script | None = None) -> tuple[Kits, FakeKit]:
    """One call log for both kits: (action, tag) in the order the engine called them."""
    kits, kit = fake_kits(lcd, script)
    ip = FakeIpKit(kits.ctx, ip_script or Script())
    ip.calls = kit.calls
    kits.add(ip)
    return kits, kit


def two_hierarchies(lcd: Lcd) -> None:
    """web -> fs -> disk and web -> vip; db -> vip2; in service."""
    for tag in ("vip", "vip2"):
        lcd.create_resource(tag, f"id-{tag}", "comm", "ip", ensure_type=True)
    build(lcd, [("web", "fs"), ("fs", "disk")], extra=("db",))
    lcd.create_dependency("web", "vip")
    lcd.create_dependency("db", "vip2")
    for r in lcd.resources():
        lcd.set_state(r.tag, State.ISP, "test")


def removes(kit: FakeKit) -> list[str]:
    return [tag for action, tag in kit.calls if action == "remove"]


def test_quorum_loss_cuts_every_address_before_anything_else_then_removes_parents_first(lcd: Lcd) -> None:
    two_hierarchies(lcd)
    kits, kit = kits_with_ip(lcd, Script())
    told: list[list[str]] = []
    engine = Engine(lcd, kits)
    result = asyncio.run(
        engine.cut_then_remove_everything(
            reason="quorum lost (sees 1 of 3 nodes)", after_cut=lambda cut, took: told.append(removes(kit))
        )
    )
    assert result.ok
    assert len(told) == 1 and sorted(told[0]) == ["vip", "vip2"], "told of the cut before the rest began"
    order = removes(kit)
    assert sorted(order[:2]) == ["vip", "vip2"], f"the addresses first, although they are children: {order}"
    assert sorted(order) == ["db", "disk", "fs", "vip", "vip2", "web"], "each removed once"
    assert order.index("web") < order.index("fs") < order.index("disk"), "the rest: parents first"
    assert sorted(result.cut.done) == ["vip", "vip2"] and "vip" not in result.rest.done + result.rest.unchanged
    assert {r.tag: r.state for r in lcd.resources()} == dict.fromkeys(order, State.OSU)
    assert lcd.resource("vip").reason == "quorum lost (sees 1 of 3 nodes): clients cut first"
    assert lcd.resource("web").reason == "quorum lost (sees 1 of 3 nodes)"


def test_the_addresses_are_cut_at_once_not_one_after_the_other(lcd: Lcd) -> None:
    for tag in ("a", "b", "c"):
        lcd.create_resource(tag, f"id-{tag}", "comm", "ip", ensure_type=True)
        lcd.set_state(tag, State.ISP, "test")
    lcd.create_dependency("a", "b")  # even an address above another is cut with it, not after it
    kits, _kit = fake_kits(lcd)
    ip = FakeIpKit(kits.ctx, Script(delay=0.05))
    kits.add(ip)
    asyncio.run(Engine(lcd, kits).cut_then_remove_everything(reason="quorum lost"))
    assert ip.peak == 3


def test_a_failed_cut_does_not_stop_the_others_and_is_tried_again_in_its_place(lcd: Lcd) -> None:
    two_hierarchies(lcd)
    ip_script = Script(fail_remove={"vip"})
    kits, kit = kits_with_ip(lcd, Script(), ip_script)
    result = asyncio.run(Engine(lcd, kits).cut_then_remove_everything(reason="quorum lost"))
    assert result.cut.failed == ["vip"] and result.cut.done == ["vip2"]
    order = removes(kit)
    assert order.count("vip") == 2 and order.count("vip2") == 1, order
    assert order.index("web") < len(order) - 1 - order[::-1].index("vip"), "tried again after its parent"
    assert not result.ok and lcd.resource("vip").state is State.OSF
    assert lcd.resource("web").state is State.OSU and lcd.resource("db").state is State.OSU


def test_removes_and_cuts_are_measured_and_kept_in_the_lcd(lcd: Lcd) -> None:
    two_hierarchies(lcd)
    kits, _kit = kits_with_ip(lcd, Script(delay=0.02))
    result = asyncio.run(Engine(lcd, kits).cut_then_remove_everything(reason="quorum lost"))
    cut, removed = lcd.measurements("cut"), lcd.measurements("remove")
    assert sorted(cut) == ["vip", "vip2"] and sorted(removed) == ["db", "disk", "fs", "vip", "vip2", "web"]
    assert max(cut.values()) == pytest.approx(result.cut_took, abs=1e-5)
    assert removed["disk"] >= removed["fs"] >= removed["web"] >= result.cut_took, "from one start"
    assert lcd.settings()["takeover_delay"] == 0.15, "measurements are not settings"
    lcd.remove_resources(["disk"])
    assert "disk" not in lcd.measurements("remove") and "web" not in lcd.measurements("remove")


def test_the_guards_cut_alone_is_measured_too(lcd: Lcd) -> None:
    two_hierarchies(lcd)
    kits, _kit = kits_with_ip(lcd, Script(delay=0.02))
    report = asyncio.run(Engine(lcd, kits).cut_network_face(reason="guard: no majority heard"))
    assert sorted(report.done) == ["vip", "vip2"]
    assert sorted(lcd.measurements("cut")) == ["vip", "vip2"], "why reports the guard's cut, not 'never measured'"
    assert lcd.resource("web").state is State.ISP, "only the network face"


def test_an_ordinary_remove_is_measured_too(lcd: Lcd) -> None:
    build(lcd, [("web", "fs")])
    kits, _kit = fake_kits(lcd)
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="test"))
    asyncio.run(engine.remove_all_of({"web", "fs"}, reason="switchover", target="web"))
    assert sorted(lcd.measurements("remove")) == ["fs", "web"] and lcd.measurements("cut") == {}


# ---------------------------------------------------------------------- why and lkstart: the advice


def extended(lcd: Lcd, edges: list[tuple[str, str]], ip: str | None = None) -> Hierarchy:
    if ip:
        lcd.create_resource(ip, f"id-{ip}", "comm", "ip", ensure_type=True)
    build(lcd, edges, extra=("web",))
    if ip:
        lcd.create_dependency("web", ip)
    lcd.create_node("node2")
    lcd.create_equivalency("web", "node2", priority=1, other_priority=2)
    h = hierarchy_of(lcd, "web")
    assert h is not None
    return h


def test_a_hierarchy_without_an_address_whose_remove_was_slow_is_warned_about(lcd: Lcd) -> None:
    h = extended(lcd, [("web", "fs")])
    lcd.record_measurements("remove", {"web": 0.05, "fs": 0.17})
    assert lease.advice(lcd, h) == (
        "web has no IP resource: after a quorum loss its clients are cut only when its remove ends "
        "(last took 0.17 s), longer than the 0.10 s lease (takeover_delay - heartbeat_interval); "
        "add an IP resource below it, or fencing, or raise takeover_delay"
    )
    lcd.record_measurements("remove", {"fs": 0.08})
    assert lease.advice(lcd, h) is None, "measured within the lease"


def test_never_measured_the_kits_remove_timeouts_say_how_long_it_may_take(lcd: Lcd) -> None:
    h = extended(lcd, [("web", "fs")])
    text = lease.advice(lcd, h, timeout=lambda tag: 300.0)
    assert text is not None and "(never measured here; its remove timeouts allow 600 s), which may be" in text
    text = lease.advice(lcd, h)
    assert text is not None and "(never measured here), which may be longer than the 0.10 s lease" in text


def test_no_advice_with_an_address_fencing_a_halting_quorum_loss_or_no_quorum(lcd: Lcd) -> None:
    h = extended(lcd, [("web", "fs")], ip="vip")
    lcd.record_measurements("remove", {"web": 3.0, "fs": 3.0})
    assert lease.advice(lcd, h) is None, "its address is cut first"
    assert lease.cut_line(lcd, h) == (
        "after a quorum loss vip is removed first (never measured here); the lease is 0.10 s"
    )
    lcd.record_measurements("cut", {"vip": 0.4})
    assert "cutting its clients off (removing vip) took 0.400 s, longer than the 0.10 s lease" in (
        lease.advice(lcd, h) or ""
    )
    lcd.record_measurements("cut", {"vip": 0.004})
    assert lease.advice(lcd, h) is None
    assert lease.cut_line(lcd, h) == "after a quorum loss vip is removed first (last took 0.004 s); the lease is 0.10 s"
    lcd.remove_dependency("web", "vip")
    alone = hierarchy_of(lcd, "web")
    assert alone is not None and lease.advice(lcd, alone) is not None
    for setting in ({"fence_command": "fence_dummy"}, {"quorum_loss_action": "fastkill"}, {"quorum_mode": "none"}):
        before = lcd.settings()
        lcd.set_settings(setting)
        assert lease.advice(lcd, alone) is None, setting
        lcd.set_settings({k: str(before[k]) for k in setting})


# ---------------------------------------------------------------------- the quorum-loss action and its log


def test_a_slow_remove_without_an_address_is_an_alert_and_a_quick_cut_is_not(
    lcd: Lcd, caplog: pytest.LogCaptureFixture
) -> None:
    h = extended(lcd, [("web", "fs")])
    lcd.create_resource("app2", "id-app2", "fake", "svc")
    lcd.create_resource("vip", "id-vip", "comm", "ip", ensure_type=True)
    lcd.create_dependency("app2", "vip")
    lcd.create_equivalency("app2", "node2", priority=1, other_priority=2)
    for r in lcd.resources():
        lcd.set_state(r.tag, State.ISP, "test")
    lcd.set_settings({"takeover_delay": "1"})  # lease 0.9 s: web and fs sleep 0.5 s each, the cut not at all
    kits, _kit = kits_with_ip(lcd, Script(delay=0.5))
    with caplog.at_level(logging.WARNING, logger="hakeeper.cluster.lease"):
        asyncio.run(lease.take_out_of_service(lcd, Engine(lcd, kits), reason="quorum lost"))
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert len(alerts) == 1 and alerts[0].startswith(f"ALERT: {h.name} has no IP resource"), alerts
    assert "clients cut in" in caplog.text and "(vip removed first)" in caplog.text
    assert all(r.state is State.OSU for r in lcd.resources())


def test_a_cut_slower_than_the_lease_is_an_alert(lcd: Lcd, caplog: pytest.LogCaptureFixture) -> None:
    extended(lcd, [], ip="vip")
    for r in lcd.resources():
        lcd.set_state(r.tag, State.ISP, "test")
    kits, _kit = kits_with_ip(lcd, Script(), Script(delay=0.3))  # an address that takes 0.3 s to go
    with caplog.at_level(logging.WARNING, logger="hakeeper.cluster.lease"):
        asyncio.run(lease.take_out_of_service(lcd, Engine(lcd, kits), reason="quorum lost"))
    assert "ALERT: cutting clients off (removing vip) took" in caplog.text
    assert "more than the 0.10 s lease (takeover_delay - heartbeat_interval)" in caplog.text


def test_why_without_hakeeperd_says_what_the_lcd_measured(lcd: Lcd, cli: Cli) -> None:
    extended(lcd, [("web", "fs")])
    lcd.record_measurements("remove", {"web": 0.05, "fs": 0.17})
    result = cli("why", "web")
    assert result.code == 0, result.err
    assert (
        "  warning: web has no IP resource: after a quorum loss its clients are cut only when its remove ends "
        "(last took 0.17 s), longer than the 0.10 s lease" in result.out
    ), result.out
