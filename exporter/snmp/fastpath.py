"""A fast path for SNMPv2c reads: GET, GETNEXT and GETBULK straight from the view.

pysnmp builds protocol objects for every varbind and checks access for each
one; at tens of thousands of instances that bounds a walk at about 12k
varbinds per second.  Here a datagram that is a well-formed SNMPv2c
GET/GETNEXT/GETBULK with a configured community is decoded by hand, access is
decided per column of the view (the community's view subtrees), and the
response is BER-encoded directly.

SNMPv3 reads are answered the same way by :mod:`exporter.snmp.fastv3`, set as
``FastPath.v3``.  Anything else (SNMPv1, SET, an unknown community, anything
that does not decode cleanly) returns None and goes to pysnmp as before, which
keeps the protocol's error handling and counters for those.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from exporter.snmp.syntax import BYTES, C64, G32, INT, OID, STR, TICKS, U32, resolve
from exporter.snmp.view import MibView, Missing, _Column, bulk_rounds

log = logging.getLogger(__name__)

_SEQUENCE = 0x30
_INTEGER = 0x02
_OCTETS = 0x04
_OID = 0x06
_GET, _GETNEXT, _RESPONSE, _GETBULK = 0xA0, 0xA1, 0xA2, 0xA5
_MISSING = {Missing.NO_SUCH_OBJECT: b"\x80\x00", Missing.NO_SUCH_INSTANCE: b"\x81\x00"}
_END_OF_MIB_VIEW = b"\x82\x00"
_TOO_BIG = 1
#: Largest response: a UDP datagram's payload limit, as pysnmp's own default.
MAX_MESSAGE = 65507
_MAX_ARCS = 128  # RFC 2578: at most 128 sub-identifiers

Subtrees = tuple[tuple[int, ...], ...]
_FULL, _NONE, _PARTIAL = 0, 1, 2


class Malformed(ValueError):
    """A datagram that cannot be decoded as expected (the fast path then leaves it to pysnmp; the
    notification sender ignores it)."""


# -- BER ---------------------------------------------------------------------


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    return b"\x83" + n.to_bytes(3, "big")


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def signed(value: int) -> bytes:
    return value.to_bytes((value + (value < 0)).bit_length() // 8 + 1, "big", signed=True)


def unsigned(value: int) -> bytes:
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def arcs(values: tuple[int, ...]) -> bytes:
    """Sub-identifiers in base 128 (the content of an OID after its first two arcs, or an index)."""
    out = bytearray()
    for arc in values:
        if arc < 0x80:
            out.append(arc)
        else:
            chunk = [arc & 0x7F]
            arc >>= 7
            while arc:
                chunk.append(0x80 | (arc & 0x7F))
                arc >>= 7
            out.extend(reversed(chunk))
    return bytes(out)


def oid_content(oid: tuple[int, ...]) -> bytes:
    if len(oid) < 2:
        raise ValueError(f"an OID needs two arcs: {oid}")
    return arcs((oid[0] * 40 + oid[1],) + oid[2:])


_TAGS = {INT: 0x02, STR: 0x04, BYTES: 0x04, C64: 0x46, G32: 0x42, U32: 0x42,
         TICKS: 0x43, OID: 0x06}


def value_tlv(syntax: str, raw: Any, now: float = 0.0) -> bytes:
    """One value of the view, BER-encoded (resolved as on every other path: resolve)."""
    syntax, raw = resolve((syntax, raw), now)
    if syntax == INT:
        content = signed(raw)
    elif syntax in (STR, BYTES):
        content = raw
    elif syntax == OID:
        content = oid_content(raw)
    else:
        content = unsigned(raw)
    return tlv(_TAGS[syntax], content)


def read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``; definite lengths only."""
    if pos + 2 > end:
        raise Malformed("truncated")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > end:
            raise Malformed("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise Malformed("length past the end")
    return tag, pos, pos + length


def read_integer(data: bytes, pos: int, end: int) -> tuple[int, int]:
    tag, start, stop = read_tlv(data, pos, end)
    if tag != _INTEGER or not 0 < stop - start <= 5:
        raise Malformed("not an INTEGER")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def _decode_oid(content: bytes) -> tuple[int, ...]:
    if not content or content[-1] & 0x80:
        raise Malformed("bad OID")
    out: list[int] = []
    arc = 0
    for byte in content:
        arc = (arc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            out.append(arc)
            arc = 0
    first = out[0]
    head = (min(first // 40, 2),)
    result = head + (first - 40 * head[0],) + tuple(out[1:])
    if len(result) > _MAX_ARCS:
        raise Malformed("OID too long")
    return result


class Request:
    """A decoded SNMPv2c read request."""

    __slots__ = ("a", "b", "community", "names", "pdu_type", "request_id")

    def __init__(self, community: bytes, pdu_type: int, request_id: bytes, a: int, b: int,
                 names: list[tuple[int, ...]]) -> None:
        self.community = community
        self.pdu_type = pdu_type
        self.request_id = request_id  # the INTEGER's whole TLV, echoed as received
        self.a = a  # error-status, or non-repeaters for GETBULK
        self.b = b  # error-index, or max-repetitions
        self.names = names


def _community_and_pdu(data: bytes) -> tuple[bytes, int]:
    """An SNMPv2c message's community and where its PDU starts."""
    end = len(data)
    tag, pos, stop = read_tlv(data, 0, end)
    if tag != _SEQUENCE or stop != end:
        raise Malformed("not a message")
    version, pos = read_integer(data, pos, end)
    if version != 1:
        raise Malformed("not SNMPv2c")
    tag, start, pos = read_tlv(data, pos, end)
    if tag != _OCTETS:
        raise Malformed("no community")
    return data[start:pos], pos


def read_message(data: bytes, pdu_types: tuple[int, ...]) -> tuple[bytes, int, int]:
    """An SNMPv2c message's (community, PDU type, where the PDU's content starts), for a PDU of one of
    ``pdu_types`` that runs to the end of ``data``; raises :class:`Malformed` for anything else."""
    community, pos = _community_and_pdu(data)
    pdu_type, pos, stop = read_tlv(data, pos, len(data))
    if pdu_type not in pdu_types or stop != len(data):
        raise Malformed(f"not an expected PDU (tag 0x{pdu_type:02x})")
    return community, pdu_type, pos


def decode_pdu(data: bytes, pos: int, end: int, community: bytes = b"") -> Request:
    """The GET, GETNEXT or GETBULK PDU at ``pos`` that runs exactly to ``end``; raises :class:`Malformed` for
    anything else (``community``: kept in the request for a v2c answer)."""
    pdu_type, pos, stop = read_tlv(data, pos, end)
    if pdu_type not in (_GET, _GETNEXT, _GETBULK) or stop != end:
        raise Malformed(f"not a read PDU (tag 0x{pdu_type:02x})")
    rid_start = pos
    _, pos = read_integer(data, pos, end)
    request_id = data[rid_start:pos]
    a, pos = read_integer(data, pos, end)
    b, pos = read_integer(data, pos, end)
    tag, pos, stop = read_tlv(data, pos, end)
    if tag != _SEQUENCE or stop != end:
        raise Malformed("bad varbind list")
    names = []
    while pos < end:
        tag, vpos, vend = read_tlv(data, pos, end)
        if tag != _SEQUENCE:
            raise Malformed("bad varbind")
        tag, ostart, ostop = read_tlv(data, vpos, vend)
        if tag != _OID:
            raise Malformed("bad name")
        _, _, value_end = read_tlv(data, ostop, vend)
        if value_end != vend:
            raise Malformed("bad varbind")
        names.append(_decode_oid(data[ostart:ostop]))
        pos = vend
    return Request(community, pdu_type, request_id, a, b, names)


def decode(data: bytes) -> Request:
    """An SNMPv2c GET, GETNEXT or GETBULK; raises :class:`Malformed` for anything else."""
    community, pos = _community_and_pdu(data)
    return decode_pdu(data, pos, len(data), community)


# -- answering ------------------------------------------------------------------


class FastPath:
    """Answers SNMPv2c reads for the configured communities (and SNMPv3 ones through ``v3``), or returns None
    to leave them to pysnmp."""

    def __init__(self, communities: Mapping[bytes, Subtrees], get_view: Callable[[], MibView],
                 clock: Callable[[], float]) -> None:
        self._communities = dict(communities)
        self._get_view = get_view
        self._clock = clock
        self._view: MibView | None = None
        self._column_names: list[bytes] = []
        self._access: dict[Subtrees, list[int]] = {}
        self._failed_logged = False
        self.answered = 0  # requests answered here
        self.dropped = 0  # datagrams neither this nor pysnmp could decode (counted by the transport)
        #: What answers a datagram that is not SNMPv2c (exporter.snmp.fastv3's SNMPv3 reads), if anything.
        self.v3: Callable[[bytes], bytes | None] | None = None

    def answer(self, datagram: bytes) -> bytes | None:
        try:
            request = decode(datagram)
        except Malformed:
            return None if self.v3 is None else self._guarded(self.v3, datagram)
        subtrees = self._communities.get(request.community)
        if subtrees is None:
            return None  # pysnmp counts and drops a bad community
        return self._guarded(lambda _: self._respond(request, subtrees), datagram)

    def _guarded(self, respond: Callable[[bytes], bytes | None], datagram: bytes) -> bytes | None:
        try:
            reply = respond(datagram)
        except Exception:
            if not self._failed_logged:
                log.exception("SNMP fast path failed; such requests go to pysnmp")
                self._failed_logged = True
            return None
        if reply is not None:
            self.answered += 1
        return reply

    # The view's columns, each with its OID's BER content, and per community which columns it may read.
    def _prepare(self) -> MibView:
        view = self._get_view()
        if view is not self._view:
            self._column_names = [oid_content(col.oid) for col in view.columns]
            self._access = {}
            self._view = view
        return view

    def _classes(self, view: MibView, subtrees: Subtrees) -> list[int]:
        classes = self._access.get(subtrees)
        if classes is None:
            classes = []
            for col in view.columns:
                oid = col.oid
                if any(oid[:len(s)] == s for s in subtrees):
                    classes.append(_FULL)
                elif any(s[:len(oid)] == oid for s in subtrees):
                    classes.append(_PARTIAL)
                else:
                    classes.append(_NONE)
            self._access[subtrees] = classes
        return classes

    def varbinds(self, request: Request, subtrees: Subtrees, budget: int) -> tuple[int, bytes]:
        """(error-status, the response's varbind list content) for a read request, with at most ``budget``
        bytes of varbinds: beyond, GET and GETNEXT answer tooBig and GETBULK gives fewer repetitions."""
        view = self._prepare()
        classes = self._classes(view, subtrees)
        now = self._clock()
        if request.pdu_type == _GET:
            binds = [self._get(view, name, subtrees, now) for name in request.names]
        elif request.pdu_type == _GETNEXT:
            binds = [self._next(view, classes, subtrees, name, now)[1] for name in request.names]
        else:
            return self._bulk(view, classes, subtrees, request, now, budget)
        body = b"".join(binds)
        return (_TOO_BIG, b"") if len(body) > budget else (0, body)  # RFC 3416: tooBig, index 0, no varbinds

    def _respond(self, request: Request, subtrees: Subtrees) -> bytes:
        status, body = self.varbinds(request, subtrees, _budget(request))
        return tlv(_SEQUENCE, b"\x02\x01\x01" + tlv(_OCTETS, request.community) + response_pdu(request, status, body))

    def _get(self, view: MibView, name: tuple[int, ...], subtrees: Subtrees, now: float) -> bytes:
        if any(name[:len(s)] == s for s in subtrees):
            found = view.lookup(name)
            if isinstance(found, Missing):
                return _bind(oid_content(name), _MISSING[found])
            return _bind(oid_content(name), value_tlv(*found, now))
        return _bind(oid_content(name), _MISSING[Missing.NO_SUCH_OBJECT])

    def _next(self, view: MibView, classes: list[int], subtrees: Subtrees, name: tuple[int, ...],
              now: float) -> tuple[tuple[int, ...] | None, bytes]:
        """(the instance found or None, its varbind) for the first readable instance after ``name``."""
        columns = view.columns
        pos, row = view.position_after(name)
        while pos < len(columns):
            kind = classes[pos]
            col = columns[pos]
            if kind == _FULL:
                index = col.rows[row]
            elif kind == _PARTIAL:
                oid = col.oid
                while row < len(col.rows):
                    full = oid + col.rows[row]
                    if any(full[:len(s)] == s for s in subtrees):
                        break
                    # jump to the next subtree that lies after this instance, if any
                    row = self._skip(col, full, subtrees, row)
                if row >= len(col.rows):
                    pos, row = pos + 1, 0
                    continue
                index = col.rows[row]
            else:
                pos, row = pos + 1, 0
                continue
            found = col.oid + index
            return found, _bind(self._column_names[pos] + arcs(index), value_tlv(col.syntax, col.values[row], now))
        return None, _bind(oid_content(name), _END_OF_MIB_VIEW)

    @staticmethod
    def _skip(col: _Column, full: tuple[int, ...], subtrees: Subtrees, row: int) -> int:
        """The first row at or after the next subtree start beyond ``full`` (or past the end)."""
        n = len(col.oid)
        later = [s for s in subtrees if s > full and s[:n] == col.oid]
        if not later:
            return len(col.rows)
        return max(row + 1, bisect.bisect_left(col.rows, min(later)[n:]))

    def _bulk(self, view: MibView, classes: list[int], subtrees: Subtrees, request: Request,
              now: float, budget: int) -> tuple[int, bytes]:
        names = request.names
        non_repeaters = min(max(request.a, 0), len(names))
        binds = [self._next(view, classes, subtrees, name, now)[1] for name in names[:non_repeaters]]
        size = sum(map(len, binds))
        if size > budget:
            return _TOO_BIG, b""
        for row in bulk_rounds(names[non_repeaters:], max(request.b, 0),
                                   lambda name: self._next(view, classes, subtrees, name, now)):
            for bind in row:  # fewer repetitions than asked, to fit the message, is allowed (RFC 3416 4.2.3)
                if size + len(bind) > budget:
                    return 0, b"".join(binds)
                binds.append(bind)
                size += len(bind)
        return 0, b"".join(binds)


def response_pdu(request: Request, status: int, body: bytes) -> bytes:
    """The Response-PDU to ``request``: ``status`` (error-index 0) and ``body``, its varbinds' encoding."""
    return tlv(_RESPONSE, request.request_id + b"\x02\x01" + bytes((status,)) + b"\x02\x01\x00" + tlv(_SEQUENCE, body))


def _budget(request: Request) -> int:
    """Bytes of varbinds that fit a response to ``request`` within MAX_MESSAGE (headers take the rest)."""
    return MAX_MESSAGE - 64 - len(request.community) - len(request.request_id)


def _bind(name_content: bytes, value: bytes) -> bytes:
    return tlv(_SEQUENCE, tlv(_OID, name_content) + value)
