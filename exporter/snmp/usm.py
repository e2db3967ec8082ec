"""USM keys and ciphers for the SNMPv3 fast path: HMAC-SHA-2 (RFC 7860) and AES-CFB (RFC 3826).

A user's passphrases become localised keys once, at start-up, exactly as pysnmp
derives them (so both paths accept and produce the same messages): RFC 3414's
password-to-key (the digest of 1 MiB of the repeated passphrase, text taken as
Latin-1 like pyasn1 does), localised as H(key | engine ID | key) with the
authentication protocol's hash.  An AES key is the start of the localised
privacy key; AES-192 and AES-256 lengthen a key that is too short (SHA-224's 28
bytes for AES-256) the way pysnmp's ``Aes192``/``Aes256`` do (the "Reeder"
extension, also Cisco's): append localise(password_to_key(key so far)) until
long enough.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from exporter.config.snmp import V3User

log = logging.getLogger(__name__)

#: auth protocol -> (hashlib name, MAC length in octets), RFC 7860 usmHMAC*SHA* protocols.
AUTH: dict[str, tuple[str, int]] = {
    "SHA-224": ("sha224", 16),
    "SHA-256": ("sha256", 24),
    "SHA-384": ("sha384", 32),
    "SHA-512": ("sha512", 48),
}
#: priv protocol -> AES key length in octets.
PRIV: dict[str, int] = {"AES": 16, "AES-192": 24, "AES-256": 32}
_EXPANDED = 1 << 20  # RFC 3414 A.2: the passphrase is repeated over one megabyte


def password_to_key(passphrase: bytes, digest: str) -> bytes:
    """RFC 3414 A.2's Ku: the digest of the passphrase repeated to 1 MiB."""
    if not passphrase:
        raise ValueError("an empty passphrase has no key")
    return hashlib.new(digest, (passphrase * (_EXPANDED // len(passphrase) + 1))[:_EXPANDED]).digest()


def localize(key: bytes, engine_id: bytes, digest: str) -> bytes:
    """RFC 3414 2.6: Kul = H(Ku | snmpEngineID | Ku)."""
    return hashlib.new(digest, key + engine_id + key).digest()


def priv_key(passphrase: bytes, engine_id: bytes, digest: str, size: int) -> bytes:
    """The AES key of ``size`` octets for a privacy passphrase (lengthened as pysnmp's Reeder variant)."""
    key = localize(password_to_key(passphrase, digest), engine_id, digest)
    while len(key) < size:
        key += localize(password_to_key(key, digest), engine_id, digest)
    return key[:size]


def aes_cfb(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    """AES in 128-bit CFB mode (RFC 3826 3.1.3/3.1.4): no padding, the output as long as the input."""
    cipher = Cipher(algorithms.AES(key), CFB(iv))
    work: Any = cipher.encryptor() if encrypt else cipher.decryptor()
    return bytes(work.update(data) + work.finalize())


@dataclass(frozen=True, slots=True)
class UserKeys:
    """One USM user's localised keys and read access, as the fast path needs them."""

    name: bytes
    mac_length: int
    priv: bytes  # the AES key; empty for an authNoPriv user
    subtrees: tuple[tuple[int, ...], ...]  # the read view
    _hmac: Any = field(repr=False, compare=False)  # an HMAC keyed with the localised auth key, copied per use

    def mac(self, message: bytes) -> bytes:
        """The truncated HMAC of ``message`` (RFC 7860 4.2.1: the first mac_length octets)."""
        h = self._hmac.copy()
        h.update(message)
        return bytes(h.digest()[:self.mac_length])


def user_keys(user: V3User, engine_id: bytes, subtrees: tuple[tuple[int, ...], ...]) -> UserKeys | None:
    """``user``'s keys localised to ``engine_id``; None (with a log line) for a user the fast path leaves
    to pysnmp: a protocol it does not know, or a key that Latin-1 cannot encode."""
    if user.auth_protocol not in AUTH or (user.priv_key and user.priv_protocol not in PRIV):
        log.info("SNMPv3 user %r: %s/%s is not on the fast path", user.name, user.auth_protocol, user.priv_protocol)
        return None
    digest, mac_length = AUTH[user.auth_protocol]
    try:
        name = user.name.encode("latin-1")
        auth = localize(password_to_key(user.auth_key.encode("latin-1"), digest), engine_id, digest)
        priv = priv_key(user.priv_key.encode("latin-1"), engine_id, digest, PRIV[user.priv_protocol]) \
            if user.priv_key else b""
    except (UnicodeEncodeError, ValueError):
        log.info("SNMPv3 user %r is not on the fast path (name or keys outside Latin-1)", user.name)
        return None
    return UserKeys(name, mac_length, priv, subtrees, hmac.new(auth, digestmod=digest))


def pysnmp_clock(engine: Any) -> Callable[[], tuple[int, int]]:
    """(snmpEngineBoots, snmpEngineTime) exactly as pysnmp's ``engine`` reads them for USM: the instances of
    its __SNMP-FRAMEWORK-MIB, read afresh each time.  snmpEngineTime's value is the epoch it counts from, and
    pysnmp's reading is its ``clone()`` (SNMP-FRAMEWORK-MIB's customised type): Integer32(time.time() - epoch),
    which int() truncates; the same sum here, without building a pyasn1 object per message."""
    boots, engine_time = engine.get_mib_builder().import_symbols(
        "__SNMP-FRAMEWORK-MIB", "snmpEngineBoots", "snmpEngineTime")

    def now() -> tuple[int, int]:
        return int(boots.syntax), int(time.time() - int(engine_time.syntax))

    return now
