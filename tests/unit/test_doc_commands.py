"""Every command line the docs show is one the commands accept (issue 13: docs true to the code).

The ``sh`` blocks of README.md and docs/*.md are read as an administrator would
copy them: prompts (``node1#``, ``node2$``) and comments dropped, lines joined at
a trailing backslash, ``;``, ``&&``, ``|`` and a trailing ``&`` splitting
commands. Each command that is one of hakeeper's (``hakeeper SUB``, or a
LifeKeeper name as ``lcdstatus``) is parsed by its own parser, as if typed: an
option the docs name that the command does not take, a missing required one,
or a command that no longer exists fails here. The shell itself must parse each
block (``bash -n``).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from hakeeper.cli.base import parse
from hakeeper.errors import HakeeperError

REPO = Path(__file__).resolve().parents[2]
PLACES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
PROMPT = re.compile(r"^\s*(?:node\d+|[\w-]+)?[#$]\s+")
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]) - {"hakeeperd"}
PROMPT_WORD = re.compile(r"node\d+[#$]")  # a prompt inside a line: node1$ lkstart; node2$ lkstart
GLOBAL = {"--root", "--config"}
OPERATORS = (";", "&&", "||", "|", "&")  # hakeeper's own options before the command


def blocks() -> list[tuple[str, str]]:
    found = []
    for path in PLACES:
        for block in BLOCK.findall(path.read_text()):
            found.append((str(path.relative_to(REPO)), block))
    return found


def commands(block: str) -> list[list[str]]:
    """The commands of one block, each as its argv (only hakeeper's)."""
    joined = re.sub(r"\\\n", " ", block)
    out = []
    for raw in joined.splitlines():
        line = PROMPT.sub("", raw).strip()
        if not line or line.startswith("#") or "<<" in line:
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # a heredoc's body, not a command
        argv: list[str] = []
        redirect = False
        for typed in [*words, ";"]:
            end = typed in OPERATORS or (typed.endswith((";", "&")) and not typed.endswith("&&"))
            word = typed if typed in OPERATORS else typed.rstrip(";&")
            if redirect:
                redirect = False
            elif word in (">", ">>", "<", "2>"):
                redirect = True
            elif word and word not in OPERATORS and not (not argv and PROMPT_WORD.fullmatch(word)):
                argv.append(word)
            if end:
                if argv and argv[0] in SCRIPTS and not any(w == "..." or w.startswith("[") for w in argv):
                    out.append(argv)  # a synopsis ([--opt]) or an elided line (...) is no command
                argv = []
    return out


def shown_commands() -> list[tuple[str, list[str]]]:
    return [(place, argv) for place, block in blocks() for argv in commands(block)]


def test_the_docs_show_commands() -> None:
    assert len(shown_commands()) > 50, "the extraction found almost nothing: the test would prove nothing"


@pytest.mark.parametrize("place, block", blocks(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_every_shell_block_parses(place: str, block: str) -> None:
    done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"{place}: {done.stderr}\n{block}"


@pytest.mark.parametrize("place, argv", shown_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_command_shown_is_accepted_as_typed(place: str, argv: list[str]) -> None:
    words = list(argv)
    name = words.pop(0)
    if name == "hakeeper":
        while words and words[0] in GLOBAL:
            del words[:2]
        if not words or words[0].startswith("-"):
            return  # hakeeper --help, --version
        name = words.pop(0)
    try:
        parse(name, words, name)
    except (HakeeperError, SystemExit) as exc:
        pytest.fail(f"{place}: {' '.join(argv)}: {exc}")
