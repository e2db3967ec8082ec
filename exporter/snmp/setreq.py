"""SNMP SET requests: every varbind is checked before anything runs.

:func:`plan` turns the varbinds of one SET into control steps, or raises the
SNMP error of the first varbind that cannot be done (wrongType, wrongValue,
inconsistentValue, inconsistentName, noCreation, notWritable,
resourceUnavailable), with its index, so that a SET is all or nothing.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysnmp.proto import rfc1902
from pysnmp.smi import error as smi_error

from exporter.control import Controller, Step
from exporter.snapshot import (
    STATE_BLOCKED,
    STATE_PAUSED,
    STATE_PMSUSPENDED,
    STATE_RUNNING,
    STATE_SHUTDOWN,
    Domain,
    Snapshot,
)
from exporter.snmp import mib

log = logging.getLogger(__name__)

_RUNNING_LIKE = (STATE_RUNNING, STATE_BLOCKED)
#: What a domain whose QEMU does not answer (timed out) still accepts: a hard power-off kills the process.
_STUCK_OK = frozenset({"destroy"})
_MAX_INT32 = 2**31 - 1


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    step_varbind: list[int] = field(default_factory=list)  # varbind index of each step
    spin_lock: bool = False  # the request includes lvxActionSpinLock (increment on success)
    targets: list[str] = field(default_factory=list)  # domain names, for the audit line
    actions: list[str] = field(default_factory=list)

    def add(self, idx: int, dom: Domain, verb: str | None, label: str) -> None:
        self.targets.append(dom.name)
        self.actions.append(label)
        if verb is not None:
            self.steps.append(Step(dom.uuid, dom.name, verb))
            self.step_varbind.append(idx)


def _int(name: Any, value: Any, idx: int) -> int:
    if not isinstance(value, rfc1902.Integer32 | rfc1902.Integer) or isinstance(
        value, rfc1902.Unsigned32 | rfc1902.Gauge32 | rfc1902.Counter32 | rfc1902.Counter64 | rfc1902.TimeTicks
    ):
        raise smi_error.WrongTypeError(name=name, idx=idx)
    return int(value)


def admin_verb(dom: Domain, wanted: int, name: Any, idx: int) -> tuple[str | None, str]:
    """lvxDomainAdminState: the libvirt verb that reaches ``wanted`` (None: already there)."""
    state = dom.state
    if wanted == 1:  # running
        if state in _RUNNING_LIKE:
            return None, "running (already)"
        if state == STATE_PAUSED:
            return "resume", "resume"
        if state == STATE_PMSUSPENDED:
            return "wakeup", "wakeup"
        if not dom.active:
            return "start", "start"
    elif wanted == 2:  # paused
        if state in (STATE_PAUSED, STATE_PMSUSPENDED):
            return None, "paused (already)"
        if state in _RUNNING_LIKE:
            return "suspend", "suspend"
        if not dom.active:
            return "start_paused", "start paused"
    elif wanted == 3:  # shutdown (graceful)
        if not dom.active:
            return None, "shutdown (already off)"
        if state in (*_RUNNING_LIKE, STATE_PAUSED, STATE_SHUTDOWN):
            return "shutdown", "shutdown"
    elif wanted == 4:  # off
        if not dom.active:
            return None, "off (already)"
        return "destroy", "destroy"
    else:
        raise smi_error.WrongValueError(name=name, idx=idx)
    raise smi_error.InconsistentValueError(name=name, idx=idx)


def action_verb(dom: Domain, wanted: int, name: Any, idx: int) -> tuple[str | None, str]:
    """lvxDomainAction: none(1), reboot(2), reset(3), managedSave(4)."""
    verbs = {2: "reboot", 3: "reset", 4: "managed_save"}
    if wanted == 1:
        return None, "none"
    if wanted not in verbs:
        raise smi_error.WrongValueError(name=name, idx=idx)
    if not dom.active or (wanted != 3 and dom.state not in (*_RUNNING_LIKE, STATE_PAUSED)):
        raise smi_error.InconsistentValueError(name=name, idx=idx)
    return verbs[wanted], verbs[wanted]


def plan(
    var_binds: Sequence[tuple[Any, Any]],
    snap: Snapshot,
    domain_index: Mapping[int, str],
    controller: Controller | None,
    spin_lock: int,
) -> Plan:
    """Check every varbind; return the steps to run.  Raises pysnmp SMI errors."""
    result = Plan()
    touched: set[str] = set()
    by_uuid = {d.uuid: d for d in snap.domains}

    for idx, (name, value) in enumerate(var_binds):
        oid = tuple(name)
        obj = mib.object_of(oid)
        if obj is None or obj.access not in (mib.RW, mib.RC) or controller is None:
            raise smi_error.NotWritableError(name=name, idx=idx)
        instance = oid[len(obj.oid):]
        number = _int(name, value, idx)

        if obj.name == "lvxActionSpinLock":
            if instance != (0,):
                raise smi_error.NoCreationError(name=name, idx=idx)
            if not 0 <= number <= _MAX_INT32:
                raise smi_error.WrongValueError(name=name, idx=idx)
            if number != spin_lock or result.spin_lock:
                raise smi_error.InconsistentValueError(name=name, idx=idx)
            result.spin_lock = True
            continue

        if obj.name in ("lvxDomainAdminState", "lvxDomainAction"):
            uuid = domain_index.get(instance[0]) if len(instance) == 1 else None
            dom = by_uuid.get(uuid) if uuid else None
            if dom is None:
                raise smi_error.NoCreationError(name=name, idx=idx)  # no such domain; rows cannot be created
            chooser = admin_verb if obj.name == "lvxDomainAdminState" else action_verb
            verb, label = chooser(dom, number, name, idx)
        else:  # libvirt-snmp's guest table, indexed by the UUID's 16 bytes
            dom = None
            if len(instance) == 16 and all(0 <= b <= 255 for b in instance):
                dom = by_uuid.get(str(uuidlib.UUID(bytes=bytes(instance))))
            if dom is None:
                # libvirt-snmp: inconsistentName for a UUID libvirt does not know, but wrongLength (an error about
                # the value, not the name) for an index that is not 16 bytes; here both are inconsistentName.
                raise smi_error.InconsistentNameError(name=name, idx=idx)
            if obj.name == "libvirtGuestRowStatus":
                verb, label = _row_status(dom, number, name, idx)
            else:
                verb, label = _guest_state(dom, number, name, idx)

        if dom.uuid in touched and verb is not None:
            raise smi_error.InconsistentValueError(name=name, idx=idx)  # one action per domain per request
        if verb is not None and controller.busy(dom.uuid):
            raise smi_error.ResourceUnavailableError(name=name, idx=idx)  # an action is still running
        if verb is not None and dom.timed_out and verb not in _STUCK_OK:
            # It would wait out libvirt's job lock (30 s) behind the hung monitor and fail anyway.
            log.warning("SET refused: domain %s is not answering (its stats call timed out); only a hard "
                        "power-off (lvxDomainAdminState off, libvirtGuestRowStatus destroy) is accepted until it "
                        "does", dom.name)
            raise smi_error.ResourceUnavailableError(name=name, idx=idx)
        if verb is not None:
            touched.add(dom.uuid)
        result.add(idx, dom, verb, label)
    return result


def describe(var_binds: Sequence[tuple[Any, Any]], snap: Snapshot, domain_index: Mapping[int, str]) -> str:
    """What a refused SET was about, for the audit line: domains by name; a varbind with no domain behind it by
    its object and row (``lvxDomainAdminState.9``), or its OID if it is none of ours.  The spin lock, which only
    guards a request, is left out."""
    names = []
    by_uuid = {d.uuid: d.name for d in snap.domains}
    for name, _ in var_binds:
        oid = tuple(name)
        obj = mib.object_of(oid)
        instance = oid[len(obj.oid):] if obj is not None else ()
        uuid = None
        if obj is not None and obj.oid[: len(mib.LVX_DOMAIN_ENTRY)] == mib.LVX_DOMAIN_ENTRY and len(instance) == 1:
            uuid = domain_index.get(instance[0])
        elif obj is not None and obj.oid[: len(mib.LIBVIRT_GUEST_ENTRY)] == mib.LIBVIRT_GUEST_ENTRY \
                and len(instance) == 16 and all(0 <= b <= 255 for b in instance):
            uuid = str(uuidlib.UUID(bytes=bytes(instance)))
        if uuid in by_uuid:
            names.append(by_uuid[uuid])
        elif obj is None:
            names.append(".".join(map(str, oid)))
        elif obj.name != "lvxActionSpinLock":
            names.append(obj.name + "".join(f".{n}" for n in instance))
    return ",".join(names) or "-"


#: libvirt-snmp's libvirtGuestState_check_value: the only transitions it lets through, (from, to) as libvirt
#: numbers the states.  Everything else, the state the domain already has included, is inconsistentValue.
_GUEST_TRANSITIONS = {
    (STATE_RUNNING, STATE_PAUSED): "suspend",
    (STATE_RUNNING, STATE_SHUTDOWN): "shutdown",
    (STATE_PAUSED, STATE_RUNNING): "resume",
}


def _guest_state(dom: Domain, wanted: int, name: Any, idx: int) -> tuple[str | None, str]:
    """libvirtGuestState, checked as libvirt-snmp checks it: running->paused, running->shutdown and
    paused->running, from the state libvirt reports (so pmsuspended, blocked or nostate allow none).

    A createAndGo in the same request changes nothing: libvirt-snmp checks this varbind against the row's
    current state all the same, so a State beside createAndGo on a shut-off domain is inconsistentValue.
    """
    if not 1 <= wanted <= 6:
        raise smi_error.WrongValueError(name=name, idx=idx)
    verb = _GUEST_TRANSITIONS.get((dom.state, wanted))
    if verb is None:
        raise smi_error.InconsistentValueError(name=name, idx=idx)
    return verb, verb


def _row_status(dom: Domain, wanted: int, name: Any, idx: int) -> tuple[str | None, str]:
    """libvirtGuestRowStatus: createAndGo(4) starts a defined domain (running), destroy(6) powers it off.

    libvirt-snmp lets createAndGo on an active domain, destroy on an inactive one and active(1) or
    notInService(2) through its checks, and then fails them in the commit (genErr).  Here they are refused
    before anything runs: inconsistentValue for the first two, wrongValue for notInService (never supported,
    as RFC 2579 answers an agent that does not support it); active(1) on a row, which always reads active,
    changes nothing and succeeds, as RFC 2579 has it.  notReady and createAndWait: wrongValue, as libvirt-snmp.
    """
    if wanted == 4:
        if dom.active:
            raise smi_error.InconsistentValueError(name=name, idx=idx)
        return "start", "start"
    if wanted == 6:
        if not dom.active:
            raise smi_error.InconsistentValueError(name=name, idx=idx)
        return "destroy", "destroy"
    if wanted == 1:
        return None, "active (already)"
    raise smi_error.WrongValueError(name=name, idx=idx)  # notInService, notReady, createAndWait, out of range
