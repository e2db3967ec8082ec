"""The :class:`Source`: one libvirt connection and everything learnt about its driver, read by polls.

:meth:`Source.poll` is a blocking call meant for a worker thread.  It reads
every domain's state in one bulk call, each domain's other stats groups in a
call of its own with a deadline (on lanes, :mod:`exporter.source.connection`),
falls back to per-domain calls for groups the driver lacks in bulk
(:mod:`exporter.source.fallback`) and builds the snapshot values with the
pure parsers (:mod:`exporter.source.domain`, :mod:`exporter.source.parse`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import libvirt

import exporter.source.bulk as bulk
import exporter.source.domxml as domxml
import exporter.source.parse as parse
from exporter.calls import run_bounded
from exporter.errors import ConnectionLost, DomainGone, SourceError
from exporter.metadata import MetadataMap
from exporter.snapshot import NO_JOB, Domain, DomainEvent, Host, Job, Network, StoragePool, frozen_map
from exporter.source.connection import (
    MIGRATION_IN,
    MIGRATION_OUT,
    Connection,
    Lane,
    as_source_error,
    convert,
    count_failure,
)
from exporter.source.domain import build_domain
from exporter.source.fallback import DomainCalls
from exporter.source.host import HostGroups
from exporter.source.jobs import Deadlines, DomainJob
from exporter.source.placement import Placements

log = logging.getLogger("exporter.source")  # one logger for the whole boundary


@dataclass(frozen=True, slots=True)
class PollResult:
    host: Host
    domains: tuple[Domain, ...]
    pools: tuple[StoragePool, ...]
    networks: tuple[Network, ...]
    errors: Mapping[str, int] = field(default_factory=frozen_map)
    #: libvirt calls given up on and still running, by group: "domain" (one per
    #: stuck domain), "node", "pool", "network".
    stuck: Mapping[str, int] = field(default_factory=frozen_map)


class Source:
    """One libvirt connection and everything learnt about its driver."""

    def __init__(
        self,
        uri: str,
        *,
        read_only: bool = True,
        keepalive_interval: int = 5,
        keepalive_count: int = 3,
        call_timeout: float = 5.0,
        poll_timeout: float = 0.0,
        workers: int = 3,
        metadata: MetadataMap | None = None,
        dirty_rate: tuple[int, int] = (0, 1),
        placement_every: int = 1,
    ) -> None:
        """``call_timeout``: a per-domain or host-group call running longer is given up on.

        ``poll_timeout`` (0: none): per-domain calls not yet begun when this
        much of the poll is spent, less one ``call_timeout`` kept for the host
        groups, are skipped; those domains are served from the bulk call.

        ``workers``: per-domain calls in flight at once.  Each runs on a
        connection of its own (a lane): libvirtd lets one hung call on a
        connection hold up other calls on it (seen with libvirt 9.0), so the
        main connection (events, state, control) never carries a call that
        may hang, and a lane stays with its hung call until it returns.

        ``metadata``: the site's labels, read from each definition (:mod:`exporter.metadata`).
        ``dirty_rate``: (every N polls, for S seconds) a dirty-rate calculation is started on each running domain
        (N 0: never); it needs a read-write connection.
        ``placement_every``: ask each running domain where its vCPUs run on one poll in N (:mod:`.placement`).
        """
        self._metadata = metadata
        self._dirty_rate_every, self._dirty_rate_seconds = dirty_rate
        self._polls = 0
        self._dirty_rate_now = 0  # seconds of the calculations this poll starts; 0: none
        self.uri = uri
        self.read_only = read_only
        self._call_timeout = call_timeout
        self._poll_timeout = poll_timeout
        self._workers = workers
        self._lock = threading.Lock()
        self._link = Connection(uri, read_only=read_only, keepalive=(keepalive_interval, keepalive_count),
                                lock=self._lock)
        self._bulk_mask: int | None = None  # stats groups the driver has in bulk
        self._nowait = False
        self._xml: dict[str, tuple[int, domxml.DomainConfig]] = {}
        self._stale: set[str] = set()
        self._unsupported: set[str] = set()  # optional per-domain calls the driver refused (fallback.DomainCalls)
        self._job_hints: set[str] = set()  # domains to ask for their job: an event or the last poll saw one
        self._last_jobs: dict[str, Job] = {}  # each domain's last completed job, from JOB_COMPLETED events
        self._placements = Placements(placement_every)
        self._deadlines = Deadlines(self._lock, call_timeout)
        self._host = HostGroups(self._link, self._lock, call_timeout)

    # -- connection --------------------------------------------------------

    def open(self, on_close: Callable[[str], None] | None = None) -> None:
        """Open the connection; raises :class:`SourceError` on failure."""
        self._bulk_mask = None
        self._xml.clear()
        self._unsupported.clear()
        self._link.open(on_close)

    def close(self) -> None:
        self._link.close()

    @property
    def connected(self) -> bool:
        return self._link.connected

    def invalidate(self, uuid: str) -> None:
        """Forget the cached XML of one domain (its definition changed)."""
        with self._lock:
            self._stale.add(uuid)

    def watch(self, on_event: Callable[[DomainEvent], None]) -> None:
        """Deliver lifecycle and device events (in libvirt's event thread); job events are kept for the polls."""
        self._link.watch(on_event, functools.partial(self._job_event, on_event))

    def act(self, uuid: str, verb: str) -> None:
        """Carry out one lifecycle action on a domain (blocking; for a worker thread).

        Verbs: start, start_paused, suspend, resume, wakeup, shutdown, destroy,
        reboot, reset, managed_save.  Raises :class:`SourceError` subclasses.
        Runs on a lane: an action that hangs with its QEMU holds up nothing else.
        """
        self._link.act(uuid, verb)

    def describe(self, uuid: str, groups: Iterable[str]) -> Domain:
        """One domain's state and definition, read with no call that waits on its QEMU (blocking).

        For a domain an event announced or redefined, so that it is served
        before the next poll.  Raises :class:`DomainGone` if it no longer
        exists, other :class:`SourceError` subclasses on failure.
        """
        self._link.require()
        wanted = frozenset(groups) | {"state"}

        def read(lane: Lane) -> Domain:
            assert lane.conn is not None
            try:
                dom = lane.conn.lookupByUUIDString(uuid)
                persistent = bool(dom.isPersistent())
                job = DomainJob(dom, dom.name(), uuid, dom.ID(), {}, True, persistent and bool(dom.autostart()),
                                persistent)
            except libvirt.libvirtError as exc:
                raise convert(exc, lane.conn) from None
            return self._domain(lane.conn, job, {}, 0, wanted, Counter(), monitor=False)

        try:
            return self._link.on_lane(read)
        except libvirt.libvirtError as exc:
            raise convert(exc, self._link.conn) from None

    # -- polling -------------------------------------------------------------

    def _probe(self, conn: libvirt.virConnect) -> None:
        """Find once per connection which stats groups the driver has in bulk."""
        found = bulk.probe(conn)
        if found is None:
            return
        self._bulk_mask, self._nowait = found
        missing = sorted(set(bulk.GROUP_FLAGS) - self.bulk_groups())
        if missing:
            log.info("%s lacks bulk stats for %s; using per-domain calls for those", self._link.shown_uri,
                     ", ".join(missing))

    def bulk_groups(self) -> frozenset[str]:
        """Stats groups served by getAllDomainStats on this connection."""
        return bulk.groups(self._bulk_mask or 0)

    def poll(self, groups: Iterable[str], keep: Callable[[str], bool] = lambda _name: True) -> PollResult:
        """Read the whole host once.  Raises :class:`ConnectionLost` only.

        One bulk call reads every domain's state, which needs no QEMU monitor;
        each domain's other groups come from a call of its own on a few
        threads, and a call past ``call_timeout`` is given up on.  Until it
        returns, that domain is served with its state and definition alone,
        marked ``timed_out``, and asked nothing that needs its monitor.  Host groups
        (node, pools, networks) are treated the same way.
        """
        conn = self._link.require()
        begun = time.monotonic()
        wanted = frozenset(groups) | {"state"}
        if self._bulk_mask is None:
            self._probe(conn)
        self._polls += 1
        every = self._dirty_rate_every
        self._dirty_rate_now = self._dirty_rate_seconds if every and (self._polls - 1) % every == 0 else 0
        errors: Counter[str] = Counter()
        in_bulk = self.bulk_groups() & wanted
        quick_mask = bulk.mask(in_bulk & bulk.NO_JOB_GROUPS)
        slow_mask = bulk.mask(in_bulk - bulk.NO_JOB_GROUPS)
        flags = bulk.NOWAIT if self._nowait else 0
        try:
            raw: list[tuple[Any, dict[str, Any]]] = conn.getAllDomainStats(quick_mask, flags)
        except libvirt.libvirtError as exc:
            err = convert(exc, conn)
            if isinstance(err, ConnectionLost):
                raise err from None
            log.warning("bulk stats failed on %s, falling back to per-domain calls: %s", self._link.shown_uri, err)
            errors["state"] += 1
            quick_mask = slow_mask = 0
            try:
                raw = [(dom, {}) for dom in conn.listAllDomains(0)]
            except libvirt.libvirtError as exc2:
                raise convert(exc2, conn) from None

        autostart = self._uuid_set(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART, errors)
        transient = self._uuid_set(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT, errors)
        with self._lock:
            stale, self._stale = self._stale, set()
        stuck = self._deadlines.stuck_now()
        seen: set[str] = set()
        todo: list[DomainJob] = []
        held: list[DomainJob] = []
        for dom, stats in raw:
            try:
                name = dom.name()
                if not keep(name):
                    continue
                uuid = dom.UUIDString()
            except libvirt.libvirtError as exc:
                self._skip_domain(convert(exc, conn), errors)
                continue
            seen.add(uuid)
            job = DomainJob(dom, name, uuid, dom.ID(), stats, uuid in stale, uuid in autostart,
                            uuid not in transient)
            (held if uuid in stuck else todo).append(job)

        def full(lane: Lane, job: DomainJob) -> tuple[Domain, Counter[str]]:
            own: Counter[str] = Counter()
            try:
                dom = job.dom if lane.shared else lane.domain(job.uuid)
            except libvirt.libvirtError as exc:
                raise convert(exc, lane.conn) from None
            mine = dataclasses.replace(job, dom=dom)
            stats = job.stats
            if slow_mask and job.id >= 0:
                # No NOWAIT here: a domain whose job is held (a hung action, another client's call) cannot give
                # its monitor-bound stats; waiting runs into the deadline and flags it, instead of quietly
                # serving half of them.
                stats = {**stats, **bulk.domain_stats(lane.conn, dom, slow_mask, 0)}
            return self._domain(lane.conn, mine, stats, quick_mask | slow_mask, wanted, own), own

        budget = self._poll_timeout - self._call_timeout - 0.5 if self._poll_timeout else 0.0
        outcome = run_bounded(todo, lambda job: self._link.on_lane(lambda lane: full(lane, job)),
                              workers=self._workers, call_timeout=self._call_timeout,
                              deadline=begun + max(budget, self._call_timeout) if budget else None,
                              on_late=self._deadlines.returned, name="libvirt-domain")
        if outcome.not_started:
            errors["timeout"] += 1
            log.warning("poll of %s ran out of time: %d domains served from the bulk call alone this time",
                        self._link.shown_uri, len(outcome.not_started))
        domains: list[Domain] = []
        late: list[DomainJob] = []
        now = time.time()
        for index, job in enumerate(todo):
            if index in outcome.results:
                domain, own = outcome.results[index]
                errors.update(own)
                self._deadlines.answered(job, now)
                domains.append(dataclasses.replace(domain, stats_at=now))
            elif index in outcome.errors:
                self._skip_domain(as_source_error(outcome.errors[index], conn), errors)
            elif index in outcome.abandoned:
                self._deadlines.missed(job)
                held.append(job)
            else:
                late.append(job)
        for job in held + late:  # state and the no-monitor groups only, no call that needs the domain's job
            try:
                domain = self._domain(conn, job, job.stats, quick_mask, wanted, errors, monitor=False)
            except libvirt.libvirtError as exc:
                self._skip_domain(convert(exc, conn), errors)
                continue
            except SourceError as err:
                self._skip_domain(err, errors)
                continue
            domains.append(dataclasses.replace(domain, timed_out=self._deadlines.is_stuck(job.uuid),
                                               stats_at=self._deadlines.fresh_at(job.uuid)))
        for uuid in set(self._xml) - seen:
            del self._xml[uuid]
        self._deadlines.forget_fresh_except(seen)
        with self._lock:
            self._deadlines.forget_since_except(seen)  # undefined meanwhile
            self._link.forget_handles_except(seen)
        for gone in set(self._last_jobs) - seen:  # the outcome of a domain's last job goes with the domain
            self._last_jobs.pop(gone, None)
        self._placements.forget_except(seen)
        host, pools, networks = self._host.read(wanted, errors)
        domains.sort(key=lambda d: d.name)
        with self._lock:
            stuck_counts = Counter({"domain": self._deadlines.stuck_count()})
            stuck_counts.update(self._host.stuck)
        return PollResult(host=host, domains=tuple(domains), pools=pools, networks=networks,
                          errors=frozen_map(errors), stuck=frozen_map(stuck_counts))

    @staticmethod
    def _skip_domain(err: SourceError, errors: Counter[str]) -> None:
        """A domain that vanished mid-poll is skipped; other failures are counted."""
        if isinstance(err, ConnectionLost):
            raise err
        if isinstance(err, DomainGone):
            log.debug("domain vanished during the poll; skipped")
            return
        errors["state"] += 1
        log.warning("domain skipped in this poll: %s", err)

    def _uuid_set(self, conn: libvirt.virConnect, flag: int, errors: Counter[str]) -> frozenset[str]:
        try:
            return frozenset(d.UUIDString() for d in conn.listAllDomains(flag))
        except libvirt.libvirtError as exc:
            count_failure(exc, self._link.conn, "state", errors)
            return frozenset()

    def _config(self, dom: Any, uuid: str, dom_id: int, stale: bool) -> domxml.DomainConfig:
        cached = self._xml.get(uuid)
        if cached is not None and cached[0] == dom_id and not stale:
            return cached[1]
        try:
            config = domxml.parse(dom.XMLDesc(0), self._metadata)
        except libvirt.libvirtError as exc:
            raise convert(exc, self._link.conn) from None
        self._xml[uuid] = (dom_id, config)
        return config

    def _domain(
        self,
        conn: libvirt.virConnect,
        job: DomainJob,
        stats: Mapping[str, Any],
        flags: int,
        wanted: frozenset[str],
        errors: Counter[str],
        *,
        monitor: bool = True,
    ) -> Domain:
        """One domain from its bulk stats (asked with the VIR_DOMAIN_STATS_* ``flags``) and its definition.

        What the bulk lacks comes from per-domain calls; with ``monitor`` False
        none is made that could wait on the domain's QEMU (see
        :func:`exporter.source.domain.build_domain`).
        """
        cfg = self._config(job.dom, job.uuid, job.id, job.stale)
        placement = self._placements.cached(job.uuid, job.id, self._polls) if monitor else None
        domain = build_domain(
            name=job.name, uuid=job.uuid, dom_id=job.id, persistent=job.persistent, autostart=job.autostart,
            cfg=cfg, stats=stats, bulk=bulk.groups(flags), wanted=wanted,
            read=DomainCalls(job.dom, conn, self._link, errors, self._unsupported), monitor=monitor,
            job_hint=job.uuid in self._job_hints, last_job=self._last_jobs.get(job.uuid, NO_JOB),
            host_cpus=self._link.host_cpus, dirty_rate_seconds=self._dirty_rate_now if monitor else 0,
            placement=placement,
        )
        if monitor and placement is None:
            self._placements.remember(domain)
        if monitor and "job" in wanted:  # a job seen is asked for again next poll, until it is over
            if domain.job is NO_JOB:
                self._job_hints.discard(job.uuid)
            else:
                self._job_hints.add(job.uuid)
        return domain

    def _job_event(self, on_event: Callable[[DomainEvent], None], uuid: str, name: str,
                   completed: Mapping[str, Any] | None) -> None:
        """A migration iteration (``completed`` None: a job runs) or a job's completion, with its statistics; the
        first iteration of a migration and the end of one are passed on as events (for notifications)."""
        if completed is None:
            if uuid not in self._job_hints:
                self._job_hints.add(uuid)
                on_event(DomainEvent(uuid=uuid, name=name, kind="migration_started", detail=MIGRATION_OUT))
            return
        job = parse.job_from_call(completed, parse.JOB_COMPLETED)
        self._last_jobs[uuid] = job
        if job.operation in (MIGRATION_IN, MIGRATION_OUT):
            on_event(DomainEvent(uuid=uuid, name=name, kind="migration_ended", detail=job.type or 0))
