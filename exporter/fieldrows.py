"""Rows of the field table (:mod:`exporter.fields`) that come in families of their own: a disk's I/O limits
(total, read and write of each kind) and a domain's job and last job.  Each is written as a compact table
here and made into :class:`~exporter.fieldtypes.Field` rows, numbered in their MIB table's order."""

from __future__ import annotations

from exporter.fieldtypes import Field, column, counter, gauge
from exporter.snmp.syntax import C64, G32, INT

#: A disk's I/O limits, each for total, read and write: (IoTune attribute "{rw}_..." , unit, Tinkoff's family
#: name, MIB column name, help), from LIBVIRT-EXPORTER-MIB column 23 on.
_LIMITS = (
    ("bytes_sec", "bytes", "limit_{rw}_bytes", "Limit{RW}Bytes", "{rw} throughput limit, in bytes per second"),
    ("iops_sec", "count", "limit_{rw}_requests", "Limit{RW}Iops", "{rw} requests per second limit"),
    ("bytes_sec_max", "bytes", "limit_burst_{rw}_bytes", "Burst{RW}Bytes",
     "{rw} throughput burst limit, in bytes per second"),
    ("iops_sec_max", "count", "limit_burst_{rw}_requests", "Burst{RW}Iops", "{rw} requests per second burst limit"),
    ("bytes_sec_max_length", "s", "limit_burst_{rw}_bytes_length_seconds", "Burst{RW}BytesLength",
     "longest {rw} throughput burst, in seconds"),
    ("iops_sec_max_length", "s", "limit_burst_length_{rw}_requests_seconds", "Burst{RW}IopsLength",
     "longest {rw} requests burst, in seconds"),
)


#: A job's figures: (libvirt's key, unit, family name after libvirt_domain_job_info_, MIB column name, help).
_JOB = (
    ("type", "code", "type", "Type", "Job type: 1 bounded, 2 unbounded (libvirt's virDomainJobType)."),
    ("operation", "code", "operation", "Operation",
     "What the job does: 1 start, 2 save, 3 restore, 4 incoming and 5 outgoing migration, 6 snapshot, 8 dump, "
     "9 backup (libvirt's virDomainJobOperation)."),
    ("time_elapsed", "ms", "time_elapsed_seconds", "TimeElapsed", "Time since the job started."),
    ("time_remaining", "ms", "time_remaining_seconds", "TimeRemaining", "Time the job expects to take still."),
    ("downtime", "ms", "downtime_seconds", "Downtime", "A migration's expected downtime of the guest."),
    ("data_total", "bytes", "data_total_bytes", "DataTotal", "Data the job has to move in all."),
    ("data_processed", "bytes", "data_processed_bytes", "DataProcessed", "Data the job has moved."),
    ("data_remaining", "bytes", "data_remaining_bytes", "DataRemaining", "Data the job has still to move."),
    ("memory_total", "bytes", "memory_total_bytes", "MemoryTotal", "Guest memory the job has to move in all."),
    ("memory_processed", "bytes", "memory_processed_bytes", "MemoryProcessed", "Guest memory the job has moved."),
    ("memory_remaining", "bytes", "memory_remaining_bytes", "MemoryRemaining",
     "Guest memory the job has still to move."),
    ("memory_bps", "bytes", "memory_bytes_per_second", "MemoryRate", "Rate at which guest memory is moved."),
    ("memory_dirty_rate", "count", "memory_dirty_rate_pages", "MemoryDirtyRate",
     "Guest memory pages dirtied per second while a migration runs."),
    ("memory_iteration", "count", "memory_iteration", "MemoryIteration",
     "Passes a migration has made over the guest memory."),
    ("memory_postcopy_requests", "count", "memory_postcopy_requests", "PostcopyRequests",
     "Page requests from the destination during a post-copy migration."),
    ("file_total", "bytes", "file_total_bytes", "FileTotal", "File data the job has to move in all."),
    ("file_processed", "bytes", "file_processed_bytes", "FileProcessed", "File data the job has moved."),
    ("file_remaining", "bytes", "file_remaining_bytes", "FileRemaining", "File data the job has still to move."),
)
#: Of the last job that libvirt reported complete (the JOB_COMPLETED event).
_LAST_JOB = (
    ("type", "code", "type", "Type", "Outcome of the domain's last job: 3 completed, 4 failed, 5 cancelled."),
    ("operation", "code", "operation", "Operation", "What the domain's last job did (as for the running job)."),
    ("time_elapsed", "ms", "time_elapsed_seconds", "TimeElapsed", "How long the domain's last job took."),
    ("downtime", "ms", "downtime_seconds", "Downtime", "The guest's downtime in the domain's last migration."),
    ("data_processed", "bytes", "data_processed_bytes", "DataProcessed", "Data the domain's last job moved."),
    ("memory_iteration", "count", "memory_iteration", "MemoryIteration",
     "Passes the domain's last migration made over the guest memory."),
)


def job_fields() -> tuple[Field, ...]:
    """A domain's job (virDomainGetJobStats; inovex's names where inovex has the figure) and the outcome of its
    last one: LIBVIRT-EXPORTER-MIB's lvxJobTable."""
    syntax = {"bytes": C64, "code": INT}
    rows = []
    number = 1
    for which, family, mib, figures in (("job", "info", "", _JOB), ("last_job", "last", "Last", _LAST_JOB)):
        for attr, unit, name, column_name, text in figures:
            rows.append(Field("job", f"{which}.{attr}", unit, "job", gauge(f"libvirt_domain_job_{family}_{name}", text),
                              column(number, f"lvxJob{mib}{column_name}", syntax.get(unit, G32))))
            number += 1
    return tuple(rows)


def limit_fields() -> tuple[Field, ...]:
    """The disks' I/O limits (virDomainGetBlockIoTune), asked only for disks whose definition sets some."""
    rows = []
    number = 23
    for attr, unit, family, mib, text in _LIMITS:
        for rw in ("total", "read", "write"):
            what = text.format(rw=rw)
            rows.append(Field("block", f"iotune.{rw}_{attr}", unit, "block", gauge(
                f"libvirt_domain_block_stats_{family.format(rw=rw)}", f"{what[0].upper()}{what[1:]}; 0: none."),
                column(number, f"lvxBlock{mib.format(RW=rw.title())}", C64 if unit == "bytes" else G32)))
            number += 1
    return tuple(rows)


#: The perf events libvirt reads (``virsh perf``): (event, unit, help).  Counts unless said otherwise.
_PERF = (
    ("cpu_cycles", "count", "CPU cycles"),
    ("instructions", "count", "instructions executed"),
    ("cache_references", "count", "cache references"),
    ("cache_misses", "count", "cache misses"),
    ("branch_instructions", "count", "branch instructions"),
    ("branch_misses", "count", "mispredicted branches"),
    ("bus_cycles", "count", "bus cycles"),
    ("stalled_cycles_frontend", "count", "cycles stalled in the front end"),
    ("stalled_cycles_backend", "count", "cycles stalled in the back end"),
    ("ref_cpu_cycles", "count", "reference CPU cycles"),
    ("cpu_clock", "ns", "CPU clock time"),
    ("task_clock", "ns", "task clock time"),
    ("page_faults", "count", "page faults"),
    ("context_switches", "count", "context switches"),
    ("cpu_migrations", "count", "moves between host CPUs"),
    ("page_faults_min", "count", "minor page faults"),
    ("page_faults_maj", "count", "major page faults"),
    ("alignment_faults", "count", "alignment faults"),
    ("emulation_faults", "count", "emulation faults"),
    ("cmt", "bytes", "last-level cache used (cache monitoring), in bytes"),
    ("mbmt", "bytes", "total memory bandwidth (memory bandwidth monitoring), in bytes per second"),
    ("mbml", "bytes", "local memory bandwidth (memory bandwidth monitoring), in bytes per second"),
)


def _perf_family(event: str, unit: str, text: str) -> tuple[str, bool]:
    """(family name, whether it is a counter) of one perf event."""
    if event == "cmt":
        return "libvirt_domain_perf_cmt_bytes", False
    if event in ("mbmt", "mbml"):
        return f"libvirt_domain_perf_{event}_bytes_per_second", False
    return f"libvirt_domain_perf_{event}{'_seconds' if unit == 'ns' else ''}_total", True


def perf_fields() -> tuple[Field, ...]:
    """A domain's perf events (the bulk PERF group): LIBVIRT-EXPORTER-MIB's lvxPerfTable, a column an event."""
    rows = []
    for number, (event, unit, text) in enumerate(_PERF, start=1):
        name, is_counter = _perf_family(event, unit, text)
        what = f"Perf event {event} of the domain's QEMU process: {text} (while enabled on the domain)."
        rows.append(Field("perf", f"perf.{event}", unit, "perf", (counter if is_counter else gauge)(name, what),
                          column(number, "lvxPerf" + "".join(p.title() for p in event.split("_")), C64),
                          f"perf.{event}"))
    return tuple(rows)
