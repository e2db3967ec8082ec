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
