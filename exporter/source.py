"""The libvirt boundary: the only module that imports :mod:`libvirt`.

It turns libvirt data into :mod:`exporter.snapshot` dataclasses and libvirt
errors into :mod:`exporter.errors` exceptions.  One :class:`Source` owns one
connection.  :meth:`Source.poll` is a blocking call meant for a worker thread;
event callbacks arrive on libvirt's default event loop, which runs in a daemon
thread started by :func:`start_event_loop`.
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
from typing import Any, TypeVar

import libvirt

from exporter import domxml
from exporter.calls import run_bounded
from exporter.config import redact_uri
from exporter.errors import ConnectionLost, DomainGone, SourceError, Unsupported
from exporter.snapshot import (
    STATE_NOSTATE,
    Block,
    Domain,
    DomainEvent,
    Host,
    Interface,
    Memory,
    Network,
    StoragePool,
    Vcpu,
    frozen_map,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_GROUP_FLAGS: Mapping[str, int] = {
    "state": libvirt.VIR_DOMAIN_STATS_STATE,
    "cpu": libvirt.VIR_DOMAIN_STATS_CPU_TOTAL,
    "balloon": libvirt.VIR_DOMAIN_STATS_BALLOON,
    "vcpu": libvirt.VIR_DOMAIN_STATS_VCPU,
    "interface": libvirt.VIR_DOMAIN_STATS_INTERFACE,
    "block": libvirt.VIR_DOMAIN_STATS_BLOCK,
}
#: Bulk groups that libvirt reads without the domain's job, so that a hung QEMU
#: monitor cannot hold them up.  Only ``state``: on libvirt 9 with QEMU 7.2 even
#: ``cpu`` asks the monitor (halt-poll figures), and a whole-host call that asks
#: a frozen QEMU hangs for every domain.  The state of the whole host comes in one
#: call; the other groups come in one call per domain, each with its own deadline.
_NO_JOB_GROUPS = frozenset({"state"})

_EVENT_NAMES: Mapping[int, str] = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

_CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
    }
)
_UNSUPPORTED_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    }
)

# libvirt prints every error to stderr unless a handler is installed; ours are
# raised as exceptions and logged where they are handled.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread.

    Needed for events, keepalive and the close callback.  Idempotent; must
    run before the first connection that wants events is opened.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except libvirt.libvirtError as exc:  # pragma: no cover - defensive
                    log.warning("libvirt event loop iteration failed: %s", exc)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _convert(exc: libvirt.libvirtError, conn: libvirt.virConnect | None = None) -> SourceError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainGone(message, code=code)
    if code in _UNSUPPORTED_CODES:
        return Unsupported(message, code=code)
    lost = code in _CONNECTION_CODES or exc.get_error_domain() == libvirt.VIR_FROM_RPC
    if conn is not None and not lost:
        try:
            lost = not conn.isAlive()
        except libvirt.libvirtError:
            lost = True
    if lost:
        return ConnectionLost(message, code=code)
    return SourceError(message, code=code)


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
        """
        self.uri = uri
        self._shown_uri = redact_uri(uri)  # for the log: no user, password or secret-bearing query value
        self.read_only = read_only
        self._keepalive = (keepalive_interval, keepalive_count)
        self._call_timeout = call_timeout
        self._poll_timeout = poll_timeout
        self._workers = workers
        self._conn: libvirt.virConnect | None = None
        self._bulk_mask: int | None = None  # stats groups the driver has in bulk
        self._nowait = False
        self._unsupported: set[str] = set()  # host calls the driver lacks
        self._static = Host(uri=uri)  # what does not change while connected, asked once in open()
        self._xml: dict[str, tuple[int, domxml.DomainConfig]] = {}
        self._stale: set[str] = set()
        self._lock = threading.Lock()
        self._callbacks: list[int] = []
        # Calls given up on and still running, by domain UUID and by host group: nothing new is asked of
        # them until the call returns.
        self._stuck_domains: set[str] = set()
        self._stuck_groups: set[str] = set()
        self._fresh_at: dict[str, float] = {}  # Unix time of each domain's last complete stats
        self._stuck_since: dict[str, float] = {}  # first deadline missed, until a call succeeds in time
        self._lanes: list[_Lane] = []  # idle lanes; one in use is held by its call
        self._shared_lane: _Lane | None = None  # the test driver's lanes: the main connection

    # -- connection --------------------------------------------------------

    def open(self, on_close: Callable[[str], None] | None = None) -> None:
        """Open the connection; raises :class:`SourceError` on failure."""
        try:
            conn = libvirt.openReadOnly(self.uri) if self.read_only else libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise ConnectionLost(exc.get_error_message() or str(exc), code=exc.get_error_code()) from None
        self._conn = conn
        self._bulk_mask = None
        self._xml.clear()
        try:
            conn.setKeepAlive(*self._keepalive)
        except libvirt.libvirtError as exc:
            log.debug("keepalive not available on %s: %s", self._shown_uri, exc.get_error_message())
        if on_close is not None:
            reasons = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}

            def closed(_conn: Any, reason: int, _opaque: Any) -> None:
                on_close(reasons.get(reason, f"reason {reason}"))

            try:
                conn.registerCloseCallback(closed, None)
            except libvirt.libvirtError as exc:
                log.debug("close callback not available: %s", exc.get_error_message())
        self._static = Host(
            hostname=self._call_or(conn.getHostname, ""),
            driver=self._call_or(conn.getType, ""),
            hypervisor_version=self._call_or(conn.getVersion, 0),
            libvirt_version=self._call_or(conn.getLibVersion, 0),
            uri=self._call_or(conn.getURI, self.uri),
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        with self._lock:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.close()
        callbacks, self._callbacks = self._callbacks, []
        if conn is None:
            return
        for callback_id in callbacks:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass  # the connection is already dead
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    @property
    def connected(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _require(self) -> libvirt.virConnect:
        if self._conn is None:
            raise ConnectionLost("not connected")
        return self._conn

    def _call_or(self, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except libvirt.libvirtError as exc:
            err = _convert(exc, self._conn)
            if isinstance(err, ConnectionLost):
                raise err from None
            return default

    # -- lanes: connections for calls that may hang ---------------------------

    def _take_lane(self) -> _Lane:
        if self._static.driver == "TEST":
            # The test driver cannot hang, and every connection to a node file gets a private copy of the
            # host: its lanes all share the main connection, so they see the host that events describe.
            shared = self._shared_lane
            if shared is None or shared.conn is not self._conn:
                shared = self._shared_lane = _Lane(self._require(), shared=True)
            return shared
        with self._lock:
            if self._lanes:
                return self._lanes.pop()
        try:  # read-write only when control is on, like the main connection
            return _Lane(libvirt.openReadOnly(self.uri) if self.read_only else libvirt.open(self.uri))
        except libvirt.libvirtError as exc:
            raise ConnectionLost(exc.get_error_message() or str(exc), code=exc.get_error_code()) from None

    def _give_lane(self, lane: _Lane) -> None:
        """Back to the pool once its call has returned (closed if the source was closed meanwhile)."""
        if lane.shared:
            return
        with self._lock:
            if self._conn is not None:
                self._lanes.append(lane)
                return
        lane.close()

    def _on_lane(self, fn: Callable[[_Lane], T]) -> T:
        """Run ``fn`` on a lane of its own; the lane returns to the pool when ``fn`` does, however late."""
        lane = self._take_lane()
        try:
            return fn(lane)
        except ConnectionLost:
            lane.close()  # a dead connection is not reused
            raise
        except libvirt.libvirtError as exc:
            err = _convert(exc, lane.conn)
            if isinstance(err, ConnectionLost):
                lane.close()
                raise err from None
            raise
        finally:
            if lane.conn is not None:
                self._give_lane(lane)

    # -- events --------------------------------------------------------------

    def invalidate(self, uuid: str) -> None:
        """Forget the cached XML of one domain (its definition changed)."""
        with self._lock:
            self._stale.add(uuid)

    def watch(self, on_event: Callable[[DomainEvent], None]) -> None:
        """Deliver lifecycle and device events (in libvirt's event thread)."""
        conn = self._require()

        def lifecycle(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            kind = _EVENT_NAMES.get(event, f"event{event}")
            on_event(DomainEvent(uuid=dom.UUIDString(), name=dom.name(), kind=kind, detail=detail))

        def device(_conn: Any, dom: Any, _alias: str, _opaque: Any) -> None:
            on_event(DomainEvent(uuid=dom.UUIDString(), name=dom.name(), kind="device", detail=0))

        try:
            self._callbacks.append(
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
            )
        except libvirt.libvirtError as exc:
            raise _convert(exc, conn) from None
        for event_id in (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED):
            try:
                self._callbacks.append(conn.domainEventRegisterAny(None, event_id, device, None))
            except libvirt.libvirtError as exc:
                log.debug("device events not available: %s", exc.get_error_message())

    def describe(self, uuid: str, groups: Iterable[str]) -> Domain:
        """One domain's state and definition, read with no call that waits on its QEMU (blocking).

        For a domain an event announced or redefined, so that it is served
        before the next poll.  Raises :class:`DomainGone` if it no longer
        exists, other :class:`SourceError` subclasses on failure.
        """
        self._require()
        wanted = frozenset(groups) | {"state"}

        def read(lane: _Lane) -> Domain:
            assert lane.conn is not None
            try:
                dom = lane.conn.lookupByUUIDString(uuid)
                persistent = bool(dom.isPersistent())
                job = _DomainJob(dom, dom.name(), uuid, dom.ID(), {}, True, persistent and bool(dom.autostart()),
                                 persistent)
            except libvirt.libvirtError as exc:
                raise _convert(exc, lane.conn) from None
            return self._domain(lane.conn, job, {}, 0, wanted, Counter(), monitor=False)

        try:
            return self._on_lane(read)
        except libvirt.libvirtError as exc:
            raise _convert(exc, self._conn) from None

    # -- control -------------------------------------------------------------

    def act(self, uuid: str, verb: str) -> None:
        """Carry out one lifecycle action on a domain (blocking; for a worker thread).

        Verbs: start, start_paused, suspend, resume, wakeup, shutdown, destroy,
        reboot, reset, managed_save.  Raises :class:`SourceError` subclasses.
        Runs on a lane: an action that hangs with its QEMU holds up nothing else.
        """
        self._require()
        self._on_lane(lambda lane: self._act(lane, uuid, verb))

    @staticmethod
    def _act(lane: _Lane, uuid: str, verb: str) -> None:
        assert lane.conn is not None
        try:
            dom = lane.conn.lookupByUUIDString(uuid)
            if verb == "start":
                dom.create()  # restores a managed-save image when there is one
            elif verb == "start_paused":
                dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            elif verb == "suspend":
                dom.suspend()
            elif verb == "resume":
                dom.resume()
            elif verb == "wakeup":
                dom.pMWakeup(0)
            elif verb == "shutdown":
                dom.shutdown()
            elif verb == "destroy":
                dom.destroy()
            elif verb == "reboot":
                dom.reboot(0)
            elif verb == "reset":
                dom.reset(0)
            elif verb == "managed_save":
                dom.managedSave(0)
            else:
                raise ValueError(f"unknown action {verb!r}")
        except libvirt.libvirtError as exc:
            raise _convert(exc, lane.conn) from None

    # -- polling -------------------------------------------------------------

    def _probe(self, conn: libvirt.virConnect) -> None:
        """Find once per connection which stats groups the driver has in bulk."""
        enforce = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS
        try:
            sample = conn.listAllDomains(0)[:1]
        except libvirt.libvirtError as exc:
            raise _convert(exc, conn) from None
        mask = 0
        for flag in _GROUP_FLAGS.values():
            try:
                if sample:
                    conn.domainListGetStats(sample, flag, enforce)
                else:
                    conn.getAllDomainStats(flag, enforce)
            except libvirt.libvirtError as exc:
                err = _convert(exc, conn)
                if isinstance(err, ConnectionLost):
                    raise err from None
                if isinstance(err, DomainGone):  # raced with an undefine: try again next poll
                    return
                continue
            mask |= flag
        try:
            conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
            self._nowait = True
        except libvirt.libvirtError as exc:
            err = _convert(exc, conn)
            if isinstance(err, ConnectionLost):
                raise err from None
            self._nowait = False
        self._bulk_mask = mask
        missing = sorted(set(_GROUP_FLAGS) - self.bulk_groups())
        if missing:
            log.info("%s lacks bulk stats for %s; using per-domain calls for those", self._shown_uri,
                     ", ".join(missing))

    def bulk_groups(self) -> frozenset[str]:
        """Stats groups served by getAllDomainStats on this connection."""
        mask = self._bulk_mask or 0
        return frozenset(g for g, f in _GROUP_FLAGS.items() if mask & f)

    def poll(self, groups: Iterable[str], keep: Callable[[str], bool] = lambda _name: True) -> PollResult:
        """Read the whole host once.  Raises :class:`ConnectionLost` only.

        One bulk call reads every domain's state, which needs no QEMU monitor;
        each domain's other groups come from a call of its own on a few
        threads, and a call past ``call_timeout`` is given up on.  Until it
        returns, that domain is served with its state and definition alone,
        marked ``timed_out``, and asked nothing that needs its monitor.  Host groups
        (node, pools, networks) are treated the same way.
        """
        conn = self._require()
        begun = time.monotonic()
        wanted = frozenset(groups) | {"state"}
        if self._bulk_mask is None:
            self._probe(conn)
        errors: Counter[str] = Counter()
        in_bulk = self.bulk_groups() & wanted
        quick_mask = _mask(in_bulk & _NO_JOB_GROUPS)
        slow_mask = _mask(in_bulk - _NO_JOB_GROUPS)
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT if self._nowait else 0
        try:
            raw: list[tuple[Any, dict[str, Any]]] = conn.getAllDomainStats(quick_mask, flags)
        except libvirt.libvirtError as exc:
            err = _convert(exc, conn)
            if isinstance(err, ConnectionLost):
                raise err from None
            log.warning("bulk stats failed on %s, falling back to per-domain calls: %s", self._shown_uri, err)
            errors["state"] += 1
            quick_mask = slow_mask = 0
            try:
                raw = [(dom, {}) for dom in conn.listAllDomains(0)]
            except libvirt.libvirtError as exc2:
                raise _convert(exc2, conn) from None

        autostart = self._uuid_set(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART, errors)
        transient = self._uuid_set(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT, errors)
        with self._lock:
            stale, self._stale = self._stale, set()
            stuck = set(self._stuck_domains)
        seen: set[str] = set()
        todo: list[_DomainJob] = []
        held: list[_DomainJob] = []
        for dom, stats in raw:
            try:
                name = dom.name()
                if not keep(name):
                    continue
                uuid = dom.UUIDString()
            except libvirt.libvirtError as exc:
                self._skip_domain(_convert(exc, conn), errors)
                continue
            seen.add(uuid)
            job = _DomainJob(dom, name, uuid, dom.ID(), stats, uuid in stale, uuid in autostart,
                             uuid not in transient)
            (held if uuid in stuck else todo).append(job)

        def full(lane: _Lane, job: _DomainJob) -> tuple[Domain, Counter[str]]:
            own: Counter[str] = Counter()
            try:
                dom = job.dom if lane.shared else lane.domain(job.uuid)
            except libvirt.libvirtError as exc:
                raise _convert(exc, lane.conn) from None
            mine = dataclasses.replace(job, dom=dom)
            stats = job.stats
            if slow_mask and job.id >= 0:
                # No NOWAIT here: a domain whose job is held (a hung action, another client's call) cannot give
                # its monitor-bound stats; waiting runs into the deadline and flags it, instead of quietly
                # serving half of them.
                stats = {**stats, **self._domain_stats(lane.conn, dom, slow_mask, 0)}
            return self._domain(lane.conn, mine, stats, quick_mask | slow_mask, wanted, own), own

        budget = self._poll_timeout - self._call_timeout - 0.5 if self._poll_timeout else 0.0
        outcome = run_bounded(todo, lambda job: self._on_lane(lambda lane: full(lane, job)), workers=self._workers,
                              call_timeout=self._call_timeout,
                              deadline=begun + max(budget, self._call_timeout) if budget else None,
                              on_late=self._domain_returned, name="libvirt-domain")
        if outcome.not_started:
            errors["timeout"] += 1
            log.warning("poll of %s ran out of time: %d domains served from the bulk call alone this time",
                        self._shown_uri, len(outcome.not_started))
        domains: list[Domain] = []
        late: list[_DomainJob] = []
        now = time.time()
        for index, job in enumerate(todo):
            if index in outcome.results:
                domain, own = outcome.results[index]
                errors.update(own)
                self._fresh_at[job.uuid] = now
                self._domain_answered(job)
                domains.append(dataclasses.replace(domain, stats_at=now))
            elif index in outcome.errors:
                self._skip_domain(_as_source_error(outcome.errors[index], conn), errors)
            elif index in outcome.abandoned:
                self._domain_stuck(job)
                held.append(job)
            else:
                late.append(job)
        for job in held + late:  # state and the no-monitor groups only, no call that needs the domain's job
            try:
                domain = self._domain(conn, job, job.stats, quick_mask, wanted, errors, monitor=False)
            except libvirt.libvirtError as exc:
                self._skip_domain(_convert(exc, conn), errors)
                continue
            except SourceError as err:
                self._skip_domain(err, errors)
                continue
            domains.append(dataclasses.replace(domain, timed_out=job.uuid in self._stuck_domains,
                                               stats_at=self._fresh_at.get(job.uuid)))
        for uuid in set(self._xml) - seen:
            del self._xml[uuid]
        for uuid in set(self._fresh_at) - seen:
            del self._fresh_at[uuid]
        with self._lock:
            for uuid in set(self._stuck_since) - seen:  # undefined meanwhile
                del self._stuck_since[uuid]
            for lane in self._lanes:
                lane.forget_except(seen)
        host, pools, networks = self._host_groups(conn, wanted, errors)
        domains.sort(key=lambda d: d.name)
        with self._lock:
            stuck_counts = Counter({"domain": len(self._stuck_domains)})
            stuck_counts.update(self._stuck_groups)
        return PollResult(host=host, domains=tuple(domains), pools=pools, networks=networks,
                          errors=frozen_map(errors), stuck=frozen_map(stuck_counts))

    def _domain_stats(self, conn: libvirt.virConnect, dom: Any, mask: int, flags: int) -> dict[str, Any]:
        """One domain's monitor-bound stats groups (blocking; may hang with the domain's QEMU)."""
        try:
            found = conn.domainListGetStats([dom], mask, flags)
        except libvirt.libvirtError as exc:
            err = _convert(exc, conn)
            if isinstance(err, ConnectionLost | DomainGone):
                raise err from None
            log.debug("stats of one domain failed: %s", err)
            return {}
        return dict(found[0][1]) if found else {}

    def _domain_stuck(self, job: _DomainJob) -> None:
        with self._lock:
            self._stuck_domains.add(job.uuid)
            first = job.uuid not in self._stuck_since
            self._stuck_since.setdefault(job.uuid, time.monotonic())
        if first:
            log.warning("domain %s has not answered within %gs (a hung QEMU monitor, disk or agent?); serving "
                        "only its state until it does", job.name, self._call_timeout)

    def _domain_returned(self, job: _DomainJob, seconds: float) -> None:
        """An abandoned call returned: the domain may be asked again (it counts as back once it answers in time)."""
        with self._lock:
            self._stuck_domains.discard(job.uuid)
        log.debug("the abandoned stats call of domain %s returned after %.1fs", job.name, seconds)

    def _domain_answered(self, job: _DomainJob) -> None:
        with self._lock:
            since = self._stuck_since.pop(job.uuid, None)
        if since is not None and job.id >= 0:  # (a domain powered off meanwhile is not "back")
            log.warning("domain %s answers again after %.1fs; its stats are fresh again", job.name,
                        time.monotonic() - since)

    def _host_groups(
        self, conn: libvirt.virConnect, wanted: frozenset[str], errors: Counter[str]
    ) -> tuple[Host, tuple[StoragePool, ...], tuple[Network, ...]]:
        """Node, pools and networks, each on a thread of its own with a deadline; a stuck group is left out."""
        readers: dict[str, Callable[[libvirt.virConnect, Counter[str]], Any]] = {
            "node": lambda c, own: self._host(c, wanted, own),
            "pool": lambda c, own: self._pools(c, own),
            "network": lambda c, own: self._networks(c, own),
        }
        with self._lock:
            busy = set(self._stuck_groups)
        names = [g for g in readers if g in wanted and g not in busy]

        def read(group: str) -> tuple[Any, Counter[str]]:
            own: Counter[str] = Counter()
            return self._on_lane(lambda lane: readers[group](lane.conn, own)), own

        def returned(group: str, seconds: float) -> None:
            with self._lock:
                self._stuck_groups.discard(group)
            log.warning("the %s call of %s returned after %.1fs; asked again from the next poll", group,
                        self._shown_uri, seconds)

        outcome = run_bounded(names, read, workers=len(names), call_timeout=self._call_timeout,
                              on_late=returned, name="libvirt-host")
        found: dict[str, Any] = {}
        for index, group in enumerate(names):
            if index in outcome.results:
                value, own = outcome.results[index]
                errors.update(own)
                found[group] = value
            elif index in outcome.errors:
                raise outcome.errors[index]  # only ConnectionLost leaves the readers
            else:
                with self._lock:
                    self._stuck_groups.add(group)
                log.warning("the %s call of %s has not answered within %gs; %s left out until it returns",
                            group, self._shown_uri, self._call_timeout,
                            "host figures" if group == "node" else group + "s")
        return found.get("node", self._static), found.get("pool", ()), found.get("network", ())

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
            self._failed(exc, "state", errors)
            return frozenset()

    def _config(self, dom: Any, uuid: str, dom_id: int, stale: bool) -> domxml.DomainConfig:
        cached = self._xml.get(uuid)
        if cached is not None and cached[0] == dom_id and not stale:
            return cached[1]
        try:
            config = domxml.parse(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            raise _convert(exc, self._conn) from None
        self._xml[uuid] = (dom_id, config)
        return config

    def _domain(
        self,
        conn: libvirt.virConnect,
        job: _DomainJob,
        stats: Mapping[str, Any],
        bulk: int,
        wanted: frozenset[str],
        errors: Counter[str],
        *,
        monitor: bool = True,
    ) -> Domain:
        """One domain from its bulk stats, with per-domain calls for what the bulk lacks.

        With ``monitor`` False no call is made that could wait on the domain's
        QEMU (its state and definition only): groups missing from ``stats``
        are left empty, devices keep their configuration without counters.
        """
        dom, name, uuid, dom_id = job.dom, job.name, job.uuid, job.id
        cfg = self._config(dom, uuid, dom_id, job.stale)
        if "state.state" in stats:
            state, reason = int(stats["state.state"]), int(stats.get("state.reason", 0))
        else:
            try:
                state, reason = dom.state(0)
            except libvirt.libvirtError as exc:
                raise _convert(exc, conn) from None
        active = dom_id >= 0
        calls = active and monitor  # per-domain calls allowed
        info: list[int] | None = None

        def get_info() -> list[int] | None:
            nonlocal info
            if info is None and calls:
                info = self._domain_call(dom.info, "state", errors)
            return info

        def in_bulk(group: str) -> bool:
            return bool(bulk & _GROUP_FLAGS[group])

        max_kib = _opt_int(stats.get("balloon.maximum"))
        cur_kib = _opt_int(stats.get("balloon.current"))
        cpu_ns = _opt_int(stats.get("cpu.time"))
        user_ns = _opt_int(stats.get("cpu.user"))
        system_ns = _opt_int(stats.get("cpu.system"))
        if active and (max_kib is None or cur_kib is None or ("cpu" in wanted and not in_bulk("cpu"))):
            i = get_info()
            if i is not None:
                max_kib = max_kib if max_kib is not None else i[1]
                cur_kib = cur_kib if cur_kib is not None else i[2]
                if cpu_ns is None and "cpu" in wanted:
                    cpu_ns = i[4]
        if calls and "cpu" in wanted and not in_bulk("cpu") and user_ns is None:
            cpu_stats = self._domain_call(lambda: dom.getCPUStats(True), "cpu", errors)
            if cpu_stats:
                user_ns = _opt_int(cpu_stats[0].get("user_time"))
                system_ns = _opt_int(cpu_stats[0].get("system_time"))
        if max_kib is None:
            max_kib = cfg.max_memory_kib
        if cur_kib is None:
            cur_kib = cfg.memory_kib

        memory = Memory()
        if "balloon" in wanted:
            if in_bulk("balloon"):
                memory = _memory_from(stats, "balloon.", "last-update")
            elif calls:
                mstats = self._domain_call(dom.memoryStats, "balloon", errors)
                if mstats:
                    memory = _memory_from(mstats, "", "last_update")

        vcpus_current = _opt_int(stats.get("vcpu.current"))
        vcpus_max = _opt_int(stats.get("vcpu.maximum"))
        vcpus: tuple[Vcpu, ...] = ()
        if "vcpu" in wanted and calls:
            vcpus = self._vcpus(dom, stats if in_bulk("vcpu") else None, vcpus_current, errors)
            if vcpus_current is None and vcpus:
                vcpus_current = len(vcpus)
        if vcpus_current is None:
            i = get_info() if active else None
            vcpus_current = i[3] if i is not None else cfg.vcpus_current
        if vcpus_max is None:
            vcpus_max = cfg.vcpus_max

        blocks: tuple[Block, ...] = ()
        if "block" in wanted:
            blocks = self._blocks(dom, cfg, stats if in_bulk("block") else None, calls, errors)
        interfaces: tuple[Interface, ...] = ()
        if "interface" in wanted:
            interfaces = self._interfaces(dom, cfg, stats if in_bulk("interface") else None, active, calls,
                                          errors)

        return Domain(
            name=name,
            uuid=uuid,
            id=dom_id,
            active=active,
            state=state if state in range(0, 8) else STATE_NOSTATE,
            state_reason=reason,
            persistent=job.persistent,
            autostart=job.autostart,
            os_type=cfg.os_type,
            arch=cfg.arch,
            machine=cfg.machine,
            title=cfg.title,
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
        )

    def _domain_call(self, fn: Callable[[], T], group: str, errors: Counter[str]) -> T | None:
        """Run one per-domain call; count a failure against ``group``."""
        try:
            return fn()
        except libvirt.libvirtError as exc:
            err = _convert(exc, self._conn)
            if isinstance(err, DomainGone):
                raise err from None
            self._failed(exc, group, errors)
            log.debug("%s call failed: %s", group, err)
            return None

    def _vcpus(
        self, dom: Any, stats: Mapping[str, Any] | None, current: int | None, errors: Counter[str]
    ) -> tuple[Vcpu, ...]:
        placement: dict[int, tuple[int, int, int]] = {}
        info = self._domain_call(dom.vcpus, "vcpu", errors)
        if info:
            for number, state, time_ns, cpu in info[0]:
                placement[number] = (state, time_ns, cpu)
        if stats is not None:
            count = _opt_int(stats.get("vcpu.maximum")) or current or 0
            result = []
            for n in range(count):
                prefix = f"vcpu.{n}."
                if prefix + "state" not in stats:
                    continue
                cpu = placement.get(n, (0, 0, -1))[2]
                result.append(
                    Vcpu(
                        number=n,
                        state=_opt_int(stats.get(prefix + "state")),
                        time_ns=_opt_int(stats.get(prefix + "time")),
                        wait_ns=_opt_int(stats.get(prefix + "wait")),
                        delay_ns=_opt_int(stats.get(prefix + "delay")),
                        physical_cpu=cpu if cpu >= 0 else None,
                    )
                )
            return tuple(result)
        return tuple(
            Vcpu(number=n, state=s, time_ns=t, physical_cpu=c if c >= 0 else None)
            for n, (s, t, c) in sorted(placement.items())
        )

    def _blocks(
        self, dom: Any, cfg: domxml.DomainConfig, stats: Mapping[str, Any] | None, calls: bool, errors: Counter[str]
    ) -> tuple[Block, ...]:
        result: dict[str, Block] = {
            d.target: Block(
                target=d.target, device=d.device, disk_type=d.disk_type, bus=d.bus, source=d.source,
                driver_type=d.driver_type, readonly=d.readonly,
            )
            for d in cfg.disks
        }
        if stats is not None:
            for n in range(_opt_int(stats.get("block.count")) or 0):
                p = f"block.{n}."
                target = stats.get(p + "name")
                if not target:
                    continue
                base = result.get(target) or Block(target=target, source=str(stats.get(p + "path", "")))
                result[target] = _replace(
                    base,
                    source=base.source or str(stats.get(p + "path", "")),
                    read_requests=_opt_int(stats.get(p + "rd.reqs")),
                    read_bytes=_opt_int(stats.get(p + "rd.bytes")),
                    read_time_ns=_opt_int(stats.get(p + "rd.times")),
                    write_requests=_opt_int(stats.get(p + "wr.reqs")),
                    write_bytes=_opt_int(stats.get(p + "wr.bytes")),
                    write_time_ns=_opt_int(stats.get(p + "wr.times")),
                    flush_requests=_opt_int(stats.get(p + "fl.reqs")),
                    flush_time_ns=_opt_int(stats.get(p + "fl.times")),
                    capacity_bytes=_opt_int(stats.get(p + "capacity")),
                    allocation_bytes=_opt_int(stats.get(p + "allocation")),
                    physical_bytes=_opt_int(stats.get(p + "physical")),
                )
        elif calls:
            for target, base in list(result.items()):
                if base.device not in ("disk", "lun") or not base.source:
                    continue
                io = self._domain_call(functools.partial(dom.blockStats, target), "block", errors)
                size = self._domain_call(functools.partial(dom.blockInfo, target), "block", errors)
                changes: dict[str, int | None] = {}
                if io is not None:
                    rd_req, rd_bytes, wr_req, wr_bytes, errs = io
                    changes.update(
                        read_requests=_nonneg(rd_req), read_bytes=_nonneg(rd_bytes),
                        write_requests=_nonneg(wr_req), write_bytes=_nonneg(wr_bytes), errors=_nonneg(errs),
                    )
                if size is not None:
                    changes.update(capacity_bytes=size[0], allocation_bytes=size[1], physical_bytes=size[2])
                result[target] = _replace(base, **changes)
        return tuple(result.values())

    def _interfaces(
        self, dom: Any, cfg: domxml.DomainConfig, stats: Mapping[str, Any] | None, active: bool, calls: bool,
        errors: Counter[str],
    ) -> tuple[Interface, ...]:
        if not active:
            return ()
        configured = {n.target: n for n in cfg.nics if n.target}
        result: dict[str, Interface] = {
            t: Interface(target=t, mac=n.mac, model=n.model, interface_type=n.interface_type,
                         bridge=n.bridge, network=n.network)
            for t, n in configured.items()
        }
        if stats is not None:
            for n in range(_opt_int(stats.get("net.count")) or 0):
                p = f"net.{n}."
                target = stats.get(p + "name")
                if not target:
                    continue
                base = result.get(target) or Interface(target=target)
                result[target] = _replace(base, **_net_counters(
                    stats.get(p + "rx.bytes"), stats.get(p + "rx.pkts"), stats.get(p + "rx.errs"),
                    stats.get(p + "rx.drop"), stats.get(p + "tx.bytes"), stats.get(p + "tx.pkts"),
                    stats.get(p + "tx.errs"), stats.get(p + "tx.drop"),
                ))
        elif calls:
            for target, base in list(result.items()):
                io = self._domain_call(functools.partial(dom.interfaceStats, target), "interface", errors)
                if io is not None:
                    result[target] = _replace(base, **_net_counters(*io))
        return tuple(result.values())

    def _host(self, conn: libvirt.virConnect, wanted: frozenset[str], errors: Counter[str]) -> Host:
        if "node" not in wanted:
            return self._static
        info = self._host_call(conn.getInfo, "getInfo", errors)
        cpu_times: dict[str, int] = {}
        raw_cpu = self._host_call(lambda: conn.getCPUStats(-1), "getCPUStats", errors)
        if raw_cpu:
            cpu_times = {k: int(v) for k, v in raw_cpu.items()}
        total: int | None = None
        free: int | None = None
        mem = self._host_call(lambda: conn.getMemoryStats(-1), "getMemoryStats", errors)
        if mem:
            total = mem.get("total", 0) * 1024 if "total" in mem else None
            if "free" in mem:
                free = (mem.get("free", 0) + mem.get("buffers", 0) + mem.get("cached", 0)) * 1024
        if total is None and info:
            total = int(info[1]) * 1024 * 1024
        if free is None:
            free_bytes = self._host_call(conn.getFreeMemory, "getFreeMemory", errors)
            free = int(free_bytes) if free_bytes is not None else None
        return _replace(
            self._static,
            cpu_model=str(info[0]) if info else "",
            cpus=int(info[2]) if info else None,
            cpu_mhz=int(info[3]) if info else None,
            memory_total_bytes=total,
            memory_free_bytes=free,
            cpu_time_ns=frozen_map(cpu_times),
        )

    def _host_call(self, fn: Callable[[], T], name: str, errors: Counter[str]) -> T | None:
        if name in self._unsupported:
            return None
        try:
            return fn()
        except libvirt.libvirtError as exc:
            if isinstance(self._failed(exc, "node", errors, unsupported_ok=True), Unsupported):
                log.info("%s is not supported by %s; not asked again on this connection", name, self._shown_uri)
                self._unsupported.add(name)
            return None

    def _pools(self, conn: libvirt.virConnect, errors: Counter[str]) -> tuple[StoragePool, ...]:
        def build(pool: Any) -> StoragePool:
            state, capacity, allocation, available = pool.info()
            running = state == libvirt.VIR_STORAGE_POOL_RUNNING
            return StoragePool(
                name=pool.name(), uuid=pool.UUIDString(), state=state, autostart=bool(pool.autostart()),
                capacity_bytes=capacity if running else None,
                allocation_bytes=allocation if running else None,
                available_bytes=available if running else None,
            )

        return self._gather(conn.listAllStoragePools, build, "pool", errors)

    def _networks(self, conn: libvirt.virConnect, errors: Counter[str]) -> tuple[Network, ...]:
        def build(net: Any) -> Network:
            try:
                bridge = net.bridgeName() or ""
            except libvirt.libvirtError:
                bridge = ""  # networks without a bridge (macvtap, hostdev)
            return Network(name=net.name(), uuid=net.UUIDString(), active=bool(net.isActive()),
                           autostart=bool(net.autostart()), bridge=bridge)

        return self._gather(conn.listAllNetworks, build, "network", errors)

    def _gather(
        self, list_all: Callable[[int], list[Any]], build: Callable[[Any], T], group: str, errors: Counter[str]
    ) -> tuple[T, ...]:
        """List host objects (pools, networks) and build each; failures are counted under ``group``."""
        try:
            objects = list_all(0)
        except libvirt.libvirtError as exc:
            self._failed(exc, group, errors, unsupported_ok=True)
            return ()
        result = []
        for obj in objects:
            try:
                result.append(build(obj))
            except libvirt.libvirtError as exc:
                self._failed(exc, group, errors)
        return tuple(sorted(result, key=lambda o: o.name))  # type: ignore[attr-defined]

    def _failed(
        self, exc: libvirt.libvirtError, group: str, errors: Counter[str], *, unsupported_ok: bool = False
    ) -> SourceError:
        """Convert a failed call: raise if the connection is gone, else count it under ``group``."""
        err = _convert(exc, self._conn)
        if isinstance(err, ConnectionLost):
            raise err from None
        if not (unsupported_ok and isinstance(err, Unsupported)):
            errors[group] += 1
        return err


@dataclass(frozen=True, slots=True)
class _DomainJob:
    """One domain of a poll: its handle, identity and what the whole-host bulk call said of it."""

    dom: Any  # the handle the calls go through (on the lane that runs them)
    name: str
    uuid: str
    id: int  # from the poll's listing (a handle cached on a lane may carry an old one)
    stats: Mapping[str, Any]
    stale: bool  # its definition changed since it was cached
    autostart: bool
    persistent: bool


class _Lane:
    """A connection of its own for calls that may hang (stats, host groups, actions), with its domain handles."""

    def __init__(self, conn: libvirt.virConnect, *, shared: bool = False) -> None:
        self.conn: libvirt.virConnect | None = conn
        self.shared = shared  # the main connection itself: never closed here
        self._handles: dict[str, Any] = {}

    def domain(self, uuid: str) -> Any:
        dom = self._handles.get(uuid)
        if dom is None:
            assert self.conn is not None
            dom = self._handles[uuid] = self.conn.lookupByUUIDString(uuid)
        return dom

    def forget_except(self, uuids: set[str]) -> None:
        for uuid in set(self._handles) - uuids:
            del self._handles[uuid]

    def close(self) -> None:
        conn, self.conn = self.conn, None
        self._handles.clear()
        if conn is not None and not self.shared:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass


def _as_source_error(err: BaseException, conn: libvirt.virConnect | None) -> SourceError:
    if isinstance(err, libvirt.libvirtError):
        return _convert(err, conn)
    return err if isinstance(err, SourceError) else SourceError(f"{type(err).__name__}: {err}")


def _mask(groups: Iterable[str]) -> int:
    mask = 0
    for group in groups:
        mask |= _GROUP_FLAGS.get(group, 0)
    return mask


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _nonneg(value: int) -> int | None:
    """libvirt reports -1 for "not available" in the old tuple-returning calls."""
    return value if value >= 0 else None


def _net_counters(*values: Any) -> dict[str, int | None]:
    names = (
        "receive_bytes", "receive_packets", "receive_errors", "receive_drops",
        "transmit_bytes", "transmit_packets", "transmit_errors", "transmit_drops",
    )
    return {n: (_nonneg(int(v)) if v is not None else None) for n, v in zip(names, values, strict=True)}


def _memory_from(stats: Mapping[str, Any], prefix: str, last_update_key: str) -> Memory:
    def get(key: str) -> int | None:
        return _opt_int(stats.get(prefix + key))

    return Memory(
        actual_kib=get("current") if prefix else get("actual"),
        available_kib=get("available"),
        unused_kib=get("unused"),
        usable_kib=get("usable"),
        rss_kib=get("rss"),
        disk_caches_kib=get("disk_caches"),
        swap_in_kib=get("swap_in"),
        swap_out_kib=get("swap_out"),
        major_faults=get("major_fault"),
        minor_faults=get("minor_fault"),
        last_update_s=get(last_update_key) or None,  # 0: the guest has no balloon driver reporting
    )


def _replace(obj: T, **changes: Any) -> T:
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
