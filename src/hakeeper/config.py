"""The configuration file, ``/etc/hakeeper/hakeeper.toml``: what it may hold, and the effective settings.

Every setting has one value, taken from the first of: a command-line option, the
environment, the file, the default. The file is ``$HAKEEPER_CONFIG`` (which
``hakeeper --config FILE`` and ``hakeeperd --config FILE`` set), else
:data:`hakeeper.layout.DEFAULT_CONFIG`; a missing default file is no error, a
missing file named on purpose is. :func:`load` reads and checks the whole file:
an unknown table or key, or a value of the wrong type, is one line naming the
file, the line and what was expected (:class:`ConfigError`, exit code 5 as every
bad argument). ``hakeeper config check`` prints each value and where it came
from (docs/configuration.md).

Commands answered by hakeeperd do not come here: they only need the state
directory, which :func:`hakeeper.layout.configured_root` scans for without TOML.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakeeper.errors import IllegalArgument
from hakeeper.layout import CONFIG_ENV, DEFAULT_CONFIG, DEFAULT_ROOT, LOG_NAME

TARGETS = ("auto", "journal", "syslog", "file", "stderr")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
MAX_BACKUPS = 1000


class ConfigError(IllegalArgument):
    """The configuration file (or a value that overrides it) is not what hakeeper reads."""


@dataclass(frozen=True)
class Value:
    """An effective setting: its value, and where it came from."""

    value: Any
    source: str  # "default" | "file" | "env" | "option"
    where: str = ""  # the variable, the option, or FILE:LINE

    def shown(self) -> str:
        return f"{self.source} ({self.where})" if self.where else self.source


Check = Callable[[Any, str], Any]  # (value, what) -> the value to use; raises ConfigError


@dataclass(frozen=True)
class Key:
    """One key of the file: its table and name, what it holds, and what may override it."""

    table: str
    name: str
    expected: str  # what the type error says is expected
    check: Check
    env: str | None = None
    option: str | None = None
    integer: bool = False  # an integer, written as text in the environment or an option

    @property
    def dotted(self) -> str:
        return f"{self.table}.{self.name}"


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {_kind(value)}")
    return value


def _node_name(value: Any, what: str) -> str:
    from hakeeper.db.model import check_name

    try:
        return check_name(_string(value, what), what)
    except ConfigError:
        raise
    except IllegalArgument as exc:
        raise ConfigError(str(exc)) from None


def _absolute(value: Any, what: str) -> str:
    text = _string(value, what)
    if not text or not os.path.isabs(text) or "\0" in text:
        raise ConfigError(f"{what} must be an absolute path, not {text!r}")
    return text


def _one_of(choices: tuple[str, ...], *, upper: bool = False) -> Check:
    def check(value: Any, what: str) -> str:
        text = _string(value, what)
        chosen = text.upper() if upper else text.lower()
        if chosen not in choices:
            raise ConfigError(f"{what} must be one of {', '.join(choices)}, not {text!r}")
        return chosen

    return check


def _integer(low: int, high: int) -> Check:
    def check(value: Any, what: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{what} must be an integer, not {_kind(value)}")
        if not low <= value <= high:
            raise ConfigError(f"{what} must be within {low}..{high}, not {value}")
        return value

    return check


def _addresses(value: Any, what: str) -> tuple[str, ...]:
    from hakeeper.comm.addresses import parse_address

    if not isinstance(value, list):
        raise ConfigError(f'{what} must be an array of strings ("HOST" or "HOST:PORT"), not {_kind(value)}')
    for item in value:
        try:
            parse_address(_string(item, f"each of {what}"), 0, what=f"{what} address", listen=True)
        except ConfigError:
            raise
        except IllegalArgument as exc:
            raise ConfigError(str(exc)) from None
    return tuple(value)


KEYS = (
    Key("node", "name", "a string (a node name)", _node_name, env="HAKEEPER_NODE"),
    Key("node", "state_dir", "a string (an absolute path)", _absolute, env="HAKEEPER_ROOT", option="--root"),
    Key("log", "target", f"a string ({' | '.join(TARGETS)})", _one_of(TARGETS), env="HAKEEPER_LOG_TARGET",
        option="--log-target"),
    Key("log", "level", f"a string ({' | '.join(LEVELS)})", _one_of(LEVELS, upper=True), env="HAKEEPER_LOG_LEVEL",
        option="--log-level"),
    Key("log", "file", "a string (an absolute path)", _absolute, env="HAKEEPER_LOG_FILE", option="--log-file"),
    Key("log", "max_bytes", "an integer (0: never rotate)", _integer(0, 1 << 40), integer=True),
    Key("log", "backups", f"an integer (1..{MAX_BACKUPS})", _integer(1, MAX_BACKUPS), integer=True),
    Key("listen", "addresses", 'an array of strings ("HOST" or "HOST:PORT")', _addresses),
)  # fmt: skip
BY_NAME = {key.dotted: key for key in KEYS}


@dataclass(frozen=True)
class Settings:
    """The effective configuration: every key's :class:`Value`, and the file read (None: there was none)."""

    path: Path | None
    values: Mapping[str, Value]

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted].value

    def table(self, name: str) -> dict[str, Any]:
        """The values of one table by key name: ``table("log")["level"]``."""
        return {key.name: self.values[key.dotted].value for key in KEYS if key.table == name}

    @property
    def node_name(self) -> str | None:
        """This node's name for a new LCD; None: the host name."""
        name: str | None = self["node.name"]
        return name

    @property
    def state_dir(self) -> str:
        return str(self["node.state_dir"])

    @property
    def log_file(self) -> str:
        return str(self["log.file"])

    @property
    def listen(self) -> tuple[str, ...]:
        """This node's addresses, one per network ("HOST" or "HOST:PORT"); empty: each path's local address."""
        addresses: tuple[str, ...] = self["listen.addresses"]
        return addresses


@contextlib.contextmanager
def without_config_file() -> Iterator[None]:
    """Within, this process and what it starts read no configuration file ($HAKEEPER_CONFIG=/dev/null, an
    empty file: the defaults). For the demo, whose nodes are not this machine's."""
    previous = os.environ.get(CONFIG_ENV)
    os.environ[CONFIG_ENV] = os.devnull
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = previous


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The effective settings: ``options`` (dotted key -> value given on the command line, None: not given)
    over ``environ`` (default: os.environ) over the file ``path`` (default: $HAKEEPER_CONFIG, else
    /etc/hakeeper/hakeeper.toml) over the defaults. Raises :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    named = path is not None or CONFIG_ENV in env
    chosen = os.fspath(path) if path is not None else env.get(CONFIG_ENV, DEFAULT_CONFIG)
    if not chosen:
        raise ConfigError(f"{CONFIG_ENV} is set but empty: name the configuration file, or unset it")
    file_path: Path | None = Path(chosen)
    try:
        text = Path(chosen).read_bytes().decode()
    except FileNotFoundError:
        if named:
            raise ConfigError(f"the configuration file {chosen} does not exist") from None
        text, file_path = "", None
    except IsADirectoryError:
        raise ConfigError(f"the configuration file {chosen} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {chosen}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{chosen}: not UTF-8 text (byte {exc.start})") from None
    from_file = _read(chosen, text)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    values: dict[str, Value] = {}
    for key in KEYS:
        values[key.dotted] = _effective(
            key, path=chosen, text=text, from_file=from_file, given=given, env=env, earlier=values
        )
    return Settings(file_path, values)


def _effective(
    key: Key,
    *,
    path: str,
    text: str,
    from_file: dict[str, Any],
    given: Mapping[str, Any],
    env: Mapping[str, str],
    earlier: Mapping[str, Value],
) -> Value:
    if key.dotted in given:
        if given[key.dotted] == "":
            raise ConfigError(f"{key.option or key.dotted} is empty (''): give {key.expected}, or leave it out")
        value = _from_here(key, given[key.dotted])
        return Value(key.check(value, key.option or key.dotted), "option", key.option or "")
    if key.env is not None and key.env in env:
        if not env[key.env]:
            raise ConfigError(f"{key.env} is set but empty: set it to {key.expected}, or unset it")
        return Value(key.check(_from_here(key, env[key.env]), key.env), "env", key.env)
    if key.dotted in from_file:
        line = line_of(text, key.table, key.name)
        where = f"{path}:{line}" if line else path
        return Value(key.check(from_file[key.dotted], f"{where}: {key.dotted}"), "file", where)
    return Value(_default(key, earlier), "default")


def _from_here(key: Key, value: Any) -> Any:
    """A path given in the environment or on the command line is relative to the current directory."""
    if key.integer and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if key.check is _absolute and isinstance(value, str) and value and "\0" not in value:
        return os.path.abspath(value)
    return value


def _default(key: Key, earlier: Mapping[str, Value]) -> Any:
    defaults: dict[str, Any] = {
        "node.name": None,
        "node.state_dir": DEFAULT_ROOT,
        "log.target": "auto",
        "log.level": "INFO",
        "log.max_bytes": DEFAULT_MAX_BYTES,
        "log.backups": DEFAULT_BACKUPS,
        "listen.addresses": (),
    }
    if key.dotted == "log.file":
        return os.path.join(earlier["node.state_dir"].value, LOG_NAME)
    return defaults[key.dotted]


def _read(path: str, text: str) -> dict[str, Any]:
    """The file's keys as dotted names; unknown tables and keys and wrong types are errors naming the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        said = str(exc)
        head, at, tail = said.partition(" (at line ")
        number = tail.split(",")[0]
        line = int(number) if at and number.isdigit() else None
        raise ConfigError(f"{_at(path, line)}not valid TOML: {head if line else said}") from None
    found: dict[str, Any] = {}
    tables = sorted({key.table for key in KEYS})
    for table, content in data.items():
        if table not in tables:
            line = line_of(text, table, None) or line_of(text, "", table)
            raise ConfigError(
                f"{_at(path, line)}unknown table [{table}] (the tables are {', '.join(f'[{t}]' for t in tables)})"
            )
        if not isinstance(content, dict):
            raise ConfigError(f"{_at(path, line_of(text, '', table))}{table} must be a table [{table}]")
        for name, value in content.items():
            key = BY_NAME.get(f"{table}.{name}")
            line = line_of(text, table, name)
            if key is None:
                known = ", ".join(k.name for k in KEYS if k.table == table)
                raise ConfigError(f"{_at(path, line)}unknown key {name!r} in [{table}] (its keys are {known})")
            if isinstance(value, dict):
                raise ConfigError(f"{_at(path, line)}{table}.{name} must be {key.expected}, not a table")
            found[key.dotted] = value
            key.check(value, f"{_at(path, line)}{key.dotted}")
    return found


def _at(path: str, line: int | None) -> str:
    return f"{path}:{line}: " if line else f"{path}: "


def line_of(text: str, table: str, name: str | None) -> int | None:
    """The line where key ``name`` of ``table`` is set (``name`` None: the table's header), if a simple scan finds it.

    For error messages only: the value read is always tomllib's.
    """
    current = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]").split("]")[0].strip().strip("\"'")
            if name is None and current == table:
                return number
            continue
        if name is None:
            continue
        key = line.partition("=")[0].strip().strip("\"'")
        if (current == table and key == name) or (current == "" and key == f"{table}.{name}"):
            return number
    return None


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}  # fmt: skip
    return kinds.get(type(value), f"a {type(value).__name__}")
