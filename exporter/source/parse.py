"""Pure parsers: what libvirt answers, turned into :mod:`exporter.snapshot` values.

Two kinds of answer are read here:

- a bulk-stats record, one domain's dict from ``getAllDomainStats`` or
  ``domainListGetStats`` (keys ``state.*``, ``cpu.*``, ``balloon.*``,
  ``vcpu.*``, ``block.N.*``, ``net.N.*``);
- the results of the older per-domain and node calls (``info()``,
  ``vcpus()``, ``blockStats()``, ``blockInfo()``, ``interfaceStats()``,
  ``memoryStats()``, ``getCPUStats()``, the node's ``getInfo()`` ...), as the
  tuples, lists and dicts libvirt-python returns.

Nothing here imports libvirt or makes a call: every function takes plain
dicts, sequences and ints, so recorded answers (tests/data/) can be fed in.
A value libvirt did not report stays ``None``, never 0.  Units: the bulk keys
and the calls give nanoseconds, KiB (memory) and bytes (devices) as the
snapshot stores them; node memory comes in KiB and is stored in bytes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from exporter import fields
from exporter.domstats import parse_cpuset
from exporter.snapshot import (
    NO_DIRTY_RATE,
    NO_JOB,
    NO_PERF,
    Block,
    DirtyRate,
    Host,
    Interface,
    IoThread,
    IoTune,
    Job,
    Memory,
    Perf,
    Vcpu,
    VcpuPin,
    frozen_map,
)
from exporter.source.domxml import DomainConfig

T = TypeVar("T")

#: One domain's bulk-stats record: libvirt's typed parameters as a dict.
Stats = Mapping[str, Any]
#: A vCPU's (state, cpu time in ns, physical CPU or -1) by vCPU number, from ``vcpus()``.
Placement = Mapping[int, tuple[int, int, int]]

#: ``interfaceStats()``'s tuple, in order.
_NET_FIELDS = (
    "receive_bytes", "receive_packets", "receive_errors", "receive_drops",
    "transmit_bytes", "transmit_packets", "transmit_errors", "transmit_drops",
)


def _numbers(table: str, prefix: str = "") -> tuple[tuple[str, str], ...]:
    """(attribute, bulk key) of the field table's numbers of ``table`` read from bulk stats; for a nested
    attribute (``memory.rss_kib``), those under ``prefix`` with it taken off."""
    return tuple((f.attr.removeprefix(prefix), f.bulk) for f in fields.of_table(table)
                 if f.bulk and f.unit != "text" and f.attr.startswith(prefix))


#: Counters and sizes by their bulk-stats key: block.N.<key>, net.N.<key>, vcpu.N.<key>, balloon.<key>.
_BLOCK_KEYS = _numbers("block")
_NET_KEYS = _numbers("interface")
_VCPU_KEYS = _numbers("vcpu")
_MEMORY_KEYS = _numbers("domain", "memory.")
_PERF_KEYS = _numbers("perf", "perf.")
_DIRTY_RATE_KEYS = _numbers("domain", "dirty_rate.")
_IOTHREAD_KEYS = {key: attr for attr, key in _numbers("iothread")}  # poll-max-ns -> poll_max_ns ...
#: ``memoryStats()`` names two figures otherwise than the bulk ``balloon.`` keys; the rest alike.
_MEMORY_CALL_NAMES = {"current": "actual", "last-update": "last_update"}


def opt_int(value: Any) -> int | None:
    """An int, or None for a value that is absent or not a number."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def nonneg(value: int) -> int | None:
    """libvirt reports -1 for "not available" in the old tuple-returning calls."""
    return value if value >= 0 else None


def replace(obj: T, **changes: Any) -> T:
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


# -- state, CPU, memory -------------------------------------------------------


def state_from_bulk(stats: Stats) -> tuple[int, int] | None:
    """(state, reason) from the ``state`` group; None when the record lacks it."""
    if "state.state" not in stats:
        return None
    return int(stats["state.state"]), int(stats.get("state.reason", 0))


def cpu_split_from_call(cpu_stats: Sequence[Mapping[str, Any]] | None) -> tuple[int | None, int | None]:
    """(user, system) nanoseconds from ``getCPUStats(True)``'s one-element list; (None, None) if empty."""
    if not cpu_stats:
        return None, None
    return opt_int(cpu_stats[0].get("user_time")), opt_int(cpu_stats[0].get("system_time"))


def _memory(values: dict[str, int | None]) -> Memory:
    values["last_update_s"] = values.get("last_update_s") or None  # 0: the guest has no balloon driver reporting
    return Memory(**values)


def memory_from_bulk(stats: Stats) -> Memory:
    """The ``balloon.*`` keys (``balloon.current`` is the balloon's actual size)."""
    return _memory({attr: opt_int(stats.get(key)) for attr, key in _MEMORY_KEYS})


def memory_from_call(stats: Mapping[str, Any]) -> Memory:
    """``memoryStats()``'s dict (``actual``, ``rss``, ``last_update`` ...)."""
    def name(key: str) -> str:
        short = key.removeprefix("balloon.")
        return _MEMORY_CALL_NAMES.get(short, short)

    return _memory({attr: opt_int(stats.get(name(key))) for attr, key in _MEMORY_KEYS})


def perf_from_bulk(stats: Stats) -> Perf:
    """The ``perf.<event>`` keys: only the events enabled on the domain are there; none at all: NO_PERF."""
    found = {attr: opt_int(stats.get(key)) for attr, key in _PERF_KEYS}
    return Perf(**found) if any(v is not None for v in found.values()) else NO_PERF


def dirty_rate_from_bulk(stats: Stats) -> DirtyRate:
    """The ``dirtyrate.*`` keys; the rate is there only once a calculation has measured it."""
    found = {attr: opt_int(stats.get(key)) for attr, key in _DIRTY_RATE_KEYS}
    return DirtyRate(**found) if any(v is not None for v in found.values()) else NO_DIRTY_RATE


def iothreads_from_bulk(stats: Stats) -> tuple[IoThread, ...]:
    """The ``iothread.<id>.*`` keys (libvirt lists the threads by id, highest first), by id."""
    found: dict[int, dict[str, int | None]] = {}
    for key, value in stats.items():
        if not key.startswith("iothread.") or key == "iothread.count":
            continue
        _, ident, name = key.split(".", 2)
        attr = _IOTHREAD_KEYS.get(name)
        if attr is not None and ident.isdigit():
            found.setdefault(int(ident), {})[attr] = opt_int(value)
    return tuple(IoThread(id=ident, **values) for ident, values in sorted(found.items()))


def vcpu_pins(cfg: DomainConfig, count: int, host_cpus: int) -> tuple[VcpuPin, ...]:
    """Each of ``count`` vCPUs' host CPUs: its <vcpupin>, else the domain's <vcpu cpuset>, else every one of the
    host's ``host_cpus`` (as libvirt answers virDomainGetVcpuPinInfo).  Domains pinned alike share one answer."""
    return _vcpu_pins(cfg.cpuset, tuple(cfg.vcpupin), count, host_cpus)


@functools.lru_cache(maxsize=256)
def _vcpu_pins(cpuset: str, vcpupin: tuple[tuple[int, str], ...], count: int,
               host_cpus: int) -> tuple[VcpuPin, ...]:
    everything = tuple(range(host_cpus))
    default = parse_cpuset(cpuset, host_cpus) if cpuset else everything
    pinned = dict(vcpupin)
    result = []
    for n in range(count):
        cpus = parse_cpuset(pinned[n], host_cpus) if n in pinned else default
        result.append(VcpuPin(vcpu=n, cpus=cpus if cpus is not None else everything, host_cpus=host_cpus))
    return tuple(result)


# -- vCPUs ---------------------------------------------------------------------


def placement_from_call(vcpus: Sequence[Any] | None) -> dict[int, tuple[int, int, int]]:
    """``vcpus()`` answers (per-vCPU (number, state, cpu time, physical CPU), CPU maps): the first part, by number."""
    placement: dict[int, tuple[int, int, int]] = {}
    if vcpus:
        for number, state, time_ns, cpu in vcpus[0]:
            placement[number] = (state, time_ns, cpu)
    return placement


def bulk_vcpu_numbers(stats: Stats, current: int | None) -> list[int]:
    """The numbers of the vCPUs a bulk record has (``vcpu.N.state``)."""
    template = fields.TABLES["vcpu"].bulk_prefix + "state"
    count = opt_int(stats.get("vcpu.maximum")) or current or 0
    return [n for n in range(count) if template.format(n=n) in stats]


def vcpus_from_bulk(stats: Stats, placement: Placement, current: int | None) -> tuple[Vcpu, ...]:
    """The ``vcpu.N.*`` keys, with the physical CPU (which the bulk group lacks) from ``placement``."""
    result = []
    for n in bulk_vcpu_numbers(stats, current):
        prefix = fields.TABLES["vcpu"].bulk_prefix.format(n=n)
        cpu = placement.get(n, (0, 0, -1))[2]
        counters = {attr: opt_int(stats.get(prefix + key)) for attr, key in _VCPU_KEYS}
        result.append(Vcpu(number=n, physical_cpu=cpu if cpu >= 0 else None, **counters))
    return tuple(result)


def vcpus_from_placement(placement: Placement) -> tuple[Vcpu, ...]:
    """vCPUs from ``vcpus()`` alone (no wait or delay figures there)."""
    return tuple(
        Vcpu(number=n, state=s, time_ns=t, physical_cpu=c if c >= 0 else None)
        for n, (s, t, c) in sorted(placement.items())
    )


# -- block devices -----------------------------------------------------------------


def configured_blocks(cfg: DomainConfig) -> dict[str, Block]:
    """The disks of the definition, by target, without counters."""
    return {d.target: d for d in cfg.disks}


def _bulk_devices(stats: Stats, table: str) -> Iterator[tuple[str, str]]:
    """(key prefix, target) of each device of ``table`` in a bulk record (``block.N.``, ``net.N.``) that names
    its target; ``block.count`` (``net.count``) says how many there are."""
    template = fields.TABLES[table].bulk_prefix
    group = template.split(".", 1)[0]
    for n in range(opt_int(stats.get(f"{group}.count")) or 0):
        prefix = template.format(n=n)
        target = stats.get(prefix + "name")
        if target:
            yield prefix, str(target)


def blocks_from_bulk(stats: Stats, configured: Mapping[str, Block]) -> dict[str, Block]:
    """The ``block.N.*`` keys laid over the configured disks; a disk only the stats know is added."""
    result = dict(configured)
    for p, target in _bulk_devices(stats, "block"):
        path = str(stats.get(p + "path", ""))
        base = result.get(target) or Block(target=target, source=path)
        counters = {name: opt_int(stats.get(p + key)) for name, key in _BLOCK_KEYS}
        result[target] = replace(base, source=base.source or path, **counters)
    return result


_IOTUNE_KEYS = tuple(f.name for f in dataclasses.fields(IoTune))
_JOB_KEYS = tuple(f.name for f in dataclasses.fields(Job))
#: virDomainJobType: NONE, and COMPLETED (what a JOB_COMPLETED event's parameters describe).
JOB_NONE, JOB_COMPLETED = 0, 3


def job_from_call(values: Mapping[str, Any] | None, default_type: int = JOB_NONE) -> Job:
    """``jobStats()`` (or a JOB_COMPLETED event's parameters, which have no type): NO_JOB when there is none."""
    if not values:
        return NO_JOB
    found = {key: opt_int(values.get(key)) for key in _JOB_KEYS}
    if found["type"] is None:
        found["type"] = default_type
    return NO_JOB if found["type"] == JOB_NONE else Job(**found)


def iotune_from_call(values: Mapping[str, Any]) -> IoTune:
    """``blockIoTune(disk, 0)``: its numbers by the same names (group_name and unknown keys are left out)."""
    return IoTune(**{key: opt_int(values.get(key)) for key in _IOTUNE_KEYS})


def disk_error_codes(blocks: tuple[Block, ...], errors: Mapping[str, int] | None) -> tuple[Block, ...]:
    """Each disk's error code from ``diskErrors()`` ({target: code}, only the disks with an error); a disk it
    does not name has none (0).  ``errors`` None (not asked, or the call failed): unknown."""
    if errors is None:
        return blocks
    return tuple(replace(b, error_code=int(errors.get(b.target, 0))) if b.device in ("disk", "lun") else b
                 for b in blocks)


def block_from_calls(base: Block, io: Sequence[int] | None, size: Sequence[int] | None) -> Block:
    """``blockStats()`` (rd_req, rd_bytes, wr_req, wr_bytes, errs; -1 unknown) and ``blockInfo()``
    (capacity, allocation, physical), either None when its call failed."""
    changes: dict[str, int | None] = {}
    if io is not None:
        rd_req, rd_bytes, wr_req, wr_bytes, errs = io
        changes.update(
            read_requests=nonneg(rd_req), read_bytes=nonneg(rd_bytes),
            write_requests=nonneg(wr_req), write_bytes=nonneg(wr_bytes), errors=nonneg(errs),
        )
    if size is not None:
        changes.update(capacity_bytes=size[0], allocation_bytes=size[1], physical_bytes=size[2])
    return replace(base, **changes)


# -- interfaces --------------------------------------------------------------------


def _counter(value: Any) -> int | None:
    """A NIC counter; -1 and absent values become None."""
    return nonneg(int(value)) if value is not None else None


def net_counters(*values: Any) -> dict[str, int | None]:
    """Eight counters in ``interfaceStats()`` order; -1 and absent values become None."""
    return {n: _counter(v) for n, v in zip(_NET_FIELDS, values, strict=True)}


def configured_interfaces(cfg: DomainConfig) -> dict[str, Interface]:
    """The NICs of the definition that have a host-side target, by target, without counters."""
    return {n.target: n for n in cfg.nics if n.target}


def interfaces_from_bulk(stats: Stats, configured: Mapping[str, Interface]) -> dict[str, Interface]:
    """The ``net.N.*`` keys laid over the configured NICs; a NIC only the stats know is added."""
    result = dict(configured)
    for p, target in _bulk_devices(stats, "interface"):
        base = result.get(target) or Interface(target=target)
        counters = {attr: _counter(stats.get(p + key)) for attr, key in _NET_KEYS}
        result[target] = replace(base, **counters)
    return result


def interface_from_call(base: Interface, io: Sequence[int]) -> Interface:
    """``interfaceStats()``: (rx bytes, packets, errs, drop, tx bytes, packets, errs, drop)."""
    return replace(base, **net_counters(*io))


# -- the node ----------------------------------------------------------------------


def node_memory(info: Sequence[Any] | None, mem: Mapping[str, int] | None) -> tuple[int | None, int | None]:
    """(total, free) bytes from ``getMemoryStats(-1)`` (KiB), total falling back to ``getInfo()`` (MiB).

    Free counts buffers and cache as free.  A None free means: ask ``getFreeMemory()``.
    """
    total: int | None = None
    free: int | None = None
    if mem:
        total = mem.get("total", 0) * 1024 if "total" in mem else None
        if "free" in mem:
            free = (mem.get("free", 0) + mem.get("buffers", 0) + mem.get("cached", 0)) * 1024
    if total is None and info:
        total = int(info[1]) * 1024 * 1024
    return total, free


def node_host(
    static: Host, info: Sequence[Any] | None, cpu: Mapping[str, Any] | None, total: int | None, free: int | None
) -> Host:
    """The connection's fixed facts with ``getInfo()`` (model, memory MiB, CPUs, MHz ...) and ``getCPUStats(-1)``."""
    cpu_times = {k: int(v) for k, v in cpu.items()} if cpu else {}
    return replace(
        static,
        cpu_model=str(info[0]) if info else "",
        cpus=int(info[2]) if info else None,
        cpu_mhz=int(info[3]) if info else None,
        memory_total_bytes=total,
        memory_free_bytes=free,
        cpu_time_ns=frozen_map(cpu_times),
    )
