"""Local recovery and the quickCheck scheduler, on the in-memory kit."""

from __future__ import annotations

import asyncio
import random

from hakeeper.db import Lcd, Resource, State
from hakeeper.events.local import Limits, LocalRecovery
from hakeeper.events.monitor import Monitor
from hakeeper.kits.base import Policy, Result
from hakeeper.recovery.engine import Engine
from tests.fakes import Script, build, fake_kits

WEB = [("web", "web-ip"), ("web", "web-fs"), ("web-fs", "web-disk")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(lcd: Lcd, script: Script | None = None, limits: Limits | None = None, clock: Clock | None = None):
    build(lcd, WEB)
    kits, kit = fake_kits(lcd, script)
    engine = Engine(lcd, kits)
    asyncio.run(engine.restore("web", reason="start"))
    requests: list[tuple[str, str]] = []

    async def failover(tag: str, reason: str) -> None:
        requests.append((tag, reason))

    recovery = LocalRecovery(engine, limits=limits, failover=failover, clock=clock or Clock())
    kit.calls.clear()
    return kit, recovery, requests


def test_without_a_recover_action_the_resource_and_those_above_restart(lcd: Lcd) -> None:
    kit, recovery, requests = setup(lcd)
    outcome = asyncio.run(recovery.failed("web-fs", "quickCheck: stopped"))
    assert outcome.startswith("web-fs recovered in place")
    assert kit.calls == [("remove", "web"), ("remove", "web-fs"), ("restore", "web-fs"), ("restore", "web")]
    assert {r.state for r in lcd.resources()} == {State.ISP}
    assert requests == []


def test_a_node_that_lost_quorum_recovers_nothing_in_place(lcd: Lcd) -> None:
    kit, recovery, requests = setup(lcd)
    recovery.refusal = lambda: "this node lost quorum"  # its heartbeat process cut the address under the monitor
    outcome = asyncio.run(recovery.failed("web-ip", "quickCheck: stopped"))
    assert outcome == "web-ip: this node lost quorum: no recovery for quickCheck: stopped"
    assert kit.calls == [] and requests == [], "neither restored here nor moved"


def test_the_kits_recover_action_comes_first(lcd: Lcd) -> None:
    kit, recovery, requests = setup(lcd, Script(recover_ok=True))
    outcome = asyncio.run(recovery.failed("web-fs", "sendevent"))
    assert kit.calls == [("recover", "web-fs")]
    assert "recover action" in outcome
    assert requests == []


def test_a_failed_recover_escalates_to_failover(lcd: Lcd) -> None:
    _kit, recovery, requests = setup(lcd, Script(recover_ok=False))
    asyncio.run(recovery.failed("web-fs", "sendevent"))
    assert [tag for tag, _ in requests] == ["web-fs"]
    assert lcd.resource("web-fs").state is State.OSF
    assert lcd.resource("web").state is State.OSU, "what needs the failed resource goes out of service"
    assert lcd.resource("web-disk").state is State.ISP
    assert "local recovery failed" in lcd.resource("web-fs").reason


def test_a_recover_that_fails_with_a_configuration_error_waits_for_the_administrator(lcd: Lcd) -> None:
    """A refused key or a wrong parameter is the same on every node: OSF here, no failover, no retry."""
    kit, recovery, requests = setup(lcd, Script(recover_ok=False, recover_policy=Policy.CONFIG))
    outcome = asyncio.run(recovery.failed("web-fs", "quickCheck: the record points elsewhere"))
    assert requests == [], "a configuration error does not move the hierarchy"
    assert [c for c in kit.calls if c[0] != "remove"] == [("recover", "web-fs")], "and is not retried"
    assert lcd.resource("web-fs").state is State.OSF
    assert lcd.resource("web").state is State.OSU, "web does not stay ISP over its failed child"
    assert lcd.resource("web-fs").reason.startswith("configuration error: quickCheck: the record points elsewhere")
    assert "OSF until the administrator fixes it" in outcome


def test_a_restore_that_fails_with_a_configuration_error_during_recovery_does_not_move_it(lcd: Lcd) -> None:
    kit, recovery, requests = setup(lcd, Script(restore_policy=Policy.CONFIG))
    kit.script.fail_restore.add("web-fs")
    outcome = asyncio.run(recovery.failed("web-fs", "quickCheck: stopped"))
    assert requests == []
    assert lcd.resource("web-fs").state is State.OSF
    assert "configuration error" in outcome


def test_attempts_are_limited_within_the_window(lcd: Lcd) -> None:
    clock = Clock()
    _kit, recovery, requests = setup(lcd, limits=Limits(attempts=2, window=60), clock=clock)
    for _ in range(2):
        asyncio.run(recovery.failed("web-ip", "stopped"))
        clock.now += 10
    assert requests == []
    asyncio.run(recovery.failed("web-ip", "stopped"))
    assert len(requests) == 1
    assert "tried 2 times in 60 s" in requests[0][1]
    # After the window the count starts again.
    asyncio.run(Engine(lcd, recovery.engine.kits).restore("web", reason="admin"))
    clock.now += 61
    assert asyncio.run(recovery.failed("web-ip", "stopped")).startswith("web-ip recovered")


def test_configuration_errors_wait_for_the_administrator(lcd: Lcd) -> None:
    kit, recovery, requests = setup(lcd)
    asyncio.run(recovery.failed("web-ip", "bad netmask", Policy.CONFIG))
    assert lcd.resource("web-ip").state is State.OSF
    assert kit.calls == [("remove", "web")], "nothing is retried; only what needs web-ip lets go of it"
    assert requests == []
    assert lcd.resource("web").state is State.OSU


def test_hard_errors_and_disabled_local_recovery_go_straight_to_failover(lcd: Lcd) -> None:
    kit, recovery, requests = setup(lcd)
    asyncio.run(recovery.failed("web-ip", "interface gone", Policy.HARD))
    assert [c for c in kit.calls if c[0] == "restore"] == []
    assert requests[0][0] == "web-ip"
    lcd.set_local_recover("web-disk", False)
    asyncio.run(recovery.failed("web-disk", "stopped"))
    assert requests[1] == ("web-disk", "stopped (local recovery is off)")


def test_resources_not_in_service_are_not_recovered(lcd: Lcd) -> None:
    kit, recovery, requests = setup(lcd)
    lcd.set_state("web-ip", State.ISU, "maintenance")
    outcome = asyncio.run(recovery.failed("web-ip", "stopped"))
    assert "not ISP" in outcome
    assert kit.calls == [] and requests == []


def test_monitor_checks_each_resource_and_reports_failures(lcd: Lcd) -> None:
    build(lcd, [], extra=("a", "b", "slow"))
    for tag in ("a", "b", "slow"):
        lcd.set_check_interval(tag, 1)
    script = Script(unhealthy={"b"}, check_delay={"slow": 1.5})
    kits, kit = fake_kits(lcd, script)
    kit.running |= {"a", "b", "slow"}
    for tag in ("a", "b", "slow"):
        lcd.set_state(tag, State.ISP, "test")
    lcd.set_check_interval("a", 0)  # 0 turns checking off
    lcd.set_check_interval("a", 1)
    failures: list[tuple[str, Result]] = []

    def on_failure(resource: Resource, result: Result, ticket: int) -> None:
        failures.append((resource.tag, result))

    async def scenario() -> None:
        monitor = Monitor(Engine(lcd, kits), on_failure, refresh=0.1, rng=random.Random(1))
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(3.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    checks = [tag for action, tag in kit.calls if action == "quick_check"]
    assert checks.count("a") >= 2, "a slow check of another resource does not delay this one"
    assert checks.count("slow") <= 2
    assert kit.overlapping_checks == 0, "never two checks of one resource at once"
    assert {tag for tag, _ in failures} == {"b"}
    assert failures[0][1].message == "b is unhealthy"


def test_monitor_skips_resources_out_of_service_and_intervals_of_zero(lcd: Lcd) -> None:
    build(lcd, [], extra=("off", "down"))
    lcd.set_check_interval("off", 0)
    lcd.set_state("off", State.ISP, "test")
    lcd.set_check_interval("down", 1)
    kits, kit = fake_kits(lcd)

    async def scenario() -> None:
        monitor = Monitor(Engine(lcd, kits), lambda r, res, t: None, refresh=0.1)
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(1.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert kit.calls == []
