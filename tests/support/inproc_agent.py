"""The standalone SNMP agent in the test process, on its own event-loop thread, over a fixed snapshot.

Its fast path can be switched off for SNMPv3 (``pysnmp_only``) and its pysnmp engine's clock moved
(``shift_engine_time``), so one agent answers a request both ways with the same engine boots and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exporter.config import resolve
from exporter.poller import snapshot_of
from exporter.snapshot import ALL_GROUPS, Snapshot
from exporter.snmp.agent import StandaloneAgent
from exporter.snmp.model import SnmpModel
from exporter.source import Source
from tests.support.snmp import free_udp_port
from tests.support.usmclient import message_id

ROOT = Path(__file__).resolve().parents[2]


def demo_snapshot(uri: str = f"test://{ROOT}/examples/demo-host.xml") -> Snapshot:
    source = Source(uri)
    source.open()
    try:
        started = time.time()
        return snapshot_of(source.poll(ALL_GROUPS), started, time.time() - started)
    finally:
        source.close()


class InProcessAgent:
    """A StandaloneAgent on 127.0.0.1 serving ``snap`` with a frozen clock; ``snmp``: the [snmp] table."""

    def __init__(self, folder: Path, snmp: dict[str, Any], snap: Snapshot) -> None:
        self.port = free_udp_port()
        state = folder / "state"
        config = resolve({}, {}, {"state": {"directory": str(state)},
                                  "snmp": {"listen_address": [f"127.0.0.1:{self.port}"], **snmp}})
        frozen = snap.taken_at + 5.0  # values that depend on the time are the same on both paths
        self.model = SnmpModel(config.snmp, state, lambda: snap, clock=lambda: frozen)
        self.agent = StandaloneAgent(config.snmp, state, self.model, control_enabled=False)
        self.engine_id: bytes = config.snmp.engine_id or b""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="snmp-agent", daemon=True)
        self._thread.start()
        self._in_loop(self.agent.start)
        self.fast = self.agent.fast_path
        assert self.fast is not None and self.fast.v3 is not None
        self._v3 = self.fast.v3
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.connect(("127.0.0.1", self.port))

    def _in_loop(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(60)

    @property
    def engine(self) -> Any:
        return self.agent._engine  # the pysnmp engine, for its clock

    def engine_clock(self) -> tuple[int, int]:
        boots, engine_time = self.engine.get_mib_builder().import_symbols(
            "__SNMP-FRAMEWORK-MIB", "snmpEngineBoots", "snmpEngineTime")
        return int(boots.syntax), int(engine_time.syntax.clone())

    def shift_engine_time(self, seconds: int) -> None:
        """Move snmpEngineTime ``seconds`` ahead (its value is the epoch it counts from)."""
        (engine_time,) = self.engine.get_mib_builder().import_symbols("__SNMP-FRAMEWORK-MIB", "snmpEngineTime")

        def move() -> None:
            engine_time.syntax = engine_time.syntax.clone(int(engine_time.syntax) - seconds)

        self._in_loop(move)

    @contextlib.contextmanager
    def pysnmp_only(self) -> Iterator[None]:
        """SNMPv3 goes to pysnmp alone meanwhile."""
        assert self.fast is not None
        self._in_loop(setattr, self.fast, "v3", None)
        try:
            yield
        finally:
            self._in_loop(setattr, self.fast, "v3", self._v3)

    @property
    def answered(self) -> int:
        assert self.fast is not None
        return int(self._in_loop(lambda: self.fast.answered if self.fast else 0))

    def ask(self, datagram: bytes, timeout: float = 10.0) -> bytes:
        """Send ``datagram`` and return the first reply that carries its msgID (stale replies are skipped)."""
        wanted = message_id(datagram)
        self._sock.send(datagram)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no reply within {timeout} s")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(70000)
            except TimeoutError:
                continue
            if message_id(data) == wanted:
                return data

    def send_only(self, datagram: bytes) -> None:
        self._sock.send(datagram)

    def close(self) -> None:
        self._sock.close()
        self._in_loop(self.agent.stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
