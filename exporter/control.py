"""Lifecycle control: the only path from a front end back to libvirt.

A front end (the SNMP agent's SET handler) validates a request against the
current snapshot and hands :meth:`Controller.execute` an ordered list of
:class:`Step`.  Each step is one libvirt call through the poller's
connection, run in a daemon thread with a timeout, so the event loop (and
every GET) keeps going.  Outcomes are kept per domain for the MIB's
last-action columns, and every request, allowed or refused, is one line on
the ``exporter.audit`` logger.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.errors import ExporterError, SourceError
from exporter.source import Source
from exporter.threads import in_daemon_thread

log = logging.getLogger(__name__)
audit_log = logging.getLogger("exporter.audit")

#: lvxDomainLastAction codes by verb (start_paused counts as start, wakeup as resume).
ACTION_CODES = {
    "start": 2, "start_paused": 2, "suspend": 3, "resume": 4, "wakeup": 4, "shutdown": 5, "destroy": 6,
    "reboot": 7, "reset": 8, "managed_save": 9,
}
NONE, IN_PROGRESS, SUCCESS, FAILED = 1, 2, 3, 4  # lvxDomainLastActionResult
#: How to take a step back when a later step of the same request fails.
UNDO = {"suspend": "resume", "resume": "suspend", "start": "destroy", "start_paused": "destroy"}
#: The lifecycle event a successful action will cause, applied at once so a read right after
#: the SET shows the new state (the real event, when it comes, changes nothing more).
#: Graceful shutdown and reboot are up to the guest: they have none.
EXPECTED_EVENT = {
    "start": "started", "start_paused": "suspended", "suspend": "suspended", "resume": "resumed",
    "wakeup": "resumed", "destroy": "stopped", "managed_save": "stopped",
}


@dataclass(frozen=True, slots=True)
class Step:
    uuid: str
    name: str
    verb: str


@dataclass(frozen=True, slots=True)
class LastAction:
    action: int
    result: int
    error: str
    time: int

    def as_tuple(self) -> tuple[int, int, str, int]:
        return (self.action, self.result, self.error, self.time)


class ControlError(ExporterError):
    """Step ``index`` of a request failed; ``undone`` says whether earlier steps were rolled back."""

    def __init__(self, index: int, message: str, *, undone: bool) -> None:
        super().__init__(message)
        self.index = index
        self.undone = undone


_VERSIONS = {1: "v1", 2: "v2c", 3: "v3"}
#: The security name the agent gives the Nth community of snmp.communities (counted from 1).
_COMMUNITY = re.compile(r"community(?P<n>\d+)")


def principal_name(security_name: str, security_model: int) -> str:
    """Who sent a SET, for the audit line: a community by its entry in snmp.communities, counted from 0 as in
    configuration errors (the community itself is the secret), an SNMPv3 user by its name; then the version."""
    version = _VERSIONS.get(security_model, f"model {security_model}")
    match = _COMMUNITY.fullmatch(security_name)
    if security_model in (1, 2) and match:
        return f"snmp.communities[{int(match['n']) - 1}]({version})"
    return f"{security_name}({version})"


def audit(principal: str, source: str, targets: str, action: str, result: str) -> None:
    """The audit line of one SET: ``principal`` as :func:`principal_name` words it, ``targets`` the domains by
    name (or the objects, for varbinds with no domain behind them), comma separated."""
    audit_log.info("SET principal=%s from=%s domain=%s action=%s result=%s", principal, source, targets or "-",
                   action, result)


class Controller:
    def __init__(
        self,
        get_source: Callable[[], Source | None],
        *,
        timeout_s: float,
        reply_within_s: float,
        on_success: Sequence[Callable[[Step, str], None]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._get_source = get_source
        self._timeout_s = timeout_s
        self._reply_within_s = reply_within_s
        self._clock = clock
        self.last: dict[str, LastAction] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called with (step, error message) when an action fails, even after the reply was sent.
        self.on_failure: list[Callable[[Step, str], None]] = []
        #: Called whenever a last-action record changes (the SNMP view is rebuilt).
        self.on_change: list[Callable[[], None]] = []
        #: Called with (step, event kind) after an action succeeds, to update the snapshot at once.
        self.on_success: list[Callable[[Step, str], None]] = list(on_success)

    def busy(self, uuid: str) -> bool:
        return uuid in self._busy

    def _record(self, step: Step, result: int, error: str = "") -> None:
        self.last[step.uuid] = LastAction(ACTION_CODES[step.verb], result, error, int(self._clock()))
        for callback in self.on_change:
            callback()

    async def _call(self, step: Step) -> None:
        source = self._get_source()
        if source is None:
            raise SourceError("libvirt is unreachable")
        try:
            await asyncio.wait_for(in_daemon_thread(source.act, step.uuid, step.verb, name="libvirt-control"),
                                   self._timeout_s)
        except TimeoutError:
            raise SourceError(f"libvirt did not finish {step.verb} within {self._timeout_s:g}s") from None

    async def _run(self, steps: Sequence[Step]) -> None:
        done: list[Step] = []
        for index, step in enumerate(steps):
            self._record(step, IN_PROGRESS)
            try:
                await self._call(step)
            except SourceError as exc:
                message = str(exc)
                self._record(step, FAILED, message)
                log.error("%s of domain %s failed: %s", step.verb, step.name, message)
                for callback in self.on_failure:
                    callback(step, message)
                undone = await self._undo(done)
                raise ControlError(index, message, undone=undone) from None
            self._applied(step)
            self._record(step, SUCCESS)
            done.append(step)

    def _applied(self, step: Step) -> None:
        kind = EXPECTED_EVENT.get(step.verb)
        if kind is not None:
            for callback in self.on_success:
                callback(step, kind)

    async def _undo(self, done: list[Step]) -> bool:
        ok = True
        for step in reversed(done):
            verb = UNDO.get(step.verb)
            if verb is None:
                ok = False
                continue
            back = Step(step.uuid, step.name, verb)
            try:
                await self._call(back)
            except SourceError as exc:
                log.error("could not undo %s of domain %s: %s", step.verb, step.name, exc)
                ok = False
            else:
                self._applied(back)
        return ok

    async def execute(self, steps: Sequence[Step], reply_within_s: float | None = None) -> str:
        """Run the steps; "done" or "in progress" (still running after reply_within). Raises ControlError."""
        for step in steps:
            self._busy.add(step.uuid)
        task = asyncio.ensure_future(self._run(steps))
        self._tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            for step in steps:
                self._busy.discard(step.uuid)
            if not t.cancelled() and t.exception() is not None and not isinstance(t.exception(), ControlError):
                log.error("control task failed", exc_info=t.exception())

        task.add_done_callback(finished)
        wait = self._reply_within_s if reply_within_s is None else min(reply_within_s, self._reply_within_s)
        done, _ = await asyncio.wait({task}, timeout=wait)
        if not done:
            return "in progress"
        task.result()  # raises ControlError
        return "done"
