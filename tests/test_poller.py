"""Pure event application: what a libvirt event does to the snapshot before the next poll."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.events import apply_event, with_definition
from exporter.snapshot import (
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_SHUTOFF,
    Block,
    Domain,
    DomainEvent,
    Interface,
    Vcpu,
)

RUNNING = Domain(name="a", uuid="u-a", id=3, active=True, state=STATE_RUNNING, state_reason=1, cpu_time_ns=5,
                 vcpus=(Vcpu(0, 1, 10),), blocks=(Block("vda", source="/i/a", read_bytes=7),),
                 interfaces=(Interface("tap0", receive_bytes=9),))
OTHER = Domain(name="b", uuid="u-b", id=4, active=True, state=STATE_RUNNING)


def _event(kind: str, uuid: str = "u-a") -> DomainEvent:
    return DomainEvent(uuid=uuid, name="a", kind=kind)


def test_suspend_and_resume_change_state_only() -> None:
    """Pause and resume set the state at once and need no extra poll."""
    applied = apply_event((RUNNING, OTHER), _event("suspended"))
    paused = applied.domains
    assert paused[0].state == STATE_PAUSED and paused[0].cpu_time_ns == 5 and not applied.needs_poll
    assert paused[1] is OTHER and applied.before is RUNNING and applied.after is paused[0]
    applied = apply_event(paused, _event("resumed"))
    assert applied.domains[0].state == STATE_RUNNING and not applied.needs_poll


def test_stop_drops_live_counters() -> None:
    """A stopped domain keeps its configuration but shows no live counters."""
    (dom, _) = apply_event((RUNNING, OTHER), _event("stopped")).domains
    assert (dom.state, dom.id, dom.cpu_time_ns, dom.vcpus, dom.interfaces) == (STATE_SHUTOFF, -1, None, (), ())
    assert dom.blocks == (Block("vda", source="/i/a"),)


def test_transient_domain_disappears_when_stopped() -> None:
    """A transient domain ceases to exist when it stops; an undefined inactive one too."""
    transient = RUNNING.replace_fields(persistent=False)
    gone = apply_event((transient, OTHER), _event("stopped"))
    assert gone.domains == (OTHER,) and gone.before is transient and gone.after is None
    off = RUNNING.replace_fields(id=-1, state=STATE_SHUTOFF, active=False)
    assert apply_event((off, OTHER), _event("undefined")).domains == (OTHER,)
    # Undefining a running domain makes it transient; it stays until it stops.
    (still, _) = apply_event((RUNNING, OTHER), _event("undefined")).domains
    assert not still.persistent and still.state == STATE_RUNNING


def test_announced_domain_is_added_in_name_order() -> None:
    """A domain that a defined or started event announces is served at once, in name order: a defined one
    persistent and off, one started without a definition transient and running."""
    defined = apply_event((RUNNING, OTHER), DomainEvent(uuid="u-0", name="0", kind="defined"))
    assert [d.name for d in defined.domains] == ["0", "a", "b"] and defined.before is None
    assert (defined.after.state, defined.after.persistent, defined.after.active) == (STATE_SHUTOFF, True, False)
    started = apply_event((RUNNING, OTHER), DomainEvent(uuid="u-ab", name="ab", kind="started"))
    assert [d.name for d in started.domains] == ["a", "ab", "b"] and started.needs_poll
    assert (started.after.state, started.after.persistent, started.after.active) == (STATE_RUNNING, False, True)
    # What an earlier snapshot knew of it is kept (a poll result that predates the event).
    known = RUNNING.replace_fields(os_type="hvm", state=STATE_SHUTOFF, active=False)
    again = apply_event((OTHER,), _event("started"), known)
    assert again.domains[0].os_type == "hvm" and again.domains[0].state == STATE_RUNNING


def test_events_for_unknown_domains_other_than_announcements() -> None:
    """A state event for a domain not served asks for a poll; its removal changes nothing."""
    assert apply_event((OTHER,), _event("suspended", uuid="u-new")).needs_poll
    removed = apply_event((OTHER,), _event("undefined", uuid="u-new"))
    assert removed.domains == (OTHER,) and not removed.changed and not removed.needs_poll


def test_definition_merge_keeps_state_and_device_counters() -> None:
    """A definition read after an event fills in the domain; its state and the counters of unchanged
    devices stay; a changed device loses its counters until the next poll."""
    described = Domain(name="a", uuid="u-a", id=7, state=STATE_SHUTOFF, os_type="hvm", max_memory_kib=2048,
                       vcpus_max=4, blocks=(Block("vda", source="/i/a"), Block("vdb", source="/i/b")),
                       interfaces=(Interface("tap0"),))
    merged = with_definition(RUNNING, described)
    assert (merged.state, merged.os_type, merged.max_memory_kib, merged.vcpus_max, merged.id) == \
        (STATE_RUNNING, "hvm", 2048, 4, 7)
    assert merged.blocks == (RUNNING.blocks[0], Block("vdb", source="/i/b")) and merged.interfaces == RUNNING.interfaces
    moved = with_definition(RUNNING, described.replace_fields(blocks=(Block("vda", source="/elsewhere"),)))
    assert moved.blocks == (Block("vda", source="/elsewhere"),)


def test_libvirt_is_read_only_unless_control_is_enabled(tmp_path: Path) -> None:
    """The poller opens libvirt read-only; read-write only when control.enabled is set."""
    from exporter import app
    from exporter.config import resolve

    def read_only(file: dict[str, Any]) -> bool:
        config = resolve({}, {}, {"state": {"directory": str(tmp_path)}} | file)
        source: Any = app.build(config).poller._source_factory()
        return bool(source.read_only)

    assert read_only({}) is True
    assert read_only({"control": {"enabled": True}}) is False
