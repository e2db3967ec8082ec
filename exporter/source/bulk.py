"""libvirt's bulk stats calls: which groups a driver serves in bulk, and one domain's monitor-bound groups."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import libvirt

from exporter.errors import ConnectionLost, DomainGone
from exporter.source.connection import convert

log = logging.getLogger("exporter.source")  # one logger for the whole boundary

#: The exporter's stats groups by libvirt's VIR_DOMAIN_STATS_* flag.
GROUP_FLAGS: Mapping[str, int] = {
    "state": libvirt.VIR_DOMAIN_STATS_STATE,
    "cpu": libvirt.VIR_DOMAIN_STATS_CPU_TOTAL,
    "balloon": libvirt.VIR_DOMAIN_STATS_BALLOON,
    "vcpu": libvirt.VIR_DOMAIN_STATS_VCPU,
    "interface": libvirt.VIR_DOMAIN_STATS_INTERFACE,
    "block": libvirt.VIR_DOMAIN_STATS_BLOCK,
    "haltpoll": libvirt.VIR_DOMAIN_STATS_CPU_TOTAL,  # the cpu group's cpu.haltpoll.* keys
    "perf": libvirt.VIR_DOMAIN_STATS_PERF,
    "iothread": libvirt.VIR_DOMAIN_STATS_IOTHREAD,
    "dirtyrate": libvirt.VIR_DOMAIN_STATS_DIRTYRATE,
}
#: Bulk groups that libvirt reads without the domain's job, so that a hung QEMU
#: monitor cannot hold them up.  Only ``state``: on libvirt 9 with QEMU 7.2 even
#: ``cpu`` asks the monitor (halt-poll figures), and a whole-host call that asks
#: a frozen QEMU hangs for every domain.  The state of the whole host comes in one
#: call; the other groups come in one call per domain, each with its own deadline.
NO_JOB_GROUPS = frozenset({"state"})

NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT


def mask(groups: Iterable[str]) -> int:
    """The VIR_DOMAIN_STATS_* flags of ``groups`` (names libvirt has no group for are left out)."""
    result = 0
    for group in groups:
        result |= GROUP_FLAGS.get(group, 0)
    return result


def groups(flags: int) -> frozenset[str]:
    """The group names in a VIR_DOMAIN_STATS_* mask."""
    return frozenset(g for g, f in GROUP_FLAGS.items() if flags & f)


def probe(conn: libvirt.virConnect) -> tuple[int, bool] | None:
    """(mask of the groups the driver has in bulk, whether it takes NOWAIT).

    Each group is asked with ENFORCE_STATS of the inactive domains only: drivers refuse a group they lack
    before they look at any domain, and no running domain is asked anything (a frozen QEMU would hang a
    monitor-bound group, and with it the first poll after every connect).
    None when a domain vanished meanwhile: try again at the next poll.
    Raises :class:`ConnectionLost`.
    """
    enforce = (libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS
               | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE)
    found = 0
    for flag in GROUP_FLAGS.values():
        try:
            conn.getAllDomainStats(flag, enforce)
        except libvirt.libvirtError as exc:
            err = convert(exc, conn)
            if isinstance(err, ConnectionLost):
                raise err from None
            if isinstance(err, DomainGone):  # raced with an undefine: try again next poll
                return None
            continue
        found |= flag
    try:
        conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, NOWAIT)
        nowait = True
    except libvirt.libvirtError as exc:
        err = convert(exc, conn)
        if isinstance(err, ConnectionLost):
            raise err from None
        nowait = False
    return found, nowait


def domain_stats(conn: libvirt.virConnect, dom: Any, flags: int, call_flags: int) -> dict[str, Any]:
    """One domain's monitor-bound stats groups (blocking; may hang with the domain's QEMU).

    Raises :class:`ConnectionLost` and :class:`DomainGone`; any other failure gives ``{}``.
    """
    try:
        found = conn.domainListGetStats([dom], flags, call_flags)
    except libvirt.libvirtError as exc:
        err = convert(exc, conn)
        if isinstance(err, ConnectionLost | DomainGone):
            raise err from None
        log.debug("stats of one domain failed: %s", err)
        return {}
    return dict(found[0][1]) if found else {}
