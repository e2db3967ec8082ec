"""The HTTP web configuration file: TLS and basic authentication.

The file has the layout of the Prometheus exporter-toolkit's web config, so
one file can serve every exporter on a host::

    tls_server_config:
      cert_file: /etc/libvirt-exporter/tls.crt
      key_file: /etc/libvirt-exporter/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: /etc/libvirt-exporter/ca.crt    # optional
      min_version: TLS12                              # optional
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt hash (htpasswd -nBC 10)

Everything is checked at start-up: an unknown key, an unreadable file or a
hash that is not bcrypt stops the exporter with a message naming it.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml

from exporter.errors import ConfigError

KEY = "web.config_file"

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
             "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(KEY, f"{path}: {message}")


def load(path: str) -> WebConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML: {exc}") from None
    if data is None:
        return WebConfig()
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping at the top level")
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise _fail(path, f"unsupported key(s): {', '.join(sorted(map(str, unknown)))}")
    tls = _tls(path, data.get("tls_server_config"))
    users = _users(path, data.get("basic_auth_users"))
    return WebConfig(tls, users)


def _tls(path: str, section: Any) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise _fail(path, "tls_server_config must be a mapping")
    unknown = set(section) - _TLS_KEYS
    if unknown:
        raise _fail(path, f"unsupported tls_server_config key(s): {', '.join(sorted(map(str, unknown)))}")
    cert, key = section.get("cert_file"), section.get("key_file")
    if not cert or not key:
        raise _fail(path, "tls_server_config needs both cert_file and key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise _fail(path, f"cannot load cert_file/key_file: {exc}") from None
    auth_type = str(section.get("client_auth_type", "NoClientCert"))
    if auth_type not in _CLIENT_AUTH:
        raise _fail(path, f"client_auth_type {auth_type!r} is not one of {', '.join(_CLIENT_AUTH)}")
    ca = section.get("client_ca_file")
    if auth_type != "NoClientCert" and not ca:
        # Python cannot accept a client certificate it has not verified: every client_auth_type needs the CA.
        raise _fail(path, f"client_auth_type {auth_type} needs client_ca_file (client certificates are verified)")
    if ca:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise _fail(path, f"cannot load client_ca_file: {exc}") from None
    ctx.verify_mode = _CLIENT_AUTH[auth_type]
    for name in ("min_version", "max_version"):
        if name in section:
            version = _VERSIONS.get(str(section[name]))
            if version is None:
                raise _fail(path, f"{name} {section[name]!r} is not one of {', '.join(_VERSIONS)}")
            setattr(ctx, "minimum_version" if name == "min_version" else "maximum_version", version)
    if "min_version" not in section:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _users(path: str, section: Any) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise _fail(path, "basic_auth_users must be a mapping of user name to bcrypt hash")
    users = {}
    for name, hashed in section.items():
        text = str(hashed)
        if not text.startswith(("$2a$", "$2b$", "$2y$")):
            raise _fail(path, f"basic_auth_users: the hash of {name!r} is not a bcrypt hash")
        users[str(name)] = text.encode()
    return users


class BasicAuth:
    """Checks ``Authorization: Basic`` headers; a good password is remembered (bcrypt is slow on purpose)."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    def allows(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self._users.get(user)
        if not sep or hashed is None:
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
        with self._lock:
            if key in self._good:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                self._good.add(key)
        return ok
