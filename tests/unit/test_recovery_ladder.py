"""The local-recovery ladder (hakeeper.events.policy), rung by rung, without processes."""

from __future__ import annotations

from hakeeper.events.policy import Rung, after, first_step
from hakeeper.kits.base import Policy

LIMITS = "3 times in 300 s"


def test_the_first_rung() -> None:
    def first(policy: Policy, *, on: bool = True, may: bool = True, recover: bool = False) -> Rung:
        return first_step(policy, local_recover=on, may_try=may, has_recover=recover, limits=LIMITS).rung

    assert first(Policy.CONFIG) is Rung.WAIT_FOR_ADMIN, "moving it would meet the same configuration"
    assert first(Policy.CONFIG, on=False, may=False) is Rung.WAIT_FOR_ADMIN
    assert first(Policy.HARD) is Rung.ESCALATE
    assert first(Policy.SOFT, on=False) is Rung.ESCALATE
    assert first(Policy.SOFT, may=False) is Rung.ESCALATE
    assert first(Policy.SOFT, recover=True) is Rung.RECOVER
    assert first(Policy.SOFT) is Rung.REMOVE_RESTORE
    why = first_step(Policy.SOFT, local_recover=True, may_try=False, has_recover=False, limits=LIMITS).why
    assert why == " (local recovery tried 3 times in 300 s)"


def test_after_a_rung() -> None:
    assert after(True, None, "").rung is Rung.DONE
    assert after(False, Policy.CONFIG, "restore failed: refused key").rung is Rung.WAIT_FOR_ADMIN
    step = after(False, Policy.SOFT, "restore failed: port in use")
    assert step.rung is Rung.ESCALATE and step.why == "; restore failed: port in use"
    assert after(False, None, "recover failed").rung is Rung.ESCALATE
