"""OCF kit (``ocf/ra``): any OCF resource agent (ClusterLabs' resource-agents: Dummy, IPaddr2, nginx, pgsql…).

``hakeeper create ocf/ra -t TAG agent=ocf:heartbeat:Dummy state=/run/x`` makes
a resource of the agent; the other parameters are the agent's own, checked
against its ``meta-data`` (unknown or missing required ones are errors) and
passed as ``OCF_RESKEY_<name>``. start is restore, stop is remove, monitor is
quickCheck and validate-all runs at creation. OCF exit codes map to results and
policies as in :mod:`hakeeper.kits.process`; the agent's advertised timeouts
become the action timeouts.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakeeper.db.model import Resource
from hakeeper.errors import IllegalArgument, NotFound
from hakeeper.kits.base import DEFAULT_TIMEOUTS, Created, Kit, KitContext, KitMeta, Param, Policy, Result
from hakeeper.kits.process import OCF_ERR_UNIMPLEMENTED, action_result, check_result, run_script

DEFAULT_OCF_ROOT = "/usr/lib/ocf"
AGENT_RE = re.compile(r"^(?:ocf:)?([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+)$")
OCF_ACTIONS = {"restore": "start", "remove": "stop", "quick_check": "monitor", "validate": "validate-all"}


def ocf_root() -> Path:
    return Path(os.environ.get("HAKEEPER_OCF_ROOT") or DEFAULT_OCF_ROOT)


@dataclass(frozen=True)
class Agent:
    provider: str
    name: str
    path: Path

    @property
    def spec(self) -> str:
        return f"ocf:{self.provider}:{self.name}"


@dataclass(frozen=True)
class AgentMeta:
    params: tuple[Param, ...]
    timeouts: dict[str, float]


def find_agent(spec: str) -> Agent:
    """``ocf:heartbeat:Dummy`` (or ``heartbeat:Dummy``) → the agent's executable."""
    match = AGENT_RE.match(spec)
    if not match:
        raise IllegalArgument(f"agent={spec!r} is not of the form ocf:PROVIDER:AGENT (e.g. ocf:heartbeat:Dummy)")
    provider, name = match.groups()
    path = ocf_root() / "resource.d" / provider / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise NotFound(f"no OCF agent {spec} ({path} missing; is the resource-agents package installed?)")
    return Agent(provider, name, path)


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*", text)
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def agent_meta(agent: Agent) -> AgentMeta:
    """Parse the agent's ``meta-data`` XML: its parameters and advertised timeouts."""
    try:
        done = subprocess.run(
            [str(agent.path), "meta-data"],
            env={**os.environ, "OCF_ROOT": str(ocf_root())},
            capture_output=True,
            timeout=10,
            check=False,
        )
        root = ET.fromstring(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ET.ParseError) as exc:
        raise IllegalArgument(f"agent {agent.spec} gives no usable meta-data: {exc}") from None
    params = []
    for p in root.iter("parameter"):
        content = p.find("content")
        kind = (content.get("type") if content is not None else None) or "string"
        short = (p.findtext("shortdesc") or "").strip()
        params.append(
            Param(
                name=p.get("name", ""),
                description=" ".join(short.split()),
                type={"integer": "integer", "boolean": "boolean"}.get(kind, "string"),
                required=p.get("required") == "1",
                default=content.get("default") if content is not None else None,
            )
        )
    timeouts = dict(DEFAULT_TIMEOUTS)
    for action in root.iter("action"):
        ours = next((k for k, v in OCF_ACTIONS.items() if v == action.get("name")), None)
        seconds = _seconds(action.get("timeout"))
        if ours and seconds:
            timeouts[ours] = seconds
    return AgentMeta(tuple(params), timeouts)


class OcfKit(Kit):
    meta = KitMeta(
        app="ocf",
        type="ra",
        description="any OCF resource agent; agent=ocf:PROVIDER:AGENT plus the agent's own parameters",
        params=(Param("agent", "the agent, e.g. ocf:heartbeat:Dummy", required=True),),
        open_params=True,
    )

    def __init__(self, ctx: KitContext) -> None:
        super().__init__(ctx)

    def check_params(self, params: Mapping[str, str]) -> dict[str, Any]:
        if "agent" not in params:
            raise IllegalArgument("ocf/ra needs parameter agent= (e.g. agent=ocf:heartbeat:Dummy)")
        agent = find_agent(params["agent"])
        meta = agent_meta(agent)
        known = {p.name: p for p in meta.params}
        values: dict[str, Any] = {}
        for name, text in params.items():
            if name == "agent":
                continue
            param = known.get(name)
            if param is None:
                names = ", ".join(sorted(known)) or "none"
                raise IllegalArgument(f"{agent.spec} has no parameter {name!r} (it takes: {names})")
            param.parse(text)  # checks integers and booleans
            values[name] = text
        missing = [p.name for p in meta.params if p.required and p.name not in values]
        if missing:
            raise IllegalArgument(f"{agent.spec} needs parameter {missing[0]}= ({known[missing[0]].description})")
        return {"agent": agent.spec, "params": values, "timeouts": meta.timeouts}

    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        return Created(id or tag, dict(values))

    @staticmethod
    def _info(resource: Resource) -> dict[str, Any]:
        if not isinstance(resource.info, dict) or "agent" not in resource.info:
            raise IllegalArgument(f"{resource.tag}: info names no OCF agent")
        return resource.info

    def _env(self, resource: Resource, agent: Agent, action: str) -> dict[str, str]:
        info = self._info(resource)
        rsctmp = self.ctx.root / "run" / "resource-agents"
        rsctmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            OCF_ROOT=str(ocf_root()),
            OCF_RA_VERSION_MAJOR="1",
            OCF_RA_VERSION_MINOR="1",
            OCF_RESOURCE_INSTANCE=resource.tag,
            OCF_RESOURCE_TYPE=agent.name,
            OCF_RESOURCE_PROVIDER=agent.provider,
            OCF_RESKEY_CRM_meta_timeout=str(int(self.timeout(action, resource) * 1000)),
            HA_RSCTMP=str(rsctmp),
            HAKEEPER_ROOT=str(self.ctx.root),
            HAKEEPER_NODE=self.ctx.node,
            HAKEEPER_STATE=resource.state.name,
        )
        for name, value in info.get("params", {}).items():
            env[f"OCF_RESKEY_{name}"] = str(value)
        return env

    async def _call(self, resource: Resource, action: str) -> Result:
        try:
            agent = find_agent(self._info(resource)["agent"])
        except (IllegalArgument, NotFound) as exc:
            policy = Policy.HARD if isinstance(exc, NotFound) else Policy.CONFIG
            if action == "quick_check":
                return Result.failed(str(exc), policy)
            return Result.failure(str(exc), policy)
        ocf_action = OCF_ACTIONS[action]
        done = await run_script([str(agent.path), ocf_action], env=self._env(resource, agent, action))
        what = f"{agent.spec} {ocf_action} of {resource.tag}"
        if action == "quick_check":
            return check_result(done, what)
        if action == "validate":
            if done.returncode == OCF_ERR_UNIMPLEMENTED:
                return Result.success("validate-all not implemented")
            result = action_result(done, what)
            return result if result.ok else Result.failure(result.message, Policy.CONFIG, result.output)
        return action_result(done, what, stop=action == "remove")

    async def validate(self, resource: Resource) -> Result:
        return await self._call(resource, "validate")

    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        return await self._call(resource, "restore")

    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result:
        return await self._call(resource, "remove")

    async def quick_check(self, resource: Resource) -> Result:
        return await self._call(resource, "quick_check")

    def timeout(self, action: str, resource: Resource) -> float:
        timeouts = resource.info.get("timeouts", {}) if isinstance(resource.info, dict) else {}
        return float(timeouts.get(action, DEFAULT_TIMEOUTS[action]))
