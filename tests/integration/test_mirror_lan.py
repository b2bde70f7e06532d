"""Mirrors on the test LAN (issue 14's proofs): real hakeeperd, replication processes, TLS data connections.

Every node's backing store is a sparse image file in its state directory. hakeeperd starts the
replication processes itself once ``hakeeper mirror create`` is committed; the source's loop device
comes from ``hakeeper mirror status --json``. The filesystem is made, mounted and written *inside*
node1 (its mount namespace); node2's copy is checked inside node2, on a copy of its store (mounting
the copy replays ext4's journal, as any crash recovery would; the store itself is never written by
hand), then ``e2fsck -fn`` must find the copy clean.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hakeeper.db import Lcd
from hakeeper.lab.cluster import HaCluster
from hakeeper.lab.lan import Lan
from hakeeper.replication import loop
from hakeeper.replication.dataport import data_port
from hakeeper.replication.process import volume_dir

pytestmark = [pytest.mark.needs_root, pytest.mark.slow]

MiB = 1 << 20
SIZE = 128 * MiB
FILE = 256 * 1024  # each file written and fsynced by itself
MIRRORING = 60.0  # s for a new mirror's full resync (a sparse image: mostly holes)
SHELL = 120.0


def requirements() -> None:
    for tool in ("mkfs.ext4", "e2fsck", "sha256sum", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not Path("/dev/fuse").exists() or not Path(loop.LOOP_CONTROL).exists():
        pytest.skip("needs /dev/fuse and /dev/loop-control (modules fuse and loop)")
    try:
        from hakeeper.replication import fusefs

        fusefs.load_mfusepy()
    except Exception as exc:  # noqa: BLE001 -- any reason it cannot load is the skip's reason
        pytest.skip(f"the FUSE volume cannot run here: {exc}")


def image(path: Path, size: int = SIZE) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def payloads(base: Path, count: int) -> dict[str, str]:
    """``count`` files of random bytes for the nodes to copy: name -> sha256."""
    base.mkdir(exist_ok=True)
    sums = {}
    for i in range(count):
        data = os.urandom(FILE)
        (base / f"f{i:04d}").write_bytes(data)
        sums[f"f{i:04d}"] = hashlib.sha256(data).hexdigest()
    return sums


def run(lan: Lan, node: str, script: str, timeout: float = SHELL) -> str:
    done = lan.node(node).run(["sh", "-ec", script], timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{node}: script failed ({done.returncode}): {done.stderr}\n{script}")
    return done.stdout


def status(ha: HaCluster, node: str = "node1") -> dict[str, Any]:
    records = json.loads(ha.ok(node, "hakeeper", "mirror", "status", "data", "--json"))
    record: dict[str, Any] = records[0]
    return record


def state(ha: HaCluster) -> str:
    return str(status(ha)["targets"][0]["state"])


def wait_state(ha: HaCluster, wanted: str, timeout: float = MIRRORING) -> dict[str, Any]:
    ha.wait(lambda: state(ha) == wanted, timeout, f"the mirror of data {wanted}", step=0.3)
    return status(ha)


def create(ha: HaCluster, mode: str) -> tuple[str, str]:
    source, target = image(ha.root("node1") / "data.img"), image(ha.root("node2") / "data.img")
    ha.ok("node1", "hakeeper", "mirror", "create", "data", "--store", source, "--target", "node2",
          "--target-store", target, "--mode", mode)  # fmt: skip
    return source, target


def data_bytes(path: str | Path, chunk: int = 64 * 1024) -> int:
    """Bytes in the chunks of ``path`` that are not all zeros: what a full resync would send."""
    zeros, found = bytes(chunk), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            found += len(block) if not zeros.startswith(block) else 0
    return found


def write_files(lan: Lan, device: str, mnt: Path, src: Path, names: list[str], *, mkfs: bool) -> None:
    """On node1: (mkfs and) mount ``device`` on ``mnt``, copy each payload with fsync."""
    copies = "\n".join(f"dd if={src / n} of={mnt / n} bs=64K conv=fsync status=none" for n in names)
    prepare = f"mkfs.ext4 -q -F {device}\n" if mkfs else ""
    run(lan, "node1", f"{prepare}mkdir -p {mnt}\nmountpoint -q {mnt} || mount {device} {mnt}\n{copies}\nsync -f {mnt}")


def check_copy(lan: Lan, store: str, copy: Path, mnt: Path) -> tuple[dict[str, str], dict[str, int]]:
    """On node2: a copy of its store, mounted (journal replay), read; unmounted; ``e2fsck -fn``: clean.

    Returns the files found: name -> sha256 and name -> size.
    """
    subprocess.run(["cp", "--sparse=always", store, str(copy)], check=True, timeout=SHELL)
    script = (
        f"mkdir -p {mnt}\nmount -o loop {copy} {mnt}\ntrap 'cd /; umount {mnt}' EXIT\n"
        f'cd {mnt}\nfor f in f*; do if [ -e "$f" ]; then\n'
        "  echo \"$(sha256sum < $f | cut -d' ' -f1) $(stat -c %s $f) $f\"\nfi; done"
    )
    out = run(lan, "node2", script)
    fsck = lan.node("node2").run(["e2fsck", "-fn", str(copy)], timeout=SHELL)
    assert fsck.returncode == 0, f"e2fsck -fn on node2's data: {fsck.returncode}\n{fsck.stdout}{fsck.stderr}"
    sums, sizes = {}, {}
    for line in out.splitlines():
        digest, size, name = line.split()
        sums[name], sizes[name] = digest, int(size)
    return sums, sizes


@pytest.fixture
def mirror_lab(ha_cluster: HaCluster, lan: Lan) -> HaCluster:
    requirements()
    return ha_cluster


def test_sync_mirror_keeps_every_fsynced_file_through_a_power_off(mirror_lab: HaCluster, lan: Lan) -> None:
    ha = mirror_lab
    base = ha.base
    sums = payloads(base / "payload", 24)
    _, target = create(ha, "sync")
    record = wait_state(ha, "Mirroring")
    device = record["device"]
    assert record["role"] == "source" and device.startswith("/dev/loop")
    assert not (volume_dir(ha.root("node2"), "data") / "device").exists(), "a target exposes no device"

    write_files(lan, device, base / "mnt1", base / "payload", sorted(sums), mkfs=True)
    assert state(ha) == "Mirroring"
    lan.power_off(lan.node("node1"))

    found, _ = check_copy(lan, target, base / "copy.img", base / "mnt2")
    assert found == sums, "every fsynced file on node2, with its checksum"


def test_async_mirror_keeps_a_prefix_of_the_files_through_a_power_off(mirror_lab: HaCluster, lan: Lan) -> None:
    ha = mirror_lab
    base = ha.base
    count = 200
    sums = payloads(base / "payload", count)
    _, target = create(ha, "async")
    device = wait_state(ha, "Mirroring")["device"]
    write_files(lan, device, base / "mnt1", base / "payload", [], mkfs=True)
    mnt, src = base / "mnt1", base / "payload"
    loop_script = "".join(
        f"dd if={src / n} of={mnt / n} bs=64K conv=fsync status=none; echo {n}\n" for n in sorted(sums)
    )
    writer = lan.node("node1").popen(["sh", "-ec", loop_script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    written = [writer.stdout.readline().strip() for _ in range(count // 3)]  # bounded: the LAN kills it at close
    lan.power_off(lan.node("node1"))  # mid-write
    writer.wait(10)
    writer.stdout.close()

    found, sizes = check_copy(lan, target, base / "copy.img", base / "mnt2")
    names = sorted(found)
    print(f"async: {len(written)}+ files written on node1 before the power-off, {len(names)} on node2")
    assert names == sorted(sums)[: len(names)], "the files on node2 are a prefix of those written"
    assert len(names) >= len(written) // 2, "an async mirror follows closely on an idle LAN"
    for name in names[:-1]:
        assert found[name] == sums[name], name
    assert sizes[names[-1]] <= FILE  # the last may have been caught mid-write


def test_a_cut_data_link_pauses_the_mirror_and_resends_only_the_dirty_regions(mirror_lab: HaCluster, lan: Lan) -> None:
    ha = mirror_lab
    base = ha.base
    sums = payloads(base / "payload", 64)
    names = sorted(sums)
    create(ha, "sync")
    device = wait_state(ha, "Mirroring")["device"]
    write_files(lan, device, base / "mnt1", base / "payload", names[:16], mkfs=True)
    with Lcd.open(ha.root("node2"), readonly=True) as lcd:
        port = data_port(int(lcd.settings()["comm_port"]))
    cut = (
        "table inet rproc_cut {\n  chain input {\n    type filter hook input priority -10; policy accept;\n"
        f"    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n"
        "  chain output {\n    type filter hook output priority -10; policy accept;\n"
        f"    tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n}}\n"
    )
    node2 = lan.node("node2")
    node2.run(["nft", "-f", "-"], input=cut, check=True)
    try:
        write_files(lan, device, base / "mnt1", base / "payload", names[16:], mkfs=False)  # 12 MiB while cut
        paused = wait_state(ha, "Paused", timeout=30)
        dirty = paused["targets"][0]["dirty_bytes"]
    finally:
        node2.run(["nft", "delete", "table", "inet", "rproc_cut"], check=True)
    back = wait_state(ha, "Mirroring", timeout=90)
    resent = back["targets"][0]["resync_bytes_sent"]
    print(f"link cut: volume {SIZE} bytes, dirty while cut {dirty} bytes, resent after the heal {resent} bytes")
    assert 0 < resent < SIZE // 2, (resent, SIZE)
    assert resent <= dirty + 4 * MiB  # what was dirty (plus what was written while it resynced)
    ha.ok("node1", "hakeeper", "mirror", "verify", "data")
    ha.wait(lambda: "verify found" in ha.log("node1"), 60, "the verify's result", step=0.3)
    assert "data -> node2: verify found no difference" in ha.log("node1")

    # lkstop with the filesystem still mounted: hakeeperd does not kill the busy process, the volume
    # serves on, and the process stops by itself once the filesystem is unmounted.
    pid_file = volume_dir(ha.root("node1"), "data") / "pid"
    pid = int(pid_file.read_text())
    ha.ok("node1", "lkstop", "-f")
    assert f"replication process (pid {pid}) serves on: a filesystem on its volume is still mounted" in ha.log("node1")
    mnt = base / "mnt1"
    found = run(lan, "node1", f"sha256sum < {mnt / names[0]}").split()[0]
    assert found == sums[names[0]], "the volume still serves"
    run(lan, "node1", f"umount {mnt}")
    ha.wait(lambda: not pid_file.exists(), 60, "the process stops once unmounted", step=0.2)
    assert loop.wait_detached(Path(device).name, 30), f"{device} detached"


def test_a_killed_replication_process_is_restarted_and_the_volume_comes_back(mirror_lab: HaCluster, lan: Lan) -> None:
    ha = mirror_lab
    base = ha.base
    sums = payloads(base / "payload", 48)
    names = sorted(sums)
    create(ha, "sync")
    device = wait_state(ha, "Mirroring")["device"]
    mnt, src = base / "mnt1", base / "payload"
    write_files(lan, device, mnt, src, names[:16], mkfs=True)
    # Killed mid-write: a writer goes on fsyncing files one by one (it fails once the volume is gone).
    script = "".join(
        f"dd if={src / n} of={mnt / n} bs=64K conv=fsync status=none || exit 0; echo {n}\n" for n in names[16:]
    )
    writer = lan.node("node1").popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    synced = names[:16] + [writer.stdout.readline().strip() for _ in range(4)]
    pid_file = volume_dir(ha.root("node1"), "data") / "pid"
    pid = int(pid_file.read_text())
    lan.node("node1").kill_daemon(pid, sig=signal.SIGKILL)
    synced += [line.strip() for line in writer.stdout]  # what it fsynced before the kill took effect
    writer.wait(60)
    writer.stdout.close()

    ha.wait(lambda: f"(pid {pid}) died (killed by SIGKILL)" in ha.log("node1"), 30, "hakeeperd sees the death")
    ha.wait(lambda: pid_file.exists() and int(pid_file.read_text() or 0) != pid, 60, "a new process", step=0.2)
    again = wait_state(ha, "Mirroring")
    resent = again["targets"][0]["resync_bytes_sent"]
    print(f"restart: {device} -> {again['device']}; volume {SIZE} bytes, resent {resent} bytes")
    assert again["device"] != device and again["device"].startswith("/dev/loop")
    assert resent < SIZE // 2, "not the whole volume (that the bitmap alone decides: the whole-crash test)"
    # The old mount sits on a dead device (I/O errors, as with a failed disk): unmount it, mount the new one.
    script = (
        f"umount {mnt} || umount -l {mnt}\nmount {again['device']} {mnt}\ntrap 'cd /; umount {mnt}' EXIT\n"
        f"cd {mnt}\nfor f in f*; do echo \"$(sha256sum < $f | cut -d' ' -f1) $f\"; done"
    )
    found = {name: digest for digest, name in (line.split() for line in run(lan, "node1", script).splitlines())}
    assert {n: found.get(n) for n in synced} == {n: sums[n] for n in synced}, "every fsynced file intact"
    ha.ok("node1", "hakeeper", "mirror", "verify", "data")
    ha.wait(lambda: "verify found" in ha.log("node1"), 60, "the verify's result", step=0.3)
    assert "data -> node2: verify found no difference" in ha.log("node1"), "node2 has what node1 has"
    assert loop.wait_detached(Path(device).name, 30), f"the dead {device} went once unmounted"

    # lkstop stops the process cleanly: its loop device goes, its files too.
    new = int(pid_file.read_text())
    ha.ok("node1", "lkstop", "-f")
    ha.wait(lambda: f"replication process (pid {new}) stopped (0)" in ha.log("node1"), 60, "a clean stop")
    assert loop.wait_detached(Path(again["device"]).name, 30), f"{again['device']} detached at lkstop"
    assert not pid_file.exists() and not (pid_file.parent / "device").exists()


def test_a_source_that_crashes_whole_mid_write_resyncs_partially_from_its_bitmap_when_it_is_back(
    mirror_lab: HaCluster, lan: Lan
) -> None:
    """Everything on node1 dies mid-write (power off: hakeeperd, the replication process, the writer); node1
    comes back as the source (nobody promoted node2), its process reads the intent log it left on disk and
    resends only what it marks: every fsynced file is intact and node2 has what node1 has."""
    ha = mirror_lab
    base = ha.base
    sums = payloads(base / "payload", 128)
    names = sorted(sums)
    create(ha, "sync")
    device = wait_state(ha, "Mirroring")["device"]
    mnt, src = base / "mnt1", base / "payload"
    write_files(lan, device, mnt, src, names[:96], mkfs=True)  # 24 MiB of files node2 has for good

    def cleared() -> bool:
        dirty = status(ha)["targets"][0]["dirty_bytes"]
        return dirty is not None and int(dirty) <= 8 * MiB

    ha.wait(cleared, 30, "the intent log cleared behind the writes")
    script = "".join(
        f"dd if={src / n} of={mnt / n} bs=64K conv=fsync status=none || exit 0; echo {n}\n" for n in names[96:]
    )
    node1 = lan.node("node1")
    writer = node1.popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    synced = names[:96] + [writer.stdout.readline().strip() for _ in range(4)]
    lan.power_off(node1)  # mid-write: what the writer fsynced after these four is not counted on
    writer.stdout.close()
    bitmap = volume_dir(ha.root("node1"), "data") / "node2.bitmap"
    assert bitmap.exists(), "the intent log stays on node1's disk"

    full = data_bytes(ha.root("node1") / "data.img")  # what a full resync would send

    lan.power_on(node1)
    ha.start(node1)
    ha.wait(lambda: ha.command("node1", "hakeeper", "mirror", "status", "data").returncode == 0, 60, "hakeeperd")
    again = wait_state(ha, "Mirroring")
    resent = again["targets"][0]["resync_bytes_sent"]
    print(f"after the crash: volume {SIZE} bytes, {full} of them data (a full resync), resent {resent} bytes")
    assert again["role"] == "source" and again["device"].startswith("/dev/loop")
    assert resent < full // 2, "partial: from the persistent bitmap, not a full resync"
    script = (
        f"mkdir -p {mnt}\nmount {again['device']} {mnt}\ntrap 'cd /; umount {mnt}' EXIT\n"
        f"cd {mnt}\nfor f in f*; do echo \"$(sha256sum < $f | cut -d' ' -f1) $f\"; done"
    )
    found = {name: digest for digest, name in (line.split() for line in run(lan, "node1", script).splitlines())}
    assert {n: found.get(n) for n in synced} == {n: sums[n] for n in synced}, "every fsynced file intact"
    ha.ok("node1", "hakeeper", "mirror", "verify", "data")
    ha.wait(lambda: "verify found" in ha.log("node1"), 60, "the verify's result", step=0.3)
    assert "data -> node2: verify found no difference" in ha.log("node1"), "node2 has what node1 has"


def test_a_target_added_to_a_mounted_volume_joins_the_running_process(mirror_lab: HaCluster, lan: Lan) -> None:
    ha = mirror_lab
    base = ha.base
    sums = payloads(base / "payload", 8)
    create(ha, "sync")
    device = wait_state(ha, "Mirroring")["device"]
    write_files(lan, device, base / "mnt1", base / "payload", sorted(sums), mkfs=True)
    pid_file = volume_dir(ha.root("node1"), "data") / "pid"
    pid = int(pid_file.read_text())

    third = image(ha.root("node3") / "data.img")
    ha.ok("node1", "hakeeper", "mirror", "create", "data", "--target", "node3", "--target-store", third,
          "--mode", "async")  # fmt: skip

    def states() -> dict[str, str]:
        return {t["node"]: t["state"] for t in status(ha)["targets"]}

    ha.wait(lambda: states() == {"node2": "Mirroring", "node3": "Mirroring"}, MIRRORING, "both targets Mirroring")
    assert int(pid_file.read_text()) == pid and status(ha)["device"] == device, "no restart: the volume stayed up"
    assert f"replication process (pid {pid}) reloaded" in ha.log("node1")
    run(lan, "node1", f"umount {base / 'mnt1'}")
    for target in ("node2", "node3"):
        ha.ok("node1", "hakeeper", "mirror", "verify", "data", "--target", target)
        said = f"data -> {target}: verify found"
        ha.wait(lambda: said in ha.log("node1"), 60, f"verify of {target}")  # noqa: B023 -- waited for here
        assert f"data -> {target}: verify found no difference" in ha.log("node1")
