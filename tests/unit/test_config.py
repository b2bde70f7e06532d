"""The configuration file: what it gives, what overrides it, how a mistake in it is said, and that the
light path of a command still reads no TOML parser to find the state directory in it."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hakeeper.cli.base import run
from hakeeper.config import BY_NAME, ConfigError, load
from hakeeper.db import Lcd
from hakeeper.errors import IllegalArgument
from hakeeper.layout import CONFIG_ENV, DEFAULT_ROOT, scan_state_dir, state_root
from hakeeper.wire import root_of

FULL = """\
# a node's configuration
[node]
name = "node1"
state_dir = "/srv/hakeeper"   # the LCD and the rest

[log]
target = "file"
level = "debug"
file = "/var/log/hakeeper/hakeeperd.log"
max_bytes = 1048576
backups = 3

[listen]
addresses = ["198.18.0.11", "198.18.1.11:7380"]
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration file named by $HAKEEPER_CONFIG, and none of the variables that override it."""
    for name in ("HAKEEPER_ROOT", "HAKEEPER_NODE", "HAKEEPER_LOG_TARGET", "HAKEEPER_LOG_LEVEL", "HAKEEPER_LOG_FILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "hakeeper.toml"
    path.write_text(FULL)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return path


def test_every_key_is_read_with_the_line_it_came_from(config: Path) -> None:
    settings = load()
    assert settings.path == config
    assert settings.node_name == "node1"
    assert settings.state_dir == "/srv/hakeeper"
    assert settings.table("log") == {
        "target": "file", "level": "DEBUG", "file": "/var/log/hakeeper/hakeeperd.log", "max_bytes": 1048576,
        "backups": 3,
    }  # fmt: skip
    assert settings.listen == ("198.18.0.11", "198.18.1.11:7380")
    assert settings.values["node.state_dir"].shown() == f"file ({config}:4)"
    assert settings.values["listen.addresses"].shown() == f"file ({config}:14)"


def test_without_a_file_the_defaults(tmp_path: Path) -> None:
    settings = load(environ={})  # the default file: absent here (tests never write /etc/hakeeper)
    if settings.path is not None:
        pytest.skip(f"{settings.path} exists on this machine")
    assert settings.state_dir == DEFAULT_ROOT
    assert settings.log_file == f"{DEFAULT_ROOT}/hakeeperd.log"
    assert settings.table("log")["target"] == "auto"
    assert all(value.source == "default" for value in settings.values.values())


@pytest.mark.parametrize(
    ("option", "env", "expected", "source"),
    [
        ("/opt/a", "/opt/b", "/opt/a", "option"),
        (None, "/opt/b", "/opt/b", "env"),
        (None, None, "/srv/hakeeper", "file"),
    ],
)
def test_an_option_beats_the_environment_which_beats_the_file(
    config: Path, option: str | None, env: str | None, expected: str, source: str
) -> None:
    environ = {CONFIG_ENV: str(config)} | ({"HAKEEPER_ROOT": env} if env else {})
    settings = load(options={"node.state_dir": option}, environ=environ)
    assert (settings.state_dir, settings.values["node.state_dir"].source) == (expected, source)
    # the log file's default follows the state directory; the file's own log.file still wins over it
    assert settings.log_file == "/var/log/hakeeper/hakeeperd.log"


def test_the_log_file_defaults_to_the_state_directory_that_won(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[node]\nstate_dir = "/srv/x"\n[log]\nlevel = "warning"\n')
    settings = load(path, environ={"HAKEEPER_LOG_LEVEL": "error"})
    assert settings.log_file == "/srv/x/hakeeperd.log"
    assert (settings["log.level"], settings.values["log.level"].where) == ("ERROR", "HAKEEPER_LOG_LEVEL")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[node]\nnmae = "x"\n', ":2: unknown key 'nmae' in [node] (its keys are name, state_dir)"),
        ('[node]\nname = "x"\n\n[logs]\nlevel = "INFO"\n', ":4: unknown table [logs] (the tables are [listen], [log]"),
        ("[log]\nlevel = 3\n", ":2: log.level must be a string, not an integer"),
        ('[log]\nbackups = "5"\n', ":2: log.backups must be an integer, not a string"),
        ("[log]\nmax_bytes = -1\n", ":2: log.max_bytes must be within 0..1099511627776, not -1"),
        ('[log]\ntarget = "console"\n', ":2: log.target must be one of auto, journal, syslog, file, stderr, not"),
        ('[node]\nstate_dir = "var/lib"\n', ":2: node.state_dir must be an absolute path, not 'var/lib'"),
        ('[node]\nname = "node 1"\n', ":2: node.name 'node 1' may only hold letters, digits, '-', '_' and '.'"),
        ('[listen]\naddresses = "198.18.0.1"\n', ":2: listen.addresses must be an array of strings"),
        ('[listen]\naddresses = ["198.18.0.1:99999"]\n', ":2: listen.addresses address '198.18.0.1:99999' has no"),
        ("[node\n", ":1: not valid TOML: Expected ']' at the end of a table declaration"),
        ('node = "x"\n', ":1: node must be a table [node]"),
    ],
    ids=["unknown key", "unknown table", "string expected", "integer expected", "out of range", "not a target",
         "relative path", "bad node name", "not an array", "bad port", "not TOML", "not a table"],
)  # fmt: skip
def test_a_mistake_is_one_line_naming_the_file_the_line_and_what_was_expected(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "hakeeper.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    message = str(caught.value)
    assert message.startswith(str(path)) and said in message and "\n" not in message
    assert isinstance(caught.value, IllegalArgument)  # exit code 5, as every bad argument


def test_a_file_named_on_purpose_must_exist_and_an_empty_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(environ={CONFIG_ENV: str(tmp_path / "none.toml")})
    with pytest.raises(ConfigError, match="HAKEEPER_CONFIG is set but empty"):
        load(environ={CONFIG_ENV: ""})
    with pytest.raises(ConfigError, match="HAKEEPER_LOG_TARGET is set but empty"):
        load(environ={"HAKEEPER_LOG_TARGET": ""})


def check(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run("config", ["check", *argv], prog="hakeeper config", out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_config_check_prints_each_value_and_where_it_came_from(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAKEEPER_LOG_LEVEL", "warning")
    monkeypatch.setenv("HAKEEPER_LOG_FILE", str(tmp_path / "hakeeperd.log"))
    code, out, err = check(str(config), "--root", "/tmp/elsewhere")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert 'node.state_dir   = "/tmp/elsewhere"  # option (--root)' in lines
    assert 'log.level        = "WARNING"  # env (HAKEEPER_LOG_LEVEL)' in lines
    assert f'node.name        = "node1"  # file ({config}:3)' in lines
    assert "log.backups      = 3  # file" in out and lines[-1] == "# OK"


def test_config_check_of_a_wrong_file_fails_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[log]\nlevle = "INFO"\n')
    code, _, err = check(str(path))
    assert code == 5
    assert err == f"hakeeper config: {path}:2: unknown key 'levle' in [log] (its keys are {LOG_KEYS})\n"


LOG_KEYS = "target, level, file, max_bytes, backups"


def test_config_check_says_when_the_name_contradicts_the_nodes_lcd(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Lcd.open(state, node="node2").close()
    path = tmp_path / "hakeeper.toml"
    path.write_text(f'[node]\nname = "node1"\nstate_dir = "{state}"\n')
    code, _, err = check(str(path))
    assert code == 5
    assert f"node.name is 'node1' (file ({path}:2)), but the LCD in {state} belongs to node 'node2'" in err


def test_a_new_lcd_takes_the_configured_node_name(config: Path, tmp_path: Path) -> None:
    with Lcd.open(tmp_path / "state") as lcd:
        assert lcd.local_node == "node1"


def test_the_full_path_finds_the_state_directory_in_the_file_and_the_environment_still_wins(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert state_root() == Path("/srv/hakeeper")
    assert root_of([]) == "/srv/hakeeper"  # the light path agrees
    monkeypatch.setenv("HAKEEPER_ROOT", "/srv/env")
    assert state_root() == Path("/srv/env") and root_of([]) == "/srv/env"


# ---------------------------------------------------------------------- the light path's scan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", DEFAULT_ROOT),
        ('[node]\nname = "n"\n', DEFAULT_ROOT),
        ('[node]\nstate_dir = "/a"\n', "/a"),
        ("[ node ]  # c\nstate_dir='/a b' # c\n", "/a b"),
        ('[log]\nfile = "/x"\n[node]\nstate_dir = "/a"\n[listen]\naddresses = [\n "1.2.3.4",\n]\n', "/a"),
        ('[node]\nstate_dir = "/a\\u0041"\n', None),  # an escape: the full parser reads it
        ('node.state_dir = "/a"\n', None),  # a dotted key
        ('node = { state_dir = "/a" }\n', None),  # an inline table
        ('[node]\nstate_dir = """/a"""\n', None),
        ('state_dir = "/a"\n', None),  # not under [node]: the full parser says it is wrong
        ('[node]\nstate_dir = "/a"\nstate_dir = "/b"\n', None),
        ('[node.x]\nstate_dir = "/a"\n', None),
    ],
)
def test_the_scan_reads_plain_files_and_leaves_the_rest_to_the_parser(text: str, expected: str | None) -> None:
    assert scan_state_dir(text) == expected


SAFE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
LINES = st.lists(
    st.one_of(
        st.just("[node]"), st.just("[log]"), st.just("[listen]"), st.just(""), st.just("# state_dir"),
        SAFE.map(lambda v: f"state_dir = {v!r}"), SAFE.map(lambda v: f'state_dir = "{v}"'),
        SAFE.map(lambda v: f"name = {v!r}"), SAFE.map(lambda v: f"file = '{v}'  # x"),
        st.just("addresses = ["), st.just("]"), SAFE.map(lambda v: f"{v!r},"), SAFE,
    ),
    max_size=8,
)  # fmt: skip


@given(LINES)
@example(["[node]", "state_dir = '/a' # x"])
@example(["[log]", "addresses = [", "'[node]',", "]", "[node]", "state_dir = '/b'"])
def test_the_scan_never_disagrees_with_tomllib(lines: list[str]) -> None:
    """Where the scan answers, it is tomllib's answer (or the default when tomllib finds no state_dir)."""
    text = "\n".join(lines) + "\n"
    scanned = scan_state_dir(text)
    if scanned is None:
        return
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # a broken file: the full command says so (the light path only finds a daemon to ask)
    node = data.get("node")
    expected = node.get("state_dir", DEFAULT_ROOT) if isinstance(node, dict) else DEFAULT_ROOT
    assert scanned == expected


def test_the_light_path_with_a_configuration_file_imports_no_toml_parser(config: Path) -> None:
    """A command answered by hakeeperd finds the state directory in the file without tomllib (and re...)."""
    code = (
        "import sys; import hakeeper.cli.main; from hakeeper.wire import root_of; print(root_of([]));"
        "print(' '.join(m for m in ('tomllib', 're', 'datetime', 'typing', 'hakeeper.config') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "HAKEEPER_ROOT"}
    env |= {"PYTHONPATH": os.pathsep.join(sys.path), CONFIG_ENV: str(config)}
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["/srv/hakeeper", ""]


def test_config_check_warns_of_a_path_from_an_address_the_list_does_not_name(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Lcd.open(state, node="node1") as lcd:
        lcd.create_node("node2")
        lcd.create_path("node2", "198.18.0.11", "198.18.0.12")
        lcd.create_path("node2", "198.18.1.11", "198.18.1.12")
    path = tmp_path / "hakeeper.toml"
    path.write_text(f'[node]\nstate_dir = "{state}"\n[listen]\naddresses = ["198.18.0.11:7380"]\n')
    code, _, err = check(str(path))
    assert code == 0  # hakeeperd listens at each path's local address all the same
    assert err == (
        "hakeeper config: warning: the path to node2 (198.18.1.11 -> 198.18.1.12) is from an address "
        "listen.addresses does not name\n"
    )


def test_the_shipped_example_is_a_configuration_of_every_key_with_its_defaults(tmp_path: Path) -> None:
    """src/hakeeper/data/hakeeper.toml.example, as shipped (all commented) and uncommented, is read as it says."""
    from importlib.resources import files

    text = files("hakeeper").joinpath("data", "hakeeper.toml.example").read_text()
    shipped, uncommented = tmp_path / "shipped.toml", tmp_path / "uncommented.toml"
    shipped.write_text(text)
    uncommented.write_text(re.sub(r"^# (\w+ = )", r"\1", text, flags=re.M))
    defaults = load(shipped, environ={})
    assert all(value.source == "default" for value in defaults.values.values())
    settings = load(uncommented, environ={})
    assert {dotted for dotted, value in settings.values.items() if value.source == "file"} == set(BY_NAME)
    for dotted in BY_NAME:  # "every value shown is the default", but for the examples of a name and addresses
        if dotted not in ("node.name", "listen.addresses"):
            assert settings[dotted] == defaults[dotted], dotted


def test_dev_null_is_no_configuration_for_the_lab_and_the_demo(config: Path) -> None:
    """A machine's own hakeeper.toml (here: the fixture's) must not reach the lab's or the demo's nodes."""
    from hakeeper.config import without_config_file

    with without_config_file():
        settings = load()
        assert settings.state_dir == DEFAULT_ROOT and settings.node_name is None
        assert root_of([]) == DEFAULT_ROOT
    assert os.environ[CONFIG_ENV] == str(config)
    assert load().node_name == "node1"
