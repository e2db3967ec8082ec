"""A private libvirtd (with its own virtlogd) for the real-hypervisor tier.

The daemons run in a mount namespace of their own, in which libvirt's fixed
paths (/run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt,
/etc/libvirt) are bind mounts of folders below ``root``.  Their sockets are
therefore reachable from outside as ``root/run/libvirt-sock``, and the run
never touches, reuses or kills a daemon it did not start.  QEMU runs as root
in this private config, so KVM is used whenever /dev/kvm exists, without
changing its permissions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

from tests.support.daemon import Daemon

_MOUNTS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "etc": "/etc/libvirt",
}
# The QEMU capabilities probe takes a few seconds; keep its cache between runs.
CAPS_CACHE = Path("/var/tmp/libvirt-exporter-test-caps")


class DaemonError(RuntimeError):
    pass


def kvm_usable() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


class PrivateLibvirtd(Daemon):
    """libvirtd (through ``unshare``), started by :meth:`start`; ``proc`` is None while it is stopped."""

    what: ClassVar[str] = "libvirtd"
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, root: Path, tcp_port: int | None = None, host_uuid: str | None = None) -> None:
        """``tcp_port``: also listen for unauthenticated TCP on 127.0.0.1 (libvirt's remote ``+tcp`` transport).
        ``host_uuid``: the host UUID libvirtd reports (two daemons between which a domain migrates need two)."""
        self.root = root
        self.tcp_port = tcp_port
        self.host_uuid = host_uuid
        super().__init__(self.log_path)

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    def uri(self, driver: str = "qemu") -> str:
        if driver == "test":
            return f"test+unix:///default?socket={self.socket}"
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def log_path(self) -> Path:
        return self.root / "libvirtd.out"

    def _prepare(self) -> Path:
        for name in _MOUNTS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        etc = self.root / "etc"
        if not (etc / "qemu.conf").exists():
            shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
            with open(etc / "qemu.conf", "a", encoding="utf-8") as conf:
                conf.write('\nuser = "root"\ngroup = "root"\n')
            if self.tcp_port is not None:
                with open(etc / "libvirtd.conf", "a", encoding="utf-8") as conf:
                    conf.write(f'\nlisten_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\ntcp_port = "{self.tcp_port}"\n'
                               'listen_addr = "127.0.0.1"\n')
            if self.host_uuid is not None:
                with open(etc / "libvirtd.conf", "a", encoding="utf-8") as conf:
                    conf.write(f'\nhost_uuid = "{self.host_uuid}"\n')
        CAPS_CACHE.mkdir(parents=True, exist_ok=True)
        for target in _MOUNTS.values():
            os.makedirs(target, exist_ok=True)  # mount points; empty folders if the host has none
        run = self.root / "run"
        script = self.root / "start-daemons.sh"
        binds = "\n".join(f"mount --bind {self.root / name} {target}" for name, target in _MOUNTS.items())
        script.write_text(
            "#!/bin/sh\nset -e\n"
            f"{binds}\n"
            f"mkdir -p /var/cache/libvirt/qemu && mount --bind {CAPS_CACHE} /var/cache/libvirt/qemu\n"
            f"if ! kill -0 \"$(cat {run}/virtlogd.pid 2>/dev/null)\" 2>/dev/null; then\n"
            f"  virtlogd -d -p {run}/virtlogd.pid\nfi\n"
            f"exec libvirtd -p {run}/libvirtd.pid{' --listen' if self.tcp_port is not None else ''}\n",
            encoding="utf-8",
        )
        script.chmod(0o755)
        return script

    def start(self, timeout: float = 60.0) -> None:
        for tool in ("libvirtd", "virtlogd", "unshare"):
            if shutil.which(tool) is None:
                raise DaemonError(f"{tool} is not installed (Debian package libvirt-daemon / util-linux)")
        if os.geteuid() != 0:
            raise DaemonError("the private libvirtd needs root (mount namespace, tap devices)")
        script = self._prepare()
        if self.socket.exists():
            self.socket.unlink()
        self._spawn(["unshare", "--mount", "--propagation", "private", str(script)], capture=True, append=True)
        try:
            self._wait_started(lambda: self.socket.exists() and self._answers(), timeout,
                               f"libvirtd to answer on {self.socket}")
        except AssertionError as exc:
            raise DaemonError(str(exc)) from None

    def _answers(self) -> bool:
        result = subprocess.run(
            ["virsh", "-c", self.uri(), "version"], capture_output=True, timeout=30, check=False
        )
        return result.returncode == 0

    def output(self) -> str:
        return self.tail()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        interesting = [line for line in text if "dmidecode" not in line and "dnsmasq" not in line]
        return "\n".join(interesting[-lines:])

    def virsh(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["virsh", "-c", self.uri(), *args], capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise DaemonError(f"virsh {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop libvirtd (domains keep running, as with a real daemon restart)."""
        code = super().stop(sig)
        self.proc = None
        return code

    def _pid_from(self, name: str) -> int | None:
        try:
            return int((self.root / "run" / name).read_text().strip())
        except (OSError, ValueError):
            return None

    def shutdown(self) -> None:
        """Destroy every domain, then stop libvirtd and virtlogd."""
        if self.proc is not None and self.proc.poll() is None:
            for name in self.virsh("list", "--name", check=False).split():
                self.virsh("destroy", name, check=False)
        self.stop()
        # Any QEMU left behind (a failed test) is ours: its pid file is in our run dir.
        for pidfile in (self.root / "run" / "qemu").glob("*.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        pid = self._pid_from("virtlogd.pid")
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
