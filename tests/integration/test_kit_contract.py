"""One contract suite for every kit: OCF semantics, with real scripts, real processes and a real OCF agent.

Every kit is run through the same tests (the ``case`` fixture yields one
:class:`KitCase` per kit):

* gen/app, with shell scripts that manage a real daemon (``sleep 1000``, pid file);
* the script kit, with a LifeKeeper-layout directory in the state directory and
  app-wide prerestore / postrestore scripts;
* the OCF kit, with Debian's ``ocf:heartbeat:Dummy`` (resource-agents) and, for
  the timeout, a tiny agent ``ocf:hktest:Slow`` in a temporary OCF root.

The contract (CONVENTIONS.md, "Kits follow OCF semantics"): restoring what runs
succeeds; removing what is stopped succeeds; quick_check has three answers and
says STOPPED for what never ran; a bad parameter is a configuration error; and
when the engine's timeout runs out, the action's whole process group is gone.
A kit configured without a quickCheck script cannot look, so it answers from
the resource's state: stopped out of service, running in service.

The scripts the kits run are in ``kit_fixtures/`` (see its README); every
process they start is recorded in a pid file and killed by PID at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from hakeeper.db import Lcd, Resource, State
from hakeeper.errors import IllegalArgument
from hakeeper.kits.actions import app_actions_dir, type_actions_dir
from hakeeper.kits.base import Health, Kit, KitContext, Policy
from hakeeper.kits.gen_app import GenAppKit
from hakeeper.kits.ocf import DEFAULT_OCF_ROOT
from hakeeper.kits.registry import Kits
from hakeeper.kits.script import ScriptKit
from hakeeper.recovery.engine import call

FIXTURES = Path(__file__).with_name("kit_fixtures")
DUMMY = Path(DEFAULT_OCF_ROOT) / "resource.d" / "heartbeat" / "Dummy"
GUARD = 20.0  # no single kit call of these tests may take longer: a hang fails the test instead of CI
SHORT = 1.0  # the action timeout of the "slow" variants
GONE_WITHIN = 2.0  # how long a killed process group may take to vanish

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    """Run one kit coroutine to completion, failing the test if it hangs."""

    async def guarded() -> T:
        async with asyncio.timeout(GUARD):
            return await aw

    return asyncio.run(guarded())


def install(name: str, target: Path) -> Path:
    """Copy the fixture script ``name`` to ``target``, executable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / name, target)
    target.chmod(0o755)
    return target


# --- processes ---------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and process group of ``pid``, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1]), int(fields[2])


def gone(pid: int) -> bool:
    """Is ``pid`` gone? A zombie counts as gone unless it is our own child (then we failed to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = _stat(pid)
    if stat is None:
        return True
    state, ppid, _ = stat
    return state == "Z" and ppid != os.getpid()


def group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that are not gone."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[2] == pgid and not gone(int(entry.name)):
                members.append(int(entry.name))
    return members


def alive(pid: int) -> bool:
    return not gone(pid)


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def kill_recorded(directory: Path, tmp_path: Path) -> None:
    """SIGKILL, by PID, every process recorded in the pid files of ``directory`` that is still one of ours."""
    for path in directory.glob("*"):
        if not path.is_file():
            continue
        try:
            pids = read_pids(path)
        except ValueError:
            continue
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if cmdline.startswith(b"sleep\0") or str(tmp_path).encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --- the kits under test -----------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A resource and the kit that serves it."""

    kit: Kit
    resource: Resource


@dataclass(frozen=True)
class Slow:
    """A resource whose restore never finishes; its script writes ``<prefix>.pid`` and ``<prefix>.child``."""

    subject: Subject
    prefix: Path


class KitCase(ABC):
    """One kit under the contract: makes working, broken and slow resources of it."""

    name: str

    def __init__(self, lcd: Lcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lcd = lcd
        self.root = lcd.path.parent
        self.ctx = KitContext(self.root, lcd.local_node)
        self.kits = Kits(self.ctx)
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.run_dir = tmp_path / "run"  # pid files and state files of what the resources start
        self.run_dir.mkdir()

    @property
    @abstractmethod
    def kit(self) -> Kit:
        """The kit of the working resources."""

    @abstractmethod
    def params(self, tag: str) -> dict[str, str]:
        """Creation parameters that work."""

    @abstractmethod
    def running(self, resource: Resource) -> str | None:
        """What shows, outside the kit, that ``resource`` runs (its daemon's pids, its state file), or None."""

    @abstractmethod
    def broken(self) -> Subject:
        """A resource whose parameters cannot work here: validate must say CONFIG."""

    @abstractmethod
    def slow(self) -> Slow:
        """A resource whose restore never finishes, with a restore timeout of :data:`SHORT`."""

    def make(self, tag: str, params: dict[str, str], kit: Kit | None = None) -> Subject:
        """Create a resource as ``hakeeper create`` does: check the parameters, let the kit create, record it."""
        kit = kit or self.kit
        values = kit.check_params(params)
        created = kit.create(tag, values, None)
        resource = self.lcd.create_resource(
            tag, created.id, kit.meta.app, kit.meta.type, info=created.info, ensure_type=True
        )
        return Subject(kit, resource)

    def working(self, tag: str = "svc") -> Subject:
        return self.make(tag, self.params(tag))


class DaemonCase(KitCase):
    """Kits whose resources run ``kit_fixtures/daemon-*``: a daemon whose pid file HAKEEPER_INFO names."""

    def pidfile(self, tag: str) -> Path:
        return self.run_dir / f"{tag}.pidfile"

    @abstractmethod
    def without_quick_check(self, tag: str) -> Subject:
        """A working resource of a kit configured without a quickCheck script."""

    def running(self, resource: Resource) -> str | None:
        started = self.run_dir / f"{resource.tag}.pidfile.all"  # every daemon restore ever started
        pids = [pid for pid in read_pids(started) if alive(pid)]
        return f"daemon pids {pids}" if pids else None


class GenAppCase(DaemonCase):
    name = "gen/app"

    def __init__(self, lcd: Lcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(lcd, tmp_path, monkeypatch)
        self.scripts = tmp_path / "scripts"  # the administrator's originals, copied at creation
        for name in ("daemon-restore", "daemon-remove", "daemon-quickCheck", "slow-restore"):
            install(name, self.scripts / name)

    @property
    def kit(self) -> Kit:
        return self.kits.get("gen", "app")

    def params(self, tag: str) -> dict[str, str]:
        return {
            "restore": str(self.scripts / "daemon-restore"),
            "remove": str(self.scripts / "daemon-remove"),
            "quickCheck": str(self.scripts / "daemon-quickCheck"),
            "info": str(self.pidfile(tag)),
            "timeout": "20",
            "check_timeout": "20",
        }

    def without_quick_check(self, tag: str) -> Subject:
        return self.make(tag, {k: v for k, v in self.params(tag).items() if k != "quickCheck"})

    def broken(self) -> Subject:
        subject = self.working("broken")
        kit = subject.kit
        assert isinstance(kit, GenAppKit)
        (kit.instance_dir("broken") / "remove").unlink()  # the copied script is gone
        return subject

    def slow(self) -> Slow:
        prefix = self.run_dir / "slow"
        params = self.params("slow") | {"restore": str(self.scripts / "slow-restore"), "info": str(prefix)}
        return Slow(self.make("slow", params | {"timeout": str(int(SHORT))}), prefix)


class ShortScriptKit(ScriptKit):
    """A script kit whose restore may take :data:`SHORT` seconds."""

    def timeout(self, action: str, resource: Resource) -> float:
        return SHORT if action == "restore" else super().timeout(action, resource)


class ScriptCase(DaemonCase):
    name = "script"
    app = "hkapp"

    def __init__(self, lcd: Lcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(lcd, tmp_path, monkeypatch)
        daemon = type_actions_dir(self.root, self.app, "daemon")
        for name in ("restore", "remove", "quickCheck"):
            install(f"daemon-{name}", daemon / name)
        broken = type_actions_dir(self.root, self.app, "noremove")  # no remove script
        install("daemon-restore", broken / "restore")
        install("daemon-quickCheck", broken / "quickCheck")
        nocheck = type_actions_dir(self.root, self.app, "nocheck")  # no quickCheck script
        install("daemon-restore", nocheck / "restore")
        install("daemon-remove", nocheck / "remove")
        slow = type_actions_dir(self.root, self.app, "slow")
        install("slow-restore", slow / "restore")
        install("daemon-remove", slow / "remove")
        for name in ("prerestore", "postrestore"):  # app-wide, around every restore of the app's types
            install("app-log", app_actions_dir(self.root, self.app) / name)

    @property
    def kit(self) -> Kit:
        return self.kits.get(self.app, "daemon")  # found as a script kit by the registry

    def params(self, tag: str) -> dict[str, str]:
        return {"info": str(self.pidfile(tag))}

    def without_quick_check(self, tag: str) -> Subject:
        return self.make(tag, self.params(tag), self.kits.get(self.app, "nocheck"))

    def broken(self) -> Subject:
        return self.make("broken", self.params("broken"), self.kits.get(self.app, "noremove"))

    def slow(self) -> Slow:
        prefix = self.run_dir / "slow"
        return Slow(self.make("slow", {"info": str(prefix)}, ShortScriptKit(self.ctx, self.app, "slow")), prefix)

    def actions_log(self) -> list[str]:
        path = self.root / "actions.log"
        return path.read_text().splitlines() if path.exists() else []


class OcfCase(KitCase):
    name = "ocf"

    def __init__(self, lcd: Lcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        if not os.access(DUMMY, os.X_OK):
            pytest.skip(f"{DUMMY} missing: install Debian's resource-agents package (apt-get install resource-agents)")
        super().__init__(lcd, tmp_path, monkeypatch)

    @property
    def kit(self) -> Kit:
        return self.kits.get("ocf", "ra")

    def state_file(self, tag: str) -> Path:
        return self.run_dir / f"{tag}.state"

    def params(self, tag: str) -> dict[str, str]:
        return {"agent": "ocf:heartbeat:Dummy", "state": str(self.state_file(tag))}

    def running(self, resource: Resource) -> str | None:
        path = self.state_file(resource.tag)
        return f"state file {path}" if path.exists() else None

    def broken(self) -> Subject:
        return self.make("broken", {"agent": "ocf:heartbeat:Dummy", "state": "/nonexistent-dir/x"})

    def slow(self) -> Slow:
        ocf_root = self.tmp_path / "ocf"
        install("ocf/Slow", ocf_root / "resource.d" / "hktest" / "Slow")
        self.monkeypatch.setenv("HAKEEPER_OCF_ROOT", str(ocf_root))
        prefix = self.run_dir / "slow"
        return Slow(self.make("slow", {"agent": "ocf:hktest:Slow", "pidprefix": str(prefix)}), prefix)


CASES: dict[str, type[KitCase]] = {"gen-app": GenAppCase, "script": ScriptCase, "ocf-dummy": OcfCase}


@pytest.fixture(params=list(CASES))
def case(
    request: pytest.FixtureRequest, lcd: Lcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KitCase]:
    kit_case = CASES[request.param](lcd, tmp_path, monkeypatch)
    try:
        yield kit_case
    finally:
        kill_recorded(kit_case.run_dir, tmp_path)


@pytest.fixture
def gen_app(lcd: Lcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GenAppCase]:
    kit_case = GenAppCase(lcd, tmp_path, monkeypatch)
    try:
        yield kit_case
    finally:
        kill_recorded(kit_case.run_dir, tmp_path)


@pytest.fixture
def script_case(lcd: Lcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptCase]:
    kit_case = ScriptCase(lcd, tmp_path, monkeypatch)
    try:
        yield kit_case
    finally:
        kill_recorded(kit_case.run_dir, tmp_path)


# --- the contract, for every kit ---------------------------------------------------------------


def test_restoring_what_runs_succeeds_and_starts_nothing_new(case: KitCase) -> None:
    subject = case.working()
    kit, resource = subject.kit, subject.resource
    first = run(kit.restore(resource))
    assert first.ok, first.message
    running = case.running(resource)
    assert running is not None, f"{case.name}: restore succeeded but nothing runs"

    second = run(kit.restore(resource))

    assert second.ok, f"{case.name}: restoring what runs failed: {second.message}"
    assert case.running(resource) == running, f"{case.name}: the second restore started it again"
    check = run(kit.quick_check(resource))
    assert check.health is Health.RUNNING, check.message


def test_removing_what_is_stopped_succeeds_and_it_is_stopped_not_failed(case: KitCase) -> None:
    subject = case.working()
    kit, resource = subject.kit, subject.resource
    assert run(kit.restore(resource)).ok
    assert case.running(resource) is not None

    first = run(kit.remove(resource))
    second = run(kit.remove(resource))

    assert first.ok, first.message
    assert second.ok, f"{case.name}: removing what is stopped failed: {second.message}"
    assert case.running(resource) is None, f"{case.name}: remove succeeded but {case.running(resource)} still run"
    check = run(kit.quick_check(resource))
    assert check.health is Health.STOPPED, f"{case.name}: quick_check after remove: {check}"


def test_quick_check_of_what_never_ran_says_stopped(case: KitCase) -> None:
    subject = case.working()

    check = run(subject.kit.quick_check(subject.resource))

    assert case.running(subject.resource) is None
    assert check.health is Health.STOPPED, f"{case.name}: quick_check of a resource never started: {check}"
    assert not check.ok


def test_unknown_parameter_is_refused_by_name(case: KitCase) -> None:
    params = case.params("svc") | {"no_such_param": "1"}

    with pytest.raises(IllegalArgument, match="no_such_param"):
        case.kit.check_params(params)


def test_parameters_that_cannot_work_are_a_configuration_error(case: KitCase) -> None:
    good = case.working()
    assert run(good.kit.validate(good.resource)).ok, "validate refuses working parameters"
    bad = case.broken()

    result = run(bad.kit.validate(bad.resource))

    assert not result.ok, f"{case.name}: validate accepts parameters that cannot work"
    assert result.policy is Policy.CONFIG, f"{case.name}: {result.message} asks for {result.policy}, not CONFIG"


def test_timeout_kills_the_action_s_whole_process_group(case: KitCase) -> None:
    slow = case.slow()
    kit, resource = slow.subject.kit, slow.subject.resource
    assert kit.timeout("restore", resource) == SHORT

    result = run(call(kit, "restore", resource))

    assert not result.ok
    assert "timed out" in result.message, result.message
    shell, child = read_pids(Path(f"{slow.prefix}.pid")), read_pids(Path(f"{slow.prefix}.child"))
    assert shell and child, f"{case.name}: the slow restore did not record its pids within {SHORT} s"
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline and (alive(shell[0]) or alive(child[0]) or group_members(shell[0])):
        time.sleep(0.05)
    assert gone(shell[0]), f"{case.name}: the timed-out restore script (pid {shell[0]}) still runs"
    assert gone(child[0]), f"{case.name}: the timed-out restore's child (pid {child[0]}) still runs"
    assert group_members(shell[0]) == [], f"{case.name}: process group {shell[0]} is not gone"


@pytest.mark.parametrize("case", ["gen-app", "script"], indirect=True)
def test_without_a_quick_check_script_what_is_out_of_service_is_stopped(case: KitCase, lcd: Lcd) -> None:
    """No quickCheck script: the kit cannot look, so it answers from the state (healthy while in service)."""
    assert isinstance(case, DaemonCase)
    subject = case.without_quick_check("web")
    assert subject.resource.state is State.OSU

    never_started = run(subject.kit.quick_check(subject.resource))

    assert never_started.health is Health.STOPPED, f"{case.name}: out of service, never started: {never_started}"
    assert run(subject.kit.restore(subject.resource)).ok
    lcd.set_state("web", State.ISP, "restored by the test")  # OSU -> ISP, as the engine does after restore
    assert run(subject.kit.quick_check(lcd.resource("web"))).health is Health.RUNNING


# --- gen/app: the script contract, copies, daemons -----------------------------------------------


def test_gen_app_refuses_a_script_that_does_not_exist(gen_app: GenAppCase) -> None:
    params = gen_app.params("svc") | {"remove": str(gen_app.scripts / "no-such-script")}

    with pytest.raises(IllegalArgument, match=r"remove.*no-such-script"):
        gen_app.kit.check_params(params)
    with pytest.raises(IllegalArgument, match="timeout"):
        gen_app.kit.check_params(gen_app.params("svc") | {"timeout": "soon"})


def test_gen_app_scripts_get_the_contract_s_arguments_and_environment(gen_app: GenAppCase, root: Path) -> None:
    record = install("record", gen_app.scripts / "record")
    params = gen_app.params("web") | {"restore": str(record), "quickCheck": str(record), "info": "port=8080 x"}
    subject = gen_app.make("web", params)
    assert subject.resource.id == "web"

    assert run(subject.kit.restore(subject.resource, ("--force",))).ok
    assert run(subject.kit.quick_check(subject.resource)).health is Health.RUNNING

    def recorded(action: str) -> tuple[list[str], dict[str, str]]:
        lines = (root / f"record-{action}.out").read_text().splitlines()
        args = [line.removeprefix("arg=") for line in lines if line.startswith("arg=")]
        env = dict(line.split("=", 1) for line in lines if not line.startswith("arg="))
        return args, env

    args, env = recorded("restore")
    assert args == ["-t", "web", "-i", "web", "--force"]
    expected = {
        "HAKEEPER_ROOT": str(root),
        "LKROOT": str(root),
        "HAKEEPER_TAG": "web",
        "HAKEEPER_ID": "web",
        "HAKEEPER_INFO": "port=8080 x",
        "HAKEEPER_NODE": "node1",
        "HAKEEPER_STATE": subject.resource.state.name,
        "HAKEEPER_ACTION": "restore",
        "cwd": str(root),
    }
    assert {k: env.get(k) for k in expected} == expected
    args, env = recorded("quickCheck")
    assert args == ["-t", "web", "-i", "web"]
    assert env.get("HAKEEPER_ACTION") == "quickCheck"


def test_gen_app_runs_the_scripts_copied_at_creation(gen_app: GenAppCase, root: Path) -> None:
    original = install("record", gen_app.scripts / "record")
    subject = gen_app.make("web", gen_app.params("web") | {"restore": str(original)})
    marker = root / "edited-original-ran"
    original.write_text(f"#!/bin/sh\ntouch {marker}\n")  # the administrator edits the original afterwards

    assert run(subject.kit.restore(subject.resource)).ok

    assert not marker.exists(), "restore ran the edited original, not the copy made at creation"
    assert (root / "record-restore.out").exists(), "the copied restore script did not run"


def test_gen_app_restore_does_not_wait_for_a_daemon_holding_its_stdout(gen_app: GenAppCase) -> None:
    script = install("stdout-daemon-restore", gen_app.scripts / "stdout-daemon-restore")
    pidfile = gen_app.run_dir / "loud.pid"
    params = gen_app.params("loud") | {"restore": str(script), "info": str(pidfile), "timeout": "5"}
    subject = gen_app.make("loud", params)
    try:
        result = run(call(subject.kit, "restore", subject.resource))

        assert result.ok, f"restore waited for the daemon's stdout to close: {result.message}"
        assert "daemon started" in result.output, "the script's output was not kept"
        (pid,) = read_pids(pidfile)
        assert alive(pid), "the daemon started by restore did not survive it"
    finally:
        kill_recorded(gen_app.run_dir, gen_app.tmp_path)


# --- script kit: app-wide pre and post scripts ---------------------------------------------------


def test_script_kit_runs_app_wide_prerestore_and_postrestore_around_restore(script_case: ScriptCase) -> None:
    subject = script_case.working("db")

    assert run(subject.kit.restore(subject.resource)).ok

    assert script_case.actions_log() == ["prerestore db", "restore db", "postrestore db"]


def test_script_kit_does_not_restore_when_prerestore_fails(script_case: ScriptCase, root: Path) -> None:
    prerestore = app_actions_dir(root, script_case.app) / "prerestore"
    prerestore.write_text("#!/bin/sh\necho 'the SAN is not reachable'\nexit 1\n")
    subject = script_case.working("db")

    result = run(subject.kit.restore(subject.resource))

    assert not result.ok
    assert "prerestore" in result.message and "the SAN is not reachable" in result.message, result.message
    assert script_case.actions_log() == [], "restore ran although prerestore failed"
    assert script_case.running(subject.resource) is None
