"""Disks' I/O limits (virDomainGetBlockIoTune; Tinkoff's family names, lvxBlockLimit*/Burst* columns) and disk
errors (virDomainGetDiskErrors; libvirt_domain_block_stats_error_code, lvxBlockErrorCode), each held against
what libvirt itself answers in the same test: on the test driver, whose domains' definitions may set limits,
and on real QEMU, where limits are set with ``virsh blkdeviotune`` and a disk really fills up."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from exporter import fields
from exporter.snmp import mib_lvx
from tests.conftest import DEMO_HOST, RealHost, demo_agent, require_tool
from tests.support import snmp
from tests.support.process import Exporter, Metrics
from tests.support.trapd import Trapd
from tests.support.wait import poll_until, wait_until

#: (IoTune key, family, LVX column number) of every limit.
LIMITS = [(f.attr.removeprefix("iotune."), f.family.name, f.column.number) for f in fields.of_table("block")
          if f.attr.startswith("iotune.") and f.family is not None and f.column is not None]


def _tunes(uri: str) -> dict[tuple[str, str], dict[str, int]]:
    """libvirt's own blockIoTune answer for every disk of every running domain that has a limit."""
    conn = libvirt.openReadOnly(uri)
    try:
        found = {}
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            for target in _disks(dom):
                tune = dom.blockIoTune(target, 0)
                if any(v for k, v in tune.items() if k != "group_name"):
                    found[(dom.name(), target)] = tune
        return found
    finally:
        conn.close()


def _disks(dom: libvirt.virDomain) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(dom.XMLDesc(0))
    return [d.find("target").get("dev") for d in root.iterfind("devices/disk") if d.get("device") == "disk"]


def _served(metrics: Metrics, domain: str, target: str) -> dict[str, float | None]:
    return {key: metrics.get(family, domain=domain, target_device=target) for key, family, _ in LIMITS}


def _walk_column(target: str, column: int) -> dict[str, str]:
    oid = ".".join(map(str, mib_lvx.LVX_BLOCK_ENTRY + (column,)))
    return snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-Oe", target, oid))


def _block_row(target_addr: str, domain: str, device: str) -> str:
    """lvxBlockTable's row (domain index.device position) of one disk, found by walking lvxBlockTarget."""
    index = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target_addr, f"lvxDomainNameIndex.'{domain}'").strip()
    for oid, value in _walk_column(target_addr, 2).items():
        row = oid.rsplit(".", 2)
        if row[1] == index and value.strip('"') == device:
            return f"{row[1]}.{row[2]}"
    raise AssertionError(f"{domain} {device} not in lvxBlockTable")


def _snmp_limits(target_addr: str, row: str) -> dict[str, int | None]:
    entry = ".".join(map(str, mib_lvx.LVX_BLOCK_ENTRY))
    oids = [f"{entry}.{column}.{row}" for _, _, column in LIMITS]
    got = snmp.values(snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqn", "-OU", target_addr, *oids))
    by_oid = {oid.lstrip("."): value for oid, value in got.items()}
    cells = {key: by_oid[f"{entry}.{column}.{row}"] for key, _, column in LIMITS}
    return {key: None if "No Such" in cell else int(cell) for key, cell in cells.items()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, str]]:
    with demo_agent(tmp_path_factory.mktemp("limits")) as served:
        yield served


def test_demo_limits_equal_libvirts(demo: tuple[Exporter, str]) -> None:
    """The one disk whose definition sets limits (web1's vda) has every limit family and column, equal to
    blockIoTune's answer; no other disk has any."""
    exp, target = demo
    metrics = exp.scrape()
    tunes = _tunes(f"test://{DEMO_HOST}")
    assert set(tunes) == {("web1", "vda")}
    tune = tunes[("web1", "vda")]
    assert _served(metrics, "web1", "vda") == {key: tune[key] for key, _, _ in LIMITS}
    limited = {(s["domain"], s["target_device"])
               for s in metrics.series("libvirt_domain_block_stats_limit_total_bytes")}
    assert limited == {("web1", "vda")}
    assert _snmp_limits(target, _block_row(target, "web1", "vda")) == {key: tune[key] for key, _, _ in LIMITS}
    assert set(_snmp_limits(target, _block_row(target, "web1", "vdb")).values()) == {None}


def test_demo_disks_have_no_errors(demo: tuple[Exporter, str]) -> None:
    """No demo domain is paused for an I/O error: every disk of an active domain reads 0 (none), in both."""
    exp, target = demo
    metrics = exp.scrape()
    codes = {(s["domain"], s["target_device"]): metrics.get("libvirt_domain_block_stats_error_code", **s)
             for s in metrics.series("libvirt_domain_block_stats_error_code")}
    assert codes and set(codes.values()) == {0}
    assert ("legacy1", "vda") not in codes  # shut off: unknown, not "none"
    assert set(_walk_column(target, 22).values()) == {"0"}  # none


# -- real QEMU ---------------------------------------------------------------------------------------------------


@pytest.mark.realqemu
def test_blkdeviotune_read_back_through_both_front_ends(real_host: RealHost, tmp_path) -> None:
    """Limits set on a running QEMU domain with virsh blkdeviotune reach /metrics and LVX at the tunable event,
    equal to blockIoTune's answer (with what QEMU fills in, such as a burst's length), and go when reset."""
    name = real_host.domains[0]
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", target)
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1h"],
                  log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 2, what="both QEMU domains")
        assert exp.scrape().get("libvirt_domain_block_stats_limit_total_bytes", domain=name) is None
        reset = ("blkdeviotune", name, "vda", "--live", "--total-bytes-sec", "0", "--write-iops-sec", "0",
                 "--total-bytes-sec-max", "0", "--write-iops-sec-max", "0", "--write-iops-sec-max-length", "0")
        try:
            real_host.daemon.virsh("blkdeviotune", name, "vda", "--live", "--total-bytes-sec", "1048576",
                                   "--write-iops-sec", "50", "--total-bytes-sec-max", "2097152",
                                   "--write-iops-sec-max", "80", "--write-iops-sec-max-length", "5")
            tune = _tunes(real_host.uri)[(name, "vda")]
            assert tune["total_bytes_sec_max_length"] == 1  # QEMU's default, set by nobody
            metrics = exp.wait_for(lambda m: m.get("libvirt_domain_block_stats_limit_total_bytes", domain=name)
                                   == 1048576, timeout=15, what="the limits, before the next poll (an hour away)")
            assert _served(metrics, name, "vda") == {key: tune[key] for key, _, _ in LIMITS}
            assert _snmp_limits(target, _block_row(target, name, "vda")) == {key: tune[key] for key, _, _ in LIMITS}
            real_host.daemon.virsh(*reset)
            assert (name, "vda") not in _tunes(real_host.uri)
            exp.wait_for(lambda m: m.get("libvirt_domain_block_stats_limit_total_bytes", domain=name) is None,
                         timeout=15, what="the limits gone once reset")
        finally:
            real_host.daemon.virsh(*reset, check=False)  # the domain is shared with other tests


#: A boot sector (real-mode x86) that writes BIOS ROM data to the second disk (int 13h AH=43h, drive 0x81),
#: 127 sectors at a time at rising LBAs, and halts when a write fails: it fills whatever holds that disk.
_FILL_SECOND_DISK = bytes.fromhex("fa31c08ed88ec08ed0bc007cfbbe247cb80043b281cd1372086683062c7c7febecf4ebfd"
                                  "10007f00000000f00000000000000000")


def _filling_domain_xml(name: str, boot: Path, data: Path, kvm: bool) -> str:
    # Per-disk boot order: SeaBIOS maps the second disk as drive 0x81 only when it is in the boot order.
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{boot}'/><target dev='vda' bus='virtio'/><boot order='1'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' error_policy='stop'/><source file='{data}'/>
      <target dev='vdb' bus='virtio'/><boot order='2'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@pytest.mark.realqemu
def test_a_full_disk_pauses_the_guest_and_is_reported(real_host: RealHost, tmp_path) -> None:
    """A guest writes to a disk whose qcow2 sits on a 4 MiB tmpfs (mounted inside the private libvirtd's mount
    namespace, so the host never sees it): QEMU stops it (error_policy stop), the domain is paused for an I/O
    error, both front ends give vdb the code libvirt's diskErrors gives (2, no space), vda none, and a v2c trap
    lvxDomainDiskError names vdb with that code."""
    from tests.conftest import _boot_disk

    require_tool("nsenter", "util-linux")
    require_tool("snmptrapd", "snmptrapd")
    tmp_path.chmod(0o755)
    name = "lxfull"
    boot = tmp_path / "boot.qcow2"
    _boot_disk(tmp_path / "boot.raw", boot, _FILL_SECOND_DISK)
    full = tmp_path / "full"
    full.mkdir()
    ns = ["nsenter", f"--mount=/proc/{real_host.daemon.proc.pid}/ns/mnt"]
    subprocess.run([*ns, "mount", "-t", "tmpfs", "-o", "size=4m", "lxfull", str(full)], check=True)
    data = full / "data.qcow2"
    subprocess.run([*ns, "qemu-img", "create", "-q", "-f", "qcow2", str(data), "64M"], check=True)
    xml = tmp_path / f"{name}.xml"
    xml.write_text(_filling_domain_xml(name, boot, data, real_host.kvm), encoding="utf-8")
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    trapd = Trapd(tmp_path / "trapd", 1, [])
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", target,
                            f'\n[[snmp.notify]]\naddress = "127.0.0.1:{trapd.ports[0]}"\ncommunity = "public"\n')
    with trapd, Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s"],
                         log=tmp_path / "log") as exp:
        try:
            real_host.daemon.virsh("define", str(xml))
            real_host.daemon.virsh("start", name)
            metrics = exp.wait_for(lambda m: m.get("libvirt_domain_block_stats_error_code", domain=name,
                                                   target_device="vdb") == 2, timeout=60,
                                   what="vdb's no-space error (the BIOS boots, then the guest fills the disk)")
            conn = libvirt.openReadOnly(real_host.uri)
            try:
                dom = conn.lookupByName(name)
                state, errors = dom.state(0), dom.diskErrors(0)
            finally:
                conn.close()
            assert state == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR]
            assert errors == {"vdb": libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE}
            assert metrics.get("libvirt_domain_state_code", domain=name) == state[0]
            assert metrics.get("libvirt_domain_state_reason_code", domain=name) == state[1]
            assert metrics.get("libvirt_domain_block_stats_error_code", domain=name, target_device="vda") == 0
            codes = {
                device: snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target,
                                f"{'.'.join(map(str, mib_lvx.LVX_BLOCK_ENTRY))}.22.{_block_row(target, name, device)}"
                                ).strip()
                for device in ("vda", "vdb")}
            assert codes == {"vda": "0", "vdb": "2"}
            # The trap: lvxDomainDiskError with vdb's row, at the I/O error event (before the poll that found it).
            disk_error = ".".join(map(str, mib_lvx.LVX_ROOT + (0, mib_lvx.LVX_EVENT_NOTIFICATIONS["io_error"])))
            traps = poll_until(trapd.received, lambda got: any(r.trap_oid == disk_error for r in got), 15)
            (trap,) = [r for r in traps if r.trap_oid == disk_error]
            row = _block_row(target, name, "vdb")
            entry = ".".join(map(str, mib_lvx.LVX_BLOCK_ENTRY))
            assert f".{entry}.2.{row} = STRING: \"vdb\"" in trap.text, trap.text
            assert f".{entry}.22.{row} = INTEGER: 2" in trap.text, trap.text
        finally:
            real_host.daemon.virsh("destroy", name, check=False)
            real_host.daemon.virsh("undefine", name, check=False)
            subprocess.run([*ns, "umount", str(full)], check=False)
        wait_until(lambda: exp.scrape().get("libvirt_domain_state_code", domain=name) is None, 15, "the domain gone")
