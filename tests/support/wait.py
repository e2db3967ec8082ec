"""Waiting on a condition, never for a fixed time.

Every wait in the suite polls a condition until it holds or a deadline passes.  Deadlines are meant to be
generous (a busy CI machine is slow, not broken): a condition that holds returns at once, so a long deadline
costs nothing when all is well.

- :func:`wait_until` is the usual form: the condition's truthy value, or an AssertionError naming what was
  awaited, how long, and the last value seen.
- :func:`poll_until` is for helpers whose callers assert on what came (``Trapd.wait_for``,
  ``Prometheus.until``, ``snmp.wait_outcome``): it returns the last value read, done or not.
- :func:`async_wait_until` is :func:`wait_until` for coroutines that must keep the event loop running.

A condition may raise to stop the wait at once (say, because the process it waits on has exited).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, waited: float, last: object) -> AssertionError:
    seen = "" if last is None or last is False else f" (last seen: {last!r})"
    return AssertionError(f"timed out after {waited:.1f} s waiting for {what}{seen}")


def poll_until(read: Callable[[], T], done: Callable[[T], object], timeout: float, every: float = 0.05) -> T:
    """Call ``read`` every ``every`` seconds until ``done(value)`` holds or ``timeout`` seconds have passed.

    Returns the last value read either way (``read`` runs at least once, and once more at the deadline).
    """
    start = time.monotonic()
    while True:
        value = read()
        if done(value):
            return value
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            return value
        time.sleep(min(every, left))


def wait_until(condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    """The first truthy value of ``condition()``, tried every ``every`` seconds for up to ``timeout`` seconds.

    Raises AssertionError naming ``what``, the time waited and the last value seen when it never comes.
    """
    start = time.monotonic()
    value = poll_until(condition, bool, timeout, every)
    if not value:
        raise _timed_out(what, time.monotonic() - start, value)
    return value


async def async_wait_until(condition: Callable[[], T | None], timeout: float, what: str,
                           every: float = 0.05) -> T:
    """:func:`wait_until` inside a coroutine: sleeps with ``asyncio.sleep``, so the loop runs meanwhile."""
    start = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise _timed_out(what, time.monotonic() - start, value)
        await asyncio.sleep(min(every, left))
