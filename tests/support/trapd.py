"""A real snmptrapd on loopback ports, one port per notification target."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.snmp import BASE_MIBS, free_udp_port

_HEADER = re.compile(r"->\[127\.0\.0\.1\]:(\d+)")
_TRAP_OID = re.compile(r"\.1\.3\.6\.1\.6\.3\.1\.1\.4\.1\.0 = OID: \.([\d.]+)")


@dataclass(frozen=True)
class Received:
    port: int
    trap_oid: str
    text: str  # the varbind line


class Trapd:
    """snmptrapd accepting v1/v2c from anyone, and the v3 users given."""

    def __init__(self, folder: Path, ports: int, v3_users: list[str], port_numbers: list[int] | None = None) -> None:
        """``ports`` loopback ports (or exactly ``port_numbers``, to start again where a stopped one listened)."""
        exe = shutil.which("snmptrapd")
        if exe is None:
            raise AssertionError("snmptrapd not found (Debian package snmptrapd)")
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "trapd.log"
        conf = folder / "snmptrapd.conf"
        conf.write_text("disableAuthorization yes\n" + "".join(f"createUser {u}\n" for u in v3_users))
        # Free ports are picked before snmptrapd binds them, so another process may take one meanwhile:
        # with ports of our own choosing, a start that fails is tried again on fresh ones.
        attempts = 1 if port_numbers else 3
        for attempt in range(1, attempts + 1):
            self.ports = list(port_numbers) if port_numbers else [free_udp_port() for _ in range(ports)]
            if attempt > 1:
                self.log.unlink(missing_ok=True)  # its failed start only
            listen = ",".join(f"udp:127.0.0.1:{p}" for p in self.ports)
            self.proc = subprocess.Popen(
                [exe, "-f", "-C", "-c", str(conf), "-Lf", str(self.log), "-On", "-n", "-M", str(BASE_MIBS), "-m",
                 "", listen], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.log.exists() and "NET-SNMP version" in self.log.read_text(errors="replace"):
                    return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            else:
                self.stop()
                raise AssertionError("snmptrapd did not start within 10 s")
            if attempt == attempts:
                text = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise AssertionError(f"snmptrapd exited (ports {self.ports}): {text[-500:]}")

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
        deadline = time.monotonic() + timeout
        while True:
            got = [r for r in self.received() if port is None or r.port == port]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
