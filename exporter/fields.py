"""The field table: every value the snapshot holds per domain, vCPU, device, pool, network and host, with how
each front end shows it.

One row (:class:`Field`) says where a value lives in the snapshot and in which unit, which libvirt bulk-stats
key it comes from, its Prometheus family (name, type, help; the labels follow from the table it belongs to)
and its ``LIBVIRT-EXPORTER-MIB`` column (number, name, syntax and the unit the MIB gives it).  The Prometheus
renderer, the LVX tables of the SNMP agent, the README's metrics table and the tests that hold SNMP against
``/metrics`` all read it.  LIBVIRT-MIB and VM-MIB, whose units and indexes differ, keep their own explicit
mapping (exporter/snmp/mib.py) from the same snapshot attributes.

Adding a numeric field to both front ends is: the snapshot attribute, one row here, one object in the MIB
text (mibs/LIBVIRT-EXPORTER-MIB.txt), and its tests.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from exporter.snapshot import STATE_DESCRIPTIONS
from exporter.snmp.syntax import C64, G32, INT, STR, U32

GAUGE = "gauge"
COUNTER = "counter"

#: A snapshot unit -> the factor that turns it into the Prometheus base unit.
_BASE_UNIT: dict[str, float] = {"ns": 1e-9, "kib": 1024, "mhz": 1e6}


@dataclass(frozen=True, slots=True)
class Family:
    """A Prometheus family; its labels are its table's (:data:`TABLES`)."""

    name: str  # full exposed name; counters end in _total
    kind: str  # GAUGE or COUNTER
    help: str


@dataclass(frozen=True, slots=True)
class Column:
    """A column (or, for the host, a scalar) of LIBVIRT-EXPORTER-MIB."""

    number: int  # sub-identifier under the table's entry (or lvxHost)
    name: str
    syntax: str
    unit: str = ""  # the MIB's unit when it differs from the field's ("kib" for a field in bytes)


@dataclass(frozen=True, slots=True)
class Field:
    table: str  # a key of TABLES
    attr: str  # attribute of the table's snapshot object; dotted for a nested one ("memory.rss_kib")
    unit: str  # the snapshot's unit: ns, kib, bytes, mhz, count, code, bool, text
    group: str  # the collector that polls and exports it
    family: Family | None = None
    column: Column | None = None
    bulk: str = ""  # the key in libvirt's bulk stats, after the table's prefix ("rd.reqs" for block.N.rd.reqs)

    def get(self, obj: Any) -> Any:
        return _getter(self.attr)(obj)

    def metric_value(self, raw: Any) -> float | int | None:
        """The value in the Prometheus family's base unit."""
        if raw is None:
            return None
        if self.unit == "bool":
            return int(raw)
        factor = _BASE_UNIT.get(self.unit)
        value: float | int = raw if factor is None else raw * factor
        return value

    def column_value(self, raw: Any) -> Any:
        """The value as the MIB column holds it (before the syntax's range is applied on the wire)."""
        if raw is None:
            return None
        if self.unit == "bool":
            return 1 if raw else 2  # TruthValue
        if self.column is not None and self.column.unit == "kib" and self.unit == "bytes":
            return raw // 1024
        return raw


@dataclass(frozen=True, slots=True)
class Label:
    """A label of an info family: its name and how it is read from the table's object."""

    name: str
    get: Callable[[Any], str]


@dataclass(frozen=True, slots=True)
class InfoFamily:
    """A family whose series carries metadata as labels and the value 1."""

    table: str
    group: str
    family: Family
    labels: tuple[Label, ...]


@dataclass(frozen=True, slots=True)
class Table:
    labels: tuple[str, ...]  # the labels every series of the table has, in order
    bulk_prefix: str = ""  # "block.N." style prefix of its bulk-stats keys, N the device's position


_DOMAIN = ("domain", "uuid")
TABLES: dict[str, Table] = {
    "domain": Table(_DOMAIN),
    "vcpu": Table(_DOMAIN + ("vcpu",), "vcpu.{n}."),
    "block": Table(_DOMAIN + ("target_device",), "block.{n}."),
    "interface": Table(_DOMAIN + ("target_device",), "net.{n}."),
    "pool": Table(("storage_pool", "uuid")),
    "network": Table(("network", "uuid")),
    "host": Table(()),
}


def _getter(attr: str) -> Callable[[Any], Any]:
    return operator.attrgetter(attr)


def _g(name: str, help: str) -> Family:
    return Family(name, GAUGE, help)


def _c(name: str, help: str) -> Family:
    return Family(name, COUNTER, help)


def _col(number: int, name: str, syntax: str, unit: str = "") -> Column:
    return Column(number, name, syntax, unit)


def _text(value: Any) -> str:
    return str(value)


def _truth_text(value: bool) -> str:
    return str(value).lower()


def _label(name: str, attr: str, convert: Callable[[Any], str] = _text) -> Label:
    get = _getter(attr)
    return Label(name, lambda obj: convert(get(obj)))


INFO_FAMILIES: tuple[InfoFamily, ...] = (
    InfoFamily("domain", "state", _g("libvirt_domain_info", "Domain metadata as labels; the value is always 1."), (
        _label("os_type", "os_type"), _label("os_type_arch", "arch"), _label("os_type_machine", "machine"),
        _label("state_desc", "state", lambda s: STATE_DESCRIPTIONS.get(s, "no state")),
        _label("persistent", "persistent", _truth_text), _label("autostart", "autostart", _truth_text),
    )),
    InfoFamily("block", "block", _g("libvirt_domain_block_stats_info",
                                    "Block device metadata as labels; the value is always 1."), (
        _label("device", "device"), _label("disk_type", "disk_type"), _label("target_bus", "bus"),
        _label("source_file", "source"), _label("driver_type", "driver_type"),
    )),
    InfoFamily("interface", "interface", _g("libvirt_domain_interface_stats_info",
                                            "Network interface metadata as labels; the value is always 1."), (
        _label("mac_address", "mac"), _label("interface_type", "interface_type"),
        _label("source_bridge", "bridge"), _label("source_network", "network"), _label("model_type", "model"),
    )),
    InfoFamily("network", "network", _g("libvirt_network_info", "Network metadata as labels; the value is always 1."),
               (_label("bridge", "bridge"),)),
)

FIELDS: tuple[Field, ...] = (
    # domain: identity, state and definition
    Field("domain", "name", "text", "state", column=_col(2, "lvxDomainName", STR)),
    Field("domain", "uuid", "text", "state", column=_col(3, "lvxDomainUUID", STR)),
    Field("domain", "id", "code", "state", column=_col(4, "lvxDomainId", INT)),
    Field("domain", "state", "code", "state", _g(
        "libvirt_domain_state_code",
        "Domain state: 0 nostate, 1 running, 2 blocked, 3 paused, 4 shutdown, 5 shutoff, 6 crashed, 7 pmsuspended."),
        _col(5, "lvxDomainOperState", INT), "state.state"),
    Field("domain", "state_reason", "code", "state", _g(
        "libvirt_domain_state_reason_code", "libvirt's reason code for the current domain state."),
        _col(6, "lvxDomainStateReason", INT), "state.reason"),
    Field("domain", "persistent", "bool", "state", column=_col(7, "lvxDomainPersistent", INT)),
    Field("domain", "autostart", "bool", "state", column=_col(8, "lvxDomainAutostart", INT)),
    Field("domain", "max_memory_kib", "kib", "state", _g(
        "libvirt_domain_info_maximum_memory_bytes", "Maximum allowed memory of the domain, in bytes."),
        _col(12, "lvxDomainMemoryMax", G32), "balloon.maximum"),
    Field("domain", "memory_kib", "kib", "state", _g(
        "libvirt_domain_info_memory_usage_bytes", "Memory currently given to the domain (balloon size), in bytes."),
        _col(11, "lvxDomainMemory", G32), "balloon.current"),
    Field("domain", "vcpus_current", "count", "state", _g(
        "libvirt_domain_info_virtual_cpus", "Number of virtual CPUs currently online in the domain."),
        _col(9, "lvxDomainVcpus", U32), "vcpu.current"),
    Field("domain", "vcpus_max", "count", "state", _g(
        "libvirt_domain_vcpu_maximum", "Maximum number of virtual CPUs of the domain."),
        _col(10, "lvxDomainVcpusMax", U32), "vcpu.maximum"),
    Field("domain", "timed_out", "bool", "state", _g(
        "libvirt_domain_timed_out",
        "1 while the domain's stats call has run past libvirt.domain_timeout and not returned (a hung QEMU "
        "monitor): only its state and definition are served until it answers."),
        _col(33, "lvxDomainStatsTimedOut", INT)),
    Field("domain", "stats_at", "s", "state", _g(
        "libvirt_domain_stats_timestamp_seconds", "Unix time of the domain's last complete stats.")),
    # cpu
    Field("domain", "cpu_time_ns", "ns", "cpu", _c(
        "libvirt_domain_info_cpu_time_seconds_total", "CPU time used by the domain, in seconds."),
        _col(13, "lvxDomainCpuTime", C64), "cpu.time"),
    Field("domain", "cpu_user_ns", "ns", "cpu", _c(
        "libvirt_domain_cpu_user_seconds_total", "User-mode CPU time used by the domain's processes."),
        _col(14, "lvxDomainCpuUserTime", C64), "cpu.user"),
    Field("domain", "cpu_system_ns", "ns", "cpu", _c(
        "libvirt_domain_cpu_system_seconds_total", "Kernel-mode CPU time used by the domain's processes."),
        _col(15, "lvxDomainCpuSystemTime", C64), "cpu.system"),
    # vcpu
    Field("vcpu", "state", "code", "vcpu", _g(
        "libvirt_domain_vcpu_state", "vCPU state: 0 offline, 1 running, 2 blocked."),
        _col(2, "lvxVcpuState", INT), "state"),
    Field("vcpu", "time_ns", "ns", "vcpu", _c(
        "libvirt_domain_vcpu_time_seconds_total", "Time spent by the virtual CPU."),
        _col(3, "lvxVcpuTime", C64), "time"),
    Field("vcpu", "wait_ns", "ns", "vcpu", _c(
        "libvirt_domain_vcpu_wait_seconds_total",
        "Time the vCPU wanted to run but waited for I/O (from the bulk stats API)."),
        _col(5, "lvxVcpuWait", C64), "wait"),
    Field("vcpu", "delay_ns", "ns", "vcpu", _c(
        "libvirt_domain_vcpu_delay_seconds_total",
        "Time the vCPU was runnable but waited for a host CPU (steal time seen by the guest)."),
        _col(6, "lvxVcpuDelay", C64), "delay"),
    Field("vcpu", "physical_cpu", "code", "vcpu", _g(
        "libvirt_domain_vcpu_cpu", "Host CPU the vCPU is currently running on."), _col(4, "lvxVcpuPhysicalCpu", INT)),
    # balloon / memory stats (bulk keys under balloon.; virDomainMemoryStats has the same names)
    Field("domain", "memory.actual_kib", "kib", "balloon", _g(
        "libvirt_domain_memory_stats_actual_balloon_bytes", "Current balloon size, in bytes."),
        _col(16, "lvxDomainBalloonActual", G32), "balloon.current"),
    Field("domain", "memory.available_kib", "kib", "balloon", _g(
        "libvirt_domain_memory_stats_available_bytes", "Memory the guest sees as total, in bytes."),
        _col(17, "lvxDomainMemAvailable", G32), "balloon.available"),
    Field("domain", "memory.unused_kib", "kib", "balloon", _g(
        "libvirt_domain_memory_stats_unused_bytes", "Memory left completely unused by the guest, in bytes."),
        _col(18, "lvxDomainMemUnused", G32), "balloon.unused"),
    Field("domain", "memory.usable_kib", "kib", "balloon", _g(
        "libvirt_domain_memory_stats_usable_bytes",
        "Memory the guest can use without swapping (MemAvailable), in bytes."),
        _col(19, "lvxDomainMemUsable", G32), "balloon.usable"),
    Field("domain", "memory.rss_kib", "kib", "balloon", _g(
        "libvirt_domain_memory_stats_rss_bytes", "Resident set size of the domain's process on the host, in bytes."),
        _col(20, "lvxDomainMemRss", G32), "balloon.rss"),
    Field("domain", "memory.disk_caches_kib", "kib", "balloon", _g(
        "libvirt_domain_memory_stats_disk_cache_bytes", "Guest memory used by disk caches, in bytes."),
        _col(21, "lvxDomainMemDiskCaches", G32), "balloon.disk_caches"),
    Field("domain", "memory.swap_in_kib", "kib", "balloon", _c(
        "libvirt_domain_memory_stats_swap_in_bytes_total", "Data read from swap space by the guest, in bytes."),
        _col(22, "lvxDomainSwapIn", C64), "balloon.swap_in"),
    Field("domain", "memory.swap_out_kib", "kib", "balloon", _c(
        "libvirt_domain_memory_stats_swap_out_bytes_total", "Data written to swap space by the guest, in bytes."),
        _col(23, "lvxDomainSwapOut", C64), "balloon.swap_out"),
    Field("domain", "memory.major_faults", "count", "balloon", _c(
        "libvirt_domain_memory_stats_major_fault_total", "Page faults in the guest that needed disk I/O."),
        _col(24, "lvxDomainMajorFaults", C64), "balloon.major_fault"),
    Field("domain", "memory.minor_faults", "count", "balloon", _c(
        "libvirt_domain_memory_stats_minor_fault_total", "Page faults in the guest served without disk I/O."),
        _col(25, "lvxDomainMinorFaults", C64), "balloon.minor_fault"),
    Field("domain", "memory.hugetlb_pgalloc", "count", "balloon", _c(
        "libvirt_domain_memory_stats_hugetlb_pgalloc_total", "Successful huge page allocations in the guest."),
        _col(35, "lvxDomainHugetlbPgAlloc", C64), "balloon.hugetlb_pgalloc"),
    Field("domain", "memory.hugetlb_pgfail", "count", "balloon", _c(
        "libvirt_domain_memory_stats_hugetlb_pgfail_total", "Failed huge page allocations in the guest."),
        _col(36, "lvxDomainHugetlbPgFail", C64), "balloon.hugetlb_pgfail"),
    Field("domain", "memory.last_update_s", "s", "balloon", _g(
        "libvirt_domain_memory_stats_last_update_timestamp_seconds",
        "Guest timestamp of the last balloon statistics update."), bulk="balloon.last-update"),
    # block (bulk keys under block.N.)
    Field("block", "target", "text", "block", column=_col(2, "lvxBlockTarget", STR), bulk="name"),
    Field("block", "source", "text", "block", column=_col(3, "lvxBlockSource", STR), bulk="path"),
    Field("block", "bus", "text", "block", column=_col(4, "lvxBlockBus", STR)),
    Field("block", "driver_type", "text", "block", column=_col(5, "lvxBlockDriverType", STR)),
    Field("block", "read_requests", "count", "block", _c(
        "libvirt_domain_block_stats_read_requests_total", "Read requests from a block device."),
        _col(9, "lvxBlockReadRequests", C64), "rd.reqs"),
    Field("block", "read_bytes", "bytes", "block", _c(
        "libvirt_domain_block_stats_read_bytes_total", "Bytes read from a block device."),
        _col(10, "lvxBlockReadBytes", C64), "rd.bytes"),
    Field("block", "read_time_ns", "ns", "block", _c(
        "libvirt_domain_block_stats_read_time_seconds_total", "Time spent on reads from a block device."),
        _col(11, "lvxBlockReadTime", C64), "rd.times"),
    Field("block", "write_requests", "count", "block", _c(
        "libvirt_domain_block_stats_write_requests_total", "Write requests to a block device."),
        _col(12, "lvxBlockWriteRequests", C64), "wr.reqs"),
    Field("block", "write_bytes", "bytes", "block", _c(
        "libvirt_domain_block_stats_write_bytes_total", "Bytes written to a block device."),
        _col(13, "lvxBlockWriteBytes", C64), "wr.bytes"),
    Field("block", "write_time_ns", "ns", "block", _c(
        "libvirt_domain_block_stats_write_time_seconds_total", "Time spent on writes to a block device."),
        _col(14, "lvxBlockWriteTime", C64), "wr.times"),
    Field("block", "flush_requests", "count", "block", _c(
        "libvirt_domain_block_stats_flush_requests_total", "Flush requests to a block device."),
        _col(15, "lvxBlockFlushRequests", C64), "fl.reqs"),
    Field("block", "flush_time_ns", "ns", "block", _c(
        "libvirt_domain_block_stats_flush_time_seconds_total", "Time spent on flushes to a block device."),
        _col(16, "lvxBlockFlushTime", C64), "fl.times"),
    Field("block", "errors", "count", "block", _c(
        "libvirt_domain_block_stats_errors_total", "I/O errors on a block device (drivers that count them)."),
        _col(17, "lvxBlockErrors", C64)),
    Field("block", "capacity_bytes", "bytes", "block", _g(
        "libvirt_domain_block_stats_capacity_bytes", "Logical size of the block device, in bytes."),
        _col(6, "lvxBlockCapacity", C64), "capacity"),
    Field("block", "allocation_bytes", "bytes", "block", _g(
        "libvirt_domain_block_stats_allocation_bytes", "Bytes of the device's image actually allocated."),
        _col(7, "lvxBlockAllocation", C64), "allocation"),
    Field("block", "physical_bytes", "bytes", "block", _g(
        "libvirt_domain_block_stats_physical_bytes", "Physical size of the device's backing file, in bytes."),
        _col(8, "lvxBlockPhysical", C64), "physical"),
    # interface (bulk keys under net.N.)
    Field("interface", "target", "text", "interface", column=_col(2, "lvxInterfaceTarget", STR), bulk="name"),
    Field("interface", "model", "text", "interface", column=_col(4, "lvxInterfaceModel", STR)),
    Field("interface", "interface_type", "text", "interface", column=_col(5, "lvxInterfaceType", STR)),
    Field("interface", "receive_bytes", "bytes", "interface", _c(
        "libvirt_domain_interface_stats_receive_bytes_total", "Bytes received on a network interface."),
        _col(7, "lvxInterfaceReceiveBytes", C64), "rx.bytes"),
    Field("interface", "receive_packets", "count", "interface", _c(
        "libvirt_domain_interface_stats_receive_packets_total", "Packets received on a network interface."),
        _col(8, "lvxInterfaceReceivePackets", C64), "rx.pkts"),
    Field("interface", "receive_errors", "count", "interface", _c(
        "libvirt_domain_interface_stats_receive_errors_total", "Receive errors on a network interface."),
        _col(9, "lvxInterfaceReceiveErrors", C64), "rx.errs"),
    Field("interface", "receive_drops", "count", "interface", _c(
        "libvirt_domain_interface_stats_receive_drops_total", "Received packets dropped on a network interface."),
        _col(10, "lvxInterfaceReceiveDrops", C64), "rx.drop"),
    Field("interface", "transmit_bytes", "bytes", "interface", _c(
        "libvirt_domain_interface_stats_transmit_bytes_total", "Bytes transmitted on a network interface."),
        _col(11, "lvxInterfaceTransmitBytes", C64), "tx.bytes"),
    Field("interface", "transmit_packets", "count", "interface", _c(
        "libvirt_domain_interface_stats_transmit_packets_total", "Packets transmitted on a network interface."),
        _col(12, "lvxInterfaceTransmitPackets", C64), "tx.pkts"),
    Field("interface", "transmit_errors", "count", "interface", _c(
        "libvirt_domain_interface_stats_transmit_errors_total", "Transmit errors on a network interface."),
        _col(13, "lvxInterfaceTransmitErrors", C64), "tx.errs"),
    Field("interface", "transmit_drops", "count", "interface", _c(
        "libvirt_domain_interface_stats_transmit_drops_total", "Transmitted packets dropped on a network interface."),
        _col(14, "lvxInterfaceTransmitDrops", C64), "tx.drop"),
    # host (lvxHost scalars)
    Field("host", "hostname", "text", "node", column=_col(4, "lvxHostName", STR)),
    Field("host", "cpus", "count", "node", _g("libvirt_node_cpus", "Logical CPUs of the host."),
          _col(5, "lvxHostCpus", U32)),
    Field("host", "cpu_mhz", "mhz", "node", _g(
        "libvirt_node_cpu_frequency_hertz", "Host CPU frequency as reported by libvirt.")),
    Field("host", "memory_total_bytes", "bytes", "node", _g("libvirt_node_memory_total_bytes", "Host memory in total."),
          _col(6, "lvxHostMemoryTotal", G32, "kib")),
    Field("host", "memory_free_bytes", "bytes", "node", _g(
        "libvirt_node_memory_free_bytes", "Host memory free, including buffers and page cache."),
        _col(7, "lvxHostMemoryFree", G32, "kib")),
    # storage pools
    Field("pool", "name", "text", "pool", column=_col(2, "lvxPoolName", STR)),
    Field("pool", "uuid", "text", "pool", column=_col(3, "lvxPoolUUID", STR)),
    Field("pool", "state", "code", "pool", _g(
        "libvirt_storage_pool_state", "Storage pool state: 0 inactive, 1 building, 2 running, 3 degraded, "
        "4 inaccessible."), _col(4, "lvxPoolState", INT)),
    Field("pool", "capacity_bytes", "bytes", "pool", _g("libvirt_storage_pool_capacity_bytes",
                                                        "Size of the storage pool."), _col(6, "lvxPoolCapacity", C64)),
    Field("pool", "allocation_bytes", "bytes", "pool", _g(
        "libvirt_storage_pool_allocation_bytes", "Bytes allocated in the storage pool."),
        _col(7, "lvxPoolAllocation", C64)),
    Field("pool", "available_bytes", "bytes", "pool", _g(
        "libvirt_storage_pool_available_bytes", "Free space in the storage pool."), _col(8, "lvxPoolAvailable", C64)),
    Field("pool", "autostart", "bool", "pool", _g("libvirt_storage_pool_autostart",
                                                  "1 if the pool starts with libvirtd."),
          _col(5, "lvxPoolAutostart", INT)),
    # networks
    Field("network", "name", "text", "network", column=_col(2, "lvxNetworkName", STR)),
    Field("network", "uuid", "text", "network", column=_col(3, "lvxNetworkUUID", STR)),
    Field("network", "active", "bool", "network", _g("libvirt_network_active", "1 if the virtual network is active."),
          _col(4, "lvxNetworkActive", INT)),
    Field("network", "autostart", "bool", "network", _g(
        "libvirt_network_autostart", "1 if the network starts with libvirtd."), _col(5, "lvxNetworkAutostart", INT)),
    Field("network", "bridge", "text", "network", column=_col(6, "lvxNetworkBridge", STR)),
)


def of_table(table: str) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.table == table)


def families() -> Iterator[tuple[str, Family, tuple[str, ...]]]:
    """(group, family, labels) of every family the table declares, in :data:`FIELDS` order, each info family
    (with its extra labels) just before the first family of its table."""
    seen: set[str] = set()
    for f in FIELDS:
        if f.family is None:
            continue
        if f.table not in seen:
            seen.add(f.table)
            for info in INFO_FAMILIES:
                if info.table == f.table:
                    yield info.group, info.family, TABLES[f.table].labels + tuple(lb.name for lb in info.labels)
        yield f.group, f.family, TABLES[f.table].labels
