"""Configuration: a TOML file, then the environment, then the command line.

:func:`resolve` is pure: it takes the three layers and returns a validated, frozen :class:`Config` or raises
:class:`ConfigError` naming the key.  :class:`Config` is made of sections (``libvirt``, ``web``, ``snmp``,
``control``), and each component is built with only its own section (exporter/app.py).  Every setting is
declared once in :data:`SETTINGS`; its section, environment variable, command-line flag and help are derived
from that declaration.  The value parsers are in :mod:`exporter.config.values`, the SNMP tables' in
:mod:`exporter.config.snmp`.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.config.snmp import (
    BUILTIN_VIEWS,
    Community,
    NotifyTarget,
    V3User,
    parse_agentx_socket,
    parse_communities,
    parse_engine_id,
    parse_notify_mibs,
    parse_notify_targets,
    parse_snmp_mode,
    parse_users,
    parse_views,
)
from exporter.config.values import (
    EntryError,
    ListenAddress,
    file_path,
    listen_addresses,
    log_level,
    non_negative_int,
    parse_bool,
    parse_duration,
    parse_text,
    parse_uri,
    positive_int,
    regex,
    string_table,
    url_path,
)
from exporter.errors import ConfigError
from exporter.metadata import MetadataError, MetadataMap, compile_map
from exporter.snapshot import ALL_GROUPS

ENV_PREFIX = "LIBVIRT_EXPORTER_"


@dataclass(frozen=True, slots=True)
class LibvirtSettings:
    """What the poller needs: where libvirt is, how often and how long to poll it, and what to keep."""

    uri: str = "test:///default"
    poll_interval_s: float = 15.0
    poll_timeout_s: float = 0.0  # 0: the interval, at least 10 s
    domain_timeout_s: float = 0.0  # 0: half the poll deadline, at most 5 s
    keepalive_interval_s: int = 5
    keepalive_count: int = 3
    reconnect_backoff_max_s: float = 15.0
    collectors: frozenset[str] = frozenset(ALL_GROUPS)
    domain_include: re.Pattern[str] | None = None
    domain_exclude: re.Pattern[str] | None = None
    metadata: MetadataMap = field(default_factory=MetadataMap)  # the [metadata] section's labels
    dirty_rate_every: int = 0  # start a dirty-rate calculation on every running domain every N polls; 0 never
    dirty_rate_seconds: int = 1  # how long each calculation measures
    vcpu_placement_every: int = 4  # ask where vCPUs run on one poll in N (exporter.source.placement)

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


@dataclass(frozen=True, slots=True)
class WebSettings:
    listen_addresses: tuple[ListenAddress, ...] = (ListenAddress("", 9177),)
    telemetry_path: str = "/metrics"
    config_file: str = ""  # exporter-toolkit web configuration (TLS, basic auth)


@dataclass(frozen=True, slots=True)
class SnmpSettings:
    enabled: bool = True
    listen_addresses: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 1161),)
    engine_id: bytes | None = None
    contact: str = ""
    location: str = ""
    communities: tuple[Community, ...] = ()
    users: tuple[V3User, ...] = ()
    views: Mapping[str, tuple[tuple[int, ...], ...]] = field(default_factory=lambda: dict(BUILTIN_VIEWS))
    notify: tuple[NotifyTarget, ...] = ()
    mode: str = "standalone"  # or "agentx", or "both"
    agentx_socket: str = "/var/agentx/master"
    agentx_notify_mibs: frozenset[str] = frozenset({"libvirt-exporter"})

    @property
    def standalone(self) -> bool:
        """Whether our own UDP agent runs."""
        return self.mode in ("standalone", "both")

    @property
    def agentx(self) -> bool:
        """Whether we are a subagent of the host's snmpd."""
        return self.mode in ("agentx", "both")

    @property
    def wanted(self) -> bool:
        """Whether anything SNMP runs: the agent needs a principal to answer, a subagent only its master."""
        return self.enabled and (self.agentx or bool(self.communities or self.users or self.notify))

    @property
    def notifications(self) -> bool:
        return self.enabled and bool(self.notify or self.agentx)


@dataclass(frozen=True, slots=True)
class ControlSettings:
    enabled: bool = False
    timeout_s: float = 30.0
    reply_within_s: float = 3.0


@dataclass(frozen=True, slots=True)
class Config:
    libvirt: LibvirtSettings = field(default_factory=LibvirtSettings)
    web: WebSettings = field(default_factory=WebSettings)
    snmp: SnmpSettings = field(default_factory=SnmpSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    log_level: str = "info"
    config_file: str = ""
    state_directory: str = "/var/lib/libvirt-exporter"  # SNMP row indexes and engine boots


_SECTIONS: dict[str, Callable[..., Any]] = {
    "libvirt": LibvirtSettings, "web": WebSettings, "snmp": SnmpSettings, "control": ControlSettings,
}


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted: TOML table and key
    field: str  # where it goes: "section.attribute", or an attribute of Config itself
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
    Setting("libvirt.uri", "libvirt.uri", parse_uri,
            "libvirt connection URI or uri_aliases name (default test:///default, the built-in test driver)"),
    Setting("libvirt.poll_interval", "libvirt.poll_interval_s", parse_duration, "time between polls (default 15s)"),
    Setting("libvirt.poll_timeout", "libvirt.poll_timeout_s", parse_duration,
            "a poll running longer is reported stuck and the last snapshot keeps being served "
            "(default: the poll interval, at least 10s)"),
    Setting("libvirt.domain_timeout", "libvirt.domain_timeout_s", parse_duration,
            "a domain's stats call (or a pool, network or node call) running longer is given up on: the "
            "domain is reported timed out and served without its monitor-bound stats until the call returns "
            "(default: half the poll timeout, at most 5s)"),
    Setting("libvirt.keepalive_interval", "libvirt.keepalive_interval_s", positive_int,
            "seconds between keepalive probes on remote connections (default 5)"),
    Setting("libvirt.keepalive_count", "libvirt.keepalive_count", positive_int,
            "unanswered keepalive probes before the connection is declared dead (default 3)"),
    Setting("libvirt.reconnect_backoff_max", "libvirt.reconnect_backoff_max_s", parse_duration,
            "longest wait between reconnect attempts (default 15s)"),
    Setting("web.listen_address", "web.listen_addresses", listen_addresses,
            "HTTP listen address(es), comma separated (default :9177, all IPv4 and IPv6 addresses)"),
    Setting("web.telemetry_path", "web.telemetry_path", url_path, "path of the metrics endpoint (default /metrics)"),
    Setting("web.config_file", "web.config_file", file_path,
            "web configuration file (exporter-toolkit format): TLS and basic auth for HTTP; a relative path is "
            "taken from the working directory", flag="--web.config.file"),
    Setting("libvirt.vcpu_placement_every", "libvirt.vcpu_placement_every", positive_int,
            "ask each running domain which host CPU its vCPUs run on (libvirt_domain_vcpu_cpu) on one poll in N, "
            "serving the last answer in between; 1 asks every poll (default 4)"),
    Setting("dirtyrate.calc_every", "libvirt.dirty_rate_every", non_negative_int,
            "start a memory dirty-rate calculation on every running domain every N polls; it costs the guest "
            "some time, and needs libvirt opened read-write (default 0: never)"),
    Setting("dirtyrate.calc_seconds", "libvirt.dirty_rate_seconds", positive_int,
            "how long each dirty-rate calculation measures, in seconds (default 1)"),
    Setting("domains.include", "libvirt.domain_include", regex,
            "only domains whose whole name matches this regular expression", flag="--domain.include"),
    Setting("domains.exclude", "libvirt.domain_exclude", regex,
            "skip domains whose whole name matches this regular expression", flag="--domain.exclude"),
    Setting("log.level", "log_level", log_level, "debug, info, warning or error (default info)"),
    Setting("state.directory", "state_directory", file_path,
            "where SNMP row indexes and engine boots are kept (default /var/lib/libvirt-exporter); a relative "
            "path is taken from the working directory"),
    Setting("snmp.enabled", "snmp.enabled", parse_bool, "serve SNMP (default on)", boolean=True),
    Setting("snmp.listen_address", "snmp.listen_addresses", listen_addresses,
            "SNMP UDP listen address(es), comma separated (default 127.0.0.1:1161)"),
    Setting("snmp.engine_id", "snmp.engine_id", parse_engine_id,
            "SNMPv3 engine ID in hex (default: derived from the machine ID)"),
    Setting("snmp.mode", "snmp.mode", parse_snmp_mode,
            "standalone (default): our own UDP agent; agentx: a subagent of the host's snmpd; both"),
    Setting("snmp.agentx.socket", "snmp.agentx_socket", parse_agentx_socket,
            "the AgentX master's socket: a path, unix:/path or tcp:HOST:PORT (default /var/agentx/master)"),
    Setting("snmp.agentx.notify_mibs", "snmp.agentx_notify_mibs", parse_notify_mibs,
            "notifications sent through the master, by MIB (default libvirt-exporter)"),
    Setting("snmp.contact", "snmp.contact", parse_text, "sysContact"),
    Setting("snmp.location", "snmp.location", parse_text, "sysLocation"),
    Setting("control.enabled", "control.enabled", parse_bool,
            "allow lifecycle control through SNMP SET; opens libvirt read-write (default off)", boolean=True),
    Setting("control.timeout", "control.timeout_s", parse_duration,
            "longest a lifecycle action may take in libvirt before it is reported failed (default 30s)"),
    Setting("control.reply_within", "control.reply_within_s", parse_duration,
            "a SET is answered within this time; a slower action answers success with "
            "lvxDomainLastActionResult inProgress (default 3s)"),
    Setting("snmp.communities", "snmp.communities", parse_communities, "SNMPv1/v2c communities", file_only=True,
            secret=True),
    Setting("snmp.users", "snmp.users", parse_users, "SNMPv3 users", file_only=True, secret=True),
    Setting("snmp.views", "snmp.views", parse_views, "named lists of OID subtrees", file_only=True),
    Setting("snmp.notify", "snmp.notify", parse_notify_targets, "notification targets", file_only=True, secret=True),
    Setting("metadata.labels", "libvirt.metadata", string_table,
            "labels of libvirt_domain_metadata_info: label = XPath expression over the domain XML", file_only=True),
    Setting("metadata.namespaces", "libvirt.metadata", string_table,
            "namespace prefixes the metadata expressions use: prefix = URI", file_only=True),
) + tuple(
    Setting(f"collectors.{group}", "", parse_bool, f"poll and export the {group} group (default on)",
            flag=f"--collector.{group}", boolean=True)
    for group in ALL_GROUPS
) + (
    Setting("collectors.inovex", "", parse_bool,
            "also export inovex's names for five families exported under ours (libvirt_domain_info_state, "
            "libvirt_domain_vcpu_current, libvirt_domain_memory_stats_maximum_bytes, and swap_in/swap_out_bytes as "
            "gauges), for inovex's Grafana dashboard (default off)", flag="--collector.inovex", boolean=True),
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
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    metadata: dict[str, dict[str, str]] = {}
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
        elif key.startswith("metadata."):
            metadata[key.split(".")[1]] = parsed
        elif "." in setting.field:
            section, attr = setting.field.split(".")
            sections[section][attr] = parsed
        else:
            values[setting.field] = parsed
    sections["libvirt"]["collectors"] = frozenset(collectors)
    try:
        sections["libvirt"]["metadata"] = compile_map(metadata.get("labels", {}), metadata.get("namespaces", {}))
    except MetadataError as exc:
        raise ConfigError(exc.key, f"{exc} (from config file {config_file})") from None
    config = Config(**values, **{name: make(**sections[name]) for name, make in _SECTIONS.items()})
    _check(config)
    return config


def _check(config: Config) -> None:
    """The checks that involve more than one setting."""
    snmp, libvirt = config.snmp, config.libvirt
    for i, user in enumerate(snmp.users):
        if user.write and not user.priv_key:
            raise ConfigError(f"snmp.users[{i}].write", "is true but the user has no priv_key: writes need authPriv")
    views: list[tuple[str, list[str]]] = [
        ("snmp.communities", [c.view for c in snmp.communities]),
        ("snmp.users", [u.view for u in snmp.users]),
    ]
    for key, principal_views in views:
        for i, view in enumerate(principal_views):  # named by position, never by community: it is a secret
            if view not in snmp.views:
                raise ConfigError(f"{key}[{i}].view", f"{view!r} is not a view that snmp.views defines")
    if libvirt.dirty_rate_every and libvirt.dirty_rate_seconds >= libvirt.poll_interval_s * libvirt.dirty_rate_every:
        raise ConfigError("dirtyrate.calc_seconds", "must be shorter than the time between two calculations "
                                                    f"({libvirt.poll_interval_s * libvirt.dirty_rate_every:g}s)")
    if libvirt.poll_timeout_s and libvirt.poll_timeout_s < 0.1:
        raise ConfigError("libvirt.poll_timeout", "must be at least 100ms")
    if libvirt.domain_timeout_s and libvirt.domain_timeout_s < 0.05:
        raise ConfigError("libvirt.domain_timeout", "must be at least 50ms")
    if libvirt.domain_timeout_s and libvirt.domain_timeout_s >= libvirt.poll_deadline_s:
        raise ConfigError("libvirt.domain_timeout",
                          f"must be shorter than the poll timeout ({libvirt.poll_deadline_s:g}s), which bounds the "
                          "whole poll")


def read_config_path(cli_path: str | None, environ: Mapping[str, str]) -> str:
    """The config file named on the command line, else in the environment; made absolute like every path."""
    path = cli_path or environ.get(ENV_PREFIX + "CONFIG_FILE", "")
    return os.path.abspath(path) if path.strip() else ""
