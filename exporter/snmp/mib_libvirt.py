"""LIBVIRT-MIB (mibs/LIBVIRT-MIB.txt): libvirt-snmp's libvirtGuestTable and libvirtGuestNotif, OID for OID,
with libvirt-snmp 0.0.4's units (memory in MiB) and its index (the UUID's 16 bytes)."""

from __future__ import annotations

import uuid as uuidlib

from exporter.snapshot import STATE_NOSTATE, STATE_PMSUSPENDED, Domain
from exporter.snmp.syntax import BYTES, C64, G32, INT, NOTIFY, RC, RO, STR, U32, NotificationDef, OidT, defs
from exporter.snmp.view import Builder

LIBVIRT_ROOT: OidT = (1, 3, 6, 1, 4, 1, 36957)
LIBVIRT_GUEST_ENTRY = LIBVIRT_ROOT + (1, 1, 1)
GUEST_UUID, GUEST_NAME, GUEST_STATE, GUEST_CPU_COUNT, GUEST_MEMORY_CURRENT = 1, 2, 3, 4, 5
GUEST_MEMORY_LIMIT, GUEST_CPU_TIME, GUEST_ROW_STATUS = 6, 7, 9

OBJECTS = defs(LIBVIRT_GUEST_ENTRY, [
    (GUEST_UUID, "libvirtGuestUUID", BYTES, NOTIFY), (GUEST_NAME, "libvirtGuestName", STR, RO),
    (GUEST_STATE, "libvirtGuestState", INT, RC), (GUEST_CPU_COUNT, "libvirtGuestCpuCount", U32, RO),
    (GUEST_MEMORY_CURRENT, "libvirtGuestMemoryCurrent", G32, RO),
    (GUEST_MEMORY_LIMIT, "libvirtGuestMemoryLimit", U32, RO), (GUEST_CPU_TIME, "libvirtGuestCpuTime", C64, RO),
    (GUEST_ROW_STATUS, "libvirtGuestRowStatus", INT, RC),
])


def guest_index(uuid: str) -> OidT:
    """A domain's row: its UUID's 16 bytes, with no length prefix."""
    return tuple(uuidlib.UUID(uuid).bytes)


def libvirt_guest_state(state: int) -> int:
    """libvirt-snmp's enumeration lacks nostate and pmsuspended: map them onto it."""
    if state == STATE_PMSUSPENDED:
        return 3  # paused
    if state == STATE_NOSTATE:
        return 2  # blocked
    return state


def put_domain(b: Builder, dom: Domain) -> None:
    # libvirt-snmp (0.0.4) lists every domain libvirt knows, active or not (virConnectListAllDomains), each
    # with what virDomainGetInfo says: a shut-off one reads shutoff(5), its configured vCPUs and memory, CPU
    # time 0, and RowStatus active(1) like every other row.
    cpu_time = dom.cpu_time_ns if dom.cpu_time_ns is not None or dom.active else 0
    b.columns(LIBVIRT_GUEST_ENTRY, guest_index(dom.uuid), (
        (GUEST_NAME, STR, dom.name), (GUEST_STATE, INT, libvirt_guest_state(dom.state)),
        (GUEST_CPU_COUNT, U32, dom.vcpus_current),
        (GUEST_MEMORY_CURRENT, G32, None if dom.memory_kib is None else dom.memory_kib // 1024),
        (GUEST_MEMORY_LIMIT, U32, None if dom.max_memory_kib is None else dom.max_memory_kib // 1024),
        (GUEST_CPU_TIME, C64, cpu_time), (GUEST_ROW_STATUS, INT, 1),
    ))


def domain_range(dom: Domain) -> tuple[OidT, OidT, OidT]:
    guest = guest_index(dom.uuid)
    return LIBVIRT_GUEST_ENTRY, guest, guest + (0,)


#: libvirt-snmp's libvirtGuestNotif: the row status it reports by state (notInService while the domain is
#: shutting down, shut off or crashed, active otherwise).
_NOT_IN_SERVICE_STATES = frozenset({4, 5, 6})


def libvirt_guest_notification(name: str, uuid: str, state: int) -> NotificationDef:
    """libvirtGuestNotif as libvirt-snmp sends it (send_libvirtGuestNotif_trap): name, UUID, state and row
    status, each as the .0 instance of its column rather than of the domain's row.  libvirt-snmp sends one for
    every lifecycle event whose domain it can still read, so none for an undefined one."""
    def column(number: int) -> OidT:
        return LIBVIRT_GUEST_ENTRY + (number, 0)

    return NotificationDef("libvirt", LIBVIRT_ROOT + (0, 1), (
        (column(GUEST_NAME), (STR, name)),
        (column(GUEST_UUID), (BYTES, uuidlib.UUID(uuid).bytes)),
        (column(GUEST_STATE), (INT, libvirt_guest_state(state))),
        (column(GUEST_ROW_STATUS), (INT, 2 if state in _NOT_IN_SERVICE_STATES else 1)),
    ))
