"""The AgentX session's view of the exporter: reads from the SNMP model's view, SETs through the same
checking (setreq) and control code, notifications to the master through the same Notifier queues.

AgentX varbinds become setreq's plain ones here, directly: no pysnmp on this path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter import control
from exporter.snmp import agentx, agentx_pdu, mib_libvirt, mib_lvx, mib_vm, setreq
from exporter.snmp.model import SnmpModel
from exporter.snmp.syntax import BYTES, C64, G32, INT, OID, STR, TICKS, U32, NotificationDef, Value, resolve
from exporter.snmp.view import Missing

if TYPE_CHECKING:
    from exporter.snmp.notify import Send

#: What the master registers for us: our MIB, LIBVIRT-MIB and VM-MIB (the system group is snmpd's).
SUBTREES = (mib_lvx.LVX_ROOT, mib_libvirt.LIBVIRT_ROOT, mib_vm.VM_ROOT)
#: Who a SET through snmpd is audited as: snmpd knows the real principal and has checked it.
PRINCIPAL = "agentx-master"
#: A commit answers within this, well inside snmpd's default 1 s subagent timeout.
COMMIT_REPLY_S = 0.8


_AGENTX_TYPES = {INT: agentx_pdu.INTEGER, STR: agentx_pdu.OCTET_STRING, BYTES: agentx_pdu.OCTET_STRING,
                 C64: agentx_pdu.COUNTER64, G32: agentx_pdu.GAUGE32, U32: agentx_pdu.GAUGE32,
                 TICKS: agentx_pdu.TIME_TICKS, OID: agentx_pdu.OBJECT_IDENTIFIER}


def varbind(oid: agentx_pdu.Oid, value: Value, now: float) -> agentx_pdu.VarBind:
    """A view value as an AgentX varbind (resolved as on every other path: resolve)."""
    syntax, raw = resolve(value, now)
    return agentx_pdu.VarBind(_AGENTX_TYPES[syntax], oid, raw)


_SYNTAXES = {agentx_pdu.INTEGER: setreq.Syntax.INTEGER, agentx_pdu.OCTET_STRING: setreq.Syntax.OCTET_STRING,
             agentx_pdu.OBJECT_IDENTIFIER: setreq.Syntax.OBJECT_IDENTIFIER, agentx_pdu.GAUGE32: setreq.Syntax.GAUGE32,
             agentx_pdu.COUNTER32: setreq.Syntax.COUNTER32, agentx_pdu.TIME_TICKS: setreq.Syntax.TIME_TICKS,
             agentx_pdu.COUNTER64: setreq.Syntax.COUNTER64, agentx_pdu.IP_ADDRESS: setreq.Syntax.IP_ADDRESS,
             agentx_pdu.OPAQUE: setreq.Syntax.OPAQUE}


def set_bind(vb: agentx_pdu.VarBind) -> setreq.SetBind:
    """An incoming SET varbind as setreq checks it (Null and the exceptions: NULL, which is wrongType)."""
    syntax = _SYNTAXES.get(vb.type)
    return setreq.SetBind(vb.name, syntax, vb.value) if syntax is not None else \
        setreq.SetBind(vb.name, setreq.Syntax.NULL)


_MISSING = {Missing.NO_SUCH_OBJECT: agentx_pdu.NO_SUCH_OBJECT,
            Missing.NO_SUCH_INSTANCE: agentx_pdu.NO_SUCH_INSTANCE}


class Bridge(agentx.Handlers):
    def __init__(self, model: SnmpModel, source: str) -> None:
        self._model = model
        self._source = source

    def uptime_ticks(self) -> int:
        return self._model.uptime_ticks()

    def get(self, oid: agentx_pdu.Oid) -> agentx_pdu.VarBind:
        found = self._model.view().lookup(oid)
        if isinstance(found, Missing):
            return agentx_pdu.VarBind(_MISSING[found], oid)
        return varbind(oid, found, self._model.clock())

    def next(self, start: agentx_pdu.Oid, include: bool, end: agentx_pdu.Oid) -> agentx_pdu.VarBind:
        view = self._model.view()
        found: tuple[agentx_pdu.Oid, Value] | None = None
        if include:
            entry = view.get(start)
            if entry is not None:
                found = (start, entry)
        if found is None:
            found = next(view.walk(start), None)
        if found is None or (end and found[0] >= end):
            return agentx_pdu.VarBind(agentx_pdu.END_OF_MIB_VIEW, start)
        return varbind(found[0], found[1], self._model.clock())

    def test_set(self, varbinds: list[agentx_pdu.VarBind]) -> tuple[int, int, Any]:
        try:
            return 0, 0, self._model.plan_set([set_bind(vb) for vb in varbinds], PRINCIPAL, self._source)
        except setreq.SetError as exc:
            return agentx_pdu.ERROR_CODES.get(exc.status, agentx_pdu.GEN_ERR), exc.error_index, None

    async def commit_set(self, plan: Any) -> tuple[int, int]:
        status, index = await self._model.run(plan, PRINCIPAL, self._source, COMMIT_REPLY_S)
        return agentx_pdu.ERROR_CODES[status], index

    async def undo_set(self, plan: Any) -> tuple[int, int]:
        """Another subagent's commit failed after ours succeeded: take our steps back."""
        model = self._model
        back = []
        for step in reversed(plan.steps):
            verb = control.UNDO.get(step.verb)
            if verb is None:
                return agentx_pdu.ERROR_CODES["undoFailed"], 0
            back.append(control.Step(step.uuid, step.name, verb))
        if not back:
            return 0, 0
        assert model.controller is not None
        try:
            await model.controller.execute(back, reply_within_s=COMMIT_REPLY_S)
        except control.ControlError:
            return agentx_pdu.ERROR_CODES["undoFailed"], 0
        return 0, 0


def master_sender(subagent: agentx.Subagent) -> Send:
    """Notifications to the master as Notify PDUs, for Notifier.add_sink (its queue, retries and counters)."""

    async def send(notification: NotificationDef) -> str | None:
        return await subagent.send_notification(
            notification.trap_oid, [varbind(oid, value, 0.0) for oid, value in notification.var_binds])

    return send
