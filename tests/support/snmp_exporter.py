"""Prometheus's ``snmp_exporter`` (Debian's prometheus-snmp-exporter 0.21) on a loopback port, and its generator."""

from __future__ import annotations

import subprocess
import urllib.parse
from pathlib import Path
from typing import ClassVar

from tests.support.daemon import Daemon
from tests.support.process import free_port, http_get

PACKAGE = "prometheus-snmp-exporter"


def packaged_binary(name: str) -> str | None:
    """The path of ``name`` among the files of the Debian package (``dpkg -L``), None without the package."""
    try:
        listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        return None
    found = [line for line in listing.stdout.splitlines() if line.endswith(f"/bin/{name}")]
    return found[0] if listing.returncode == 0 and found else None


class SnmpExporter(Daemon):
    """``prometheus-snmp-exporter --config.file CONFIG`` on a free loopback port, logging at debug level."""

    what: ClassVar[str] = "snmp_exporter"
    tail_chars: ClassVar[int | None] = None

    def __init__(self, binary: str, config: Path, log: Path) -> None:
        super().__init__(log)
        self.url = f"http://127.0.0.1:{free_port()}"
        self._spawn([binary, f"--config.file={config}", f"--web.listen-address={self.url.removeprefix('http://')}",
                     "--log.level=debug"], capture=True)

        def ready() -> bool:
            try:
                return http_get(self.url + "/", timeout=1)[0] == 200
            except OSError:
                return False

        self._wait_started(ready, 30, f"snmp_exporter to answer on {self.url}")

    def scrape(self, module: str, target: str) -> tuple[int, str]:
        """``/snmp?module=MODULE&target=TARGET``: the HTTP status and the exposition text."""
        query = urllib.parse.urlencode({"module": module, "target": target})
        status, body = http_get(f"{self.url}/snmp?{query}", timeout=60)
        return status, body.decode()
