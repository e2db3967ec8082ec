"""The one place the service is put together: every component built with only its own section of the
configuration and the collaborators it needs, in the order they need each other, and nothing set on an
object after it is built.

:func:`build` makes an :class:`App` without opening anything; :meth:`App.start` binds the listeners and
connects the subagent (an error there is the caller's to report), :meth:`App.run` polls until told to stop,
and :meth:`App.stop` undoes :meth:`App.start` in reverse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import webconfig
from exporter.config import Config
from exporter.exposition import Exposition
from exporter.poller import Poller
from exporter.snapshot import DomainEvent
from exporter.web import WebServer
from exporter.web_status import StatusPage

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from exporter.control import Controller
    from exporter.snmp.agent import StandaloneAgent
    from exporter.snmp.agentx import Subagent
    from exporter.snmp.model import SnmpModel
    from exporter.snmp.notify import Notifier

log = logging.getLogger(__name__)


class StartError(Exception):
    """The service could not start; the message says why, in one line."""


@dataclass
class App:
    poller: Poller
    web: WebServer
    controller: Controller | None = None
    notifier: Notifier | None = None
    model: SnmpModel | None = None  # what every SNMP front end reads
    agent: StandaloneAgent | None = None  # the standalone UDP agent (snmp.mode standalone or both)
    subagent: Subagent | None = None  # the AgentX subagent (snmp.mode agentx or both)
    _started: list[str] = field(default_factory=list)

    async def start(self) -> None:
        """Listen and connect; raises :class:`StartError` saying what failed, having undone whatever had
        started."""
        try:
            self.web.start()
            self._started.append("web")
            if self.agent is not None:
                self.agent.start()
                self._started.append("agent")
            if self.subagent is not None:
                self.subagent.start()
                self._started.append("subagent")
            if self.notifier is not None:
                try:
                    await self.notifier.start()
                except Exception as exc:  # e.g. a target host name that does not resolve
                    raise StartError(f"cannot set up SNMP notifications: {exc}") from exc
                self._started.append("notifier")
        except OSError as exc:  # a port in use, a state directory that cannot be written
            await self.stop()
            raise StartError(str(exc)) from exc
        except BaseException:
            await self.stop()
            raise

    async def run(self, stop: asyncio.Event) -> None:
        await self.poller.run(stop)

    async def stop(self) -> None:
        started, self._started = self._started, []
        if "web" in started:
            self.web.stop()
        if "subagent" in started and self.subagent is not None:
            await self.subagent.stop()
        if "notifier" in started and self.notifier is not None:
            await self.notifier.stop()
        if "agent" in started and self.agent is not None:
            self.agent.stop()


def build(config: Config, web_config: webconfig.WebConfig | None = None) -> App:
    """Every component of the service, wired; nothing is opened yet.  Raises StateError when the state
    directory's index map cannot be read."""
    state = Path(config.state_directory)
    read_only = not (config.control.enabled or config.libvirt.dirty_rate_every)
    if config.libvirt.dirty_rate_every and not config.control.enabled:
        log.info("opening libvirt read-write: dirty-rate calculations are configured (dirtyrate.calc_every)")
    poller = Poller(config.libvirt, read_only=read_only)
    snmp = config.snmp
    started_at = time.time()  # sysUpTime's zero, for the agent and the notifications alike
    extra: list[Collector] = []

    controller = None
    if snmp.wanted and config.control.enabled:
        from exporter.control import Controller

        controller = Controller(
            lambda: poller.source, timeout_s=config.control.timeout_s, reply_within_s=config.control.reply_within_s,
            on_success=[lambda step, kind: poller.handle_event(DomainEvent(step.uuid, step.name, kind),
                                                               from_libvirt=False)])
        log.warning("lifecycle control is enabled: principals with write access can start and stop domains")

    notifier = None
    if snmp.notifications:
        from exporter.exposition import NotificationCollector
        from exporter.snmp.engine import default_engine_id
        from exporter.snmp.mib_system import ticks_since
        from exporter.snmp.notify import Notifier

        uptime = ticks_since(started_at)  # the agent's sysUpTime, which notifications carry
        notifier = Notifier(snmp.notify, snmp.engine_id or default_engine_id(str(state)), state,
                            uptime_ticks=lambda: uptime(time.time()))
        extra.append(NotificationCollector(notifier.stats))

    model = agent = subagent = None
    if snmp.enabled and not snmp.wanted:
        log.info("SNMP agent not started: no community, user or notification target is configured")
    if snmp.wanted:
        from exporter.exposition import SnmpCollector
        from exporter.snmp.model import SnmpModel

        state.mkdir(parents=True, exist_ok=True)
        model = SnmpModel(snmp, state, lambda: poller.snapshot, started_at=started_at, controller=controller,
                          notifier=notifier)
        poller.subscribe(model.on_snapshot)
        if snmp.standalone:  # AgentX only: no UDP agent, no pysnmp engine
            from exporter.snmp.agent import StandaloneAgent

            agent = StandaloneAgent(snmp, state, model, control_enabled=config.control.enabled)
        if snmp.agentx:
            from exporter.snmp import agentx, mib_lvx
            from exporter.snmp.agentx_bridge import SUBTREES, Bridge, master_sender

            subagent = agentx.Subagent(snmp.agentx_socket, SUBTREES, Bridge(model, snmp.agentx_socket),
                                       ident=mib_lvx.LVX_ROOT)
            assert notifier is not None  # snmp.notifications holds in AgentX mode
            notifier.add_sink(f"agentx@{snmp.agentx_socket}", snmp.agentx_notify_mibs, master_sender(subagent))
        udp = agent
        extra.append(SnmpCollector(lambda: udp.packet_stats() if udp is not None else (0, 0)))

    exposition = Exposition(lambda: poller.snapshot, config.libvirt.collectors, extra=extra)
    sub = subagent
    page = StatusPage(config, lambda: poller.snapshot, agent_running=lambda: model is not None,
                      agentx_connected=lambda: sub is not None and sub.connected.is_set(),
                      notifications=notifier.status if notifier is not None else None)
    web = WebServer(config.web.listen_addresses, config.web.telemetry_path,
                    exposition.body,
                    _health(poller), web_config, page)
    return App(poller, web, controller, notifier, model, agent, subagent)


def _health(poller: Poller) -> Any:
    def health() -> dict[str, Any]:
        snap = poller.snapshot
        return {
            "status": "ok",
            "libvirt_up": snap.up,
            "snapshot_age_seconds": round(time.time() - snap.taken_at, 3) if snap.taken_at else None,
            "domains": len(snap.domains),
        }

    return health
