"""The kit interface: what every recovery kit implements, with OCF semantics, typed.

A kit knows one kind of resource. The recovery engine calls its actions; the
kit does the work and says how it went, the engine enforces timeouts and
decides what to do next from the result's policy:

``restore``      bring the resource in service. Restoring what runs already succeeds.
``remove``       take it out of service. Removing what is stopped succeeds; remove is a
                 force operation that tries everything.
``quick_check``  is it healthy? Three answers: running, stopped, failed.
``recover``      repair it in place (optional: ``has_recover`` says whether the kit can).
``validate``     can these parameters work on this node?
``delete``       undo what creating the resource did (copied scripts, records).

Besides the actions, two hooks carry a resource to another node when its
hierarchy is extended there (``hakeeper extend``): :meth:`Kit.export` says, in
JSON, what the other node needs to re-create this resource's local side (the
copied scripts of gen/app), and :meth:`Kit.adopt` re-creates it there from that
payload; :meth:`Kit.discard` undoes it. ``validate`` then runs on the new node.

A restore may learn why it runs: during a failover from nodes whose lease
lapsed, :func:`takeover` names them (:class:`Takeover`); the IP kit then skips
its duplicate-address probe.

A failed :class:`Result` carries a :class:`Policy`: SOFT (repair in place),
HARD (move the hierarchy to another node) or CONFIG (stop and wait for the
administrator, never retry).
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakeeper.db.model import Resource, check_text
from hakeeper.errors import IllegalArgument, OutOfRange, SystemCallFailed

ACTIONS = ("restore", "remove", "quick_check", "recover", "validate", "delete")
DEFAULT_TIMEOUTS: Mapping[str, float] = {
    "restore": 300.0,
    "remove": 300.0,
    "quick_check": 60.0,
    "recover": 300.0,
    "validate": 30.0,
    "delete": 60.0,
}


class Policy(enum.Enum):
    """What a failure asks for."""

    SOFT = "soft"  # repair in place (local recovery), then move
    HARD = "hard"  # this node cannot run it: move the hierarchy
    CONFIG = "config"  # the configuration is wrong: stop, wait for the administrator


class Health(enum.Enum):
    """The three answers of quick_check."""

    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Result:
    """How an action went."""

    ok: bool
    message: str = ""
    policy: Policy = Policy.SOFT
    health: Health | None = None
    output: str = ""

    @classmethod
    def success(cls, message: str = "", output: str = "") -> Result:
        return cls(True, message, output=output)

    @classmethod
    def failure(cls, message: str, policy: Policy = Policy.SOFT, output: str = "") -> Result:
        return cls(False, message, policy, output=output)

    @classmethod
    def running(cls, message: str = "") -> Result:
        return cls(True, message, health=Health.RUNNING)

    @classmethod
    def stopped(cls, message: str = "stopped") -> Result:
        return cls(False, message, Policy.SOFT, Health.STOPPED)

    @classmethod
    def failed(cls, message: str, policy: Policy = Policy.SOFT, output: str = "") -> Result:
        return cls(False, message, policy, Health.FAILED, output)


def unchecked(resource: Resource) -> Result:
    """The answer of a kit that has no way to check: what the LCD says (running while in service)."""
    if resource.state.in_service:
        return Result.running("no quickCheck script")
    return Result.stopped("no quickCheck script; not in service")


PARAM_TYPES = ("string", "integer", "boolean", "executable")

#: The longest an action may be given, in seconds: a restore that may take longer than an hour
#: is better split, and hakeeperd's control socket waits an hour for a command's answer.
MAX_ACTION_SECONDS = 3600

#: What a program file starts with when the kernel can run it: an interpreter line or an ELF header.
SHEBANG, ELF_MAGIC = b"#!", b"\x7fELF"


def runnable_problem(path: Path) -> str | None:
    """Why the kernel could not run the file ``path`` as a program (None: it can).

    It must be a regular file we may read and execute, starting with ``#!`` and
    the absolute path of an executable interpreter, or with an ELF header:
    anything else fails only later, when a restore runs, with "Exec format error".
    """
    if not path.is_file():
        return "no such file" if not path.exists() else "not a regular file"
    if not os.access(path, os.X_OK):
        return "not executable (chmod +x it)"
    try:
        with path.open("rb") as file:
            head = file.read(256)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if head.startswith(ELF_MAGIC):
        return None
    if not head.startswith(SHEBANG):
        return "neither a script starting with #! nor a program (ELF): the kernel cannot run it"
    line = head[2:].split(b"\n", 1)[0]
    words = line.split()
    if not words:
        return "its #! line names no interpreter"
    if line.rstrip(b" \t").endswith(b"\r"):
        return "its #! line ends in a carriage return (Windows line ends: convert it, e.g. with dos2unix)"
    interpreter = Path(os.fsdecode(words[0]))
    if not interpreter.is_absolute():
        return f"its interpreter {str(interpreter)!r} is not an absolute path"
    if not (interpreter.is_file() and os.access(interpreter, os.X_OK)):
        return f"its interpreter {interpreter} is missing or not executable"
    return None


@dataclass(frozen=True)
class Param:
    """One parameter a kit takes at creation (``NAME=VALUE`` on ``hakeeper create``).

    An ``integer`` parameter may say its bounds (``minimum``, ``maximum``, inclusive):
    a value outside them is refused at creation (exit 6), naming the parameter.
    """

    name: str
    description: str
    type: str = "string"
    required: bool = False
    default: str | None = None
    minimum: int | None = None
    maximum: int | None = None

    def parse(self, text: str) -> Any:
        """The value of ``text`` for this parameter; an error names the parameter."""
        if self.type == "integer":
            try:
                value = int(text)
            except ValueError:
                raise IllegalArgument(f"parameter {self.name}={text!r} is not a whole number") from None
            too_low = self.minimum is not None and value < self.minimum
            if too_low or (self.maximum is not None and value > self.maximum):
                shown = text if len(text) <= 24 else text[:21] + "..."
                raise OutOfRange(f"parameter {self.name}={shown} is outside {self.bounds}")
            return value
        if self.type == "boolean":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "y", "on"):
                return True
            if lowered in ("0", "false", "no", "n", "off"):
                return False
            raise IllegalArgument(f"parameter {self.name}={text!r} is not a yes/no value")
        check_text(text, f"parameter {self.name}")
        if self.type == "executable":
            path = Path(text)
            if not path.is_absolute():
                raise IllegalArgument(f"parameter {self.name}={text!r} must be an absolute path")
            problem = runnable_problem(path)
            if problem is not None:
                raise IllegalArgument(f"parameter {self.name}={text}: {problem}")
            return str(path)
        return text

    @property
    def bounds(self) -> str:
        """``1..3600`` for a bounded integer, else empty."""
        if self.minimum is None and self.maximum is None:
            return ""
        low = "" if self.minimum is None else self.minimum
        high = "" if self.maximum is None else self.maximum
        return f"{low}..{high}"


def seconds(name: str, description: str, default: int, *, minimum: int = 1, maximum: int = MAX_ACTION_SECONDS) -> Param:
    """A timeout parameter, in whole seconds, bounded (1 s to an hour unless told)."""
    return Param(name, description, "integer", default=str(default), minimum=minimum, maximum=maximum)


@dataclass(frozen=True)
class KitMeta:
    """What ``hakeeper kits`` shows and ``hakeeper create`` checks parameters against."""

    app: str
    type: str
    description: str
    params: tuple[Param, ...] = ()
    timeouts: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    open_params: bool = False  # accepts parameters not listed (checked by the kit itself)

    @property
    def name(self) -> str:
        return f"{self.app}/{self.type}"

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "kit": self.name,
            "description": self.description,
            "parameters": [
                {
                    "name": p.name,
                    "type": p.type,
                    "required": p.required,
                    "default": p.default,
                    "minimum": p.minimum,
                    "maximum": p.maximum,
                    "description": p.description,
                }
                for p in self.params
            ],
            "timeouts": dict(self.timeouts),
        }


@dataclass(frozen=True)
class KitContext:
    """Where a kit runs: the state directory and this node's name.

    ``run_globals`` false skips app-wide pre/post scripts (``perform_action -G``).
    """

    root: Path
    node: str
    run_globals: bool = True


@dataclass(frozen=True)
class Takeover:
    """A restore that takes its hierarchy over from ``previous``, proven out of it: ``proof`` says how.

    Set by the failover (:mod:`hakeeper.cluster.failover`) around the restore of a
    hierarchy taken from dead nodes whose lease a majority of the voters saw lapse:
    by the lease argument (:mod:`hakeeper.cluster.lease`) none of them serves any
    more, its virtual addresses included. Kits read it with :func:`takeover`.
    """

    previous: tuple[str, ...]
    proof: str

    def describe(self) -> str:
        return f"taken over from {', '.join(self.previous) or 'nobody'}, {self.proof}"


_TAKEOVER: contextvars.ContextVar[Takeover | None] = contextvars.ContextVar("hakeeper_takeover", default=None)


def takeover() -> Takeover | None:
    """The takeover the current restore belongs to, if it is one (see :class:`Takeover`)."""
    return _TAKEOVER.get()


@contextlib.contextmanager
def taking_over(what: Takeover | None) -> Iterator[None]:
    """Within the block (and the tasks it starts), :func:`takeover` answers ``what``."""
    token = _TAKEOVER.set(what)
    try:
        yield
    finally:
        _TAKEOVER.reset(token)


@dataclass(frozen=True)
class Created:
    """What a kit makes of creation parameters: the resource id and its info."""

    id: str
    info: Any


@dataclass(frozen=True)
class Revision:
    """What a kit makes of ``hakeeper update``'s new parameters for a resource (:meth:`Kit.revise`).

    ``info``: the new info, as every node of the hierarchy records it.
    ``payload``: what every node installs (:meth:`Kit.stage`) before the new
    info is recorded anywhere (gen/app: the scripts); empty when nothing.
    ``changed``: the parameters that change. ``out_of_service``: those among
    them that may change only while the resource is in service nowhere (a
    virtual address itself, say: the live one would be left behind).
    """

    info: Any
    payload: dict[str, Any]
    changed: tuple[str, ...]
    out_of_service: tuple[str, ...] = ()


class Kit(ABC):
    """One kind of resource. Subclasses set :attr:`meta` and implement the actions."""

    meta: KitMeta

    def __init__(self, ctx: KitContext) -> None:
        self.ctx = ctx

    def check_params(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Parse ``NAME=VALUE`` parameters against :attr:`meta`; unknown, missing or bad ones are errors."""
        values = self._parse(params, open_params=self.meta.open_params)
        for param in self.meta.params:
            if param.name not in values:
                if param.required:
                    raise IllegalArgument(f"{self.meta.name} needs parameter {param.name}= ({param.description})")
                if param.default is not None:
                    values[param.name] = param.parse(param.default)
        return values

    @abstractmethod
    def create(self, tag: str, values: Mapping[str, Any], id: str | None) -> Created:
        """Prepare a new resource from checked parameters (copy scripts, build info)."""

    def discard(self, tag: str) -> None:  # noqa: B027 - optional hook, nothing to undo by default
        """Undo :meth:`create` or :meth:`adopt` when the resource could not be recorded (nothing by default)."""

    def export(self, resource: Resource) -> dict[str, Any]:
        """What another node needs to re-create this resource's local side, JSON-safe (nothing by default).

        Only what lives on this node and not in the LCD: the LCD's record (info and
        settings) travels on its own.
        """
        return {}

    def adopt(self, tag: str, info: Any, payload: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Re-create here, from another node's :meth:`export`, what :meth:`create` made there (nothing by default).

        ``info`` is the resource's info as the LCD keeps it. Raise a
        :class:`~hakeeper.errors.HakeeperError` naming what is wrong; leave nothing
        behind when raising. :meth:`discard` undoes a successful adopt.
        """

    def parse_changes(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Parse the ``NAME=VALUE`` parameters ``hakeeper update`` changes: known ones only, none required."""
        return self._parse(params, open_params=False)

    def _parse(self, params: Mapping[str, str], *, open_params: bool) -> dict[str, Any]:
        """Each parameter parsed by its :class:`Param`; an unknown one kept as text if ``open_params``, else refused."""
        values: dict[str, Any] = {}
        for name, text in params.items():
            param = self.meta.param(name)
            if param is not None:
                values[name] = param.parse(text)
            elif open_params:
                values[name] = text
            else:
                known = ", ".join(p.name for p in self.meta.params) or "none"
                raise IllegalArgument(f"{self.meta.name} has no parameter {name!r} (it takes: {known})")
        return values

    def revise(self, resource: Resource, params: Mapping[str, str]) -> Revision:
        """``hakeeper update``: ``resource`` with some parameters changed (checked; nothing installed yet).

        By default a kit cannot be updated: the resource is deleted and created again.
        """
        raise IllegalArgument(
            f"{self.meta.name} resources cannot be updated in place: delete {resource.tag} and create it again"
        )

    def stage(self, tag: str, info: Any, payload: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Install here what ``info`` needs (from :meth:`revise`'s payload), beside what the current info uses.

        Done on every node before the new info is recorded; the same call twice
        is harmless. Nothing by default.
        """

    def settle(self, resource: Resource) -> None:  # noqa: B027 - optional hook
        """Drop what :meth:`stage` installed that ``resource``'s info does not use (nothing by default)."""

    async def validate(self, resource: Resource) -> Result:
        return Result.success()

    @abstractmethod
    async def restore(self, resource: Resource, args: tuple[str, ...] = ()) -> Result: ...

    @abstractmethod
    async def remove(self, resource: Resource, args: tuple[str, ...] = ()) -> Result: ...

    @abstractmethod
    async def quick_check(self, resource: Resource) -> Result: ...

    def has_recover(self, resource: Resource) -> bool:
        return False

    async def recover(self, resource: Resource) -> Result:
        return Result.failure(f"{self.meta.name} has no recover action")

    async def delete(self, resource: Resource) -> Result:
        return Result.success()

    def timeout(self, action: str, resource: Resource) -> float:
        return float(self.meta.timeouts.get(action, DEFAULT_TIMEOUTS[action]))


def install_files(target: Path, files: Mapping[str, bytes], mode: int, what: str) -> None:
    """Make ``target`` a directory holding exactly ``files`` (name -> content, ``mode``), at once or not at all.

    The files are written in a staging directory beside it (0700) that is then
    renamed into place, so a kit's instance directory is never half written.
    ``what`` names them in the error (``the scripts of web``).
    """
    staging: Path | None = None
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=target.parent))
        for name, content in files.items():
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            (staging / name).chmod(mode)  # whatever the umask
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise SystemCallFailed(f"cannot install {what} in {target}: {exc.strerror or exc}") from None
