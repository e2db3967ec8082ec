"""The SNMP settings' own types and the parsers of their TOML tables: communities, SNMPv3 users, views,
notification targets and the AgentX master's address.  A bad entry names itself (``snmp.users[1].priv_key``)
without ever echoing a secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.config.values import (
    EntryError,
    ListenAddress,
    choice,
    entry_field,
    entry_keys,
    one_of,
    parse_bool,
    parse_listen_address,
    parse_text,
    positive_int,
    table_list,
)


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


def parse_agentx_address(address: str) -> tuple[str, str, int]:
    """("unix", path, 0) or ("tcp", host, port) from ``/path``, ``unix:/path`` or ``tcp:HOST:PORT``."""
    if address.startswith("tcp:"):
        host, sep, port = address[4:].rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"{address!r}: expected tcp:HOST:PORT")
        return "tcp", host.strip("[]"), int(port)
    path = address[5:] if address.startswith("unix:") else address
    if not path.startswith("/"):
        raise ValueError(f"{address!r}: expected an absolute socket path, unix:/path or tcp:HOST:PORT")
    return "unix", path, 0


def parse_agentx_socket(raw: Any) -> str:
    address = parse_text(raw)
    parse_agentx_address(address)  # raises ValueError with the accepted forms
    return address


def parse_snmp_mode(raw: Any) -> str:
    mode = parse_text(raw)
    if mode not in ("standalone", "agentx", "both"):
        raise ValueError(f"expected standalone, agentx or both, got {mode!r}")
    return mode


def parse_engine_id(raw: Any) -> bytes:
    text = parse_text(raw).strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"expected hexadecimal digits, got {raw!r}") from None
    if not 5 <= len(value) <= 32:
        raise ValueError(f"an engine ID has 5 to 32 bytes, got {len(value)}")
    return value




def parse_notify_mibs(raw: Any) -> frozenset[str]:
    items = [m.strip() for m in raw.split(",")] if isinstance(raw, str) else raw
    if not isinstance(items, list) or any(m not in NOTIFY_MIBS for m in items):
        raise ValueError(f"expected a list drawn from {', '.join(NOTIFY_MIBS)}")
    return frozenset(items)


def parse_communities(raw: Any) -> tuple[Community, ...]:
    result: list[Community] = []
    for i, item in enumerate(table_list(raw, "snmp.communities")):
        where = f"[{i}]"
        entry_keys(item, {"name", "view", "write"}, {"name"}, where)
        name = entry_field(item, "name", parse_text, "", where)
        if not name or len(name) > 64:
            raise EntryError(f"{where}.name", "the community must have 1 to 64 characters")
        for j, earlier in enumerate(result):  # never echo the community: it is a secret
            if earlier.name == name:
                raise EntryError(f"{where}.name", f"the same community as snmp.communities[{j}]")
        result.append(Community(name=name, view=entry_field(item, "view", parse_text, "all", where),
                                write=entry_field(item, "write", parse_bool, False, where)))
    return tuple(result)


def _key(raw: Any) -> str:
    key = parse_text(raw)
    if key and len(key) < 8:
        raise ValueError("must have at least 8 characters")
    return key


def parse_users(raw: Any) -> tuple[V3User, ...]:
    result: list[V3User] = []
    for i, item in enumerate(table_list(raw, "snmp.users")):
        where = f"[{i}]"
        entry_keys(item, {"name", "auth_key", "priv_key", "auth_protocol", "priv_protocol", "view", "write"},
                {"name", "auth_key"}, where)
        user = V3User(
            name=entry_field(item, "name", parse_text, "", where),
            auth_key=entry_field(item, "auth_key", _key, "", where),
            priv_key=entry_field(item, "priv_key", _key, "", where),
            auth_protocol=entry_field(item, "auth_protocol", choice(AUTH_PROTOCOLS), "SHA-256", where),
            priv_protocol=entry_field(item, "priv_protocol", choice(PRIV_PROTOCOLS), "AES", where),
            view=entry_field(item, "view", parse_text, "all", where),
            write=entry_field(item, "write", parse_bool, False, where),
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


def parse_notify_targets(raw: Any) -> tuple[NotifyTarget, ...]:
    result = []
    for i, item in enumerate(table_list(raw, "snmp.notify")):
        where = f"[{i}]"
        entry_keys(item, {"address", "type", "version", "community", "user", "auth_key", "priv_key", "auth_protocol",
                       "priv_protocol", "mibs", "queue_size"}, {"address"}, where)
        address = entry_field(item, "address", parse_listen_address, "", where)
        if not address.host:
            raise EntryError(f"{where}.address", "the address needs a host")
        kind = entry_field(item, "type", one_of("trap", "inform"), "trap", where)
        version = entry_field(item, "version", one_of("v2c", "v3"), "v2c", where)
        mibs = entry_field(item, "mibs", _mib_list, ["libvirt-exporter"], where)
        queue_size = entry_field(item, "queue_size", positive_int, 1000, where)
        community, user = "", None
        if version == "v2c":
            community = entry_field(item, "community", parse_text, "", where)
            if not community:
                raise EntryError(f"{where}.community", "a v2c target needs a community")
        else:
            if "user" not in item:
                raise EntryError(f"{where}.user", "a v3 target needs user")
            fields = {"name": item["user"]} | {
                k: item[k] for k in ("auth_key", "priv_key", "auth_protocol", "priv_protocol") if k in item}
            try:
                (user,) = parse_users([fields])
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


def parse_views(raw: Any) -> dict[str, tuple[tuple[int, ...], ...]]:
    if not isinstance(raw, dict):
        raise ValueError("expected a table of view name = [OID subtrees]")
    views = dict(BUILTIN_VIEWS)
    for name, subtrees in raw.items():
        if not isinstance(subtrees, list) or not subtrees:
            raise EntryError(f".{name}", "expected a non-empty list of OIDs")
        try:
            views[name] = tuple(_oid(parse_text(s)) for s in subtrees)
        except ValueError as exc:
            raise EntryError(f".{name}", str(exc)) from None
    return views
