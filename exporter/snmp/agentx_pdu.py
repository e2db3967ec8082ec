"""AgentX (RFC 2741) on the wire: the PDU encodings, as plain functions over bytes.

Header, OIDs with their prefix and include flag, octet strings, varbinds,
search ranges and the PDUs the subagent sends; tested byte by byte.  The
session that uses them is :mod:`exporter.snmp.agentx`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

VERSION = 1
# PDU types
OPEN, CLOSE, REGISTER, UNREGISTER, GET, GETNEXT, GETBULK = 1, 2, 3, 4, 5, 6, 7
TESTSET, COMMITSET, UNDOSET, CLEANUPSET, NOTIFY, PING = 8, 9, 10, 11, 12, 13
INDEX_ALLOCATE, INDEX_DEALLOCATE, ADD_AGENT_CAPS, REMOVE_AGENT_CAPS, RESPONSE = 14, 15, 16, 17, 18
# header flags
INSTANCE_REGISTRATION, NEW_INDEX, ANY_INDEX, NON_DEFAULT_CONTEXT, NETWORK_BYTE_ORDER = 0x01, 0x02, 0x04, 0x08, 0x10
# varbind types
INTEGER, OCTET_STRING, NULL, OBJECT_IDENTIFIER, IP_ADDRESS = 2, 4, 5, 6, 64
COUNTER32, GAUGE32, TIME_TICKS, OPAQUE, COUNTER64 = 65, 66, 67, 68, 70
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 128, 129, 130
# Response errors (SNMP's for the set phases, AgentX's own from 256)
NO_ERROR, GEN_ERR, NOT_WRITABLE, PARSE_ERROR, PROCESSING_ERROR = 0, 5, 17, 266, 268
ERROR_CODES = {"noError": 0, "tooBig": 1, "noSuchName": 2, "badValue": 3, "readOnly": 4, "genErr": 5,
               "noAccess": 6, "wrongType": 7, "wrongLength": 8, "wrongEncoding": 9, "wrongValue": 10,
               "noCreation": 11, "inconsistentValue": 12, "resourceUnavailable": 13, "commitFailed": 14,
               "undoFailed": 15, "authorizationError": 16, "notWritable": 17, "inconsistentName": 18}
CLOSE_SHUTDOWN = 5
HEADER = 20
MAX_PAYLOAD = 1 << 20  # a PDU bigger than this is a broken stream

Oid = tuple[int, ...]


class ParseError(ValueError):
    """Bytes that are not a valid AgentX PDU."""


@dataclass(frozen=True, slots=True)
class Header:
    type: int
    flags: int
    session_id: int
    transaction_id: int
    packet_id: int
    payload_length: int
    version: int = VERSION

    @property
    def big(self) -> bool:
        return bool(self.flags & NETWORK_BYTE_ORDER)


def _order(big: bool) -> str:
    return "!" if big else "<"


def encode_header(pdu_type: int, flags: int, session_id: int, transaction_id: int, packet_id: int,
                  payload_length: int) -> bytes:
    """Always in network byte order (and flagged so)."""
    return struct.pack("!BBBBIIII", VERSION, pdu_type, flags | NETWORK_BYTE_ORDER, 0, session_id, transaction_id,
                       packet_id, payload_length)


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER:
        raise ParseError("short header")
    version, pdu_type, flags, _ = data[:4]
    if version != VERSION:
        raise ParseError(f"AgentX version {version}")
    session_id, transaction_id, packet_id, length = struct.unpack(_order(bool(flags & NETWORK_BYTE_ORDER)) + "IIII",
                                                                  data[4:HEADER])
    if length % 4 or length > MAX_PAYLOAD:
        raise ParseError(f"payload length {length}")
    return Header(pdu_type, flags, session_id, transaction_id, packet_id, length, version)


def encode_oid(oid: Oid, include: bool = False) -> bytes:
    """n_subid, prefix, include, reserved, then the sub-identifiers (1.3.6.1.X. folded into prefix X)."""
    prefix = 0
    subids = oid
    if len(oid) >= 5 and oid[:4] == (1, 3, 6, 1) and 0 < oid[4] <= 255:
        prefix, subids = oid[4], oid[5:]
    if len(subids) > 128:
        raise ValueError("an OID has at most 128 sub-identifiers")
    return struct.pack(f"!BBBB{len(subids)}I", len(subids), prefix, 1 if include else 0, 0, *subids)


def decode_oid(data: bytes, pos: int, big: bool) -> tuple[Oid, bool, int]:
    """(OID, include flag, position after it)."""
    if pos + 4 > len(data):
        raise ParseError("truncated OID")
    count, prefix, include, _ = data[pos:pos + 4]
    end = pos + 4 + 4 * count
    if end > len(data) or count > 128:
        raise ParseError("truncated OID")
    subids = struct.unpack_from(f"{_order(big)}{count}I", data, pos + 4)
    oid = ((1, 3, 6, 1, prefix) if prefix else ()) + tuple(subids)
    return oid, bool(include), end


def encode_octets(value: bytes) -> bytes:
    return struct.pack("!I", len(value)) + value + b"\0" * (-len(value) % 4)


def decode_octets(data: bytes, pos: int, big: bool) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise ParseError("truncated octet string")
    (length,) = struct.unpack_from(_order(big) + "I", data, pos)
    end = pos + 4 + length
    if end > len(data):
        raise ParseError("truncated octet string")
    return data[pos + 4:end], end + (-length % 4)


@dataclass(frozen=True, slots=True)
class VarBind:
    type: int
    name: Oid
    value: Any = None  # int, bytes or OID by type; None for Null and the exceptions


def encode_varbind(vb: VarBind) -> bytes:
    head = struct.pack("!HH", vb.type, 0) + encode_oid(vb.name)
    t = vb.type
    if t == INTEGER:
        return head + struct.pack("!i", vb.value)
    if t in (COUNTER32, GAUGE32, TIME_TICKS):
        return head + struct.pack("!I", vb.value)
    if t == COUNTER64:
        return head + struct.pack("!Q", vb.value)
    if t in (OCTET_STRING, IP_ADDRESS, OPAQUE):
        return head + encode_octets(bytes(vb.value))
    if t == OBJECT_IDENTIFIER:
        return head + encode_oid(tuple(vb.value))
    if t in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return head
    raise ValueError(f"unknown varbind type {t}")


def decode_varbind(data: bytes, pos: int, big: bool) -> tuple[VarBind, int]:
    if pos + 4 > len(data):
        raise ParseError("truncated varbind")
    (t,) = struct.unpack_from(_order(big) + "H", data, pos)
    name, _, pos = decode_oid(data, pos + 4, big)
    value: Any = None
    if t == INTEGER:
        (value,) = struct.unpack_from(_order(big) + "i", data, pos)
        pos += 4
    elif t in (COUNTER32, GAUGE32, TIME_TICKS):
        (value,) = struct.unpack_from(_order(big) + "I", data, pos)
        pos += 4
    elif t == COUNTER64:
        (value,) = struct.unpack_from(_order(big) + "Q", data, pos)
        pos += 8
    elif t in (OCTET_STRING, IP_ADDRESS, OPAQUE):
        value, pos = decode_octets(data, pos, big)
    elif t == OBJECT_IDENTIFIER:
        value, _, pos = decode_oid(data, pos, big)
    elif t not in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        raise ParseError(f"unknown varbind type {t}")
    if pos > len(data):
        raise ParseError("truncated varbind")
    return VarBind(t, name, value), pos


def decode_varbinds(data: bytes, pos: int, big: bool) -> list[VarBind]:
    result = []
    while pos < len(data):
        vb, pos = decode_varbind(data, pos, big)
        result.append(vb)
    return result


def decode_ranges(data: bytes, pos: int, big: bool) -> list[tuple[Oid, bool, Oid]]:
    """A SearchRangeList: (start, include, end) each."""
    ranges = []
    while pos < len(data):
        start, include, pos = decode_oid(data, pos, big)
        end, _, pos = decode_oid(data, pos, big)
        ranges.append((start, include, end))
    return ranges


@dataclass(frozen=True, slots=True)
class Pdu:
    header: Header
    context: bytes | None
    payload: bytes  # after the context, if any

    @property
    def big(self) -> bool:
        return self.header.big


_CONTEXT_TYPES = {REGISTER, UNREGISTER, GET, GETNEXT, GETBULK, TESTSET, NOTIFY, PING, INDEX_ALLOCATE,
                  INDEX_DEALLOCATE, ADD_AGENT_CAPS, REMOVE_AGENT_CAPS}


def split_pdu(header: Header, payload: bytes) -> Pdu:
    context = None
    if header.flags & NON_DEFAULT_CONTEXT and header.type in _CONTEXT_TYPES:
        context, pos = decode_octets(payload, 0, header.big)
        payload = payload[pos:]
    return Pdu(header, context, payload)


def build(pdu_type: int, payload: bytes, session_id: int = 0, transaction_id: int = 0, packet_id: int = 0,
          flags: int = 0) -> bytes:
    return encode_header(pdu_type, flags, session_id, transaction_id, packet_id, len(payload)) + payload


def open_pdu(packet_id: int, timeout_s: int, ident: Oid, description: str) -> bytes:
    payload = struct.pack("!B3x", timeout_s) + encode_oid(ident) + encode_octets(description.encode())
    return build(OPEN, payload, packet_id=packet_id)


def register_pdu(session_id: int, packet_id: int, subtree: Oid, priority: int = 127, timeout_s: int = 0) -> bytes:
    return build(REGISTER, struct.pack("!BBBx", timeout_s, priority, 0) + encode_oid(subtree),
                 session_id=session_id, packet_id=packet_id)


def response_pdu(request: Header, uptime: int, error: int = 0, index: int = 0,
                 varbinds: Sequence[VarBind] = ()) -> bytes:
    payload = struct.pack("!IHH", uptime % 2**32, error, index) + b"".join(encode_varbind(v) for v in varbinds)
    return build(RESPONSE, payload, request.session_id, request.transaction_id, request.packet_id)


def decode_response(pdu: Pdu) -> tuple[int, int, int, list[VarBind]]:
    """(sysUpTime, error, index, varbinds)."""
    if len(pdu.payload) < 8:
        raise ParseError("short Response")
    uptime, error, index = struct.unpack_from(_order(pdu.big) + "IHH", pdu.payload, 0)
    return uptime, error, index, decode_varbinds(pdu.payload, 8, pdu.big)


def decode_getbulk(pdu: Pdu) -> tuple[int, int, list[tuple[Oid, bool, Oid]]]:
    """A GetBulk's (non-repeaters, max-repetitions, search ranges)."""
    if len(pdu.payload) < 4:
        raise ParseError("short GetBulk")
    non_repeaters, repetitions = struct.unpack_from(_order(pdu.big) + "HH", pdu.payload, 0)
    return non_repeaters, repetitions, decode_ranges(pdu.payload, 4, pdu.big)
