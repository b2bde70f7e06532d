"""Generic Application kit (``gen/app``): the administrator's own scripts protect any program.

Creation takes ``restore=``, ``remove=`` and optionally ``quickCheck=`` and
``recover=`` (absolute paths of executables) and ``info=`` (a string handed to
the scripts). The scripts are copied into the state directory, as LifeKeeper
does, so editing the originals later does not change a running cluster:
``<root>/subsys/gen/resources/app/instances/<tag>/actions/``. The script
contract (arguments, environment, exit codes) is in :mod:`hakeeper.kits.actions`.
Without a quickCheck script the resource is taken to be healthy while in service.

Extending the resource to another node (``hakeeper extend``) sends the copied
scripts' contents (:meth:`GenAppKit.export`), and that node installs them in its
own state directory the same way (:meth:`GenAppKit.adopt`): byte for byte,
mode 0700, in a staging directory renamed into place.

``hakeeper update -t TAG restore=/new/start timeout=60`` changes scripts and
parameters on every node of the hierarchy at once. New scripts are installed
on every node first, beside the live ones, in ``actions-<version>/`` (the
version is a digest of their contents); then the resource's info, which names
the version, is changed on every node or on none (configsync's two-phase
commit); then each node drops the scripts no info names any more
(:meth:`GenAppKit.settle`). A node that crashes in between keeps scripts that
match its LCD: the info says which directory holds them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hakeeper.db.model import Resource
from hakeeper.errors import IllegalArgument, SystemCallFailed
from hakeeper.kits.actions import executable, run_action_script
from hakeeper.kits.base import (
    Created,
    Kit,
    KitMeta,
    Param,
    Policy,
    Result,
    Revision,
    install_files,
    runnable_problem,
    seconds,
    unchecked,
)
from hakeeper.kits.process import action_result, check_result
from hakeeper.layout import SUBSYS_DIR

SCRIPTS = ("restore", "remove", "quickCheck", "recover")


def version_of(scripts: Mapping[str, bytes]) -> str:
    """A short digest of a set of scripts (names and contents): the name of the directory that holds them."""
    digest = hashlib.sha256()
    for name in sorted(scripts):
        digest.update(name.encode() + b"\0" + hashlib.sha256(scripts[name]).digest())
    return digest.hexdigest()[:16]


class GenAppKit(Kit):
    meta = KitMeta(
        app="gen",
        type="app",
        description="any program, protected by your own restore, remove and quickCheck scripts",
        params=(
            Param(
                "restore",
                "script that starts the application (must succeed if it runs already)",
                "executable",
                required=True,
            ),
            Param(
                "remove",
                "script that stops the application (must succeed if it is stopped)",
                "executable",
                required=True,
            ),
            Param("quickCheck", "script that checks it: exit 0 running, 7 stopped, other failed", "executable"),
            Param("recover", "script that repairs it in place (optional)", "executable"),
            Param("info", "a string handed to the scripts as HAKEEPER_INFO", default=""),
            seconds("timeout", "seconds restore, remove and recover may take", 300),
            seconds("check_timeout", "seconds quickCheck may take", 60),
        ),
    )

    def instance_dir(self, tag: str, info: Any = None) -> Path:
        """Where the scripts of ``tag`` are: ``actions/`` as created, ``actions-<version>/`` after an update."""
        version = info.get("version") if isinstance(info, dict) else None
        name = f"actions-{version}" if isinstance(version, str) and version else "actions"
        return self.ctx.root / SUBSYS_DIR / "gen" / "resources" / "app" / "instances" / tag / name

    def scripts_dir(self, resource: Resource) -> Path:
        return self.instance_dir(resource.tag, resource.info)

    def _install(self, tag: str, scripts: Mapping[str, bytes], info: Any = None) -> None:
        """Write ``scripts`` (name -> content) as the instance's actions, mode 0700, all at once or not at all."""
        install_files(self.instance_dir(tag, info), scripts, 0o700, f"the scripts of {tag}")

    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        scripts: dict[str, bytes] = {}
        for name in SCRIPTS:
            source = values.get(name)
            if source:
                try:
                    scripts[name] = Path(source).read_bytes()
                except OSError as exc:
                    raise SystemCallFailed(f"cannot read the {name} script {source}: {exc.strerror}") from None
        self._install(tag, scripts)
        copied = list(scripts)
        info = {
            "info": values.get("info", ""),
            "scripts": copied,
            "timeout": values.get("timeout", 300),
            "check_timeout": values.get("check_timeout", 60),
        }
        return Created(id or tag, info)

    def discard(self, tag: str) -> None:
        """Undo :meth:`create` or :meth:`adopt` when the resource could not be recorded."""
        shutil.rmtree(self.instance_dir(tag).parent, ignore_errors=True)

    def export(self, resource: Resource) -> dict[str, Any]:
        """The copied scripts, base64: ``{"scripts": {"restore": "...", ...}}``."""
        scripts: dict[str, str] = {}
        scripts = {name: base64.b64encode(content).decode("ascii") for name, content in self._current(resource).items()}
        return {"scripts": scripts}

    def _current(self, resource: Resource) -> dict[str, bytes]:
        """The scripts ``resource`` runs now: name -> content."""
        scripts: dict[str, bytes] = {}
        for name in SCRIPTS:
            path = self.scripts_dir(resource) / name
            try:
                scripts[name] = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise SystemCallFailed(f"cannot read the {name} script of {resource.tag}: {exc.strerror}") from None
        return scripts

    def adopt(self, tag: str, info: Any, payload: Mapping[str, Any]) -> None:
        """Install the scripts another node exported; only the names gen/app knows, as they were there."""
        self._install(tag, self._decoded(tag, payload), info)

    def _decoded(self, tag: str, payload: Mapping[str, Any]) -> dict[str, bytes]:
        sent = payload.get("scripts")
        if not isinstance(sent, dict):
            raise IllegalArgument(f"{tag}: the gen/app payload holds no scripts")
        scripts: dict[str, bytes] = {}
        for name, text in sent.items():
            if name not in SCRIPTS or not isinstance(text, str):
                raise IllegalArgument(f"{tag}: {name!r} is not a gen/app script ({', '.join(SCRIPTS)})")
            try:
                scripts[name] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise IllegalArgument(f"{tag}: the {name} script is not valid base64") from None
        return scripts

    def revise(self, resource: Resource, params: Mapping[str, str]) -> Revision:
        """New scripts (read now from the paths given; ``quickCheck=`` or ``recover=`` empty drops one),
        ``info=``, ``timeout=``, ``check_timeout=``."""
        dropped = {name for name, text in params.items() if text == "" and name in ("quickCheck", "recover")}
        values = self.parse_changes({name: text for name, text in params.items() if name not in dropped})
        current = self._current(resource)
        scripts = dict(current)
        for name in SCRIPTS:
            if name in dropped:
                scripts.pop(name, None)
            elif name in values:
                try:
                    scripts[name] = Path(values[name]).read_bytes()
                except OSError as exc:
                    raise SystemCallFailed(f"cannot read the {name} script {values[name]}: {exc.strerror}") from None
        old = self._info(resource)
        info = dict(old)
        for name in ("info", "timeout", "check_timeout"):
            if name in values:
                info[name] = values[name]
        changed = {n for n in SCRIPTS if scripts.get(n) != current.get(n)}
        changed |= {n for n in ("info", "timeout", "check_timeout") if info.get(n) != old.get(n)}
        payload: dict[str, Any] = {}
        if scripts != current:
            info["scripts"] = [name for name in SCRIPTS if name in scripts]
            info["version"] = version_of(scripts)
            payload = {"scripts": {n: base64.b64encode(c).decode("ascii") for n, c in scripts.items()}}
        return Revision(info, payload, tuple(sorted(changed)))

    def stage(self, tag: str, info: Any, payload: Mapping[str, Any]) -> None:
        if payload:
            scripts = self._decoded(tag, payload)
            if not isinstance(info, dict) or info.get("version") != version_of(scripts):
                raise IllegalArgument(f"{tag}: the scripts sent are not the version the new info names")
            self._install(tag, scripts, info)

    def settle(self, resource: Resource) -> None:
        """Remove the script directories of ``resource`` that its info no longer names."""
        keep = self.scripts_dir(resource)
        for old in keep.parent.glob("actions*"):
            if old != keep and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    def _script(self, resource: Resource, name: str) -> Path | None:
        return executable(self.scripts_dir(resource) / name)

    @staticmethod
    def _info(resource: Resource) -> dict[str, Any]:
        return resource.info if isinstance(resource.info, dict) else {"info": str(resource.info)}

    async def _run(self, resource: Resource, name: str, action: str, args: tuple[str, ...]) -> Result | None:
        script = self._script(resource, name)
        if script is None:
            return None
        done = await run_action_script(
            script, action, resource, self.ctx, args, info=str(self._info(resource).get("info", ""))
        )
        if action == "quick_check":
            return check_result(done, f"quickCheck of {resource.tag}")
        return action_result(done, f"{name} of {resource.tag}", stop=action == "remove")

    async def validate(self, resource: Resource) -> Result:
        missing = [n for n in ("restore", "remove") if self._script(resource, n) is None]
        if missing:
            return Result.failure(
                f"{resource.tag}: no {' or '.join(missing)} script in {self.scripts_dir(resource)}",
                Policy.CONFIG,
            )
        for name in SCRIPTS:
            script = self._script(resource, name)
            problem = runnable_problem(script) if script is not None else None
            if problem is not None:
                return Result.failure(f"{resource.tag}: the {name} script {script} is {problem}", Policy.CONFIG)
        return Result.success()

    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        result = await self._run(resource, "restore", "restore", args)
        return result or Result.failure(f"{resource.tag}: restore script missing", Policy.CONFIG)

    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        result = await self._run(resource, "remove", "remove", args)
        return result or Result.failure(f"{resource.tag}: remove script missing", Policy.CONFIG)

    async def quick_check(self, resource: Resource) -> Result:
        result = await self._run(resource, "quickCheck", "quick_check", ())
        return result or unchecked(resource)

    def has_recover(self, resource: Resource) -> bool:
        return self._script(resource, "recover") is not None

    async def recover(self, resource: Resource) -> Result:
        result = await self._run(resource, "recover", "recover", ())
        return result or Result.failure(f"{resource.tag} has no recover script")

    async def delete(self, resource: Resource) -> Result:
        self.discard(resource.tag)
        return Result.success()

    def timeout(self, action: str, resource: Resource) -> float:
        info = self._info(resource)
        if action == "quick_check":
            return float(info.get("check_timeout", 60))
        if action in ("restore", "remove", "recover"):
            return float(info.get("timeout", 300))
        return super().timeout(action, resource)
