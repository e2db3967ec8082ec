"""Helpers for driving the agent with the net-snmp command-line tools."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from tests.support.process import ROOT
from tests.support.wait import poll_until

BASE_MIBS = ROOT / "build" / "base-mibs"
MIB_DIRS = f"{BASE_MIBS}:{ROOT / 'mibs'}"
MODULES = "LIBVIRT-EXPORTER-MIB:LIBVIRT-MIB:SNMPv2-MIB"
COMMUNITY = "test-ro-community"
V3_USER, V3_AUTH, V3_PRIV = "monitor", "monitor-auth-key", "monitor-priv-key"
V3_ARGS = ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA-256", "-A", V3_AUTH, "-x", "AES", "-X", V3_PRIV]
V2_ARGS = ["-v2c", "-c", COMMUNITY]
#: Lifecycle control on, with a v3 authPriv user that may write (for agent_config's ``extra``).
OPERATOR_CONFIG = """
[control]
enabled = true
reply_within = "1s"

[[snmp.users]]
name = "operator"
auth_key = "operator-auth-key"
priv_key = "operator-priv-key"
write = true
"""
OPERATOR_ARGS = ["-v3", "-l", "authPriv", "-u", "operator", "-a", "SHA-256", "-A", "operator-auth-key", "-x", "AES",
                 "-X", "operator-priv-key"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_config(path: Path, state_dir: Path, snmp_listen: str, extra: str = "", mode: str = "standalone") -> Path:
    """A config file with one read-only community and one read-only v3 authPriv user (``mode``: snmp.mode)."""
    path.write_text(
        f"""
[state]
directory = "{state_dir}"

[snmp]
mode = "{mode}"
listen_address = ["{snmp_listen}"]
contact = "test contact"
location = "test location"

[[snmp.communities]]
name = "{COMMUNITY}"

[[snmp.users]]
name = "{V3_USER}"
auth_key = "{V3_AUTH}"
priv_key = "{V3_PRIV}"
{extra}
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


def demo_config(path: Path) -> Path:
    """A private copy of examples/demo.toml (it holds a community: the exporter refuses it world-readable)."""
    path.write_text((ROOT / "examples" / "demo.toml").read_text())
    path.chmod(0o600)
    return path


def run(tool: str, *args: str, timeout: float = 120, mibs: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a net-snmp tool (with the shipped MIBs loaded unless ``mibs`` is False)."""
    exe = shutil.which(tool)
    if exe is None:
        raise AssertionError(f"{tool} not found (Debian package snmp)")
    mib_args = ["-M", MIB_DIRS, "-m", MODULES] if mibs else ["-m", ""]
    return subprocess.run([exe, *mib_args, *args], capture_output=True, text=True, timeout=timeout)


def ok(tool: str, *args: str, timeout: float = 120, mibs: bool = True) -> str:
    result = run(tool, *args, timeout=timeout, mibs=mibs)
    assert result.returncode == 0 and "Timeout" not in result.stderr, f"{tool} {args}: {result.stderr}"
    return result.stdout


def values(text: str) -> dict[str, str]:
    """Output of a tool run with -Oqn (numeric OID, value) -> {oid: value}."""
    out = {}
    for line in text.splitlines():
        if "No more variables left in this MIB View" in line:
            continue  # the walk reached the end of everything the agent serves
        oid, _, value = line.partition(" ")
        out[oid.lstrip(".")] = value.strip().strip('"')
    return out


def domain_index(target: str, name: str) -> str:
    """A domain's lvxDomainIndex, looked up by name through lvxDomainNameTable."""
    return ok("snmpget", *V2_ARGS, "-Oqv", target, f"lvxDomainNameIndex.'{name}'").strip()


def wait_outcome(target: str, index: str, timeout: float = 30) -> str:
    """lvxDomainLastActionResult once it is no longer inProgress (destroy waits for QEMU to exit)."""
    def outcome() -> str:
        return ok("snmpget", *V2_ARGS, "-Oqv", "-Oe", target, f"lvxDomainLastActionResult.{index}").strip()

    return poll_until(outcome, lambda result: result != "2", timeout, every=0.2)


def compiled_mibs() -> dict[str, dict]:
    """Our MIBs compiled by pysmi from local files only (never the network)."""
    import json

    from pysmi.codegen.jsondoc import JsonCodeGen
    from pysmi.compiler import MibCompiler
    from pysmi.parser.dialect import smi_v1_relaxed
    from pysmi.parser.smi import parserFactory
    from pysmi.reader.localfile import FileReader
    from pysmi.searcher.stub import StubSearcher
    from pysmi.writer.callback import CallbackWriter

    out: dict[str, str] = {}
    compiler = MibCompiler(parserFactory(**smi_v1_relaxed)(), JsonCodeGen(),
                           CallbackWriter(lambda name, data, ctx: out.__setitem__(name, data)))
    compiler.add_sources(FileReader(str(BASE_MIBS)), FileReader(str(ROOT / "mibs")))
    compiler.add_searchers(StubSearcher(*JsonCodeGen.baseMibs))
    status = compiler.compile("LIBVIRT-EXPORTER-MIB", "LIBVIRT-MIB", "SNMPv2-MIB", rebuild=True, genTexts=False)
    assert status["LIBVIRT-EXPORTER-MIB"] == "compiled" and status["LIBVIRT-MIB"] == "compiled", status
    return {name: json.loads(text) for name, text in out.items()}
