"""Pure event application: what a libvirt event does to the snapshot before the next poll."""

from __future__ import annotations

from exporter.poller import apply_event
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
    paused, poll = apply_event((RUNNING, OTHER), _event("suspended"))
    assert paused[0].state == STATE_PAUSED and paused[0].cpu_time_ns == 5 and not poll
    assert paused[1] is OTHER
    resumed, poll = apply_event(paused, _event("resumed"))
    assert resumed[0].state == STATE_RUNNING and not poll


def test_stop_drops_live_counters_and_asks_for_a_poll() -> None:
    """A stopped domain keeps its configuration but shows no live counters."""
    (dom, _), poll = apply_event((RUNNING, OTHER), _event("stopped"))
    assert (dom.state, dom.id, dom.cpu_time_ns, dom.vcpus, dom.interfaces) == (STATE_SHUTOFF, -1, None, (), ())
    assert dom.blocks == (Block("vda", source="/i/a"),)
    assert poll


def test_transient_domain_disappears_when_stopped() -> None:
    """A transient domain ceases to exist when it stops; an undefined inactive one too."""
    transient = RUNNING.replace_fields(persistent=False)
    assert apply_event((transient, OTHER), _event("stopped"))[0] == (OTHER,)
    off = RUNNING.replace_fields(id=-1, state=STATE_SHUTOFF, active=False)
    assert apply_event((off, OTHER), _event("undefined"))[0] == (OTHER,)
    # Undefining a running domain makes it transient; it stays until it stops.
    (still, _), _ = apply_event((RUNNING, OTHER), _event("undefined"))
    assert not still.persistent and still.state == STATE_RUNNING


def test_unknown_domain_asks_for_a_poll() -> None:
    """An event for a domain not yet in the snapshot leaves it as is and asks for a poll."""
    domains, poll = apply_event((OTHER,), _event("started", uuid="u-new"))
    assert domains == (OTHER,) and poll


def test_libvirt_is_read_only_unless_control_is_enabled() -> None:
    """The poller opens libvirt read-only; read-write only when control.enabled is set."""
    from exporter.config import resolve
    from exporter.poller import Poller

    assert Poller(resolve({}, {}, {}))._source_factory().read_only is True
    assert Poller(resolve({}, {}, {"control": {"enabled": True}}))._source_factory().read_only is False
