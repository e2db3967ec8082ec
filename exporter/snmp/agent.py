"""The standalone SNMP agent: pysnmp's engine with our own instrumentation.

Request handlers read a :class:`~exporter.snmp.mib.MibView`, built once per
snapshot, with a bisect for GETNEXT and GETBULK; they never call libvirt.
Access control is pysnmp's VACM: every community and user gets a read view
and, unless granted one, an empty write view.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as snmp_config
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v2c
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from exporter import control
from exporter.config import Config, ListenAddress
from exporter.control import Controller
from exporter.events import position
from exporter.indexmap import IndexMap, StateError
from exporter.snapshot import EVENT_STATES, STATE_NOSTATE, Domain, DomainEvent, Snapshot, Update
from exporter.snmp import mib, setreq
from exporter.snmp.engine import auth_protocol, default_engine_id, encode, new_engine, priv_protocol
from exporter.snmp.fastpath import FastPath

if TYPE_CHECKING:
    from exporter.snmp.notify import Notifier

log = logging.getLogger(__name__)

_NO_WRITE_VIEW = "no-write"
_MISSING = {mib.Missing.NO_SUCH_OBJECT: rfc1905.noSuchObject, mib.Missing.NO_SUCH_INSTANCE: rfc1905.noSuchInstance}


class ViewController(AbstractMibInstrumController):  # type: ignore[misc]  # pysnmp is untyped
    """pysnmp instrumentation over a MibView; every failure becomes an SNMP error."""

    def __init__(self, agent: SnmpAgent) -> None:
        self._agent = agent

    @staticmethod
    def _hidden(ac: Any, name: Any, value: Any, idx: int, context: dict[str, Any]) -> bool:
        """True if the principal may not see this instance (not in view, or Counter64 for v1)."""
        if ac is None:
            return False
        try:
            return bool(ac("read", (name, value), idx=idx, **context))
        except smi_error.NoAccessError:
            return True  # RFC 3584: SNMPv1 walks skip Counter64 objects

    def read_variables(self, *varBinds: Any, **context: Any) -> list[tuple[Any, Any]]:
        view = self._agent.view()
        now = self._agent.clock()
        ac = context.get("acFun")
        result = []
        for idx, (name, _) in enumerate(varBinds):
            try:
                found = view.lookup(tuple(name))
                value = None if isinstance(found, mib.Missing) else encode(found, now)
                if ac is not None and ac("read", (name, value), idx=idx, **context):
                    result.append((name, rfc1905.noSuchObject))  # not in this principal's view
                elif isinstance(found, mib.Missing):
                    result.append((name, _MISSING[found]))
                else:
                    result.append((name, value))
            except smi_error.SmiError:
                raise
            except Exception:
                log.exception("GET of %s failed", name)
                raise smi_error.GenError(name=name, idx=idx) from None
        return result

    def read_next_variables(self, *varBinds: Any, **context: Any) -> list[tuple[Any, Any]]:
        view = self._agent.view()
        now = self._agent.clock()
        ac = context.get("acFun")
        result = []
        for idx, (name, _) in enumerate(varBinds):
            try:
                for oid, entry in view.walk(tuple(name)):
                    value = encode(entry, now)
                    next_name = rfc1902.ObjectName(oid)
                    if not self._hidden(ac, next_name, value, idx, context):
                        result.append((next_name, value))
                        break
                else:
                    result.append((name, rfc1905.endOfMibView))
            except smi_error.SmiError:
                raise
            except Exception:
                log.exception("GETNEXT after %s failed", name)
                raise smi_error.GenError(name=name, idx=idx) from None
        return result

    def write_variables(self, *varBinds: Any, **context: Any) -> list[tuple[Any, Any]]:
        """Not used: SETs go through :class:`ControlSetResponder`, which checks access and plans first."""
        raise smi_error.NotWritableError(name=varBinds[0][0] if varBinds else None, idx=0)


class SnmpAgent:
    """Serves the MIB view of the poller's current snapshot over UDP."""

    def __init__(
        self,
        config: Config,
        get_snapshot: Callable[[], Snapshot],
        clock: Callable[[], float] = time.time,
        controller: Controller | None = None,
    ) -> None:
        self._config = config
        self.controller = controller
        self.spin_lock = 0
        self.notifier: Notifier | None = None
        self.state_before_action: dict[str, int] = {}  # for VM-MIB's "previous oper state"
        if controller is not None:
            controller.on_change.append(self.invalidate)
            controller.on_failure.append(self._action_failed)
        self._get_snapshot = get_snapshot
        self.clock = clock
        self.started_at = clock()
        self._state_dir = Path(config.state_directory)
        self._index_map = IndexMap(self._state_dir / "snmp-indexes.json")  # may raise StateError
        self._indexes = mib.Indexes({}, {}, {})
        self._indexed_snapshot: Snapshot | None = None  # the last snapshot whose domains have indexes
        self._lock = threading.Lock()
        self._view: tuple[Snapshot, mib.MibView] | None = None
        # Domains changed since the view's snapshot, as (before, after), while the listener follows every
        # change: the next request patches them into the view.  None: the next request builds it afresh.
        self._dirty: dict[str, tuple[Domain | None, Domain | None]] | None = None
        self._active_count = 0  # lvxDomainActiveCount of the view
        self._domain_uuids: set[str] | None = None
        self._last_change_ticks = 0
        self._started: dict[str, float] = {}
        self._connected_at: float | None = None
        self._state_error_logged = False
        self._engine: Any = None
        self.fast_path: FastPath | None = None

    # -- snapshot tracking (event-loop thread) --------------------------------

    def uptime_ticks(self) -> int:
        """sysUpTime: hundredths of a second since the agent started."""
        return int(max(0.0, self.clock() - self.started_at) * 100)

    @property
    def control_enabled(self) -> bool:
        return self._config.control_enabled and self.controller is not None

    def current_snapshot(self) -> Snapshot:
        return self._get_snapshot()

    def on_snapshot(self, snap: Snapshot, update: Update) -> None:
        """Poller listener: keep indexes, the table-change time and start times current, and send
        notifications.  An update that names its changed domains costs one domain, not the host."""
        event = update.event
        if event is not None:
            if event.kind == "started":
                self._started[event.uuid] = self.clock()
            elif event.kind in ("stopped", "undefined", "crashed"):
                self._started.pop(event.uuid, None)
        if update.domains is None or self._indexed_snapshot is None:
            self._index(snap)
            with self._lock:
                self._dirty = None
        else:
            self._follow(snap, update.domains)
        if event is not None and self.notifier is not None:
            try:
                self._notify(snap, update, event)
            except Exception:  # a notification problem must never stop the agent
                log.exception("could not build the notifications for %s of %s", event.kind, event.name)

    def _follow(self, snap: Snapshot, changes: tuple[tuple[Domain | None, Domain | None], ...]) -> None:
        """Indexes and the table-change time for a few changed domains; remember them for the view."""
        for before, after in changes:
            if before is None and after is not None:  # a new domain: its row index at once
                self._domain_index(after.uuid)
            if (before is None) != (after is None):
                self._last_change_ticks = self.uptime_ticks()
                if self._domain_uuids is not None:
                    if after is not None:
                        self._domain_uuids.add(after.uuid)
                    elif before is not None:
                        self._domain_uuids.discard(before.uuid)
        self._indexed_snapshot = snap
        with self._lock:
            if self._dirty is not None:
                for before, after in changes:
                    uuid = (after or before).uuid  # type: ignore[union-attr]
                    first = self._dirty.get(uuid)
                    self._dirty[uuid] = (first[0] if first is not None else before, after)

    def _domain_index(self, uuid: str) -> int | None:
        index = self._indexes.domains.get(uuid)
        if index is None:  # a domain not polled yet (just announced by an event): give it its index now
            try:
                index = self._index_map.assign("domain", [uuid]).get(uuid)
            except StateError as exc:
                log.error("no index for a new domain: %s", exc)
            if index is not None:
                self._indexes.domains[uuid] = index
        return index

    def _notify(self, snap: Snapshot, update: Update, event: DomainEvent) -> None:
        assert self.notifier is not None
        before = dom = None
        for was, now in update.domains or ():
            if (now or was) is not None and (now or was).uuid == event.uuid:  # type: ignore[union-attr]
                before, dom = was, now or was
        if dom is None:  # the event changed nothing: the domain as served
            pos = position(snap.domains, event.uuid, event.name)
            dom = before = snap.domains[pos] if pos is not None else None
        index = self._domain_index(event.uuid)
        if index is None:
            return
        state = dom.state if dom is not None else EVENT_STATES.get(event.kind, STATE_NOSTATE)
        reason = dom.state_reason if dom is not None else 0
        for notification in mib.lifecycle_notifications(
            event.kind, event.name, event.uuid, index, state, reason,
            persistent=dom.persistent if dom is not None else True,
            previous_state=self.state_before_action.pop(event.uuid, before.state if before is not None else None),
        ):
            if self.notifier.wants(notification.mib):
                self.notifier.submit(notification)

    def _action_failed(self, step: Any, message: str) -> None:
        if self.notifier is None:
            return
        index = self._domain_index(step.uuid)
        if index is None:
            return
        self.notifier.submit(
            mib.action_failed_notification(step.name, step.uuid, index, control.ACTION_CODES[step.verb], message))

    def _index(self, snap: Snapshot) -> None:
        if snap is self._indexed_snapshot:
            return
        self._indexed_snapshot = snap
        if not snap.up:
            self._connected_at = None
            return
        if self._connected_at is None:
            self._connected_at = self.clock()
        uuids = {d.uuid for d in snap.domains}
        try:
            self._indexes = mib.Indexes(
                domains=dict(self._index_map.assign("domain", [d.uuid for d in snap.domains])),  # name order
                pools=self._index_map.assign("pool", [p.uuid for p in snap.pools]),
                networks=self._index_map.assign("network", [n.uuid for n in snap.networks]),
            )
            self._state_error_logged = False
        except StateError as exc:
            if not self._state_error_logged:
                log.error("SNMP row indexes not saved; new domains get no rows until this is fixed: %s", exc)
                self._state_error_logged = True
        if self._domain_uuids is not None and uuids != self._domain_uuids:
            self._last_change_ticks = self.uptime_ticks()
        self._domain_uuids = uuids

    def plan_set(self, var_binds: Sequence[tuple[Any, Any]], principal: str, source: str,
                 check_access: Callable[[], None] | None = None) -> setreq.Plan:
        """Check a SET, whichever way it came (standalone agent or AgentX): the steps to run.

        Raises pysnmp's SMI errors, each audited as refused; remembers the state
        each target domain is in, for VM-MIB's "previous state" in notifications.
        """
        snap = self.current_snapshot()
        try:
            if check_access is not None:
                check_access()
            plan = setreq.plan(var_binds, snap, self.domain_index(),
                               self.controller if self.control_enabled else None, self.spin_lock)
        except smi_error.SmiError as exc:
            control.audit(principal, source, setreq.describe(var_binds, snap, self.domain_index()), "set",
                          f"refused: {type(exc).__name__}")
            raise
        for step in plan.steps:
            dom = snap.domain_by_uuid(step.uuid)
            if dom is not None:
                self.state_before_action[step.uuid] = dom.state
        return plan

    def invalidate(self) -> None:
        """Rebuild the view on next use (a last-action record or the spin lock changed)."""
        with self._lock:
            self._view = None

    def domain_index(self) -> dict[int, str]:
        """lvxDomainIndex -> UUID for the current indexes."""
        return {index: uuid for uuid, index in self._indexes.domains.items()}

    def view(self) -> mib.MibView:
        """The view of the current snapshot: built on first use after a poll, patched after an event."""
        snap = self._get_snapshot()
        with self._lock:
            cached = self._view
            if cached is not None and cached[0] is snap:
                return cached[1]
            if cached is not None and self._dirty is not None and snap is self._indexed_snapshot:
                view = self._patch(snap, cached[1], self._dirty)
            else:
                self._index(snap)
                self._active_count = sum(1 for d in snap.domains if d.active)
                view = mib.build_view(snap, self._indexes, self._system(),
                                      table_last_change_ticks=self._last_change_ticks, started_at=self._started,
                                      actions=self._actions(), spin_lock=self.spin_lock)
            self._view = (snap, view)
            # From now on the listener notes what changes, if it saw this snapshot (a test may serve one without).
            self._dirty = {} if snap is self._indexed_snapshot else None
            return view

    def _system(self) -> mib.SystemInfo:
        return mib.SystemInfo(self._config.snmp_contact, self._config.snmp_location, self.started_at,
                              connected_at=self._connected_at,
                              vm_notifications=self.notifier is not None and self.notifier.wants("vm"))

    def _actions(self) -> dict[str, tuple[int, int, str, int]] | None:
        return {u: a.as_tuple() for u, a in self.controller.last.items()} if self.controller else None

    def _patch(self, snap: Snapshot, view: mib.MibView, dirty: dict[str, tuple[Domain | None, Domain | None]]
               ) -> mib.MibView:
        """``view`` with the rows of the ``dirty`` domains replaced: the work of those domains alone."""
        remove: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = []
        add = mib.Builder()
        actions = self.controller.last if self.controller else {}
        for uuid, (before, after) in dirty.items():
            index = self._indexes.domains.get(uuid)
            if before is not None and index is not None:
                remove.extend(mib.domain_rows(before, index))
                self._active_count -= before.active
            if after is not None:
                index = self._domain_index(uuid)
                if index is not None:
                    action = actions.get(uuid)
                    mib.put_domain(add, after, index, self._started.get(uuid),
                                   action.as_tuple() if action is not None else None)
                self._active_count += after.active
        scalars = mib.Builder()
        mib.put_scalars(scalars, snap, self._system(), self._last_change_ticks, self.spin_lock, self._active_count)
        return view.patched(remove, add, scalars)

    # -- engine ----------------------------------------------------------------

    def start(self) -> None:
        """Bind the listen addresses and register principals; raises OSError on bind failure."""
        cfg = self._config
        self._state_dir.mkdir(parents=True, exist_ok=True)
        engine_id = cfg.snmp_engine_id or default_engine_id(cfg.state_directory)
        eng = new_engine(engine_id, self._state_dir)
        self._engine = eng
        self.fast_path = FastPath(
            {c.name.encode("utf-8"): tuple(cfg.snmp_views[c.view]) for c in cfg.snmp_communities},
            self.view, self.clock)
        for n, address in enumerate(cfg.snmp_listen_addresses, start=1):
            self._open(eng, n, address)

        level_type = eng.get_mib_builder().import_symbols("SNMP-FRAMEWORK-MIB", "SnmpSecurityLevel")[0]
        snmp_config.add_context(eng, b"")
        for name, subtrees in cfg.snmp_views.items():
            for subtree in subtrees:
                snmp_config.add_vacm_view(eng, f"v-{name}", "included", subtree, b"")
        # An explicit, empty write view: read-only principals must fail on SET.
        snmp_config.add_vacm_view(eng, _NO_WRITE_VIEW, "excluded", (1, 3, 6, 1), b"")

        def grant(model: int, sec_name: str, level: str, view: str, write: bool) -> None:
            group = f"g-{sec_name}"
            snmp_config.add_vacm_group(eng, group, model, sec_name)
            snmp_config.add_vacm_access(eng, group, b"", model, level_type(level), "exact", f"v-{view}",
                                        f"v-{view}" if write else _NO_WRITE_VIEW, f"v-{view}")

        for n, community in enumerate(cfg.snmp_communities, start=1):
            sec_name = f"community{n}"  # the community string itself never appears in VACM or logs
            snmp_config.add_v1_system(eng, sec_name, community.name, securityName=sec_name)
            for model in (1, 2):
                grant(model, sec_name, "noAuthNoPriv", community.view, community.write)
            if community.write:
                log.warning("SNMP community %d (v1/v2c, cleartext) is allowed to write", n)
            if community.write and not cfg.control_enabled:
                log.warning("SNMP community %d may write, but control.enabled is off: SETs will fail", n)
        for user in cfg.snmp_users:
            snmp_config.add_v3_user(eng, user.name, auth_protocol(user), user.auth_key, priv_protocol(user),
                                    user.priv_key or None)
            grant(3, user.name, user.level, user.view, user.write)

        snmp_context = context.SnmpContext(eng)
        snmp_context.unregister_context_name(b"")
        snmp_context.register_context_name(b"", ViewController(self))
        for responder in (cmdrsp.GetCommandResponder, cmdrsp.NextCommandResponder, cmdrsp.BulkCommandResponder):
            responder(eng, snmp_context)
        ControlSetResponder(eng, snmp_context, self)
        if not cfg.snmp_communities and not cfg.snmp_users:
            log.info("no SNMP community or user is configured: the agent only sends notifications")

    def _open(self, eng: Any, n: int, address: ListenAddress) -> None:
        family = socket.AF_INET6 if ":" in address.host or address.host == "" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if address.host == "" else 1)
            sock.bind((address.host or "::", address.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen for SNMP on {address}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        assert self.fast_path is not None  # made in start(), before any listener
        transport: Any
        if family == socket.AF_INET6:
            transport = _FastUdp6(self.fast_path).open_server_mode(sock=sock)
            snmp_config.add_transport(eng, udp6.DOMAIN_NAME + (n,), transport)
        else:
            transport = _FastUdp(self.fast_path).open_server_mode(sock=sock)
            snmp_config.add_transport(eng, udp.DOMAIN_NAME + (n,), transport)
        log.info("serving SNMP on udp %s", address)

    def packet_stats(self) -> tuple[int, int]:
        """(requests answered by the fast path, malformed datagrams dropped)."""
        return (self.fast_path.answered, self.fast_path.dropped) if self.fast_path else (0, 0)

    def stop(self) -> None:
        if self._engine is not None:
            dispatcher = self._engine.transport_dispatcher
            if dispatcher is not None:
                dispatcher.close_dispatcher()
            self._engine = None


class _FastPathFirst:
    """Mixed into pysnmp's UDP transports: the fast path answers SNMPv2c reads, the rest goes on to pysnmp.

    Whatever pysnmp raises on a malformed datagram (some garbage makes pyasn1
    raise TypeError rather than a decoding error) is caught here: the packet is
    dropped and counted, and only the first one is logged, so a flood of bad
    packets cannot flood the log.
    """

    transport: Any
    loop: Any
    _callback_function: Any

    def __init__(self, fast_path: FastPath) -> None:
        super().__init__()
        self._fast_path = fast_path

    def datagram_received(self, datagram: bytes, transportAddress: Any) -> None:
        reply = self._fast_path.answer(datagram)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, transportAddress)
        else:
            self.loop.call_soon(self._to_pysnmp, transportAddress, datagram)

    def _to_pysnmp(self, address: Any, datagram: bytes) -> None:
        try:
            self._callback_function(self, address, datagram)
        except Exception as exc:
            self._fast_path.dropped += 1  # the agent's packet counters live on its FastPath
            if self._fast_path.dropped == 1:
                log.warning("dropped a malformed SNMP packet from %s (%s: %s); further ones are counted in "
                            "libvirt_exporter_snmp_dropped_packets_total, not logged",
                            address[0] if address else "?", type(exc).__name__, exc)
            else:
                log.debug("dropped a malformed SNMP packet from %s", address, exc_info=True)


class _FastUdp(_FastPathFirst, udp.UdpTransport):  # type: ignore[misc]
    pass


class _FastUdp6(_FastPathFirst, udp6.Udp6Transport):  # type: ignore[misc]
    pass


class ControlSetResponder(cmdrsp.SetCommandResponder):  # type: ignore[misc]
    """SET: every varbind is checked at once; the libvirt calls run off the loop and the reply follows.

    pysnmp answers a request as soon as the handler returns; here the reply to
    a SET that runs actions is sent when they finish (or when
    ``control.reply_within`` passes), so GETs keep being answered meanwhile.
    A retransmitted SET (same principal, address, request ID and varbinds)
    shares the first one's outcome and never runs an action twice.
    """

    def __init__(self, eng: Any, snmp_context: Any, agent: SnmpAgent) -> None:
        super().__init__(eng, snmp_context)
        self._agent = agent
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

        def write_access() -> None:  # the principal's write view first: a read-only principal always fails here
            for idx, (name, value) in enumerate(var_binds):
                if self.verify_access("write", (name, value), idx=idx, **context):
                    raise smi_error.NoAccessError(name=name, idx=idx)

        try:
            plan = self._agent.plan_set(var_binds, principal, source, write_access)
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
        future.set_result(await run_plan(self._agent, plan, principal, source))


async def run_plan(agent: SnmpAgent, plan: setreq.Plan, principal: str, source: str,
                   reply_within_s: float | None = None) -> tuple[str, int]:
    """Run a checked SET's steps, audit them; (SNMP error status, 1-based varbind index or 0)."""
    targets, actions = ",".join(plan.targets) or "-", ",".join(plan.actions) or "spin-lock"
    outcome: tuple[str, int] = ("noError", 0)
    try:
        state = "done"
        if plan.steps:
            assert agent.controller is not None
            state = await agent.controller.execute(plan.steps, reply_within_s=reply_within_s)
        if plan.spin_lock:
            agent.spin_lock = (agent.spin_lock + 1) % 2**31
            agent.invalidate()
        control.audit(principal, source, targets, actions, "success" if state == "done" else state)
    except control.ControlError as exc:
        status = "commitFailed" if exc.undone else "undoFailed"
        outcome = (status, plan.step_varbind[exc.index] + 1)
        control.audit(principal, source, targets, actions, f"{status}: {exc}")
    except Exception:
        log.exception("SET execution failed")
        outcome = ("genErr", 1)
    return outcome
