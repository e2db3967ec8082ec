"""The standalone SNMP agent: pysnmp's engine on our listen addresses, over the SNMP model.

Built only when ``snmp.mode`` is ``standalone`` or ``both``.  Request
handlers read the model's :class:`~exporter.snmp.mib.MibView`, built once
per snapshot, with a bisect for GETNEXT and GETBULK; they never call
libvirt.  SNMPv2c and SNMPv3 (USM) reads are answered by the fast path
(:mod:`exporter.snmp.fastpath`, :mod:`exporter.snmp.fastv3`) before pysnmp
sees them; SETs go through
:mod:`exporter.snmp.setresponder`.  Access control is pysnmp's VACM: every
community and user gets a read view and, unless granted one, an empty write
view.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as snmp_config
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from exporter.config import SnmpSettings
from exporter.config.values import ListenAddress
from exporter.snmp.engine import auth_protocol, default_engine_id, encode, new_engine, priv_protocol
from exporter.snmp.fastpath import FastPath
from exporter.snmp.fastv3 import FastV3
from exporter.snmp.model import SnmpModel
from exporter.snmp.setresponder import ControlSetResponder
from exporter.snmp.usm import pysnmp_clock, user_keys
from exporter.snmp.view import Missing

log = logging.getLogger(__name__)

_NO_WRITE_VIEW = "no-write"
_MISSING = {Missing.NO_SUCH_OBJECT: rfc1905.noSuchObject, Missing.NO_SUCH_INSTANCE: rfc1905.noSuchInstance}


class ViewController(AbstractMibInstrumController):  # type: ignore[misc]  # pysnmp is untyped
    """pysnmp instrumentation over a MibView; every failure becomes an SNMP error."""

    def __init__(self, model: SnmpModel) -> None:
        self._model = model

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
        view = self._model.view()
        now = self._model.clock()
        ac = context.get("acFun")
        result = []
        for idx, (name, _) in enumerate(varBinds):
            try:
                found = view.lookup(tuple(name))
                value = None if isinstance(found, Missing) else encode(found, now)
                if ac is not None and ac("read", (name, value), idx=idx, **context):
                    result.append((name, rfc1905.noSuchObject))  # not in this principal's view
                elif isinstance(found, Missing):
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
        view = self._model.view()
        now = self._model.clock()
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


class StandaloneAgent:
    """Serves the model's MIB view over UDP: pysnmp's engine, with the fast path in front of it."""

    def __init__(self, settings: SnmpSettings, state_directory: Path, model: SnmpModel, *,
                 control_enabled: bool) -> None:
        self._settings = settings
        self.model = model
        self._state_dir = state_directory
        self._control_enabled = control_enabled  # only to warn about a writer that cannot write
        self._engine: Any = None
        self.fast_path: FastPath | None = None

    def start(self) -> None:
        """Bind the listen addresses and register principals; raises OSError on bind failure."""
        cfg = self._settings
        self._state_dir.mkdir(parents=True, exist_ok=True)
        engine_id = cfg.engine_id or default_engine_id(str(self._state_dir))
        eng = new_engine(engine_id, self._state_dir)
        self._engine = eng
        self.fast_path = FastPath(
            {c.name.encode("utf-8"): tuple(cfg.views[c.view]) for c in cfg.communities},
            self.model.view, self.model.clock)
        keys = [user_keys(u, engine_id, tuple(cfg.views[u.view])) for u in cfg.users]
        self.fast_path.v3 = FastV3(engine_id, [k for k in keys if k is not None], self.fast_path,
                                   pysnmp_clock(eng)) if cfg.users else None
        for n, address in enumerate(cfg.listen_addresses, start=1):
            self._open(eng, n, address)

        level_type = eng.get_mib_builder().import_symbols("SNMP-FRAMEWORK-MIB", "SnmpSecurityLevel")[0]
        snmp_config.add_context(eng, b"")
        for name, subtrees in cfg.views.items():
            for subtree in subtrees:
                snmp_config.add_vacm_view(eng, f"v-{name}", "included", subtree, b"")
        # An explicit, empty write view: read-only principals must fail on SET.
        snmp_config.add_vacm_view(eng, _NO_WRITE_VIEW, "excluded", (1, 3, 6, 1), b"")

        def grant(model: int, sec_name: str, level: str, view: str, write: bool) -> None:
            group = f"g-{sec_name}"
            snmp_config.add_vacm_group(eng, group, model, sec_name)
            snmp_config.add_vacm_access(eng, group, b"", model, level_type(level), "exact", f"v-{view}",
                                        f"v-{view}" if write else _NO_WRITE_VIEW, f"v-{view}")

        for n, community in enumerate(cfg.communities, start=1):
            sec_name = f"community{n}"  # the community string itself never appears in VACM or logs
            snmp_config.add_v1_system(eng, sec_name, community.name, securityName=sec_name)
            for model in (1, 2):
                grant(model, sec_name, "noAuthNoPriv", community.view, community.write)
            if community.write:
                log.warning("SNMP community %d (v1/v2c, cleartext) is allowed to write", n)
            if community.write and not self._control_enabled:
                log.warning("SNMP community %d may write, but control.enabled is off: SETs will fail", n)
        for user in cfg.users:
            snmp_config.add_v3_user(eng, user.name, auth_protocol(user), user.auth_key, priv_protocol(user),
                                    user.priv_key or None)
            grant(3, user.name, user.level, user.view, user.write)

        snmp_context = context.SnmpContext(eng)
        snmp_context.unregister_context_name(b"")
        snmp_context.register_context_name(b"", ViewController(self.model))
        for responder in (cmdrsp.GetCommandResponder, cmdrsp.NextCommandResponder, cmdrsp.BulkCommandResponder):
            responder(eng, snmp_context)
        ControlSetResponder(eng, snmp_context, self.model)
        if not cfg.communities and not cfg.users:
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
    """Mixed into pysnmp's UDP transports: the fast path answers SNMPv2c/v3 reads, the rest goes on to pysnmp.

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
