"""Shared fixtures.

Tiers:
- the test driver (``test:///default`` and generated node files), always;
- the real hypervisor (``realqemu`` marker): a private libvirtd running two
  QEMU domains (KVM when /dev/kvm is usable, TCG otherwise).

With CI=true a tier that cannot run fails with the reason; elsewhere it is
skipped with the reason (shown by ``-ra``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.hostgen import HostShape, node_xml
from tests.support import snmp
from tests.support.libvirtd import DaemonError, PrivateLibvirtd, kvm_usable
from tests.support.process import Exporter
from tests.support.wait import poll_until

ROOT = Path(__file__).resolve().parents[1]
DEMO_HOST = ROOT / "examples" / "demo-host.xml"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip outside CI, fail in CI: no tier may silently skip there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} not found (Debian package {package})")
    return str(path)


@pytest.fixture
def demo_uri() -> str:
    return f"test://{DEMO_HOST}"


@pytest.fixture(scope="session")
def make_host(tmp_path_factory: pytest.TempPathFactory) -> Callable[[HostShape], str]:
    """Write a generated node file and return its test-driver URI."""
    folder = tmp_path_factory.mktemp("hosts")

    def make(shape: HostShape) -> str:
        path = folder / f"host-{shape.domains}x{shape.disks}x{shape.nics}x{shape.vcpus}-{shape.mixed_states}.xml"
        if not path.exists():
            path.write_text(node_xml(shape), encoding="utf-8")
        return f"test://{path}"

    return make


@dataclass
class RealHost:
    daemon: PrivateLibvirtd
    domains: tuple[str, ...]
    uri: str
    kvm: bool


def _real_domain_xml(name: str, disk: Path, tap: str, kvm: bool, data: Path | None = None) -> str:
    second = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{data}'/>"
              "<target dev='vdb' bus='virtio'/></disk>") if data is not None else ""
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>{second}
    <interface type='ethernet'>
      <target dev='{tap}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


# Boot sectors (real-mode x86, loaded at 0x7c00 by the BIOS).
_HALT = bytes([0xFA, 0xF4, 0xEB, 0xFD])  # cli; hlt; jmp $-1
# sti; xor ax,ax; mov es,ax; then forever: read sector 1 of the boot drive (int 13h, AH=2) into 0:8000, then
# hlt through 18 timer ticks (loop): about one disk read a second, so block counters keep moving, cheaply.
_READ_LOOP = bytes([0xFB, 0x31, 0xC0, 0x8E, 0xC0,
                    0xB8, 0x01, 0x02, 0xB9, 0x01, 0x00, 0xB6, 0x00, 0xBB, 0x00, 0x80, 0xCD, 0x13,
                    0xB9, 0x12, 0x00, 0xF4, 0xE2, 0xFD, 0xEB, 0xEB])


def _boot_disk(raw: Path, disk: Path, code: bytes = _HALT) -> None:
    """A 64 MiB qcow2 whose boot sector runs ``code``: the BIOS really reads it, so block counters move."""
    with open(raw, "wb") as handle:
        handle.write(code + bytes(510 - len(code)) + b"\x55\xaa")
        handle.truncate(64 << 20)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True)
    raw.unlink()


def start_real_host(root: Path, prefix: str, count: int, *, kvm: bool, code: bytes = _HALT,
                    data_disk: bool = False) -> RealHost:
    """A private libvirtd below ``root`` running ``count`` QEMU domains; fails (CI) or skips with the reason.
    ``data_disk``: each domain has a second, empty disk (vdb) besides its boot disk."""
    require(os.geteuid() == 0, "the real tier needs root")
    for tool, package in (("libvirtd", "libvirt-daemon"), ("virtlogd", "libvirt-daemon"),
                          ("virsh", "libvirt-clients"), ("qemu-system-x86_64", "qemu-system-x86"),
                          ("qemu-img", "qemu-utils")):
        require_tool(tool, package)
    root.chmod(0o755)
    daemon = PrivateLibvirtd(root)
    try:
        daemon.start()
    except DaemonError as exc:
        require(False, f"cannot start a private libvirtd: {exc}")
    names = []
    tag = os.getpid() % 10000
    try:
        for i in range(count):
            name = f"{prefix}{i}"
            disk = root / f"{name}.qcow2"
            _boot_disk(root / f"{name}.raw", disk, code)
            data = root / f"{name}-data.qcow2" if data_disk else None
            if data is not None:
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "16M"], check=True)
            xml = root / f"{name}.xml"
            xml.write_text(_real_domain_xml(name, disk, f"lx{prefix[-2:]}{tag}t{i}", kvm, data), encoding="utf-8")
            daemon.virsh("define", str(xml))
            daemon.virsh("start", name)
            names.append(name)
    except DaemonError as exc:
        daemon.shutdown()
        require(False, f"cannot start QEMU domains under the private libvirtd: {exc}\n{daemon.tail()}")
    # Wait until the BIOS has read each boot sector, so block counters are not all zero.
    # (best effort: one budget for all, and a domain still at zero reads is no reason to give up the tier)
    budget_end = time.monotonic() + 60 + 5 * count
    for name in names:
        poll_until(lambda name=name: daemon.virsh("domblkstat", name, "vda"), lambda stats: "rd_req 0" not in stats,
                   max(0.0, budget_end - time.monotonic()), every=0.2)
    return RealHost(daemon=daemon, domains=tuple(names), uri=daemon.uri(), kvm=kvm)


@pytest.fixture(scope="session")
def real_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHost]:
    """A private libvirtd with two running QEMU domains, torn down at the end."""
    host = start_real_host(tmp_path_factory.mktemp("libvirtd"), "lxe-real", 2, kvm=kvm_usable())
    yield host
    host.daemon.shutdown()


@contextlib.contextmanager
def own_domain(host: RealHost, folder: Path, name: str, edit: Callable[[str], str] = lambda xml: xml,
               tap: str = "") -> Iterator[str]:
    """A running QEMU domain of a test's own on ``host`` (its definition through ``edit``), gone afterwards."""
    folder.chmod(0o755)
    disk = folder / f"{name}.qcow2"
    _boot_disk(folder / f"{name}.raw", disk)
    xml = folder / f"{name}.xml"
    xml.write_text(edit(_real_domain_xml(name, disk, tap or f"lx{name[-2:]}{os.getpid() % 10000}", host.kvm)),
                   encoding="utf-8")
    host.daemon.virsh("define", str(xml))
    try:
        host.daemon.virsh("start", name)
        yield name
    finally:
        host.daemon.virsh("destroy", name, check=False)
        host.daemon.virsh("managedsave-remove", name, check=False)
        host.daemon.virsh("undefine", name, check=False)


@contextlib.contextmanager
def demo_agent(folder: Path, extra: str = "") -> Iterator[tuple[Exporter, str]]:
    """The demo host served over HTTP and SNMP (v2c and v3, tests.support.snmp's principals; ``extra``: more config
    file text), its next poll an hour away: (the exporter, its SNMP address)."""
    require(snmp.BASE_MIBS.joinpath("SNMPv2-SMI").exists(), "base MIBs missing: run `make base-mibs`")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(folder / "c.toml", folder / "state", f"127.0.0.1:{port}", extra=extra)
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{DEMO_HOST}", "--libvirt.poll-interval",
                   "1h"], log=folder / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        yield exp, f"127.0.0.1:{port}"
