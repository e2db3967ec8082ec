"""Prometheus front end: the metric families, and a snapshot rendered as them (text or prometheus_client
families; the text itself is written by :mod:`exporter.textrender`).  What a scrape serves, with its
caching, is :mod:`exporter.exposition`.

A scrape reads one snapshot reference and never calls libvirt.  Every family
is declared once: the exporter's own in :data:`SPECS` here, every per-object one in the field table
(:mod:`exporter.fields`), from which :data:`SPECS` takes them.  The README's metrics table is generated
from that list (``python -m exporter.docs``) and a test holds the two together.

Sample output::

    libvirt_up 1
    libvirt_domain_info_virtual_cpus{domain="web1",uuid="6695eb01-..."} 2
    libvirt_domain_block_stats_read_bytes_total{domain="web1",uuid="...",target_device="vda"} 1.2e+09
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from exporter import __version__, fields
from exporter.fieldtypes import InfoFamily
from exporter.snapshot import NO_JOB, NO_PERF, Domain, Snapshot, version_text

NS = 1e-9

DOMAIN = ("domain", "uuid")
#: Its labels after DOMAIN are the config file's (exporter.metadata), so each series carries their names.
METADATA_INFO = "libvirt_domain_metadata_info"


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # full exposed name; counters end in _total
    kind: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...]
    group: str  # collector that controls it; "exporter" is always on


def _g(name: str, help: str, labels: tuple[str, ...], group: str) -> Spec:
    return Spec(name, "gauge", help, labels, group)


def _c(name: str, help: str, labels: tuple[str, ...], group: str) -> Spec:
    return Spec(name, "counter", help, labels, group)


SPECS: tuple[Spec, ...] = (
    # exporter and connection
    _g("libvirt_up", "Whether the last poll of libvirt succeeded (1) or libvirt is unreachable (0).", (), "exporter"),
    _g("libvirt_versions_info", "Versions of the exporter, libvirt and the hypervisor, as labels.",
       ("driver", "hypervisor_version", "libvirt_version", "exporter_version"), "exporter"),
    _g("libvirt_exporter_poll_duration_seconds", "Wall time of the last completed poll of libvirt.", (), "exporter"),
    _g("libvirt_exporter_last_poll_success_timestamp_seconds", "Unix time of the last successful poll.", (),
       "exporter"),
    _g("libvirt_exporter_snapshot_timestamp_seconds", "Unix time the served data was polled.", (), "exporter"),
    _g("libvirt_exporter_snapshot_age_seconds",
       "Age of the served data. The exporter caches one snapshot per poll; this says how old it is.", (),
       "exporter"),
    _g("libvirt_exporter_poll_stalled", "1 while the current poll has run past its deadline.", (), "exporter"),
    _g("libvirt_exporter_stuck_calls",
       "libvirt calls given up on at their deadline and still running, by group (domain: one per timed-out "
       "domain; node, pool, network).", ("group",), "exporter"),
    _c("libvirt_exporter_poll_errors_total", "Failed libvirt calls during polls, by stats group.", ("group",),
       "exporter"),
    _c("libvirt_exporter_reconnects_total", "Times the libvirt connection was re-established.", (), "exporter"),
    _c("libvirt_exporter_events_total", "libvirt domain events received.", (), "exporter"),
    _c("libvirt_exporter_notifications_sent_total", "SNMP notifications sent (informs: acknowledged), by target.",
       ("target",), "exporter"),
    _c("libvirt_exporter_notifications_dropped_total",
       "SNMP notifications dropped: queue full, or a trap that could not be sent.", ("target",), "exporter"),
    _c("libvirt_exporter_notification_retries_total", "SNMP informs sent again after no acknowledgement.",
       ("target",), "exporter"),
    _g("libvirt_exporter_notification_queue_length", "SNMP notifications waiting to be sent, by target.",
       ("target",), "exporter"),
    _c("libvirt_exporter_snmp_fast_path_requests_total",
       "SNMPv2c GET, GETNEXT and GETBULK requests answered by the fast path (the rest go through pysnmp).", (),
       "exporter"),
    _c("libvirt_exporter_snmp_dropped_packets_total",
       "SNMP datagrams dropped because they could not be decoded at all.", (), "exporter"),
    _g("libvirt_domains_number", "Number of domains (after the include/exclude filter).", (), "state"),
) + tuple(Spec(family.name, family.kind, family.help, labels, group) for group, family, labels in fields.families()
          ) + (
    _g(METADATA_INFO, "The domain's metadata as labels, one per key of the config file's [metadata.labels] (XPath "
       "expressions over the domain XML); the value is always 1.", DOMAIN, "state"),
    _g("libvirt_domain_stats_age_seconds",
       "Age of the domain's last complete stats, for domains whose stats are older than the served snapshot "
       "(timed out); the others are as old as the snapshot.", DOMAIN, "state"),
    _g("libvirt_node_info", "Host metadata as labels; the value is always 1.", ("hostname", "cpu_model"), "node"),
    _c("libvirt_node_cpu_seconds_total", "Host CPU time by mode, all CPUs together.", ("mode",), "node"),
)

SPEC_BY_NAME = {s.name: s for s in SPECS}


@functools.lru_cache(maxsize=8)
def enabled_specs(groups: frozenset[str]) -> dict[str, Spec]:
    """The families that ``groups`` (the enabled collectors) export, by name."""
    return {s.name: s for s in SPECS if s.group == "exporter" or s.group in groups}


class Sink(Protocol):
    """Where :func:`fill` puts samples (prometheus_client families, or text)."""

    def add(self, name: str, labels: Iterable[str], value: float | int | None) -> None: ...

    def add_named(self, name: str, labels: tuple[str, ...], named: tuple[tuple[str, str], ...], value: int
                  ) -> None: ...


class _Sink:
    """A sink that keeps only families of enabled collectors."""

    def __init__(self, groups: frozenset[str]) -> None:
        self._enabled = enabled_specs(groups)

    def _wanted(self, name: str, value: float | int | None) -> Spec | None:
        return None if value is None else self._enabled.get(name)


class Families(_Sink):
    """Lazily created prometheus_client metric families, yielded in :data:`SPECS` order."""

    def __init__(self, groups: frozenset[str]) -> None:
        super().__init__(groups)
        self._families: dict[str, Metric] = {}

    def add(self, name: str, labels: Iterable[str], value: float | int | None) -> None:
        spec = self._wanted(name, value)
        if spec is None:
            return
        family = self._families.get(name)
        if family is None:
            if spec.kind == "counter":
                family = CounterMetricFamily(name, spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(name, spec.help, labels=spec.labels)
            self._families[name] = family
        family.add_metric(list(labels), value)  # type: ignore[attr-defined]

    def add_named(self, name: str, labels: tuple[str, ...], named: tuple[tuple[str, str], ...], value: int) -> None:
        """A series with ``named`` (label, value) pairs after the family's own labels."""
        spec = self._wanted(name, value)
        if spec is None:
            return
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = GaugeMetricFamily(name, spec.help, labels=spec.labels)
        family.samples.append(Sample(name, dict(zip(spec.labels, labels, strict=True)) | dict(named), value))

    def __iter__(self) -> Iterator[Metric]:
        for spec in SPECS:
            family = self._families.get(spec.name)
            if family is not None:
                yield family


_Plan = tuple[tuple[str, Callable[[Any], Any]], ...]


def _plan(table: str) -> _Plan:
    """(family, reader of an object of ``table`` giving the family's value) for the table's fields."""
    return tuple((f.family.name, f.metric_reader()) for f in fields.of_table(table) if f.family is not None)


def _info(table: str) -> tuple[InfoFamily, ...]:
    return tuple(i for i in fields.INFO_FAMILIES if i.table == table)


_PLANS = {table: _plan(table) for table in fields.TABLES}
_INFOS = {table: _info(table) for table in fields.TABLES}


def _rows(f: Sink, table: str, obj: Any, ids: tuple[str, ...]) -> None:
    """The series of one object of ``table`` (a domain, a vCPU, a device, a pool...) labelled ``ids``."""
    for info in _INFOS[table]:
        if info.present(obj):
            f.add(info.family.name, ids + tuple([label.get(obj) for label in info.labels]), info.value(obj))
    add = f.add
    for name, read in _PLANS[table]:
        add(name, ids, read(obj))


def _domain_families(f: Sink, dom: Domain) -> None:
    ids = (dom.name, dom.uuid)
    _rows(f, "domain", dom, ids)
    if dom.metadata:
        f.add_named(METADATA_INFO, ids, dom.metadata, 1)
    if dom.job is not NO_JOB or dom.last_job is not NO_JOB:
        _rows(f, "job", dom, ids)
    if dom.perf is not NO_PERF:
        _rows(f, "perf", dom, ids)
    for io in dom.iothreads:
        _rows(f, "iothread", io, ids + (str(io.id),))
    for pin in dom.vcpu_pins:
        _rows(f, "pin", pin, ids + (str(pin.vcpu),))
    for vcpu in dom.vcpus:
        _rows(f, "vcpu", vcpu, ids + (str(vcpu.number),))
    for blk in dom.blocks:
        _rows(f, "block", blk, ids + (blk.target,))
    for nic in dom.interfaces:
        _rows(f, "interface", nic, ids + (nic.target,))


def snapshot_families(snap: Snapshot, groups: frozenset[str], now: float | None) -> Iterator[Metric]:
    """All metric families for one snapshot (pure: no I/O, no libvirt).

    ``now`` gives the snapshot's age; with None the age is left out, so that
    the output depends on the snapshot alone and can be cached.
    """
    f = Families(groups)
    fill(f, snap, now)
    yield from f


def behind(snap: Snapshot) -> list[tuple[str, str, float]]:
    """(name, uuid, stats time) of the domains whose last complete stats are older than the snapshot."""
    return [(d.name, d.uuid, d.stats_at) for d in snap.domains if d.stats_at is not None and d.stats_at < snap.taken_at]


def add_ages(f: Sink, snap: Snapshot, behind: list[tuple[str, str, float]], now: float
              ) -> None:
    """The ages that grow between polls: the snapshot's, and that of each domain behind it."""
    f.add("libvirt_exporter_snapshot_age_seconds", (), max(0.0, now - snap.taken_at))
    for name, uuid, stats_at in behind:
        f.add("libvirt_domain_stats_age_seconds", (name, uuid), max(0.0, now - stats_at))


def fill(f: Sink, snap: Snapshot, now: float | None, *, domains: bool = True) -> None:
    f.add("libvirt_up", (), 1 if snap.up else 0)
    host = snap.host
    f.add("libvirt_versions_info",
          (host.driver if host else "", version_text(host.hypervisor_version) if host else "",
           version_text(host.libvirt_version) if host else "", __version__), 1)
    if snap.up:
        f.add("libvirt_exporter_poll_duration_seconds", (), snap.poll_duration_s)
        f.add("libvirt_exporter_snapshot_timestamp_seconds", (), snap.taken_at)
    f.add("libvirt_exporter_last_poll_success_timestamp_seconds", (), snap.last_success_at)
    f.add("libvirt_exporter_poll_stalled", (), 1 if snap.stalled else 0)
    if snap.up:
        for group in ("domain", "node", "pool", "network"):
            f.add("libvirt_exporter_stuck_calls", (group,), snap.stuck_calls.get(group, 0))
    for group, count in sorted(snap.poll_errors.items()):
        f.add("libvirt_exporter_poll_errors_total", (group,), count)
    f.add("libvirt_exporter_reconnects_total", (), snap.reconnects)
    f.add("libvirt_exporter_events_total", (), snap.events)
    if not snap.up:
        return

    f.add("libvirt_domains_number", (), len(snap.domains))
    for dom in snap.domains if domains else ():
        _domain_families(f, dom)
    if now is not None:
        add_ages(f, snap, behind(snap), now)

    if host is not None:
        f.add("libvirt_node_info", (host.hostname, host.cpu_model), 1 if host.cpus is not None else None)
        _rows(f, "host", host, ())
        for mode, ns in sorted(host.cpu_time_ns.items()):
            f.add("libvirt_node_cpu_seconds_total", (mode,), ns * NS)
    for pool in snap.pools:
        _rows(f, "pool", pool, (pool.name, pool.uuid))
    for net in snap.networks:
        _rows(f, "network", net, (net.name, net.uuid))
