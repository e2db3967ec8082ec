"""libvirt's ``+ssh`` transport for real: the exporter reads a private libvirtd through a private OpenSSH server
on a loopback port, with the URI form and the known_hosts handling the README gives.

The "remote host" is the private libvirtd's mount namespace: the sshd runs in it, so the ``virt-ssh-helper``
that libvirt 9 runs on the far side (``sh -c 'which virt-ssh-helper ... || nc -U SOCKET'``) finds that
daemon at libvirt's usual /run/libvirt paths, as on a real hypervisor.  (A ``socket=`` parameter would make
libvirt 9 use ``nc -U`` instead, which Debian's libvirt does not need and this machine need not have.)
The client side is OpenSSH's ``ssh`` binary (the ``+ssh`` transport; ``+libssh`` is another one), which
reads the known_hosts of the user it runs as, not the URI's ``known_hosts=`` (that is for ``+libssh`` and
``+libssh2``): each exporter runs in a mount namespace of its own in which root's home (in /etc/passwd) is a
test folder holding ``.ssh/known_hosts``, so the machine's own /root/.ssh is never read or written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from exporter.hostgen import HostShape, domain_xml
from tests.conftest import require, require_tool
from tests.support.libvirtd import DaemonError, PrivateLibvirtd
from tests.support.process import Exporter, Metrics, free_port
from tests.support.sshd import Sshd, keygen, sshd_binary
from tests.support.wait import wait_until

NAMES = {"remote00000", "remote00001", "remote00002"}


@dataclass
class SshHost:
    daemon: PrivateLibvirtd
    sshd: Sshd
    keys: Path
    folder: Path

    def uri(self, key: str = "client") -> str:
        """The README's form: a key of the service's own, and never a prompt."""
        return f"test+ssh://root@127.0.0.1:{self.sshd.port}/default?keyfile={self.keys / key}&no_tty=1"

    def home(self, name: str, known: bool = True) -> Path:
        """A home folder for root inside an exporter's namespace: .ssh/known_hosts with the server's key."""
        home = self.folder / name
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        (home / ".ssh").chmod(0o700)
        (home / ".ssh" / "known_hosts").write_text(self.sshd.known_hosts_line() if known else "")
        return home


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    require(os.geteuid() == 0, "the +ssh tier needs root (a private libvirtd, mount namespaces, root's sshd login)")
    for tool, package in (("libvirtd", "libvirt-daemon"), ("virt-ssh-helper", "libvirt-daemon"),
                          ("unshare", "util-linux"), ("nsenter", "util-linux"), ("ssh", "openssh-client"),
                          ("ssh-keygen", "openssh-client")):
        require_tool(tool, package)
    require(sshd_binary() is not None, "sshd not found (Debian package openssh-server)")
    folder = tmp_path_factory.mktemp("ssh")
    daemon = PrivateLibvirtd(folder / "daemon")
    try:
        daemon.start()
    except DaemonError as exc:
        require(False, f"cannot start a private libvirtd: {exc}")
    assert daemon.proc is not None
    conn = libvirt.open(daemon.uri("test"))  # keeps the shared test host alive and defines three domains on it
    sshd = None
    try:
        shape = HostShape(domains=3, disks=1, nics=1, vcpus=2, prefix="remote", mixed_states=False)
        for i in range(shape.domains):
            conn.defineXML(domain_xml(shape, i, with_runstate=False)).create()
        keys = folder / "keys"
        keys.mkdir()
        keygen(keys / "client", "libvirt-exporter test client")
        keygen(keys / "wrong", "a key the server does not know")
        sshd = Sshd(folder / "sshd", free_port(), keys / "client.pub", namespace_of=daemon.proc.pid)
        sshd.start()
        yield SshHost(daemon, sshd, keys, folder)
    finally:
        if sshd is not None:
            sshd.stop()
        conn.close()
        daemon.shutdown()


@contextlib.contextmanager
def exporter_with_home(home: Path, uri: str, log: Path, *args: str) -> Iterator[Exporter]:
    """The exporter in a mount namespace of its own in which root's home is ``home``: a copy of /etc/passwd that
    says so is mounted over it there (ssh finds ~/.ssh through the password database, not $HOME), as a
    service user's home would be its own folder."""
    passwd = home.with_name(home.name + ".passwd")
    lines = Path("/etc/passwd").read_text().splitlines()
    passwd.write_text("".join(_with_home(line, home) + "\n" for line in lines))
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount --bind "$0" /etc/passwd && exec "$@"', str(passwd)]
    with Exporter(["--libvirt.uri", uri, *args], env={"HOME": str(home)}, log=log, prefix=prefix) as exp:
        yield exp


def _with_home(line: str, home: Path) -> str:
    fields = line.split(":")
    if fields[0] == "root" and len(fields) == 7:
        fields[5] = str(home)
    return ":".join(fields)


def _domains(metrics: Metrics) -> set[str]:
    return {s["domain"] for s in metrics.series("libvirt_domain_info")}


def _static(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The domain series that do not move by themselves: every gauge but times and ages (the test driver's
    counters follow the clock)."""
    return {key: value for key, value in metrics.samples.items()
            if key[0].startswith("libvirt_domain_") and not key[0].endswith(("_total", "_seconds"))}


def test_ssh_serves_what_the_local_socket_serves(ssh_host: SshHost, tmp_path: Path) -> None:
    """Through ssh (read-only, so ``virt-ssh-helper -r`` on the far side) the exporter serves the same domains
    with the same definitions, states, sizes and labels as an exporter on the daemon's own socket."""
    with Exporter(["--libvirt.uri", ssh_host.daemon.uri("test")], log=tmp_path / "local.log") as local, \
            exporter_with_home(ssh_host.home("home-ok"), ssh_host.uri(), tmp_path / "ssh.log") as remote:
        here = local.wait_for(lambda m: _domains(m) >= NAMES, what="the domains on the local socket")
        there = remote.wait_for(lambda m: _domains(m) >= NAMES, what="the domains through ssh")
        assert there.get("libvirt_up") == 1
        assert _domains(there) == _domains(here)
        assert _static(there) == _static(here)
        assert len(_static(here)) > 30  # info, state, memory, vCPUs, block and interface info, capacities...
        helpers = [c for c in ssh_host.sshd.descendants_commands() if c.startswith("virt-ssh-helper")]
        assert helpers == ["virt-ssh-helper -r test:///default"], ssh_host.sshd.descendants_commands()
        shown = f"test+ssh://(hidden)@127.0.0.1:{ssh_host.sshd.port}/default?keyfile=(hidden)&no_tty=1"
        assert f"connected to libvirt at {shown}" in remote.output()  # the user and key path are not logged
        assert "Accepted publickey for root from 127.0.0.1" in ssh_host.sshd.output()


def test_a_dropped_ssh_connection_is_noticed_and_reconnected(ssh_host: SshHost, tmp_path: Path) -> None:
    """Killing the sshd session process drops the connection: the exporter reconnects at once.  With the whole
    sshd gone, libvirt_up is 0 and the domain series disappear; once sshd is back on its port, the exporter
    reconnects (capped backoff, 2 s here) and serves the domains again; each loss and each return is logged
    once, however many attempts fail in between."""
    args = ("--libvirt.poll-interval", "1s", "--libvirt.reconnect-backoff-max", "2s")
    with exporter_with_home(ssh_host.home("home-drop"), ssh_host.uri(), tmp_path / "log", *args) as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 1 and _domains(m) >= NAMES, what="the domains through ssh")
        (session,) = wait_until(ssh_host.sshd.sessions, 10, "the exporter's sshd session")
        os.kill(session, signal.SIGKILL)
        exp.wait_for(lambda m: (m.get("libvirt_exporter_reconnects_total") or 0) >= 1 and m.get("libvirt_up") == 1
                     and _domains(m) >= NAMES, what="a reconnect after the session was killed")
        assert session not in ssh_host.sshd.sessions()

        sessions = ssh_host.sshd.sessions()
        ssh_host.sshd.stop(signal.SIGKILL)
        for pid in sessions:  # the listener's death leaves sessions running: these are ours, started by it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        down = exp.wait_for(lambda m: m.get("libvirt_up") == 0, what="libvirt_up 0 with sshd gone")
        assert not _domains(down)
        failed = down.get("libvirt_exporter_poll_errors_total", group="connection") or 0
        exp.wait_for(lambda m: (m.get("libvirt_exporter_poll_errors_total", group="connection") or 0) >= failed + 2,
                     what="two more failed attempts while sshd is gone (retries, not a hang)")
        lost = [line for line in exp.output().splitlines() if "lost the libvirt connection" in line]
        assert len(lost) == 2 and "unreachable" not in exp.output(), exp.output()  # each outage logged once
        ssh_host.sshd.start()
        back = exp.wait_for(lambda m: m.get("libvirt_up") == 1 and _domains(m) >= NAMES, timeout=60,
                            what="the domains again once sshd is back")
        assert (back.get("libvirt_exporter_reconnects_total") or 0) >= 2
        exp.wait_output("libvirt connection to test+ssh://(hidden)@127.0.0.1")
        assert exp.proc.poll() is None


def test_a_wrong_key_or_an_unknown_host_fails_fast_and_clearly(ssh_host: SshHost, tmp_path: Path) -> None:
    """A key the server refuses, and a server missing from known_hosts, each give one clear error line (ssh's
    own words), libvirt_up 0 and retries with backoff: never a hang or a prompt (no_tty=1 is BatchMode), and
    the exporter keeps serving."""
    cases = (("home-wrong-key", True, "wrong", "Permission denied (publickey)"),
             ("home-unknown-host", False, "client", "Host key verification failed"))
    for name, known, key, said in cases:
        args = ("--libvirt.poll-interval", "1s", "--libvirt.reconnect-backoff-max", "1s")
        with exporter_with_home(ssh_host.home(name, known), ssh_host.uri(key), tmp_path / f"{name}.log",
                                *args) as exp:
            exp.wait_for(lambda m: (m.get("libvirt_exporter_poll_errors_total", group="connection") or 0) >= 2,
                         what="two failed connection attempts")
            metrics = exp.scrape()
            assert metrics.get("libvirt_up") == 0 and not _domains(metrics)
            lines = [line for line in exp.output().splitlines() if "is unreachable" in line]
            assert len(lines) == 1 and said in lines[0], exp.output()
            assert str(ssh_host.keys) not in exp.output()  # the URI is logged without its query values
            assert exp.proc.poll() is None
    assert shutil.which("ssh") is not None
