"""A kit carries a resource's local side to another node: gen/app's copied scripts, byte for byte, mode 0700."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from hakeeper.db import Resource, State
from hakeeper.errors import HakeeperError, IllegalArgument, SystemCallFailed
from hakeeper.kits.base import KitContext
from hakeeper.kits.gen_app import GenAppKit
from hakeeper.kits.ocf import OcfKit

# Bytes that a text round trip would change: no final newline, CR LF, a NUL, bytes that are not UTF-8
# (after a #! line the kernel can run: gen/app refuses a script it could not).
RESTORE = b"#!/bin/sh\necho start\r\n\x00\xff\xfe tail"
REMOVE = b"#!/bin/sh\nexit 0\n"


def script(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / "sources" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o755)
    return str(path)


def source_kit(tmp_path: Path) -> tuple[GenAppKit, Resource]:
    kit = GenAppKit(KitContext(tmp_path / "node1", "node1"))
    values = kit.check_params(
        {"restore": script(tmp_path, "start", RESTORE), "remove": script(tmp_path, "stop", REMOVE), "info": "x"}
    )
    created = kit.create("web", values, None)
    return kit, Resource("web", created.id, "gen", "app", info=created.info, state=State.ISP)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_gen_app_export_then_adopt_on_another_node_gives_the_same_scripts_mode_0700(tmp_path: Path) -> None:
    source, resource = source_kit(tmp_path)
    payload = json.loads(json.dumps(source.export(resource)))  # it crosses the network as JSON
    target = GenAppKit(KitContext(tmp_path / "node2", "node2"))
    target.adopt("web", resource.info, payload)
    for name, content in (("restore", RESTORE), ("remove", REMOVE)):
        copy = target.instance_dir("web") / name
        assert copy.read_bytes() == content == (source.instance_dir("web") / name).read_bytes()
        assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert files_under(target.instance_dir("web").parent) == ["actions", "actions/remove", "actions/restore"]
    assert asyncio.run(target.validate(resource)).ok


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({}, "no scripts"),
        ({"scripts": {"../../evil": "ZXZpbA=="}}, "a name that is not a script"),
        ({"scripts": {"restore": "not base64!"}}, "not base64"),
        ({"scripts": {"restore": 7}}, "not text"),
    ],
)
def test_gen_app_refuses_a_bad_payload_and_leaves_nothing(tmp_path: Path, payload: dict[str, object], why: str) -> None:
    target = GenAppKit(KitContext(tmp_path / "node2", "node2"))
    with pytest.raises(IllegalArgument):
        target.adopt("web", {}, payload)
    assert files_under(tmp_path / "node2") == []
    assert not (tmp_path / "evil").exists()


def test_gen_app_adopt_that_cannot_write_leaves_nothing(tmp_path: Path) -> None:
    source, resource = source_kit(tmp_path)
    target = GenAppKit(KitContext(tmp_path / "node2", "node2"))
    blocked = target.instance_dir("web")
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the actions directory goes")  # the rename into place fails
    with pytest.raises(SystemCallFailed, match="cannot install the scripts of web"):
        target.adopt("web", resource.info, source.export(resource))
    assert files_under(blocked.parent) == ["actions"], "the staging directory is gone"
    assert blocked.read_text() == "a file where the actions directory goes"


def test_gen_app_discard_undoes_adopt(tmp_path: Path) -> None:
    source, resource = source_kit(tmp_path)
    target = GenAppKit(KitContext(tmp_path / "node2", "node2"))
    target.adopt("web", resource.info, source.export(resource))
    target.discard("web")
    assert not target.instance_dir("web").parent.exists()


def test_a_kit_with_nothing_local_exports_nothing(tmp_path: Path) -> None:
    kit = OcfKit(KitContext(tmp_path, "node1"))
    resource = Resource("d", "d", "ocf", "ra", info={"agent": "ocf:heartbeat:Dummy", "params": {}})
    assert kit.export(resource) == {}
    kit.adopt("d", resource.info, {})  # nothing to do, and no error
    assert files_under(tmp_path) == []


def test_export_of_scripts_that_cannot_be_read_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    source, resource = source_kit(tmp_path)
    (source.instance_dir("web") / "restore").unlink()
    (source.instance_dir("web") / "restore").mkdir()  # unreadable as a file, even for root
    with pytest.raises(HakeeperError, match="restore script of web"):
        source.export(resource)
