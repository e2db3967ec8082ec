"""Configuration: a TOML file, then the environment, then the command line.

:func:`resolve` is pure: it takes the three layers and returns a validated,
frozen :class:`Config` or raises :class:`ConfigError` naming the key.  Every
setting is declared once in :data:`SETTINGS`; its environment variable and
command-line flag are derived from that declaration.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.errors import ConfigError
from exporter.snapshot import ALL_GROUPS

ENV_PREFIX = "LIBVIRT_EXPORTER_"

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


@dataclass(frozen=True, slots=True)
class Community:
    """An SNMPv1/v2c community.  Read-only unless ``write`` (see the README)."""

    name: str
    view: str = "all"
    write: bool = False


AUTH_PROTOCOLS = ("SHA-224", "SHA-256", "SHA-384", "SHA-512")
PRIV_PROTOCOLS = ("AES", "AES-192", "AES-256")


@dataclass(frozen=True, slots=True)
class V3User:
    """An SNMPv3 USM user: SHA-2 authentication, AES privacy (or none: authNoPriv)."""

    name: str
    auth_key: str
    priv_key: str = ""
    auth_protocol: str = "SHA-256"
    priv_protocol: str = "AES"
    view: str = "all"
    write: bool = False

    @property
    def level(self) -> str:
        return "authPriv" if self.priv_key else "authNoPriv"


BUILTIN_VIEWS: dict[str, tuple[tuple[int, ...], ...]] = {"all": ((1, 3, 6, 1),)}
NOTIFY_MIBS = ("libvirt-exporter", "libvirt", "vm")


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """Where notifications go: a v2c community or a v3 authPriv user; trap or inform."""

    address: ListenAddress
    kind: str = "trap"  # or "inform"
    version: str = "v2c"  # or "v3"
    community: str = ""
    user: V3User | None = None
    mibs: frozenset[str] = frozenset({"libvirt-exporter"})
    queue_size: int = 1000


@dataclass(frozen=True, slots=True)
class Config:
    libvirt_uri: str = "test:///default"
    poll_interval_s: float = 15.0
    poll_timeout_s: float = 0.0  # 0: the interval, at least 10 s
    domain_timeout_s: float = 0.0  # 0: half the poll deadline, at most 5 s
    keepalive_interval_s: int = 5
    keepalive_count: int = 3
    reconnect_backoff_max_s: float = 15.0
    listen_addresses: tuple[ListenAddress, ...] = (ListenAddress("", 9177),)
    telemetry_path: str = "/metrics"
    web_config_file: str = ""
    collectors: frozenset[str] = frozenset(ALL_GROUPS)
    domain_include: re.Pattern[str] | None = None
    domain_exclude: re.Pattern[str] | None = None
    log_level: str = "info"
    config_file: str = ""
    state_directory: str = "/var/lib/libvirt-exporter"
    snmp_enabled: bool = True
    snmp_listen_addresses: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 1161),)
    snmp_engine_id: bytes | None = None
    snmp_contact: str = ""
    snmp_location: str = ""
    snmp_communities: tuple[Community, ...] = ()
    snmp_users: tuple[V3User, ...] = ()
    snmp_views: Mapping[str, tuple[tuple[int, ...], ...]] = field(default_factory=lambda: dict(BUILTIN_VIEWS))
    snmp_notify: tuple[NotifyTarget, ...] = ()
    snmp_mode: str = "standalone"  # or "agentx", or "both"
    agentx_socket: str = "/var/agentx/master"
    agentx_notify_mibs: frozenset[str] = frozenset({"libvirt-exporter"})
    control_enabled: bool = False
    control_timeout_s: float = 30.0
    control_reply_within_s: float = 3.0

    @property
    def poll_deadline_s(self) -> float:
        return self.poll_timeout_s or max(self.poll_interval_s, 10.0)

    @property
    def domain_deadline_s(self) -> float:
        """How long one domain's (or one host group's) stats call may take before it is given up on."""
        return self.domain_timeout_s or min(5.0, self.poll_deadline_s / 2)

    def keep_domain(self, name: str) -> bool:
        if self.domain_include is not None and not self.domain_include.fullmatch(name):
            return False
        return not (self.domain_exclude is not None and self.domain_exclude.fullmatch(name))


# -- value parsers: each takes a raw value (TOML value or string) ------------


def _snmp_mode(raw: Any) -> str:
    mode = _text(raw)
    if mode not in ("standalone", "agentx", "both"):
        raise ValueError(f"expected standalone, agentx or both, got {mode!r}")
    return mode


def _agentx_socket(raw: Any) -> str:
    from exporter.snmp.agentx import parse_address

    address = _text(raw)
    parse_address(address)  # raises ValueError with the accepted forms
    return address


def _notify_mibs(raw: Any) -> frozenset[str]:
    items = [m.strip() for m in raw.split(",")] if isinstance(raw, str) else raw
    if not isinstance(items, list) or any(m not in NOTIFY_MIBS for m in items):
        raise ValueError(f"expected a list drawn from {', '.join(NOTIFY_MIBS)}")
    return frozenset(items)


def _text(raw: Any) -> str:
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
        match = _DURATION.match(_text(raw))
        if not match:
            raise ValueError(f"expected a duration like 15s, 500ms or 2m, got {raw!r}")
        value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value <= 0:
        raise ValueError(f"must be greater than zero, got {raw!r}")
    return value


def _positive_int(raw: Any) -> int:
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


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _text(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def parse_uri(raw: Any) -> str:
    uri = _text(raw).strip()
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
    text = _text(raw).strip()
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


def _listen_addresses(raw: Any) -> tuple[ListenAddress, ...]:
    if isinstance(raw, str):
        items = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ValueError("expected an address or a list of addresses")
    if not items:
        raise ValueError("at least one listen address is needed")
    return tuple(parse_listen_address(item) for item in items)


def _url_path(raw: Any) -> str:
    """An HTTP path such as /metrics."""
    text = _text(raw).strip()
    if not text.startswith("/") or text == "/":
        raise ValueError(f"must be an absolute path other than /, got {raw!r}")
    return text


def file_path(raw: Any) -> str:
    """A file or folder on disk, made absolute: a relative path is taken from the working directory at start-up
    (as most tools do), so that it keeps meaning the same place whatever the service does later."""
    text = _text(raw).strip()
    if not text:
        raise ValueError("must not be empty")
    path = os.path.abspath(text)
    if path == "/":
        raise ValueError("must not be /")
    return path


def _regex(raw: Any) -> re.Pattern[str] | None:
    text = _text(raw)
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression: {exc}") from None


def _log_level(raw: Any) -> str:
    text = _text(raw).strip().lower()
    if text not in _LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {raw!r}")
    return text


def _engine_id(raw: Any) -> bytes:
    text = _text(raw).strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"expected hexadecimal digits, got {raw!r}") from None
    if not 5 <= len(value) <= 32:
        raise ValueError(f"an engine ID has 5 to 32 bytes, got {len(value)}")
    return value


class EntryError(ValueError):
    """A bad value inside a structured setting.  ``where`` continues the setting's key, so that the message
    names the very entry and key: ``[1].write`` makes ``snmp.communities[1].write`` (the second community)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def _table_list(raw: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ValueError(f"expected a list of tables ([[{what}]] in TOML)")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise EntryError(f"[{i}]", f"expected a table ([[{what}]] in TOML)")
    return raw


def _fields(item: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = set(item) - allowed
    if unknown:
        raise EntryError(f"{where}.{sorted(unknown)[0]}", "unknown key")
    missing = required - set(item)
    if missing:
        raise EntryError(f"{where}.{sorted(missing)[0]}", "is required")


def _field(item: dict[str, Any], key: str, parse: Callable[[Any], Any], default: Any, where: str) -> Any:
    """``item[key]`` (or ``default``) through ``parse``; a bad value names ``where.key``."""
    try:
        return parse(item.get(key, default))
    except ValueError as exc:
        raise EntryError(f"{where}.{key}", str(exc)) from None


def _communities(raw: Any) -> tuple[Community, ...]:
    result: list[Community] = []
    for i, item in enumerate(_table_list(raw, "snmp.communities")):
        where = f"[{i}]"
        _fields(item, {"name", "view", "write"}, {"name"}, where)
        name = _field(item, "name", _text, "", where)
        if not name or len(name) > 64:
            raise EntryError(f"{where}.name", "the community must have 1 to 64 characters")
        for j, earlier in enumerate(result):  # never echo the community: it is a secret
            if earlier.name == name:
                raise EntryError(f"{where}.name", f"the same community as snmp.communities[{j}]")
        result.append(Community(name=name, view=_field(item, "view", _text, "all", where),
                                write=_field(item, "write", parse_bool, False, where)))
    return tuple(result)


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = _text(raw).upper()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _key(raw: Any) -> str:
    key = _text(raw)
    if key and len(key) < 8:
        raise ValueError("must have at least 8 characters")
    return key


def _users(raw: Any) -> tuple[V3User, ...]:
    result: list[V3User] = []
    for i, item in enumerate(_table_list(raw, "snmp.users")):
        where = f"[{i}]"
        _fields(item, {"name", "auth_key", "priv_key", "auth_protocol", "priv_protocol", "view", "write"},
                {"name", "auth_key"}, where)
        user = V3User(
            name=_field(item, "name", _text, "", where), auth_key=_field(item, "auth_key", _key, "", where),
            priv_key=_field(item, "priv_key", _key, "", where),
            auth_protocol=_field(item, "auth_protocol", _choice(AUTH_PROTOCOLS), "SHA-256", where),
            priv_protocol=_field(item, "priv_protocol", _choice(PRIV_PROTOCOLS), "AES", where),
            view=_field(item, "view", _text, "all", where), write=_field(item, "write", parse_bool, False, where),
        )
        if not user.name or len(user.name) > 32:
            raise EntryError(f"{where}.name", "a user name has 1 to 32 characters")
        if not user.auth_key:
            raise EntryError(f"{where}.auth_key", "must have at least 8 characters")
        for j, earlier in enumerate(result):
            if earlier.name == user.name:
                raise EntryError(f"{where}.name", f"user {user.name!r} is already snmp.users[{j}]")
        result.append(user)
    return tuple(result)


def _mib_list(raw: Any) -> frozenset[str]:
    if not isinstance(raw, list) or not raw or any(m not in NOTIFY_MIBS for m in raw):
        raise ValueError(f"must be a list drawn from {', '.join(NOTIFY_MIBS)}")
    return frozenset(raw)


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = _text(raw)
        if value not in choices:
            raise ValueError(f"must be {' or '.join(choices)}, got {raw!r}")
        return value

    return parse


def _notify_targets(raw: Any) -> tuple[NotifyTarget, ...]:
    result = []
    for i, item in enumerate(_table_list(raw, "snmp.notify")):
        where = f"[{i}]"
        _fields(item, {"address", "type", "version", "community", "user", "auth_key", "priv_key", "auth_protocol",
                       "priv_protocol", "mibs", "queue_size"}, {"address"}, where)
        address = _field(item, "address", parse_listen_address, "", where)
        if not address.host:
            raise EntryError(f"{where}.address", "the address needs a host")
        kind = _field(item, "type", _one_of("trap", "inform"), "trap", where)
        version = _field(item, "version", _one_of("v2c", "v3"), "v2c", where)
        mibs = _field(item, "mibs", _mib_list, ["libvirt-exporter"], where)
        queue_size = _field(item, "queue_size", _positive_int, 1000, where)
        community, user = "", None
        if version == "v2c":
            community = _field(item, "community", _text, "", where)
            if not community:
                raise EntryError(f"{where}.community", "a v2c target needs a community")
        else:
            if "user" not in item:
                raise EntryError(f"{where}.user", "a v3 target needs user")
            fields = {"name": item["user"]} | {
                k: item[k] for k in ("auth_key", "priv_key", "auth_protocol", "priv_protocol") if k in item}
            try:
                (user,) = _users([fields])
            except EntryError as exc:  # the user's keys sit in the target's own table
                key = exc.where.split(".", 1)[1]
                raise EntryError(f"{where}.{'user' if key == 'name' else key}", str(exc)) from None
            if not user.priv_key:
                raise EntryError(f"{where}.priv_key", "a v3 target needs priv_key (notifications go authPriv)")
        result.append(NotifyTarget(address, kind, version, community, user, mibs, queue_size))
    return tuple(result)


def _oid(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in text.strip().strip(".").split("."))
    except ValueError:
        raise ValueError(f"{text!r} is not a numeric OID like 1.3.6.1.2.1.1") from None
    if len(parts) < 2 or any(p < 0 for p in parts):
        raise ValueError(f"{text!r} is not a numeric OID like 1.3.6.1.2.1.1")
    return parts


def _views(raw: Any) -> dict[str, tuple[tuple[int, ...], ...]]:
    if not isinstance(raw, dict):
        raise ValueError("expected a table of view name = [OID subtrees]")
    views = dict(BUILTIN_VIEWS)
    for name, subtrees in raw.items():
        if not isinstance(subtrees, list) or not subtrees:
            raise EntryError(f".{name}", "expected a non-empty list of OIDs")
        try:
            views[name] = tuple(_oid(_text(s)) for s in subtrees)
        except ValueError as exc:
            raise EntryError(f".{name}", str(exc)) from None
    return views


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted: TOML table and key
    field: str  # Config attribute
    parse: Callable[[Any], Any]
    help: str
    flag: str = ""  # command-line flag; derived from key when empty
    boolean: bool = False
    file_only: bool = False  # never from the command line or the environment (secrets, structure)
    secret: bool = False  # may hold secrets: the file must not be readable by others

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace(".", "_")

    @property
    def cli(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("libvirt.uri", "libvirt_uri", parse_uri,
            "libvirt connection URI or uri_aliases name (default test:///default, the built-in test driver)"),
    Setting("libvirt.poll_interval", "poll_interval_s", parse_duration, "time between polls (default 15s)"),
    Setting("libvirt.poll_timeout", "poll_timeout_s", parse_duration,
            "a poll running longer is reported stuck and the last snapshot keeps being served "
            "(default: the poll interval, at least 10s)"),
    Setting("libvirt.domain_timeout", "domain_timeout_s", parse_duration,
            "a domain's stats call (or a pool, network or node call) running longer is given up on: the "
            "domain is reported timed out and served without its monitor-bound stats until the call returns "
            "(default: half the poll timeout, at most 5s)"),
    Setting("libvirt.keepalive_interval", "keepalive_interval_s", _positive_int,
            "seconds between keepalive probes on remote connections (default 5)"),
    Setting("libvirt.keepalive_count", "keepalive_count", _positive_int,
            "unanswered keepalive probes before the connection is declared dead (default 3)"),
    Setting("libvirt.reconnect_backoff_max", "reconnect_backoff_max_s", parse_duration,
            "longest wait between reconnect attempts (default 15s)"),
    Setting("web.listen_address", "listen_addresses", _listen_addresses,
            "HTTP listen address(es), comma separated (default :9177, all IPv4 and IPv6 addresses)"),
    Setting("web.telemetry_path", "telemetry_path", _url_path, "path of the metrics endpoint (default /metrics)"),
    Setting("web.config_file", "web_config_file", file_path,
            "web configuration file (exporter-toolkit format): TLS and basic auth for HTTP; a relative path is "
            "taken from the working directory", flag="--web.config.file"),
    Setting("domains.include", "domain_include", _regex,
            "only domains whose whole name matches this regular expression", flag="--domain.include"),
    Setting("domains.exclude", "domain_exclude", _regex,
            "skip domains whose whole name matches this regular expression", flag="--domain.exclude"),
    Setting("log.level", "log_level", _log_level, "debug, info, warning or error (default info)"),
    Setting("state.directory", "state_directory", file_path,
            "where SNMP row indexes and engine boots are kept (default /var/lib/libvirt-exporter); a relative "
            "path is taken from the working directory"),
    Setting("snmp.enabled", "snmp_enabled", parse_bool, "serve SNMP (default on)", boolean=True),
    Setting("snmp.listen_address", "snmp_listen_addresses", _listen_addresses,
            "SNMP UDP listen address(es), comma separated (default 127.0.0.1:1161)"),
    Setting("snmp.engine_id", "snmp_engine_id", _engine_id,
            "SNMPv3 engine ID in hex (default: derived from the machine ID)"),
    Setting("snmp.mode", "snmp_mode", _snmp_mode,
            "standalone (default): our own UDP agent; agentx: a subagent of the host's snmpd; both"),
    Setting("snmp.agentx.socket", "agentx_socket", _agentx_socket,
            "the AgentX master's socket: a path, unix:/path or tcp:HOST:PORT (default /var/agentx/master)"),
    Setting("snmp.agentx.notify_mibs", "agentx_notify_mibs", _notify_mibs,
            "notifications sent through the master, by MIB (default libvirt-exporter)"),
    Setting("snmp.contact", "snmp_contact", _text, "sysContact"),
    Setting("snmp.location", "snmp_location", _text, "sysLocation"),
    Setting("control.enabled", "control_enabled", parse_bool,
            "allow lifecycle control through SNMP SET; opens libvirt read-write (default off)", boolean=True),
    Setting("control.timeout", "control_timeout_s", parse_duration,
            "longest a lifecycle action may take in libvirt before it is reported failed (default 30s)"),
    Setting("control.reply_within", "control_reply_within_s", parse_duration,
            "a SET is answered within this time; a slower action answers success with "
            "lvxDomainLastActionResult inProgress (default 3s)"),
    Setting("snmp.communities", "snmp_communities", _communities, "SNMPv1/v2c communities", file_only=True,
            secret=True),
    Setting("snmp.users", "snmp_users", _users, "SNMPv3 users", file_only=True, secret=True),
    Setting("snmp.views", "snmp_views", _views, "named lists of OID subtrees", file_only=True),
    Setting("snmp.notify", "snmp_notify", _notify_targets, "notification targets", file_only=True, secret=True),
) + tuple(
    Setting(f"collectors.{group}", "", parse_bool, f"poll and export the {group} group (default on)",
            flag=f"--collector.{group}", boolean=True)
    for group in ALL_GROUPS
)

_BY_KEY = {s.key: s for s in SETTINGS}
_BY_ENV = {s.env: s for s in SETTINGS}
# Variables that are not settings but are read by the command itself.
_ENV_OTHER = {ENV_PREFIX + "CONFIG_FILE"}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and f"{dotted}" not in _BY_KEY:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def load_file(path: str) -> dict[str, Any]:
    """Read a TOML config file; errors become :class:`ConfigError`."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
            mode = os.fstat(handle.fileno()).st_mode
    except FileNotFoundError:
        raise ConfigError("config.file", f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError("config.file", f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config.file", f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("config.file", f"{path}: {exc.strerror}") from None
    secrets = [key for key in _flatten(data) if key in _BY_KEY and _BY_KEY[key].secret]
    if secrets and mode & 0o007:
        raise ConfigError("config.file", f"{path} holds secrets ({', '.join(secrets)}) but other users may read it "
                                         f"(mode {stat.S_IMODE(mode):04o}): chmod o-rwx it (600 or 640)")
    return data


def resolve(
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    file_data: Mapping[str, Any],
    *,
    config_file: str = "",
) -> Config:
    """Merge file < environment < command line and validate every value.

    ``cli`` maps dotted keys to raw values for the flags actually given.
    """
    raw: dict[str, tuple[Any, str]] = {}
    for key, value in _flatten(file_data).items():
        if key not in _BY_KEY:
            raise ConfigError(key, f"unknown key in {config_file or 'the config file'}")
        raw[key] = (value, f"config file {config_file}".strip())
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_OTHER:
            continue
        setting = _BY_ENV.get(name)
        if setting is None:
            raise ConfigError(name, "unknown environment variable")
        if setting.file_only:
            raise ConfigError(setting.key, f"can be set only in the config file, not with {name}")
        raw[setting.key] = (value, f"environment {name}")
    for key, value in cli.items():
        if value is None:
            continue
        if key not in _BY_KEY:
            raise ConfigError(key, "unknown command-line setting")
        raw[key] = (value, f"command line {_BY_KEY[key].cli}")

    values: dict[str, Any] = {"config_file": config_file}
    collectors = set(ALL_GROUPS)
    for key, (value, origin) in raw.items():
        setting = _BY_KEY[key]
        try:
            parsed = setting.parse(value)
        except EntryError as exc:
            raise ConfigError(key + exc.where, f"{exc} (from {origin})") from None
        except ValueError as exc:
            raise ConfigError(key, f"{exc} (from {origin})") from None
        if key.startswith("collectors."):
            group = key.split(".", 1)[1]
            if parsed:
                collectors.add(group)
            else:
                collectors.discard(group)
        else:
            values[setting.field] = parsed
    values["collectors"] = frozenset(collectors)
    config = Config(**values)
    for i, user in enumerate(config.snmp_users):
        if user.write and not user.priv_key:
            raise ConfigError(f"snmp.users[{i}].write", "is true but the user has no priv_key: writes need authPriv")
    views: list[tuple[str, list[str]]] = [
        ("snmp.communities", [c.view for c in config.snmp_communities]),
        ("snmp.users", [u.view for u in config.snmp_users]),
    ]
    for key, principal_views in views:
        for i, view in enumerate(principal_views):  # named by position, never by community: it is a secret
            if view not in config.snmp_views:
                raise ConfigError(f"{key}[{i}].view", f"{view!r} is not a view that snmp.views defines")
    if config.poll_timeout_s and config.poll_timeout_s < 0.1:
        raise ConfigError("libvirt.poll_timeout", "must be at least 100ms")
    if config.domain_timeout_s and config.domain_timeout_s < 0.05:
        raise ConfigError("libvirt.domain_timeout", "must be at least 50ms")
    if config.domain_timeout_s and config.domain_timeout_s >= config.poll_deadline_s:
        raise ConfigError("libvirt.domain_timeout",
                          f"must be shorter than the poll timeout ({config.poll_deadline_s:g}s), which bounds the "
                          "whole poll")
    return config


def read_config_path(cli_path: str | None, environ: Mapping[str, str]) -> str:
    """The config file named on the command line, else in the environment; made absolute like every path."""
    path = cli_path or environ.get(ENV_PREFIX + "CONFIG_FILE", "")
    return os.path.abspath(path) if path.strip() else ""


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
