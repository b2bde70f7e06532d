"""Communication paths: their records and commands, liveness rules, and the cluster-wide timing settings."""

from __future__ import annotations

import itertools
import json
import os
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakeeper.comm.paths import Dialer, PathMonitor, PathState, node_state, read_states, write_states
from hakeeper.db import Lcd, State
from hakeeper.db.settings import check_rules, defaults, detection_budget
from hakeeper.errors import OutOfRange
from tests.conftest import Cli


def test_a_path_dies_after_the_budget_and_lives_again_when_heard() -> None:
    path = PathMonitor(interval=0.2, misses=4, started=100.0)
    assert path.tick(100.7) is None and path.state is PathState.UNKNOWN
    assert path.tick(100.81) is PathState.DEAD, "nothing heard within the budget after start"
    assert path.heard(101.0) is PathState.ALIVE
    assert path.heard(101.2) is None
    assert path.tick(101.95) is None
    assert path.tick(102.01) is PathState.DEAD
    assert path.tick(103.0) is None, "DEAD is reported once"


def test_a_path_silent_for_less_than_the_budget_stays_alive() -> None:
    path = PathMonitor(interval=0.1, misses=5, started=0.0)
    assert path.heard(1.0) is PathState.ALIVE
    assert all(path.tick(1.0 + t / 100) is None for t in range(1, 51)), "0.5 s of silence is within the budget"
    assert path.heard(1.5) is None and path.state is PathState.ALIVE


def test_a_stalled_connection_gets_a_fresh_one_beside_it_and_the_first_answered_wins() -> None:
    dialer = Dialer(interval=0.1, misses=5)
    assert dialer.dial_due(0.0), "no connection yet: dial at once"
    assert not dialer.dial_due(0.01), "not again within half an interval"
    dialer.opened(1)
    for seq, now in enumerate((0.1, 0.2, 0.3, 0.4), start=1):
        assert dialer.targets(now) == [1]
        dialer.sent(1, seq, now)
        dialer.acked(1, seq)
        assert not dialer.dial_due(now + 0.05), "acknowledged: working"
    # The cable is pulled: frames 5.. go unanswered (TCP backs off, the kernel forgets the peer's MAC).
    dialer.sent(1, 5, 0.5)
    dialer.sent(1, 6, 0.6)
    assert not dialer.dial_due(0.65), "one interval unanswered is still normal"
    assert dialer.next_check(0.65) == pytest.approx(0.7), "it looks again when frame 5 is two intervals old"
    assert dialer.dial_due(0.7), "two intervals unanswered: dial a fresh connection, keep the old one"
    dialer.sent(1, 7, 0.7)
    assert dialer.targets(0.8) == [1], "stalled, it still carries frames: only the answers may be late"
    assert dialer.targets(1.0) == [], "its oldest frame unanswered for the budget: the peer gave up on it"
    assert not dialer.dial_due(0.72) and dialer.dial_due(0.75), "another dial every half interval"
    assert all(dialer.next_check(t) >= t for t in (0.75, 0.8, 2.0)), "never in the past"
    dialer.opened(2)
    assert not dialer.dial_due(0.76), "the fresh connection counts as working until it stalls too"
    dialer.sent(2, 8, 0.76)
    assert dialer.targets(0.77) == [1, 2]
    assert dialer.acked(2, 8) == [1], "answered on the fresh one: the stalled one goes, with what it queues"
    assert dialer.outstanding == {2: deque()}
    dialer.closed(2)
    assert dialer.dial_due(0.9), "its connection closed: dial"


def test_a_path_in_trouble_for_long_dials_once_per_budget() -> None:
    dialer = Dialer(interval=0.1, misses=5)
    dials = [t / 100 for t in range(0, 1000) if dialer.dial_due(t / 100)]
    assert dials[1] - dials[0] == pytest.approx(0.05)
    assert dials[-1] - dials[-2] == pytest.approx(0.5), "after 10 budgets of trouble: once per budget"
    gaps = [b - a for a, b in itertools.pairwise(dials)]  # sampled every 10 ms
    assert all(0.05 - 1e-9 <= gap <= 0.06 + 1e-9 or 0.5 - 1e-9 <= gap <= 0.51 + 1e-9 for gap in gaps)


@given(st.lists(st.sampled_from(list(PathState)), max_size=5))
def test_a_node_is_dead_only_when_every_path_is(states: list[PathState]) -> None:
    result = node_state(states)
    if PathState.ALIVE in states:
        assert result is PathState.ALIVE
    elif states and set(states) == {PathState.DEAD}:
        assert result is PathState.DEAD
    else:
        assert result is PathState.UNKNOWN


def test_states_are_read_only_from_a_live_writer(tmp_path: Path) -> None:
    write_states(tmp_path, {"node2/198.18.0.11/198.18.0.12": PathState.ALIVE})
    assert read_states(tmp_path) == {"node2/198.18.0.11/198.18.0.12": PathState.ALIVE}
    data = json.loads((tmp_path / "run" / "paths.json").read_text())
    data["pid"] = 2**22 + 12345  # beyond pid_max on these machines: no such process
    (tmp_path / "run" / "paths.json").write_text(json.dumps(data))
    assert read_states(tmp_path) == {}, "a dead writer's states are stale: UNKNOWN"
    (tmp_path / "run" / "paths.json").write_text("garbage")
    assert read_states(tmp_path) == {}
    assert os.stat(tmp_path / "run").st_mode & 0o777 == 0o700


def test_timing_rules_refuse_nonsense() -> None:
    check_rules(defaults())
    assert detection_budget(defaults()) == pytest.approx(0.2)
    with pytest.raises(OutOfRange, match="scheduling noise"):
        check_rules(defaults() | {"heartbeat_interval": 0.05, "heartbeat_misses": 3})
    with pytest.raises(OutOfRange, match="above"):
        check_rules(defaults() | {"heartbeat_interval": 10.0, "heartbeat_misses": 13, "takeover_delay": 11})


def test_a_takeover_waits_for_the_losing_side_to_stop_unless_it_halts_or_quorum_is_off() -> None:
    slow = defaults() | {"heartbeat_interval": 1.0, "heartbeat_misses": 3}
    with pytest.raises(OutOfRange, match="could still be serving"):
        check_rules(slow)
    check_rules(slow | {"takeover_delay": 1.1})
    check_rules(slow | {"quorum_loss_action": "fastkill"})
    check_rules(slow | {"quorum_mode": "none"})


def test_default_settings_declare_a_dead_node_within_a_second(lcd: Lcd) -> None:
    assert detection_budget(lcd.settings()) <= 1.0
    values = lcd.set_settings({"heartbeat_interval": "1", "heartbeat_misses": "3", "takeover_delay": "1.1"})
    assert (values["heartbeat_interval"], values["heartbeat_misses"]) == (1.0, 3)
    assert lcd.settings()["heartbeat_interval"] == 1.0
    with pytest.raises(OutOfRange):
        lcd.set_settings({"heartbeat_interval": "0.05", "heartbeat_misses": "2"})
    assert lcd.settings()["heartbeat_misses"] == 3, "a refused change changes nothing"


def test_paths_in_lcdstatus_and_net_list(cli: Cli, root: Path) -> None:
    assert cli("sys_create", "-s", "node2").code == 0
    assert cli("net_create", "-s", "node2", "-l", "198.18.0.11", "-r", "198.18.0.12").code == 0
    assert cli("net_create", "-s", "node2", "-l", "198.18.1.11", "-r", "198.18.1.12", "-p", "7").code == 0
    write_states(root, {"node2/198.18.0.11/198.18.0.12": PathState.ALIVE})
    assert cli("net_list", "-f:").out.splitlines() == [
        "node2:TCP:198.18.0.11:198.18.0.12:1:ALIVE",
        "node2:TCP:198.18.1.11:198.18.1.12:7:UNKNOWN",
    ]
    short = cli("lcdstatus", "-e").out.splitlines()
    assert short[1].split() == ["MACHINE", "NETWORK", "ADDRESSES/DEVICE", "STATE", "PRIO"]
    assert short[2].split() == ["node2", "TCP", "198.18.0.11/198.18.0.12", "ALIVE", "1"]
    assert short[3].split() == ["node2", "TCP", "198.18.1.11/198.18.1.12", "UNKNOWN", "7"]
    paths = json.loads(cli("lcdstatus", "--json").out)["paths"]
    assert [(p["remote"], p["state"]) for p in paths] == [("198.18.0.12", "ALIVE"), ("198.18.1.12", "UNKNOWN")]
    assert "node2    TCP      198.18.0.11/198.18.0.12  ALIVE" in cli("lcdstatus").out
    assert cli("net_remove", "-s", "node2", "-l", "198.18.1.11").code == 0
    assert len(cli("net_list").out.splitlines()) == 1


def test_the_lease_asks_for_a_cut_once_when_no_majority_is_heard_and_hakeeperd_is_silent() -> None:
    from hakeeper.comm.heartbeat import Lease

    lease = Lease(voters=3, stale_after=0.1, last_tick=10.0)
    assert not lease.due(10.5, alive_peers=2), "a majority is heard"
    assert not lease.due(10.05, alive_peers=0), "no majority, but hakeeperd ticked 50 ms ago: it acts itself"
    assert lease.due(10.5, alive_peers=0), "no majority, hakeeperd silent for 0.5 s: cut"
    assert not lease.due(10.6, alive_peers=0), "once per loss of quorum"
    assert not lease.due(10.7, alive_peers=1), "a majority again (2 of 3)"
    assert lease.due(11.0, alive_peers=0), "lost again: cut again"
    assert not Lease(voters=0, stale_after=0.1, last_tick=0.0).due(5.0, alive_peers=0), "quorum is not a majority"
    assert not Lease(voters=4, stale_after=0.1, last_tick=0.0).due(5.0, alive_peers=2), "3 of 4 is a majority"
    assert Lease(voters=4, stale_after=0.1, last_tick=0.0).due(5.0, alive_peers=1), "2 of 4 is not"


def test_the_heartbeat_process_cuts_the_face_itself_once_per_loss_of_a_majority_it_had() -> None:
    from hakeeper.comm.heartbeat import Lease

    lease = Lease(voters=3, stale_after=0.1, last_tick=10.0, face={"vip": "198.18.0.50"})
    assert not lease.cut_due(alive_peers=0), "never heard a majority (a node that starts alone keeps what it runs)"
    assert not lease.cut_due(alive_peers=1), "2 of 3: a majority"
    assert lease.cut_due(alive_peers=0), "the majority is gone: cut at once, whatever hakeeperd does"
    assert not lease.cut_due(alive_peers=0), "once per loss"
    assert not lease.cut_due(alive_peers=2) and lease.cut_due(alive_peers=0), "back, then lost again: cut again"
    lease.face = {}
    assert not lease.cut_due(alive_peers=2) and not lease.cut_due(alive_peers=0), "nothing to cut"
    assert not Lease(voters=0, stale_after=0.1, last_tick=0.0, face={"v": "198.18.0.9"}, held=True).cut_due(0)


def test_the_face_is_the_addresses_in_service_here_when_a_quorum_loss_takes_them_out(lcd: Lcd) -> None:
    from hakeeper.cluster.lease import Face

    for tag, address in (("vip", "198.18.0.50/24"), ("vip2", "198.18.0.51/24"), ("vip3", "198.18.0.52/24")):
        lcd.create_resource(tag, f"ip-{tag}", "comm", "ip", info={"address": address}, ensure_type=True)
    lcd.set_state("vip", State.ISP, "test")
    lcd.set_state("vip2", State.OSF, "test")  # a failed remove may have left it: cut too
    face = Face(lcd)
    assert face() == {"vip": "198.18.0.50", "vip2": "198.18.0.51"}
    lcd.set_state("vip", State.OSU, "test")
    assert face() == {"vip2": "198.18.0.51"}, "kept only until the LCD changes"
    lcd.set_settings({"quorum_loss_action": "fastkill"})
    assert face() == {}, "a node that halts cuts nothing first"


def test_the_lease_is_checked_against_the_heartbeat_process_s_cut_when_it_was_first() -> None:
    from hakeeper.cluster.lease import DirectCuts

    clock = iter([100.0]).__next__
    cuts = DirectCuts(clock)
    assert cuts.covering(["vip"], since=99.0) is None, "nothing cut"
    cuts.heard(["vip", "vip2"], 0.002)
    assert cuts.covering(["vip"], since=99.0) == 0.002
    assert cuts.covering(["vip", "vip3"], since=99.0) is None, "vip3 was not cut by it"
    assert cuts.covering(["vip"], since=100.5) is None, "a cut of an earlier loss"


def test_frames_carry_what_runs_here_and_a_peer_s_new_digest_is_reported_once() -> None:
    import json
    from typing import Any, cast

    from hakeeper.comm.heartbeat import RUNS_MAX, Config, Heartbeats

    events: list[dict[str, Any]] = []
    hb = Heartbeats(Config("node1", 7366, 0.1, 5), cast(Any, None), events.append)
    assert "runs" not in json.loads(hb.frame(1))
    hb.set_runs({"web": 3})
    assert json.loads(hb.frame(2))["runs"] == {"web": 3}
    hb.set_runs({f"h{i}": i for i in range(RUNS_MAX // 8)})
    assert "runs" not in json.loads(hb.frame(3)), "a digest too large for a frame is not carried"
    hb._digest("node2", {"web": 4})
    hb._digest("node2", {"web": 4})
    hb._digest("node2", None)
    hb._digest("node2", "garbage")
    assert events == [{"event": "runs", "node": "node2", "runs": {"web": 4}},
                      {"event": "runs", "node": "node2", "runs": {}}]  # fmt: skip


@given(st.floats(min_value=0.0, max_value=1e6), st.sampled_from([0.05, 0.1, 0.25, 1.0]))
def test_every_path_of_a_node_sends_on_one_grid(now: float, interval: float) -> None:
    """Two paths started at different moments send their frames at the same instants: a node's last frames
    reach every peer together, so the peers declare it dead together."""
    from hakeeper.comm.heartbeat import on_grid

    first = on_grid(now, interval)
    assert now < first <= now + interval + 1e-6
    assert on_grid(now + interval * 0.3, interval) in (pytest.approx(first), pytest.approx(first + interval))
    assert first / interval == pytest.approx(round(first / interval))


def test_a_path_dies_at_its_deadline() -> None:
    path = PathMonitor(interval=0.1, misses=5, started=0.0)
    assert path.deadline == pytest.approx(0.5), "never heard: a budget after the start"
    path.heard(2.0)
    assert path.deadline == pytest.approx(2.5)
    assert path.tick(2.5) is None and path.tick(2.5001) is PathState.DEAD
