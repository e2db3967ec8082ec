"""Pure parsing of libvirt domain XML into the few facts the exporter needs.

:class:`exporter.source.Source` fetches a domain's XML and caches the parsed
result by UUID (until an event says the definition changed); this module
never talks to libvirt.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from exporter.metadata import MetadataMap
from exporter.snapshot import Block, Interface, NovaInstance

#: Nova's metadata namespace; every version (1.0, 1.1, ...) has this prefix.
NOVA_NAMESPACE = "http://openstack.org/xmlns/libvirt/nova/"

_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


@dataclass(frozen=True, slots=True)
class DomainConfig:
    os_type: str = ""
    arch: str = ""
    machine: str = ""
    title: str = ""
    max_memory_kib: int | None = None
    memory_kib: int | None = None
    vcpus_max: int | None = None
    vcpus_current: int | None = None
    disks: tuple[Block, ...] = ()  # as defined: no counters yet
    nics: tuple[Interface, ...] = ()
    nova: NovaInstance | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # the [metadata] labels' values
    cpuset: str = ""  # <vcpu cpuset=...>: the host CPUs of every vCPU without a <vcpupin>
    vcpupin: tuple[tuple[int, str], ...] = ()  # <cputune><vcpupin vcpu= cpuset=>, by vCPU

    def disk(self, target: str) -> Block | None:
        for disk in self.disks:
            if disk.target == target:
                return disk
        return None

    def nic(self, target: str) -> Interface | None:
        for nic in self.nics:
            if nic.target == target:
                return nic
        return None


def _kib(elem: ET.Element | None) -> int | None:
    if elem is None or not (elem.text or "").strip():
        return None
    try:
        value = int(elem.text.strip())  # type: ignore[union-attr]
    except ValueError:
        return None
    factor = _UNITS.get(elem.get("unit", "KiB").lower(), 1024)
    return value * factor // 1024


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _attr(elem: ET.Element | None, name: str) -> str:
    """An attribute of an element that may be missing; "" for either."""
    return elem.get(name, "") if elem is not None else ""


def _has_children(elem: ET.Element | None) -> bool:
    return elem is not None and len(elem) > 0


def _disk_source(source: ET.Element | None) -> str:
    if source is None:
        return ""
    for attr in ("file", "dev", "volume", "dir", "name"):
        value = source.get(attr)
        if value:
            if attr == "volume" and source.get("pool"):
                return f"{source.get('pool')}/{value}"
            return value
    return ""


def _nova(metadata: ET.Element | None) -> NovaInstance | None:
    """The first ``<instance>`` child of ``<metadata>`` in a Nova namespace, whatever its version."""
    if metadata is None:
        return None
    for child in metadata:
        namespace, _, local = child.tag.rpartition("}")
        if local == "instance" and namespace.lstrip("{").startswith(NOVA_NAMESPACE):
            return _nova_instance(child, namespace + "}")
    return None


def _nova_instance(instance: ET.Element, ns: str) -> NovaInstance:
    def text(path: str) -> str:
        return (instance.findtext(path.replace("nova:", ns)) or "").strip()

    def attr(path: str, name: str) -> str:
        elem = instance.find(path.replace("nova:", ns))
        return (elem.get(name) or "").strip() if elem is not None else ""

    return NovaInstance(name=text("nova:name"), flavor=attr("nova:flavor", "name"),
                        user_name=text("nova:owner/nova:user"), user_id=attr("nova:owner/nova:user", "uuid"),
                        project_name=text("nova:owner/nova:project"),
                        project_id=attr("nova:owner/nova:project", "uuid"))


def parse(xml: str, metadata: MetadataMap | None = None) -> DomainConfig:
    """Parse a domain's XML description, with the site's ``metadata`` labels if any.  Malformed XML yields an
    empty config."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return DomainConfig()
    os_type = root.find("os/type")
    vcpu = root.find("vcpu")
    vcpus_max = _int(vcpu.text.strip()) if vcpu is not None and vcpu.text else None
    vcpus_current = _int(vcpu.get("current")) if vcpu is not None else None
    disks = []
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        if target is None or not target.get("dev"):
            continue
        driver = disk.find("driver")
        disks.append(
            Block(
                target=target.get("dev", ""),
                device=disk.get("device", "disk"),
                disk_type=disk.get("type", ""),
                bus=target.get("bus", ""),
                source=_disk_source(disk.find("source")),
                driver_type=driver.get("type", "") if driver is not None else "",
                readonly=disk.find("readonly") is not None,
                serial=(disk.findtext("serial") or "").strip(),
                driver_name=_attr(driver, "name"),
                cache=_attr(driver, "cache"),
                discard=_attr(driver, "discard"),
                protocol=_attr(disk.find("source"), "protocol"),
                alias=_attr(disk.find("alias"), "name"),
                limited=_has_children(disk.find("iotune")),
            )
        )
    nics = []
    for nic in root.iterfind("devices/interface"):
        target = nic.find("target")
        mac = nic.find("mac")
        model = nic.find("model")
        source = nic.find("source")
        nics.append(
            Interface(
                target=target.get("dev", "") if target is not None else "",
                mac=mac.get("address", "") if mac is not None else "",
                model=model.get("type", "") if model is not None else "",
                interface_type=nic.get("type", ""),
                bridge=source.get("bridge", "") if source is not None else "",
                network=source.get("network", "") if source is not None else "",
                mtu=_int(_attr(nic.find("mtu"), "size") or None),
                virtual_interface=_attr(nic.find("virtualport/parameters"), "interfaceid"),
            )
        )
    title = root.findtext("title") or ""
    return DomainConfig(
        os_type=(os_type.text or "").strip() if os_type is not None else "",
        arch=os_type.get("arch", "") if os_type is not None else "",
        machine=os_type.get("machine", "") if os_type is not None else "",
        title=title.strip(),
        max_memory_kib=_kib(root.find("memory")),
        memory_kib=_kib(root.find("currentMemory")) or _kib(root.find("memory")),
        vcpus_max=vcpus_max,
        vcpus_current=vcpus_current if vcpus_current is not None else vcpus_max,
        disks=tuple(disks),
        nics=tuple(nics),
        nova=_nova(root.find("metadata")),
        metadata=metadata.evaluate(xml) if metadata else (),
        cpuset=vcpu.get("cpuset", "") if vcpu is not None else "",
        vcpupin=tuple((n, pin.get("cpuset", "")) for pin in root.iterfind("cputune/vcpupin")
                      if (n := _int(pin.get("vcpu"))) is not None),
    )
