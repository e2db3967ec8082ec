"""The AgentX session's view of the exporter: reads from the SNMP agent's view, SETs through the same
checking (setreq) and control code, notifications through the master."""

from __future__ import annotations

import logging
from typing import Any

from pysnmp.proto import rfc1902
from pysnmp.smi import error as smi_error

from exporter.snmp import agentx, mib, setreq
from exporter.snmp.agent import SnmpAgent, run_plan
from exporter.snmp.notify import Notification

log = logging.getLogger(__name__)

#: What the master registers for us: our MIB, LIBVIRT-MIB and VM-MIB (the system group is snmpd's).
SUBTREES = (mib.LVX_ROOT, mib.LIBVIRT_ROOT, mib.VM_ROOT)
#: A commit answers within this, well inside snmpd's default 1 s subagent timeout.
COMMIT_REPLY_S = 0.8
_MAX32, _MAX64 = 2**32 - 1, 2**64 - 1
_SMI_STATUS = {
    smi_error.GenError: "genErr", smi_error.NoAccessError: "noAccess", smi_error.WrongTypeError: "wrongType",
    smi_error.WrongLengthError: "wrongLength", smi_error.WrongEncodingError: "wrongEncoding",
    smi_error.WrongValueError: "wrongValue", smi_error.NoCreationError: "noCreation",
    smi_error.InconsistentValueError: "inconsistentValue",
    smi_error.ResourceUnavailableError: "resourceUnavailable", smi_error.AuthorizationError: "authorizationError",
    smi_error.NotWritableError: "notWritable", smi_error.InconsistentNameError: "inconsistentName",
}


def varbind(oid: agentx.Oid, value: mib.Value, now: float) -> agentx.VarBind:
    """A view value as an AgentX varbind (the same saturation as the other paths)."""
    syntax, raw = value
    if callable(raw):
        raw = raw(now)
    if syntax == mib.INT:
        return agentx.VarBind(agentx.INTEGER, oid, min(max(raw, -(2**31)), 2**31 - 1))
    if syntax == mib.STR:
        return agentx.VarBind(agentx.OCTET_STRING, oid, raw.encode("utf-8"))
    if syntax == mib.BYTES:
        return agentx.VarBind(agentx.OCTET_STRING, oid, bytes(raw))
    if syntax == mib.C64:
        return agentx.VarBind(agentx.COUNTER64, oid, min(max(raw, 0), _MAX64))
    if syntax in (mib.G32, mib.U32):
        return agentx.VarBind(agentx.GAUGE32, oid, min(max(raw, 0), _MAX32))
    if syntax == mib.TICKS:
        return agentx.VarBind(agentx.TIME_TICKS, oid, raw % 2**32)
    if syntax == mib.OID:
        return agentx.VarBind(agentx.OBJECT_IDENTIFIER, oid, tuple(raw))
    raise ValueError(f"unknown syntax {syntax!r}")


def _pysnmp_value(vb: agentx.VarBind) -> Any:
    """An incoming SET value as the pysnmp object setreq checks."""
    t = vb.type
    if t == agentx.INTEGER:
        return rfc1902.Integer32(vb.value)
    if t == agentx.OCTET_STRING:
        return rfc1902.OctetString(vb.value)
    if t == agentx.OBJECT_IDENTIFIER:
        return rfc1902.ObjectIdentifier(vb.value)
    if t == agentx.GAUGE32:
        return rfc1902.Gauge32(vb.value)
    if t == agentx.COUNTER32:
        return rfc1902.Counter32(vb.value)
    if t == agentx.TIME_TICKS:
        return rfc1902.TimeTicks(vb.value)
    if t == agentx.COUNTER64:
        return rfc1902.Counter64(vb.value)
    if t == agentx.IP_ADDRESS:
        return rfc1902.IpAddress(vb.value)
    return rfc1902.OctetString(b"")  # Null or Opaque: never a valid value for our objects (wrongType)


def _from_pysnmp(oid: agentx.Oid, value: Any) -> agentx.VarBind:
    """A notification varbind (pysnmp object, as the notifier gets it) as an AgentX varbind."""
    for cls, t in ((rfc1902.Counter64, agentx.COUNTER64), (rfc1902.TimeTicks, agentx.TIME_TICKS),
                   (rfc1902.Gauge32, agentx.GAUGE32), (rfc1902.Unsigned32, agentx.GAUGE32),
                   (rfc1902.Counter32, agentx.COUNTER32), (rfc1902.Integer32, agentx.INTEGER),
                   (rfc1902.Integer, agentx.INTEGER)):
        if isinstance(value, cls):
            return agentx.VarBind(t, oid, int(value))
    if isinstance(value, rfc1902.ObjectIdentifier):
        return agentx.VarBind(agentx.OBJECT_IDENTIFIER, oid, tuple(value))
    return agentx.VarBind(agentx.OCTET_STRING, oid, bytes(value))


class Bridge(agentx.Handlers):
    def __init__(self, agent: SnmpAgent, source: str) -> None:
        self._agent = agent
        self._source = source

    def uptime_ticks(self) -> int:
        return self._agent.uptime_ticks()

    def get(self, oid: agentx.Oid) -> agentx.VarBind:
        entry = self._agent.view().get(oid)
        if entry is not None:
            return varbind(oid, entry, self._agent.clock())
        obj = mib.object_of(oid)
        known = obj is not None and obj.oid in mib.READABLE
        return agentx.VarBind(agentx.NO_SUCH_INSTANCE if known else agentx.NO_SUCH_OBJECT, oid)

    def next(self, start: agentx.Oid, include: bool, end: agentx.Oid) -> agentx.VarBind:
        view = self._agent.view()
        found: tuple[agentx.Oid, mib.Value] | None = None
        if include:
            entry = view.get(start)
            if entry is not None:
                found = (start, entry)
        if found is None:
            found = next(view.walk(start), None)
        if found is None or (end and found[0] >= end):
            return agentx.VarBind(agentx.END_OF_MIB_VIEW, start)
        return varbind(found[0], found[1], self._agent.clock())

    def test_set(self, varbinds: list[agentx.VarBind]) -> tuple[int, int, Any]:
        agent = self._agent
        pairs = [(rfc1902.ObjectName(vb.name), _pysnmp_value(vb)) for vb in varbinds]
        try:
            plan = setreq.plan(pairs, agent.current_snapshot(), agent.domain_index(),
                               agent.controller if agent.control_enabled else None, agent.spin_lock)
        except smi_error.SmiError as exc:
            status = next((s for cls, s in _SMI_STATUS.items() if isinstance(exc, cls)), "genErr")
            index = exc.get("idx", 0) if isinstance(exc, smi_error.MibOperationError) else 0
            targets = setreq.describe(pairs, agent.current_snapshot(), agent.domain_index())
            from exporter import control

            control.audit("agentx-master", self._source, targets, "set", f"refused: {type(exc).__name__}")
            return agentx.ERROR_CODES[status], (index or 0) + 1, None
        snap = agent.current_snapshot()
        for step in plan.steps:
            dom = snap.domain_by_uuid(step.uuid)
            if dom is not None:
                agent.state_before_action[step.uuid] = dom.state
        return 0, 0, plan

    async def commit_set(self, plan: Any) -> tuple[int, int]:
        status, index = await run_plan(self._agent, plan, "agentx-master", self._source, COMMIT_REPLY_S)
        return agentx.ERROR_CODES[status], index

    async def undo_set(self, plan: Any) -> tuple[int, int]:
        """Another subagent's commit failed after ours succeeded: take our steps back."""
        from exporter import control

        agent = self._agent
        back = []
        for step in reversed(plan.steps):
            verb = control.UNDO.get(step.verb)
            if verb is None:
                return agentx.ERROR_CODES["undoFailed"], 0
            back.append(control.Step(step.uuid, step.name, verb))
        if not back:
            return 0, 0
        assert agent.controller is not None
        try:
            await agent.controller.execute(back, reply_within_s=COMMIT_REPLY_S)
        except control.ControlError:
            return agentx.ERROR_CODES["undoFailed"], 0
        return 0, 0


class MasterNotifier:
    """Notifications through the master (AgentX Notify), with the interface of snmp.notify.Notifier."""

    def __init__(self, subagent: agentx.Subagent, mibs: frozenset[str], also: Any = None) -> None:
        self._subagent = subagent
        self._mibs = mibs
        self._also = also  # the standalone notifier, when snmp.notify targets exist too

    def wants(self, mib_name: str) -> bool:
        return mib_name in self._mibs or (self._also is not None and self._also.wants(mib_name))

    def submit(self, notification: Notification) -> None:
        if notification.mib in self._mibs:
            self._subagent.notify(notification.trap_oid,
                                  [_from_pysnmp(oid, value) for oid, value in notification.var_binds])
        if self._also is not None and self._also.wants(notification.mib):
            self._also.submit(notification)
