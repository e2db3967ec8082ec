"""The only loop that polls libvirt.

:class:`Poller` owns the :class:`~exporter.source.Source`, runs each poll in a
worker thread, applies libvirt events between polls, and publishes every new
:class:`~exporter.snapshot.Snapshot` by replacing one reference.  Readers take
``poller.snapshot`` and never see a half-built picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from exporter.config import LibvirtSettings
from exporter.config.values import redact_uri
from exporter.describer import Described, Describer, merged
from exporter.errors import ConnectionLost, SourceError
from exporter.events import REDEFINING, apply_event, position, with_definition
from exporter.snapshot import ALL_GROUPS, EMPTY, FULL_UPDATE, DomainEvent, Snapshot, Update, frozen_map
from exporter.source import PollResult, Source
from exporter.threads import in_daemon_thread

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Error groups always exported, so that their series exist from the start.
ERROR_GROUPS = ALL_GROUPS + ("connection", "timeout")
#: How long the exit waits for the libvirt connection to close (issue 17: SIGTERM to exit within half a second).
_CLOSE_AT_EXIT_S = 0.25

def snapshot_of(result: PollResult, started: float, duration: float, **counters: object) -> Snapshot:
    """The snapshot of one successful poll (counters such as poll_errors may be given)."""
    return Snapshot(up=True, taken_at=started, poll_duration_s=duration, last_success_at=started + duration,
                    host=result.host, domains=result.domains, pools=result.pools, networks=result.networks,
                    stuck_calls=result.stuck, **counters)  # type: ignore[arg-type]


class _Abandoned(SourceError):
    """A connection call was given up on (deadline or shutdown) while still running."""


class Poller:
    """Keeps one libvirt connection and a current snapshot of the host."""

    def __init__(
        self,
        settings: LibvirtSettings,
        *,
        read_only: bool = True,
        source_factory: Callable[[], Source] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``read_only``: open libvirt read-only (lifecycle control, when enabled, needs it read-write)."""
        self._settings = settings
        self._source_factory = source_factory or (
            lambda: Source(
                settings.uri,
                read_only=read_only,
                keepalive_interval=settings.keepalive_interval_s,
                keepalive_count=settings.keepalive_count,
                call_timeout=settings.domain_deadline_s,
                poll_timeout=settings.poll_deadline_s,
                metadata=settings.metadata,
                dirty_rate=(settings.dirty_rate_every, settings.dirty_rate_seconds),
                placement_every=settings.vcpu_placement_every,
            )
        )
        self._clock = clock
        self._shown_uri = redact_uri(settings.uri)  # for the log: no credentials
        self._errors: Counter[str] = Counter({g: 0 for g in ERROR_GROUPS})
        # Until the first poll: libvirt_up 0 and every error series at 0, never a missing series.
        self._snapshot: Snapshot = EMPTY.replace(poll_errors=frozen_map(self._errors))
        self._reconnects = 0
        self._events = 0
        self._last_success: float | None = None
        # Events, and definitions read, while a poll runs: applied again to its result, which may predate them.
        self._overlay: list[DomainEvent | Described] | None = None
        self._polls_begun = 0
        self._served_poll = 0  # the number (in order begun) of the poll whose result is served
        self._describer = Describer(lambda: self._source, lambda: settings.collectors, settings.domain_deadline_s,
                                    lambda: self._polls_begun, self._described)
        self._wake = asyncio.Event()
        self._source: Source | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ever_connected = False
        self._stuck: asyncio.Future[Any] | None = None  # a connection call given up on, still running
        self._down_logged = False
        self._last_poll_end = 0.0
        self._last_poll_duration = 0.0
        self._repoll = False  # poll again at once: a stalled poll returned and its result was dropped
        self._listeners: list[Callable[[Snapshot, Update], None]] = []

    def subscribe(self, listener: Callable[[Snapshot, Update], None]) -> None:
        """Call ``listener`` with every snapshot published from now on, and what changed (on the loop)."""
        self._listeners.append(listener)

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def source(self) -> Source | None:
        """The live connection, for the control module; None while libvirt is unreachable."""
        return self._source

    # -- publishing (event-loop thread only) ---------------------------------

    def _publish(self, snapshot: Snapshot, update: Update = FULL_UPDATE) -> None:
        self._snapshot = snapshot.replace(
            poll_errors=frozen_map(self._errors),
            reconnects=self._reconnects,
            events=self._events,
            last_success_at=self._last_success,
        )
        for listener in self._listeners:
            try:
                listener(self._snapshot, update)
            except Exception:  # a broken listener must not stop polling
                log.exception("snapshot listener failed")

    def _publish_down(self) -> None:
        self._publish(Snapshot(up=False, taken_at=self._clock()))

    def _publish_result(self, result: PollResult, started: float, duration: float, number: int) -> None:
        """Serve a poll's result, with what events and definitions read told since it began."""
        snap = snapshot_of(result, started, duration)
        served = self._snapshot
        domains = snap.domains
        for item in self._overlay or ():
            if isinstance(item, Described):
                if item.after_poll >= number:  # read after this poll began: newer than its definition
                    domains = merged(domains, item.domain)
                continue
            known = None
            if served.up:  # a domain added by an event after the poll began keeps what was learnt of it since
                pos = position(served.domains, item.uuid, item.name)
                known = served.domains[pos] if pos is not None else None
            domains = apply_event(domains, item, known).domains
        snap = snap.replace(domains=domains)
        self._overlay = None
        self._served_poll = number
        self._errors.update(result.errors)
        self._last_success = self._clock()
        self._publish(snap)

    # -- events (arrive in libvirt's event thread) ---------------------------

    def _to_loop(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop has closed: we are shutting down

    def _event_from_libvirt(self, event: DomainEvent) -> None:
        self._to_loop(self.handle_event, event)

    def _closed_from_libvirt(self, reason: str) -> None:
        self._to_loop(self._connection_closed, reason)

    def _connection_closed(self, reason: str) -> None:
        log.debug("libvirt closed the connection (%s)", reason)
        self._wake.set()

    def handle_event(self, event: DomainEvent, *, from_libvirt: bool = True) -> None:
        """Apply one domain event to the current snapshot at once.

        ``from_libvirt`` is False for the expected outcome of an action this
        process just carried out; it is applied the same way but not counted.
        """
        if from_libvirt:
            self._events += 1
        if not self._settings.keep_domain(event.name):
            return
        if event.kind in REDEFINING and self._source is not None:
            self._source.invalidate(event.uuid)
        if self._overlay is not None:
            self._overlay.append(event)
        snap = self._snapshot
        if not snap.up:
            return
        applied = apply_event(snap.domains, event)
        log.debug("event %s for %s", event.kind, event.name)
        changes = ((applied.before, applied.after),) if applied.changed else ()
        # Listeners (notifications) hear only libvirt's own events, never the expected ones applied early.
        self._publish(snap.replace(domains=applied.domains), Update(event if from_libvirt else None, changes))
        if event.kind in REDEFINING and applied.after is not None:
            self._describer.ask(event.uuid, self._loop)
        if applied.needs_poll:
            self._wake.set()

    # -- definitions of domains that events announce (read off the loop) ------

    def _described(self, item: Described) -> None:
        if self._overlay is not None:
            self._overlay.append(item)
        if item.after_poll < self._served_poll:  # the served poll began after this read: it is newer
            return
        snap = self._snapshot
        if not snap.up or not self._settings.keep_domain(item.domain.name):
            return
        pos = position(snap.domains, item.domain.uuid, item.domain.name)
        if pos is None:
            return  # removed meanwhile
        before = snap.domains[pos]
        after = with_definition(before, item.domain)
        if after != before:
            self._publish(snap.replace(domains=snap.domains[:pos] + (after,) + snap.domains[pos + 1:]),
                          Update(None, ((before, after),)))

    # -- the loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        backoff = 1.0
        try:
            while not stop.is_set():
                if self._source is None:
                    if not await self._connect(stop):
                        await self._sleep(stop, backoff)
                        backoff = min(backoff * 2, self._settings.reconnect_backoff_max_s)
                        continue
                    backoff = 1.0
                if not await self._poll_once(stop):
                    continue  # connection lost: reconnect at once, then back off
                if self._repoll:
                    self._repoll = False
                    continue
                await self._sleep(stop, self._settings.poll_interval_s, wakeable=True)
        finally:
            # Stopping: a close that hangs with libvirtd is left to its daemon thread, which the exit ends.
            await self._drop_source(timeout=_CLOSE_AT_EXIT_S)

    def _min_gap(self) -> float:
        """Shortest time between an event-triggered poll and the previous one."""
        return max(1.0, 2 * self._last_poll_duration)

    async def _sleep(self, stop: asyncio.Event, delay: float, *, wakeable: bool = False) -> None:
        """Wait ``delay`` seconds or until stopped.

        When ``wakeable``, an event that asked for a poll ends the wait early,
        but no sooner than :meth:`_min_gap` after the last poll; a closed
        connection ends it at once.
        """
        deadline = self._clock() + delay
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return
                wake_wait = None
                if wakeable and self._wake.is_set():
                    if self._source is None or not self._source.connected:
                        return
                    since = self._clock() - self._last_poll_end
                    if since >= self._min_gap():
                        return
                    remaining = min(remaining, self._min_gap() - since)
                elif wakeable:
                    wake_wait = asyncio.ensure_future(self._wake.wait())
                waits = {stop_wait} if wake_wait is None else {stop_wait, wake_wait}
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if wake_wait is not None:
                    wake_wait.cancel()
        finally:
            stop_wait.cancel()

    async def _connect(self, stop: asyncio.Event) -> bool:
        if self._stuck is not None and not self._stuck.done():
            # An earlier connection attempt is still stuck in libvirt: do not pile up another thread.
            self._connect_failed(SourceError("an earlier connection attempt has not returned"))
            return False
        source = self._source_factory()
        self._wake.clear()
        try:
            # A libvirtd that accepts but never answers must not hang the loop (or SIGTERM).
            await self._call_or_stop(stop, source, in_daemon_thread(source.open, self._closed_from_libvirt))
            await self._call_or_stop(stop, source, in_daemon_thread(source.watch, self._event_from_libvirt))
        except _Abandoned as err:
            self._connect_failed(err)  # the stuck call closes the connection itself when it returns
            return False
        except SourceError as err:
            self._source = source
            await self._drop_source()
            self._connect_failed(err)
            return False
        if self._ever_connected:
            self._reconnects += 1
            log.warning("libvirt connection to %s restored", self._shown_uri)
        else:
            log.info("connected to libvirt at %s", self._shown_uri)
        self._ever_connected = True
        self._down_logged = False
        self._source = source
        self._wake.clear()
        return True

    def _connect_failed(self, err: SourceError) -> None:
        self._errors["connection"] += 1
        if not self._down_logged:
            log.error("libvirt at %s is unreachable: %s; retrying with backoff", self._shown_uri, err)
            self._down_logged = True
        self._publish_down()

    async def _call_or_stop(self, stop: asyncio.Event, source: Source, future: asyncio.Future[T]) -> T:
        """Await a connection call, giving up at the poll deadline or when stopped.

        A call given up on keeps running in its thread; when it returns, its
        connection is closed and its outcome dropped (raises :class:`_Abandoned`).
        """
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            waits: set[asyncio.Future[Any]] = {future, stop_wait}
            done, _ = await asyncio.wait(waits, timeout=self._settings.poll_deadline_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if future in done:
            return future.result()

        def late(finished: asyncio.Future[T]) -> None:
            if not finished.cancelled():
                finished.exception()  # retrieved: a late failure is expected, not an error
            in_daemon_thread(source.close)

        future.add_done_callback(late)
        self._stuck = future
        raise _Abandoned("stopping" if stop.is_set() else
                         f"libvirt did not answer within {self._settings.poll_deadline_s:g}s")

    async def _drop_source(self, timeout: float = 2.0) -> None:
        """Close the connection without letting a hung libvirtd block the loop."""
        source, self._source = self._source, None
        if source is not None:
            await asyncio.wait({in_daemon_thread(source.close)}, timeout=timeout)

    async def _poll_once(self, stop: asyncio.Event) -> bool:
        """One poll; False if the connection was lost."""
        source = self._source
        assert source is not None
        self._wake.clear()
        started = self._clock()
        self._overlay = []
        self._polls_begun += 1
        number = self._polls_begun
        config = self._settings
        future = in_daemon_thread(source.poll, config.collectors, config.keep_domain)
        stop_wait = asyncio.ensure_future(stop.wait())
        waits: set[asyncio.Future[Any]] = {future, stop_wait}
        try:
            await asyncio.wait(waits, timeout=config.poll_deadline_s, return_when=asyncio.FIRST_COMPLETED)
            late = not future.done() and not stop.is_set()
            if late:
                self._errors["timeout"] += 1
                log.warning(
                    "poll of %s has run past its %.1fs deadline; serving the snapshot from %.1fs ago until it "
                    "returns", self._shown_uri, config.poll_deadline_s, self._clock() - self._snapshot.taken_at,
                )
                self._publish(self._snapshot.replace(stalled=True))
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not future.done():
            return True  # stopping: the poll is left to its daemon thread
        if late:
            log.warning("stalled poll of %s returned after %.1fs; its data is that old, so it is dropped and a "
                        "fresh poll starts now", self._shown_uri, self._clock() - started)
        duration = self._clock() - started
        self._last_poll_end = self._clock()
        self._last_poll_duration = duration
        try:
            result = future.result()
        except ConnectionLost as err:
            self._overlay = None
            self._errors["connection"] += 1
            log.error("lost the libvirt connection to %s: %s", self._shown_uri, err)
            self._down_logged = True
            await self._drop_source()
            self._publish_down()
            return False
        except Exception:  # a bug must not kill the poller: count it, keep serving
            self._overlay = None
            self._errors["state"] += 1
            log.exception("poll failed unexpectedly")
            return True
        if late:  # never publish old data as a fresh poll: the stall flag stays until a fresh one is served
            self._overlay = None
            self._repoll = True
            return True
        self._publish_result(result, started, duration, number)
        return True
