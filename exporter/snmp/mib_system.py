"""SNMPv2-MIB's system group, as this agent describes itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from exporter import __version__
from exporter.snapshot import Snapshot, version_text
from exporter.snmp.syntax import INT, OID, RO, STR, TICKS, OidT, defs
from exporter.snmp.view import Builder

SYSTEM: OidT = (1, 3, 6, 1, 2, 1, 1)
SYS_DESCR, SYS_OBJECT_ID, SYS_UP_TIME, SYS_CONTACT, SYS_NAME, SYS_LOCATION, SYS_SERVICES = 1, 2, 3, 4, 5, 6, 7

OBJECTS = defs(SYSTEM, [
    (SYS_DESCR, "sysDescr", STR, RO), (SYS_OBJECT_ID, "sysObjectID", OID, RO), (SYS_UP_TIME, "sysUpTime", TICKS, RO),
    (SYS_CONTACT, "sysContact", STR, RO), (SYS_NAME, "sysName", STR, RO), (SYS_LOCATION, "sysLocation", STR, RO),
    (SYS_SERVICES, "sysServices", INT, RO),
])


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """What the system group (and VM-MIB's hypervisor group) says about this agent."""

    contact: str = ""
    location: str = ""
    started_at: float = 0.0  # Unix time the agent started (sysUpTime counts from it)
    connected_at: float | None = None  # Unix time the libvirt connection was (re)established
    vm_notifications: bool = False  # whether VM-MIB notifications are sent


def ticks_since(start: float) -> Callable[[float], int]:
    return lambda now: int(max(0.0, now - start) * 100)


def put_scalars(b: Builder, snap: Snapshot, system: SystemInfo, object_id: OidT) -> None:
    host = snap.host
    hostname = host.hostname if host else ""
    desc = f"libvirt-exporter {__version__}"
    if host is not None:
        desc += f" on {hostname}: {host.driver} {version_text(host.hypervisor_version)}, " \
                f"libvirt {version_text(host.libvirt_version)}"
    for number, syntax, value in (
        (SYS_DESCR, STR, desc), (SYS_OBJECT_ID, OID, object_id), (SYS_UP_TIME, TICKS, ticks_since(system.started_at)),
        (SYS_CONTACT, STR, system.contact), (SYS_NAME, STR, hostname), (SYS_LOCATION, STR, system.location),
        (SYS_SERVICES, INT, 72),  # application + end-to-end layers
    ):
        b.put(SYSTEM + (number,), (0,), syntax, value)
