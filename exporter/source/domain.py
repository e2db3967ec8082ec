"""One :class:`~exporter.snapshot.Domain` from its bulk-stats record, its definition and per-domain calls.

Pure like :mod:`exporter.source.parse`: no libvirt here.  The per-domain
calls come through a :class:`DomainReads`, which answers with what libvirt
returned, or None when the call failed (the reader counts the failure);
:class:`exporter.source.fallback.DomainCalls` is the one over a libvirt
domain handle, and tests use one over recorded answers.  Which calls are
made, and in what order, depends only on the bulk record, the groups the
driver serves in bulk, the groups wanted and whether calls are allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import exporter.source.parse as parse
from exporter.snapshot import (
    JOB_STATES,
    NO_DIRTY_RATE,
    NO_JOB,
    NO_PERF,
    PAUSED_IOERROR,
    STATE_NOSTATE,
    STATE_PAUSED,
    STATE_RUNNING,
    Block,
    Domain,
    Interface,
    Job,
    Memory,
    Vcpu,
    VcpuPin,
)
from exporter.source.domxml import DomainConfig


class DomainReads(Protocol):
    """libvirt's per-domain calls for one domain; None for a failed call (anything but :meth:`state`)."""

    def state(self) -> Sequence[int]:
        """``state(0)``: (state, reason).  Raises :class:`~exporter.errors.SourceError` on failure."""

    def info(self) -> Sequence[Any] | None:
        """``info()``: (state, max memory KiB, memory KiB, vCPUs, cpu time ns)."""

    def cpu_stats(self) -> Sequence[Mapping[str, Any]] | None:
        """``getCPUStats(True)``."""

    def memory_stats(self) -> Mapping[str, Any] | None:
        """``memoryStats()``."""

    def vcpus(self) -> Sequence[Any] | None:
        """``vcpus()``."""

    def block_stats(self, target: str) -> Sequence[int] | None:
        """``blockStats(target)``."""

    def block_info(self, target: str) -> Sequence[int] | None:
        """``blockInfo(target)``."""

    def interface_stats(self, target: str) -> Sequence[int] | None:
        """``interfaceStats(target)``."""

    def block_io_tune(self, target: str) -> Mapping[str, Any] | None:
        """``blockIoTune(target, 0)``."""

    def disk_errors(self) -> Mapping[str, int] | None:
        """``diskErrors(0)``: {target: code} of the disks with an error."""

    def job_stats(self) -> Mapping[str, Any] | None:
        """``jobStats(0)``: the running job, {"type": 0} when there is none."""

    def start_dirty_rate(self, seconds: int) -> None:
        """``startDirtyRateCalc(seconds, 0)``: a calculation in page-sampling mode, the cheapest for the guest."""


def build_domain(
    *,
    name: str,
    uuid: str,
    dom_id: int,
    persistent: bool,
    autostart: bool,
    cfg: DomainConfig,
    stats: parse.Stats,
    bulk: frozenset[str],
    wanted: frozenset[str],
    read: DomainReads,
    monitor: bool = True,
    job_hint: bool = False,
    last_job: Job = NO_JOB,
    host_cpus: int | None = None,
    dirty_rate_seconds: int = 0,
    placement: parse.Placement | None = None,
) -> Domain:
    """One domain from its bulk ``stats``, with per-domain calls for what the bulk lacks.

    ``bulk``: the stats groups ``stats`` was asked for (a group outside it is
    read by calls).  With ``monitor`` False no call is made that could wait on
    the domain's QEMU (its state and definition only): groups missing from
    ``stats`` are left empty, devices keep their configuration without counters.
    An inactive domain (``dom_id`` < 0) is asked nothing but its state.

    Its job is asked for only when its state says it has one (:data:`JOB_STATES`) or ``job_hint`` says so (an
    event, or a job seen in the last poll); ``last_job`` is the outcome libvirt last reported.
    ``placement``: where the vCPUs last ran, to serve again instead of asking (when the bulk has the vCPUs and the
    answer covers each of them).
    """
    found = parse.state_from_bulk(stats)
    if found is not None:
        state, reason = found
    else:
        state, reason = read.state()
    active = dom_id >= 0
    calls = active and monitor  # per-domain calls allowed
    info: Sequence[Any] | None = None

    def get_info() -> Sequence[Any] | None:
        nonlocal info
        if info is None and calls:
            info = read.info()
        return info

    max_kib = parse.opt_int(stats.get("balloon.maximum"))
    cur_kib = parse.opt_int(stats.get("balloon.current"))
    cpu_ns = parse.opt_int(stats.get("cpu.time"))
    user_ns = parse.opt_int(stats.get("cpu.user"))
    system_ns = parse.opt_int(stats.get("cpu.system"))
    cpu_by_call = "cpu" in wanted and "cpu" not in bulk
    if active and (max_kib is None or cur_kib is None or cpu_by_call):
        i = get_info()
        if i is not None:
            max_kib = max_kib if max_kib is not None else i[1]
            cur_kib = cur_kib if cur_kib is not None else i[2]
            if cpu_ns is None and "cpu" in wanted:
                cpu_ns = i[4]
    if calls and cpu_by_call and user_ns is None:
        cpu_stats = read.cpu_stats()
        if cpu_stats:
            user_ns, system_ns = parse.cpu_split_from_call(cpu_stats)
    if max_kib is None:
        max_kib = cfg.max_memory_kib
    if cur_kib is None:
        cur_kib = cfg.memory_kib

    memory = Memory()
    if "balloon" in wanted:
        if "balloon" in bulk:
            memory = parse.memory_from_bulk(stats)
        elif calls:
            mstats = read.memory_stats()
            if mstats:
                memory = parse.memory_from_call(mstats)

    vcpus_current = parse.opt_int(stats.get("vcpu.current"))
    vcpus_max = parse.opt_int(stats.get("vcpu.maximum"))
    vcpus: tuple[Vcpu, ...] = ()
    if "vcpu" in wanted and calls:
        if "vcpu" in bulk:
            known = placement  # the last answer, served again if it covers every vCPU (exporter.source.placement)
            if known is None or any(n not in known for n in parse.bulk_vcpu_numbers(stats, vcpus_current)):
                known = parse.placement_from_call(read.vcpus())
            vcpus = parse.vcpus_from_bulk(stats, known, vcpus_current)
        else:
            vcpus = parse.vcpus_from_placement(parse.placement_from_call(read.vcpus()))
        if vcpus_current is None and vcpus:
            vcpus_current = len(vcpus)
    if vcpus_current is None:
        i = get_info() if active else None
        vcpus_current = i[3] if i is not None else cfg.vcpus_current
    if vcpus_max is None:
        vcpus_max = cfg.vcpus_max

    blocks: tuple[Block, ...] = ()
    if "block" in wanted:
        blocks = _blocks(cfg, stats if "block" in bulk else None, calls, read)
        if calls:
            blocks = _limits_and_errors(blocks, state, reason, read)
    interfaces: tuple[Interface, ...] = ()
    if "interface" in wanted and active:
        interfaces = _interfaces(cfg, stats if "interface" in bulk else None, calls, read)

    job = NO_JOB
    if "job" in wanted and calls and (job_hint or (state, reason) in JOB_STATES):
        job = parse.job_from_call(read.job_stats())

    # The newer bulk groups: from the record alone (a driver without them has none of these figures).
    def from_bulk(group: str) -> bool:
        return group in wanted and group in bulk

    haltpoll: tuple[int | None, int | None] = (None, None)
    if from_bulk("haltpoll"):
        haltpoll = (parse.opt_int(stats.get("cpu.haltpoll.success.time")),
                    parse.opt_int(stats.get("cpu.haltpoll.fail.time")))
    if dirty_rate_seconds and calls and "dirtyrate" in wanted and state == STATE_RUNNING:
        read.start_dirty_rate(dirty_rate_seconds)  # its outcome is read by a later poll
    pins: tuple[VcpuPin, ...] = ()
    if "pinning" in wanted and active and host_cpus:
        pins = parse.vcpu_pins(cfg, vcpus_current or 0, host_cpus)

    return Domain(
        name=name,
        uuid=uuid,
        id=dom_id,
        active=active,
        state=state if state in range(0, 8) else STATE_NOSTATE,
        state_reason=reason,
        persistent=persistent,
        autostart=autostart,
        os_type=cfg.os_type,
        arch=cfg.arch,
        machine=cfg.machine,
        title=cfg.title,
        nova=cfg.nova,
        metadata=cfg.metadata,
        max_memory_kib=max_kib,
        memory_kib=cur_kib,
        vcpus_current=vcpus_current,
        vcpus_max=vcpus_max,
        cpu_time_ns=cpu_ns,
        cpu_user_ns=user_ns,
        cpu_system_ns=system_ns,
        memory=memory,
        vcpus=vcpus,
        blocks=blocks,
        interfaces=interfaces,
        job=job,
        last_job=last_job if "job" in wanted else NO_JOB,
        haltpoll_success_ns=haltpoll[0],
        haltpoll_fail_ns=haltpoll[1],
        perf=parse.perf_from_bulk(stats) if from_bulk("perf") else NO_PERF,
        dirty_rate=parse.dirty_rate_from_bulk(stats) if from_bulk("dirtyrate") else NO_DIRTY_RATE,
        iothreads=parse.iothreads_from_bulk(stats) if from_bulk("iothread") else (),
        vcpu_pins=pins,
    )


def _blocks(cfg: DomainConfig, stats: parse.Stats | None, calls: bool, read: DomainReads) -> tuple[Block, ...]:
    result = parse.configured_blocks(cfg)
    if stats is not None:
        result = parse.blocks_from_bulk(stats, result)
    elif calls:
        for target, base in list(result.items()):
            if base.device not in ("disk", "lun") or not base.source:
                continue
            io = read.block_stats(target)
            size = read.block_info(target)
            result[target] = parse.block_from_calls(base, io, size)
    return tuple(result.values())


def _limits_and_errors(blocks: tuple[Block, ...], state: int, reason: int, read: DomainReads
                       ) -> tuple[Block, ...]:
    """I/O limits of the disks whose definition sets some; disk errors, which QEMU keeps only while an error
    policy has stopped the guest, so they are asked for only when it is paused for an I/O error (every disk
    of any other running domain has none)."""
    limited = []
    for blk in blocks:
        tune = read.block_io_tune(blk.target) if blk.limited else None
        limited.append(blk if tune is None else parse.replace(blk, iotune=parse.iotune_from_call(tune)))
    ioerror = state == STATE_PAUSED and reason == PAUSED_IOERROR
    return parse.disk_error_codes(tuple(limited), read.disk_errors() if ioerror else {})


def _interfaces(
    cfg: DomainConfig, stats: parse.Stats | None, calls: bool, read: DomainReads
) -> tuple[Interface, ...]:
    result = parse.configured_interfaces(cfg)
    if stats is not None:
        result = parse.interfaces_from_bulk(stats, result)
    elif calls:
        for target, base in list(result.items()):
            io = read.interface_stats(target)
            if io is not None:
                result[target] = parse.interface_from_call(base, io)
    return tuple(result.values())
