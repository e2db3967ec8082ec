"""pysnmp engines and USM for every SNMP part (the agent, the notification senders).

The agent and the notifier each build engines here: a fixed engine ID, the
boots counter in the state directory, no MIB compiler, and the USM
protocols our settings name.  ``encode`` turns a view value into pysnmp's
protocol type, the same way for answers and notifications.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from pysnmp.entity import config as snmp_config
from pysnmp.entity import engine as snmp_engine
from pysnmp.proto import rfc1902

from exporter.config.snmp import V3User
from exporter.snmp.syntax import BYTES, C64, G32, INT, OID, STR, TICKS, U32, Value, resolve

_AUTH = {
    "SHA-224": snmp_config.USM_AUTH_HMAC128_SHA224,
    "SHA-256": snmp_config.USM_AUTH_HMAC192_SHA256,
    "SHA-384": snmp_config.USM_AUTH_HMAC256_SHA384,
    "SHA-512": snmp_config.USM_AUTH_HMAC384_SHA512,
}
_PRIV = {
    "AES": snmp_config.USM_PRIV_CFB128_AES,
    "AES-192": snmp_config.USM_PRIV_CFB192_AES,
    "AES-256": snmp_config.USM_PRIV_CFB256_AES,
}


class _NoCompiler:
    """Stands in for pysmi's MIB compiler in every engine: every MIB we need is loaded already.

    Without it, pysnmp builds a pysmi parser the first time an engine
    resolves an OID (a notification, say), which takes seconds of CPU on the
    event loop and blocks every request meanwhile.
    """

    def compile(self, *names: str, **_options: Any) -> dict[str, str]:
        return {name: "missing" for name in names}


def new_engine(engine_id: bytes, state_dir: Path) -> snmp_engine.SnmpEngine:
    """A pysnmp engine with a fixed ID whose boots counter lives in ``state_dir``, and no MIB compiler."""
    saved, tempfile.tempdir = tempfile.tempdir, str(state_dir)  # pysnmp keeps snmpEngineBoots there
    try:
        eng = snmp_engine.SnmpEngine(snmpEngineID=rfc1902.OctetString(engine_id))
    finally:
        tempfile.tempdir = saved
    eng.get_mib_builder().set_mib_compiler(_NoCompiler(), str(state_dir / "no-mibs"))
    return eng


def auth_protocol(user: V3User) -> Any:
    return _AUTH[user.auth_protocol]


def priv_protocol(user: V3User) -> Any:
    return _PRIV[user.priv_protocol] if user.priv_key else snmp_config.USM_PRIV_NONE


_PYSNMP_TYPES = {
    INT: rfc1902.Integer32, STR: rfc1902.OctetString, BYTES: rfc1902.OctetString,
    C64: rfc1902.Counter64, G32: rfc1902.Gauge32, U32: rfc1902.Unsigned32,
    TICKS: rfc1902.TimeTicks, OID: rfc1902.ObjectIdentifier,
}


def encode(value: Value, now: float) -> Any:
    """A view value as a pysnmp protocol object."""
    syntax, raw = resolve(value, now)
    return _PYSNMP_TYPES[syntax](raw)


def default_engine_id(state_directory: str) -> bytes:
    """A stable engine ID: net-snmp's enterprise, format 5 (octets), hashed machine ID."""
    seed = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            seed = Path(path).read_text().strip()
            break
        except OSError:
            continue
    seed = (seed or socket.gethostname()) + ":" + os.path.abspath(state_directory)
    return bytes.fromhex("80001f8805") + hashlib.sha256(seed.encode()).digest()[:12]
