"""``hakeeper mirror switchover`` on the test LAN: real hakeeperd, replication processes, TLS data connections.

node1 is the source of ``data``, node2 (sync) and node3 (async) its targets. The switchover runs on
node2: node1 hands the volume over, the LCD's source becomes node2 on every node, and each node's
hakeeperd restarts its process in its new role. The bytes each target receives afterwards are those
the handover says it may lack: none here (every target was Mirroring).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hakeeper.db import Lcd
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.replication.controlsock import CONTROL_NAME, ProcessControl
from hakeeper.replication.process import volume_dir
from tests.integration.test_mirror_lan import (
    FILE,
    MIRRORING,
    SHELL,
    image,
    mirror_lab,  # noqa: F401 -- the fixture
    payloads,
    run,
    write_files,
)

pytestmark = [pytest.mark.needs_root, pytest.mark.slow]

KiB = 1 << 10


def status(ha: HaCluster, node: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(ha.ok(node, "hakeeper", "mirror", "status", "data", "--json"))[0]
    return record


def states(ha: HaCluster, node: str) -> dict[str, str]:
    return {t["node"]: t["state"] for t in status(ha, node)["targets"]}


def sources(ha: HaCluster, nodes: list[str]) -> set[str]:
    found = set()
    for node in nodes:
        with Lcd.open(ha.root(node), readonly=True) as lcd:
            found.add(lcd.mirror("data").source)
    return found


def switchover(ha: HaCluster, node: str) -> tuple[int, str, str]:
    done = ha.command(node, "hakeeper", "mirror", "switchover", "data")
    return done.returncode, done.stdout, done.stderr


def checksums(lan: Lan, node: str, mnt: Path) -> dict[str, str]:
    out = run(lan, node, f"cd {mnt}\nfor f in f*; do echo \"$(sha256sum < $f | cut -d' ' -f1) $f\"; done")
    return {name: digest for digest, name in (line.split() for line in out.splitlines())}


def test_switchover_to_a_mirroring_target_swaps_the_roles_and_resends_nothing(
    mirror_lab: HaCluster,  # noqa: F811
    lan: Lan,
) -> None:
    ha = mirror_lab
    base = ha.base
    nodes = ["node1", "node2", "node3"]
    sums = payloads(base / "payload", 24)
    names = sorted(sums)
    stores = {n: image(ha.root(n) / "data.img") for n in nodes}
    ha.ok("node1", "hakeeper", "mirror", "create", "data", "--store", stores["node1"], "--target", "node2",
          "--target-store", stores["node2"], "--mode", "sync")  # fmt: skip
    ha.ok("node1", "hakeeper", "mirror", "create", "data", "--target", "node3", "--target-store", stores["node3"],
          "--mode", "async")  # fmt: skip
    both = {"node2": "Mirroring", "node3": "Mirroring"}
    ha.wait(lambda: states(ha, "node1") == both, MIRRORING, "both targets Mirroring", step=0.3)
    device = status(ha, "node1")["device"]
    mnt1 = base / "mnt1"
    write_files(lan, device, mnt1, base / "payload", names[:16], mkfs=True)

    # Refused while node1 has the filesystem mounted: nothing changes, node1 goes on taking writes.
    code, out, err = switchover(ha, "node2")
    assert code == 1 and out == "", (code, out, err)
    assert "in use on node1" in err and "unmount" in err and "nothing changed" in err, err
    assert sources(ha, nodes) == {"node1"}
    assert status(ha, "node1")["device"] == device and states(ha, "node1") == both
    write_files(lan, device, mnt1, base / "payload", names[16:20], mkfs=False)  # not frozen
    run(lan, "node1", f"umount {mnt1}")

    code, out, err = switchover(ha, "node2")
    print(f"switchover: exit {code}\n{out}{err}")
    assert code == 0 and err == "", (code, out, err)
    assert "data: switched over from node1 to node2; node2 is the source now" in out
    assert sources(ha, nodes) == {"node2"}, "every node's LCD says node2"
    new = status(ha, "node2")
    assert new["source"] == "node2" and new["role"] == "source" and new["device"].startswith("/dev/loop")
    assert f"data: volume device {new['device']}" in out
    back = {"node1": "Mirroring", "node3": "Mirroring"}
    ha.wait(lambda: states(ha, "node2") == back, MIRRORING, "node1 and node3 Mirroring from node2", step=0.3)
    resent = {t["node"]: t["resync_bytes_sent"] for t in status(ha, "node2")["targets"]}
    print(f"switchover: volume {new['size']} bytes, resent after the swap: {resent}")
    assert all(sent is not None and sent <= 64 * KiB for sent in resent.values()), resent
    assert status(ha, "node1")["role"] == "target", "node1 serves no volume any more"
    assert not (ha.root("node1") / "replication" / "data" / "device").exists()

    # node2 mounts the volume: every file intact; it writes more, and the targets follow.
    mnt2 = base / "mnt2"
    run(lan, "node2", f"mkdir -p {mnt2}\nmount {new['device']} {mnt2}")
    try:
        found = checksums(lan, "node2", mnt2)
        assert found == {n: sums[n] for n in names[:20]}, "every file written on node1, intact on node2"
        copies = "\n".join(f"dd if={base / 'payload' / n} of={mnt2 / n} bs=64K conv=fsync status=none"
                           for n in names[20:])  # fmt: skip
        run(lan, "node2", f"{copies}\nsync -f {mnt2}")
        assert checksums(lan, "node2", mnt2) == sums
    finally:
        run(lan, "node2", f"umount {mnt2}")
    for target in ("node1", "node3"):
        ha.ok("node2", "hakeeper", "mirror", "verify", "data", "--target", target)
        said = f"data -> {target}: verify found"
        ha.wait(lambda: said in ha.log("node2"), 60, f"verify of {target}")  # noqa: B023 -- waited for here
        assert f"data -> {target}: verify found no difference" in ha.log("node2")
    assert FILE * len(names) < new["size"]

    # And back to node1: its old bitmaps are not trusted; the handover says what each may lack (nothing).
    code, out, err = switchover(ha, "node1")
    assert code == 0 and err == "" and "switched over from node2 to node1" in out, (code, out, err)
    assert sources(ha, nodes) == {"node1"}
    again = {"node2": "Mirroring", "node3": "Mirroring"}
    ha.wait(lambda: states(ha, "node1") == again, MIRRORING, "node2 and node3 Mirroring from node1", step=0.3)
    resent = {t["node"]: t["resync_bytes_sent"] for t in status(ha, "node1")["targets"]}
    print(f"switchover back: resent after the swap: {resent}")
    assert all(sent is not None and sent <= 64 * KiB for sent in resent.values()), resent
    device = status(ha, "node1")["device"]
    run(lan, "node1", f"mount {device} {mnt1}")
    try:
        assert checksums(lan, "node1", mnt1) == sums, "node2's writes on node1"
    finally:
        run(lan, "node1", f"umount {mnt1}")


def test_switchover_from_a_paused_target_is_refused_and_changes_nothing(
    mirror_lab: HaCluster,  # noqa: F811
    lan: Lan,
) -> None:
    ha = mirror_lab
    source, target = image(ha.root("node1") / "data.img"), image(ha.root("node2") / "data.img")
    ha.ok("node1", "hakeeper", "mirror", "create", "data", "--store", source, "--target", "node2",
          "--target-store", target, "--mode", "sync")  # fmt: skip
    ha.wait(lambda: states(ha, "node1") == {"node2": "Mirroring"}, MIRRORING, "Mirroring", step=0.3)
    device = status(ha, "node1")["device"]
    ha.ok("node1", "hakeeper", "mirror", "pause", "data", "--target", "node2")
    assert states(ha, "node1") == {"node2": "Paused"}
    code, out, err = switchover(ha, "node2")
    assert code == 1 and out == "", (code, out, err)
    assert "Paused, not Mirroring" in err and "refused by node1" in err, err
    assert sources(ha, ["node1", "node2"]) == {"node1"}
    assert status(ha, "node1")["device"] == device
    code, _, err = switchover(ha, "node1")
    assert code == 5 and "not a target" in err, err
    ha.ok("node1", "hakeeper", "mirror", "continue", "data")
    ha.wait(lambda: states(ha, "node1") == {"node2": "Mirroring"}, MIRRORING, "Mirroring again", step=0.3)
    run(lan, "node1", f"mkfs.ext4 -q -F {device}")  # node1 takes writes: it was never frozen


def test_a_handover_undone_lets_the_source_take_writes_again(
    mirror_lab: HaCluster,  # noqa: F811
    lan: Lan,
) -> None:
    """What ``switchover`` does when the LCD change fails after the handover: thaw on node1, forget on node2."""
    ha = mirror_lab
    source, target = image(ha.root("node1") / "data.img"), image(ha.root("node2") / "data.img")
    ha.ok("node1", "hakeeper", "mirror", "create", "data", "--store", source, "--target", "node2",
          "--target-store", target, "--mode", "sync")  # fmt: skip
    ha.wait(lambda: states(ha, "node1") == {"node2": "Mirroring"}, MIRRORING, "Mirroring", step=0.3)
    device = status(ha, "node1")["device"]
    on1 = ProcessControl("data", volume_dir(ha.root("node1"), "data") / CONTROL_NAME)
    on2 = ProcessControl("data", volume_dir(ha.root("node2"), "data") / CONTROL_NAME)
    kept = volume_dir(ha.root("node2"), "data") / "generation.json.handover"

    answer = on1.handover("node2", timeout=30)
    assert answer["targets"] == [{"node": "node2", "state": "Mirroring", "dirty_bytes": 0}], answer
    assert kept.exists(), "the handover is durable on node2"
    frozen = lan.node("node1").run(["dd", "if=/dev/zero", f"of={device}", "bs=4K", "count=1", "oflag=direct"],
                                   timeout=SHELL)  # fmt: skip
    assert frozen.returncode != 0, "node1 takes no writes once it handed over"
    assert on1.thaw() == "data: node1 takes writes again"
    assert on2.forget_handover() == "data: node2 stays a target"
    assert not kept.exists()

    run(lan, "node1", f"mkfs.ext4 -q -F {device}")  # writes again, to node2 as well
    assert states(ha, "node1") == {"node2": "Mirroring"} and status(ha, "node1")["device"] == device
    ha.ok("node1", "hakeeper", "mirror", "verify", "data")
    ha.wait(lambda: "verify found" in ha.log("node1"), 60, "the verify's result", step=0.3)
    assert "data -> node2: verify found no difference" in ha.log("node1")
