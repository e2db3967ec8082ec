"""A real snmptrapd on loopback ports, one port per notification target."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tests.support.daemon import Daemon
from tests.support.snmp import BASE_MIBS, free_udp_port
from tests.support.wait import poll_until, wait_until

_HEADER = re.compile(r"->\[127\.0\.0\.1\]:(\d+)")
_TRAP_OID = re.compile(r"\.1\.3\.6\.1\.6\.3\.1\.1\.4\.1\.0 = OID: \.([\d.]+)")


@dataclass(frozen=True)
class Received:
    port: int
    trap_oid: str
    text: str  # the varbind line


class Trapd(Daemon):
    """snmptrapd accepting v1/v2c from anyone, and the v3 users given."""

    what: ClassVar[str] = "snmptrapd"
    stop_timeout: ClassVar[float] = 5.0
    proc: subprocess.Popen[bytes]

    def __init__(self, folder: Path, ports: int, v3_users: list[str], port_numbers: list[int] | None = None,
                 extra_conf: str = "") -> None:
        """``ports`` loopback ports (or exactly ``port_numbers``, to start again where a stopped one listened);
        ``extra_conf``: more lines for its snmptrapd.conf (a ``perl do`` trap handler, say)."""
        exe = shutil.which("snmptrapd")
        if exe is None:
            raise AssertionError("snmptrapd not found (Debian package snmptrapd)")
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "trapd.log"
        super().__init__(self.log)
        conf = folder / "snmptrapd.conf"
        conf.write_text("disableAuthorization yes\n" + "".join(f"createUser {u}\n" for u in v3_users) + extra_conf)
        # Free ports are picked before snmptrapd binds them, so another process may take one meanwhile:
        # with ports of our own choosing, a start that fails is tried again on fresh ones.
        attempts = 1 if port_numbers else 3
        for attempt in range(1, attempts + 1):
            self.ports = list(port_numbers) if port_numbers else [free_udp_port() for _ in range(ports)]
            if attempt > 1:
                self.log.unlink(missing_ok=True)  # its failed start only
            listen = ",".join(f"udp:127.0.0.1:{p}" for p in self.ports)
            proc = self._spawn([exe, "-f", "-C", "-c", str(conf), "-Lf", str(self.log), "-On", "-n", "-M",
                                str(BASE_MIBS), "-m", "", listen])

            def started_or_exited(proc: subprocess.Popen[bytes] = proc) -> bool:
                return self._started() or proc.poll() is not None

            try:
                wait_until(started_or_exited, 30, "snmptrapd to start (or exit)")
            except AssertionError:
                self.stop()
                raise
            if self._started():
                return
            if attempt == attempts:
                raise AssertionError(f"snmptrapd exited (ports {self.ports}): {self.output()[-500:]}")

    def _started(self) -> bool:
        return self.log.exists() and "NET-SNMP version" in self.log.read_text(errors="replace")

    def received(self) -> list[Received]:
        lines = self.log.read_text(errors="replace").splitlines()
        result = []
        for header, body in itertools.pairwise(lines):
            port = _HEADER.search(header)
            oid = _TRAP_OID.search(body)
            if port and oid:
                result.append(Received(int(port.group(1)), oid.group(1), body))
        return result

    def wait_for(self, count: int, timeout: float = 15.0, port: int | None = None) -> list[Received]:
        """What arrived (on ``port``, or on any) once it is ``count`` notifications or more, or after
        ``timeout``: the caller checks how many came."""
        return poll_until(lambda: [r for r in self.received() if port is None or r.port == port],
                          lambda got: len(got) >= count, timeout, every=0.1)
