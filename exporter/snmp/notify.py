"""SNMP notifications: traps and informs to the configured targets.

Each target has a bounded queue and a worker task of its own, so a dead
target never delays another one or the agent.  Informs are retried with a
capped backoff until acknowledged; a full queue drops the newest
notification, counts it and logs it (once per overflow, not per drop).

Notifications go out from SNMP engines of their own (one per target), so
that trap communities and users never become principals of the agent, and
two targets never share pysnmp's community or user tables (two inform
targets with the same community in one engine lose each other's
acknowledgements).  SNMPv3 traps carry the notification engine ID, which a
receiver needs (``createUser -e``); it is logged at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
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

from exporter.config import NotifyTarget
from exporter.snmp.agent import auth_protocol, encode, new_engine, priv_protocol
from exporter.snmp.mib import NotificationDef

log = logging.getLogger(__name__)

SNMP_TRAP_OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
SYS_UP_TIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
RETRY_BACKOFF_MAX_S = 10.0
SEND_TIMEOUT_S, SEND_RETRIES = 1.0, 2  # pysnmp's own per-send timeout and retransmissions
#: The longest one send may take before it counts as unacknowledged, whatever pysnmp does.
SEND_DEADLINE_S = SEND_TIMEOUT_S * (SEND_RETRIES + 1) + 2.0


#: Sends one notification; returns None once delivered (acknowledged, for informs), else what went wrong.
Send = Callable[[NotificationDef], Awaitable[str | None]]


def notifier_engine_id(agent_engine_id: bytes) -> bytes:
    """The notification engine's ID: the agent's, with the last byte flipped."""
    return agent_engine_id[:-1] + bytes([agent_engine_id[-1] ^ 0x01])


class _Target:
    """A queue and a worker: an SNMP trap/inform target (``cfg``), or a sink with a ``send`` of its own."""

    def __init__(self, name: str, mibs: frozenset[str], queue_size: int, acknowledged: bool,
                 cfg: NotifyTarget | None = None, send: Send | None = None) -> None:
        self.name = name
        self.mibs = mibs
        self.acknowledged = acknowledged  # retried until delivered; a trap is not
        self.cfg = cfg
        self.send = send
        self.queue: asyncio.Queue[NotificationDef] = asyncio.Queue(maxsize=queue_size)
        self.overflowing = False
        self.task: asyncio.Task[None] | None = None
        self.engine: Any = None
        self.transport: Any = None
        self.auth: Any = None


class Notifier:
    def __init__(
        self,
        targets: Sequence[NotifyTarget],
        engine_id: bytes,
        state_dir: Path,
    ) -> None:
        names: Counter[str] = Counter()
        self._targets = []
        for cfg in targets:
            name = f"{cfg.version}-{cfg.kind}@{cfg.address}"
            names[name] += 1
            self._targets.append(_Target(name if names[name] == 1 else f"{name}#{names[name]}", cfg.mibs,
                                         cfg.queue_size, cfg.kind == "inform", cfg=cfg))
        #: The agent's sysUpTime in ticks, sent as the first varbind (set by whoever attaches the agent).
        self.uptime_ticks: Callable[[], int] = lambda: 0
        self.engine_id = notifier_engine_id(engine_id)
        self._state_dir = state_dir
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self._targets]

    def stats(self) -> list[tuple[str, int, int, int, int]]:
        """(target, sent, dropped, retries, queued) for each target."""
        return [(t.name, self.sent[t.name], self.dropped[t.name], self.retries[t.name], t.queue.qsize())
                for t in self._targets]

    def wants(self, mib: str) -> bool:
        return any(mib in t.mibs for t in self._targets)

    def add_sink(self, name: str, mibs: frozenset[str], send: Send, queue_size: int = 1000) -> None:
        """Another destination with the same queueing, retries and counters (the AgentX master); before start()."""
        self._targets.append(_Target(name, mibs, queue_size, True, send=send))

    async def start(self) -> None:
        for target in self._targets:
            cfg = target.cfg
            if cfg is None:  # a sink: it sends by itself
                target.task = asyncio.ensure_future(self._worker(target))
                log.info("sending notifications to %s (%s)", target.name, ", ".join(sorted(target.mibs)))
                continue
            target.engine = new_engine(self.engine_id, Path(self._state_dir))
            address = (cfg.address.host, cfg.address.port)
            transport_type = Udp6TransportTarget if ":" in cfg.address.host else UdpTransportTarget
            # pysnmp retries an inform itself (timeout, retries); we retry the whole send after that.
            target.transport = await transport_type.create(address, timeout=SEND_TIMEOUT_S, retries=SEND_RETRIES)
            if cfg.version == "v3":
                user = cfg.user
                assert user is not None
                target.auth = UsmUserData(user.name, user.auth_key, user.priv_key or None,
                                          authProtocol=auth_protocol(user), privProtocol=priv_protocol(user))
            else:
                target.auth = CommunityData(cfg.community, mpModel=1)
            target.task = asyncio.ensure_future(self._worker(target))
            log.info("sending SNMP %s %ss to %s (%s)", cfg.version, cfg.kind, target.name, ", ".join(sorted(cfg.mibs)))
        if any(t.cfg is not None and t.cfg.version == "v3" and t.cfg.kind == "trap" for t in self._targets):
            log.info("SNMPv3 traps come from engine ID %s; receivers need it for createUser -e",
                     "0x" + self.engine_id.hex())

    def submit(self, notification: NotificationDef) -> None:
        """Queue a notification for every target that wants its MIB; never blocks."""
        for target in self._targets:
            if notification.mib not in target.mibs:
                continue
            try:
                target.queue.put_nowait(notification)
                if target.overflowing and target.queue.qsize() < target.queue.maxsize // 2:
                    target.overflowing = False
            except asyncio.QueueFull:
                self.dropped[target.name] += 1
                if not target.overflowing:
                    log.error("notification queue for %s is full (%d); dropping new notifications until it drains",
                              target.name, target.queue.maxsize)
                    target.overflowing = True

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

    async def _worker(self, target: _Target) -> None:
        backoff = 1.0
        failing = False
        while True:
            notification = await target.queue.get()
            while True:
                try:
                    problem = await asyncio.wait_for(self._send(target, notification), SEND_DEADLINE_S)
                except asyncio.CancelledError:
                    raise
                except TimeoutError:
                    problem = f"no outcome within {SEND_DEADLINE_S:.0f}s"
                except Exception as exc:  # a broken send must not kill the worker
                    problem = f"{type(exc).__name__}: {exc}"
                if problem is None:
                    self.sent[target.name] += 1
                    if failing:
                        log.warning("notifications to %s are delivered again", target.name)
                    failing, backoff = False, 1.0
                    break
                if not target.acknowledged:  # a trap: unacknowledged by design, nothing to retry
                    self.dropped[target.name] += 1
                    log.error("trap to %s not sent: %s", target.name, problem)
                    break
                self.retries[target.name] += 1
                if not failing:
                    log.error("inform to %s not acknowledged (%s); retrying with backoff", target.name, problem)
                    failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)

    async def stop(self) -> None:
        for target in self._targets:
            if target.task is not None:
                target.task.cancel()
            if target.engine is not None and target.engine.transport_dispatcher is not None:  # SNMP targets
                target.engine.transport_dispatcher.close_dispatcher()
