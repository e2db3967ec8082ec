"""The records of a domain's limits and jobs that the snapshot holds (:mod:`exporter.snapshot` re-exports them):
what libvirt answers, under its own key names, for the field table to read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IoTune:
    """A disk's I/O limits, as ``virDomainGetBlockIoTune`` gives them: per second (0: no limit), bursts and their
    lengths in seconds.  All None for a disk whose definition sets none (it is not asked)."""

    total_bytes_sec: int | None = None
    read_bytes_sec: int | None = None
    write_bytes_sec: int | None = None
    total_iops_sec: int | None = None
    read_iops_sec: int | None = None
    write_iops_sec: int | None = None
    total_bytes_sec_max: int | None = None
    read_bytes_sec_max: int | None = None
    write_bytes_sec_max: int | None = None
    total_iops_sec_max: int | None = None
    read_iops_sec_max: int | None = None
    write_iops_sec_max: int | None = None
    total_bytes_sec_max_length: int | None = None
    read_bytes_sec_max_length: int | None = None
    write_bytes_sec_max_length: int | None = None
    total_iops_sec_max_length: int | None = None
    read_iops_sec_max_length: int | None = None
    write_iops_sec_max_length: int | None = None
    size_iops_sec: int | None = None


NO_IOTUNE = IoTune()


@dataclass(frozen=True, slots=True)
class Job:
    """A domain's job (virDomainGetJobStats) under libvirt's key names: times in ms, sizes in bytes, the dirty
    rate in pages per second.  All None: no job."""

    type: int | None = None  # 1 bounded, 2 unbounded; a finished job's: 3 completed, 4 failed, 5 cancelled
    operation: int | None = None  # virDomainJobOperation: 2 save, 4 incoming and 5 outgoing migration, 8 dump, ...
    time_elapsed: int | None = None
    time_remaining: int | None = None
    downtime: int | None = None
    data_total: int | None = None
    data_processed: int | None = None
    data_remaining: int | None = None
    memory_total: int | None = None
    memory_processed: int | None = None
    memory_remaining: int | None = None
    memory_bps: int | None = None
    memory_dirty_rate: int | None = None
    memory_iteration: int | None = None
    memory_postcopy_requests: int | None = None
    file_total: int | None = None
    file_processed: int | None = None
    file_remaining: int | None = None


NO_JOB = Job()


@dataclass(frozen=True, slots=True)
class Perf:
    """A domain's perf event counters (the bulk ``perf.<event>`` keys), for the events enabled on it
    (``virsh perf --enable``): counts, except the clocks (ns), cmt (bytes) and mbmt/mbml (bytes per second)."""

    cpu_cycles: int | None = None
    instructions: int | None = None
    cache_references: int | None = None
    cache_misses: int | None = None
    branch_instructions: int | None = None
    branch_misses: int | None = None
    bus_cycles: int | None = None
    stalled_cycles_frontend: int | None = None
    stalled_cycles_backend: int | None = None
    ref_cpu_cycles: int | None = None
    cpu_clock: int | None = None
    task_clock: int | None = None
    page_faults: int | None = None
    context_switches: int | None = None
    cpu_migrations: int | None = None
    page_faults_min: int | None = None
    page_faults_maj: int | None = None
    alignment_faults: int | None = None
    emulation_faults: int | None = None
    cmt: int | None = None
    mbmt: int | None = None
    mbml: int | None = None


NO_PERF = Perf()


@dataclass(frozen=True, slots=True)
class DirtyRate:
    """The last dirty-rate calculation of a domain's memory (the bulk ``dirtyrate.*`` keys)."""

    calc_status: int | None = None  # 0 never started, 1 measuring, 2 measured
    calc_period: int | None = None  # seconds the calculation ran
    megabytes_per_second: int | None = None  # MiB of guest memory dirtied per second; only once measured


NO_DIRTY_RATE = DirtyRate()


@dataclass(frozen=True, slots=True)
class IoThread:
    """One I/O thread of a domain (the bulk ``iothread.<id>.*`` keys): its adaptive polling."""

    id: int
    poll_max_ns: int | None = None
    poll_grow: int | None = None
    poll_shrink: int | None = None


@dataclass(frozen=True, slots=True)
class VcpuPin:
    """The host CPUs one vCPU may run on: its <vcpupin>, else the domain's <vcpu cpuset>, else all."""

    vcpu: int
    cpus: tuple[int, ...]
    host_cpus: int  # how many the host has: the vCPU is pinned when cpus are fewer

    @property
    def pinned(self) -> bool:
        return len(self.cpus) < self.host_cpus


def cpulist_text(cpus: tuple[int, ...]) -> str:
    """Host CPUs as libvirt writes a cpuset: ranges and single CPUs, "0-3,8"."""
    parts: list[str] = []
    start = previous = None
    for cpu in sorted(cpus):
        if previous is not None and cpu == previous + 1:
            previous = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = cpu
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(parts)


def parse_cpuset(text: str, host_cpus: int) -> tuple[int, ...] | None:
    """libvirt's cpuset syntax ("0-3,^2,8"): the CPUs below ``host_cpus`` it names; None if it is not one."""
    chosen: set[int] = set()
    excluded: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        target = excluded if part.startswith("^") else chosen
        part = part.lstrip("^")
        try:
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
        except ValueError:
            return None
        target.update(range(first, last + 1))
    return tuple(sorted(cpu for cpu in chosen - excluded if cpu < host_cpus))
