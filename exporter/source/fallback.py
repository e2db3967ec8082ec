"""Per-domain calls, for what a driver does not serve in bulk stats.

libvirt's test driver, for one, answers ``getAllDomainStats`` with the
``state`` group only; its CPU, balloon, vCPU and device figures come from
``info()``, ``getCPUStats()``, ``memoryStats()``, ``vcpus()``,
``blockStats()``, ``blockInfo()`` and ``interfaceStats()``.  A
:class:`DomainCalls` makes those calls on one domain handle for
:func:`exporter.source.domain.build_domain`, which parses the answers.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import libvirt

from exporter.errors import DomainGone, Unsupported
from exporter.source.connection import Connection, convert, count_failure

log = logging.getLogger("exporter.source")  # one logger for the whole boundary

T = TypeVar("T")


class DomainCalls:
    """:class:`~exporter.source.domain.DomainReads` over a libvirt domain handle.

    A failed call is counted in ``errors`` under its stats group and answers
    None; :class:`DomainGone` and :class:`ConnectionLost` are raised.  Errors
    are judged against ``link``'s main connection, ``state()``'s against
    ``conn``, the connection the handle belongs to.
    """

    def __init__(self, dom: Any, conn: libvirt.virConnect, link: Connection, errors: Counter[str],
                 unsupported: set[str] | None = None) -> None:
        """``unsupported``: the optional calls the driver has refused, kept by the caller per connection."""
        self._dom = dom
        self._conn = conn
        self._link = link
        self._errors = errors
        self._unsupported = unsupported if unsupported is not None else set()

    def _call(self, fn: Callable[[], T], group: str, optional: str = "") -> T | None:
        """``fn``'s answer, or None when it failed (counted in ``group``).  An ``optional`` call is one some
        drivers lack: refused as unsupported once, it is remembered and not asked again on this connection (as
        :class:`~exporter.source.host.HostGroups` does for the host's calls)."""
        if optional and optional in self._unsupported:
            return None
        try:
            return fn()
        except libvirt.libvirtError as exc:
            err = convert(exc, self._link.conn)
            if isinstance(err, DomainGone):
                raise err from None
            err = count_failure(exc, self._link.conn, group, self._errors, unsupported_ok=bool(optional))
            if optional and isinstance(err, Unsupported):
                log.info("%s is not supported by %s; not asked again on this connection", optional,
                         self._link.shown_uri)
                self._unsupported.add(optional)
            else:
                log.debug("%s call failed: %s", group, err)
            return None

    def state(self) -> Sequence[int]:
        try:
            found: Sequence[int] = self._dom.state(0)
        except libvirt.libvirtError as exc:
            raise convert(exc, self._conn) from None
        return found

    def info(self) -> Sequence[Any] | None:
        return self._call(self._dom.info, "state")

    def cpu_stats(self) -> Sequence[Mapping[str, Any]] | None:
        return self._call(lambda: self._dom.getCPUStats(True), "cpu")

    def memory_stats(self) -> Mapping[str, Any] | None:
        return self._call(self._dom.memoryStats, "balloon")

    def vcpus(self) -> Sequence[Any] | None:
        return self._call(self._dom.vcpus, "vcpu")

    def block_stats(self, target: str) -> Sequence[int] | None:
        return self._call(functools.partial(self._dom.blockStats, target), "block")

    def block_info(self, target: str) -> Sequence[int] | None:
        return self._call(functools.partial(self._dom.blockInfo, target), "block")

    def interface_stats(self, target: str) -> Sequence[int] | None:
        return self._call(functools.partial(self._dom.interfaceStats, target), "interface")

    def block_io_tune(self, target: str) -> Mapping[str, Any] | None:
        return self._call(functools.partial(self._dom.blockIoTune, target, 0), "block", optional="blockIoTune")

    def disk_errors(self) -> Mapping[str, int] | None:
        return self._call(functools.partial(self._dom.diskErrors, 0), "block", optional="diskErrors")

    def job_stats(self) -> Mapping[str, Any] | None:
        return self._call(functools.partial(self._dom.jobStats, 0), "job", optional="jobStats")

    def start_dirty_rate(self, seconds: int) -> None:
        self._call(functools.partial(self._dom.startDirtyRateCalc, seconds, 0), "dirtyrate",
                   optional="startDirtyRateCalc")
