"""The ``/metrics`` endpoint's rendering: the snapshot's text, cached per snapshot, and the parts that change
between polls (ages, process metrics, the SNMP agent's and notifier's counters), rendered per scrape.

The families themselves are declared and rendered by :mod:`exporter.prometheus`.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.prometheus import Families, add_ages, behind, snapshot_families
from exporter.snapshot import Snapshot
from exporter.textrender import TextRenderer


class SnapshotCollector(Collector):
    """prometheus_client collector that reads whatever snapshot is current."""

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot],
        groups: frozenset[str],
        clock: Callable[[], float] | None = time.time,
    ) -> None:
        self._get_snapshot = get_snapshot
        self._groups = groups
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        return snapshot_families(self._get_snapshot(), self._groups, self._clock() if self._clock else None)

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot; skip the registration-time collect


class _AgeCollector(Collector):
    """The ages that grow between polls: the snapshot's, and each domain's stats."""

    def __init__(self, get_snapshot: Callable[[], Snapshot], clock: Callable[[], float], groups: frozenset[str]
                 ) -> None:
        self._get_snapshot = get_snapshot
        self._clock = clock
        self._groups = groups
        self._behind: tuple[Snapshot | None, list[tuple[str, str, float]]] = (None, [])

    def collect(self) -> Iterator[Metric]:
        snap = self._get_snapshot()
        if not snap.up:
            return
        seen, late = self._behind
        if seen is not snap:  # found once per snapshot, not per scrape
            late = behind(snap)
            self._behind = (snap, late)
        f = Families(self._groups)
        add_ages(f, snap, late, self._clock())
        yield from f

    def describe(self) -> list[Metric]:
        return []


class NotificationCollector(Collector):
    """Counters of the SNMP notifier: ``stats()`` gives (target, sent, dropped, retries, queued) rows."""

    def __init__(self, stats: Callable[[], Iterable[tuple[str, int, int, int, int]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        f = Families(frozenset())
        for target, sent, dropped, retries, queued in self._stats():
            f.add("libvirt_exporter_notifications_sent_total", (target,), sent)
            f.add("libvirt_exporter_notifications_dropped_total", (target,), dropped)
            f.add("libvirt_exporter_notification_retries_total", (target,), retries)
            f.add("libvirt_exporter_notification_queue_length", (target,), queued)
        yield from f

    def describe(self) -> list[Metric]:
        return []


class SnmpCollector(Collector):
    """Packet counters of the SNMP agent: ``stats()`` gives (fast path answers, dropped packets), or None."""

    def __init__(self, stats: Callable[[], tuple[int, int] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        f = Families(frozenset())
        f.add("libvirt_exporter_snmp_fast_path_requests_total", (), stats[0])
        f.add("libvirt_exporter_snmp_dropped_packets_total", (), stats[1])
        yield from f

    def describe(self) -> list[Metric]:
        return []


class Exposition:
    """Renders ``/metrics``.

    The snapshot's families are rendered once per snapshot and cached (an
    immutable snapshot always renders the same); the snapshot age and the
    process metrics are rendered on every scrape.
    """

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot],
        groups: frozenset[str],
        clock: Callable[[], float] = time.time,
        extra: Iterable[Collector] = (),
    ) -> None:
        self._get_snapshot = get_snapshot
        self._groups = groups
        self._lock = threading.Lock()
        self._cached: _Rendered | None = None
        self._renderer = TextRenderer(groups)
        self.renders = 0  # snapshot renderings so far (for tests and debugging)
        self._live = CollectorRegistry(auto_describe=False)
        self._live.register(_AgeCollector(get_snapshot, clock, groups))
        ProcessCollector(registry=self._live)
        PlatformCollector(registry=self._live)
        for collector in extra:
            self._live.register(collector)

    def _static(self) -> _Rendered:
        snap = self._get_snapshot()
        with self._lock:  # concurrent scrapes of a new snapshot render it once
            cached = self._cached
            if cached is None or cached.snapshot is not snap:
                self._cached = cached = None  # let the old rendering go before making the new one
                self._cached = cached = _Rendered(snap, tuple(self._renderer.render(snap)))
                self.renders += 1
            return cached

    def render(self) -> bytes:
        """The whole exposition, uncompressed."""
        return b"".join(self.body(False))

    def render_gzip(self) -> bytes:
        """The whole exposition as one gzip stream; the snapshot's part is compressed once per snapshot."""
        return self._static().gzip(generate_latest(self._live))

    def body(self, gzipped: bool) -> list[bytes]:
        """The whole exposition in parts to be sent one after the other (gzip: one gzip stream), so that
        the snapshot's text, the bulk of it, is served as it is kept rather than copied per scrape."""
        if gzipped:
            return [self.render_gzip()]
        return [*self._static().chunks, generate_latest(self._live)]


class _Rendered:
    """One snapshot's exposition text (family by family), and its gzip compression kept open for the live
    tail."""

    def __init__(self, snapshot: Snapshot, chunks: tuple[bytes, ...]) -> None:
        self.snapshot = snapshot
        self.chunks = chunks
        self._lock = threading.Lock()
        self._head: bytes | None = None
        self._compressor: Any = None  # zlib's compressor object

    def gzip(self, tail: bytes) -> bytes:
        with self._lock:
            if self._head is None:
                compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
                parts = [compressor.compress(chunk) for chunk in self.chunks]
                parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
                self._head = b"".join(parts)
                self._compressor = compressor
            compressor = self._compressor.copy()
        return b"".join((self._head, compressor.compress(tail), compressor.flush()))
