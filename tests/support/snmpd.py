"""net-snmp's snmpd as an AgentX master, with a private configuration, socket and persistent directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

from tests.support.daemon import Daemon
from tests.support.snmp import free_udp_port

RW_USER = ["-v3", "-l", "authPriv", "-u", "rwuser", "-a", "SHA-256", "-A", "rw-auth-pass", "-x", "AES",
           "-X", "rw-priv-pass"]
RO_USER = ["-v3", "-l", "authPriv", "-u", "rouser", "-a", "SHA-256", "-A", "ro-auth-pass", "-x", "AES",
           "-X", "ro-priv-pass"]
COMMUNITY = "master-public"


class Snmpd(Daemon):
    """snmpd on a loopback UDP port, master agentx on a unix socket in ``folder``, trap2sink to ``trap_port``.

    It can be stopped and started again (same port, socket and persistent directory); ``proc`` is None while
    it is stopped.
    """

    what: ClassVar[str] = "snmpd"
    tail_chars: ClassVar[int | None] = 1000

    def __init__(self, folder: Path, trap_port: int | None = None, port: int | None = None) -> None:
        exe = shutil.which("snmpd")
        if exe is None:
            raise AssertionError("snmpd not found (Debian package snmpd)")
        self.exe = exe
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = port or free_udp_port()
        self.socket = folder / "agentx.sock"
        self.log = folder / "snmpd.log"
        super().__init__(self.log)
        self.conf = folder / "snmpd.conf"
        self.conf.write_text(
            f"agentaddress udp:127.0.0.1:{self.port}\n"
            "master agentx\n"
            f"agentXSocket {self.socket}\n"
            f"rocommunity {COMMUNITY} 127.0.0.1\n"
            "createUser rwuser SHA-256 rw-auth-pass AES rw-priv-pass\n"
            "createUser rouser SHA-256 ro-auth-pass AES ro-priv-pass\n"
            "rwuser rwuser priv\n"
            "rouser rouser priv\n"
            + (f"trap2sink 127.0.0.1:{trap_port} {COMMUNITY}\n" if trap_port else ""))
        self.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(self.folder / "persist"), MIBS="")
        self._spawn([self.exe, "-f", "-Lf", str(self.log), "-C", "-c", str(self.conf),
                     "-p", str(self.folder / "snmpd.pid")], env=env)
        self._wait_started(self._answers, 30, f"snmpd to answer on {self.target} and open {self.socket}")

    def _answers(self) -> bool:
        probe = subprocess.run(["snmpget", "-v2c", "-c", COMMUNITY, "-m", "", "-t", "0.5", "-r", "0",
                                self.target, "1.3.6.1.2.1.1.3.0"], capture_output=True, text=True)
        return probe.returncode == 0 and self.socket.exists()

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        code = super().stop(sig)
        self.proc = None
        return code
