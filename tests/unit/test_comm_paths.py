"""Communication paths: their records and commands, liveness rules, and the cluster-wide timing settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakeeper.comm.paths import PathMonitor, PathState, node_state, read_states, write_states
from hakeeper.db import Lcd
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
    assert detection_budget(defaults()) == pytest.approx(0.5)
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
