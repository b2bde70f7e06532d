"""Action scripts: where they live and how they are called.

The script contract, shared by the Generic Application kit and the script kit:
a script is called as ``SCRIPT -t TAG -i ID [ARGS...]`` in a process group of
its own, with this environment added to hakeeper's:

``HAKEEPER_ROOT``    the state directory (``LKROOT`` too, for LifeKeeper scripts)
``HAKEEPER_TAG``     the resource's tag
``HAKEEPER_ID``      the resource's id
``HAKEEPER_INFO``    the resource's info string
``HAKEEPER_NODE``    this node's name
``HAKEEPER_STATE``   the resource's state on this node as the LCD records it when the action starts
                     (ISP, ISU, OSU, OSF): a quickCheck judges this node's own instance
``HAKEEPER_ACTION``  restore, remove, quickCheck, recover or delete

Exit status 0 means success; the other codes are OCF's (see
:mod:`hakeeper.kits.process`): 7 = stopped (quickCheck), 6 = configuration
error, 2-5 = cannot run on this node, anything else = failed.
"""

from __future__ import annotations

import os
from pathlib import Path

from hakeeper.db.model import Resource, info_text
from hakeeper.kits.base import KitContext
from hakeeper.kits.process import Completed, run_script
from hakeeper.layout import SUBSYS_DIR

#: hakeeper's action names and the names their scripts have on disk (LifeKeeper's).
SCRIPT_NAMES = {
    "restore": "restore",
    "remove": "remove",
    "quick_check": "quickCheck",
    "recover": "recover",
    "delete": "delete",
}


def type_actions_dir(root: Path, app: str, type: str) -> Path:
    """LifeKeeper's layout: ``<root>/subsys/<app>/resources/<type>/actions``."""
    return root / SUBSYS_DIR / app / "resources" / type / "actions"


def app_actions_dir(root: Path, app: str) -> Path:
    """App-wide actions (global pre/post scripts): ``<root>/subsys/<app>/actions``."""
    return root / SUBSYS_DIR / app / "actions"


def executable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.X_OK) else None


def action_path(root: Path, app: str, type: str, action: str) -> Path | None:
    """The executable for ``action`` of ``app/type`` in the state directory, if there is one."""
    return executable(type_actions_dir(root, app, type) / SCRIPT_NAMES.get(action, action))


def script_env(ctx: KitContext, resource: Resource, action: str, info: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HAKEEPER_ROOT=str(ctx.root),
        LKROOT=str(ctx.root),
        HAKEEPER_TAG=resource.tag,
        HAKEEPER_ID=resource.id,
        HAKEEPER_INFO=info if info is not None else info_text(resource.info),
        HAKEEPER_NODE=ctx.node,
        HAKEEPER_STATE=resource.state.name,
        HAKEEPER_ACTION=SCRIPT_NAMES.get(action, action),
    )
    return env


async def run_action_script(
    path: Path,
    action: str,
    resource: Resource,
    ctx: KitContext,
    args: tuple[str, ...] = (),
    *,
    info: str | None = None,
) -> Completed:
    """Run one action script by the contract above."""
    return await run_script(
        [str(path), "-t", resource.tag, "-i", resource.id, *args],
        env=script_env(ctx, resource, action, info),
        cwd=ctx.root,
    )
