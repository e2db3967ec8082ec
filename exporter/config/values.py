"""Value parsers of the configuration: each takes a raw value (a TOML value or a string from the environment
or the command line) and returns it checked and typed, or raises ValueError saying what was expected."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# A libvirt URI (driver[+transport]://[user@][host][:port]/path[?query]) or a
# uri_aliases name from libvirt.conf, which libvirt resolves itself.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s]*$")
_ALIAS = re.compile(r"^[A-Za-z0-9_.-]+$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # "" means every address, IPv4 and IPv6
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return raw


def parse_duration(raw: Any) -> float:
    """``15``, ``15s``, ``1.5m``, ``500ms`` -> seconds (float, > 0)."""
    if isinstance(raw, bool):
        raise ValueError("expected a duration like 15s, got a boolean")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        match = _DURATION.match(parse_text(raw))
        if not match:
            raise ValueError(f"expected a duration like 15s, 500ms or 2m, got {raw!r}")
        value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value <= 0:
        raise ValueError(f"must be greater than zero, got {raw!r}")
    return value


def positive_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected a whole number, got a boolean")
    if isinstance(raw, str):
        try:
            raw = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
    if not isinstance(raw, int):
        raise ValueError(f"expected a whole number, got {type(raw).__name__}")
    if raw < 1:
        raise ValueError(f"must be at least 1, got {raw}")
    return raw


def non_negative_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"expected a whole number, 0 or more, got {raw!r}")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, 0 or more, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"expected a whole number, 0 or more, got {raw!r}")
    return value


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = parse_text(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def parse_uri(raw: Any) -> str:
    uri = parse_text(raw).strip()
    if not uri:
        raise ValueError("must not be empty")
    if not (_URI.match(uri) or _ALIAS.match(uri)):
        raise ValueError(
            f"{uri!r} is neither a libvirt URI (like qemu:///system or qemu+ssh://host/system) "
            "nor a uri_aliases name from libvirt.conf"
        )
    return uri


def parse_listen_address(raw: Any) -> ListenAddress:
    """``:9177``, ``127.0.0.1:9177``, ``[::1]:9177``, ``localhost:9177``."""
    text = parse_text(raw).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT or :PORT, got {text!r}")
        if ":" in host:
            raise ValueError(f"write IPv6 addresses in brackets, like [::1]:9177, got {text!r}")
        if host and not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise ValueError(f"{host!r} is not a host name or address")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ValueError(f"port {number} is out of range 1-65535")
    return ListenAddress(host, number)


def listen_addresses(raw: Any) -> tuple[ListenAddress, ...]:
    if isinstance(raw, str):
        items = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ValueError("expected an address or a list of addresses")
    if not items:
        raise ValueError("at least one listen address is needed")
    return tuple(parse_listen_address(item) for item in items)


def url_path(raw: Any) -> str:
    """An HTTP path such as /metrics."""
    text = parse_text(raw).strip()
    if not text.startswith("/") or text == "/":
        raise ValueError(f"must be an absolute path other than /, got {raw!r}")
    return text


def file_path(raw: Any) -> str:
    """A file or folder on disk, made absolute: a relative path is taken from the working directory at start-up
    (as most tools do), so that it keeps meaning the same place whatever the service does later."""
    text = parse_text(raw).strip()
    if not text:
        raise ValueError("must not be empty")
    path = os.path.abspath(text)
    if path == "/":
        raise ValueError("must not be /")
    return path


def regex(raw: Any) -> re.Pattern[str] | None:
    text = parse_text(raw)
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression: {exc}") from None


def log_level(raw: Any) -> str:
    text = parse_text(raw).strip().lower()
    if text not in _LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {raw!r}")
    return text


class EntryError(ValueError):
    """A bad value inside a structured setting.  ``where`` continues the setting's key, so that the message
    names the very entry and key: ``[1].write`` makes ``snmp.communities[1].write`` (the second community)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def table_list(raw: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ValueError(f"expected a list of tables ([[{what}]] in TOML)")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise EntryError(f"[{i}]", f"expected a table ([[{what}]] in TOML)")
    return raw


def string_table(raw: Any) -> dict[str, str]:
    """A TOML table whose values are all strings ([section] with key = "value" lines)."""
    if not isinstance(raw, dict):
        raise ValueError("expected a table of strings")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise EntryError(f".{key}", f"expected a string, got {type(value).__name__}")
    return dict(raw)


def entry_keys(item: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = set(item) - allowed
    if unknown:
        raise EntryError(f"{where}.{sorted(unknown)[0]}", "unknown key")
    missing = required - set(item)
    if missing:
        raise EntryError(f"{where}.{sorted(missing)[0]}", "is required")


def entry_field(item: dict[str, Any], key: str, parse: Callable[[Any], Any], default: Any, where: str) -> Any:
    """``item[key]`` (or ``default``) through ``parse``; a bad value names ``where.key``."""
    try:
        return parse(item.get(key, default))
    except ValueError as exc:
        raise EntryError(f"{where}.{key}", str(exc)) from None


def choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = parse_text(raw).upper()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = parse_text(raw)
        if value not in choices:
            raise ValueError(f"must be {' or '.join(choices)}, got {raw!r}")
        return value

    return parse


#: libvirt URI parameters whose values are shown; any other value may be, or point at, a secret.
_SHOWN_QUERY = frozenset({"no_verify", "no_tty", "mode", "proxy", "sshauth", "known_hosts_verify", "tls_priority",
                          "socket"})
_HIDDEN = "(hidden)"


def redact_uri(uri: str) -> str:
    """A libvirt URI fit to show: no user or password, and no query value that could be or point at a secret.

    Everything before the last ``@`` of the part ahead of the query goes (a password with an unescaped ``/``
    in it must not survive either); the parameters keep their names, but only harmless ones their values.
    A ``uri_aliases`` name is shown as it is: libvirt.conf holds what it stands for.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    rest = rest.partition("#")[0]
    rest, has_query, query = rest.partition("?")
    if "@" in rest:
        rest = f"{_HIDDEN}@" + rest.rpartition("@")[2]
    shown = f"{scheme}://{rest}"
    if has_query:
        params = []
        for part in query.split("&"):
            name, has_value, _ = part.partition("=")
            if name:
                params.append(part if name.lower() in _SHOWN_QUERY or not has_value else f"{name}={_HIDDEN}")
        if params:
            shown += "?" + "&".join(params)
    return shown


def check_state_directory(path: str) -> None:
    """Refuse a state directory that cannot be one: the path, or a folder above it, is something else.

    Called at start-up with the other checks, before anything listens; whether it can be written is
    found out when it is first used (only the SNMP agent and notifications keep state).
    """
    current = path
    while True:
        if os.path.lexists(current):
            if not os.path.isdir(current):
                what = "is not a directory" if current == path else f"cannot be created: {current} is not a directory"
                raise ConfigError("state.directory", f"{path} {what}")
            return
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent
