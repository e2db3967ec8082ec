"""The domains of one poll, and which of them are stuck past their deadline.

A domain whose stats call is given up on (a hung QEMU monitor, disk or
agent) is asked nothing that needs its monitor until the call returns; it is
served with its state and definition alone, with the time of its last
complete stats.  :class:`Deadlines` keeps that record across polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("exporter.source")  # one logger for the whole boundary


@dataclass(frozen=True, slots=True)
class DomainJob:
    """One domain of a poll: its handle, identity and what the whole-host bulk call said of it."""

    dom: Any  # the handle the calls go through (on the lane that runs them)
    name: str
    uuid: str
    id: int  # from the poll's listing (a handle cached on a lane may carry an old one)
    stats: Mapping[str, Any]
    stale: bool  # its definition changed since it was cached
    autostart: bool
    persistent: bool


class Deadlines:
    """Stuck domains (a call given up on and still running) and the freshness of every domain's stats."""

    def __init__(self, lock: threading.Lock, call_timeout: float) -> None:
        self._lock = lock  # the source's lock
        self._call_timeout = call_timeout
        self._stuck: set[str] = set()  # by UUID: nothing new is asked of them until the call returns
        self._fresh_at: dict[str, float] = {}  # Unix time of each domain's last complete stats
        self._stuck_since: dict[str, float] = {}  # first deadline missed, until a call succeeds in time

    def stuck_now(self) -> set[str]:
        with self._lock:
            return set(self._stuck)

    def is_stuck(self, uuid: str) -> bool:
        return uuid in self._stuck

    def stuck_count(self) -> int:
        """The number of stuck domains (the caller holds the lock)."""
        return len(self._stuck)

    def fresh_at(self, uuid: str) -> float | None:
        return self._fresh_at.get(uuid)

    def missed(self, job: DomainJob) -> None:
        """The domain's call ran past its deadline and was given up on."""
        with self._lock:
            self._stuck.add(job.uuid)
            first = job.uuid not in self._stuck_since
            self._stuck_since.setdefault(job.uuid, time.monotonic())
        if first:
            log.warning("domain %s has not answered within %gs (a hung QEMU monitor, disk or agent?); serving "
                        "only its state until it does", job.name, self._call_timeout)

    def returned(self, job: DomainJob, seconds: float) -> None:
        """An abandoned call returned: the domain may be asked again (it counts as back once it answers in time)."""
        with self._lock:
            self._stuck.discard(job.uuid)
        log.debug("the abandoned stats call of domain %s returned after %.1fs", job.name, seconds)

    def answered(self, job: DomainJob, now: float) -> None:
        """The domain's call returned in time, at Unix time ``now``."""
        self._fresh_at[job.uuid] = now
        with self._lock:
            since = self._stuck_since.pop(job.uuid, None)
        if since is not None and job.id >= 0:  # (a domain powered off meanwhile is not "back")
            log.warning("domain %s answers again after %.1fs; its stats are fresh again", job.name,
                        time.monotonic() - since)

    def forget_fresh_except(self, seen: set[str]) -> None:
        for uuid in set(self._fresh_at) - seen:
            del self._fresh_at[uuid]

    def forget_since_except(self, seen: set[str]) -> None:
        """Drop domains undefined meanwhile (the caller holds the lock)."""
        for uuid in set(self._stuck_since) - seen:
            del self._stuck_since[uuid]
