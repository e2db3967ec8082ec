"""A real live migration between two private libvirtd daemons on loopback (different host UUIDs, the disk at the
same path for both), as fleets run them: the source's exporter serves the job while it runs (libvirt_domain_job_info
with the outgoing-migration operation, data moved never decreasing) and its outcome after, and each exporter sends
its notification (the source lvxDomainMigrationStarted at the first iteration and lvxDomainMigrationEnded, the
destination lvxDomainMigrationStarted for the incoming domain)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from exporter.snmp import mib_lvx
from tests.conftest import _boot_disk, require, require_tool
from tests.support import snmp
from tests.support.libvirtd import DaemonError, PrivateLibvirtd, kvm_usable
from tests.support.process import Exporter, Metrics
from tests.support.trapd import Trapd
from tests.support.wait import poll_until

pytestmark = pytest.mark.realqemu

NAME = "lxmig"
OUTGOING, INCOMING, COMPLETED = 5, 4, 3
_LVX = ".".join(map(str, mib_lvx.LVX_ROOT))


def _xml(disk: Path, name: str, mem_mib: int) -> str:
    # No <interface>: both QEMUs run at once on one host, and a tap name would clash.
    return (f"<domain type='{'kvm' if kvm_usable() else 'qemu'}'><name>{name}</name>"
            f"<memory unit='MiB'>{mem_mib}</memory><vcpu>2</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><features><acpi/></features>"
            f"<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
            "<target dev='vda' bus='virtio'/></disk><memballoon model='virtio'/></devices></domain>")


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[tuple[PrivateLibvirtd, PrivateLibvirtd]]:
    """Two private libvirtds with host UUIDs of their own, and a running 512 MiB domain on the first."""
    require(__import__("os").geteuid() == 0, "the real tier needs root")
    tmp_path.chmod(0o755)
    src = PrivateLibvirtd(tmp_path / "src", host_uuid=str(uuid.uuid4()))
    dst = PrivateLibvirtd(tmp_path / "dst", host_uuid=str(uuid.uuid4()))
    try:
        src.start()
        dst.start()
    except DaemonError as exc:
        require(False, f"cannot start two private libvirtds: {exc}")
    try:
        disk = tmp_path / f"{NAME}.qcow2"  # outside both daemons' private folders: the same path for both
        _boot_disk(tmp_path / f"{NAME}.raw", disk)
        conn = libvirt.open(src.uri())
        try:
            # Use up domain ID 1 on the source (a start that fails at once), so that the destination's ID (1)
            # differs: both daemons would name the domain's cgroup after ID and name alike.
            try:
                conn.createXML(_xml(tmp_path / "missing.qcow2", f"{NAME}-id", 64), 0)
            except libvirt.libvirtError:
                pass
            conn.defineXML(_xml(disk, NAME, 512)).create()
        finally:
            conn.close()
        yield src, dst
    finally:
        for daemon in (src, dst):
            daemon.virsh("destroy", NAME, check=False)
            daemon.virsh("undefine", NAME, check=False)
            daemon.shutdown()


def _migrate(src: PrivateLibvirtd, dst: PrivateLibvirtd, errors: list[BaseException]) -> None:
    """Live, over loopback, at 1 MiB/s (a mostly empty 512 MiB guest then takes seconds)."""
    params = {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1", libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
              libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 1}
    try:
        sconn, dconn = libvirt.open(src.uri()), libvirt.open(dst.uri())
        try:  # UNSAFE: the disk is on a local file system, not shared storage
            sconn.lookupByName(NAME).migrate3(dconn, params, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_UNSAFE)
        finally:
            sconn.close()
            dconn.close()
    except BaseException as exc:
        errors.append(exc)


def _notify(port: int) -> str:
    return f'\n[[snmp.notify]]\naddress = "127.0.0.1:{port}"\ncommunity = "public"\n'


def test_a_live_migration_between_two_hosts(two_hosts: tuple[PrivateLibvirtd, PrivateLibvirtd], tmp_path) -> None:
    require_tool("snmptrapd", "snmptrapd")
    src, dst = two_hosts
    trapd = Trapd(tmp_path / "trapd", 2, [])
    source_cfg = snmp.agent_config(tmp_path / "s.toml", tmp_path / "s-state", f"127.0.0.1:{snmp.free_udp_port()}",
                                   _notify(trapd.ports[0]))
    dest_cfg = snmp.agent_config(tmp_path / "d.toml", tmp_path / "d-state", f"127.0.0.1:{snmp.free_udp_port()}",
                                 _notify(trapd.ports[1]))
    with trapd, \
            Exporter(["--config.file", str(source_cfg), "--libvirt.uri", src.uri(), "--libvirt.poll-interval",
                      "0.25s"], log=tmp_path / "source.log") as source, \
            Exporter(["--config.file", str(dest_cfg), "--libvirt.uri", dst.uri(), "--libvirt.poll-interval", "1s"],
                     log=tmp_path / "dest.log") as dest:
        source.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=NAME) == 1, what="the domain running")
        dest.wait_for(lambda m: m.get("libvirt_up") == 1, what="the destination")
        errors: list[BaseException] = []
        migration = threading.Thread(target=_migrate, args=(src, dst, errors))
        conn = libvirt.openReadOnly(src.uri())
        dom = conn.lookupByName(NAME)
        seen: list[Metrics] = []
        libvirt_says: list[dict] = []
        migration.start()
        while migration.is_alive():
            metrics = source.scrape()
            if metrics.get("libvirt_domain_job_info_operation", domain=NAME) == OUTGOING:
                seen.append(metrics)
                try:
                    libvirt_says.append(dom.jobStats(0))
                except libvirt.libvirtError:  # the job is over (the domain stopped): libvirt has none to give
                    pass
            migration.join(timeout=0.1)
        conn.close()
        assert not errors, errors
        assert seen, "the migration's job was never served on the source"
        processed = [m.get("libvirt_domain_job_info_data_processed_bytes", domain=NAME) for m in seen]
        processed = [p for p in processed if p is not None]
        assert processed and processed == sorted(processed), processed
        totals = {m.get("libvirt_domain_job_info_memory_total_bytes", domain=NAME) for m in seen} - {None}
        assert totals <= {s.get("memory_total") for s in libvirt_says}, (totals, libvirt_says)
        # Over: on the source the domain is shut off (migrated) and its last job is the outgoing migration.
        after = source.wait_for(lambda m: m.get("libvirt_domain_job_last_operation", domain=NAME) == OUTGOING
                                and m.get("libvirt_domain_state_code", domain=NAME) == 5, timeout=15,
                                what="the migration's outcome on the source")
        assert after.get("libvirt_domain_job_last_type", domain=NAME) == COMPLETED
        assert after.get("libvirt_domain_job_info_operation", domain=NAME) is None
        dest.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=NAME) == 1, timeout=15,
                      what="the domain running on the destination")
        started, ended = (f"{_LVX}.0.{mib_lvx.LVX_EVENT_NOTIFICATIONS[k]}" for k in
                          ("migration_started", "migration_ended"))
        source_traps = poll_until(lambda: [r for r in trapd.received() if r.port == trapd.ports[0]],
                                  lambda got: {started, ended} <= {r.trap_oid for r in got}, 15)
        (start,) = [r for r in source_traps if r.trap_oid == started]
        (end,) = [r for r in source_traps if r.trap_oid == ended]
        assert f"= INTEGER: {OUTGOING}" in start.text and f"= INTEGER: {COMPLETED}" in end.text
        dest_traps = poll_until(lambda: [r for r in trapd.received() if r.port == trapd.ports[1]],
                                lambda got: started in {r.trap_oid for r in got}, 15)
        (incoming,) = [r for r in dest_traps if r.trap_oid == started]
        assert f"= INTEGER: {INCOMING}" in incoming.text and f'"{NAME}"' in incoming.text
        assert ended not in {r.trap_oid for r in dest_traps}  # libvirt reports the end on the source only
