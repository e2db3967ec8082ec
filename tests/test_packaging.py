"""Packaging: `pip install .` into a clean venv, `python -m build`, and a complete --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from exporter.config import SETTINGS
from tests.conftest import ROOT

MIBS = ("LIBVIRT-EXPORTER-MIB.txt", "LIBVIRT-MIB.txt")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout without local state (.venv, build/, caches), as a clean clone has it."""
    target = tmp_path_factory.mktemp("src") / "libvirt-exporter"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".venv", "build", "build-deb", ".git", "__pycache__",
                                                                "*.egg-info", ".pytest_cache", "dist"))
    return target


def test_pip_install_into_a_clean_venv(source: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)], capture_output=True,
                             text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    for name in MIBS:  # where net-snmp looks below the prefix
        shipped = venv / "share" / "snmp" / "mibs" / name
        assert shipped.read_text() == (ROOT / "mibs" / name).read_text()
    assert (venv / "share" / "man" / "man1" / "libvirt-exporter.1").exists()  # found by man with bin/ on PATH
    command = venv / "bin" / "libvirt-exporter"
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("libvirt-exporter ")
    dump = subprocess.run([str(command), "dump", "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert dump.returncode == 0 and "libvirt_domains_number 6" in dump.stdout, dump.stderr[-2000:]


def test_build_makes_an_sdist_and_a_wheel_with_the_mibs(source: Path, tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(source)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    (sdist,) = tmp_path.glob("*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    for name in MIBS:
        assert any(n.endswith(f".data/data/share/snmp/mibs/{name}") for n in names), names
    assert "exporter/snmp/fastpath.py" in names and "exporter/cli.py" in names
    members = tarfile.open(sdist).getnames()
    top = members[0].split("/")[0]
    for path in [f"mibs/{n}" for n in MIBS] + ["grafana/libvirt-exporter.json", "prometheus/libvirt-exporter.rules.yml",
                                                "zabbix/libvirt-exporter-snmp.yaml", "systemd/libvirt-exporter.service",
                                                "systemd/config.toml", "man/man1/libvirt-exporter.1", "debian/rules",
                                                "debian/control", "debian/changelog",
                                                "examples/demo-host.xml", "Makefile", "README.md", "pyproject.toml"]:
        assert f"{top}/{path}" in members, path


def test_help_is_complete() -> None:
    text = subprocess.run([sys.executable, "-m", "exporter", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT).stdout
    for setting in SETTINGS:
        if setting.file_only:
            assert setting.key in text, setting.key  # listed as file-only, with no flag
        else:
            assert setting.cli in text and setting.env in text, setting.key
    for word in ("serve", "dump", "--config.file", "--version"):
        assert word in text, word
