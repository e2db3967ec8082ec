"""Immutable picture of one libvirt host at one moment.

The poller builds a :class:`Snapshot` and publishes it by swapping a single
reference; every front end (Prometheus, SNMP) reads only snapshots.  Field
names carry their unit (``_ns``, ``_kib``, ``_bytes``, ``_s``) so that every
conversion is visible where it happens.  ``None`` means "not reported by this
driver or for this domain"; front ends omit such values rather than invent 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Re-exported: the records of limits and jobs live in a module of their own.
from exporter.domstats import NO_DIRTY_RATE as NO_DIRTY_RATE
from exporter.domstats import NO_IOTUNE as NO_IOTUNE
from exporter.domstats import NO_JOB as NO_JOB
from exporter.domstats import NO_PERF as NO_PERF
from exporter.domstats import DirtyRate as DirtyRate
from exporter.domstats import IoThread as IoThread
from exporter.domstats import IoTune as IoTune
from exporter.domstats import Job as Job
from exporter.domstats import Perf as Perf
from exporter.domstats import VcpuPin as VcpuPin

# libvirt's virDomainState values.  Kept here (not in exporter/source/) because the
# front ends need them and must not import libvirt.
STATE_NOSTATE = 0
STATE_RUNNING = 1
STATE_BLOCKED = 2
STATE_PAUSED = 3
STATE_SHUTDOWN = 4
STATE_SHUTOFF = 5
STATE_CRASHED = 6
STATE_PMSUSPENDED = 7
#: virDomainPausedReason: paused because a disk's error policy stopped the guest on an I/O error.
PAUSED_IOERROR = 5
#: (state, reason) pairs of a domain that has a job: paused for a migration, save, dump, snapshot, post-copy or
#: for no known reason (a live dump), and running in post-copy migration.
JOB_STATES = frozenset({(STATE_PAUSED, 0), (STATE_PAUSED, 2), (STATE_PAUSED, 3), (STATE_PAUSED, 4),
                        (STATE_PAUSED, 9), (STATE_PAUSED, 12), (STATE_RUNNING, 10)})

STATE_NAMES: Mapping[int, str] = MappingProxyType(
    {
        STATE_NOSTATE: "nostate",
        STATE_RUNNING: "running",
        STATE_BLOCKED: "blocked",
        STATE_PAUSED: "paused",
        STATE_SHUTDOWN: "shutdown",
        STATE_SHUTOFF: "shutoff",
        STATE_CRASHED: "crashed",
        STATE_PMSUSPENDED: "pmsuspended",
    }
)

STATE_DESCRIPTIONS: Mapping[int, str] = MappingProxyType(
    {
        STATE_NOSTATE: "no state",
        STATE_RUNNING: "the domain is running",
        STATE_BLOCKED: "the domain is blocked on resource",
        STATE_PAUSED: "the domain is paused by user",
        STATE_SHUTDOWN: "the domain is being shut down",
        STATE_SHUTOFF: "the domain is shut off",
        STATE_CRASHED: "the domain is crashed",
        STATE_PMSUSPENDED: "the domain is suspended by guest power management",
    }
)

#: The state a lifecycle event leaves a domain in (defined and undefined leave it shut off).
EVENT_STATES: Mapping[str, int] = MappingProxyType(
    {
        "started": STATE_RUNNING,
        "resumed": STATE_RUNNING,
        "suspended": STATE_PAUSED,
        "stopped": STATE_SHUTOFF,
        "shutdown": STATE_SHUTDOWN,
        "crashed": STATE_CRASHED,
        "pmsuspended": STATE_PMSUSPENDED,
        "defined": STATE_SHUTOFF,
        "undefined": STATE_SHUTOFF,
    }
)


def version_text(encoded: int) -> str:
    """libvirt's version encoding (major * 1e6 + minor * 1e3 + micro) as "major.minor.micro"."""
    return f"{encoded // 1_000_000}.{encoded // 1000 % 1000}.{encoded % 1000}" if encoded else ""


#: Poll groups, which are also the names of the ``--collector.NAME`` switches.
DOMAIN_GROUPS = ("state", "cpu", "balloon", "vcpu", "block", "interface", "job", "haltpoll", "perf", "iothread",
                 "dirtyrate", "pinning")
HOST_GROUPS = ("node", "pool", "network")
ALL_GROUPS = DOMAIN_GROUPS + HOST_GROUPS
#: Switches that change only what is exported, off by default: ``inovex`` adds inovex's names for five
#: families that are exported under ours (so that inovex's Grafana dashboard works unchanged).
EXPORT_GROUPS = ("inovex",)


def frozen_map(data: Mapping[str, int] | None = None) -> Mapping[str, int]:
    """A read-only copy of ``data`` for use inside frozen dataclasses."""
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True, slots=True)
class Vcpu:
    number: int
    state: int | None = None  # virVcpuState: 0 offline, 1 running, 2 blocked
    time_ns: int | None = None
    wait_ns: int | None = None
    delay_ns: int | None = None
    physical_cpu: int | None = None  # -1 in libvirt when offline: stored as None


@dataclass(frozen=True, slots=True)
class Block:
    target: str  # "vda"
    device: str = "disk"  # disk, cdrom, floppy, lun
    disk_type: str = ""  # file, block, network, volume
    bus: str = ""
    source: str = ""
    driver_type: str = ""  # qcow2, raw, ...
    readonly: bool = False
    serial: str = ""  # the disk's serial: the Cinder volume's id under OpenStack
    driver_name: str = ""  # qemu, ...
    cache: str = ""  # none, writeback, writethrough, directsync, unsafe
    discard: str = ""  # unmap, ignore
    protocol: str = ""  # a network disk's protocol: rbd, iscsi, nbd, ...
    read_requests: int | None = None
    read_bytes: int | None = None
    read_time_ns: int | None = None
    write_requests: int | None = None
    write_bytes: int | None = None
    write_time_ns: int | None = None
    flush_requests: int | None = None
    flush_time_ns: int | None = None
    errors: int | None = None
    capacity_bytes: int | None = None
    allocation_bytes: int | None = None
    physical_bytes: int | None = None
    alias: str = ""  # the device alias of a running domain's disk ("virtio-disk0"), which I/O error events name
    limited: bool = False  # the definition sets I/O limits (<iotune>): only then is iotune asked for
    iotune: IoTune = NO_IOTUNE
    error_code: int | None = None  # virDomainGetDiskErrors: 0 none, 1 unspecified, 2 no space; None unknown


@dataclass(frozen=True, slots=True)
class Interface:
    target: str  # host-side device, "vnet3" or "tap0a"
    mac: str = ""
    model: str = ""
    interface_type: str = ""  # bridge, network, ethernet, direct, ...
    bridge: str = ""
    network: str = ""
    mtu: int | None = None
    virtual_interface: str = ""  # Open vSwitch's interface id (the Neutron port's id under OpenStack)
    receive_bytes: int | None = None
    receive_packets: int | None = None
    receive_errors: int | None = None
    receive_drops: int | None = None
    transmit_bytes: int | None = None
    transmit_packets: int | None = None
    transmit_errors: int | None = None
    transmit_drops: int | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    """Balloon driver statistics (virDomainMemoryStats), in KiB unless named."""

    actual_kib: int | None = None
    available_kib: int | None = None
    unused_kib: int | None = None
    usable_kib: int | None = None
    rss_kib: int | None = None
    disk_caches_kib: int | None = None
    swap_in_kib: int | None = None
    swap_out_kib: int | None = None
    major_faults: int | None = None
    minor_faults: int | None = None
    last_update_s: int | None = None  # guest-side timestamp of the stats
    hugetlb_pgalloc: int | None = None  # huge pages the guest allocated
    hugetlb_pgfail: int | None = None  # huge page allocations that failed

    @property
    def used_percent(self) -> float | None:
        """The share of the guest's memory it cannot use without swapping: (available - usable) / available,
        in percent; None without both figures (no balloon driver reporting)."""
        if not self.available_kib or self.usable_kib is None:
            return None
        return (self.available_kib - self.usable_kib) / self.available_kib * 100


@dataclass(frozen=True, slots=True)
class NovaInstance:
    """OpenStack Nova's ``<nova:instance>`` element in a domain's ``<metadata>``: who owns the instance and
    what it is (the instance's UUID is the domain's)."""

    name: str = ""  # nova:name, the instance's display name
    flavor: str = ""  # nova:flavor's name attribute
    user_name: str = ""
    user_id: str = ""
    project_name: str = ""
    project_id: str = ""


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    uuid: str
    id: int  # -1 when inactive, and until the first poll after a start
    state: int
    state_reason: int = 0
    persistent: bool = True
    autostart: bool = False
    os_type: str = ""
    arch: str = ""
    machine: str = ""
    title: str = ""
    max_memory_kib: int | None = None
    memory_kib: int | None = None  # current balloon size
    vcpus_current: int | None = None
    vcpus_max: int | None = None
    cpu_time_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    memory: Memory = field(default_factory=Memory)
    vcpus: tuple[Vcpu, ...] = ()
    blocks: tuple[Block, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    nova: NovaInstance | None = None  # the domain's OpenStack Nova metadata, if it has any
    metadata: tuple[tuple[str, str], ...] = ()  # (label, value) of each [metadata] label; () if all are empty
    haltpoll_success_ns: int | None = None  # time the vCPUs spent polling before halting, and found work
    haltpoll_fail_ns: int | None = None  # ... and found none
    perf: Perf = NO_PERF
    dirty_rate: DirtyRate = NO_DIRTY_RATE
    iothreads: tuple[IoThread, ...] = ()
    vcpu_pins: tuple[VcpuPin, ...] = ()  # each vCPU's host CPUs (from the definition)
    job: Job = NO_JOB  # the job running now, if the domain was asked (see JOB_STATES)
    last_job: Job = NO_JOB  # the outcome of its last job that libvirt reported complete
    # Running, paused or otherwise started.  Usually id >= 0, but after a
    # "started" event the new id is unknown until the next poll.
    active: bool = False
    # The domain's stats call was given up on and has not returned (a hung QEMU
    # monitor): only its state is current, with what its definition says;
    # CPU, balloon, vCPU and device counters are left out.
    timed_out: bool = False
    stats_at: float | None = None  # Unix time of the last complete stats of this domain

    def replace_fields(self, **changes: object) -> Domain:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Host:
    hostname: str = ""
    driver: str = ""  # virConnectGetType: "QEMU", "TEST"
    hypervisor_version: int = 0  # libvirt's encoding: major * 1e6 + minor * 1e3 + micro
    libvirt_version: int = 0
    uri: str = ""
    cpu_model: str = ""
    cpus: int | None = None
    cpu_mhz: int | None = None
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    # Host CPU time by mode (kernel, user, idle, iowait), all CPUs together.
    cpu_time_ns: Mapping[str, int] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class StoragePool:
    name: str
    uuid: str
    state: int  # virStoragePoolState: 0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible
    autostart: bool = False
    capacity_bytes: int | None = None
    allocation_bytes: int | None = None
    available_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    uuid: str
    active: bool
    autostart: bool = False
    bridge: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the front ends serve, as of ``taken_at``.

    ``up`` is False when libvirt could not be reached: ``host`` is then None
    and ``domains`` empty, so no stale series is served as if fresh.  The
    counters (``poll_errors``, ``reconnects``, ``events``) are cumulative over
    the life of the process.
    """

    up: bool
    taken_at: float  # Unix time the data describes
    poll_duration_s: float = 0.0
    last_success_at: float | None = None
    host: Host | None = None
    domains: tuple[Domain, ...] = ()
    pools: tuple[StoragePool, ...] = ()
    networks: tuple[Network, ...] = ()
    poll_errors: Mapping[str, int] = field(default_factory=frozen_map)
    reconnects: int = 0
    events: int = 0
    stalled: bool = False  # the current poll has run past its deadline
    # libvirt calls given up on and still running, by group ("domain", "node", "pool", "network")
    stuck_calls: Mapping[str, int] = field(default_factory=frozen_map)

    def domain_by_uuid(self, uuid: str) -> Domain | None:
        for dom in self.domains:
            if dom.uuid == uuid:
                return dom
        return None

    def replace(self, **changes: object) -> Snapshot:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


EMPTY = Snapshot(up=False, taken_at=0.0)


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """A libvirt domain event, as delivered by the source.

    ``kind`` is one of defined, undefined, started, suspended, resumed,
    stopped, shutdown, pmsuspended, crashed, or device (a device was added or
    removed).  ``detail`` is libvirt's event detail code.  Three kinds change
    no state and only notify: io_error (a disk's error paused the guest;
    ``detail`` the error code, 1 unspecified or 2 no space, ``device`` the
    disk's alias), migration_started (``detail`` the job operation, 4 in or
    5 out) and migration_ended (``detail`` the outcome, 3 completed).
    """

    uuid: str
    name: str
    kind: str
    detail: int = 0
    device: str = ""  # io_error: the disk's device alias (its source path if libvirt gave none)


@dataclass(frozen=True, slots=True)
class Update:
    """What a newly published snapshot changed, for listeners that keep something derived from the last one.

    ``domains`` lists (before, after) for each domain that changed (None
    before: it was added; None after: it was removed); everything else in
    the snapshot is as before, apart from its counters.  ``domains`` None
    means anything may have changed (a poll, libvirt lost or back): derive
    afresh.  ``event`` is the libvirt event behind the change, if any, for
    notifications (None for the expected outcome of our own action).
    """

    event: DomainEvent | None = None
    domains: tuple[tuple[Domain | None, Domain | None], ...] | None = None


FULL_UPDATE = Update()
