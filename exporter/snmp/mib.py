"""Pure mapping of a snapshot onto the served MIB objects.

Every object the agent serves is declared once here, with its OID, syntax
and access; ``tests/test_snmp.py`` (``test_mib_and_code_agree``,
``test_every_served_oid_resolves_in_the_mibs``) holds these declarations
against the MIB texts in ``mibs/``.  :func:`build_view` turns one snapshot into
a :class:`MibView`: the instances of every column in index order, built
once per snapshot and then only read by request handlers.

Values are kept as ``(syntax, python value)`` pairs; the agent converts
them to protocol types when it answers.  A value may be a callable taking
the current time (for ages and uptimes), evaluated per request.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from exporter import __version__
from exporter.snapshot import STATE_NOSTATE, STATE_PMSUSPENDED, Domain, Snapshot, version_text

#: The one place the provisional enterprise arc lives (net-snmp's playpen).
LVX_ROOT: tuple[int, ...] = (1, 3, 6, 1, 4, 1, 8072, 9999, 9999)
LIBVIRT_ROOT: tuple[int, ...] = (1, 3, 6, 1, 4, 1, 36957)
VM_ROOT: tuple[int, ...] = (1, 3, 6, 1, 2, 1, 236)  # RFC 7666 VM-MIB (mib-2 236)
SYSTEM: tuple[int, ...] = (1, 3, 6, 1, 2, 1, 1)

LVX_HOST = LVX_ROOT + (1, 1)
LVX_DOMAIN_ENTRY = LVX_ROOT + (1, 2, 1)
LVX_NAME_ENTRY = LVX_ROOT + (1, 3, 1)
LVX_VCPU_ENTRY = LVX_ROOT + (1, 4, 1)
LVX_BLOCK_ENTRY = LVX_ROOT + (1, 5, 1)
LVX_IF_ENTRY = LVX_ROOT + (1, 6, 1)
LVX_POOL_ENTRY = LVX_ROOT + (1, 7, 1)
LVX_NET_ENTRY = LVX_ROOT + (1, 8, 1)
LIBVIRT_GUEST_ENTRY = LIBVIRT_ROOT + (1, 1, 1)
VM_OBJECTS_ARC = VM_ROOT + (1,)
VM_HV = VM_OBJECTS_ARC + (1,)
VM_ENTRY = VM_OBJECTS_ARC + (4, 1)
VM_CPU_ENTRY = VM_OBJECTS_ARC + (5, 1)
VM_STORAGE_ENTRY = VM_OBJECTS_ARC + (7, 1)
VM_NETWORK_ENTRY = VM_OBJECTS_ARC + (8, 1)
VM_MEM_UNIT = 1024  # vmMemUnit: memory figures are in KiB
VM_STORAGE_UNIT = 1024 * 1024  # vmStorageSizeUnit: sizes in MiB keep Integer32 up to 2 PiB
_INT32_MAX = 2**31 - 1

# Syntax tags: how a value is encoded on the wire.
INT = "int"  # Integer32, enumerations, TruthValue, TestAndIncr, RowStatus
STR = "str"  # OCTET STRING / DisplayString from text
BYTES = "bytes"  # OCTET STRING from raw bytes (MacAddress, UUID)
U32 = "u32"  # Unsigned32
G32 = "g32"  # Gauge32 (saturates at 2^32-1)
C64 = "c64"  # Counter64 and LvxGauge64
TICKS = "ticks"  # TimeTicks, TimeStamp
OID = "oid"  # OBJECT IDENTIFIER

RO = "read-only"
RW = "read-write"
RC = "read-create"
NOTIFY = "accessible-for-notify"

MAX_NAME_KEY = 100  # longest domain name listed in lvxDomainNameTable

Value = tuple[str, Any]
C = TypeVar("C")
B = TypeVar("B")


def resolve(value: Value, now: float) -> tuple[str, Any]:
    """A value as every protocol path sends it: time-dependent ones evaluated at ``now``, text as UTF-8
    bytes, numbers saturated at their syntax's range (Integer32, Gauge32/Unsigned32, Counter64, TimeTicks
    wraps), OIDs as tuples."""
    syntax, raw = value
    if callable(raw):
        raw = raw(now)
    if syntax == INT:
        return syntax, min(max(raw, -(2**31)), _INT32_MAX)
    if syntax == STR:
        return syntax, raw.encode("utf-8")
    if syntax == BYTES:
        return syntax, bytes(raw)
    if syntax == C64:
        return syntax, min(max(raw, 0), 2**64 - 1)
    if syntax in (G32, U32):
        return syntax, min(max(raw, 0), 2**32 - 1)
    if syntax == TICKS:
        return syntax, raw % 2**32
    if syntax == OID:
        return syntax, tuple(raw)
    raise ValueError(f"unknown syntax {syntax!r}")


@dataclass(frozen=True, slots=True)
class ObjectDef:
    name: str
    oid: tuple[int, ...]  # scalar (without .0) or column
    syntax: str
    access: str = RO


def _defs(prefix: tuple[int, ...], rows: Iterable[tuple[int, str, str, str]]) -> tuple[ObjectDef, ...]:
    return tuple(ObjectDef(name, prefix + (sub,), syntax, access) for sub, name, syntax, access in rows)


SYSTEM_OBJECTS = _defs(SYSTEM, [
    (1, "sysDescr", STR, RO), (2, "sysObjectID", OID, RO), (3, "sysUpTime", TICKS, RO),
    (4, "sysContact", STR, RO), (5, "sysName", STR, RO), (6, "sysLocation", STR, RO),
    (7, "sysServices", INT, RO),
])

HOST_OBJECTS = _defs(LVX_HOST, [
    (1, "lvxHostDriver", STR, RO), (2, "lvxHostDriverVersion", STR, RO), (3, "lvxHostLibvirtVersion", STR, RO),
    (4, "lvxHostName", STR, RO), (5, "lvxHostCpus", U32, RO), (6, "lvxHostMemoryTotal", G32, RO),
    (7, "lvxHostMemoryFree", G32, RO), (8, "lvxDomainCount", G32, RO), (9, "lvxDomainActiveCount", G32, RO),
    (10, "lvxDomainTableLastChange", TICKS, RO), (11, "lvxLibvirtConnection", INT, RO),
    (12, "lvxSnapshotTime", U32, RO), (13, "lvxSnapshotAge", U32, RO), (14, "lvxActionSpinLock", INT, RW),
])

DOMAIN_OBJECTS = _defs(LVX_DOMAIN_ENTRY, [
    (2, "lvxDomainName", STR, RO), (3, "lvxDomainUUID", STR, RO), (4, "lvxDomainId", INT, RO),
    (5, "lvxDomainOperState", INT, RO), (6, "lvxDomainStateReason", INT, RO), (7, "lvxDomainPersistent", INT, RO),
    (8, "lvxDomainAutostart", INT, RO), (9, "lvxDomainVcpus", U32, RO), (10, "lvxDomainVcpusMax", U32, RO),
    (11, "lvxDomainMemory", G32, RO), (12, "lvxDomainMemoryMax", G32, RO), (13, "lvxDomainCpuTime", C64, RO),
    (14, "lvxDomainCpuUserTime", C64, RO), (15, "lvxDomainCpuSystemTime", C64, RO),
    (16, "lvxDomainBalloonActual", G32, RO), (17, "lvxDomainMemAvailable", G32, RO),
    (18, "lvxDomainMemUnused", G32, RO), (19, "lvxDomainMemUsable", G32, RO), (20, "lvxDomainMemRss", G32, RO),
    (21, "lvxDomainMemDiskCaches", G32, RO), (22, "lvxDomainSwapIn", C64, RO), (23, "lvxDomainSwapOut", C64, RO),
    (24, "lvxDomainMajorFaults", C64, RO), (25, "lvxDomainMinorFaults", C64, RO), (26, "lvxDomainUptime", U32, RO),
    (27, "lvxDomainAdminState", INT, RW), (28, "lvxDomainAction", INT, RW), (29, "lvxDomainLastAction", INT, RO),
    (30, "lvxDomainLastActionResult", INT, RO), (31, "lvxDomainLastActionError", STR, RO),
    (32, "lvxDomainLastActionTime", U32, RO), (33, "lvxDomainStatsTimedOut", INT, RO),
    (34, "lvxDomainStatsAge", U32, RO),
])

NAME_OBJECTS = _defs(LVX_NAME_ENTRY, [(2, "lvxDomainNameIndex", INT, RO), (3, "lvxDomainNameOperState", INT, RO)])

VCPU_OBJECTS = _defs(LVX_VCPU_ENTRY, [
    (2, "lvxVcpuState", INT, RO), (3, "lvxVcpuTime", C64, RO), (4, "lvxVcpuPhysicalCpu", INT, RO),
    (5, "lvxVcpuWait", C64, RO), (6, "lvxVcpuDelay", C64, RO),
])

BLOCK_OBJECTS = _defs(LVX_BLOCK_ENTRY, [
    (2, "lvxBlockTarget", STR, RO), (3, "lvxBlockSource", STR, RO), (4, "lvxBlockBus", STR, RO),
    (5, "lvxBlockDriverType", STR, RO), (6, "lvxBlockCapacity", C64, RO), (7, "lvxBlockAllocation", C64, RO),
    (8, "lvxBlockPhysical", C64, RO), (9, "lvxBlockReadRequests", C64, RO), (10, "lvxBlockReadBytes", C64, RO),
    (11, "lvxBlockReadTime", C64, RO), (12, "lvxBlockWriteRequests", C64, RO), (13, "lvxBlockWriteBytes", C64, RO),
    (14, "lvxBlockWriteTime", C64, RO), (15, "lvxBlockFlushRequests", C64, RO), (16, "lvxBlockFlushTime", C64, RO),
    (17, "lvxBlockErrors", C64, RO),
])

INTERFACE_OBJECTS = _defs(LVX_IF_ENTRY, [
    (2, "lvxInterfaceTarget", STR, RO), (3, "lvxInterfaceMac", BYTES, RO), (4, "lvxInterfaceModel", STR, RO),
    (5, "lvxInterfaceType", STR, RO), (6, "lvxInterfaceSource", STR, RO),
    (7, "lvxInterfaceReceiveBytes", C64, RO), (8, "lvxInterfaceReceivePackets", C64, RO),
    (9, "lvxInterfaceReceiveErrors", C64, RO), (10, "lvxInterfaceReceiveDrops", C64, RO),
    (11, "lvxInterfaceTransmitBytes", C64, RO), (12, "lvxInterfaceTransmitPackets", C64, RO),
    (13, "lvxInterfaceTransmitErrors", C64, RO), (14, "lvxInterfaceTransmitDrops", C64, RO),
])

POOL_OBJECTS = _defs(LVX_POOL_ENTRY, [
    (2, "lvxPoolName", STR, RO), (3, "lvxPoolUUID", STR, RO), (4, "lvxPoolState", INT, RO),
    (5, "lvxPoolAutostart", INT, RO), (6, "lvxPoolCapacity", C64, RO), (7, "lvxPoolAllocation", C64, RO),
    (8, "lvxPoolAvailable", C64, RO),
])

NETWORK_OBJECTS = _defs(LVX_NET_ENTRY, [
    (2, "lvxNetworkName", STR, RO), (3, "lvxNetworkUUID", STR, RO), (4, "lvxNetworkActive", INT, RO),
    (5, "lvxNetworkAutostart", INT, RO), (6, "lvxNetworkBridge", STR, RO),
])

LIBVIRT_OBJECTS = _defs(LIBVIRT_GUEST_ENTRY, [
    (1, "libvirtGuestUUID", BYTES, NOTIFY), (2, "libvirtGuestName", STR, RO), (3, "libvirtGuestState", INT, RC),
    (4, "libvirtGuestCpuCount", U32, RO), (5, "libvirtGuestMemoryCurrent", G32, RO),
    (6, "libvirtGuestMemoryLimit", U32, RO), (7, "libvirtGuestCpuTime", C64, RO),
    (9, "libvirtGuestRowStatus", INT, RC),
])

VM_MIB_OBJECTS = _defs(VM_HV, [
    (1, "vmHvSoftware", STR, RO), (2, "vmHvVersion", STR, RO), (3, "vmHvObjectID", OID, RO),
    (4, "vmHvUpTime", TICKS, RO),
]) + _defs(VM_OBJECTS_ARC, [
    (2, "vmNumber", INT, RO), (3, "vmTableLastChange", TICKS, RO),
    # read-write in the RFC; served read-only here, from the configuration
    (9, "vmPerVMNotificationsEnabled", INT, RO), (10, "vmBulkNotificationsEnabled", INT, RO),
    (11, "vmAffectedVMs", BYTES, NOTIFY),
]) + _defs(VM_ENTRY, [
    (2, "vmName", STR, RO), (3, "vmUUID", BYTES, RO), (4, "vmOSType", STR, RO), (5, "vmAdminState", INT, RO),
    (6, "vmOperState", INT, RO), (7, "vmAutoStart", INT, RO), (8, "vmPersistent", INT, RO),
    (9, "vmCurCpuNumber", INT, RO), (10, "vmMinCpuNumber", INT, RO), (11, "vmMaxCpuNumber", INT, RO),
    (12, "vmMemUnit", INT, RO), (13, "vmCurMem", INT, RO), (14, "vmMinMem", INT, RO), (15, "vmMaxMem", INT, RO),
    (16, "vmUpTime", TICKS, RO), (17, "vmCpuTime", C64, RO),
]) + _defs(VM_CPU_ENTRY, [(2, "vmCpuCoreTime", C64, RO)]) + _defs(VM_STORAGE_ENTRY, [
    (3, "vmStorageParent", INT, RO), (4, "vmStorageSourceType", INT, RO), (5, "vmStorageSourceTypeString", STR, RO),
    (6, "vmStorageResourceID", STR, RO), (7, "vmStorageAccess", INT, RO), (8, "vmStorageMediaType", INT, RO),
    (9, "vmStorageMediaTypeString", STR, RO), (10, "vmStorageSizeUnit", INT, RO),
    (11, "vmStorageDefinedSize", INT, RO), (12, "vmStorageAllocatedSize", INT, RO),
    (13, "vmStorageReadIOs", C64, RO), (14, "vmStorageWriteIOs", C64, RO), (15, "vmStorageReadOctets", C64, RO),
    (16, "vmStorageWriteOctets", C64, RO), (17, "vmStorageReadLatency", C64, RO),
    (18, "vmStorageWriteLatency", C64, RO),
]) + _defs(VM_NETWORK_ENTRY, [
    (2, "vmNetworkIfIndex", INT, RO), (3, "vmNetworkParent", INT, RO), (4, "vmNetworkModel", STR, RO),
    (5, "vmNetworkPhysAddress", BYTES, RO),
])

#: VM-MIB objects not served, and why (vmCpuAffinityTable needs pinning data the snapshot does not hold).
VM_MIB_NOT_SERVED = {"vmCpuAffinity": "CPU pinning is not polled"}

OBJECTS: tuple[ObjectDef, ...] = (
    SYSTEM_OBJECTS + HOST_OBJECTS + DOMAIN_OBJECTS + NAME_OBJECTS + VCPU_OBJECTS + BLOCK_OBJECTS
    + INTERFACE_OBJECTS + POOL_OBJECTS + NETWORK_OBJECTS + LIBVIRT_OBJECTS + VM_MIB_OBJECTS
)
BY_NAME: Mapping[str, ObjectDef] = {o.name: o for o in OBJECTS}
#: Objects readable through GET and walks (accessible-for-notify ones are not).
READABLE = frozenset(o.oid for o in OBJECTS if o.access != NOTIFY)


def _o(name: str) -> tuple[int, ...]:
    return BY_NAME[name].oid


# -- the view ------------------------------------------------------------------


class Missing(enum.Enum):
    """Why a GET finds no value (the exceptions of RFC 3416)."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"


class _Column:
    """The instances of one object (a column, or one scalar), in index order."""

    __slots__ = ("oid", "rows", "syntax", "values")

    def __init__(self, oid: tuple[int, ...], syntax: str, rows: list[tuple[int, ...]], values: list[Any]) -> None:
        self.oid = oid
        self.syntax = syntax
        self.rows = rows  # index suffixes, sorted
        self.values = values  # python values (or callables of the time), aligned with rows


class MibView:
    """Every served instance, in OID order, kept by column.  Immutable once built.

    Each column holds its row indexes and raw values in two lists (a row's
    index tuple is shared by all the columns of its table), so a view costs a
    few list slots per instance rather than an OID tuple and a dict entry.
    GETNEXT is a bisect over column OIDs and then over that column's rows.
    """

    __slots__ = ("_size", "_starts", "columns")

    def __init__(self, columns: list[_Column]) -> None:
        self.columns = sorted(columns, key=lambda c: c.oid)
        self._starts = [c.oid for c in self.columns]
        self._size = sum(len(c.rows) for c in self.columns)

    def __len__(self) -> int:
        return self._size

    def _column_of(self, oid: tuple[int, ...]) -> tuple[int, tuple[int, ...] | None]:
        """(position of the last column starting at or before ``oid``, ``oid``'s index in it or None)."""
        pos = bisect.bisect_right(self._starts, oid) - 1
        if pos >= 0:
            prefix = self.columns[pos].oid
            if oid[:len(prefix)] == prefix:
                return pos, oid[len(prefix):]
        return pos, None

    def get(self, oid: tuple[int, ...]) -> Value | None:
        pos, index = self._column_of(oid)
        if index is None:
            return None
        col = self.columns[pos]
        row = bisect.bisect_left(col.rows, index)
        if row < len(col.rows) and col.rows[row] == index:
            return col.syntax, col.values[row]
        return None

    def lookup(self, oid: tuple[int, ...]) -> Value | Missing:
        """A GET of ``oid``: its value, or which exception every read path answers (RFC 3416 4.2.1):
        noSuchInstance for an object we serve that has no such row, noSuchObject for anything else."""
        entry = self.get(oid)
        if entry is not None:
            return entry
        obj = object_of(oid)
        return Missing.NO_SUCH_INSTANCE if obj is not None and obj.oid in READABLE else Missing.NO_SUCH_OBJECT

    def position_after(self, oid: tuple[int, ...]) -> tuple[int, int]:
        """(column, row) of the first instance strictly after ``oid``; the column may be past the end."""
        pos, index = self._column_of(oid)
        if index is not None:
            row = bisect.bisect_right(self.columns[pos].rows, index)
            if row < len(self.columns[pos].rows):
                return pos, row
        return pos + 1, 0

    def walk(self, oid: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], Value]]:
        """The instances strictly after ``oid``, in order."""
        pos, row = self.position_after(oid)
        for col in self.columns[pos:]:
            for index, value in zip(col.rows[row:], col.values[row:], strict=False):
                yield col.oid + index, (col.syntax, value)
            row = 0

    def items(self) -> Iterator[tuple[tuple[int, ...], Value]]:
        return self.walk(())

    def patched(self, remove: Iterable[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
                add: Builder, scalars: Builder) -> MibView:
        """A new view: rows ``remove``d (table entry, first row, end row), ``add``'s rows put in, and the
        scalar columns replaced by ``scalars``'.  Only the columns touched are copied; the others are shared
        with this view, which stays as it was."""
        columns = {c.oid: c for c in self.columns}
        copied: dict[tuple[int, ...], _Column] = {}

        def own(oid: tuple[int, ...], syntax: str) -> _Column:
            col = copied.get(oid)
            if col is None:
                old = columns.get(oid)
                col = copied[oid] = _Column(oid, syntax, list(old.rows), list(old.values)) if old is not None \
                    else _Column(oid, syntax, [], [])
            return col

        by_entry: dict[tuple[int, ...], list[_Column]] = {}
        for col in self.columns:
            by_entry.setdefault(col.oid[:-1], []).append(col)
        for entry, first, end in remove:
            for old in by_entry.get(entry, ()):
                rows = copied[old.oid].rows if old.oid in copied else old.rows
                lo = bisect.bisect_left(rows, first)
                if lo < len(rows) and rows[lo] < end:
                    col = own(old.oid, old.syntax)
                    hi = bisect.bisect_left(col.rows, end, lo)
                    del col.rows[lo:hi], col.values[lo:hi]
        for oid, (syntax, rows, values) in add.cells():
            col = own(oid, syntax)
            for row, value in zip(rows, values, strict=False):
                at = bisect.bisect_left(col.rows, row)
                if at < len(col.rows) and col.rows[at] == row:
                    col.values[at] = value
                else:
                    col.rows.insert(at, row)
                    col.values.insert(at, value)
        for oid, (syntax, rows, values) in scalars.cells():
            copied[oid] = _Column(oid, syntax, list(rows), list(values))
        columns.update(copied)
        return MibView([c for c in columns.values() if c.rows])


def bulk_rounds(cursors: Sequence[C], rounds: int, step: Callable[[C], tuple[C | None, B]]) -> Iterator[list[B]]:
    """The repeated part of a GETBULK (RFC 3416 4.2.3; AgentX's GetBulk, RFC 2741 7.2.3.3, the same).

    ``step(cursor)`` gives (the cursor after it, or None at the end of the view; its binding). Each round
    yields one binding per cursor; a cursor that ended keeps giving its end binding; the rounds stop
    early once every cursor has ended.
    """
    current: list[C] = list(cursors)
    ended: dict[int, B] = {}
    for _ in range(rounds if current else 0):
        row = []
        for j, cursor in enumerate(current):
            if j not in ended:
                following, bind = step(cursor)
                if following is None:
                    ended[j] = bind
                else:
                    current[j] = following
                row.append(bind)
            else:
                row.append(ended[j])
        yield row
        if len(ended) == len(current):
            return


def object_of(oid: tuple[int, ...]) -> ObjectDef | None:
    """The served object that ``oid`` is an instance of, if any."""
    for length in range(len(oid), 0, -1):
        obj = _BY_OID.get(oid[:length])
        if obj is not None:
            return obj
    return None


_BY_OID = {o.oid: o for o in OBJECTS}


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """What the system group says about this agent."""

    contact: str = ""
    location: str = ""
    started_at: float = 0.0  # Unix time the agent started (sysUpTime counts from it)
    connected_at: float | None = None  # Unix time the libvirt connection was (re)established
    vm_notifications: bool = False  # whether VM-MIB notifications are sent


@dataclass(frozen=True, slots=True)
class Indexes:
    """Stable row indexes by UUID, from the index map."""

    domains: dict[str, int]  # the agent adds a domain's index when an event announces it
    pools: Mapping[str, int]
    networks: Mapping[str, int]


def _ticks_since(start: float) -> Callable[[float], int]:
    return lambda now: int(max(0.0, now - start) * 100)


def _bool(value: bool) -> int:
    return 1 if value else 2  # TruthValue


def _mac(text: str) -> bytes | None:
    try:
        raw = bytes(int(part, 16) for part in text.split(":"))
    except ValueError:
        return None
    return raw if len(raw) == 6 else None


def _name_key(name: str) -> tuple[int, ...] | None:
    raw = name.encode("utf-8")
    return tuple(raw) if 0 < len(raw) <= MAX_NAME_KEY else None


def libvirt_guest_state(state: int) -> int:
    """libvirt-snmp's enumeration lacks nostate and pmsuspended: map them onto it."""
    if state == STATE_PMSUSPENDED:
        return 3  # paused
    if state == STATE_NOSTATE:
        return 2  # blocked
    return state


class Builder:
    def __init__(self) -> None:
        self._columns: dict[tuple[int, ...], tuple[str, list[tuple[int, ...]], list[Any]]] = {}
        self._keys: dict[tuple[tuple[int, ...], int], tuple[int, ...]] = {}

    def _append(self, obj: tuple[int, ...], index: tuple[int, ...], syntax: str, value: Any) -> None:
        col = self._columns.get(obj)
        if col is None:
            col = self._columns[obj] = (syntax, [], [])
        col[1].append(index)
        col[2].append(value)

    def put(self, obj: tuple[int, ...], index: tuple[int, ...], syntax: str, value: Any) -> None:
        if value is not None:
            self._append(obj, index, syntax, value)

    def columns(self, entry: tuple[int, ...], index: tuple[int, ...], cells: Iterable[tuple[int, str, Any]]) -> None:
        keys = self._keys
        for column, syntax, value in cells:
            if value is not None:
                obj = keys.get((entry, column))
                if obj is None:
                    obj = keys[(entry, column)] = entry + (column,)
                self._append(obj, index, syntax, value)

    def cells(self) -> Iterator[tuple[tuple[int, ...], tuple[str, list[tuple[int, ...]], list[Any]]]]:
        return iter(self._columns.items())

    def view(self) -> MibView:
        result = []
        for oid, (syntax, rows, values) in self._columns.items():
            if any(a >= b for a, b in itertools.pairwise(rows)):  # rows not in index order (or repeated): sort
                by_index = dict(zip(rows, values, strict=False))  # a repeated index keeps its last value
                rows = sorted(by_index)
                values = [by_index[r] for r in rows]
            result.append(_Column(oid, syntax, rows, values))
        return MibView(result)


def build_view(
    snap: Snapshot,
    indexes: Indexes,
    system: SystemInfo,
    *,
    table_last_change_ticks: int = 0,
    started_at: Mapping[str, float] | None = None,
    actions: Mapping[str, tuple[int, int, str, int]] | None = None,
    spin_lock: int = 0,
) -> MibView:
    """Every served instance for one snapshot.

    ``started_at`` gives the start time of domains the agent saw start (for
    lvxDomainUptime); ``actions`` the last action per domain UUID as
    (action, result, error, time) for the control columns.
    """
    b = Builder()
    put_scalars(b, snap, system, table_last_change_ticks, spin_lock, sum(1 for d in snap.domains if d.active))
    for dom in snap.domains:
        index = indexes.domains.get(dom.uuid)
        if index is not None:
            put_domain(b, dom, index, (started_at or {}).get(dom.uuid), (actions or {}).get(dom.uuid))

    for pool in snap.pools:
        pidx = indexes.pools.get(pool.uuid)
        if pidx is None:
            continue
        b.columns(LVX_POOL_ENTRY, (pidx,), (
            (2, STR, pool.name), (3, STR, pool.uuid), (4, INT, pool.state), (5, INT, _bool(pool.autostart)),
            (6, C64, pool.capacity_bytes), (7, C64, pool.allocation_bytes), (8, C64, pool.available_bytes),
        ))
    for net in snap.networks:
        nidx = indexes.networks.get(net.uuid)
        if nidx is None:
            continue
        b.columns(LVX_NET_ENTRY, (nidx,), (
            (2, STR, net.name), (3, STR, net.uuid), (4, INT, _bool(net.active)),
            (5, INT, _bool(net.autostart)), (6, STR, net.bridge),
        ))
    return b.view()


def put_scalars(b: Builder, snap: Snapshot, system: SystemInfo, table_last_change_ticks: int, spin_lock: int,
                active_count: int) -> None:
    """The scalars (system group, host, counts), which depend on the snapshot as a whole."""
    host = snap.host
    hostname = host.hostname if host else ""
    desc = f"libvirt-exporter {__version__}"
    if host is not None:
        desc += f" on {hostname}: {host.driver} {version_text(host.hypervisor_version)}, " \
                f"libvirt {version_text(host.libvirt_version)}"
    b.put(_o("sysDescr"), (0,), STR, desc)
    b.put(_o("sysObjectID"), (0,), OID, LVX_ROOT)
    b.put(_o("sysUpTime"), (0,), TICKS, _ticks_since(system.started_at))
    b.put(_o("sysContact"), (0,), STR, system.contact)
    b.put(_o("sysName"), (0,), STR, hostname)
    b.put(_o("sysLocation"), (0,), STR, system.location)
    b.put(_o("sysServices"), (0,), INT, 72)  # application + end-to-end layers

    b.put(_o("lvxLibvirtConnection"), (0,), INT, 1 if snap.up else 2)
    b.put(_o("lvxDomainTableLastChange"), (0,), TICKS, table_last_change_ticks)
    b.put(_o("lvxActionSpinLock"), (0,), INT, spin_lock)
    if snap.up:
        taken = snap.taken_at
        b.put(_o("lvxSnapshotTime"), (0,), U32, int(taken))
        b.put(_o("lvxSnapshotAge"), (0,), U32, lambda now: int(max(0.0, now - taken)))
        b.put(_o("lvxDomainCount"), (0,), G32, len(snap.domains))
        b.put(_o("lvxDomainActiveCount"), (0,), G32, active_count)
    if host is not None:
        b.put(_o("lvxHostDriver"), (0,), STR, host.driver)
        b.put(_o("lvxHostDriverVersion"), (0,), STR, version_text(host.hypervisor_version))
        b.put(_o("lvxHostLibvirtVersion"), (0,), STR, version_text(host.libvirt_version))
        b.put(_o("lvxHostName"), (0,), STR, host.hostname)
        b.put(_o("lvxHostCpus"), (0,), U32, host.cpus)
        b.put(_o("lvxHostMemoryTotal"), (0,), G32, _kib(host.memory_total_bytes))
        b.put(_o("lvxHostMemoryFree"), (0,), G32, _kib(host.memory_free_bytes))

    b.put(_o("vmTableLastChange"), (0,), TICKS, table_last_change_ticks)
    b.put(_o("vmPerVMNotificationsEnabled"), (0,), INT, _bool(system.vm_notifications))
    b.put(_o("vmBulkNotificationsEnabled"), (0,), INT, _bool(False))
    if snap.up:
        b.put(_o("vmNumber"), (0,), INT, len(snap.domains))
    if host is not None:
        b.put(_o("vmHvSoftware"), (0,), STR, f"{host.driver} (libvirt)")
        b.put(_o("vmHvVersion"), (0,), STR, version_text(host.hypervisor_version))
        b.put(_o("vmHvObjectID"), (0,), OID, (0, 0))  # no registered identity: zeroDotZero
        if system.connected_at is not None:
            b.put(_o("vmHvUpTime"), (0,), TICKS, _ticks_since(system.connected_at))


def put_domain(b: Builder, dom: Domain, index: int, started: float | None,
               action: tuple[int, int, str, int] | None) -> None:
    """Every row of one domain, in every table that has one."""
    _domain_rows(b, dom, index, started, action)
    _vm_mib_rows(b, dom, index, started)


#: Tables whose rows of a domain all begin with its index.
_INDEXED_BY_DOMAIN = (LVX_DOMAIN_ENTRY, LVX_VCPU_ENTRY, LVX_BLOCK_ENTRY, LVX_IF_ENTRY, VM_ENTRY, VM_CPU_ENTRY,
                      VM_STORAGE_ENTRY, VM_NETWORK_ENTRY)


def domain_rows(dom: Domain, index: int) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(table entry, first row, end row) of every row range that ``dom`` may have in a view, whatever its
    values: its index in the indexed tables, its name in lvxDomainNameTable, its UUID in libvirtGuestTable."""
    ranges: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = [
        (entry, (index,), (index + 1,)) for entry in _INDEXED_BY_DOMAIN]
    key = _name_key(dom.name)
    if key is not None:
        ranges.append((LVX_NAME_ENTRY, key, key + (0,)))  # exactly the key: a longer name sorts after key + (0,)
    guest = tuple(uuidlib.UUID(dom.uuid).bytes)
    ranges.append((LIBVIRT_GUEST_ENTRY, guest, guest + (0,)))
    return ranges


def _kib(value_bytes: int | None) -> int | None:
    return None if value_bytes is None else value_bytes // 1024


def _domain_rows(
    b: Builder, dom: Domain, index: int, started: float | None, action: tuple[int, int, str, int] | None
) -> None:
    idx = (index,)
    mem = dom.memory
    last_action, result, error, when = action or (1, 1, "", 0)
    b.columns(LVX_DOMAIN_ENTRY, idx, (
        (2, STR, dom.name), (3, STR, dom.uuid), (4, INT, dom.id), (5, INT, dom.state),
        (6, INT, dom.state_reason), (7, INT, _bool(dom.persistent)), (8, INT, _bool(dom.autostart)),
        (9, U32, dom.vcpus_current), (10, U32, dom.vcpus_max), (11, G32, dom.memory_kib),
        (12, G32, dom.max_memory_kib), (13, C64, dom.cpu_time_ns), (14, C64, dom.cpu_user_ns),
        (15, C64, dom.cpu_system_ns), (16, G32, mem.actual_kib), (17, G32, mem.available_kib),
        (18, G32, mem.unused_kib), (19, G32, mem.usable_kib), (20, G32, mem.rss_kib),
        (21, G32, mem.disk_caches_kib), (22, C64, mem.swap_in_kib), (23, C64, mem.swap_out_kib),
        (24, C64, mem.major_faults), (25, C64, mem.minor_faults),
        (26, U32, (lambda now, s=started: int(max(0.0, now - s))) if started is not None and dom.active else None),
        (27, INT, admin_state(dom.state)), (28, INT, 1), (29, INT, last_action), (30, INT, result),
        (31, STR, error), (32, U32, when), (33, INT, _bool(dom.timed_out)),
        (34, U32, (lambda now, at=dom.stats_at: int(max(0.0, now - at))) if dom.stats_at is not None else None),
    ))
    key = _name_key(dom.name)
    if key is not None:
        b.columns(LVX_NAME_ENTRY, key, ((2, INT, index), (3, INT, dom.state)))
    for vcpu in dom.vcpus:
        b.columns(LVX_VCPU_ENTRY, (index, vcpu.number), (
            (2, INT, vcpu.state), (3, C64, vcpu.time_ns), (4, INT, vcpu.physical_cpu),
            (5, C64, vcpu.wait_ns), (6, C64, vcpu.delay_ns),
        ))
    for pos, blk in enumerate(dom.blocks, start=1):
        b.columns(LVX_BLOCK_ENTRY, (index, pos), (
            (2, STR, blk.target), (3, STR, blk.source), (4, STR, blk.bus), (5, STR, blk.driver_type),
            (6, C64, blk.capacity_bytes), (7, C64, blk.allocation_bytes), (8, C64, blk.physical_bytes),
            (9, C64, blk.read_requests), (10, C64, blk.read_bytes), (11, C64, blk.read_time_ns),
            (12, C64, blk.write_requests), (13, C64, blk.write_bytes), (14, C64, blk.write_time_ns),
            (15, C64, blk.flush_requests), (16, C64, blk.flush_time_ns), (17, C64, blk.errors),
        ))
    for pos, nic in enumerate(dom.interfaces, start=1):
        b.columns(LVX_IF_ENTRY, (index, pos), (
            (2, STR, nic.target), (3, BYTES, _mac(nic.mac)), (4, STR, nic.model), (5, STR, nic.interface_type),
            (6, STR, nic.bridge or nic.network), (7, C64, nic.receive_bytes), (8, C64, nic.receive_packets),
            (9, C64, nic.receive_errors), (10, C64, nic.receive_drops), (11, C64, nic.transmit_bytes),
            (12, C64, nic.transmit_packets), (13, C64, nic.transmit_errors), (14, C64, nic.transmit_drops),
        ))
    # libvirt-snmp (0.0.4) lists every domain libvirt knows, active or not (virConnectListAllDomains), each
    # with what virDomainGetInfo says: a shut-off one reads shutoff(5), its configured vCPUs and memory, CPU
    # time 0, and RowStatus active(1) like every other row.
    guest = tuple(uuidlib.UUID(dom.uuid).bytes)
    cpu_time = dom.cpu_time_ns if dom.cpu_time_ns is not None or dom.active else 0
    b.columns(LIBVIRT_GUEST_ENTRY, guest, (
        (2, STR, dom.name), (3, INT, libvirt_guest_state(dom.state)),
        (4, U32, dom.vcpus_current), (5, G32, None if dom.memory_kib is None else dom.memory_kib // 1024),
        (6, U32, None if dom.max_memory_kib is None else dom.max_memory_kib // 1024),
        (7, C64, cpu_time), (9, INT, 1),
    ))


# libvirt state -> VM-MIB VirtualMachineOperState / VirtualMachineAdminState
_VM_OPER = {0: 1, 1: 4, 2: 4, 3: 8, 4: 10, 5: 11, 6: 12, 7: 6}
_VM_ADMIN = {1: 1, 2: 1, 3: 3, 7: 2}  # others: shutdown(4)
_VM_MEDIA = {"disk": 3, "lun": 3, "cdrom": 4, "floppy": 5}  # IANAStorageMediaType; other(1)


def vm_oper_state(state: int) -> int:
    return _VM_OPER.get(state, 1)


def vm_admin_state(state: int) -> int:
    return _VM_ADMIN.get(state, 4)


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
    return -1 if value is None else min(value // unit, _INT32_MAX)


def _vm_mib_rows(b: Builder, dom: Domain, index: int, started: float | None) -> None:
    idx = (index,)
    uptime: Any = None
    if not dom.active:
        uptime = 0
    elif started is not None:
        uptime = _ticks_since(started)
    b.columns(VM_ENTRY, idx, (
        (2, STR, dom.name), (3, BYTES, uuidlib.UUID(dom.uuid).bytes), (4, STR, dom.os_type),
        (5, INT, vm_admin_state(dom.state)), (6, INT, vm_oper_state(dom.state)),
        (7, INT, 2 if dom.autostart else 3), (8, INT, 2 if dom.persistent else 3),
        (9, INT, dom.vcpus_current or 0), (10, INT, -1), (11, INT, -1 if dom.vcpus_max is None else dom.vcpus_max),
        (12, INT, VM_MEM_UNIT), (13, INT, _units(dom.memory_kib, 1) if dom.memory_kib is not None else 0),
        (14, INT, -1), (15, INT, _units(dom.max_memory_kib, 1)), (16, TICKS, uptime),
        (17, C64, None if dom.cpu_time_ns is None else dom.cpu_time_ns // 1000),  # microseconds, as the RFC says
    ))
    for vcpu in dom.vcpus:
        b.put(_o("vmCpuCoreTime"), (index, vcpu.number + 1), C64,
              None if vcpu.time_ns is None else vcpu.time_ns // 1000)
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
            (2, INT, 0), (3, INT, 0),  # host ifIndex unknown: the hypervisor may be remote
            (4, STR, nic.model), (5, BYTES, _mac(nic.mac) or b""),
        ))


def admin_state(state: int) -> int:
    """lvxDomainAdminState as read: the state the domain has reached."""
    return {1: 1, 2: 1, 3: 2, 7: 2, 4: 3}.get(state, 4)


# -- notifications ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationDef:
    """One notification as every sender gets it; its values are plain (what was true when it was made)."""

    mib: str  # "libvirt-exporter", "libvirt" or "vm"
    trap_oid: tuple[int, ...]
    var_binds: tuple[tuple[tuple[int, ...], Value], ...]


#: lvx notification number by event kind (lvxNotifications.N)
LVX_NOTIFICATIONS = {"started": 1, "stopped": 2, "suspended": 3, "resumed": 4, "shutdown": 5, "crashed": 6,
                     "defined": 7, "undefined": 8, "pmsuspended": 9}
LVX_ACTION_FAILED = 10
#: VM-MIB per-VM notification by event kind: vmRunning(1), vmShuttingdown(2), vmShutdown(3), vmPaused(4),
#: vmSuspended(6), vmCrashed(9), vmDeleted(10).
VM_NOTIFICATIONS = {"started": 1, "resumed": 1, "shutdown": 2, "stopped": 3, "suspended": 4, "pmsuspended": 6,
                    "crashed": 9, "undefined": 10}


def lifecycle_notifications(
    kind: str, name: str, uuid: str, index: int, state: int, reason: int, *, persistent: bool,
    previous_state: int | None,
) -> list[NotificationDef]:
    """The notifications of every MIB for one lifecycle event: ours and VM-MIB's with varbinds indexed by the
    domain's row, libvirt-snmp's as it sends it (:func:`libvirt_guest_notification`, whose row status comes
    from the state alone; none for undefined).
    """
    result = []
    code = LVX_NOTIFICATIONS.get(kind)
    if code is not None:
        result.append(NotificationDef("libvirt-exporter", LVX_ROOT + (0, code), (
            (_o("lvxDomainName") + (index,), (STR, name)),
            (_o("lvxDomainUUID") + (index,), (STR, uuid)),
            (_o("lvxDomainOperState") + (index,), (INT, state)),
            (_o("lvxDomainStateReason") + (index,), (INT, reason)),
        )))
    if code is not None and kind != "undefined":
        result.append(libvirt_guest_notification(name, uuid, state))
    vm_code = VM_NOTIFICATIONS.get(kind)
    if vm_code is not None:
        # RFC 7666 sends the oper state the VM had before the transition.
        before = vm_oper_state(previous_state) if previous_state is not None else 1
        binds = [
            (_o("vmName") + (index,), (STR, name)),
            (_o("vmUUID") + (index,), (BYTES, uuidlib.UUID(uuid).bytes)),
            (_o("vmOperState") + (index,), (INT, before)),
        ]
        if vm_code == 10:
            binds.append((_o("vmPersistent") + (index,), (INT, 2 if persistent else 3)))
        result.append(NotificationDef("vm", VM_ROOT + (0, vm_code), tuple(binds)))
    return result


#: libvirt-snmp's libvirtGuestNotif: the row status it reports by state (notInService while the domain is
#: shutting down, shut off or crashed, active otherwise).
_NOT_IN_SERVICE_STATES = frozenset({4, 5, 6})


def libvirt_guest_notification(name: str, uuid: str, state: int) -> NotificationDef:
    """libvirtGuestNotif as libvirt-snmp sends it (send_libvirtGuestNotif_trap): name, UUID, state and row
    status, each as the .0 instance of its column rather than of the domain's row.  libvirt-snmp sends one for
    every lifecycle event whose domain it can still read, so none for an undefined one."""
    return NotificationDef("libvirt", LIBVIRT_ROOT + (0, 1), (
        (_o("libvirtGuestName") + (0,), (STR, name)),
        (_o("libvirtGuestUUID") + (0,), (BYTES, uuidlib.UUID(uuid).bytes)),
        (_o("libvirtGuestState") + (0,), (INT, libvirt_guest_state(state))),
        (_o("libvirtGuestRowStatus") + (0,), (INT, 2 if state in _NOT_IN_SERVICE_STATES else 1)),
    ))


def action_failed_notification(name: str, uuid: str, index: int, action: int, error: str) -> NotificationDef:
    return NotificationDef("libvirt-exporter", LVX_ROOT + (0, LVX_ACTION_FAILED), (
        (_o("lvxDomainName") + (index,), (STR, name)),
        (_o("lvxDomainUUID") + (index,), (STR, uuid)),
        (_o("lvxDomainLastAction") + (index,), (INT, action)),
        (_o("lvxDomainLastActionError") + (index,), (STR, error)),
    ))
