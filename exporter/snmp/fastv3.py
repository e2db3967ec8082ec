"""SNMPv3 reads on the fast path: USM-authenticated (and AES-encrypted) GET, GETNEXT and GETBULK.

Through pysnmp an authPriv walk runs at a fifteenth of a v2c one: every message
is decoded into pyasn1 objects, and keys, access and varbinds are handled per
object.  Here a datagram is decoded by hand (RFC 3412 msgGlobalData, RFC 3414
UsmSecurityParameters, the scopedPDU), checked in RFC 3414 3.2's order for the
authoritative engine, and answered from the same view and per-column access as
the v2c fast path (:class:`~exporter.snmp.fastpath.FastPath`), with the user's
view subtrees as access:

1. the message must be SNMPv3/USM with msgFlags authPriv or authNoPriv plus
   reportable, exactly the configured level of a known user, and carry our
   engine ID;
2. the HMAC (RFC 7860, truncated) is checked in constant time over the whole
   message with its authentication parameters zeroed, before anything is
   decrypted;
3. msgAuthoritativeEngineBoots must be ours and msgAuthoritativeEngineTime
   within 150 seconds of ours (3.2 step 7a), both read from pysnmp's own
   instances so that both paths share one notion of time;
4. the scopedPDU (decrypted with AES-CFB, IV = boots | time | salt, RFC 3826)
   must name our contextEngineID and the empty context.

The response goes out encrypted under a fresh salt and authenticated, with
our boots and time.  Whatever fails a check (discovery probes, unknown users,
wrong digests, messages outside the time window, a wrong security level,
other contexts, SETs, anything that does not decode) returns None: pysnmp then
handles it, sends the Report and counts it in usmStats, as before.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exporter.snmp.fastpath import (
    MAX_MESSAGE,
    FastPath,
    Malformed,
    Request,
    decode_pdu,
    read_integer,
    read_tlv,
    response_pdu,
    signed,
    tlv,
)
from exporter.snmp.usm import UserKeys, aes_cfb

log = logging.getLogger(__name__)

_SEQUENCE, _INTEGER, _OCTETS = 0x30, 0x02, 0x04
_AUTH, _PRIV, _REPORTABLE = 0x01, 0x02, 0x04  # msgFlags bits (RFC 3412 6.4)
_USM = 3  # msgSecurityModel
_MAX_INT = 2**31 - 1
_MIN_MAX_SIZE = 484  # RFC 3412: msgMaxSize (484..2147483647)
_TIME_WINDOW = 150  # RFC 3414 3.2 step 7a, seconds
_SALT_SIZE = 8  # RFC 3826 3.1.4.1: msgPrivacyParameters is the 64-bit salt
#: An upper bound of a response's bytes outside its varbinds, besides the engine ID (twice: security parameters and
#: contextEngineID), the user name, the MAC, the msgID and the request-id: each enclosing length in its longest form.
_OVERHEAD = 80


@dataclass(frozen=True, slots=True)
class Message:
    """The parts of an SNMPv3 message the fast path reads (offsets are into the datagram)."""

    msg_id: bytes  # the msgID INTEGER's whole TLV, echoed as received
    max_size: int
    flags: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    auth_at: int  # where msgAuthenticationParameters' content starts
    auth: bytes
    salt: bytes  # msgPrivacyParameters
    data_tag: int  # msgData: OCTET STRING (encrypted) or SEQUENCE (a plaintext scopedPDU)
    data_at: int  # where msgData's TLV starts
    data_content: int  # where its content starts; it runs to the end of the datagram


def _octets(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    tag, start, stop = read_tlv(data, pos, end)
    if tag != _OCTETS:
        raise Malformed("not an OCTET STRING")
    return data[start:stop], stop


def _natural(data: bytes, pos: int, end: int, low: int = 0) -> tuple[int, int]:
    value, pos = read_integer(data, pos, end)
    if not low <= value <= _MAX_INT:
        raise Malformed("INTEGER out of range")
    return value, pos


def decode_message(datagram: bytes) -> Message:
    """An SNMPv3 message with USM security parameters; raises :class:`Malformed` for anything else."""
    end = len(datagram)
    tag, pos, stop = read_tlv(datagram, 0, end)
    if tag != _SEQUENCE or stop != end:
        raise Malformed("not a message")
    version, pos = read_integer(datagram, pos, end)
    if version != 3:
        raise Malformed("not SNMPv3")
    tag, pos, header_end = read_tlv(datagram, pos, end)
    if tag != _SEQUENCE:
        raise Malformed("no msgGlobalData")
    id_start = pos
    _, pos = _natural(datagram, pos, header_end)
    msg_id = datagram[id_start:pos]
    max_size, pos = _natural(datagram, pos, header_end, _MIN_MAX_SIZE)
    flags, pos = _octets(datagram, pos, header_end)
    model, pos = read_integer(datagram, pos, header_end)
    if len(flags) != 1 or model != _USM or pos != header_end:
        raise Malformed("not a USM message")
    tag, pos, params_end = read_tlv(datagram, header_end, end)
    if tag != _OCTETS:
        raise Malformed("no msgSecurityParameters")
    tag, pos, usm_end = read_tlv(datagram, pos, params_end)
    if tag != _SEQUENCE or usm_end != params_end:
        raise Malformed("bad UsmSecurityParameters")
    engine_id, pos = _octets(datagram, pos, usm_end)
    boots, pos = _natural(datagram, pos, usm_end)
    time, pos = _natural(datagram, pos, usm_end)
    user, pos = _octets(datagram, pos, usm_end)
    tag, auth_at, auth_end = read_tlv(datagram, pos, usm_end)
    if tag != _OCTETS:
        raise Malformed("bad msgAuthenticationParameters")
    salt, pos = _octets(datagram, auth_end, usm_end)
    if pos != usm_end:
        raise Malformed("bad UsmSecurityParameters")
    data_tag, data_content, stop = read_tlv(datagram, params_end, end)
    if stop != end:
        raise Malformed("bad msgData")
    return Message(msg_id, max_size, flags[0], engine_id, boots, time, user, auth_at, datagram[auth_at:auth_end],
                   salt, data_tag, params_end, data_content)


class FastV3:
    """Answers SNMPv3 reads of the configured USM users (see the module), or returns None to leave a datagram
    to pysnmp.  Set as ``FastPath.v3``: the FastPath counts what is answered and contains any failure."""

    def __init__(self, engine_id: bytes, users: Iterable[UserKeys], reads: FastPath,
                 engine_clock: Callable[[], tuple[int, int]]) -> None:
        """``engine_clock``: (snmpEngineBoots, snmpEngineTime) now, as pysnmp's engine has them."""
        self._engine_id = engine_id
        self._users = {user.name: user for user in users}
        self._reads = reads
        self._clock = engine_clock
        self._salt = secrets.randbits(64)  # then counted up, as pysnmp does (from its own random start)

    def __call__(self, datagram: bytes) -> bytes | None:
        try:
            msg = decode_message(datagram)
        except Malformed:
            return None
        user = self._users.get(msg.user)
        if user is None or msg.engine_id != self._engine_id:
            return None  # discovery, unknown users and other engines: pysnmp reports them
        if msg.flags != (_AUTH | _PRIV | _REPORTABLE if user.priv else _AUTH | _REPORTABLE):
            return None  # another security level than the user's, or not reportable: pysnmp decides
        if len(msg.auth) != user.mac_length:
            return None
        # RFC 3414 3.2 step 6 / RFC 7860 4.2.2: the MAC of the whole message, its own place zeroed
        end = msg.auth_at + user.mac_length
        if not hmac.compare_digest(user.mac(datagram[:msg.auth_at] + bytes(user.mac_length) + datagram[end:]),
                                   msg.auth):
            return None
        boots, now = self._clock()
        if boots == _MAX_INT or msg.boots != boots or abs(now - msg.time) > _TIME_WINDOW:
            return None  # step 7a: pysnmp sends the notInTimeWindow Report
        request = self._scoped_request(datagram, msg, user)
        if request is None:
            return None
        limit = min(MAX_MESSAGE, msg.max_size)
        overhead = (_OVERHEAD + 2 * len(self._engine_id) + len(user.name) + user.mac_length + len(msg.msg_id)
                    + len(request.request_id))
        status, body = self._reads.varbinds(request, user.subtrees, limit - overhead)
        return self._response(msg, user, response_pdu(request, status, body), boots, now)

    def _scoped_request(self, datagram: bytes, msg: Message, user: UserKeys) -> Request | None:
        """The read request of the scopedPDU, or None if it is anything else or in another context."""
        if user.priv:
            if msg.data_tag != _OCTETS or len(msg.salt) != _SALT_SIZE:
                return None
            iv = msg.boots.to_bytes(4, "big") + msg.time.to_bytes(4, "big") + msg.salt  # RFC 3826 3.1.2.1
            scoped = aes_cfb(user.priv, iv, datagram[msg.data_content:], encrypt=False)
        elif msg.data_tag == _SEQUENCE:
            scoped = datagram[msg.data_at:]
        else:
            return None
        try:
            tag, pos, end = read_tlv(scoped, 0, len(scoped))
            if tag != _SEQUENCE or end != len(scoped):
                return None  # trailing octets (padding) are left to pysnmp as well
            context_engine, pos = _octets(scoped, pos, end)
            context_name, pos = _octets(scoped, pos, end)
            if context_engine != self._engine_id or context_name:
                return None  # the agent serves only our engine's default context
            return decode_pdu(scoped, pos, end)
        except Malformed:
            return None

    def _response(self, msg: Message, user: UserKeys, pdu: bytes, boots: int, now: int) -> bytes:
        engine = tlv(_OCTETS, self._engine_id)
        scoped = tlv(_SEQUENCE, engine + b"\x04\x00" + pdu)
        if user.priv:
            self._salt = (self._salt + 1) & 0xFFFF_FFFF_FFFF_FFFF
            salt = self._salt.to_bytes(_SALT_SIZE, "big")
            iv = boots.to_bytes(4, "big") + now.to_bytes(4, "big") + salt
            data = tlv(_OCTETS, aes_cfb(user.priv, iv, scoped, encrypt=True))
            flags = _AUTH | _PRIV
        else:
            salt, data, flags = b"", scoped, _AUTH
        header = tlv(_SEQUENCE, msg.msg_id + tlv(_INTEGER, signed(MAX_MESSAGE)) + bytes((_OCTETS, 1, flags))
                     + bytes((_INTEGER, 1, _USM)))
        after_mac = tlv(_OCTETS, salt)
        params = (engine + tlv(_INTEGER, signed(boots)) + tlv(_INTEGER, signed(now)) + tlv(_OCTETS, user.name)
                  + bytes((_OCTETS, user.mac_length)) + bytes(user.mac_length) + after_mac)
        whole = tlv(_SEQUENCE, b"\x02\x01\x03" + header + tlv(_OCTETS, tlv(_SEQUENCE, params)) + data)
        at = len(whole) - len(data) - len(after_mac) - user.mac_length  # the zeroed MAC ends the parameters
        return whole[:at] + user.mac(whole) + whole[at + user.mac_length:]
