"""LifeKeeper's command shapes that existing scripts use: options, states, tags and kits as LifeKeeper has them."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import pytest

from hakeeper.cli.base import parse, run
from hakeeper.cli.daemon import _event
from hakeeper.daemon import Config, Daemon
from hakeeper.db import Lcd, State
from hakeeper.events.alarm import Event, run_handlers
from tests.conftest import Cli, Result
from tests.fakes import build, fake_kits

OK, SYSCALL, SYNTAX, ILLEGAL, MISSING, COMM = 0, 1, 2, 5, 7, 9


def invoke(root: Path, name: str, *argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = run(name, list(argv), root=str(root), out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def kit(root: Path) -> Path:
    """A LifeKeeper-layout kit lk/svc whose actions note themselves (action tag) in the returned log."""
    log = root / "actions.log"
    actions = root / "subsys" / "lk" / "resources" / "svc" / "actions"
    for action in ("restore", "remove", "delete"):
        script(actions / action, f'echo "{action} $2" >> {log}')
    return log


def states(lcd_root: Path) -> dict[str, str]:
    with Lcd.open(lcd_root) as lcd:
        return {r.tag: r.state.name for r in lcd.resources()}


# ---------------------------------------------------------------------- a fresh LCD knows its kits


def test_a_fresh_state_directory_knows_its_kits(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    assert invoke(fresh, "ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web") == Result(OK, "", "")
    types = invoke(fresh, "typ_list", "-f/").out.splitlines()
    assert {"gen/app", "comm/ip", "comm/dns", "ocf/ra"} <= set(types)
    ops = [c["op"] for c in json.loads(invoke(fresh, "changes", "--json").out)]
    assert ops == ["init_node", "register_kits", "create_resource"], "registered once, in one change"


def test_a_kit_installed_later_is_known_the_first_time_it_is_named(cli: Cli, root: Path, kit: Path) -> None:
    assert cli("ins_create", "-a", "lk", "-r", "svc", "-t", "web", "-i", "web") == Result(OK, "", "")
    assert "lk/svc" in cli("typ_list", "-f/").out.splitlines()
    script(root / "subsys" / "other" / "resources" / "thing" / "actions" / "restore", "exit 0")
    assert cli("ins_list", "-a", "other", "-f:") == Result(OK, "", ""), "a listing (read-only) knows its name"
    assert cli("ins_create", "-a", "other", "-r", "thing", "-t", "t2", "-i", "t2") == Result(OK, "", "")
    assert "other/thing" in cli("typ_list", "-f/").out.splitlines()


def test_a_kit_type_the_administrator_removed_stays_removed(cli: Cli) -> None:
    cli("app_list")
    assert cli("typ_remove", "-a", "ocf", "-r", "ra") == Result(OK, "", "")
    assert "ocf/ra" not in cli("typ_list", "-f/").out.splitlines()
    assert cli("ins_create", "-a", "ocf", "-r", "ra", "-t", "x", "-i", "x").code == MISSING


def test_registering_kits_is_idempotent(lcd: Lcd) -> None:
    assert lcd.registered_kits() is None
    assert lcd.register_kits(["gen/app", "comm/ip"]) == ["comm/ip", "gen/app"]
    seq = lcd.last_seq()
    assert lcd.register_kits(["gen/app"]) == []
    assert lcd.last_seq() == seq, "nothing new: no change recorded"
    assert lcd.register_kits(["gen/app", "lk/svc"]) == ["lk/svc"]
    assert lcd.registered_kits() == ["comm/ip", "gen/app", "lk/svc"]


# ---------------------------------------------------------------------- sendevent


def test_sendevent_takes_lifekeepers_options_and_passes_them_on_as_given() -> None:
    argv = [
        *("-C", "filesys", "-E", "diskfull", "-m", "fsmon", "-n", "fs", "-c", "filesys", "-i", "42"),
        *("-t", "250102030405", "-T", "1735786800", "-s", "4", "-o", "-z", "-w", "-a", "alarm"),
        *("-P", "space", "-p", "97", "-d", "/dev/sdb1 97%", "-x", "almost full", "-S", "node1", "-O", "/tmp/x"),
    ]
    _cmd, args = parse("sendevent", argv, "sendevent")
    assert args.dest is None, "-d is the problem data, not a node"
    event = _event(args)
    assert (event.tag, event.level, event.system, event.outfile) == ("fs", "CRITICAL", "node1", "/tmp/x")
    given = event.argv()
    assert given[:8] == ["-C", "filesys", "-E", "diskfull", "-n", "fs", "-s", "4"]
    for pair in (["-d", "/dev/sdb1 97%"], ["-t", "250102030405"], ["-p", "97"], ["-x", "almost full"]):
        at = given.index(pair[0])
        assert given[at : at + 2] == pair
    assert {"-o", "-z", "-w"} <= set(given)
    assert "-A" not in given


@pytest.mark.parametrize(
    ("severity", "name"), [("1", "INFO"), ("2", "WARNING"), ("3", "MAJOR"), ("4", "CRITICAL"), ("critical", "CRITICAL")]
)
def test_sendevent_severities_by_number_or_name(severity: str, name: str) -> None:
    _cmd, args = parse("sendevent", ["-C", "generic", "-E", "failure", "-n", "web", "-s", severity], "sendevent")
    assert _event(args).level == name


def test_sendevent_d_is_problem_data_and_the_node_is_a_long_option(cli: Cli) -> None:
    cli("sys_create", "-s", "node2")
    data = cli("sendevent", "-C", "generic", "-E", "failure", "-n", "web", "-d", "node2")
    assert data.code == SYSCALL, data.err  # well formed: only hakeeperd is missing
    assert "hakeeperd is not running" in data.err
    remote = cli("sendevent", "-C", "generic", "-E", "failure", "-n", "web", "--node", "node2")
    assert remote.code == COMM, remote.err


def test_handlers_get_A_while_an_action_runs_and_their_output_goes_to_O(tmp_path: Path) -> None:
    handler = script(tmp_path / "events" / "generic" / "failure" / "note", 'echo "said $*"')
    out = tmp_path / "handlers.out"
    event = Event("generic", "failure", "web", "2", outfile=str(out), extra=("-d", "data"), advisory=True)
    asyncio.run(run_handlers(tmp_path, event, "node1"))
    assert out.read_text() == f"{handler}: exit 0\nsaid -C generic -E failure -n web -s 2 -O {out} -d data -A\n"


def test_an_event_of_another_system_runs_its_handlers_only(root: Path) -> None:
    log = root / "handled"
    script(root / "events" / "allclass" / "note", f'echo "$*" >> {log}')
    with Lcd.open(root) as lcd:
        build(lcd, [("web", "vip")])

    async def scenario() -> tuple[str, str]:
        daemon = Daemon(Config(root), dispatch=None)  # type: ignore[arg-type]
        try:
            kits, _kit = fake_kits(daemon.lcd)
            daemon.engine.kits = kits
            await daemon.engine.restore("web", reason="test")
            elsewhere = await daemon.send_event(Event("generic", "failure", "web", system="node2"))
            here = await daemon.send_event(Event("generic", "failure", "web", system="node1"))
            while daemon._work:
                await asyncio.gather(*daemon._work)
            return elsewhere, here
        finally:
            await daemon.db.aclose()
            daemon.lcd.close()

    elsewhere, here = asyncio.run(scenario())
    assert elsewhere.endswith("it happened on node2, not here; handlers only")
    assert here.endswith("local recovery of web started")
    assert len(log.read_text().splitlines()) == 2, "both events' handlers ran"
    assert states(root) == {"web": State.ISP.name, "vip": State.ISP.name}


# ---------------------------------------------------------------------- tags beginning with '-'


def test_tags_may_begin_with_a_dash_as_lifekeeper_allows(cli: Cli, kit: Path) -> None:
    assert cli("ins_create", "-a", "lk", "-r", "svc", "-t", "-dash", "-i", "d1") == Result(OK, "", "")
    assert cli("ins_create", "-a", "lk", "-r", "svc", "-t-top", "-i", "-d2") == Result(OK, "", "")
    assert cli("dep_create", "-p", "-top", "-c", "-dash") == Result(OK, "", "")
    assert cli("ins_list", "-t", "-dash", "-f:").out.split(":")[2:4] == ["-dash", "d1"]
    assert cli("ins_list", "-t-dash", "-f:").out.split(":")[2] == "-dash"
    assert cli("ins_gettag", "-i", "-d2").out == "-top\n"
    assert cli("dep_list", "-c", "-top", "-f>").out == "-top>-dash\n"
    assert cli("ins_remove", "-t", "-dash", "-v", "-N").out == "-top\n-dash\n"
    _cmd, args = parse("sendevent", ["-C", "generic", "-E", "failure", "-n", "-dash", "-x", "-1 left"], "sendevent")
    assert (args.tag, args.text) == ("-dash", "-1 left")


def test_an_option_value_of_two_dashes_is_a_syntax_error(cli: Cli) -> None:
    result = cli("ins_list", "-t--")
    assert result.code == SYNTAX
    assert result.err.startswith("ins_list: -t cannot take '--'")


# ---------------------------------------------------------------------- states


def test_states_are_lifekeepers_names_only(cli: Cli, kit: Path) -> None:
    cli("ins_create", "-a", "lk", "-r", "svc", "-t", "web", "-i", "web")
    for bad in ("isp", "Osu", "up"):
        result = cli("ins_setstate", "-t", "web", "-S", bad)
        assert result.code == ILLEGAL, bad
    assert "upper case: ISP" in cli("ins_setstate", "-t", "web", "-S", "isp").err
    assert cli("ins_setstate", "-t", "web", "-S", "ISU") == Result(OK, "", "")


def test_ins_setstate_A_sets_the_hierarchy_as_restore_or_remove_would(cli: Cli, root: Path, kit: Path) -> None:
    for tag in ("web", "ip", "fs", "disk", "db"):
        cli("ins_create", "-a", "lk", "-r", "svc", "-t", tag, "-i", tag)
    for parent, child in (("web", "ip"), ("web", "fs"), ("fs", "disk"), ("db", "disk")):
        cli("dep_create", "-p", parent, "-c", child)
    assert cli("ins_setstate", "-t", "fs", "-S", "ISP", "-A") == Result(OK, "", "")
    assert states(root) == {"web": "ISP", "ip": "ISP", "fs": "ISP", "disk": "ISP", "db": "OSU"}
    assert cli("ins_setstate", "-t", "fs", "-S", "OSU", "-A", "-R", "maintenance") == Result(OK, "", "")
    assert states(root) == {"web": "OSU", "ip": "ISP", "fs": "OSU", "disk": "ISP", "db": "OSU"}
    reasons = {r["tag"]: r["reason"] for r in json.loads(cli("ins_list", "--json").out)}
    assert reasons["web"] == reasons["fs"] == "maintenance"


# ---------------------------------------------------------------------- ins_remove -I -G -U


def test_ins_remove_I_takes_what_is_in_service_out_first(cli: Cli, root: Path, kit: Path) -> None:
    for tag in ("web", "ip"):
        cli("ins_create", "-a", "lk", "-r", "svc", "-t", tag, "-i", tag)
    cli("dep_create", "-p", "web", "-c", "ip")
    assert cli("perform_action", "-t", "web", "-a", "restore").code == OK
    kit.unlink()
    assert cli("ins_remove", "-I", "-t", "ip", "-v") == Result(OK, "web\nip\n", "")
    assert kit.read_text().splitlines() == ["remove web", "remove ip", "delete web", "delete ip"]


def test_ins_remove_G_skips_the_global_delete_scripts(cli: Cli, root: Path, kit: Path) -> None:
    script(root / "subsys" / "lk" / "actions" / "predelete", f'echo "predelete $2" >> {kit}')
    for tag in ("a", "b"):
        cli("ins_create", "-a", "lk", "-r", "svc", "-t", tag, "-i", tag)
    assert cli("ins_remove", "-t", "a").code == OK
    assert cli("ins_remove", "-G", "-t", "b").code == OK
    assert kit.read_text().splitlines() == ["predelete a", "delete a", "delete b"]


def test_ins_remove_U_goes_on_past_a_failing_delete_action(cli: Cli, root: Path, kit: Path) -> None:
    script(root / "subsys" / "lk" / "resources" / "svc" / "actions" / "delete", "echo cannot; exit 1")
    cli("ins_create", "-a", "lk", "-r", "svc", "-t", "web", "-i", "web")
    assert cli("ins_remove", "-t", "web").code == SYSCALL
    assert "web" in states(root), "without -U a failing delete action stops the removal"
    result = cli("ins_remove", "-U", "-t", "web")
    assert result.code == OK
    assert "removed all the same (-U)" in result.err
    assert states(root) == {}


# ---------------------------------------------------------------------- perform_action -n and -b


def test_perform_action_n_says_what_would_run_and_runs_nothing(cli: Cli, root: Path, kit: Path) -> None:
    for tag in ("web", "ip", "db"):
        cli("ins_create", "-a", "lk", "-r", "svc", "-t", tag, "-i", tag)
    cli("dep_create", "-p", "web", "-c", "ip")
    cli("ins_setstate", "-t", "ip", "-S", "ISU")
    before = cli("changes", "--json").out
    result = cli("perform_action", "-n", "-t", "ip", "-a", "restore")
    assert result.out.splitlines() == ["ip: ISU -> ISP, no action runs", "web: restore (lk/svc): OSU -> ISP"]
    assert cli("perform_action", "-n", "-t", "web", "-a", "remove").out == "web: OSU already: nothing to do\n"
    assert not kit.exists(), "no action ran"
    assert cli("changes", "--json").out == before, "nothing changed"


def test_perform_action_b_returns_at_once_and_the_action_runs_on(cli: Cli, root: Path, kit: Path) -> None:
    cli("ins_create", "-a", "lk", "-r", "svc", "-t", "web", "-i", "web")
    result = cli("perform_action", "-b", "-t", "web", "-a", "restore")
    assert result.code == OK
    assert result.out.startswith("restore of web started in the background (pid ")
    deadline = time.monotonic() + 60  # a bound on waiting, not an assertion about time
    while states(root)["web"] != "ISP" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert states(root)["web"] == "ISP"
    while "succeeded" not in (log := (root / "perform_action.log").read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "restore of web succeeded" in log
    assert kit.read_text() == "restore web\n"


# ---------------------------------------------------------------------- sys_getds, sys_getst, net_change


def test_sys_getds_and_sys_getst_describe_a_node(cli: Cli) -> None:
    cli("sys_create", "-s", "node2")
    cli("sys_create", "-s", "node3")
    cli("net_create", "-s", "node2", "-l", "198.18.0.11", "-r", "198.18.0.12")
    assert cli("sys_getds", "-s", "node1").out == "node1: this node\n"
    assert cli("sys_getds", "-s", "node2").out == "node2: 1 communication path 198.18.0.11/198.18.0.12\n"
    assert cli("sys_getds", "-s", "node3").out == "node3: no communication path (see: net_create)\n"
    assert cli("sys_getst", "-s", "node1").out == "DEAD\n", "no hakeeperd protects this node"
    assert cli("sys_getst", "-s", "node2").out == "UNKNOWN\n", "nobody listens to its heartbeats"
    assert cli("sys_getst", "-s", "nosuch").code == MISSING


def test_net_change_moves_a_path_to_new_addresses_or_another_node(cli: Cli) -> None:
    cli("sys_create", "-s", "node2")
    cli("sys_create", "-s", "node3")
    cli("net_create", "-s", "node2", "-l", "198.18.0.11", "-r", "198.18.0.12", "-p", "3")
    cli("net_create", "-s", "node3", "-l", "198.18.0.11", "-r", "198.18.0.13", "-p", "3")
    pair = "198.18.0.11/198.18.0.12"
    assert cli("net_change", "-s", "node2", "-D", pair, "-P", "198.18.1.11/198.18.1.12") == Result(OK, "", "")
    assert cli("net_list", "-s", "node2", "-f", " ").out == "node2 TCP 198.18.1.11 198.18.1.12 3 UNKNOWN\n"
    assert cli("net_change", "-s", "node2", "-D", "198.18.1.11/198.18.1.12", "-N", "node3").code == OK
    assert cli("net_list", "-s", "node2", "-f", " ").out == ""
    assert cli("net_list", "-s", "node3", "-f", " ").out.splitlines() == [
        "node3 TCP 198.18.1.11 198.18.1.12 1 UNKNOWN",  # priority 3 is taken on node3: the lowest free one
        "node3 TCP 198.18.0.11 198.18.0.13 3 UNKNOWN",
    ]
    assert cli("net_change", "-s", "node3", "-D", pair, "-N", "node2").code == MISSING
