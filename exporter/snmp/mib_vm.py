"""VM-MIB (RFC 7666, mib-2 236), served read-only: its scalars, tables and per-VM notifications.

Its units are the RFC's (vmCpuTime in microseconds, memory in KiB units, storage sizes in MiB units) and its
tables share lvxDomainTable's index.  The module text is not shipped (see the README).
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from exporter.snapshot import Domain, Snapshot, version_text
from exporter.snmp.mib_lvx import mac_bytes
from exporter.snmp.mib_system import SystemInfo, ticks_since
from exporter.snmp.syntax import BYTES, C64, INT, INT32_MAX, NOTIFY, OID, RO, STR, TICKS, NotificationDef, OidT, defs
from exporter.snmp.view import Builder

VM_ROOT: OidT = (1, 3, 6, 1, 2, 1, 236)
VM_OBJECTS_ARC = VM_ROOT + (1,)
VM_HV = VM_OBJECTS_ARC + (1,)
VM_ENTRY = VM_OBJECTS_ARC + (4, 1)
VM_CPU_ENTRY = VM_OBJECTS_ARC + (5, 1)
VM_CPU_AFFINITY_ENTRY = VM_OBJECTS_ARC + (6, 1)
VM_STORAGE_ENTRY = VM_OBJECTS_ARC + (7, 1)
VM_NETWORK_ENTRY = VM_OBJECTS_ARC + (8, 1)
VM_MEM_UNIT = 1024  # vmMemUnit: memory figures are in KiB
VM_STORAGE_UNIT = 1024 * 1024  # vmStorageSizeUnit: sizes in MiB keep Integer32 up to 2 PiB

HV_SOFTWARE, HV_VERSION, HV_OBJECT_ID, HV_UP_TIME = 1, 2, 3, 4
NUMBER, TABLE_LAST_CHANGE, PER_VM_NOTIFICATIONS, BULK_NOTIFICATIONS, AFFECTED_VMS = 2, 3, 9, 10, 11
VM_NAME, VM_UUID, VM_OS_TYPE, VM_ADMIN_STATE, VM_OPER_STATE, VM_AUTOSTART, VM_PERSISTENT = 2, 3, 4, 5, 6, 7, 8
VM_CUR_CPU, VM_MIN_CPU, VM_MAX_CPU, VM_MEM_UNIT_COL, VM_CUR_MEM, VM_MIN_MEM, VM_MAX_MEM = 9, 10, 11, 12, 13, 14, 15
VM_UP_TIME, VM_CPU_TIME = 16, 17
CPU_CORE_TIME = 2
CPU_AFFINITY = 3  # vmCpuAffinity: 1 enable, 2 disable (index: vmIndex, vmCpuIndex, vmCpuPhysIndex)
NETWORK_IF_INDEX, NETWORK_PARENT, NETWORK_MODEL, NETWORK_PHYS_ADDRESS = 2, 3, 4, 5

OBJECTS = defs(VM_HV, [
    (HV_SOFTWARE, "vmHvSoftware", STR, RO), (HV_VERSION, "vmHvVersion", STR, RO),
    (HV_OBJECT_ID, "vmHvObjectID", OID, RO), (HV_UP_TIME, "vmHvUpTime", TICKS, RO),
]) + defs(VM_OBJECTS_ARC, [
    (NUMBER, "vmNumber", INT, RO), (TABLE_LAST_CHANGE, "vmTableLastChange", TICKS, RO),
    # read-write in the RFC; served read-only here, from the configuration
    (PER_VM_NOTIFICATIONS, "vmPerVMNotificationsEnabled", INT, RO),
    (BULK_NOTIFICATIONS, "vmBulkNotificationsEnabled", INT, RO), (AFFECTED_VMS, "vmAffectedVMs", BYTES, NOTIFY),
]) + defs(VM_ENTRY, [
    (VM_NAME, "vmName", STR, RO), (VM_UUID, "vmUUID", BYTES, RO), (VM_OS_TYPE, "vmOSType", STR, RO),
    (VM_ADMIN_STATE, "vmAdminState", INT, RO), (VM_OPER_STATE, "vmOperState", INT, RO),
    (VM_AUTOSTART, "vmAutoStart", INT, RO), (VM_PERSISTENT, "vmPersistent", INT, RO),
    (VM_CUR_CPU, "vmCurCpuNumber", INT, RO), (VM_MIN_CPU, "vmMinCpuNumber", INT, RO),
    (VM_MAX_CPU, "vmMaxCpuNumber", INT, RO), (VM_MEM_UNIT_COL, "vmMemUnit", INT, RO),
    (VM_CUR_MEM, "vmCurMem", INT, RO), (VM_MIN_MEM, "vmMinMem", INT, RO), (VM_MAX_MEM, "vmMaxMem", INT, RO),
    (VM_UP_TIME, "vmUpTime", TICKS, RO), (VM_CPU_TIME, "vmCpuTime", C64, RO),
]) + defs(VM_CPU_ENTRY, [(CPU_CORE_TIME, "vmCpuCoreTime", C64, RO)]) + defs(VM_CPU_AFFINITY_ENTRY, [
    (CPU_AFFINITY, "vmCpuAffinity", INT, RO),
]) + defs(VM_STORAGE_ENTRY, [
    (3, "vmStorageParent", INT, RO), (4, "vmStorageSourceType", INT, RO), (5, "vmStorageSourceTypeString", STR, RO),
    (6, "vmStorageResourceID", STR, RO), (7, "vmStorageAccess", INT, RO), (8, "vmStorageMediaType", INT, RO),
    (9, "vmStorageMediaTypeString", STR, RO), (10, "vmStorageSizeUnit", INT, RO),
    (11, "vmStorageDefinedSize", INT, RO), (12, "vmStorageAllocatedSize", INT, RO),
    (13, "vmStorageReadIOs", C64, RO), (14, "vmStorageWriteIOs", C64, RO), (15, "vmStorageReadOctets", C64, RO),
    (16, "vmStorageWriteOctets", C64, RO), (17, "vmStorageReadLatency", C64, RO),
    (18, "vmStorageWriteLatency", C64, RO),
]) + defs(VM_NETWORK_ENTRY, [
    (NETWORK_IF_INDEX, "vmNetworkIfIndex", INT, RO), (NETWORK_PARENT, "vmNetworkParent", INT, RO),
    (NETWORK_MODEL, "vmNetworkModel", STR, RO), (NETWORK_PHYS_ADDRESS, "vmNetworkPhysAddress", BYTES, RO),
])

#: VM-MIB objects not served, and why.
NOT_SERVED: dict[str, str] = {}

# libvirt state -> VM-MIB VirtualMachineOperState / VirtualMachineAdminState
_VM_OPER = {0: 1, 1: 4, 2: 4, 3: 8, 4: 10, 5: 11, 6: 12, 7: 6}
_VM_ADMIN = {1: 1, 2: 1, 3: 3, 7: 2}  # others: shutdown(4)
_VM_MEDIA = {"disk": 3, "lun": 3, "cdrom": 4, "floppy": 5}  # IANAStorageMediaType; other(1)


def vm_oper_state(state: int) -> int:
    return _VM_OPER.get(state, 1)


def vm_admin_state(state: int) -> int:
    return _VM_ADMIN.get(state, 4)


def _truth(value: bool) -> int:
    return 1 if value else 2


def _vm_source_type(disk_type: str, driver_type: str) -> int:
    """VirtualMachineStorageSourceType: block(3), raw(4), sparse(5), network(6), other(2)."""
    if disk_type == "block":
        return 3
    if disk_type == "network":
        return 6
    if driver_type == "raw":
        return 4
    if driver_type in ("qcow2", "qed", "vmdk", "vdi", "vhd", "vpc"):
        return 5
    return 2


def _units(value: int | None, unit: int) -> int:
    """A size in the MIB's unit, or -1 if unknown; saturates at Integer32's maximum."""
    return -1 if value is None else min(value // unit, INT32_MAX)


def put_scalars(b: Builder, snap: Snapshot, system: SystemInfo, table_last_change_ticks: int) -> None:
    def put(oid: OidT, syntax: str, value: Any) -> None:
        b.put(oid, (0,), syntax, value)

    put(VM_OBJECTS_ARC + (TABLE_LAST_CHANGE,), TICKS, table_last_change_ticks)
    put(VM_OBJECTS_ARC + (PER_VM_NOTIFICATIONS,), INT, _truth(system.vm_notifications))
    put(VM_OBJECTS_ARC + (BULK_NOTIFICATIONS,), INT, _truth(False))
    if snap.up:
        put(VM_OBJECTS_ARC + (NUMBER,), INT, len(snap.domains))
    host = snap.host
    if host is not None:
        put(VM_HV + (HV_SOFTWARE,), STR, f"{host.driver} (libvirt)")
        put(VM_HV + (HV_VERSION,), STR, version_text(host.hypervisor_version))
        put(VM_HV + (HV_OBJECT_ID,), OID, (0, 0))  # no registered identity: zeroDotZero
        if system.connected_at is not None:
            put(VM_HV + (HV_UP_TIME,), TICKS, ticks_since(system.connected_at))


def put_domain(b: Builder, dom: Domain, index: int, started: float | None) -> None:
    idx = (index,)
    uptime: Any = None
    if not dom.active:
        uptime = 0
    elif started is not None:
        uptime = ticks_since(started)
    b.columns(VM_ENTRY, idx, (
        (VM_NAME, STR, dom.name), (VM_UUID, BYTES, uuidlib.UUID(dom.uuid).bytes), (VM_OS_TYPE, STR, dom.os_type),
        (VM_ADMIN_STATE, INT, vm_admin_state(dom.state)), (VM_OPER_STATE, INT, vm_oper_state(dom.state)),
        (VM_AUTOSTART, INT, 2 if dom.autostart else 3), (VM_PERSISTENT, INT, 2 if dom.persistent else 3),
        (VM_CUR_CPU, INT, dom.vcpus_current or 0), (VM_MIN_CPU, INT, -1),
        (VM_MAX_CPU, INT, -1 if dom.vcpus_max is None else dom.vcpus_max), (VM_MEM_UNIT_COL, INT, VM_MEM_UNIT),
        (VM_CUR_MEM, INT, _units(dom.memory_kib, 1) if dom.memory_kib is not None else 0), (VM_MIN_MEM, INT, -1),
        (VM_MAX_MEM, INT, _units(dom.max_memory_kib, 1)), (VM_UP_TIME, TICKS, uptime),
        # microseconds, as the RFC says
        (VM_CPU_TIME, C64, None if dom.cpu_time_ns is None else dom.cpu_time_ns // 1000),
    ))
    for vcpu in dom.vcpus:
        b.put(VM_CPU_ENTRY + (CPU_CORE_TIME,), (index, vcpu.number + 1), C64,
              None if vcpu.time_ns is None else vcpu.time_ns // 1000)
    # Affinity rows of the pinned vCPUs only: a vCPU free to run anywhere would add a row per host CPU, all
    # "enable", for every vCPU of every domain.
    for pin in dom.vcpu_pins:
        if pin.pinned:
            allowed = set(pin.cpus)
            for cpu in range(pin.host_cpus):
                b.put(VM_CPU_AFFINITY_ENTRY + (CPU_AFFINITY,), (index, pin.vcpu + 1, cpu + 1), INT,
                      1 if cpu in allowed else 2)
    for pos, blk in enumerate(dom.blocks, start=1):
        b.columns(VM_STORAGE_ENTRY, (index, pos), (
            (3, INT, index), (4, INT, _vm_source_type(blk.disk_type, blk.driver_type)),
            (5, STR, "/".join(p for p in (blk.disk_type, blk.driver_type) if p)), (6, STR, blk.source),
            (7, INT, 3 if blk.readonly or blk.device == "cdrom" else 2), (8, INT, _VM_MEDIA.get(blk.device, 1)),
            (9, STR, blk.device), (10, INT, VM_STORAGE_UNIT), (11, INT, _units(blk.capacity_bytes, VM_STORAGE_UNIT)),
            (12, INT, _units(blk.allocation_bytes, VM_STORAGE_UNIT)), (13, C64, blk.read_requests),
            (14, C64, blk.write_requests), (15, C64, blk.read_bytes), (16, C64, blk.write_bytes),
            (17, C64, None if blk.read_time_ns is None else blk.read_time_ns // 1000),
            (18, C64, None if blk.write_time_ns is None else blk.write_time_ns // 1000),
        ))
    for pos, nic in enumerate(dom.interfaces, start=1):
        b.columns(VM_NETWORK_ENTRY, (index, pos), (
            (NETWORK_IF_INDEX, INT, 0), (NETWORK_PARENT, INT, 0),  # host ifIndex unknown: the hypervisor may be remote
            (NETWORK_MODEL, STR, nic.model), (NETWORK_PHYS_ADDRESS, BYTES, mac_bytes(nic.mac) or b""),
        ))


#: Tables whose rows of a domain all begin with its index.
INDEXED_BY_DOMAIN = (VM_ENTRY, VM_CPU_ENTRY, VM_CPU_AFFINITY_ENTRY, VM_STORAGE_ENTRY, VM_NETWORK_ENTRY)

#: VM-MIB per-VM notification by event kind: vmRunning(1), vmShuttingdown(2), vmShutdown(3), vmPaused(4),
#: vmSuspended(6), vmCrashed(9), vmDeleted(10).
VM_NOTIFICATIONS = {"started": 1, "resumed": 1, "shutdown": 2, "stopped": 3, "suspended": 4, "pmsuspended": 6,
                    "crashed": 9, "undefined": 10}


def lifecycle_notification(kind: str, name: str, uuid: str, index: int, *, persistent: bool,
                           previous_state: int | None) -> NotificationDef | None:
    code = VM_NOTIFICATIONS.get(kind)
    if code is None:
        return None
    # RFC 7666 sends the oper state the VM had before the transition.
    before = vm_oper_state(previous_state) if previous_state is not None else 1
    binds = [
        (VM_ENTRY + (VM_NAME, index), (STR, name)),
        (VM_ENTRY + (VM_UUID, index), (BYTES, uuidlib.UUID(uuid).bytes)),
        (VM_ENTRY + (VM_OPER_STATE, index), (INT, before)),
    ]
    if code == 10:
        binds.append((VM_ENTRY + (VM_PERSISTENT, index), (INT, 2 if persistent else 3)))
    return NotificationDef("vm", VM_ROOT + (0, code), tuple(binds))
