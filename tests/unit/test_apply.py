"""``hakeeper apply FILE`` and ``hakeeper export``: the configuration as a file, applied in one change or not at all.

What a user relies on: an exported file applied again changes nothing; a dry
run says what would change and changes nothing; a file is applied as ONE change
(one record in ``hakeeper changes``), or refused with one line naming the place
in the file and LifeKeeper's exit code, with the LCD exactly as it was; a
change that concerns another node needs hakeeperd (all or none, as eqv_create);
a concurrent writer cannot make it half-apply.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hakeeper.cli.base import run
from hakeeper.cluster.configsync import ConfigSync, thread_replicator
from hakeeper.comm.paths import PathState
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd, State
from tests.conftest import Cli, Result
from tests.unit.lcd_racers import Racers, agreed
from tests.unit.test_cli_errors import BIN, TRUE, lcd_dump, script, stop_daemon, within
from tests.unit.test_lcd_races import assert_serial, assert_whole, copy_lcd, create, lcd_with, one_after_the_other

OK, SYSCALL, SYNTAX, INTERNAL, EXISTS, ILLEGAL, RANGE, MISSING, REFUSED, COMM = range(10)

yaml = pytest.importorskip("yaml")  # a dependency (pyproject.toml); JSON works without it


def apply(root: Path, text: str, *argv: str, replicated: bool = False, tmp: Path | None = None) -> Result:
    """``hakeeper apply`` of a file holding ``text``, in this process (``replicated``: as inside hakeeperd)."""
    path = (tmp or root.parent) / "config.file"
    path.write_text(text)
    return cli_run(root, "apply", [*argv, str(path)], replicated=replicated)


def cli_run(root: Path, name: str, argv: Sequence[str], *, replicated: bool = False) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = run(name, list(argv), root=str(root), out=out, err=err, replicator=agreed if replicated else None)
    return Result(code, out.getvalue(), err.getvalue())


def doc(**sections: Any) -> str:
    return json.dumps({"version": 1, **sections})


def res(tag: str, app: str = "gen", type: str = "app", **fields: Any) -> dict[str, Any]:
    return {"tag": tag, "app": app, "type": type, **fields}


def changes(root: Path) -> list[tuple[str, dict[str, Any]]]:
    with Lcd.open(root, readonly=True) as lcd:
        return [(c.op, c.args) for c in lcd.changes()]


def assert_refused(before: dict[str, Any], root: Path, result: Result, code: int, *words: str) -> None:
    """Refused: LifeKeeper's code, one line on stderr naming what is wrong, nothing on stdout, the LCD as it was."""
    assert result.code == code, result
    assert result.err.count("\n") == 1 and result.err.startswith("apply: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in result.err, (word, result.err)
    assert result.out == ""
    assert lcd_dump(root) == before, "the LCD changed"


@pytest.fixture
def populated(cli: Cli, root: Path) -> Path:
    """web -> vip, web -> fs; db alone (AUTOMATIC, 30 s); vip extended to node2 (node3 known, unused)."""
    for argv in (
        ["typ_create", "-a", "comm", "-r", "nokit"],
        ["sys_create", "-s", "node2"],
        ["sys_create", "-s", "node3"],
        ["ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-1", "-v", '{"port": 80}'],
        ["ins_create", "-a", "comm", "-r", "nokit", "-t", "vip", "-i", "10.0.0.1", "-I", "INIT_OSU"],
        ["ins_create", "-a", "comm", "-r", "nokit", "-t", "fs", "-i", "/srv", "-l", "N"],
        ["ins_create", "-a", "gen", "-r", "app", "-t", "db", "-i", "db-1", "-s", "AUTOMATIC", "-Q", "30"],
        ["dep_create", "-p", "web", "-c", "vip"],
        ["dep_create", "-p", "web", "-c", "fs"],
    ):
        assert cli(*argv) == Result(OK, "", ""), argv
    with Lcd.open(root) as lcd:  # as hakeeperd records it once node2 agreed
        lcd.create_equivalency("vip", "node2", other_priority=3)
    return root


# ---------------------------------------------------------------------- export -> apply, dry runs, one change


@pytest.mark.parametrize("fmt", ["json", "yaml"])
@pytest.mark.parametrize("prune", [False, True], ids=["plain", "prune"])
def test_an_exported_configuration_applied_again_changes_nothing(populated: Path, fmt: str, prune: bool) -> None:
    exported = cli_run(populated, "export", ["--format", fmt])
    assert (exported.code, exported.err) == (OK, "")
    before = lcd_dump(populated)
    result = apply(populated, exported.out, *(["--prune"] if prune else []))
    assert result == Result(OK, "nothing to change: the LCD holds what the file describes\n", "")
    assert lcd_dump(populated) == before, "no change, not even an empty record in the change log"


def test_export_holds_every_setting_and_no_state(populated: Path) -> None:
    with Lcd.open(populated) as lcd:
        lcd.set_state("db", State.ISP, "running")
    exported = json.loads(cli_run(populated, "export", []).out)
    assert exported["version"] == 1
    db = next(r for r in exported["resources"] if r["tag"] == "db")
    assert db == {"tag": "db", "app": "gen", "type": "app", "id": "db-1", "info": "", "init": "AUTORES_ISP",
                  "switchback": "AUTOMATIC", "quickcheck_interval": 30, "local_recover": True}  # fmt: skip
    assert {"parent": "web", "child": "vip"} in exported["dependencies"]
    assert exported["equivalencies"] == [
        {"tag": "vip", "node": "node1", "priority": 1},
        {"tag": "vip", "node": "node2", "priority": 3},
    ]


def test_a_dry_run_prints_the_plan_and_changes_nothing(populated: Path) -> None:
    before = lcd_dump(populated)
    text = doc(
        resources=[res("web", info={"port": 8080}, init="INIT_OSU"), res("api", id="api-1")],
        dependencies=[{"parent": "api", "child": "web"}],
    )
    result = apply(populated, text, "--dry-run", "--prune", replicated=True)  # vip's removal reaches node2
    assert result.code == OK, result
    assert result.out.splitlines() == [
        "remove dependency web -> fs (not in the file)",
        "remove dependency web -> vip (not in the file)",
        "remove resources db, fs, vip (not in the file)",
        """change web: info '{"port":80}' -> '{"port":8080}'""",
        "change web: init AUTORES_ISP -> INIT_OSU",
        "create resource api (gen/app, id api-1)",
        "create dependency api -> web",
        "dry run, nothing was changed: resources: 3 removed, 2 changed, 1 created; dependencies: 2 removed, 1 created",
    ]
    assert result.err == ""
    assert lcd_dump(populated) == before


def test_a_file_is_applied_as_one_change(populated: Path) -> None:
    text = doc(
        resources=[res("web", info={"port": 8080}, quickcheck_interval=10, local_recover=False, switchback="AUTOMATIC"),
                   res("api", id="api-1", info="plain text", init="INIT_ISP"), res("vip", "comm", "nokit")],
        dependencies=[{"parent": "api", "child": "web"}, {"parent": "web", "child": "vip"}],
    )  # fmt: skip
    seen = len(changes(populated))
    result = apply(populated, text)
    assert result.code == OK, result
    assert result.out.splitlines()[-1].startswith(f"applied as one change (seq {seen + 1}): ")
    log = changes(populated)
    assert len(log) == seen + 1
    op, args = log[-1]
    assert op == "apply" and args["origin"] == "node1"
    assert [s["op"] for s in args["steps"]] == [
        "set_info", "set_switchback", "set_check_interval", "set_local_recover", "create_resource", "create_dependency"
    ]  # fmt: skip
    with Lcd.open(populated) as lcd:
        web, api = lcd.resource("web"), lcd.resource("api")
        wanted = ({"port": 8080}, 10, False, "AUTOMATIC")
        assert (web.info, web.check_interval, web.local_recover, web.switchback.name) == wanted
        assert (api.id, api.info, api.init.name, api.state, api.reason) == ("api-1", "plain text", "INIT_ISP",
                                                                            State.OSU, "created")  # fmt: skip
        assert ("api", "web") in lcd.edges()
        assert {"db", "fs"} <= {r.tag for r in lcd.resources()}, "without --prune, what the file leaves out stays"
    listed = cli_run(populated, "changes", ["--since", str(seen), "-f", " "]).out.splitlines()
    assert len(listed) == 1 and " apply " in listed[0]


def test_prune_removes_what_the_file_does_not_name_in_the_same_change(populated: Path) -> None:
    seen = len(changes(populated))
    text = doc(resources=[res("web"), res("vip", "comm", "nokit")], dependencies=[{"parent": "web", "child": "vip"}])
    result = apply(populated, text, "--prune", replicated=True)
    assert result.code == OK, result
    assert len(changes(populated)) == seen + 1
    with Lcd.open(populated) as lcd:
        assert [r.tag for r in lcd.resources()] == ["vip", "web"]
        assert lcd.edges() == [("web", "vip")]
        assert lcd.equivalency_rows() == [], "vip's equivalencies are not in the file"


def test_stdin_and_yaml(root: Path, cli: Cli) -> None:
    text = "version: 1\nresources:\n  - tag: web\n    app: gen\n    type: app\n    info: {port: 80}\n"
    done = subprocess.run([BIN / "hakeeper", "--root", str(root), "apply", "-"], input=text.encode(),
                          capture_output=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == OK, done.stderr
    assert done.stdout.decode().splitlines()[0] == "create resource web (gen/app, id web)"
    with Lcd.open(root) as lcd:
        assert lcd.resource("web").info == {"port": 80}


# ---------------------------------------------------------------------- refused: where, why, and nothing changed

SCRIPT = TRUE
REFUSALS: list[tuple[str, str, int, str]] = [
    # the file
    ("empty", "", ILLEGAL, "empty"),
    ("not JSON", '{"version": 1,', ILLEGAL, "not valid JSON: line 1"),
    ("not YAML", "version: 1\nresources: [\n", ILLEGAL, "not valid YAML"),
    ("YAML alias", "version: 1\nresources:\n  - &a {tag: x, app: gen, type: app}\n  - *a\n", ILLEGAL, "alias"),
    ("two YAML documents", "version: 1\n---\nversion: 1\n", ILLEGAL, "2 YAML documents"),
    ("a list", "[]", ILLEGAL, "the file: expected a mapping"),
    ("no version", "{}", ILLEGAL, "has no 'version'"),
    ("version 2", doc(version=2), ILLEGAL, "version: 2"),
    ("unknown section", doc(nodes=[]), ILLEGAL, "unknown key 'nodes'"),
    ("section not a list", doc(resources={}), ILLEGAL, "resources: expected a list"),
    ("key twice", '{"version": 1, "resources": [{"tag": "x", "tag": "y", "app": "gen", "type": "app"}]}', EXISTS,
     "resources[0]: key 'tag' is given twice"),
    # resources
    ("unknown key", doc(resources=[res("x", tagg="y")]),
     ILLEGAL, "resources[0]: unknown key 'tagg' (did you mean 'tag'?)"),
    ("state", doc(resources=[res("x", state="ISP")]), ILLEGAL, "resources[0].state: a resource's state is what runs"),
    ("no app", doc(resources=[{"tag": "x", "type": "app"}]), ILLEGAL, "resources[0]: app is missing"),
    ("no type", doc(resources=[res("ok"), {"tag": "x", "app": "gen"}]), ILLEGAL, "resources[1]: type is missing"),
    ("tag a number", doc(resources=[{"tag": 12, "app": "gen", "type": "app"}]), ILLEGAL,
     "resources[0].tag: expected a string, not a number (12)"),
    ("tag with a space", doc(resources=[res("a b")]), ILLEGAL, "resources[0].tag: tag 'a b'"),
    ("control char in info", doc(resources=[res("x", info="a\x01b")]), ILLEGAL, "resources[0].info: info holds"),
    ("control char in id", doc(resources=[res("x", id="a\nb")]), ILLEGAL, "resources[0].id: id"),
    ("control char in params", doc(resources=[res("x", params={"restore": SCRIPT, "remove": SCRIPT, "info": "a\tb"})]),
     ILLEGAL, "resources[0].params: parameter info holds a control character"),
    ("tag twice", doc(resources=[res("x"), res("x", id="y")]), EXISTS, "resources[1].tag: 'x' is given twice"),
    ("id twice", doc(resources=[res("x"), res("y", id="x")]), EXISTS, "resources[1].id: id 'x' is given twice"),
    ("bad init", doc(resources=[res("x", init="SOMETIMES")]), ILLEGAL, "resources[0].init: 'SOMETIMES' is not one of"),
    ("lower-case switchback", doc(resources=[res("x", switchback="automatic")]), ILLEGAL, "resources[0].switchback"),
    ("interval too big", doc(resources=[res("x", quickcheck_interval=86401)]),
     RANGE, "resources[0].quickcheck_interval"),
    ("interval a boolean", doc(resources=[res("x", quickcheck_interval=True)]), ILLEGAL, "expected a whole number"),
    ("local_recover Y", doc(resources=[res("x", local_recover="Y")]),
     ILLEGAL, "resources[0].local_recover: expected true"),
    ("info and params", doc(resources=[res("x", info="", params={})]), ILLEGAL, "not both"),
    ("info NaN", '{"version": 1, "resources": [{"tag": "x", "app": "gen", "type": "app", "info": NaN}]}',
     ILLEGAL, "NaN"),
    ("info a YAML date", "version: 1\nresources:\n  - {tag: x, app: gen, type: app, info: {d: 2024-01-01}}\n",
     ILLEGAL, "resources[0].info.d: a date cannot be stored as JSON"),
    ("unknown type", doc(resources=[res("x", "gen", "nosuch")]), MISSING, "resources[0] (x): no resource type"),
    ("other type than the LCD's", doc(resources=[res("web", "comm", "nokit")]), ILLEGAL,
     "resources[0].type: 'web' exists as gen/app"),
    ("other id than the LCD's", doc(resources=[res("web", id="web-2")]),
     ILLEGAL, "resources[0].id: 'web' exists with id"),
    ("id of another resource", doc(resources=[res("new", id="db-1")]), EXISTS, "resources[0] (new): id 'db-1'"),
    # kit parameters, checked by the kit
    ("no kit", doc(resources=[res("x", "comm", "nokit", params={})]),
     MISSING, "resources[0].type: no kit for comm/nokit"),
    ("unknown parameter", doc(resources=[res("x", params={"restore": SCRIPT, "remove": SCRIPT, "bogus": 1})]), ILLEGAL,
     "resources[0].params: gen/app has no parameter 'bogus'"),
    ("missing parameter", doc(resources=[res("x", params={"restore": SCRIPT})]), ILLEGAL,
     "resources[0].params: gen/app needs parameter remove="),
    ("no such script", doc(resources=[res("x", params={"restore": "/nonexistent", "remove": SCRIPT})]), ILLEGAL,
     "resources[0].params: parameter restore=/nonexistent: no such file"),
    ("timeout out of range", doc(resources=[res("x", params={"restore": SCRIPT, "remove": SCRIPT, "timeout": 0})]),
     RANGE, "resources[0].params: parameter timeout=0 is outside 1..3600"),
    ("parameter a list", doc(resources=[res("x", params={"restore": [SCRIPT]})]),
     ILLEGAL, "resources[0].params.restore"),
    # dependencies
    ("cycle in the file", doc(resources=[res("p"), res("q")], dependencies=[{"parent": "p", "child": "q"},
                                                                           {"parent": "q", "child": "p"}]),
     ILLEGAL, "dependencies: p, q depend on each other in a cycle"),
    ("cycle with the LCD", doc(dependencies=[{"parent": "vip", "child": "web"}]), ILLEGAL,
     "dependencies[0]: 'web' already depends on 'vip': the dependency would make a cycle"),
    ("depends on itself", doc(dependencies=[{"parent": "web", "child": "web"}]), ILLEGAL, "cannot depend on itself"),
    ("dependency twice", doc(dependencies=[{"parent": "db", "child": "fs"}] * 2), EXISTS, "dependencies[1]"),
    ("unknown child", doc(dependencies=[{"parent": "db", "child": "nosuch"}]), MISSING,
     "dependencies[0]: no resource tagged 'nosuch'"),
    ("no child", doc(dependencies=[{"parent": "db"}]), ILLEGAL, "dependencies[0]: child is missing"),
    # equivalencies
    ("unknown node", doc(equivalencies=[{"tag": "db", "node": "node9", "priority": 2}]), MISSING,
     "equivalencies[0] (db on node9): no node named 'node9'"),
    ("priority 0", doc(equivalencies=[{"tag": "db", "node": "node2", "priority": 0}]), RANGE,
     "equivalencies[0].priority: priority 0 is outside 1..1024"),
    ("priority twice", doc(equivalencies=[{"tag": "db", "node": "node2", "priority": 2},
                                          {"tag": "db", "node": "node3", "priority": 2}]), EXISTS,
     "equivalencies[1].priority: 'db' has priority 2 on two nodes"),
    ("priority of this node", doc(equivalencies=[{"tag": "db", "node": "node2", "priority": 1},
                                                 {"tag": "db", "node": "node1", "priority": 1}]), EXISTS, "priority 1"),
    ("this node alone", doc(equivalencies=[{"tag": "db", "node": "node1", "priority": 1}]), ILLEGAL,
     "equivalencies[0]: 'db' on node1 alone is no equivalency"),
    ("unknown tag", doc(equivalencies=[{"tag": "nosuch", "node": "node2", "priority": 2}]), MISSING,
     "no resource tagged 'nosuch'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "code", "said"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("dry", [False, True], ids=["apply", "dry run"])
def test_a_refused_file_changes_nothing_and_says_where(
    populated: Path, text: str, code: int, said: str, dry: bool
) -> None:
    before = lcd_dump(populated)
    result = apply(populated, text, *(["-n"] if dry else []), replicated=True)  # node2 would agree
    assert_refused(before, populated, result, code, said)
    assert not (populated / "subsys" / "gen" / "resources" / "app" / "instances" / "x").exists()


def test_a_kit_s_copies_are_discarded_when_the_change_is_refused(populated: Path, tmp_path: Path) -> None:
    """gen/app copies its scripts before the transaction; a later step refused takes them away again."""
    params = {"restore": SCRIPT, "remove": SCRIPT}
    before = lcd_dump(populated)
    text = doc(resources=[res("app1", params=params), res("app2", params=params)],
               dependencies=[{"parent": "app2", "child": "nosuch"}])  # fmt: skip
    assert_refused(before, populated, apply(populated, text), MISSING, "dependencies[0]", "'nosuch'")
    assert not (populated / "subsys" / "gen" / "resources" / "app" / "instances" / "app1").exists()
    assert not (populated / "subsys" / "gen" / "resources" / "app" / "instances" / "app2").exists()


def test_prune_refuses_a_resource_in_service_and_one_the_file_still_names(populated: Path) -> None:
    with Lcd.open(populated) as lcd:
        lcd.set_state("db", State.ISP, "running")
    before = lcd_dump(populated)
    keep = [res("web"), res("vip", "comm", "nokit"), res("fs", "comm", "nokit")]
    result = apply(populated, doc(resources=keep), "--prune")
    assert_refused(before, populated, result, REFUSED, "'db' is not in the file but is ISP here")
    result = apply(populated, doc(resources=[*keep, res("db")], dependencies=[{"parent": "db", "child": "gone"}]),
                   "--prune")  # fmt: skip
    assert_refused(before, populated, result, MISSING, "'gone'")
    result = apply(populated, doc(resources=[res("db"), res("web")], dependencies=[{"parent": "web", "child": "vip"}]),
                   "--prune")  # fmt: skip
    assert_refused(before, populated, result, ILLEGAL, "dependencies[0].child: 'vip' is not among the file's resources")


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["/proc/nonexistent/config.yaml"], MISSING, "there is no file"),
        (["/proc"], ILLEGAL, "is a directory"),
        ([TRUE], ILLEGAL, "is not UTF-8 text"),
        ([], SYNTAX, "name the FILE"),
    ],
    ids=["missing", "directory", "binary", "none"],
)
def test_a_file_that_cannot_be_read(populated: Path, argv: list[str], code: int, said: str) -> None:
    before = lcd_dump(populated)
    assert_refused(before, populated, cli_run(populated, "apply", argv), code, said)


# ---------------------------------------------------------------------- kits, delete actions, size


def test_kit_parameters_create_a_resource_as_hakeeper_create_does(root: Path, cli: Cli) -> None:
    text = doc(resources=[res("web", params={"restore": SCRIPT, "remove": SCRIPT, "timeout": 30}, init="INIT_OSU")])
    assert apply(root, text).code == OK
    made = root / "subsys" / "gen" / "resources" / "app" / "instances" / "web" / "actions"
    assert sorted(p.name for p in made.iterdir()) == ["remove", "restore"]
    with Lcd.open(root) as lcd:
        web = lcd.resource("web")
    assert (web.id, web.info["timeout"], web.init.name) == ("web", 30, "INIT_OSU")
    # Parameters make a resource; applied again they change nothing (the kit's info is not compared).
    assert apply(root, text).out == "nothing to change: the LCD holds what the file describes\n"
    # --prune runs the removed resource's delete action: gen/app's copies go.
    result = apply(root, doc(resources=[]), "--prune")
    assert result.code == OK and result.err == "", result
    assert not made.exists()


def test_a_thousand_resources_in_one_change(root: Path, cli: Cli, tmp_path: Path) -> None:
    resources = [res(f"r{i:04}", info={"n": i}) for i in range(1000)]
    dependencies = [{"parent": f"r{i:04}", "child": f"r{i + 1:04}"} for i in range(0, 999, 2)]
    assert cli("flg_create", "-f", "x").code == OK  # the first change registers the kits: a change of its own
    seen = len(changes(root))
    result = apply(root, doc(resources=resources, dependencies=dependencies))
    assert result.code == OK, result.err
    assert result.out.splitlines()[-1].endswith("resources: 1000 created; dependencies: 500 created")
    assert len(changes(root)) == seen + 1
    with Lcd.open(root) as lcd:
        assert len(lcd.resources()) == 1000 and len(lcd.edges()) == 500
    exported = cli_run(root, "export", ["--format", "yaml"]).out
    assert apply(root, exported, "--prune").out.startswith("nothing to change")


# ---------------------------------------------------------------------- other nodes


def test_an_equivalency_needs_hakeeperd_and_changes_nothing_without_it(populated: Path) -> None:
    """As eqv_create: refused with exit 9 after every check, and no LCD changes."""
    before = lcd_dump(populated)
    text = doc(resources=[res("new")], equivalencies=[{"tag": "db", "node": "node2", "priority": 2}])
    result = apply(populated, text)
    assert_refused(before, populated, result, COMM, "node2", "hakeeperd", "nothing was changed")
    # ...and a change to a resource extended to node2 as well; a local one alone goes through.
    result = apply(populated, doc(resources=[res("vip", "comm", "nokit", quickcheck_interval=5)]))
    assert_refused(before, populated, result, COMM, "node2")
    assert apply(populated, doc(resources=[res("db", quickcheck_interval=5)])).code == OK
    # A dry run says what it would do, and that it would be refused.
    dry = apply(populated, text, "-n")
    assert dry.code == COMM and "create equivalency db on node2 (priority 2)" in dry.out


def test_equivalencies_are_made_as_the_file_says(populated: Path) -> None:
    """Created, changed (removed and made again), swapped and pruned, inside hakeeperd (node2 and node3 agree)."""

    def rows() -> list[tuple[str, str, int, str]]:
        with Lcd.open(populated) as lcd:
            return lcd.equivalency_rows()

    eqvs = [
        {"tag": "db", "node": "node2", "priority": 2},
        {"tag": "db", "node": "node3", "priority": 3, "other_tag": "db3"},
    ]
    assert apply(populated, doc(equivalencies=eqvs), replicated=True).code == OK
    assert [r for r in rows() if r[0] == "db"] == [("db", "node1", 1, "db"), ("db", "node2", 2, "db"),
                                                   ("db", "node3", 3, "db3")]  # fmt: skip
    swapped = [{**eqvs[0], "priority": 3}, {**eqvs[1], "priority": 2}, {"tag": "db", "node": "node1", "priority": 7}]
    result = apply(populated, doc(equivalencies=swapped), replicated=True)
    assert result.code == OK, result
    assert [r for r in rows() if r[0] == "db"] == [("db", "node3", 2, "db3"), ("db", "node2", 3, "db"),
                                                   ("db", "node1", 7, "db")]  # fmt: skip
    assert changes(populated)[-1][0] == "apply"
    exported = cli_run(populated, "export", []).out
    assert apply(populated, exported, "--prune", replicated=True).out.startswith("nothing to change")
    result = apply(populated, doc(resources=json.loads(exported)["resources"]), "--prune", replicated=True)
    assert result.code == OK, result
    assert rows() == [], "--prune: no equivalency is named"


def test_an_apply_reaches_only_the_nodes_its_steps_concern(tmp_path: Path) -> None:
    """Through the two-phase commit: node2 prepares and commits only the steps about what it holds."""
    one, two = tmp_path / "node1", tmp_path / "node2"
    for path, me, other in ((one, "node1", "node2"), (two, "node2", "node1")):
        with Lcd.open(path, node=me) as lcd:
            lcd.create_node(other)
            lcd.create_resource("web", "web-1", "gen", "app", ensure_type=True)
            lcd.create_equivalency("web", "node2", node="node1")  # the same rows on both
    a, b = Lcd.open(one), Lcd.open(two)
    text = doc(resources=[res("web", info="v2"), res("local-only")])
    config = tmp_path / "config.json"

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        to_b = ConfigSync(b, send=no_send, membership=lambda n: PathState.ALIVE)

        async def send(node: str, op: str, args: dict[str, Any]) -> Any:
            return await getattr(to_b, f"on_{op}")(Peer("node1", "198.18.0.11"), args)

        sync = ConfigSync(a, send=send, membership=lambda n: PathState.ALIVE)

        def apply_in_a_worker_thread(content: str) -> Result:
            config.write_text(content)
            out, err = io.StringIO(), io.StringIO()
            code = run("apply", [str(config)], root=str(one), out=out, err=err,
                       replicator=lambda lcd: thread_replicator(sync, loop, lcd, "root"))  # fmt: skip
            return Result(code, out.getvalue(), err.getvalue())

        applied = await asyncio.to_thread(apply_in_a_worker_thread, text)
        assert applied.code == OK, applied
        assert a.resource("web").info == "v2" and b.resource("web").info == "v2"
        assert {r.tag for r in b.resources()} == {"web"}, "a new local resource stays on node1"
        change = b.changes()[-1]
        assert change.op == "apply" and "via node1#" in change.actor
        assert [(s["op"], s["nodes"]) for s in change.args["steps"]] == [("set_info", ["node2"]),
                                                                         ("create_resource", [])]  # fmt: skip
        # node2 lacks what a new dependency needs there: refused everywhere, and nothing changed.
        seen = (len(a.changes()), len(b.changes()))
        text2 = doc(resources=[res("web", info="v3"), res("extra")], dependencies=[{"parent": "extra", "child": "web"}])
        refused = await asyncio.to_thread(apply_in_a_worker_thread, text2)
        assert refused.code == COMM and "apply refused by node node2" in refused.err, refused
        assert "no resource tagged 'extra'" in refused.err
        assert a.resource("web").info == "v2" and b.resource("web").info == "v2"
        assert "extra" not in {r.tag for r in a.resources()}
        assert (len(a.changes()), len(b.changes())) == seen

    asyncio.run(scenario())
    a.close()
    b.close()


async def no_send(node: str, op: str, args: dict[str, Any]) -> Any:
    raise AssertionError("node2 sends nothing here")


# ---------------------------------------------------------------------- hakeeperd, and writers at the same time


def test_through_hakeeperd_the_file_s_content_travels_with_the_command(populated: Path) -> None:
    """hakeeperd is the only writer: the file is read here (standard input even) and its content sent."""
    assert script("lkstart", state_dir=populated).code == OK
    try:
        text = doc(resources=[res("api", id="api-1")], dependencies=[{"parent": "api", "child": "db"}])
        done = within(60, lambda: subprocess.run(
            [BIN / "hakeeper", "--root", str(populated), "apply", "-"], input=text.encode(), capture_output=True,
            timeout=60, check=False))  # fmt: skip
        assert done.returncode == OK, done.stderr
        assert done.stdout.decode().splitlines()[-1].startswith("applied as one change")
        refused = within(60, lambda: script("hakeeper", "--root", str(populated), "apply", "/proc"))
        assert refused.code == ILLEGAL and refused.err.startswith("hakeeper apply: '/proc' is a directory")
        exported = within(60, lambda: script("hakeeper", "--root", str(populated), "export"))
        assert "api-1" in exported.out
    finally:
        stop_daemon(populated)
    with Lcd.open(populated) as lcd:
        assert ("api", "db") in lcd.edges()
        assert lcd.changes()[-1].op == "apply"


@pytest.fixture(scope="module")
def racers() -> Any:
    pair = Racers(2)
    yield pair
    pair.close()


RACES = 40
RACE_FILE = doc(resources=[res("p", "x", "nokit"), res("r", "x", "nokit", id="r-1"), res("q", "x", "nokit",
                                                                                    quickcheck_interval=60)],
                dependencies=[{"parent": "p", "child": "q"}, {"parent": "r", "child": "q"}])  # fmt: skip
RACE_PAIRS = {
    # Each passes the cycle check alone; together they close a cycle: one of them exits 5.
    "dep_create closing a cycle": ([], ["dep_create", "-p", "q", "-c", "p"], {(OK, ILLEGAL), (ILLEGAL, OK)}),
    # What apply makes depend on q goes with q, or q is created again for it.
    "ins_remove of a child": ([], ["ins_remove", "-t", "q"], {(OK, OK)}),
    # --prune removes q, or the new dependency on it first: never a dependency on what is gone.
    "dep_create on what --prune removes": (
        ["--prune"],
        ["dep_create", "-p", "s", "-c", "q"],
        {(OK, MISSING), (OK, OK)},
    ),
}


@pytest.mark.parametrize("name", list(RACE_PAIRS))
def test_apply_and_a_conflicting_command_at_once_give_one_order_s_result(
    tmp_path: Path, racers: Racers, name: str
) -> None:
    """The apply decides and checks in its own transaction: against a conflicting command from another process,
    the LCD is whole and as one of the two orders leaves it, exit codes and change log included."""
    flags, other, codes = RACE_PAIRS[name]
    config = tmp_path / "config.json"
    text = json.loads(RACE_FILE)
    if flags:  # q is not named: --prune removes it
        text["resources"] = [r for r in text["resources"] if r["tag"] != "q"] + [res("s", "x", "nokit")]
        text["dependencies"] = []
    config.write_text(json.dumps(text))
    commands = (["apply", *flags, str(config)], other)
    template = lcd_with(tmp_path / "template", [create("p"), create("q"), create("s")])
    serial = one_after_the_other(template, commands, tmp_path)
    assert {o.codes for o in serial} == codes
    for round in range(1, RACES + 1):
        race = copy_lcd(template, tmp_path / "race")
        results = racers.race(str(race), commands)
        assert_whole(race, f"{name}, round {round}")
        assert_serial(race, commands, results, serial, f"{name}, round {round}")
    shutil.rmtree(tmp_path / "race")
