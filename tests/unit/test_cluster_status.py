"""``hakeeper status``: the view merged from the nodes' reports, its JSON schema and its text (no daemons here).

The reports are what each node's hakeeperd says of itself (``status --local``):
three nodes, web extended to node1 (priority 1) and node2 (priority 2), node3 a
witness. The LAN test (tests/integration/test_status.py) checks the same against
real daemons and a client.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cli.base import Context, parse
from hakeeper.cli.clusterstatus import _checked, merge, render
from hakeeper.cli.status import Where, show
from tests.conftest import Cli, Result

DOCS = Path(__file__).resolve().parents[2] / "docs" / "status.md"
NOW = 1_796_000_000.0


def report(
    node: str,
    *,
    runs: dict[str, int] | None = None,
    record: tuple[int, str | None] | None = (3, "node1"),
    ballot: int = 7,
    membership: dict[str, str] | None = None,
    states: dict[str, str] | None = None,
    witness: bool = False,
    path_states: dict[str, str] | None = None,
) -> dict[str, Any]:
    others = [n for n in ("node1", "node2", "node3") if n != node]
    seen = {n: "ALIVE" for n in others} | (membership or {})
    hierarchies = [] if witness else [
        {"name": "web", "roots": ["web"], "members": ["vip", "web"], "priorities": {"node1": 1, "node2": 2}}
    ]  # fmt: skip
    resources = {} if witness else {tag: [state, ""] for tag, state in (states or {"web": "OSU", "vip": "OSU"}).items()}
    return {
        "node": node,
        "daemon": True,
        "witness": witness,
        "nodes": ["node1", "node2", "node3"],
        "membership": seen,
        "paths": [
            {
                "node": n,
                "kind": "TCP",
                "local": f"198.18.0.1{node[-1]}",
                "remote": f"198.18.0.1{n[-1]}",
                "priority": 1,
                "state": (path_states or {}).get(n, seen[n]),
            }
            for n in others
        ],
        "quorum": {"mode": "majority", "ok": True, "why": "sees 3 of 3 nodes", "sees": 3, "of": 3},
        "hierarchies": hierarchies,
        "resources": resources,
        "runs": runs or {},
        "records": {}
        if record is None
        else {"web": {"ballot": [ballot, record[1]], "epoch": record[0], "owner": record[1]}},
        "blocked": {},
    }


RUNNING = {"web": "ISP", "vip": "ISP"}


def calm() -> dict[str, dict[str, Any]]:
    return {
        "node1": report("node1", runs={"web": 3}, states=RUNNING),
        "node2": report("node2"),
        "node3": report("node3", witness=True),
    }


def web_of(status: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [h for h in status["hierarchies"] if h["name"] == "web"]
    assert len(found) == 1
    return found[0]


def test_a_calm_cluster_seen_from_the_witness() -> None:
    status = merge("node3", calm(), {}, now=NOW)
    assert status["schema"] == 1 and status["node"] == "node3" and status["time"] == "2026-11-30T00:53:20Z"
    assert [(n["name"], n["state"], n["witness"], n["this"]) for n in status["nodes"]] == [
        ("node1", "ALIVE", False, False), ("node2", "ALIVE", False, False), ("node3", "ALIVE", True, True),
    ]  # fmt: skip
    web = web_of(status)  # the witness's LCD knows no hierarchy: node1 and node2 told
    assert web["where"] == "in service on node1 (epoch 3)"
    assert web["running"] == [{"node": "node1", "epoch": 3}] and web["unknown"] == []
    assert web["owner"] == {"node": "node1", "epoch": 3, "votes": 3, "voters": 3,
                            "held_by": ["node1", "node2", "node3"], "needed": 2, "agreed": True}  # fmt: skip
    assert web["backups"] == [{"node": "node2", "priority": 2, "state": "ALIVE", "live": True}]
    assert status["degraded"] == []
    text = render(status)
    assert "  web: in service on node1 (epoch 3)" in text
    assert "    owner: node1 (epoch 3), agreed by 3 of 3 voters" in text
    assert "    backups: node2 (priority 2, ALIVE)" in text
    assert "  node3  ALIVE    this node; witness" in text
    assert text[-1] == "Degraded: nothing"


def test_after_a_failover_the_dead_node_is_dead_and_web_has_no_live_backup() -> None:
    gone = {"node1": "DEAD"}
    reports = {
        "node2": report("node2", runs={"web": 4}, states=RUNNING, record=(4, "node2"), ballot=9, membership=gone),
        "node3": report("node3", witness=True, record=(4, "node2"), ballot=9, membership=gone),
    }
    status = merge("node2", reports, {"node1": "DEAD: not asked"}, now=NOW)
    assert [(n["name"], n["state"], n["answered"]) for n in status["nodes"]] == [
        ("node1", "DEAD", False), ("node2", "ALIVE", True), ("node3", "ALIVE", True),
    ]  # fmt: skip
    web = web_of(status)
    assert web["where"] == "in service on node2 (epoch 4)"
    assert web["owner"]["node"] == "node2" and web["owner"]["votes"] == 2 and web["owner"]["agreed"]
    assert web["backups"] == [{"node": "node1", "priority": 1, "state": "DEAD", "live": False}]
    assert status["degraded"] == ["node1 is DEAD (all paths from node2 DEAD)", "web: no live backup (node1 DEAD)"]


def test_a_node_that_does_not_answer_is_unknown_never_running_nothing() -> None:
    reports = calm()
    del reports["node1"]  # ALIVE to node2, but its hakeeperd did not answer
    status = merge("node2", reports, {"node1": "no answer within 2 s"}, now=NOW)
    (node1,) = [n for n in status["nodes"] if n["name"] == "node1"]
    assert node1 == {"name": "node1", "state": "ALIVE", "this": False, "witness": None, "answered": False,
                     "daemon": None, "error": "no answer within 2 s"}  # fmt: skip
    web = web_of(status)
    assert web["running"] == [] and web["unknown"] == ["node1"]
    assert web["where"] == "unknown: node1 did not say what they run"
    assert "web: in service nowhere" not in status["degraded"]
    assert "node1 did not answer: no answer within 2 s" in status["degraded"]
    assert "web: where it runs is unknown: node1 did not say what they run" in status["degraded"]


def test_two_copies_a_failed_backup_a_record_held_by_a_minority_and_a_path_down() -> None:
    reports = calm()
    reports["node2"] = report("node2", runs={"web": 2}, states=RUNNING, record=(4, "node2"), ballot=9,
                              path_states={"node3": "DEAD"})  # fmt: skip
    status = merge("node1", reports, {}, now=NOW)
    web = web_of(status)
    assert web["where"] == "IN SERVICE ON 2 NODES: node1 (epoch 3), node2 (epoch 2)"
    assert web["owner"]["node"] == "node2" and not web["owner"]["agreed"]  # highest ballot, at one voter of three
    assert "web: IN SERVICE ON 2 NODES: node1 (epoch 3), node2 (epoch 2)" in status["degraded"]
    assert "web: ownership record node2 (epoch 4) held by only 1 of 3 voters that answered" in status["degraded"]
    assert "path node2 -> node3 (198.18.0.12/198.18.0.13) DEAD" in status["degraded"]

    reports = calm()
    reports["node2"] = report("node2", states={"web": "OSF", "vip": "OSU"})
    status = merge("node1", reports, {}, now=NOW)
    assert web_of(status)["backups"][0]["live"] is False
    assert "web OSF on node2" in status["degraded"]
    assert "web: no live backup (node2 failed there)" in status["degraded"]


def test_a_hierarchy_in_service_nowhere_and_lost_quorum_are_degraded() -> None:
    reports = calm()
    reports["node1"] = report("node1")
    reports["node1"]["quorum"] = {"mode": "majority", "ok": False, "why": "sees 1 of 3 nodes", "sees": 1, "of": 3}
    status = merge("node1", reports, {}, now=NOW)
    assert web_of(status)["where"] == "in service nowhere"
    assert status["degraded"][:1] == ["no quorum on node1 (sees 1 of 3 nodes): it takes nothing over"]
    assert "web: in service nowhere" in status["degraded"]
    assert "Quorum: NO (sees 1 of 3 nodes, quorum_mode=majority)" in render(status)


# ---------------------------------------------------------------------- the schema is stable and documented

TOP = {"schema", "node", "daemon", "time", "quorum", "nodes", "paths", "hierarchies", "degraded"}
NODE = {"name", "state", "this", "witness", "answered", "daemon", "error"}
PATH = {"from", "node", "kind", "local", "remote", "priority", "state"}
HIERARCHY = {"name", "roots", "members", "priorities", "where", "running", "unknown", "owner", "backups",
             "resources", "blocked", "degraded"}  # fmt: skip
OWNER = {"node", "epoch", "votes", "voters", "held_by", "needed", "agreed"}
BACKUP = {"node", "priority", "state", "live"}
RESOURCE = {"tag", "node", "state", "reason"}


def test_the_json_schema_holds_these_fields_and_docs_status_md_explains_each() -> None:
    status = json.loads(json.dumps(merge("node1", calm(), {}, now=NOW)))
    assert set(status) == TOP
    assert {frozenset(n) for n in status["nodes"]} == {frozenset(NODE)}
    assert {frozenset(p) for p in status["paths"]} == {frozenset(PATH)}
    web = web_of(status)
    assert set(web) == HIERARCHY and set(web["owner"]) == OWNER
    assert set(web["backups"][0]) == BACKUP and set(web["resources"][0]) == RESOURCE
    assert set(status["quorum"]) == {"mode", "ok", "why", "sees", "of"}
    prose = re.sub(r"```.*?```", "", DOCS.read_text(), flags=re.DOTALL)  # the examples' fences
    spans = re.findall(r"`([^`]+)`", prose)
    documented = {word for span in spans for word in re.findall(r"[a-z_]+", span)}
    missing = (TOP | NODE | PATH | HIERARCHY | OWNER | BACKUP | RESOURCE) - documented
    assert not missing, f"not in docs/status.md: {sorted(missing)}"


# ---------------------------------------------------------------------- without hakeeperd: the LCD's view


@pytest.fixture
def extended(cli: Cli, root: Path) -> Cli:
    """web in service on node1 (this node), extended to node2 on paper (the equivalency written directly)."""
    from hakeeper.db import Lcd, State

    with Lcd.open(root) as lcd:
        for node in ("node2", "node3"):
            lcd.create_node(node)
        lcd.create_path("node2", "198.18.0.11", "198.18.0.12")
    assert cli("ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-1").code == 0
    with Lcd.open(root) as lcd:
        lcd.create_equivalency("web", "node2", other_priority=2)
        lcd.set_state("web", State.ISP)
    return cli


def test_without_hakeeperd_the_lcd_view_is_shown_marked_and_the_others_unknown(extended: Cli) -> None:
    status = json.loads(extended("status", "--json").out)
    assert status["daemon"] is False
    assert status["quorum"] == {"mode": "majority", "ok": None, "why": "hakeeperd is not running here", "sees": None,
                                "of": None}  # fmt: skip
    assert [(n["name"], n["state"]) for n in status["nodes"]] == [
        ("node1", "ALIVE"), ("node2", "UNKNOWN"), ("node3", "UNKNOWN"),
    ]  # fmt: skip
    web = web_of(status)
    assert web["running"] == [{"node": "node1", "epoch": 0}]  # restored by hand: no claim
    assert web["backups"] == [{"node": "node2", "priority": 2, "state": "UNKNOWN", "live": None}]
    assert status["degraded"][0].startswith("hakeeperd is not running on node1")
    text = extended("status")
    assert text.code == 0 and text.err == ""
    assert "hakeeperd is not running on node1: what its LCD says" in text.out
    assert "  web: in service on node1 (no claim)" in text.out
    assert "web: no backup known to be live (node2 unknown)" in text.out


def test_watch_shows_count_views_one_json_document_a_line(extended: Cli) -> None:
    frames = extended("status", "--json", "--watch", "0.1", "--count", "3").out.splitlines()
    assert len(frames) == 3
    assert all(web_of(json.loads(f))["running"][0]["node"] == "node1" for f in frames)
    text = extended("status", "--watch", "0.1", "--count", "2").out
    assert text.count("Cluster status from node1") == 2


def test_watch_and_count_are_checked(extended: Cli) -> None:
    assert extended("status", "--watch", "0").code == 6
    assert extended("status", "--count", "0", "--watch").code == 6
    assert extended("status", "--watch", "soon") == Result(2, "", extended("status", "--watch", "soon").err)


# ---------------------------------------------------------------------- lcdstatus on a backup: where web runs now


def lcdstatus(root: Path, places: list[Where] | None, *argv: str) -> str:
    """lcdstatus as hakeeperd runs it, with ``places`` as hakeeperd would have learnt them (None: no hakeeperd)."""
    out, err = io.StringIO(), io.StringIO()
    _cmd, args = parse("lcdstatus", list(argv), "lcdstatus")
    ctx = Context(root, out, err, readonly=True)
    try:
        assert show(ctx, args, places) == 0
    finally:
        ctx.close()
    assert err.getvalue() == ""
    return out.getvalue()


def web_where(
    running: tuple[tuple[str, int], ...], unknown: tuple[str, ...], backups: tuple[tuple[str, str], ...]
) -> Where:
    return Where("web", frozenset({"web"}), running, unknown, backups)


def test_lcdstatus_short_form_says_where_each_hierarchy_runs_now(extended: Cli, root: Path) -> None:
    served = web_where((("node2", 3),), (), (("node1", "ALIVE"),))
    lines = lcdstatus(root, [served], "-e").splitlines()
    at = lines.index("HIERARCHY  IN SERVICE ON  EPOCH")
    assert lines[at + 1].split() == ["web", "node2", "3"]
    assert lines[1].split()[:4] == ["node2", "web", "web-1", "ISP"]  # LifeKeeper's columns as they were
    assert lines[at + 2].startswith("MACHINE")
    unknown = web_where((), ("node2",), (("node1", "ALIVE"),))
    assert lcdstatus(root, [unknown], "-e").splitlines()[at + 1].split() == ["web", "?", "--"]
    nowhere = web_where((), (), (("node1", "ALIVE"), ("node2", "ALIVE")))
    assert lcdstatus(root, [nowhere], "-e").splitlines()[at + 1].split() == ["web", "--", "--"]
    assert "HIERARCHY" not in lcdstatus(root, None, "-e")  # without hakeeperd: LifeKeeper's form only


def test_lcdstatus_quiet_reports_a_hierarchy_without_a_live_backup(extended: Cli, root: Path) -> None:
    covered = web_where((("node2", 3),), (), (("node1", "ALIVE"),))
    assert lcdstatus(root, [covered], "-q") == ""
    alone = web_where((("node2", 3),), (), (("node1", "DEAD"), ("node3", "OSF")))
    assert (
        lcdstatus(root, [alone], "-q") == "hierarchy web: no live backup (in service on node2; node1 DEAD, node3 OSF)\n"
    )
    silent = web_where((("node2", 3),), ("node1",), (("node1", "UNKNOWN"),))
    assert lcdstatus(root, [silent], "-q") == (
        "hierarchy web: no backup known to be live (in service on node2; node1 UNKNOWN)\n"
    )
    quiet = json.loads(lcdstatus(root, [covered, alone], "-q", "--json"))
    assert quiet["placement"] == [
        {"hierarchy": "web", "in_service_on": ["node2"], "epoch": 3, "live_backups": [], "unknown": []}
    ]
    everything = json.loads(lcdstatus(root, [web_where((), ("node2",), ())], "--json"))
    assert everything["placement"][0]["in_service_on"] is None  # unknown, not "nowhere" ([])
    assert json.loads(lcdstatus(root, None, "--json"))["placement"] is None


def test_a_witness_that_does_not_answer_is_marked_from_its_registration_else_unknown() -> None:
    reports = calm()
    del reports["node3"]
    unknown = merge("node1", reports, {"node3": "no answer within 2 s"}, now=NOW)
    assert [n["witness"] for n in unknown["nodes"]] == [False, False, None]
    reports["node1"]["witnesses"] = ["node3"]  # cluster join --witness registered it
    registered = merge("node1", reports, {"node3": "no answer within 2 s"}, now=NOW)
    assert [n["witness"] for n in registered["nodes"]] == [False, False, True]


def test_lcdstatus_names_the_witness(cli: Cli) -> None:
    assert "Witnesses" not in cli("lcdstatus").out
    assert json.loads(cli("lcdstatus", "--json").out)["witnesses"] == []
    assert cli("flg_create", "-f", "witness").code == 0
    assert "\nWitnesses: node1 (count for quorum, hold no resources)\n" in cli("lcdstatus").out
    assert json.loads(cli("lcdstatus", "--json").out)["witnesses"] == ["node1"]
    assert "Witnesses" not in cli("lcdstatus", "-e").out  # LifeKeeper's short form stays as it is


def test_with_quorum_mode_none_a_record_is_agreed_by_a_majority_of_the_live_voters() -> None:
    gone = {"node1": "DEAD", "node3": "DEAD"}
    alone = report("node2", runs={"web": 4}, states=RUNNING, record=(4, "node2"), ballot=9, membership=gone)
    alone["quorum"] = {"mode": "none", "ok": True, "why": "quorum checking is off", "sees": 1, "of": 3}
    owner = web_of(merge("node2", {"node2": alone}, {}, now=NOW))["owner"]
    assert (owner["votes"], owner["voters"], owner["needed"], owner["agreed"]) == (1, 3, 1, True)
    alone["quorum"]["mode"] = "majority"
    owner = web_of(merge("node2", {"node2": alone}, {}, now=NOW))["owner"]
    assert (owner["needed"], owner["agreed"]) == (2, False)


def test_a_report_this_version_cannot_read_makes_its_node_unknown() -> None:
    good = report("node2")
    assert _checked(good, "node2") is good
    assert _checked(good, "node3") == "an answer from 'node2', not 'node3'"
    assert _checked([], "node2") == "unreadable answer: not a report"
    old = {k: v for k, v in good.items() if k not in ("runs", "records")}
    assert _checked(old, "node2") == "unreadable answer: no records, runs (another version of hakeeper?)"
