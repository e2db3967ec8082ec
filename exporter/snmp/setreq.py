"""SNMP SET requests: every varbind is checked before anything runs.

:func:`plan` turns the varbinds of one SET into control steps, or raises
:class:`SetError` for the first varbind that cannot be done (wrongType,
wrongValue, inconsistentValue, inconsistentName, noCreation, notWritable,
resourceUnavailable), with its index, so that a SET is all or nothing.

Varbinds come in as :class:`SetBind`: an OID, the SNMP syntax of the value
as it came on the wire and a plain Python value.  No protocol library is
involved: the standalone agent (pysnmp) and the AgentX bridge each convert
their own varbinds at their edge.
"""

from __future__ import annotations

import enum
import logging
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
from exporter.snmp import mib, mib_libvirt, mib_lvx
from exporter.snmp.syntax import RC, RW

log = logging.getLogger(__name__)

_RUNNING_LIKE = (STATE_RUNNING, STATE_BLOCKED)
#: What a domain whose QEMU does not answer (timed out) still accepts: a hard power-off kills the process.
_STUCK_OK = frozenset({"destroy"})
_MAX_INT32 = 2**31 - 1

Oid = tuple[int, ...]


class Syntax(enum.Enum):
    """The SMI type a SET value came as (only INTEGER is writable here; the rest are wrongType)."""

    INTEGER = "INTEGER"  # Integer32 and its textual conventions (enumerations, TestAndIncr, RowStatus)
    OCTET_STRING = "OCTET STRING"
    OBJECT_IDENTIFIER = "OBJECT IDENTIFIER"
    IP_ADDRESS = "IpAddress"
    COUNTER32 = "Counter32"
    GAUGE32 = "Gauge32"  # Unsigned32 too: the same tag on the wire
    TIME_TICKS = "TimeTicks"
    OPAQUE = "Opaque"
    COUNTER64 = "Counter64"
    NULL = "NULL"  # and anything else that is no value (an exception, a type we do not know)


@dataclass(frozen=True, slots=True)
class SetBind:
    """One varbind of a SET: the instance's OID, the value's syntax and the value (an int for INTEGER)."""

    oid: Oid
    syntax: Syntax
    value: object = None


class SetError(Exception):
    """A SET refused before anything ran: the SNMP error status (``wrongType``...) and the 0-based position
    of the varbind it is about (:attr:`error_index` is the 1-based one a response carries)."""

    def __init__(self, status: str, index: int) -> None:
        super().__init__(f"{status} at varbind {index + 1}")
        self.status = status
        self.index = index

    @property
    def error_index(self) -> int:
        return self.index + 1

    @property
    def name(self) -> str:
        """The audit line's word for it, as pysnmp names its exception (``wrongType``: ``WrongTypeError``)."""
        return self.status[:1].upper() + self.status[1:] + "Error"


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


def _int(bind: SetBind, idx: int) -> int:
    if bind.syntax is not Syntax.INTEGER or not isinstance(bind.value, int) or isinstance(bind.value, bool):
        raise SetError("wrongType", idx)
    return bind.value


def admin_verb(dom: Domain, wanted: int, idx: int) -> tuple[str | None, str]:
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
        raise SetError("wrongValue", idx)
    raise SetError("inconsistentValue", idx)


def action_verb(dom: Domain, wanted: int, idx: int) -> tuple[str | None, str]:
    """lvxDomainAction: none(1), reboot(2), reset(3), managedSave(4)."""
    verbs = {2: "reboot", 3: "reset", 4: "managed_save"}
    if wanted == 1:
        return None, "none"
    if wanted not in verbs:
        raise SetError("wrongValue", idx)
    if not dom.active or (wanted != 3 and dom.state not in (*_RUNNING_LIKE, STATE_PAUSED)):
        raise SetError("inconsistentValue", idx)
    return verbs[wanted], verbs[wanted]


def plan(
    var_binds: Sequence[SetBind],
    snap: Snapshot,
    domain_index: Mapping[int, str],
    controller: Controller | None,
    spin_lock: int,
) -> Plan:
    """Check every varbind; return the steps to run.  Raises :class:`SetError` for the first one refused.

    ``controller`` None: control is off, and every object is notWritable.  ``spin_lock``: the current value of
    lvxActionSpinLock (TestAndIncr), which a request that sets it must quote.
    """
    result = Plan()
    touched: set[str] = set()
    by_uuid = {d.uuid: d for d in snap.domains}

    for idx, bind in enumerate(var_binds):
        oid = bind.oid
        obj = mib.object_of(oid)
        if obj is None or obj.access not in (RW, RC) or controller is None:
            raise SetError("notWritable", idx)
        instance = oid[len(obj.oid):]
        number = _int(bind, idx)

        if obj.name == "lvxActionSpinLock":
            if instance != (0,):
                raise SetError("noCreation", idx)
            if not 0 <= number <= _MAX_INT32:
                raise SetError("wrongValue", idx)
            if number != spin_lock or result.spin_lock:
                raise SetError("inconsistentValue", idx)
            result.spin_lock = True
            continue

        if obj.name in ("lvxDomainAdminState", "lvxDomainAction"):
            uuid = domain_index.get(instance[0]) if len(instance) == 1 else None
            dom = by_uuid.get(uuid) if uuid else None
            if dom is None:
                raise SetError("noCreation", idx)  # no such domain; rows cannot be created
            chooser = admin_verb if obj.name == "lvxDomainAdminState" else action_verb
            verb, label = chooser(dom, number, idx)
        else:  # libvirt-snmp's guest table, indexed by the UUID's 16 bytes
            dom = None
            if len(instance) == 16 and all(0 <= b <= 255 for b in instance):
                dom = by_uuid.get(str(uuidlib.UUID(bytes=bytes(instance))))
            if dom is None:
                # libvirt-snmp: inconsistentName for a UUID libvirt does not know, but wrongLength (an error about
                # the value, not the name) for an index that is not 16 bytes; here both are inconsistentName.
                raise SetError("inconsistentName", idx)
            if obj.name == "libvirtGuestRowStatus":
                verb, label = _row_status(dom, number, idx)
            else:
                verb, label = _guest_state(dom, number, idx)

        if dom.uuid in touched and verb is not None:
            raise SetError("inconsistentValue", idx)  # one action per domain per request
        if verb is not None and controller.busy(dom.uuid):
            raise SetError("resourceUnavailable", idx)  # an action is still running
        if verb is not None and dom.timed_out and verb not in _STUCK_OK:
            # It would wait out libvirt's job lock (30 s) behind the hung monitor and fail anyway.
            log.warning("SET refused: domain %s is not answering (its stats call timed out); only a hard "
                        "power-off (lvxDomainAdminState off, libvirtGuestRowStatus destroy) is accepted until it "
                        "does", dom.name)
            raise SetError("resourceUnavailable", idx)
        if verb is not None:
            touched.add(dom.uuid)
        result.add(idx, dom, verb, label)
    return result


def describe(oids: Sequence[Oid], snap: Snapshot, domain_index: Mapping[int, str]) -> str:
    """What a refused SET was about, for the audit line: domains by name; a varbind with no domain behind it by
    its object and row (``lvxDomainAdminState.9``), or its OID if it is none of ours.  The spin lock, which only
    guards a request, is left out."""
    names = []
    by_uuid = {d.uuid: d.name for d in snap.domains}
    for oid in oids:
        obj = mib.object_of(oid)
        instance = oid[len(obj.oid):] if obj is not None else ()
        uuid = None
        lvx_entry = mib_lvx.LVX_DOMAIN_ENTRY
        if obj is not None and obj.oid[: len(lvx_entry)] == lvx_entry and len(instance) == 1:
            uuid = domain_index.get(instance[0])
        elif obj is not None and obj.oid[: len(mib_libvirt.LIBVIRT_GUEST_ENTRY)] == mib_libvirt.LIBVIRT_GUEST_ENTRY \
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


def _guest_state(dom: Domain, wanted: int, idx: int) -> tuple[str | None, str]:
    """libvirtGuestState, checked as libvirt-snmp checks it: running->paused, running->shutdown and
    paused->running, from the state libvirt reports (so pmsuspended, blocked or nostate allow none).

    A createAndGo in the same request changes nothing: libvirt-snmp checks this varbind against the row's
    current state all the same, so a State beside createAndGo on a shut-off domain is inconsistentValue.
    """
    if not 1 <= wanted <= 6:
        raise SetError("wrongValue", idx)
    verb = _GUEST_TRANSITIONS.get((dom.state, wanted))
    if verb is None:
        raise SetError("inconsistentValue", idx)
    return verb, verb


def _row_status(dom: Domain, wanted: int, idx: int) -> tuple[str | None, str]:
    """libvirtGuestRowStatus: createAndGo(4) starts a defined domain (running), destroy(6) powers it off.

    libvirt-snmp lets createAndGo on an active domain, destroy on an inactive one and active(1) or
    notInService(2) through its checks, and then fails them in the commit (genErr).  Here they are refused
    before anything runs: inconsistentValue for the first two, wrongValue for notInService (never supported,
    as RFC 2579 answers an agent that does not support it); active(1) on a row, which always reads active,
    changes nothing and succeeds, as RFC 2579 has it.  notReady and createAndWait: wrongValue, as libvirt-snmp.
    """
    if wanted == 4:
        if dom.active:
            raise SetError("inconsistentValue", idx)
        return "start", "start"
    if wanted == 6:
        if not dom.active:
            raise SetError("inconsistentValue", idx)
        return "destroy", "destroy"
    if wanted == 1:
        return None, "active (already)"
    raise SetError("wrongValue", idx)  # notInService, notReady, createAndWait, out of range
