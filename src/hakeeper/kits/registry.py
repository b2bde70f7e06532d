"""Which kit serves which resource type: built-ins, third-party kits and script directories.

Built-in kits are listed by name in :data:`BUILTIN` and imported only when
needed. Third-party kits register a class in the ``hakeeper.kits`` entry-point
group (``[project.entry-points."hakeeper.kits"] "myapp/mytype" = "pkg.mod:MyKit"``).
Any ``<root>/subsys/<app>/resources/<type>/actions/restore`` makes
``<app>/<type>`` a script kit. A kit that cannot load is reported at WARNING
with the reason and left out; it never stops the others.

:func:`register_kits` puts each kit's application and resource type in the LCD,
as installing a LifeKeeper kit does: a fresh LCD knows its kits, and a kit
added later is registered the first time a command looks for it.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from pathlib import Path

from hakeeper.db.model import check_name
from hakeeper.db.store import Lcd
from hakeeper.errors import HakeeperError, IllegalArgument, NotFound
from hakeeper.kits.base import Kit, KitContext, KitMeta
from hakeeper.kits.script import ScriptKit
from hakeeper.layout import SUBSYS_DIR

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hakeeper.kits"

BUILTIN: dict[str, str] = {
    "comm/dns": "hakeeper.kits.dns:DnsKit",
    "gen/app": "hakeeper.kits.gen_app:GenAppKit",
    "ocf/ra": "hakeeper.kits.ocf:OcfKit",
    "comm/ip": "hakeeper.kits.ip:IpKit",
}


def import_kit(name: str, target: str) -> type[Kit] | None:
    """Import ``module:Class``; on failure say which kit and why, at WARNING, and return None."""
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
        logger.warning("kit %s (%s) cannot load: %s: %s", name, target, type(exc).__name__, exc)
        return None
    if not (isinstance(cls, type) and issubclass(cls, Kit)):
        logger.warning("kit %s (%s) cannot load: it is not a hakeeper.kits.base.Kit", name, target)
        return None
    return cls


class Kits:
    """The kits of one node, each loaded once."""

    def __init__(self, ctx: KitContext) -> None:
        self.ctx = ctx
        self._loaded: dict[str, Kit] = {}
        self._table: dict[str, str] | None = None

    def _classes(self) -> dict[str, str]:
        """Built-ins and entry points, name -> ``module:Class`` (entry points are read once: it is slow)."""
        if self._table is not None:
            return self._table
        table = dict(BUILTIN)
        try:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                name = ep.name.replace(".", "/", 1) if "/" not in ep.name else ep.name
                if name in BUILTIN:
                    logger.warning("kit %s from %s ignored: a built-in kit has that name", name, ep.value)
                else:
                    table[name] = ep.value
        except Exception as exc:  # noqa: BLE001 - a broken distribution's metadata
            logger.warning("cannot read the %s entry points: %s", ENTRY_POINT_GROUP, exc)
        self._table = table
        return table

    def add(self, kit: Kit) -> None:
        """Use ``kit`` for its type on this node (an embedding program's own kit, or a test's)."""
        self._loaded[kit.meta.name] = kit

    def find(self, app: str, type: str) -> Kit | None:
        """The kit for ``app/type``, or None if there is none."""
        name = f"{app}/{type}"
        if name in self._loaded:
            return self._loaded[name]
        target = BUILTIN.get(name) or self._classes().get(name)
        kit: Kit | None = None
        if target is not None:
            cls = import_kit(name, target)
            kit = cls(self.ctx) if cls is not None else None
        elif ScriptKit.exists(self.ctx.root, app, type):
            kit = ScriptKit(self.ctx, app, type)
        if kit is not None:
            self._loaded[name] = kit
        return kit

    def get(self, app: str, type: str) -> Kit:
        kit = self.find(app, type)
        if kit is None:
            raise NotFound(f"no kit for {app}/{type} (see: hakeeper kits)")
        return kit

    def names(self) -> list[str]:
        """Every kit's ``app/type``, without loading any: built-ins, entry points, script directories."""
        names = sorted(self._classes())
        subsys = self.ctx.root / SUBSYS_DIR
        if subsys.is_dir():
            for restore in sorted(subsys.glob("*/resources/*/actions/restore")):
                name = f"{restore.parts[-5]}/{restore.parts[-3]}"
                if name not in names and ScriptKit.exists(self.ctx.root, restore.parts[-5], restore.parts[-3]):
                    names.append(name)
        return names

    def available(self) -> list[KitMeta]:
        """Every kit that loads: built-ins, entry points, script directories."""
        metas: list[KitMeta] = []
        for name in self.names():
            app, _, type = name.partition("/")
            kit = self.find(app, type)
            if kit is not None and kit.meta not in metas:
                metas.append(kit.meta)
        return metas


def register_kits(lcd: Lcd, root: Path) -> list[str]:
    """Register in ``lcd`` the application and type of every kit not registered before; returns those.

    A kit whose name the LCD cannot hold is reported at WARNING and left out. A
    failure to write (a read-only LCD) is reported at WARNING too: the command
    that asked goes on with what the LCD has.
    """
    names = []
    for name in Kits(KitContext(root, lcd.local_node)).names():
        app, _, type = name.partition("/")
        try:
            check_name(app, "application")
            check_name(type, "resource type")
        except IllegalArgument as exc:
            logger.warning("kit %s cannot be registered in the LCD: %s", name, exc)
            continue
        names.append(name)
    try:
        new = lcd.register_kits(names)
    except HakeeperError as exc:
        logger.warning("the kits' applications and types cannot be registered in the LCD: %s", exc)
        return []
    if new:
        logger.info("registered the application and type of kits %s", ", ".join(new))
    return new
