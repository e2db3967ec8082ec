"""The Debian package (`make deb`): what it holds, lintian, and its life in a fresh Debian 12 chroot.

The package and the chroot are made by `make test` before the suite runs (`make deb`, `make deb-chroot`), so
that no test reaches Debian's archive or PyPI.  The chroot is made by mmdebstrap with exactly the package's
dependencies (the first of each alternative) and the tools the checks run (systemd-analyze, the net-snmp tools,
man), so ``dpkg -i`` fails if the Depends field misses something (:mod:`tests.support.debchroot`).
Nothing is installed on this machine: every command runs in the chroot, in a mount namespace of its own whose
/proc is the only mount, gone with the namespace.  In the chroot the package is installed, checked (the unit
verifies as installed, the sysusers file made the user, the configuration's owner and mode, the command serves
the test driver over HTTP and SNMP, the MIBs are found by name with no -M), upgraded twice (a configuration
file changed by the admin survives; with --force-confold the maintainer's new one lands beside it as
.dpkg-dist) and purged, after which only what the purge policy keeps (debian/postrm) may differ.

The build takes 2-4 minutes (pip fetches the dependencies from PyPI and compiles libvirt-python), the
chroot about 2 the first time, the life cycle under a minute.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import __version__
from exporter.config import load_file, resolve
from tests.conftest import ROOT, require, require_tool
from tests.support import debchroot
from tests.support.daemon import Daemon
from tests.support.process import Metrics, free_port, http_get
from tests.support.snmp import free_udp_port

DEB_DIR = ROOT / "build-deb"
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
DEB = DEB_DIR / f"libvirt-exporter_{__version__}_{ARCH}.deb"
EXAMPLE_CONFIG = ROOT / "systemd" / "config.toml"
UNIT = "/lib/systemd/system/libvirt-exporter.service"
# Where the package puts files, and where a purge must leave things as they were.
WATCHED = ("opt", "etc", "usr/bin", "usr/share/snmp", "usr/share/doc", "usr/share/man", "lib/systemd",
           "usr/lib/sysusers.d", "var/lib")
# Kept by a purge on purpose (debian/postrm says why): the state the service wrote, and the service user,
# whose creation left systemd-sysusers' backups of the account files.
KEPT = re.compile(r"var/lib/libvirt-exporter(/.*)?|etc/(passwd|group|shadow|gshadow)-")
# lintian's warnings that are explained rather than fixed: the venv's scripts start with its own python
# (unusual-interpreter), and prometheus_client's modules carry a "#!/usr/bin/env python" line though they are
# not scripts (script-not-executable, unusual-interpreter).  Everything else lintian flags is fixed, or
# overridden in debian/libvirt-exporter.lintian-overrides with its reason.
LINTIAN_WARNINGS = {"unusual-interpreter", "script-not-executable"}


# ---- without a build ----------------------------------------------------------------------------------------

def test_the_package_version_is_the_projects() -> None:
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"libvirt-exporter ({__version__}) "), (first, __version__)


def test_the_example_configuration_changes_nothing_and_its_examples_are_valid(tmp_path: Path) -> None:
    text = EXAMPLE_CONFIG.read_text()
    assert tomllib.loads(text) == {}, "every setting in the example must be commented out"
    # Uncommented ("#key = value", "#[table]"; prose has "# " and stays a comment), it is a valid configuration.
    live = tmp_path / "config.toml"
    live.write_text(re.sub(r"^#(?=\S)", "", text, flags=re.M))
    live.chmod(0o640)
    data = load_file(str(live))
    assert data["snmp"]["communities"] and data["snmp"]["users"] and data["snmp"]["notify"], data
    resolve({}, {}, data, config_file=str(live))


def test_the_unit_and_the_readme_name_the_packaged_paths() -> None:
    unit = (ROOT / "systemd" / "libvirt-exporter.service").read_text()
    assert "ExecStart=/usr/bin/libvirt-exporter\n" in unit
    assert "/usr/local" not in unit
    assert f"{UNIT.rsplit('/', 1)[1]} lib/systemd/system/" in (ROOT / "debian" / "install").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make deb" in readme and "apt install ./build-deb/libvirt-exporter_" in readme
    assert "/usr/local/share/snmp" not in readme
    assert "install -m 640 -g libvirt-exporter config.toml" in (ROOT / "systemd" / "README.md").read_text()


# ---- the package ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deb() -> Path:
    """The package, as `make test` built it (`make deb`, which rebuilds it when its sources are newer)."""
    require(DEB.exists(), f"no package at {DEB}: `make test` builds it first (make deb)")
    return DEB


def test_the_package_holds_the_service(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {}
    for line in listing.splitlines():
        mode, owner, _size, _date, _time, path, *link = line.split()
        entries[path.removeprefix(".")] = (mode, owner, link[1] if link else None)
    assert entries["/usr/bin/libvirt-exporter"][2] == "/opt/libvirt-exporter/bin/libvirt-exporter"
    assert entries["/opt/libvirt-exporter/bin/python3"][2] == "/usr/bin/python3"  # Debian's interpreter
    assert entries["/opt/libvirt-exporter/bin/libvirt-exporter"][0] == "-rwxr-xr-x"
    for path in (UNIT, "/usr/lib/sysusers.d/libvirt-exporter.conf", "/etc/default/libvirt-exporter",
                 "/usr/share/man/man1/libvirt-exporter.1.gz", "/usr/share/doc/libvirt-exporter/copyright"):
        assert path in entries, path
    assert entries["/etc/libvirt-exporter/"][0] == "drwxr-x---"
    assert entries["/etc/libvirt-exporter/config.toml"][0] == "-rw-r-----"
    for name in ("LIBVIRT-EXPORTER-MIB.txt", "LIBVIRT-MIB.txt", "SNMPv2-SMI", "SNMPv2-TC", "SNMPv2-CONF", "SNMPv2-MIB"):
        assert f"/usr/share/snmp/mibs/{name}" in entries, name
    assert all(owner == "root/root" for _mode, owner, _link in entries.values())
    # dpkg owns the venv: no pip in it, and no file outside what the package lists
    assert not any("/site-packages/pip/" in path for path in entries)
    assert not any(path.startswith("/usr/lib/debug") for path in entries)
    depends = debchroot.field(deb, "Depends")
    for needed in ("python3 (>= 3.11~)", "python3 (<< 3.12)", "libvirt0", "systemd | systemd-standalone-sysusers"):
        assert needed in depends, depends
    assert debchroot.field(deb, "Version") == __version__
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert b"/etc/libvirt-exporter/config.toml" in control and b"/etc/default/libvirt-exporter" in control


def test_lintian_finds_no_error(deb: Path) -> None:
    lintian = require_tool("lintian", "lintian")
    result = subprocess.run([lintian, str(deb)], capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and not [line for line in lines if line.startswith("E:")], result.stdout[-4000:]
    warned = {line.split()[2] for line in lines if line.startswith("W:")}
    assert warned <= LINTIAN_WARNINGS, result.stdout[-4000:]


# ---- a fresh Debian 12 chroot ----------------------------------------------------------------------------------

class Chroot:
    """A root file system below ``path``; commands run in it through chroot in a mount namespace of their own."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def argv(self, *command: str) -> list[str]:
        return ["unshare", "--mount", f"--mount-proc={self.path / 'proc'}", "chroot", str(self.path),
                "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root", *command]

    def run(self, *command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*command), capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{' '.join(command)} exited with {done.returncode}:\n" \
                                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    def listing(self) -> set[str]:
        """Every path below the watched folders, relative to the root."""
        paths = set()
        for top in WATCHED:
            for folder, dirs, files in os.walk(self.path / top):
                for name in dirs + files:
                    paths.add(str(Path(folder, name).relative_to(self.path)))
        return paths


@pytest.fixture(scope="module")
def chroot(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    require(os.geteuid() == 0, "the package's chroot tier needs root (chroot, mount namespaces, device nodes)")
    require_tool("unshare", "util-linux")
    tarball = debchroot.tarball(deb)
    require(tarball.exists(), f"no Debian 12 chroot at {tarball}: `make test` makes it first (make deb-chroot), "
                              "so that this test downloads nothing")
    path = tmp_path_factory.mktemp("chroot")
    subprocess.run(["tar", "-C", str(path), "-xf", str(tarball)], check=True, timeout=600)
    yield Chroot(path)
    if not os.path.ismount(path / "proc"):  # never the case: /proc is mounted in the namespaces only
        shutil.rmtree(path, ignore_errors=True)


class InstalledExporter(Daemon):
    """/usr/bin/libvirt-exporter in the chroot, on the test driver, HTTP on a free loopback port."""

    what = "the installed exporter"

    def __init__(self, chroot: Chroot, log: Path, *args: str) -> None:
        super().__init__(log)
        self.url = f"http://127.0.0.1:{free_port()}"
        self._spawn(chroot.argv("/usr/bin/libvirt-exporter", "--libvirt.uri", "test:///default",
                                "--web.listen-address", self.url.removeprefix("http://"), *args), capture=True)

    def wait_metrics(self) -> Metrics:
        def up() -> Metrics | None:
            try:
                status, body = http_get(self.url + "/metrics", timeout=2)
            except OSError:
                return None
            metrics = Metrics(body.decode())
            return metrics if status == 200 and metrics.get("libvirt_up") == 1 else None

        return self._wait_started(up, 60, f"libvirt_up 1 at {self.url}/metrics")


def _repack(deb: Path, folder: Path, version: str, config: str | None = None) -> Path:
    """``deb`` as version ``version``, its shipped config.toml replaced by ``config`` when given."""
    tree = folder / f"tree-{version}"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, timeout=300)
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"^Version: .*$", f"Version: {version}", control.read_text(), flags=re.M))
    if config is not None:
        shipped = tree / "etc" / "libvirt-exporter" / "config.toml"
        shipped.write_text(config)
        md5sums = tree / "DEBIAN" / "md5sums"
        digest = hashlib.md5(config.encode()).hexdigest()
        md5sums.write_text(re.sub(r"^\w+(  etc/libvirt-exporter/config\.toml)$", rf"{digest}\1", md5sums.read_text(),
                                  flags=re.M))
    out = folder / f"libvirt-exporter_{version}_{ARCH}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "-b", str(tree), str(out)], check=True,
                   capture_output=True, timeout=300)
    shutil.rmtree(tree)
    return out


def test_install_serve_upgrade_and_purge_in_a_fresh_debian(deb: Path, chroot: Chroot, tmp_path: Path) -> None:
    # the net-snmp tools make /var/lib/snmp on first use: not the package's doing
    chroot.run("snmptranslate", "-On", "SNMPv2-MIB::sysDescr", check=False)
    before = chroot.listing()
    shutil.copy(deb, chroot.path / "tmp" / deb.name)
    chroot.run("dpkg", "-i", f"/tmp/{deb.name}")  # fails if a dependency is missing from Depends

    # the unit as installed, untouched, verifies (its command and its man page exist)
    verify = chroot.run("systemd-analyze", "verify", UNIT, check=False)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
    assert not (chroot.path / "etc/systemd/system/multi-user.target.wants/libvirt-exporter.service").exists(), \
        "installed disabled: the admin enables it after editing the configuration"
    # the sysusers file made the user, in group libvirt; the configuration is readable by its group only
    account = chroot.run("getent", "passwd", "libvirt-exporter").stdout.split(":")
    assert account[5:] == ["/var/lib/libvirt-exporter", "/usr/sbin/nologin\n"], account
    assert "libvirt" in chroot.run("id", "-nG", "libvirt-exporter").stdout.split()
    modes = chroot.run("stat", "-c", "%a %U %G %n", "/etc/libvirt-exporter", "/etc/libvirt-exporter/config.toml")
    assert modes.stdout.splitlines() == ["750 root libvirt-exporter /etc/libvirt-exporter",
                                         "640 root libvirt-exporter /etc/libvirt-exporter/config.toml"]
    assert chroot.run("libvirt-exporter", "--version").stdout.strip() == f"libvirt-exporter {__version__}"
    # the MIBs are found by name, with no -M or -m
    for name, oid in (("LIBVIRT-EXPORTER-MIB::lvxDomainName", ".1.3.6.1.4.1.8072.9999.9999.1.2.1.2"),
                      ("SNMPv2-MIB::sysDescr", ".1.3.6.1.2.1.1.1")):
        translated = chroot.run("snmptranslate", "-On", name)
        assert translated.stdout.strip() == oid and "Cannot" not in translated.stderr, translated

    # the admin edits the configuration (an SNMP community), and the installed command serves the test driver
    config = chroot.path / "etc" / "libvirt-exporter" / "config.toml"
    snmp_port = free_udp_port()
    admin_text = config.read_text() + f'\n[snmp]\nlisten_address = "127.0.0.1:{snmp_port}"\n\n' \
                                      '[[snmp.communities]]\nname = "package-test"\n'
    config.write_text(admin_text)
    with InstalledExporter(chroot, tmp_path / "exporter.log", "--config.file", "/etc/libvirt-exporter/config.toml") \
            as exporter:
        metrics = exporter.wait_metrics()
        assert metrics.get("libvirt_domains_number") == 1, exporter.output()
        walk = chroot.run("snmpwalk", "-v2c", "-c", "package-test", f"127.0.0.1:{snmp_port}",
                          "LIBVIRT-EXPORTER-MIB::lvxDomainName", timeout=60)
        assert walk.stdout.strip() == "LIBVIRT-EXPORTER-MIB::lvxDomainName.1 = STRING: test", walk
        get = chroot.run("snmpget", "-v2c", "-c", "package-test", f"127.0.0.1:{snmp_port}", "SNMPv2-MIB::sysDescr.0")
        assert get.stdout.startswith(f"SNMPv2-MIB::sysDescr.0 = STRING: libvirt-exporter {__version__}"), get
        assert exporter.stop() == 0, exporter.output()
    assert (chroot.path / "var/lib/libvirt-exporter/snmp-indexes.json").exists()

    # an upgrade that does not change the shipped configuration keeps the admin's, silently
    second = _repack(deb, tmp_path, f"{__version__}+upgrade1")
    shutil.copy(second, chroot.path / "tmp" / second.name)
    chroot.run("dpkg", "-i", f"/tmp/{second.name}")
    assert config.read_text() == admin_text
    assert not list(config.parent.glob("config.toml.dpkg-*"))
    # one that changes it: with --force-confold the admin's stays and the maintainer's lands beside it
    shipped = EXAMPLE_CONFIG.read_text() + "#\n# (changed by the maintainer)\n"
    third = _repack(deb, tmp_path, f"{__version__}+upgrade2", config=shipped)
    shutil.copy(third, chroot.path / "tmp" / third.name)
    chroot.run("dpkg", "-i", "--force-confold", f"/tmp/{third.name}")
    assert chroot.run("dpkg-query", "-W", "-f", "${Version}", "libvirt-exporter").stdout == f"{__version__}+upgrade2"
    assert config.read_text() == admin_text
    assert (config.parent / "config.toml.dpkg-dist").read_text() == shipped
    modes = chroot.run("stat", "-c", "%a %G", "/etc/libvirt-exporter/config.toml")
    assert modes.stdout.strip() == "640 libvirt-exporter"

    # purge: everything goes but what the policy keeps (the state, the user)
    for name in (deb.name, second.name, third.name):
        (chroot.path / "tmp" / name).unlink()
    chroot.run("dpkg", "--purge", "libvirt-exporter")
    after = chroot.listing()
    assert before - after == set(), "the purge removed what was there before"
    left = after - before
    assert {path for path in left if not KEPT.fullmatch(path)} == set(), sorted(left)
    assert "var/lib/libvirt-exporter/snmp-indexes.json" in left
    assert chroot.run("getent", "passwd", "libvirt-exporter", check=False).returncode == 0
