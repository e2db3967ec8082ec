"""The AgentX session's view of the exporter: reads from the SNMP agent's view, SETs through the same
checking (setreq) and control code, notifications to the master through the same Notifier queues."""

from __future__ import annotations

from typing import Any

from pysnmp.proto import rfc1902
from pysnmp.smi import error as smi_error

from exporter import control
from exporter.snmp import agentx, mib
from exporter.snmp.agent import SnmpAgent, run_plan
from exporter.snmp.mib import NotificationDef
from exporter.snmp.notify import Send

#: What the master registers for us: our MIB, LIBVIRT-MIB and VM-MIB (the system group is snmpd's).
SUBTREES = (mib.LVX_ROOT, mib.LIBVIRT_ROOT, mib.VM_ROOT)
#: Who a SET through snmpd is audited as: snmpd knows the real principal and has checked it.
PRINCIPAL = "agentx-master"
#: A commit answers within this, well inside snmpd's default 1 s subagent timeout.
COMMIT_REPLY_S = 0.8
_SMI_STATUS = {
    smi_error.GenError: "genErr", smi_error.NoAccessError: "noAccess", smi_error.WrongTypeError: "wrongType",
    smi_error.WrongLengthError: "wrongLength", smi_error.WrongEncodingError: "wrongEncoding",
    smi_error.WrongValueError: "wrongValue", smi_error.NoCreationError: "noCreation",
    smi_error.InconsistentValueError: "inconsistentValue",
    smi_error.ResourceUnavailableError: "resourceUnavailable", smi_error.AuthorizationError: "authorizationError",
    smi_error.NotWritableError: "notWritable", smi_error.InconsistentNameError: "inconsistentName",
}


_AGENTX_TYPES = {mib.INT: agentx.INTEGER, mib.STR: agentx.OCTET_STRING, mib.BYTES: agentx.OCTET_STRING,
                 mib.C64: agentx.COUNTER64, mib.G32: agentx.GAUGE32, mib.U32: agentx.GAUGE32,
                 mib.TICKS: agentx.TIME_TICKS, mib.OID: agentx.OBJECT_IDENTIFIER}


def varbind(oid: agentx.Oid, value: mib.Value, now: float) -> agentx.VarBind:
    """A view value as an AgentX varbind (resolved as on every other path: mib.resolve)."""
    syntax, raw = mib.resolve(value, now)
    return agentx.VarBind(_AGENTX_TYPES[syntax], oid, raw)


_PYSNMP_TYPES = {agentx.INTEGER: rfc1902.Integer32, agentx.OCTET_STRING: rfc1902.OctetString,
                 agentx.OBJECT_IDENTIFIER: rfc1902.ObjectIdentifier, agentx.GAUGE32: rfc1902.Gauge32,
                 agentx.COUNTER32: rfc1902.Counter32, agentx.TIME_TICKS: rfc1902.TimeTicks,
                 agentx.COUNTER64: rfc1902.Counter64, agentx.IP_ADDRESS: rfc1902.IpAddress}


def _pysnmp_value(vb: agentx.VarBind) -> Any:
    """An incoming SET value as the pysnmp object setreq checks (Null or Opaque: an empty string, wrongType)."""
    cls = _PYSNMP_TYPES.get(vb.type)
    return cls(vb.value) if cls is not None else rfc1902.OctetString(b"")


_MISSING = {mib.Missing.NO_SUCH_OBJECT: agentx.NO_SUCH_OBJECT, mib.Missing.NO_SUCH_INSTANCE: agentx.NO_SUCH_INSTANCE}


class Bridge(agentx.Handlers):
    def __init__(self, agent: SnmpAgent, source: str) -> None:
        self._agent = agent
        self._source = source

    def uptime_ticks(self) -> int:
        return self._agent.uptime_ticks()

    def get(self, oid: agentx.Oid) -> agentx.VarBind:
        found = self._agent.view().lookup(oid)
        if isinstance(found, mib.Missing):
            return agentx.VarBind(_MISSING[found], oid)
        return varbind(oid, found, self._agent.clock())

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
        pairs = [(rfc1902.ObjectName(vb.name), _pysnmp_value(vb)) for vb in varbinds]
        try:
            return 0, 0, self._agent.plan_set(pairs, PRINCIPAL, self._source)
        except smi_error.MibOperationError as exc:
            status = next((s for cls, s in _SMI_STATUS.items() if isinstance(exc, cls)), "genErr")
            return agentx.ERROR_CODES[status], (exc.get("idx", 0) or 0) + 1, None

    async def commit_set(self, plan: Any) -> tuple[int, int]:
        status, index = await run_plan(self._agent, plan, PRINCIPAL, self._source, COMMIT_REPLY_S)
        return agentx.ERROR_CODES[status], index

    async def undo_set(self, plan: Any) -> tuple[int, int]:
        """Another subagent's commit failed after ours succeeded: take our steps back."""
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


def master_sender(subagent: agentx.Subagent) -> Send:
    """Notifications to the master as Notify PDUs, for Notifier.add_sink (its queue, retries and counters)."""

    async def send(notification: NotificationDef) -> str | None:
        return await subagent.send_notification(
            notification.trap_oid, [varbind(oid, value, 0.0) for oid, value in notification.var_binds])

    return send
