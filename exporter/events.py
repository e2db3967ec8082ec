"""Pure event application: what a libvirt domain event does to the served domains before the next poll.

Every function here touches one domain: the domains of a snapshot are kept
in name order, so a domain is found by a bisect on its name, and the new
tuple differs from the old one in one slot.  A domain that an event
announces (defined, or started without a definition: a transient domain)
is added at once with what the event tells; its definition is read off the
event loop and merged in by :func:`with_definition`.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from exporter.snapshot import EVENT_STATES, NO_IOTUNE, STATE_SHUTOFF, Block, Domain, DomainEvent, Interface, Memory

D = TypeVar("D", Block, Interface)

#: Events that announce a domain the snapshot may not hold yet.
ADDING = frozenset({"defined", "started"})
#: Events after which a domain's definition or device list may differ: it is read again.
REDEFINING = frozenset({"defined", "started", "device"})
#: Events whose outcome a poll should fill in soon (a new domain ID and live counters, changed devices).
_NEEDS_POLL = frozenset({"started", "device", "io_error"})


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of one event: the new domains, the changed domain before and after, whether to poll soon."""

    domains: tuple[Domain, ...]
    before: Domain | None
    after: Domain | None
    needs_poll: bool

    @property
    def changed(self) -> bool:
        return self.before is not self.after


def position(domains: tuple[Domain, ...], uuid: str, name: str) -> int | None:
    """Where the domain with ``uuid`` and ``name`` is in ``domains`` (kept in name order), or None.

    A bisect on the name: events carry the name the domain is served under
    (a rename is an undefined event with the old name, then a defined one
    with the new name).
    """
    pos = bisect.bisect_left(domains, name, key=lambda d: d.name)
    if pos < len(domains) and domains[pos].uuid == uuid:
        return pos
    return None


def _insert(domains: tuple[Domain, ...], dom: Domain) -> tuple[Domain, ...]:
    pos = bisect.bisect_right(domains, dom.name, key=lambda d: d.name)
    return domains[:pos] + (dom,) + domains[pos:]


#: A block device's live figures (counters, sizes, limits, error): the fields without a definition's value.
_LIVE_BLOCK: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Block)
                               if f.default is None or f.default is NO_IOTUNE}


def _config_only(block: Block) -> Block:
    """The device as its definition says (serial, cache mode... kept), without its live figures."""
    return dataclasses.replace(block, **_LIVE_BLOCK)


def _after(dom: Domain, event: DomainEvent) -> Domain | None:
    """``dom`` after ``event``; None if the event removes it."""
    if event.kind == "undefined":
        return dom.replace_fields(persistent=False) if dom.active else None
    if event.kind == "stopped" and not dom.persistent:
        return None  # a transient domain ceases to exist when it stops
    if event.kind == "defined":
        return dom.replace_fields(persistent=True)
    state = EVENT_STATES.get(event.kind)
    if state is None:
        return dom
    changes: dict[str, object] = {"state": state, "state_reason": 0, "active": state != STATE_SHUTOFF}
    if state == STATE_SHUTOFF:  # no live counters for a domain that is off, and nothing is asked of it
        changes.update(timed_out=False, id=-1, cpu_time_ns=None, cpu_user_ns=None, cpu_system_ns=None, memory=Memory(),
                       vcpus=(), interfaces=(), blocks=tuple(_config_only(b) for b in dom.blocks))
    return dom.replace_fields(**changes)


def announced(event: DomainEvent) -> Domain:
    """A domain known from its event alone, until its definition is read: a defined one is persistent and
    off; one that started without being defined first is transient."""
    return Domain(name=event.name, uuid=event.uuid, id=-1, state=STATE_SHUTOFF, persistent=event.kind == "defined")


def apply_event(domains: tuple[Domain, ...], event: DomainEvent, known: Domain | None = None) -> Applied:
    """The domains as they are after ``event``.

    State changes apply at once.  A domain that ``event`` announces and
    ``domains`` lacks is added: as ``known`` (what an earlier snapshot held
    of it) or else from the event alone.  What an event cannot tell (a new
    domain ID, live counters, the exact state reason) waits for a poll,
    which ``needs_poll`` asks for.
    """
    pos = position(domains, event.uuid, event.name)
    if pos is None:
        if event.kind not in ADDING:
            return Applied(domains, None, None, event.kind not in ("undefined", "stopped"))
        after = _after(known if known is not None and known.uuid == event.uuid else announced(event), event)
        assert after is not None
        return Applied(_insert(domains, after), None, after, event.kind in _NEEDS_POLL)
    before = domains[pos]
    after = _after(before, event)
    if after is None:
        return Applied(domains[:pos] + domains[pos + 1:], before, None, False)
    if after.name != before.name:  # cannot happen with libvirt's events; kept in name order all the same
        return Applied(_insert(domains[:pos] + domains[pos + 1:], after), before, after, event.kind in _NEEDS_POLL)
    return Applied(domains[:pos] + (after,) + domains[pos + 1:], before, after, event.kind in _NEEDS_POLL)


def with_definition(current: Domain, described: Domain) -> Domain:
    """``current`` with the definition just read (``described``); its state stays as the events left it.

    Devices that ``current`` already has keep their counters; new ones come
    without counters until the next poll; removed ones go.
    """
    blocks = {b.target: b for b in current.blocks}
    nics = {n.target: n for n in current.interfaces}
    return current.replace_fields(
        persistent=described.persistent, autostart=described.autostart, os_type=described.os_type,
        arch=described.arch, machine=described.machine, title=described.title, nova=described.nova,
        metadata=described.metadata, vcpu_pins=described.vcpu_pins or current.vcpu_pins,
        max_memory_kib=described.max_memory_kib if described.max_memory_kib is not None else current.max_memory_kib,
        memory_kib=current.memory_kib if current.memory_kib is not None else described.memory_kib,
        vcpus_current=current.vcpus_current if current.vcpus_current is not None else described.vcpus_current,
        vcpus_max=described.vcpus_max if described.vcpus_max is not None else current.vcpus_max,
        id=described.id if current.active and described.id >= 0 else current.id,
        blocks=tuple(_same_device(blocks.get(b.target), b) for b in described.blocks),
        interfaces=tuple(_same_device(nics.get(n.target), n) for n in described.interfaces) if current.active
        else (),
    )


def _same_device(old: D | None, new: D) -> D:
    """The device as now defined, with the counters it had if its definition is unchanged."""
    if old is not None and _definition(old) == _definition(new):
        return old
    return new


def _definition(device: Block | Interface) -> tuple[object, ...]:
    if isinstance(device, Block):
        return (device.device, device.disk_type, device.bus, device.source, device.driver_type, device.readonly,
                device.serial, device.driver_name, device.cache, device.discard, device.protocol)
    return (device.mac, device.model, device.interface_type, device.bridge, device.network, device.mtu,
            device.virtual_interface)
