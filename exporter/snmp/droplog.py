"""Queue-full drops of a notification target, in the log with their counts (:class:`DropLog`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

#: The notifier's logger: drop lines are the notifier's, wherever the code lives.
log = logging.getLogger("exporter.snmp.notify")

#: Drops are logged with their count at most once per this many seconds per target.
DROP_LOG_INTERVAL_S = 60.0

#: Runs a callback after a delay (seconds); returns something with ``cancel()``.
Schedule = Callable[[float, Callable[[], None]], Any]


def _call_later(delay: float, callback: Callable[[], None]) -> Any:
    try:
        return asyncio.get_running_loop().call_later(delay, callback)
    except RuntimeError:  # no loop running: the next drop, or flush(), reports
        return None


class DropLog:
    """One target's queue-full drops in the log, with counts.

    The first drop logs at once (with the count of everything unreported).
    Drops within ``interval`` seconds of the last line are summed, and the
    sum is logged when the interval has passed (a timer, so a burst that
    ends is reported too); so at most one line per interval, and no drop
    goes unreported (:meth:`flush` reports what is left at shutdown).
    """

    def __init__(self, name: str, capacity: int, clock: Callable[[], float] = time.monotonic,
                 interval: float = DROP_LOG_INTERVAL_S, schedule: Schedule = _call_later,
                 queued: Callable[[], int] = lambda: 0) -> None:
        self.name = name
        self.capacity = capacity
        self._clock = clock
        self._interval = interval
        self._schedule = schedule
        self._queued = queued
        self.total = 0  # drops so far
        self.unreported = 0  # drops not in a log line yet
        self._last_line: float | None = None
        self._timer: Any = None

    def dropped(self) -> None:
        now = self._clock()
        self.total += 1
        self.unreported += 1
        if self._last_line is None or now - self._last_line >= self._interval:
            log.error("notification queue for %s is full (%d); dropped %d, dropping new notifications until it "
                      "has room (%d dropped in all)", self.name, self.capacity, self.unreported, self.total)
            self._reported(now)
        elif self._timer is None:
            self._timer = self._schedule(self._last_line + self._interval - now, self.due)

    def due(self) -> None:
        """The timer: report the sum if the interval has passed (else wait for the rest of it)."""
        self._timer = None
        if not self.unreported:
            return
        now = self._clock()
        assert self._last_line is not None
        if now - self._last_line < self._interval:
            self._timer = self._schedule(self._last_line + self._interval - now, self.due)
            return
        self._summary(now)

    def flush(self) -> None:
        """Report whatever is unreported now (at shutdown: no count may be lost)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.unreported:
            self._summary(self._clock())

    def _summary(self, now: float) -> None:
        since = now - self._last_line if self._last_line is not None else 0.0
        log.error("notifications to %s: %d more dropped in the last %.0fs, queue full (%d dropped in all; "
                  "%d of %d queued now)", self.name, self.unreported, since, self.total, self._queued(),
                  self.capacity)
        self._reported(now)

    def _reported(self, now: float) -> None:
        self.unreported = 0
        self._last_line = now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
