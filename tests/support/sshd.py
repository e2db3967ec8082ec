"""A private OpenSSH server for libvirt's ``+ssh`` transport: its own config, host key and authorised key, on a
free loopback port, optionally inside another process's mount namespace (a private libvirtd's, so that the
``virt-ssh-helper`` it runs for a client finds that daemon's sockets at libvirt's usual /run/libvirt paths).

It never touches the system's sshd or /etc/ssh: everything it reads is below its own folder (it does need
/run/sshd, the privilege separation folder that Debian's openssh-server creates, and makes it when missing).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from tests.support.daemon import Daemon


def keygen(path: Path, comment: str) -> Path:
    """An unencrypted ed25519 key pair at ``path`` and ``path``.pub (mode 600, as ssh wants it)."""
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, timeout=30)
    return path


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.access(p, os.X_OK)), None)


class Sshd(Daemon):
    """``sshd -f CONFIG -D -e``; :meth:`start` again after :meth:`stop` listens on the same port."""

    what: ClassVar[str] = "sshd"
    tail_chars: ClassVar[int | None] = None

    def __init__(self, folder: Path, port: int, authorized_key: Path, namespace_of: int | None = None) -> None:
        """``authorized_key``: the public key allowed in (as root); ``namespace_of``: a pid whose mount
        namespace the server (and so every session) runs in."""
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(folder / "sshd.log")
        self.port = port
        self.namespace_of = namespace_of
        self._starts = 0  # "Server listening" lines the log had after the last start (it is appended to)
        self.host_key = keygen(folder / "host_key", "private test sshd")
        (folder / "authorized_keys").write_text(authorized_key.read_text())
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile none\n"
            # Only this server lets root in, and only with the one key: no password, no PAM, no other key file.
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nAllowTcpForwarding no\nX11Forwarding no\nPrintMotd no\nLogLevel VERBOSE\n")
        binary = sshd_binary()
        assert binary is not None, "sshd not found (Debian package openssh-server)"
        self.binary = binary

    def known_hosts_line(self) -> str:
        """This server's line for a client's known_hosts (the ``[host]:port`` form of a non-22 port)."""
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}\n"

    def start(self, timeout: float = 30.0) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        enter = ["nsenter", f"--mount=/proc/{self.namespace_of}/ns/mnt"] if self.namespace_of else []
        self._spawn([*enter, self.binary, "-f", str(self.config), "-D", "-e"], capture=True, append=True)
        listening = f"Server listening on 127.0.0.1 port {self.port}."
        self._wait_started(lambda: self.output().count(listening) > self._starts, timeout,
                           f"sshd to listen on 127.0.0.1:{self.port}")
        self._starts += 1

    def sessions(self) -> list[int]:
        """The per-connection server processes (the listener's children)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return _children(self.proc.pid)

    def descendants_commands(self) -> list[str]:
        """The command lines of every process below the listener (sessions, and what they run)."""
        found, todo = [], self.sessions()
        while todo:
            pid = todo.pop()
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
            except OSError:
                continue
            todo.extend(_children(pid))
        return found


def _children(pid: int) -> list[int]:
    try:
        text = "".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    except OSError:
        return []
    return [int(word) for word in re.findall(r"\d+", text)]
