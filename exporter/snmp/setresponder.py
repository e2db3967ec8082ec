"""SETs to the standalone agent: pysnmp's varbinds checked by the model, run, and answered when done.

pysnmp's values become :class:`~exporter.snmp.setreq.SetBind` here, at the
edge (:func:`set_bind`), and a :class:`~exporter.snmp.setreq.SetError` the
pysnmp exception its status names (:func:`smi_error_of`); the checking
itself knows no pysnmp.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pysnmp.entity.rfc3413 import cmdrsp
from pysnmp.proto import rfc1902
from pysnmp.proto.api import v2c
from pysnmp.smi import error as smi_error

from exporter import control
from exporter.snmp import setreq
from exporter.snmp.model import SnmpModel

log = logging.getLogger(__name__)

Syntax = setreq.Syntax
#: pysnmp's value classes, most specific first (IpAddress is an OctetString; Unsigned32 shares Gauge32's tag).
_SYNTAXES: tuple[tuple[type, Syntax], ...] = (
    (rfc1902.Integer32, Syntax.INTEGER), (rfc1902.Counter32, Syntax.COUNTER32),
    (rfc1902.Gauge32, Syntax.GAUGE32), (rfc1902.Unsigned32, Syntax.GAUGE32), (rfc1902.TimeTicks, Syntax.TIME_TICKS),
    (rfc1902.Counter64, Syntax.COUNTER64), (rfc1902.IpAddress, Syntax.IP_ADDRESS), (rfc1902.Opaque, Syntax.OPAQUE),
    (rfc1902.OctetString, Syntax.OCTET_STRING), (rfc1902.ObjectIdentifier, Syntax.OBJECT_IDENTIFIER),
)
_NUMBERS = frozenset({Syntax.INTEGER, Syntax.COUNTER32, Syntax.GAUGE32, Syntax.TIME_TICKS, Syntax.COUNTER64})
_OCTETS = frozenset({Syntax.OCTET_STRING, Syntax.IP_ADDRESS, Syntax.OPAQUE})
#: setreq's error statuses as pysnmp's exceptions (pysnmp turns them back into the status of the response).
_SMI_ERRORS: dict[str, type[smi_error.MibOperationError]] = {
    "wrongType": smi_error.WrongTypeError, "wrongValue": smi_error.WrongValueError,
    "wrongLength": smi_error.WrongLengthError, "wrongEncoding": smi_error.WrongEncodingError,
    "noCreation": smi_error.NoCreationError, "inconsistentValue": smi_error.InconsistentValueError,
    "inconsistentName": smi_error.InconsistentNameError, "notWritable": smi_error.NotWritableError,
    "resourceUnavailable": smi_error.ResourceUnavailableError, "noAccess": smi_error.NoAccessError,
    "authorizationError": smi_error.AuthorizationError,
}


def set_bind(name: Any, value: Any) -> setreq.SetBind:
    """A pysnmp varbind of a SET as a plain one (a value of no SMI type we know: NULL, wrongType)."""
    oid = tuple(int(n) for n in name)
    syntax = next((s for cls, s in _SYNTAXES if isinstance(value, cls)), Syntax.NULL)
    if syntax in _NUMBERS:
        return setreq.SetBind(oid, syntax, int(value))
    if syntax in _OCTETS:
        return setreq.SetBind(oid, syntax, value.asOctets())
    if syntax is Syntax.OBJECT_IDENTIFIER:
        return setreq.SetBind(oid, syntax, tuple(value))
    return setreq.SetBind(oid, Syntax.NULL)


def smi_error_of(exc: setreq.SetError, name: Any) -> smi_error.MibOperationError:
    """The pysnmp exception that answers with ``exc``'s status and index (genErr for a status it has not)."""
    return _SMI_ERRORS.get(exc.status, smi_error.GenError)(name=name, idx=exc.index)


class ControlSetResponder(cmdrsp.SetCommandResponder):  # type: ignore[misc]
    """SET: every varbind is checked at once; the libvirt calls run off the loop and the reply follows.

    pysnmp answers a request as soon as the handler returns; here the reply to
    a SET that runs actions is sent when they finish (or when
    ``control.reply_within`` passes), so GETs keep being answered meanwhile.
    A retransmitted SET (same principal, address, request ID and varbinds)
    shares the first one's outcome and never runs an action twice.
    """

    def __init__(self, eng: Any, snmp_context: Any, model: SnmpModel) -> None:
        super().__init__(eng, snmp_context)
        self._model = model
        self._deferred: set[Any] = set()
        self._running: set[asyncio.Future[None]] = set()  # SETs being carried out (the loop keeps weak references)
        self._recent: dict[tuple[Any, ...], tuple[float, asyncio.Future[tuple[str, int]]]] = {}

    def _prune(self, _finished: asyncio.Future[tuple[str, int]]) -> None:
        self._running = {task for task in self._running if not task.done()}

    def release_state_information(self, stateReference: Any) -> None:
        if stateReference not in self._deferred:
            super().release_state_information(stateReference)

    def handle_management_operation(self, snmpEngine: Any, stateReference: Any, contextName: Any,
                                    PDU: Any) -> None:
        var_binds = v2c.apiPDU.get_varbinds(PDU)
        exec_ctx = snmpEngine.observer.get_execution_context("rfc3412.receiveMessage:request")
        principal = control.principal_name(str(exec_ctx["securityName"]), int(exec_ctx["securityModel"]))
        address = exec_ctx.get("transportAddress")
        source = f"{address[0]}:{address[1]}" if address else "?"
        # SNMPv1/v2c: pysnmp swaps the request ID for one of its own, but a retransmission is the same bytes.
        # SNMPv3: the bytes change (engine time, HMAC) while the request ID stays.
        ident: Any = bytes(exec_ctx["wholeMsg"]) if exec_ctx["messageProcessingModel"] in (0, 1) \
            else int(v2c.apiPDU.get_request_id(PDU))
        key = (principal, source, ident, tuple((tuple(n), v.prettyPrint()) for n, v in var_binds))
        now = time.monotonic()
        self._recent = {k: v for k, v in self._recent.items() if now - v[0] < 60}
        if key in self._recent:  # a retransmission: answer with the first one's outcome
            self._defer(snmpEngine, stateReference, var_binds, self._recent[key][1])
            return
        context = dict(snmpEngine=snmpEngine, acFun=self.verify_access, cbCtx=self.cbCtx)
        try:
            self._write_access(var_binds, principal, source, context)
            plan = self._model.plan_set([set_bind(name, value) for name, value in var_binds], principal, source)
        except setreq.SetError as exc:
            raise smi_error_of(exc, var_binds[exc.index][0]) from None
        except smi_error.SmiError:
            raise
        except Exception:
            log.exception("SET failed")
            raise smi_error.GenError(idx=0) from None
        future: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._recent[key] = (now, future)
        self._running.add(asyncio.ensure_future(self._run(plan, future, principal, source)))
        future.add_done_callback(self._prune)
        self._defer(snmpEngine, stateReference, var_binds, future)

    def _write_access(self, var_binds: Any, principal: str, source: str, context: dict[str, Any]) -> None:
        """The principal's write view, before anything else: a read-only principal always fails here
        (pysnmp's exception, audited as refused)."""
        try:
            for idx, (name, value) in enumerate(var_binds):
                if self.verify_access("write", (name, value), idx=idx, **context):
                    raise smi_error.NoAccessError(name=name, idx=idx)
        except smi_error.SmiError as exc:
            self._model.refused([tuple(name) for name, _ in var_binds], principal, source, type(exc).__name__)
            raise

    def _defer(self, snmpEngine: Any, stateReference: Any, var_binds: Any,
               future: asyncio.Future[tuple[str, int]]) -> None:
        self._deferred.add(stateReference)

        def reply(done: asyncio.Future[tuple[str, int]]) -> None:
            self._deferred.discard(stateReference)
            status, index = done.result() if not done.cancelled() else ("genErr", 1)
            try:
                self.send_varbinds(snmpEngine, stateReference, status, index, var_binds)
            except Exception:
                log.exception("could not send the SET response")
            super(ControlSetResponder, self).release_state_information(stateReference)

        future.add_done_callback(reply)

    async def _run(self, plan: setreq.Plan, future: asyncio.Future[tuple[str, int]], principal: str,
                   source: str) -> None:
        future.set_result(await self._model.run(plan, principal, source))
