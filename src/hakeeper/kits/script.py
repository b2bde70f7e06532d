"""Script kit: a LifeKeeper-layout directory of action scripts becomes a resource type.

``<root>/subsys/<app>/resources/<type>/actions/`` holding executables named
``restore`` and ``remove`` (required) and ``quickCheck``, ``recover``,
``delete`` (optional) makes ``<app>/<type>`` a kit, with the script contract of
:mod:`hakeeper.kits.actions`. App-wide ``prerestore``, ``postrestore``,
``preremove``, ``postremove``, ``predelete`` and ``postdelete`` in
``<root>/subsys/<app>/actions/`` run around every such action of the app's
types: a failing pre script fails the action (it does not run); a failing post
script is logged and does not change the result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hakeeper.db.model import Resource
from hakeeper.kits.actions import (
    SCRIPT_NAMES,
    action_path,
    app_actions_dir,
    executable,
    run_action_script,
    type_actions_dir,
)
from hakeeper.kits.base import Created, Kit, KitContext, KitMeta, Param, Policy, Result, runnable_problem, unchecked
from hakeeper.kits.process import action_result, check_result

logger = logging.getLogger(__name__)

WRAPPED = ("restore", "remove", "delete")


class ScriptKit(Kit):
    def __init__(self, ctx: KitContext, app: str, type: str) -> None:
        super().__init__(ctx)
        self.meta = KitMeta(
            app=app,
            type=type,
            description=f"action scripts in {type_actions_dir(ctx.root, app, type)}",
            params=(Param("info", "a string handed to the scripts as HAKEEPER_INFO", default=""),),
        )

    @staticmethod
    def exists(root: Path, app: str, type: str) -> bool:
        return action_path(root, app, type, "restore") is not None

    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        return Created(id or tag, values.get("info", ""))

    def _path(self, action: str) -> Path | None:
        return action_path(self.ctx.root, self.meta.app, self.meta.type, action)

    async def _global(self, when: str, action: str, resource: Resource, args: tuple[str, ...]) -> Result:
        if not self.ctx.run_globals:
            return Result.success()
        script = executable(app_actions_dir(self.ctx.root, self.meta.app) / f"{when}{action}")
        if script is None:
            return Result.success()
        done = await run_action_script(script, action, resource, self.ctx, args)
        return action_result(done, f"{when}{action} of {resource.tag}")

    async def _action(self, action: str, resource: Resource, args: tuple[str, ...] = ()) -> Result | None:
        path = self._path(action)
        if path is None:
            return None
        if action in WRAPPED:
            before = await self._global("pre", action, resource, args)
            if not before.ok:
                return before
        done = await run_action_script(path, action, resource, self.ctx, args)
        if action == "quick_check":
            return check_result(done, f"quickCheck of {resource.tag}")
        result = action_result(done, f"{action} of {resource.tag}", stop=action == "remove")
        if action in WRAPPED:
            after = await self._global("post", action, resource, args)
            if not after.ok:
                logger.warning("%s (the %s itself %s)", after.message, action, "succeeded" if result.ok else "failed")
        return result

    async def validate(self, resource: Resource) -> Result:
        missing = [a for a in ("restore", "remove") if self._path(a) is None]
        if missing:
            where = type_actions_dir(self.ctx.root, self.meta.app, self.meta.type)
            return Result.failure(f"no executable {' or '.join(missing)} in {where}", Policy.CONFIG)
        for action in SCRIPT_NAMES:
            path = self._path(action)
            problem = runnable_problem(path) if path is not None else None
            if problem is not None:
                return Result.failure(f"the {SCRIPT_NAMES[action]} script {path} is {problem}", Policy.CONFIG)
        return Result.success()

    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        return await self._action("restore", resource, args) or Result.failure("no restore script", Policy.CONFIG)

    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        return await self._action("remove", resource, args) or Result.failure("no remove script", Policy.CONFIG)

    async def quick_check(self, resource: Resource) -> Result:
        return await self._action("quick_check", resource) or unchecked(resource)

    def has_recover(self, resource: Resource) -> bool:
        return self._path("recover") is not None

    async def recover(self, resource: Resource) -> Result:
        return await self._action("recover", resource) or Result.failure("no recover script")

    async def delete(self, resource: Resource) -> Result:
        return await self._action("delete", resource) or Result.success()
