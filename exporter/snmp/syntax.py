"""How a served value is typed and sent: the syntax tags, access levels and object declarations that every
MIB module (exporter/snmp/mib_*.py) and every protocol path (pysnmp, the fast path, AgentX) share.

Values travel as ``(syntax, python value)`` pairs; a value may be a callable of the current time (ages and
uptimes), evaluated per request by :func:`resolve`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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

INT32_MAX = 2**31 - 1

Value = tuple[str, Any]
OidT = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ObjectDef:
    name: str
    oid: OidT  # scalar (without .0) or column
    syntax: str
    access: str = RO


def defs(prefix: OidT, rows: Iterable[tuple[int, str, str, str]]) -> tuple[ObjectDef, ...]:
    """Objects under ``prefix`` from (sub-identifier, name, syntax, access) rows."""
    return tuple(ObjectDef(name, prefix + (sub,), syntax, access) for sub, name, syntax, access in rows)


def resolve(value: Value, now: float) -> tuple[str, Any]:
    """A value as every protocol path sends it: time-dependent ones evaluated at ``now``, text as UTF-8
    bytes, numbers saturated at their syntax's range (Integer32, Gauge32/Unsigned32, Counter64, TimeTicks
    wraps), OIDs as tuples."""
    syntax, raw = value
    if callable(raw):
        raw = raw(now)
    if syntax == INT:
        return syntax, min(max(raw, -(2**31)), INT32_MAX)
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
class NotificationDef:
    """One notification as every sender gets it; its values are plain (what was true when it was made)."""

    mib: str  # "libvirt-exporter", "libvirt" or "vm"
    trap_oid: OidT
    var_binds: tuple[tuple[OidT, Value], ...]
