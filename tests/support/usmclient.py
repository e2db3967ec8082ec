"""A small SNMPv3/USM manager for tests, written apart from exporter.snmp.fastv3 and exporter.snmp.usm.

Keys come from pysnmp's own localisation (its HMAC-SHA-2 and AES services), replies are decoded by pyasn1
with pysnmp's ASN.1 types; requests are framed here, so that a test can damage any part of them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.proto.api import v2c
from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel, UsmSecurityParameters
from pysnmp.proto.secmod.rfc7860.auth.hmacsha2 import HmacSha2

from exporter.config.snmp import V3User
from exporter.snmp.engine import auth_protocol, priv_protocol

AUTH_PRIV, AUTH_NO_PRIV = 0x07, 0x05  # msgFlags with the reportable bit
Varbinds = list[tuple[tuple[int, ...], bytes]]  # (name, the value's BER encoding)


@dataclass(frozen=True)
class Keys:
    name: bytes
    digest: str
    mac_length: int
    auth: bytes
    priv: bytes  # empty: authNoPriv

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self.auth, data, self.digest).digest()[:self.mac_length]


def keys_for(user: V3User, engine_id: bytes) -> Keys:
    """``user``'s localised keys as pysnmp computes them."""
    auth_id = auth_protocol(user)
    auth_service = HmacSha2(auth_id)
    engine = univ.OctetString(engine_id)
    auth = auth_service.localize_key(auth_service.hash_passphrase(user.auth_key), engine).asOctets()
    priv = b""
    if user.priv_key:
        priv_id = priv_protocol(user)
        service = SnmpUSMSecurityModel.PRIV_SERVICES[priv_id]  # pysnmp's AES, AES-192 and AES-256 (Reeder)
        priv = univ.OctetString(service.localize_key(auth_id, service.hash_passphrase(auth_id, user.priv_key),
                                                     engine)).asOctets()
    digest = HmacSha2.HASH_ALGORITHM[auth_id]().name
    return Keys(user.name.encode("latin-1"), digest, HmacSha2.DIGEST_LENGTH[auth_id], auth, priv)


def cfb(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), CFB(iv))
    work = cipher.encryptor() if encrypt else cipher.decryptor()
    return work.update(data) + work.finalize()


def pdu(kind: str, names: Sequence[tuple[int, ...]], non_repeaters: int = 0, repetitions: int = 10,
        request_id: int = 4242) -> object:
    """A GET ("get"), GETNEXT ("next"), GETBULK ("bulk") or SET ("set", of Integer 1) PDU."""
    made = {"get": v2c.GetRequestPDU, "next": v2c.GetNextRequestPDU, "bulk": v2c.GetBulkRequestPDU,
            "set": v2c.SetRequestPDU}[kind]()
    if kind == "bulk":
        v2c.apiBulkPDU.set_defaults(made)
        v2c.apiBulkPDU.set_non_repeaters(made, non_repeaters)
        v2c.apiBulkPDU.set_max_repetitions(made, repetitions)
    else:
        v2c.apiPDU.set_defaults(made)
    v2c.apiPDU.set_request_id(made, request_id)
    value = v2c.Integer(1) if kind == "set" else v2c.Null()
    v2c.apiPDU.set_varbinds(made, [(name, value) for name in names])
    return made


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    size = bytes((n,)) if n < 0x80 else bytes((0x80 | ((n.bit_length() + 7) // 8),)) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes((tag,)) + size + content


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def request(keys: Keys, engine_id: bytes, boots: int, time: int, the_pdu: object, *, flags: int | None = None,
            msg_id: int = 77, max_size: int = 65507, context_engine: bytes | None = None, context_name: bytes = b"",
            salt: bytes = b"\x00\x01\x02\x03\x04\x05\x06\x07", plain: Callable[[bytes], bytes] = bytes,
            cipher: Callable[[bytes], bytes] = bytes, mac_keys: Keys | None = None) -> bytes:
    """An SNMPv3 message of ``the_pdu``; ``plain``/``cipher`` may alter the scopedPDU before/after encryption
    (the MAC is then computed over what is sent, with ``mac_keys`` if given)."""
    scoped = ScopedPDU()
    scoped["contextEngineId"] = engine_id if context_engine is None else context_engine
    scoped["contextName"] = context_name
    scoped["data"].setComponentByType(the_pdu.tagSet, the_pdu)  # type: ignore[attr-defined]
    data = plain(encoder.encode(scoped))
    flags = (AUTH_PRIV if keys.priv else AUTH_NO_PRIV) if flags is None else flags
    if flags & 0x02:
        iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + salt.ljust(8, b"\0")[:8]
        msg_data = _tlv(0x04, cipher(cfb(keys.priv or bytes(16), iv, data, True)))
    else:
        msg_data, salt = data, b""
    header = _tlv(0x30, _int(msg_id) + _int(max_size) + _tlv(0x04, bytes((flags,))) + _int(3))
    after = _tlv(0x04, salt)
    params = (_tlv(0x04, engine_id) + _int(boots) + _int(time) + _tlv(0x04, keys.name)
              + _tlv(0x04, bytes(keys.mac_length)) + after)
    whole = _tlv(0x30, _int(3) + header + _tlv(0x04, _tlv(0x30, params)) + msg_data)
    if not flags & 0x01:
        return whole
    at = len(whole) - len(msg_data) - len(after) - keys.mac_length
    return whole[:at] + (mac_keys or keys).mac(whole) + whole[at + keys.mac_length:]


@dataclass(frozen=True)
class Reply:
    msg_id: int
    flags: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    salt: bytes
    context_engine: bytes
    context_name: bytes
    kind: str  # "response" or "report"
    request_id: int
    status: int
    index: int
    varbinds: Varbinds

    @property
    def pdu(self) -> tuple[str, int, int, int, Varbinds]:
        """What a differential test compares: the decrypted PDU."""
        return self.kind, self.request_id, self.status, self.index, self.varbinds


def reply(data: bytes, keys: Keys) -> Reply:
    """Decode, authenticate and decrypt a response or report (the MAC must hold if the flags say so)."""
    msg, rest = decoder.decode(data, asn1Spec=SNMPv3Message())
    assert rest == b""
    header = msg["msgGlobalData"]
    flags = header["msgFlags"].asNumbers()[0]
    params, rest = decoder.decode(msg["msgSecurityParameters"].asOctets(), asn1Spec=UsmSecurityParameters())
    assert rest == b""
    boots, time = int(params["msgAuthoritativeEngineBoots"]), int(params["msgAuthoritativeEngineTime"])
    salt = params["msgPrivacyParameters"].asOctets()
    if flags & 0x01:
        mac = params["msgAuthenticationParameters"].asOctets()
        at = data.find(mac)
        zeroed = data[:at] + bytes(len(mac)) + data[at + len(mac):]
        assert len(mac) == keys.mac_length and hmac.compare_digest(keys.mac(zeroed), mac), "bad MAC on a reply"
    if flags & 0x02:
        iv = boots.to_bytes(4, "big") + time.to_bytes(4, "big") + salt
        plain = cfb(keys.priv, iv, msg["msgData"]["encryptedPDU"].asOctets(), False)
        scoped, rest = decoder.decode(plain, asn1Spec=ScopedPDU())
        assert rest == b""
    else:
        scoped = msg["msgData"]["plaintext"]
    the_pdu = scoped["data"].getComponent()
    kind = {v2c.ResponsePDU.tagSet: "response", v2c.ReportPDU.tagSet: "report"}[the_pdu.tagSet]
    return Reply(int(header["msgID"]), flags, params["msgAuthoritativeEngineId"].asOctets(), boots, time,
                 params["msgUserName"].asOctets(), salt, scoped["contextEngineId"].asOctets(),
                 scoped["contextName"].asOctets(), kind, int(v2c.apiPDU.get_request_id(the_pdu)),
                 int(v2c.apiPDU.get_error_status(the_pdu)), int(v2c.apiPDU.get_error_index(the_pdu)),
                 [(tuple(n), encoder.encode(v)) for n, v in v2c.apiPDU.get_varbinds(the_pdu)])


def message_id(data: bytes) -> int | None:
    """An SNMPv3 message's msgID, or None if it does not decode."""
    try:
        msg, _ = decoder.decode(data, asn1Spec=SNMPv3Message())
        return int(msg["msgGlobalData"]["msgID"])
    except Exception:
        return None
