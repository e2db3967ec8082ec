"""LIBVIRT-EXPORTER-MIB (mibs/LIBVIRT-EXPORTER-MIB.txt), our own module: its objects, its rows and its
notifications.

The columns that carry a snapshot value come from the field table (:mod:`exporter.fields`); the others
(the control columns, ages, the name index) are declared here with named column numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from exporter import fields
from exporter.snapshot import NO_JOB, NO_PERF, Domain, Network, Snapshot, StoragePool, version_text
from exporter.snmp.syntax import BYTES, G32, INT, RO, RW, STR, TICKS, U32, NotificationDef, ObjectDef, OidT, defs
from exporter.snmp.view import Builder

#: The one place the provisional enterprise arc lives (net-snmp's playpen).
LVX_ROOT: OidT = (1, 3, 6, 1, 4, 1, 8072, 9999, 9999)
LVX_HOST = LVX_ROOT + (1, 1)
LVX_DOMAIN_ENTRY = LVX_ROOT + (1, 2, 1)
LVX_NAME_ENTRY = LVX_ROOT + (1, 3, 1)
LVX_VCPU_ENTRY = LVX_ROOT + (1, 4, 1)
LVX_BLOCK_ENTRY = LVX_ROOT + (1, 5, 1)
LVX_IF_ENTRY = LVX_ROOT + (1, 6, 1)
LVX_POOL_ENTRY = LVX_ROOT + (1, 7, 1)
LVX_NET_ENTRY = LVX_ROOT + (1, 8, 1)
LVX_METADATA_ENTRY = LVX_ROOT + (1, 9, 1)
LVX_JOB_ENTRY = LVX_ROOT + (1, 10, 1)
LVX_PERF_ENTRY = LVX_ROOT + (1, 11, 1)
LVX_IOTHREAD_ENTRY = LVX_ROOT + (1, 12, 1)

#: The entry (or, for the host, the group) of each field table's MIB table.
ENTRIES: dict[str, OidT] = {
    "host": LVX_HOST, "domain": LVX_DOMAIN_ENTRY, "vcpu": LVX_VCPU_ENTRY, "block": LVX_BLOCK_ENTRY,
    "interface": LVX_IF_ENTRY, "pool": LVX_POOL_ENTRY, "network": LVX_NET_ENTRY, "job": LVX_JOB_ENTRY,
    "perf": LVX_PERF_ENTRY, "iothread": LVX_IOTHREAD_ENTRY,
}

# lvxHost scalars not in the field table
HOST_DRIVER, HOST_DRIVER_VERSION, HOST_LIBVIRT_VERSION = 1, 2, 3
DOMAIN_COUNT, DOMAIN_ACTIVE_COUNT, DOMAIN_TABLE_LAST_CHANGE, LIBVIRT_CONNECTION = 8, 9, 10, 11
SNAPSHOT_TIME, SNAPSHOT_AGE, ACTION_SPIN_LOCK = 12, 13, 14
# lvxDomainTable columns not in the field table
DOMAIN_UPTIME, DOMAIN_ADMIN_STATE, DOMAIN_ACTION, DOMAIN_LAST_ACTION = 26, 27, 28, 29
DOMAIN_LAST_ACTION_RESULT, DOMAIN_LAST_ACTION_ERROR, DOMAIN_LAST_ACTION_TIME, DOMAIN_STATS_AGE = 30, 31, 32, 34
# lvxDomainNameTable
NAME_INDEX, NAME_OPER_STATE = 2, 3
# lvxInterfaceTable columns not in the field table
INTERFACE_MAC, INTERFACE_SOURCE = 3, 6
# lvxMetadataTable
METADATA_LABEL, METADATA_VALUE = 2, 3

MAX_NAME_KEY = 100  # longest domain name listed in lvxDomainNameTable

_EXPLICIT: dict[str, list[tuple[int, str, str, str]]] = {
    "host": [
        (HOST_DRIVER, "lvxHostDriver", STR, RO), (HOST_DRIVER_VERSION, "lvxHostDriverVersion", STR, RO),
        (HOST_LIBVIRT_VERSION, "lvxHostLibvirtVersion", STR, RO), (DOMAIN_COUNT, "lvxDomainCount", G32, RO),
        (DOMAIN_ACTIVE_COUNT, "lvxDomainActiveCount", G32, RO),
        (DOMAIN_TABLE_LAST_CHANGE, "lvxDomainTableLastChange", TICKS, RO),
        (LIBVIRT_CONNECTION, "lvxLibvirtConnection", INT, RO), (SNAPSHOT_TIME, "lvxSnapshotTime", U32, RO),
        (SNAPSHOT_AGE, "lvxSnapshotAge", U32, RO), (ACTION_SPIN_LOCK, "lvxActionSpinLock", INT, RW),
    ],
    "domain": [
        (DOMAIN_UPTIME, "lvxDomainUptime", U32, RO), (DOMAIN_ADMIN_STATE, "lvxDomainAdminState", INT, RW),
        (DOMAIN_ACTION, "lvxDomainAction", INT, RW), (DOMAIN_LAST_ACTION, "lvxDomainLastAction", INT, RO),
        (DOMAIN_LAST_ACTION_RESULT, "lvxDomainLastActionResult", INT, RO),
        (DOMAIN_LAST_ACTION_ERROR, "lvxDomainLastActionError", STR, RO),
        (DOMAIN_LAST_ACTION_TIME, "lvxDomainLastActionTime", U32, RO),
        (DOMAIN_STATS_AGE, "lvxDomainStatsAge", U32, RO),
    ],
    "interface": [(INTERFACE_MAC, "lvxInterfaceMac", BYTES, RO), (INTERFACE_SOURCE, "lvxInterfaceSource", STR, RO)],
}


def _objects(table: str) -> tuple[ObjectDef, ...]:
    rows = [(f.column.number, f.column.name, f.column.syntax, RO) for f in fields.of_table(table) if f.column]
    return defs(ENTRIES[table], sorted(rows + _EXPLICIT.get(table, [])))


HOST_OBJECTS = _objects("host")
DOMAIN_OBJECTS = _objects("domain")
METADATA_OBJECTS = defs(LVX_METADATA_ENTRY, [(METADATA_LABEL, "lvxMetadataLabel", STR, RO),
                                             (METADATA_VALUE, "lvxMetadataValue", STR, RO)])
NAME_OBJECTS = defs(LVX_NAME_ENTRY, [(NAME_INDEX, "lvxDomainNameIndex", INT, RO),
                                     (NAME_OPER_STATE, "lvxDomainNameOperState", INT, RO)])
VCPU_OBJECTS = _objects("vcpu")
BLOCK_OBJECTS = _objects("block")
INTERFACE_OBJECTS = _objects("interface")
POOL_OBJECTS = _objects("pool")
NETWORK_OBJECTS = _objects("network")
JOB_OBJECTS = _objects("job")
PERF_OBJECTS = _objects("perf")
IOTHREAD_OBJECTS = _objects("iothread")
OBJECTS = (HOST_OBJECTS + DOMAIN_OBJECTS + NAME_OBJECTS + VCPU_OBJECTS + BLOCK_OBJECTS + INTERFACE_OBJECTS
           + POOL_OBJECTS + NETWORK_OBJECTS + METADATA_OBJECTS + JOB_OBJECTS + PERF_OBJECTS + IOTHREAD_OBJECTS)

_Cells = tuple[tuple[int, str, Callable[[Any], Any]], ...]


def _cells(table: str) -> _Cells:
    """(column, syntax, reader of an object of ``table`` giving the column's value) for the table's fields."""
    return tuple((f.column.number, f.column.syntax, f.column_reader()) for f in fields.of_table(table) if f.column)


_CELLS = {table: _cells(table) for table in ENTRIES}


def put_fields(b: Builder, table: str, index: OidT, obj: Any) -> None:
    """``obj``'s row of ``table``: the columns the field table gives it."""
    b.read(ENTRIES[table], index, _CELLS[table], obj)


def mac_bytes(text: str) -> bytes | None:
    """A MAC address's six bytes from its text, None unless it is one."""
    try:
        raw = bytes(int(part, 16) for part in text.split(":"))
    except ValueError:
        return None
    return raw if len(raw) == 6 else None


def name_key(name: str) -> OidT | None:
    """A domain's row in lvxDomainNameTable: its name's UTF-8 bytes, if short enough."""
    raw = name.encode("utf-8")
    return tuple(raw) if 0 < len(raw) <= MAX_NAME_KEY else None


def admin_state(state: int) -> int:
    """lvxDomainAdminState as read: the state the domain has reached."""
    return {1: 1, 2: 1, 3: 2, 7: 2, 4: 3}.get(state, 4)


def _age_since(start: float) -> Callable[[float], int]:
    return lambda now: int(max(0.0, now - start))


def put_scalars(b: Builder, snap: Snapshot, table_last_change_ticks: int, spin_lock: int, active_count: int
                ) -> None:
    def put(number: int, syntax: str, value: Any) -> None:
        b.put(LVX_HOST + (number,), (0,), syntax, value)

    put(LIBVIRT_CONNECTION, INT, 1 if snap.up else 2)
    put(DOMAIN_TABLE_LAST_CHANGE, TICKS, table_last_change_ticks)
    put(ACTION_SPIN_LOCK, INT, spin_lock)
    if snap.up:
        put(SNAPSHOT_TIME, U32, int(snap.taken_at))
        put(SNAPSHOT_AGE, U32, _age_since(snap.taken_at))
        put(DOMAIN_COUNT, G32, len(snap.domains))
        put(DOMAIN_ACTIVE_COUNT, G32, active_count)
    host = snap.host
    if host is not None:
        put(HOST_DRIVER, STR, host.driver)
        put(HOST_DRIVER_VERSION, STR, version_text(host.hypervisor_version))
        put(HOST_LIBVIRT_VERSION, STR, version_text(host.libvirt_version))
        put_fields(b, "host", (0,), host)


def put_domain(b: Builder, dom: Domain, index: int, started: float | None,
               action: tuple[int, int, str, int] | None) -> None:
    """A domain's rows in lvxDomainTable, lvxDomainNameTable, lvxVcpuTable, lvxBlockTable and
    lvxInterfaceTable."""
    idx = (index,)
    last_action, result, error, when = action or (1, 1, "", 0)
    uptime = _age_since(started) if started is not None and dom.active else None
    put_fields(b, "domain", idx, dom)
    b.columns(LVX_DOMAIN_ENTRY, idx, (
        (DOMAIN_UPTIME, U32, uptime), (DOMAIN_ADMIN_STATE, INT, admin_state(dom.state)), (DOMAIN_ACTION, INT, 1),
        (DOMAIN_LAST_ACTION, INT, last_action), (DOMAIN_LAST_ACTION_RESULT, INT, result),
        (DOMAIN_LAST_ACTION_ERROR, STR, error), (DOMAIN_LAST_ACTION_TIME, U32, when),
        (DOMAIN_STATS_AGE, U32, _age_since(dom.stats_at) if dom.stats_at is not None else None),
    ))
    key = name_key(dom.name)
    if key is not None:
        b.columns(LVX_NAME_ENTRY, key, ((NAME_INDEX, INT, index), (NAME_OPER_STATE, INT, dom.state)))
    for vcpu in dom.vcpus:
        put_fields(b, "vcpu", (index, vcpu.number), vcpu)
    for pos, blk in enumerate(dom.blocks, start=1):
        put_fields(b, "block", (index, pos), blk)
    if fields.OPENSTACK.present(dom):
        for pos, label in enumerate(fields.OPENSTACK.labels, start=1):
            b.columns(LVX_METADATA_ENTRY, (index, pos), ((METADATA_LABEL, STR, label.name),
                                                         (METADATA_VALUE, STR, label.get(dom))))
    if dom.job is not NO_JOB or dom.last_job is not NO_JOB:
        put_fields(b, "job", idx, dom)
    if dom.perf is not NO_PERF:
        put_fields(b, "perf", idx, dom)
    for io in dom.iothreads:
        put_fields(b, "iothread", (index, io.id), io)
    # The site's [metadata] labels follow Nova's, each at a position of its own (config order).
    for pos, (name, value) in enumerate(dom.metadata, start=len(fields.OPENSTACK.labels) + 1):
        b.columns(LVX_METADATA_ENTRY, (index, pos), ((METADATA_LABEL, STR, name), (METADATA_VALUE, STR, value)))
    for pos, nic in enumerate(dom.interfaces, start=1):
        put_fields(b, "interface", (index, pos), nic)
        b.columns(LVX_IF_ENTRY, (index, pos), ((INTERFACE_MAC, BYTES, mac_bytes(nic.mac)),
                                               (INTERFACE_SOURCE, STR, nic.bridge or nic.network)))


def domain_ranges(dom: Domain, index: int) -> list[tuple[OidT, OidT, OidT]]:
    """(table entry, first row, end row) of every row range ``dom`` may have in these tables."""
    ranges: list[tuple[OidT, OidT, OidT]] = [(entry, (index,), (index + 1,))
              for entry in (LVX_DOMAIN_ENTRY, LVX_VCPU_ENTRY, LVX_BLOCK_ENTRY, LVX_IF_ENTRY, LVX_METADATA_ENTRY,
                            LVX_JOB_ENTRY, LVX_PERF_ENTRY, LVX_IOTHREAD_ENTRY)]
    key = name_key(dom.name)
    if key is not None:
        ranges.append((LVX_NAME_ENTRY, key, key + (0,)))  # exactly the key: a longer name sorts after key + (0,)
    return ranges


def put_pools(b: Builder, pools: Iterable[StoragePool], indexes: Mapping[str, int]) -> None:
    for pool in pools:
        index = indexes.get(pool.uuid)
        if index is not None:
            put_fields(b, "pool", (index,), pool)


def put_networks(b: Builder, networks: Iterable[Network], indexes: Mapping[str, int]) -> None:
    for net in networks:
        index = indexes.get(net.uuid)
        if index is not None:
            put_fields(b, "network", (index,), net)


# -- notifications ---------------------------------------------------------------

#: lvx notification number by event kind (lvxNotifications.N)
LVX_NOTIFICATIONS = {"started": 1, "stopped": 2, "suspended": 3, "resumed": 4, "shutdown": 5, "crashed": 6,
                     "defined": 7, "undefined": 8, "pmsuspended": 9}
LVX_ACTION_FAILED = 10
_NAME, _UUID, _OPER_STATE, _REASON = (LVX_DOMAIN_ENTRY + (n,) for n in (2, 3, 5, 6))


def lifecycle_notification(kind: str, name: str, uuid: str, index: int, state: int, reason: int
                           ) -> NotificationDef | None:
    code = LVX_NOTIFICATIONS.get(kind)
    if code is None:
        return None
    return NotificationDef("libvirt-exporter", LVX_ROOT + (0, code), (
        (_NAME + (index,), (STR, name)), (_UUID + (index,), (STR, uuid)),
        (_OPER_STATE + (index,), (INT, state)), (_REASON + (index,), (INT, reason)),
    ))


#: Notifications of events that change no state: lvxDomainMigrationStarted, lvxDomainMigrationEnded,
#: lvxDomainDiskError.
LVX_EVENT_NOTIFICATIONS = {"migration_started": 11, "migration_ended": 12, "io_error": 13}
_JOB_COLUMNS = {f.column.name: f.column.number for f in fields.of_table("job") if f.column is not None}
_BLOCK_COLUMNS = {f.column.name: f.column.number for f in fields.of_table("block") if f.column is not None}


def event_notification(kind: str, dom: Domain, index: int, detail: int, device: str = "") -> NotificationDef | None:
    """A migration's start (``detail``: the job's operation, 4 incoming, 5 outgoing) or end (``detail``: its outcome,
    3 completed), or a disk error that paused the guest (``detail``: the error code; ``device``: the disk's alias
    or source path, which names its row); None for any other kind."""
    code = LVX_EVENT_NOTIFICATIONS.get(kind)
    if code is None:
        return None
    ids = ((_NAME + (index,), (STR, dom.name)), (_UUID + (index,), (STR, dom.uuid)))
    job = LVX_JOB_ENTRY
    if kind == "migration_started":
        rest: tuple[tuple[OidT, tuple[str, Any]], ...] = ((job + (_JOB_COLUMNS["lvxJobOperation"], index),
                                                           (INT, detail)),)
    elif kind == "migration_ended":
        rest = ((job + (_JOB_COLUMNS["lvxJobLastType"], index), (INT, detail)),)
    else:
        pos, target = next(((n, b.target) for n, b in enumerate(dom.blocks, start=1) if device in (b.alias, b.source)),
                           (0, ""))
        rest = ((LVX_BLOCK_ENTRY + (_BLOCK_COLUMNS["lvxBlockTarget"], index, pos), (STR, target)),
                (LVX_BLOCK_ENTRY + (_BLOCK_COLUMNS["lvxBlockErrorCode"], index, pos), (INT, detail)))
    return NotificationDef("libvirt-exporter", LVX_ROOT + (0, code), ids + rest)


def action_failed_notification(name: str, uuid: str, index: int, action: int, error: str) -> NotificationDef:
    return NotificationDef("libvirt-exporter", LVX_ROOT + (0, LVX_ACTION_FAILED), (
        (_NAME + (index,), (STR, name)), (_UUID + (index,), (STR, uuid)),
        (LVX_DOMAIN_ENTRY + (DOMAIN_LAST_ACTION, index), (INT, action)),
        (LVX_DOMAIN_ENTRY + (DOMAIN_LAST_ACTION_ERROR, index), (STR, error)),
    ))
