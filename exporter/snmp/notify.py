"""SNMP notifications: traps and informs to the configured targets.

Each target has a bounded queue and a worker task of its own, so a dead
target never delays another one or the agent.  Informs are retried with a
capped backoff until acknowledged.  A full queue drops the newest
notification and counts it; the first drop is logged at once with its count,
later ones are summed and logged at most once a minute per target
(:class:`DropLog`), so that every drop shows up in the log, counted.

SNMPv2c targets are served by :class:`exporter.snmp.v2send.V2cSender`,
which encodes the messages itself: traps go out as fast as the queue gives
them (paced to what a receiver can read), informs are pipelined, a window of
them outstanding at once.  SNMPv3 targets (USM authentication and privacy)
go through pysnmp, from SNMP engines of their own (one per target), so that
trap users never become principals of the agent and two targets never share
pysnmp's user tables; up to :data:`PYSNMP_WINDOW` inform sends are
outstanding at once on a target's engine (traps go one at a time).  SNMPv3
traps carry the notification engine ID, which a receiver needs
(``createUser -e``); it is logged at start-up.

A target's ``queue_size`` bounds everything not delivered yet: what waits in
the queue and what its worker has taken (informs outstanding).  A retry (the
``retries`` counter) is one send that went unacknowledged and is tried again:
for v2c, an inform's datagram and its retransmissions, 1 s apart, as
pysnmp's one send was (retransmissions within that round are not counted, as
pysnmp's were not).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    UdpTransportTarget,
    UsmUserData,
    send_notification,
)
from pysnmp.hlapi.v3arch.asyncio.transport import Udp6TransportTarget
from pysnmp.proto import rfc1902

from exporter.config.snmp import NotifyTarget
from exporter.snmp.droplog import DropLog
from exporter.snmp.engine import auth_protocol, encode, new_engine, priv_protocol
from exporter.snmp.syntax import NotificationDef
from exporter.snmp.v2send import SNMP_TRAP_OID, SYS_UP_TIME, TRAP_RATE, WINDOW, V2cSender

__all__ = ["SNMP_TRAP_OID", "SYS_UP_TIME", "DropLog", "Notifier", "Send", "notifier_engine_id"]

log = logging.getLogger(__name__)

RETRY_BACKOFF_MAX_S = 10.0
SEND_TIMEOUT_S, SEND_RETRIES = 1.0, 2  # per-send timeout and retransmissions (pysnmp's, and ours for v2c)
#: The longest one send may take before it counts as unacknowledged, whatever pysnmp does.
SEND_DEADLINE_S = SEND_TIMEOUT_S * (SEND_RETRIES + 1) + 2.0
#: pysnmp inform sends outstanding at once on one v3 target's engine (v3 traps and sinks: one at a time).  Safe
#: (each is matched by its own message ID); on loopback pysnmp's CPU per message is the limit and a window gains
#: nothing (bench/NOTIFY.md), but it keeps a remote receiver's round trips from bounding the rate.
PYSNMP_WINDOW = 4


#: Sends one notification; returns None once delivered (acknowledged, for informs), else what went wrong.
Send = Callable[[NotificationDef], Awaitable[str | None]]


def notifier_engine_id(agent_engine_id: bytes) -> bytes:
    """The notification engine's ID: the agent's, with the last byte flipped."""
    return agent_engine_id[:-1] + bytes([agent_engine_id[-1] ^ 0x01])


@dataclass(frozen=True, slots=True)
class TargetStatus:
    where: str  # host:port, or the sink's name
    kind: str  # "v2c trap", "v3 inform"; empty for a sink
    capacity: int
    queued: int
    sent: int
    dropped: int
    retries: int


class _Target:
    """A queue and a worker: an SNMP trap/inform target (``cfg``), or a sink with a ``send`` of its own.

    ``capacity`` bounds everything not yet delivered: what waits in the queue, and what the worker has
    taken from it (informs outstanding, sends in progress).
    """

    def __init__(self, name: str, mibs: frozenset[str], queue_size: int, acknowledged: bool,
                 cfg: NotifyTarget | None = None, send: Send | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.mibs = mibs
        self.acknowledged = acknowledged  # retried until delivered; a trap is not
        self.cfg = cfg
        self.send = send
        self.capacity = max(1, queue_size)
        self.queue: asyncio.Queue[NotificationDef] = asyncio.Queue()
        self.drops = DropLog(name, self.capacity, clock, queued=lambda: self.pending)
        self.task: asyncio.Task[None] | None = None
        self.sender: V2cSender | None = None  # v2c targets
        self.engine: Any = None  # v3 targets: pysnmp
        self.transport: Any = None
        self.auth: Any = None
        self.in_flight = 0  # pysnmp and sinks: taken from the queue, not finished
        self.deliveries: set[asyncio.Task[None]] = set()
        self.failing = False
        self.backoff = 1.0
        self.retry_lock = asyncio.Lock()  # while failing, one notification at a time is retried

    @property
    def pending(self) -> int:
        taken = self.sender.pending if self.sender is not None else self.in_flight
        return self.queue.qsize() + taken


class Notifier:
    def __init__(
        self,
        targets: Sequence[NotifyTarget],
        engine_id: bytes,
        state_dir: Path,
        *,
        uptime_ticks: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``uptime_ticks``: the agent's sysUpTime, which every notification carries."""
        names: Counter[str] = Counter()
        self._clock = clock
        self._targets = []
        for cfg in targets:
            name = f"{cfg.version}-{cfg.kind}@{cfg.address}"
            names[name] += 1
            self._targets.append(_Target(name if names[name] == 1 else f"{name}#{names[name]}", cfg.mibs,
                                         cfg.queue_size, cfg.kind == "inform", cfg=cfg, clock=clock))
        #: The agent's sysUpTime in ticks, sent as the first varbind (set by whoever attaches the agent).
        self.uptime_ticks = uptime_ticks
        self.engine_id = notifier_engine_id(engine_id)
        self._state_dir = state_dir
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        # Private knobs, for the benchmark: v2c through pysnmp as before (one at a time with a window of 1),
        # the pysnmp window, the v2c inform window and the v2c trap pacing (None: none).
        self._v2c_via_pysnmp = False
        self._pysnmp_window = PYSNMP_WINDOW
        self._v2c_window = WINDOW
        self._trap_rate: float | None = TRAP_RATE

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self._targets]

    def status(self) -> list[TargetStatus]:
        """Each target as a person reads it (the status page): where, what, how full, and its counters."""
        result = []
        for t in self._targets:
            kind, where = (f"{t.cfg.version} {t.cfg.kind}", str(t.cfg.address)) if t.cfg is not None \
                else ("", t.name)
            result.append(TargetStatus(where, kind, t.capacity, t.pending, self.sent[t.name], self.dropped[t.name],
                                       self.retries[t.name]))
        return result

    def stats(self) -> list[tuple[str, int, int, int, int]]:
        """(target, sent, dropped, retries, queued) for each target; queued counts what is not delivered yet."""
        return [(t.name, self.sent[t.name], self.dropped[t.name], self.retries[t.name], t.pending)
                for t in self._targets]

    def wants(self, mib: str) -> bool:
        return any(mib in t.mibs for t in self._targets)

    def add_sink(self, name: str, mibs: frozenset[str], send: Send, queue_size: int = 1000) -> None:
        """Another destination with the same queueing, retries and counters (the AgentX master); before start()."""
        self._targets.append(_Target(name, mibs, queue_size, True, send=send, clock=self._clock))

    async def start(self) -> None:
        for target in self._targets:
            cfg = target.cfg
            if cfg is None:  # a sink: it sends by itself, one at a time
                target.task = asyncio.ensure_future(self._pipelined_worker(target, 1))
                log.info("sending notifications to %s (%s)", target.name, ", ".join(sorted(target.mibs)))
                continue
            if cfg.version == "v2c" and not self._v2c_via_pysnmp:
                sender = V2cSender(
                    target.name, cfg.community.encode("utf-8"), cfg.kind == "inform", lambda: self.uptime_ticks(),
                    on_sent=partial(self._count, self.sent, target.name),
                    on_retry=partial(self._count, self.retries, target.name),
                    on_failed=partial(self._failed, target),
                    window=self._v2c_window, timeout=SEND_TIMEOUT_S, retransmits=SEND_RETRIES,
                    backoff_max=RETRY_BACKOFF_MAX_S, trap_rate=self._trap_rate)
                await sender.open(cfg.address.host, cfg.address.port)
                target.sender = sender
                target.task = asyncio.ensure_future(sender.run(target.queue))
            else:
                target.engine = new_engine(self.engine_id, Path(self._state_dir))
                address = (cfg.address.host, cfg.address.port)
                transport_type = Udp6TransportTarget if ":" in cfg.address.host else UdpTransportTarget
                # pysnmp retries an inform itself (timeout, retries); we retry the whole send after that.
                target.transport = await transport_type.create(address, timeout=SEND_TIMEOUT_S,
                                                               retries=SEND_RETRIES)
                if cfg.version == "v3":
                    user = cfg.user
                    assert user is not None
                    target.auth = UsmUserData(user.name, user.auth_key, user.priv_key or None,
                                              authProtocol=auth_protocol(user), privProtocol=priv_protocol(user))
                    # a trap's send ends as soon as it is on the wire: only informs have a round trip to overlap
                    window = self._pysnmp_window if cfg.kind == "inform" else 1
                else:  # v2c through pysnmp: the old path, one at a time (for the benchmark)
                    target.auth = CommunityData(cfg.community, mpModel=1)
                    window = 1
                target.task = asyncio.ensure_future(self._pipelined_worker(target, window))
            log.info("sending SNMP %s %ss to %s (%s)", cfg.version, cfg.kind, target.name, ", ".join(sorted(cfg.mibs)))
        if any(t.cfg is not None and t.cfg.version == "v3" and t.cfg.kind == "trap" for t in self._targets):
            log.info("SNMPv3 traps come from engine ID %s; receivers need it for createUser -e",
                     "0x" + self.engine_id.hex())

    def submit(self, notification: NotificationDef) -> None:
        """Queue a notification for every target that wants its MIB; never blocks."""
        for target in self._targets:
            if notification.mib not in target.mibs:
                continue
            if target.pending >= target.capacity:
                self.dropped[target.name] += 1
                target.drops.dropped()
                continue
            target.queue.put_nowait(notification)

    @staticmethod
    def _count(counter: Counter[str], name: str) -> None:
        counter[name] += 1

    def _failed(self, target: _Target, problem: str) -> None:
        """A notification given up (a trap pysnmp could not send; a v2c one we could not encode, or refused)."""
        self.dropped[target.name] += 1
        kind = target.cfg.kind if target.cfg is not None else "notification"
        log.error("%s to %s not sent: %s", kind, target.name, problem)

    async def _send(self, target: _Target, notification: NotificationDef) -> str | None:
        if target.send is not None:
            return await target.send(notification)
        assert target.cfg is not None
        var_binds = [(SYS_UP_TIME, rfc1902.TimeTicks(self.uptime_ticks() % 2**32)),  # the agent's, not the sender's
                     (SNMP_TRAP_OID, rfc1902.ObjectIdentifier(notification.trap_oid)),
                     *((oid, encode(value, 0.0)) for oid, value in notification.var_binds)]
        error_indication, error_status, _, _ = await send_notification(
            target.engine, target.auth, target.transport, ContextData(), target.cfg.kind, *var_binds,
            lookupMib=False,
        )
        if error_indication:
            return str(error_indication)
        if error_status:
            return str(error_status)
        return None

    async def _attempt(self, target: _Target, notification: NotificationDef) -> str | None:
        try:
            return await asyncio.wait_for(self._send(target, notification), SEND_DEADLINE_S)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return f"no outcome within {SEND_DEADLINE_S:.0f}s"
        except Exception as exc:  # a broken send must not kill the worker
            return f"{type(exc).__name__}: {exc}"

    async def _pipelined_worker(self, target: _Target, window: int) -> None:
        """pysnmp targets and sinks: up to ``window`` sends at once, started in queue order.

        Each send's first step puts its message on the wire before it awaits anything (pysnmp's
        ``send_notification`` sends before it waits for the outcome), so the messages leave in queue order.
        """
        slots = asyncio.Semaphore(window)
        while True:
            notification = await target.queue.get()
            target.in_flight += 1
            try:
                await slots.acquire()
            except BaseException:
                target.in_flight -= 1
                raise
            task = asyncio.ensure_future(self._deliver(target, notification))
            target.deliveries.add(task)
            task.add_done_callback(partial(self._delivery_done, target, slots))

    @staticmethod
    def _delivery_done(target: _Target, slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        target.in_flight -= 1
        target.deliveries.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery to %s failed", target.name, exc_info=task.exception())

    async def _deliver(self, target: _Target, notification: NotificationDef) -> None:
        """One notification until delivered (informs) or tried once (traps).

        While the target fails, one notification at a time is retried, with the target's backoff; the
        others wait their turn, and go again at once when delivery works again.
        """
        problem = await self._attempt(target, notification)
        while problem is not None:
            if not target.acknowledged:  # a trap: unacknowledged by design, nothing to retry
                self._failed(target, problem)
                return
            self.retries[target.name] += 1
            if not target.failing:
                log.error("inform to %s not acknowledged (%s); retrying with backoff", target.name, problem)
                target.failing = True
            async with target.retry_lock:
                if target.failing:
                    await asyncio.sleep(target.backoff)
                    target.backoff = min(target.backoff * 2, RETRY_BACKOFF_MAX_S)
                problem = await self._attempt(target, notification)
                if problem is None:
                    self._delivered(target)
                    return
        self._delivered(target)

    def _delivered(self, target: _Target) -> None:
        self.sent[target.name] += 1
        if target.failing:
            log.warning("notifications to %s are delivered again", target.name)
        target.failing, target.backoff = False, 1.0

    async def stop(self) -> None:
        """Cancel every worker at once (no waiting on a target that does not answer); whatever was queued or
        still unacknowledged is counted as dropped and logged with its count, once per target."""
        for target in self._targets:
            undelivered = target.pending
            if undelivered:
                self.dropped[target.name] += undelivered
                log.warning("exiting with %d notification(s) to %s not delivered (%s); dropped", undelivered,
                            target.name, "queued or unacknowledged" if target.acknowledged else "queued")
            for task in (target.task, *target.deliveries):
                if task is not None:
                    task.cancel()
            if target.sender is not None:
                target.sender.close()
            if target.engine is not None and target.engine.transport_dispatcher is not None:  # SNMP targets
                target.engine.transport_dispatcher.close_dispatcher()
            target.drops.flush()
