"""What the commands store and print stays parseable, whatever a field holds, wherever the output goes.

Free text (info, reasons, kit parameters) is one line of printable text; field
output cannot be shifted by a separator inside a field; a listing whose reader
went away, a closed stdout or an ASCII-only locale never gives an internal error.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import Cli, Result
from tests.unit.test_cli_errors import lcd_dump

OK, SYSCALL, SYNTAX, INTERNAL, EXISTS, ILLEGAL, RANGE, MISSING, REFUSED, COMM = range(10)


@pytest.fixture
def web(cli: Cli) -> Cli:
    """gen/app web (id web-1) and vip (an IPv6 address as id: it holds the ':' separators scripts use)."""
    for argv in (
        ["ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-1", "-v", "listen=[::1]:80"],
        ["ins_create", "-a", "gen", "-r", "app", "-t", "vip", "-i", "2001:db8::50"],
    ):
        assert cli(*argv) == Result(OK, "", ""), argv
    return cli


# ---------------------------------------------------------------------- free text is one printable line

CONTROL_TEXTS = ["a\x01b", "two\nlines", "tab\there", "cr\rhere", "esc\x1b[31m", "nel\x85", "ls\u2028x", "del\x7f"]


@pytest.mark.parametrize("text", CONTROL_TEXTS, ids=repr)
@pytest.mark.parametrize(
    "argv",
    [
        ("ins_create", "-a", "gen", "-r", "app", "-t", "new", "-i", "new-1", "-v", "{}"),
        ("ins_setinfo", "-t", "web", "-v", "{}"),
        ("ins_setstate", "-t", "web", "-S", "ISU", "-R", "{}"),
    ],
    ids=["ins_create -v", "ins_setinfo -v", "ins_setstate -R"],
)
def test_free_text_with_a_control_character_is_refused(web: Cli, root: Path, argv: tuple[str, ...], text: str) -> None:
    before = lcd_dump(root)
    result = web(*[text if word == "{}" else word for word in argv])
    assert result.code == ILLEGAL, result
    assert result.out == ""
    assert "control character" in result.err and result.err.count("\n") == 1
    assert lcd_dump(root) == before


def test_printable_free_text_is_kept_as_given(web: Cli) -> None:
    text = "host:port ; 100% \u2013 café ☃ \\ back"
    assert web("ins_setinfo", "-t", "web", "-v", text) == Result(OK, "", "")
    assert web("ins_setstate", "-t", "web", "-S", "ISU", "-R", text) == Result(OK, "", "")
    assert web("ins_list", "-t", "web").out.split("\x01")[5::5] == [text, text + "\n"]


# ---------------------------------------------------------------------- field output


def test_a_separator_inside_a_field_cannot_shift_the_fields_after_it(web: Cli) -> None:
    assert web("ins_setstate", "-t", "vip", "-S", "ISU", "-R", "moved: by hand").code == OK
    line = web("ins_list", "-t", "vip", "-f:").out
    assert line == "gen:app:vip:2001\\x3adb8\\x3a\\x3a50:ISU:moved\\x3a by hand:AUTORES_ISP:INTELLIGENT:120:Y:\n"
    fields = line.rstrip("\n").split(":")
    assert len(fields) == 11 and fields[6:10] == ["AUTORES_ISP", "INTELLIGENT", "120", "Y"]


def test_info_is_the_last_field_and_printed_whole(web: Cli) -> None:
    """As LifeKeeper's scripts read it: everything after the tenth separator (``cut -d: -f11-``) is the info."""
    line = web("ins_list", "-t", "web", "-f:").out.rstrip("\n")
    assert line.split(":", 10) == [
        *("gen", "app", "web", "web-1", "OSU", "created", "AUTORES_ISP", "INTELLIGENT", "120", "Y"),
        "listen=[::1]:80",
    ]


def test_text_stored_before_control_characters_were_refused_still_prints_one_line_a_record(
    web: Cli, root: Path
) -> None:
    with closing(sqlite3.connect(root / "lcd.sqlite")) as db, db:
        db.execute("UPDATE resources SET reason = ?, info = ? WHERE tag = 'web'", ("a\x01b\nc", '"x\\ny\\u0001"'))
    listing = web("ins_list").out
    assert listing.count("\n") == 2
    web_line = next(line for line in listing.splitlines() if "\x01web\x01" in line)
    assert web_line.split("\x01")[5] == "a\\x01b\\x0ac"
    assert web_line.split("\x01")[10] == "x\\x0ay\\x01"
    assert "(a\\x01b\\nc)" in web("lcdstatus").out


@pytest.mark.parametrize("sep", ["x", "3", "\\", "é"])
def test_a_separator_an_escape_could_hold_is_refused(web: Cli, sep: str) -> None:
    result = web("ins_list", "-f", sep)
    assert result.code == SYNTAX and result.out == "" and "-f takes one character" in result.err


def test_a_failure_message_with_control_characters_is_recorded_escaped(cli: Cli, tmp_path: Path) -> None:
    """A script's last line goes into the reason: control characters and length never make recording fail."""
    noisy = tmp_path / "noisy"
    noisy.write_text("#!/bin/sh\nprintf 'bad\\033[31m\\001thing %s\\n' \"$(printf 'x%.0s' $(seq 1 1500))\"\nexit 1\n")
    noisy.chmod(0o755)
    assert cli("create", "gen/app", "-t", "noisy", f"restore={noisy}", f"remove={noisy}").code == OK
    result = cli("perform_action", "-t", "noisy", "-a", "restore")
    assert result.code == SYSCALL, result
    [record] = json.loads(cli("ins_list", "-t", "noisy", "--json").out)
    assert record["state"] == "OSF"
    assert "bad\\x1b[31m\\x01thing xxx" in record["reason"]
    assert len(record["reason"]) == 1024 and record["reason"].endswith("...")


# ---------------------------------------------------------------------- where the output goes

BIN = Path(sys.executable).parent
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}


def environment(root: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING", "HAKEEPER_"))}
    keep.pop("PYTHONUNBUFFERED", None)
    return {**keep, "HAKEEPER_ROOT": str(root), **extra}


def closed_pipe(root: Path, *argv: str, **env: str) -> Result:
    """Run a console script whose stdout is a pipe nobody reads any more (``| head -0``)."""
    with subprocess.Popen(
        [BIN / argv[0], *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(root, **env)
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before the command writes: its first write meets EPIPE
        err = proc.stderr.read()
        return Result(proc.wait(timeout=60), "", err.decode())


def shell(root: Path, command: str, **env: str) -> Result:
    """Run ``command`` in sh with the console scripts first on PATH (for redirections such as ``>&-``)."""
    proc = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        env=environment(root, PATH=f"{BIN}:{os.environ.get('PATH', '')}", **env),
        timeout=60,
        check=False,
    )
    return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
@pytest.mark.parametrize("size", ["small", "large"], ids=["a few lines", "more than a pipe holds"])
@pytest.mark.parametrize("argv", [("ins_list",), ("lcdstatus",), ("lcdstatus", "--json"), ("hakeeper", "--help")])
def test_a_reader_that_went_away_is_not_an_error(
    web: Cli, root: Path, argv: tuple[str, ...], size: str, unbuffered: bool
) -> None:
    """Small output meets EPIPE when Python flushes at exit, large output (64 KiB and more) while the command runs."""
    for i in range(40 if size == "large" else 0):
        assert web("ins_create", "-a", "gen", "-r", "app", "-t", f"r{i}", "-i", f"r{i}", "-v", "x" * 2000).code == OK
    result = closed_pipe(root, *argv, **({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    assert result == Result(OK, "", "")


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_command_whose_output_nobody_reads_keeps_its_own_exit_code(web: Cli, root: Path, unbuffered: bool) -> None:
    """web is OSU without a quickCheck script: stopped, exit 7, said on stdout; nobody reads it, still 7."""
    result = closed_pipe(
        root, "perform_action", "-t", "web", "-a", "quickCheck", **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})
    )
    assert result == Result(MISSING, "", "")


@pytest.mark.parametrize(
    "command",
    [
        "ins_list >&-",
        "ins_list 1</dev/null",
        "lcdstatus -e >&- 2>&-",
        "hakeeper --help >&-",
        "hakeeper ins_list --json 1</dev/null",
    ],
)
def test_a_closed_stdout_is_not_an_error(web: Cli, root: Path, command: str) -> None:
    assert shell(root, command) == Result(OK, "", "")


def test_a_command_with_stdout_closed_does_its_work_and_says_its_errors(web: Cli, root: Path) -> None:
    assert shell(root, "ins_create -a gen -r app -t quiet -i quiet-1 >&-") == Result(OK, "", "")
    assert web("ins_list", "-t", "quiet", "-f:").out.startswith("gen:app:quiet:quiet-1:")
    refused = shell(root, "ins_create -a gen -r app -t quiet -i quiet-2 >&-")
    assert refused == Result(EXISTS, "", "ins_create: a resource tagged 'quiet' exists already\n")


def test_an_ascii_only_locale_prints_escapes_never_an_encoding_error(web: Cli, root: Path) -> None:
    text = "caf\u00e9 \u2603 \U0001f600"
    assert web("ins_setinfo", "-t", "web", "-v", text) == Result(OK, "", "")
    assert web("ins_setstate", "-t", "web", "-S", "ISU", "-R", "r\u00e9paration") == Result(OK, "", "")
    listing = shell(root, "ins_list -t web -f:", **ASCII_LOCALE)
    assert listing.code == OK and listing.err == "", listing
    assert listing.out.isascii()
    assert listing.out.split(":", 10)[5] == "r\\u00e9paration"
    assert listing.out.split(":", 10)[10] == "caf\\u00e9 \\u2603 \\ud83d\\ude00\n"
    for argv in ("ins_list --json -t web", "lcdstatus --json", "hakeeper changes --json"):
        shown = shell(root, argv, **ASCII_LOCALE)
        assert shown.code == OK and shown.err == "" and shown.out.isascii(), (argv, shown)
        assert text in json.dumps(json.loads(shown.out), ensure_ascii=False), argv  # the same text, read back
    for argv in ("lcdstatus", "lcdstatus -e", "lcdstatus -q", "eqv_list", "hakeeper changes"):
        shown = shell(root, argv, **ASCII_LOCALE)
        assert shown.code == OK and shown.err == "" and shown.out.isascii(), (argv, shown)


def test_an_ascii_only_locale_names_an_argument_it_cannot_read(web: Cli, root: Path) -> None:
    refused = shell(root, "ins_list -t w\u00e9b", **ASCII_LOCALE)
    assert refused.code == ILLEGAL and refused.out == ""
    assert (
        refused.err
        == "ins_list: argument 'w\\u00e9b' cannot be read in this locale (ascii): run the command with LC_ALL=C.UTF-8\n"
    )


# ---------------------------------------------------------------------- lcdstatus -q --json


def test_lcdstatus_quiet_json_holds_only_the_resources_in_trouble(web: Cli) -> None:
    assert web("dep_create", "-p", "web", "-c", "vip").code == OK
    calm = json.loads(web("lcdstatus", "-q", "--json").out)
    assert (calm["resources"], calm["dependencies"], calm["hierarchies"]) == ([], [], [])
    assert web("ins_setstate", "-t", "vip", "-S", "ISU", "-R", "maintenance").code == OK
    trouble = json.loads(web("lcdstatus", "-q", "--json").out)
    assert [(r["tag"], r["state"], r["reason"]) for r in trouble["resources"]] == [("vip", "ISU", "maintenance")]
    assert trouble["hierarchies"] == [{"tag": "vip", "children": []}]
    assert web("lcdstatus", "-q").out == "vip ISU (maintenance)\n"
    everything = json.loads(web("lcdstatus", "--json").out)
    assert {r["tag"] for r in everything["resources"]} == {"web", "vip"}
