"""The field table: every value the snapshot holds per domain, vCPU, device, pool, network and host, with how
each front end shows it.

One row (:class:`~exporter.fieldtypes.Field`) says where a value lives in the snapshot and in which unit,
which libvirt bulk-stats key it comes from, its Prometheus family (name, type, help; the labels follow from
the table it belongs to) and its ``LIBVIRT-EXPORTER-MIB`` column (number, name, syntax and the unit the MIB
gives it).  The Prometheus
renderer, the LVX tables (exporter/snmp/mib_lvx.py), the bulk-stats parsers, the README's metrics table and
the tests that hold SNMP against ``/metrics`` all read it.  LIBVIRT-MIB and VM-MIB, whose units and indexes
differ, keep their own explicit mapping (exporter/snmp/mib_libvirt.py, mib_vm.py) from the same snapshot
attributes.

Adding a numeric field to both front ends is: the snapshot attribute, one row here, one object in the MIB
text (mibs/LIBVIRT-EXPORTER-MIB.txt), and its tests.
"""

from __future__ import annotations

from collections.abc import Iterator

from exporter.domstats import cpulist_text
from exporter.fieldrows import job_fields, limit_fields, perf_fields
from exporter.fieldtypes import (
    Family,
    Field,
    InfoFamily,
    Table,
    column,
    counter,
    gauge,
    getter,
    label,
    truth_text,
)
from exporter.snapshot import STATE_DESCRIPTIONS
from exporter.snmp.syntax import C64, G32, INT, STR, U32

_DOMAIN = ("domain", "uuid")
TABLES: dict[str, Table] = {
    "domain": Table(_DOMAIN),
    "vcpu": Table(_DOMAIN + ("vcpu",), "vcpu.{n}."),
    "block": Table(_DOMAIN + ("target_device",), "block.{n}."),
    "interface": Table(_DOMAIN + ("target_device",), "net.{n}."),
    "job": Table(_DOMAIN),  # a domain's job and last job: read from the domain, a row only while it has either
    "perf": Table(_DOMAIN),  # a domain's perf events: read from the domain, a row only while some are enabled
    "iothread": Table(_DOMAIN + ("iothread",)),
    "pin": Table(_DOMAIN + ("vcpu",)),  # each vCPU's host CPUs (exporter.domstats.VcpuPin)
    "pool": Table(("storage_pool", "uuid")),
    "network": Table(("network", "uuid")),
    "host": Table(()),
}


OPENSTACK = InfoFamily("domain", "state", gauge(
    "libvirt_domain_openstack_info", "OpenStack Nova's metadata of the domain as labels; the value is always 1."), (
    label("instance_name", "nova.name"), label("instance_id", "uuid"), label("flavor_name", "nova.flavor"),
    label("user_name", "nova.user_name"), label("user_id", "nova.user_id"),
    label("project_name", "nova.project_name"), label("project_id", "nova.project_id"),
), present=lambda dom: dom.nova is not None)

INFO_FAMILIES: tuple[InfoFamily, ...] = (
    InfoFamily("domain", "state", gauge("libvirt_domain_info", "Domain metadata as labels; the value is always 1."), (
        label("os_type", "os_type"), label("os_type_arch", "arch"), label("os_type_machine", "machine"),
        label("state_desc", "state", lambda s: STATE_DESCRIPTIONS.get(s, "no state")),
        label("persistent", "persistent", truth_text), label("autostart", "autostart", truth_text),
    )),
    OPENSTACK,
    InfoFamily("block", "block", gauge("libvirt_domain_block_stats_info",
                                    "Block device metadata as labels; the value is always 1."), (
        label("device", "device"), label("disk_type", "disk_type"), label("target_bus", "bus"),
        label("source_file", "source"), label("driver_type", "driver_type"),
        # inovex's further labels: a Cinder volume's id, the cache and discard modes, rbd/iscsi/...
        label("serial", "serial"), label("driver_name", "driver_name"), label("driver_cache", "cache"),
        label("driver_discard", "discard"), label("source_protocol", "protocol"),
    )),
    InfoFamily("interface", "interface", gauge("libvirt_domain_interface_stats_info",
                                            "Network interface metadata as labels; the value is always 1."), (
        label("mac_address", "mac"), label("interface_type", "interface_type"),
        label("source_bridge", "bridge"), label("source_network", "network"), label("model_type", "model"),
        # inovex's MTU, and Open vSwitch's interface id: the Neutron port's id under OpenStack
        label("mtu_size", "mtu", lambda mtu: "" if mtu is None else str(mtu)),
        label("virtual_interface", "virtual_interface"),
    )),
    InfoFamily("network", "network", gauge(
        "libvirt_network_info", "Network metadata as labels; the value is always 1."), (label("bridge", "bridge"),)),
    InfoFamily("pin", "pinning", gauge(
        "libvirt_domain_vcpu_pinning_info",
        "The host CPUs a vCPU may run on (its pinning), as a cpuset list; the value is always 1."), (
        label("cpus", "cpus", cpulist_text),)),
    # --collector.inovex: inovex's name for libvirt_domain_state_code, with libvirt_domain_info's state_desc
    InfoFamily("domain", "inovex", gauge(
        "libvirt_domain_info_state",
        "Domain state code with its description as a label (inovex's name for libvirt_domain_state_code)."), (
        label("state_desc", "state", lambda s: STATE_DESCRIPTIONS.get(s, "")),), value=getter("state")),
)

FIELDS: tuple[Field, ...] = (
    # domain: identity, state and definition
    Field("domain", "name", "text", "state", column=column(2, "lvxDomainName", STR)),
    Field("domain", "uuid", "text", "state", column=column(3, "lvxDomainUUID", STR)),
    Field("domain", "id", "code", "state", column=column(4, "lvxDomainId", INT)),
    Field("domain", "state", "code", "state", gauge(
        "libvirt_domain_state_code",
        "Domain state: 0 nostate, 1 running, 2 blocked, 3 paused, 4 shutdown, 5 shutoff, 6 crashed, 7 pmsuspended."),
        column(5, "lvxDomainOperState", INT), "state.state"),
    Field("domain", "state_reason", "code", "state", gauge(
        "libvirt_domain_state_reason_code", "libvirt's reason code for the current domain state."),
        column(6, "lvxDomainStateReason", INT), "state.reason"),
    Field("domain", "persistent", "bool", "state", column=column(7, "lvxDomainPersistent", INT)),
    Field("domain", "autostart", "bool", "state", column=column(8, "lvxDomainAutostart", INT)),
    Field("domain", "max_memory_kib", "kib", "state", gauge(
        "libvirt_domain_info_maximum_memory_bytes", "Maximum allowed memory of the domain, in bytes."),
        column(12, "lvxDomainMemoryMax", G32), "balloon.maximum"),
    Field("domain", "memory_kib", "kib", "state", gauge(
        "libvirt_domain_info_memory_usage_bytes", "Memory currently given to the domain (balloon size), in bytes."),
        column(11, "lvxDomainMemory", G32), "balloon.current"),
    Field("domain", "vcpus_current", "count", "state", gauge(
        "libvirt_domain_info_virtual_cpus", "Number of virtual CPUs currently online in the domain."),
        column(9, "lvxDomainVcpus", U32), "vcpu.current"),
    Field("domain", "vcpus_max", "count", "state", gauge(
        "libvirt_domain_vcpu_maximum", "Maximum number of virtual CPUs of the domain."),
        column(10, "lvxDomainVcpusMax", U32), "vcpu.maximum"),
    Field("domain", "timed_out", "bool", "state", gauge(
        "libvirt_domain_timed_out",
        "1 while the domain's stats call has run past libvirt.domain_timeout and not returned (a hung QEMU "
        "monitor): only its state and definition are served until it answers."),
        column(33, "lvxDomainStatsTimedOut", INT)),
    Field("domain", "stats_at", "s", "state", gauge(
        "libvirt_domain_stats_timestamp_seconds", "Unix time of the domain's last complete stats.")),
    # cpu
    Field("domain", "cpu_time_ns", "ns", "cpu", counter(
        "libvirt_domain_info_cpu_time_seconds_total", "CPU time used by the domain, in seconds."),
        column(13, "lvxDomainCpuTime", C64), "cpu.time"),
    Field("domain", "cpu_user_ns", "ns", "cpu", counter(
        "libvirt_domain_cpu_user_seconds_total", "User-mode CPU time used by the domain's processes."),
        column(14, "lvxDomainCpuUserTime", C64), "cpu.user"),
    Field("domain", "cpu_system_ns", "ns", "cpu", counter(
        "libvirt_domain_cpu_system_seconds_total", "Kernel-mode CPU time used by the domain's processes."),
        column(15, "lvxDomainCpuSystemTime", C64), "cpu.system"),
    # vcpu
    Field("vcpu", "state", "code", "vcpu", gauge(
        "libvirt_domain_vcpu_state", "vCPU state: 0 offline, 1 running, 2 blocked."),
        column(2, "lvxVcpuState", INT), "state"),
    Field("vcpu", "time_ns", "ns", "vcpu", counter(
        "libvirt_domain_vcpu_time_seconds_total", "Time spent by the virtual CPU."),
        column(3, "lvxVcpuTime", C64), "time"),
    Field("vcpu", "wait_ns", "ns", "vcpu", counter(
        "libvirt_domain_vcpu_wait_seconds_total",
        "Time the vCPU wanted to run but waited for I/O (from the bulk stats API)."),
        column(5, "lvxVcpuWait", C64), "wait"),
    Field("vcpu", "delay_ns", "ns", "vcpu", counter(
        "libvirt_domain_vcpu_delay_seconds_total",
        "Time the vCPU was runnable but waited for a host CPU (steal time seen by the guest)."),
        column(6, "lvxVcpuDelay", C64), "delay"),
    Field("vcpu", "physical_cpu", "code", "vcpu", gauge(
        "libvirt_domain_vcpu_cpu", "Host CPU the vCPU is currently running on."), column(4, "lvxVcpuPhysicalCpu", INT)),
    # balloon / memory stats (bulk keys under balloon.; virDomainMemoryStats has the same names)
    Field("domain", "memory.actual_kib", "kib", "balloon", gauge(
        "libvirt_domain_memory_stats_actual_balloon_bytes", "Current balloon size, in bytes."),
        column(16, "lvxDomainBalloonActual", G32), "balloon.current"),
    Field("domain", "memory.available_kib", "kib", "balloon", gauge(
        "libvirt_domain_memory_stats_available_bytes", "Memory the guest sees as total, in bytes."),
        column(17, "lvxDomainMemAvailable", G32), "balloon.available"),
    Field("domain", "memory.unused_kib", "kib", "balloon", gauge(
        "libvirt_domain_memory_stats_unused_bytes", "Memory left completely unused by the guest, in bytes."),
        column(18, "lvxDomainMemUnused", G32), "balloon.unused"),
    Field("domain", "memory.usable_kib", "kib", "balloon", gauge(
        "libvirt_domain_memory_stats_usable_bytes",
        "Memory the guest can use without swapping (MemAvailable), in bytes."),
        column(19, "lvxDomainMemUsable", G32), "balloon.usable"),
    Field("domain", "memory.rss_kib", "kib", "balloon", gauge(
        "libvirt_domain_memory_stats_rss_bytes", "Resident set size of the domain's process on the host, in bytes."),
        column(20, "lvxDomainMemRss", G32), "balloon.rss"),
    # inovex's name and formula; derived from two columns the MIB has (lvxDomainMemAvailable, lvxDomainMemUsable)
    Field("domain", "memory.used_percent", "percent", "balloon", gauge(
        "libvirt_domain_memory_stats_used_percent",
        "Share of the guest's memory it cannot use without swapping: (available - usable) / available, in percent."),
        column(42, "lvxDomainMemUsedPercent", G32)),
    Field("domain", "memory.disk_caches_kib", "kib", "balloon", gauge(
        "libvirt_domain_memory_stats_disk_cache_bytes", "Guest memory used by disk caches, in bytes."),
        column(21, "lvxDomainMemDiskCaches", G32), "balloon.disk_caches"),
    Field("domain", "memory.swap_in_kib", "kib", "balloon", counter(
        "libvirt_domain_memory_stats_swap_in_bytes_total", "Data read from swap space by the guest, in bytes."),
        column(22, "lvxDomainSwapIn", C64), "balloon.swap_in"),
    Field("domain", "memory.swap_out_kib", "kib", "balloon", counter(
        "libvirt_domain_memory_stats_swap_out_bytes_total", "Data written to swap space by the guest, in bytes."),
        column(23, "lvxDomainSwapOut", C64), "balloon.swap_out"),
    Field("domain", "memory.major_faults", "count", "balloon", counter(
        "libvirt_domain_memory_stats_major_fault_total", "Page faults in the guest that needed disk I/O."),
        column(24, "lvxDomainMajorFaults", C64), "balloon.major_fault"),
    Field("domain", "memory.minor_faults", "count", "balloon", counter(
        "libvirt_domain_memory_stats_minor_fault_total", "Page faults in the guest served without disk I/O."),
        column(25, "lvxDomainMinorFaults", C64), "balloon.minor_fault"),
    Field("domain", "memory.hugetlb_pgalloc", "count", "balloon", counter(
        "libvirt_domain_memory_stats_hugetlb_pgalloc_total", "Successful huge page allocations in the guest."),
        column(35, "lvxDomainHugetlbPgAlloc", C64), "balloon.hugetlb_pgalloc"),
    Field("domain", "memory.hugetlb_pgfail", "count", "balloon", counter(
        "libvirt_domain_memory_stats_hugetlb_pgfail_total", "Failed huge page allocations in the guest."),
        column(36, "lvxDomainHugetlbPgFail", C64), "balloon.hugetlb_pgfail"),
    # vCPU halt polling (KVM's halt_poll_*_ns, summed over the vCPUs; with the cpu group's bulk keys)
    Field("domain", "haltpoll_success_ns", "ns", "haltpoll", counter(
        "libvirt_domain_cpu_haltpoll_success_seconds_total",
        "Time the vCPUs spent polling before halting, where polling found work."),
        column(37, "lvxDomainHaltPollSuccess", C64), "cpu.haltpoll.success.time"),
    Field("domain", "haltpoll_fail_ns", "ns", "haltpoll", counter(
        "libvirt_domain_cpu_haltpoll_fail_seconds_total",
        "Time the vCPUs spent polling before halting, where polling found no work."),
        column(38, "lvxDomainHaltPollFail", C64), "cpu.haltpoll.fail.time"),
    # dirty rate of the guest's memory (the DIRTYRATE group: a calculation's outcome)
    Field("domain", "dirty_rate.calc_status", "code", "dirtyrate", gauge(
        "libvirt_domain_dirty_rate_calc_status",
        "State of the domain's last dirty-rate calculation: 0 never started, 1 measuring, 2 measured."),
        column(39, "lvxDomainDirtyRateStatus", INT), "dirtyrate.calc_status"),
    Field("domain", "dirty_rate.calc_period", "s", "dirtyrate", gauge(
        "libvirt_domain_dirty_rate_calc_period_seconds", "How long the last dirty-rate calculation measured."),
        column(40, "lvxDomainDirtyRatePeriod", G32), "dirtyrate.calc_period"),
    Field("domain", "dirty_rate.megabytes_per_second", "mib", "dirtyrate", gauge(
        "libvirt_domain_dirty_rate_bytes_per_second",
        "Guest memory dirtied per second, as the last dirty-rate calculation measured it."),
        column(41, "lvxDomainDirtyRate", G32), "dirtyrate.megabytes_per_second"),
    Field("domain", "memory.last_update_s", "s", "balloon", gauge(
        "libvirt_domain_memory_stats_last_update_timestamp_seconds",
        "Guest timestamp of the last balloon statistics update."), bulk="balloon.last-update"),
    # block (bulk keys under block.N.)
    Field("block", "target", "text", "block", column=column(2, "lvxBlockTarget", STR), bulk="name"),
    Field("block", "source", "text", "block", column=column(3, "lvxBlockSource", STR), bulk="path"),
    Field("block", "bus", "text", "block", column=column(4, "lvxBlockBus", STR)),
    Field("block", "driver_type", "text", "block", column=column(5, "lvxBlockDriverType", STR)),
    Field("block", "serial", "text", "block", column=column(18, "lvxBlockSerial", STR)),
    Field("block", "cache", "text", "block", column=column(19, "lvxBlockCache", STR)),
    Field("block", "discard", "text", "block", column=column(20, "lvxBlockDiscard", STR)),
    Field("block", "protocol", "text", "block", column=column(21, "lvxBlockProtocol", STR)),
    Field("block", "read_requests", "count", "block", counter(
        "libvirt_domain_block_stats_read_requests_total", "Read requests from a block device."),
        column(9, "lvxBlockReadRequests", C64), "rd.reqs"),
    Field("block", "read_bytes", "bytes", "block", counter(
        "libvirt_domain_block_stats_read_bytes_total", "Bytes read from a block device."),
        column(10, "lvxBlockReadBytes", C64), "rd.bytes"),
    Field("block", "read_time_ns", "ns", "block", counter(
        "libvirt_domain_block_stats_read_time_seconds_total", "Time spent on reads from a block device."),
        column(11, "lvxBlockReadTime", C64), "rd.times"),
    Field("block", "write_requests", "count", "block", counter(
        "libvirt_domain_block_stats_write_requests_total", "Write requests to a block device."),
        column(12, "lvxBlockWriteRequests", C64), "wr.reqs"),
    Field("block", "write_bytes", "bytes", "block", counter(
        "libvirt_domain_block_stats_write_bytes_total", "Bytes written to a block device."),
        column(13, "lvxBlockWriteBytes", C64), "wr.bytes"),
    Field("block", "write_time_ns", "ns", "block", counter(
        "libvirt_domain_block_stats_write_time_seconds_total", "Time spent on writes to a block device."),
        column(14, "lvxBlockWriteTime", C64), "wr.times"),
    Field("block", "flush_requests", "count", "block", counter(
        "libvirt_domain_block_stats_flush_requests_total", "Flush requests to a block device."),
        column(15, "lvxBlockFlushRequests", C64), "fl.reqs"),
    Field("block", "flush_time_ns", "ns", "block", counter(
        "libvirt_domain_block_stats_flush_time_seconds_total", "Time spent on flushes to a block device."),
        column(16, "lvxBlockFlushTime", C64), "fl.times"),
    Field("block", "errors", "count", "block", counter(
        "libvirt_domain_block_stats_errors_total", "I/O errors on a block device (drivers that count them)."),
        column(17, "lvxBlockErrors", C64)),
    Field("block", "capacity_bytes", "bytes", "block", gauge(
        "libvirt_domain_block_stats_capacity_bytes", "Logical size of the block device, in bytes."),
        column(6, "lvxBlockCapacity", C64), "capacity"),
    Field("block", "allocation_bytes", "bytes", "block", gauge(
        "libvirt_domain_block_stats_allocation_bytes", "Bytes of the device's image actually allocated."),
        column(7, "lvxBlockAllocation", C64), "allocation"),
    Field("block", "physical_bytes", "bytes", "block", gauge(
        "libvirt_domain_block_stats_physical_bytes", "Physical size of the device's backing file, in bytes."),
        column(8, "lvxBlockPhysical", C64), "physical"),
    Field("block", "error_code", "code", "block", gauge(
        "libvirt_domain_block_stats_error_code",
        "The disk's error while its error policy has paused the guest: 0 none, 1 unspecified, 2 no space."),
        column(22, "lvxBlockErrorCode", INT)),
    # iothread (bulk keys under iothread.<id>.)
    Field("iothread", "poll_max_ns", "ns", "iothread", gauge(
        "libvirt_domain_iothread_poll_max_seconds",
        "Longest time the I/O thread polls for new work before it sleeps (0: polling off)."),
        column(2, "lvxIoThreadPollMax", G32), "poll-max-ns"),
    Field("iothread", "poll_grow", "count", "iothread", gauge(
        "libvirt_domain_iothread_poll_grow", "Factor by which the I/O thread's polling time grows (0: QEMU's)."),
        column(3, "lvxIoThreadPollGrow", G32), "poll-grow"),
    Field("iothread", "poll_shrink", "count", "iothread", gauge(
        "libvirt_domain_iothread_poll_shrink",
        "Divisor by which the I/O thread's polling time shrinks (0: QEMU's)."),
        column(4, "lvxIoThreadPollShrink", G32), "poll-shrink"),
) + limit_fields() + job_fields() + perf_fields() + (
    Field("block", "iotune.size_iops_sec", "bytes", "block", gauge(
        "libvirt_domain_block_stats_size_iops_bytes",
        "Size of an I/O counted as one request by the requests limits, in bytes (0: every I/O is one)."),
        column(41, "lvxBlockLimitSizeIops", G32)),
    # interface (bulk keys under net.N.)
    Field("interface", "target", "text", "interface", column=column(2, "lvxInterfaceTarget", STR), bulk="name"),
    Field("interface", "model", "text", "interface", column=column(4, "lvxInterfaceModel", STR)),
    Field("interface", "interface_type", "text", "interface", column=column(5, "lvxInterfaceType", STR)),
    Field("interface", "mtu", "count", "interface", column=column(15, "lvxInterfaceMtu", U32)),
    Field("interface", "virtual_interface", "text", "interface", column=column(16, "lvxInterfaceVirtualPort", STR)),
    Field("interface", "receive_bytes", "bytes", "interface", counter(
        "libvirt_domain_interface_stats_receive_bytes_total", "Bytes received on a network interface."),
        column(7, "lvxInterfaceReceiveBytes", C64), "rx.bytes"),
    Field("interface", "receive_packets", "count", "interface", counter(
        "libvirt_domain_interface_stats_receive_packets_total", "Packets received on a network interface."),
        column(8, "lvxInterfaceReceivePackets", C64), "rx.pkts"),
    Field("interface", "receive_errors", "count", "interface", counter(
        "libvirt_domain_interface_stats_receive_errors_total", "Receive errors on a network interface."),
        column(9, "lvxInterfaceReceiveErrors", C64), "rx.errs"),
    Field("interface", "receive_drops", "count", "interface", counter(
        "libvirt_domain_interface_stats_receive_drops_total", "Received packets dropped on a network interface."),
        column(10, "lvxInterfaceReceiveDrops", C64), "rx.drop"),
    Field("interface", "transmit_bytes", "bytes", "interface", counter(
        "libvirt_domain_interface_stats_transmit_bytes_total", "Bytes transmitted on a network interface."),
        column(11, "lvxInterfaceTransmitBytes", C64), "tx.bytes"),
    Field("interface", "transmit_packets", "count", "interface", counter(
        "libvirt_domain_interface_stats_transmit_packets_total", "Packets transmitted on a network interface."),
        column(12, "lvxInterfaceTransmitPackets", C64), "tx.pkts"),
    Field("interface", "transmit_errors", "count", "interface", counter(
        "libvirt_domain_interface_stats_transmit_errors_total", "Transmit errors on a network interface."),
        column(13, "lvxInterfaceTransmitErrors", C64), "tx.errs"),
    Field("interface", "transmit_drops", "count", "interface", counter(
        "libvirt_domain_interface_stats_transmit_drops_total", "Transmitted packets dropped on a network interface."),
        column(14, "lvxInterfaceTransmitDrops", C64), "tx.drop"),
    # host (lvxHost scalars)
    Field("host", "hostname", "text", "node", column=column(4, "lvxHostName", STR)),
    Field("host", "cpus", "count", "node", gauge("libvirt_node_cpus", "Logical CPUs of the host."),
          column(5, "lvxHostCpus", U32)),
    Field("host", "cpu_mhz", "mhz", "node", gauge(
        "libvirt_node_cpu_frequency_hertz", "Host CPU frequency as reported by libvirt.")),
    Field("host", "memory_total_bytes", "bytes", "node", gauge(
        "libvirt_node_memory_total_bytes", "Host memory in total."), column(6, "lvxHostMemoryTotal", G32, "kib")),
    Field("host", "memory_free_bytes", "bytes", "node", gauge(
        "libvirt_node_memory_free_bytes", "Host memory free, including buffers and page cache."),
        column(7, "lvxHostMemoryFree", G32, "kib")),
    # storage pools
    Field("pool", "name", "text", "pool", column=column(2, "lvxPoolName", STR)),
    Field("pool", "uuid", "text", "pool", column=column(3, "lvxPoolUUID", STR)),
    Field("pool", "state", "code", "pool", gauge(
        "libvirt_storage_pool_state", "Storage pool state: 0 inactive, 1 building, 2 running, 3 degraded, "
        "4 inaccessible."), column(4, "lvxPoolState", INT)),
    Field("pool", "capacity_bytes", "bytes", "pool", gauge(
        "libvirt_storage_pool_capacity_bytes", "Size of the storage pool."), column(6, "lvxPoolCapacity", C64)),
    Field("pool", "allocation_bytes", "bytes", "pool", gauge(
        "libvirt_storage_pool_allocation_bytes", "Bytes allocated in the storage pool."),
        column(7, "lvxPoolAllocation", C64)),
    Field("pool", "available_bytes", "bytes", "pool", gauge(
        "libvirt_storage_pool_available_bytes", "Free space in the storage pool."), column(8, "lvxPoolAvailable", C64)),
    Field("pool", "autostart", "bool", "pool", gauge("libvirt_storage_pool_autostart",
                                                  "1 if the pool starts with libvirtd."),
          column(5, "lvxPoolAutostart", INT)),
    # networks
    Field("network", "name", "text", "network", column=column(2, "lvxNetworkName", STR)),
    Field("network", "uuid", "text", "network", column=column(3, "lvxNetworkUUID", STR)),
    Field("network", "active", "bool", "network", gauge(
        "libvirt_network_active", "1 if the virtual network is active."), column(4, "lvxNetworkActive", INT)),
    Field("network", "autostart", "bool", "network", gauge(
        "libvirt_network_autostart", "1 if the network starts with libvirtd."), column(5, "lvxNetworkAutostart", INT)),
    Field("network", "bridge", "text", "network", column=column(6, "lvxNetworkBridge", STR)),
) + (
    # --collector.inovex (off by default): inovex's names for values exported above under ours, which follow the
    # naming guide (_total on counters) or kumina's names.  No bulk key or column: each reads a field above.
    Field("domain", "vcpus_current", "count", "inovex", gauge(
        "libvirt_domain_vcpu_current", "Number of virtual CPUs online (inovex's name for "
        "libvirt_domain_info_virtual_cpus).")),
    Field("domain", "max_memory_kib", "kib", "inovex", gauge(
        "libvirt_domain_memory_stats_maximum_bytes", "Maximum memory of the domain, in bytes (inovex's name for "
        "libvirt_domain_info_maximum_memory_bytes).")),
    Field("domain", "memory.swap_in_kib", "kib", "inovex", gauge(
        "libvirt_domain_memory_stats_swap_in_bytes", "Data read from swap space by the guest, in bytes, a gauge "
        "as inovex has it (libvirt_domain_memory_stats_swap_in_bytes_total is the counter).")),
    Field("domain", "memory.swap_out_kib", "kib", "inovex", gauge(
        "libvirt_domain_memory_stats_swap_out_bytes", "Data written to swap space by the guest, in bytes, a gauge "
        "as inovex has it (libvirt_domain_memory_stats_swap_out_bytes_total is the counter).")),
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
    for info in INFO_FAMILIES:  # the tables with no numbers, only an info family
        if info.table not in seen:
            yield info.group, info.family, TABLES[info.table].labels + tuple(lb.name for lb in info.labels)
