"""The SNMP model: what every SNMP front end reads and sets, whatever the protocol.

:class:`SnmpModel` follows the poller's snapshots: it keeps the row indexes
(stable across restarts), the :class:`~exporter.snmp.mib.MibView` of the
current snapshot (built once per poll, patched per event), sysUpTime, the
spin lock and the last-action records, and sends lifecycle notifications.
SETs are checked here (:mod:`exporter.snmp.setreq`) and run through
:mod:`exporter.control`.  The standalone agent and its fast path
(:mod:`exporter.snmp.agent`) and the AgentX bridge
(:mod:`exporter.snmp.agentx_bridge`) only read it and hand it SETs; nothing
here knows a protocol library.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import control
from exporter.config import SnmpSettings
from exporter.control import Controller
from exporter.events import position
from exporter.indexmap import IndexMap, StateError
from exporter.snapshot import EVENT_STATES, STATE_NOSTATE, Domain, DomainEvent, Snapshot, Update
from exporter.snmp import mib, mib_lvx, mib_system, setreq
from exporter.snmp.view import Builder, MibView

if TYPE_CHECKING:
    from exporter.snmp.notify import Notifier

log = logging.getLogger(__name__)


class SnmpModel:
    """The MIB view of the poller's current snapshot, its indexes, SET checking and notifications."""

    def __init__(
        self,
        settings: SnmpSettings,
        state_directory: Path,
        get_snapshot: Callable[[], Snapshot],
        *,
        clock: Callable[[], float] = time.time,
        started_at: float | None = None,
        controller: Controller | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """``controller``: lifecycle control, None when it is off (every SET is then refused);
        ``started_at``: when sysUpTime starts (the notifier's, if it sends them), by default now."""
        self._settings = settings
        self.controller = controller
        self.spin_lock = 0
        self.notifier = notifier
        self.state_before_action: dict[str, int] = {}  # for VM-MIB's "previous oper state"
        if controller is not None:
            controller.on_change.append(self.invalidate)
            controller.on_failure.append(self._action_failed)
        self._get_snapshot = get_snapshot
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self._index_map = IndexMap(state_directory / "snmp-indexes.json")  # may raise StateError
        self._indexes = mib.Indexes({}, {}, {})
        self._indexed_snapshot: Snapshot | None = None  # the last snapshot whose domains have indexes
        self._lock = threading.Lock()
        self._view: tuple[Snapshot, MibView] | None = None
        # Domains changed since the view's snapshot, as (before, after), while the listener follows every
        # change: the next request patches them into the view.  None: the next request builds it afresh.
        self._dirty: dict[str, tuple[Domain | None, Domain | None]] | None = None
        self._active_count = 0  # lvxDomainActiveCount of the view
        self._domain_uuids: set[str] | None = None
        self._last_change_ticks = 0
        self._started: dict[str, float] = {}
        self._connected_at: float | None = None
        self._state_error_logged = False

    # -- snapshot tracking (event-loop thread) --------------------------------

    def uptime_ticks(self) -> int:
        """sysUpTime: hundredths of a second since the agent started."""
        return mib_system.ticks_since(self.started_at)(self.clock())

    @property
    def control_enabled(self) -> bool:
        return self.controller is not None

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
        if event.kind in mib_lvx.LVX_EVENT_NOTIFICATIONS:
            for notification in (mib.event_notifications(event.kind, dom, index, event.detail, event.device)
                                 if dom is not None else ()):
                if self.notifier.wants(notification.mib):
                    self.notifier.submit(notification)
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
            mib_lvx.action_failed_notification(step.name, step.uuid, index, control.ACTION_CODES[step.verb], message))

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

    def plan_set(self, var_binds: Sequence[setreq.SetBind], principal: str, source: str) -> setreq.Plan:
        """Check a SET, whichever way it came (standalone agent or AgentX): the steps to run.

        Raises :class:`~exporter.snmp.setreq.SetError`, audited as refused; remembers the state each target
        domain is in, for VM-MIB's "previous state" in notifications.
        """
        snap = self.current_snapshot()
        try:
            plan = setreq.plan(var_binds, snap, self.domain_index(),
                               self.controller if self.control_enabled else None, self.spin_lock)
        except setreq.SetError as exc:
            self.refused([b.oid for b in var_binds], principal, source, exc.name)
            raise
        for step in plan.steps:
            dom = snap.domain_by_uuid(step.uuid)
            if dom is not None:
                self.state_before_action[step.uuid] = dom.state
        return plan

    def refused(self, oids: Sequence[setreq.Oid], principal: str, source: str, why: str) -> None:
        """The audit line of a SET refused before anything ran (``why``: the error's name)."""
        control.audit(principal, source, setreq.describe(oids, self.current_snapshot(), self.domain_index()), "set",
                      f"refused: {why}")

    async def run(self, plan: setreq.Plan, principal: str, source: str,
                  reply_within_s: float | None = None) -> tuple[str, int]:
        """Run a checked SET's steps, audit them; (SNMP error status, 1-based varbind index or 0)."""
        targets, actions = ",".join(plan.targets) or "-", ",".join(plan.actions) or "spin-lock"
        outcome: tuple[str, int] = ("noError", 0)
        try:
            state = "done"
            if plan.steps:
                assert self.controller is not None
                state = await self.controller.execute(plan.steps, reply_within_s=reply_within_s)
            if plan.spin_lock:
                self.spin_lock = (self.spin_lock + 1) % 2**31
                self.invalidate()
            control.audit(principal, source, targets, actions, "success" if state == "done" else state)
        except control.ControlError as exc:
            status = "commitFailed" if exc.undone else "undoFailed"
            outcome = (status, plan.step_varbind[exc.index] + 1)
            control.audit(principal, source, targets, actions, f"{status}: {exc}")
        except Exception:
            log.exception("SET execution failed")
            outcome = ("genErr", 1)
        return outcome

    def invalidate(self) -> None:
        """Rebuild the view on next use (a last-action record or the spin lock changed)."""
        with self._lock:
            self._view = None

    def domain_index(self) -> dict[int, str]:
        """lvxDomainIndex -> UUID for the current indexes."""
        return {index: uuid for uuid, index in self._indexes.domains.items()}

    def view(self) -> MibView:
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

    def _system(self) -> mib_system.SystemInfo:
        return mib_system.SystemInfo(self._settings.contact, self._settings.location, self.started_at,
                                     connected_at=self._connected_at,
                                     vm_notifications=self.notifier is not None and self.notifier.wants("vm"))

    def _actions(self) -> dict[str, tuple[int, int, str, int]] | None:
        return {u: a.as_tuple() for u, a in self.controller.last.items()} if self.controller else None

    def _patch(self, snap: Snapshot, view: MibView, dirty: dict[str, tuple[Domain | None, Domain | None]]
               ) -> MibView:
        """``view`` with the rows of the ``dirty`` domains replaced: the work of those domains alone."""
        remove: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = []
        add = Builder()
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
        scalars = Builder()
        mib.put_scalars(scalars, snap, self._system(), self._last_change_ticks, self.spin_lock, self._active_count)
        return view.patched(remove, add, scalars)
