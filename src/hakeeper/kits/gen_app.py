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
"""

from __future__ import annotations

import base64
import binascii
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
    install_files,
    runnable_problem,
    seconds,
    unchecked,
)
from hakeeper.kits.process import action_result, check_result
from hakeeper.layout import SUBSYS_DIR

SCRIPTS = ("restore", "remove", "quickCheck", "recover")


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

    def instance_dir(self, tag: str) -> Path:
        return self.ctx.root / SUBSYS_DIR / "gen" / "resources" / "app" / "instances" / tag / "actions"

    def _install(self, tag: str, scripts: Mapping[str, bytes]) -> None:
        """Write ``scripts`` (name -> content) as the instance's actions, mode 0700, all at once or not at all."""
        install_files(self.instance_dir(tag), scripts, 0o700, f"the scripts of {tag}")

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
        for name in SCRIPTS:
            path = self.instance_dir(resource.tag) / name
            try:
                scripts[name] = base64.b64encode(path.read_bytes()).decode("ascii")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise SystemCallFailed(f"cannot read the {name} script of {resource.tag}: {exc.strerror}") from None
        return {"scripts": scripts}

    def adopt(self, tag: str, info: Any, payload: Mapping[str, Any]) -> None:
        """Install the scripts another node exported; only the names gen/app knows, as they were there."""
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
        self._install(tag, scripts)

    def _script(self, resource: Resource, name: str) -> Path | None:
        return executable(self.instance_dir(resource.tag) / name)

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
                f"{resource.tag}: no {' or '.join(missing)} script in {self.instance_dir(resource.tag)}",
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
