"""A new user's path (issue 14): the README and `make demo` followed literally, each step run as written.

The demos run through make itself (``-o venv -o base-mibs``: the tests use what is installed already and never
install anything), on free loopback ports given as DEMO_ADDRESS and DEMO_SNMP_ADDRESS.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytest

from exporter import control
from exporter.snapshot import Domain, Snapshot
from exporter.snmp import mib, setreq
from tests.conftest import ROOT, require, require_tool
from tests.support import snmp
from tests.support.daemon import Daemon
from tests.support.process import Metrics, free_port, http_get
from tests.support.wait import wait_until

CHECK_SNMP = "/usr/lib/nagios/plugins/check_snmp"


def _readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would steer net-snmp or the exporter."""
    drop = ("MIBS", "MIBDIRS", "SNMPCONFPATH", "SNMP_PERSISTENT_DIR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("LIBVIRT_EXPORTER_")}
    env.update(extra)
    return env


class Demo(Daemon):
    """`make TARGET` running in a process group of its own, with the HTTP and SNMP addresses given."""

    what: ClassVar[str] = "make"
    stop_timeout: ClassVar[float] = 15.0
    tail_chars: ClassVar[int | None] = None  # the whole output: the tests read make's printed hints from it
    own_group: ClassVar[bool] = True
    proc: subprocess.Popen[bytes]

    def __init__(self, target: str, folder: Path) -> None:
        require_tool("make", "make")
        require((ROOT / ".venv" / "bin" / "libvirt-exporter").exists(), "no .venv: run make venv")
        require((snmp.BASE_MIBS / "SNMPv2-SMI").exists(), "no base MIBs: run make base-mibs")
        self.http = f"127.0.0.1:{free_port()}"
        self.snmp = f"127.0.0.1:{snmp.free_udp_port()}"
        self.log = folder / f"{target}.out"
        super().__init__(self.log)
        self._spawn(["make", "-s", "-o", "venv", "-o", "base-mibs", target, f"DEMO_ADDRESS={self.http}",
                     f"DEMO_SNMP_ADDRESS={self.snmp}", f"DEMO_DIR={folder / 'demo'}", f"DEMO_STATE={folder / 'state'}"],
                    capture=True, env=_clean_env(), cwd=ROOT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /metrics on DEMO_ADDRESS shows the six demo domains."""
        def six_domains() -> bool:
            try:
                status, body = http_get(f"http://{self.http}/metrics", timeout=1)
            except OSError:
                return False
            return status == 200 and Metrics(body.decode()).get("libvirt_domains_number") == 6

        self._wait_started(six_domains, timeout, f"the demo's six domains on http://{self.http}/metrics")


@contextmanager
def running(target: str, folder: Path) -> Iterator[Demo]:
    demo = Demo(target, folder)
    try:
        demo.wait_ready()
        yield demo
    finally:
        demo.stop()


def _hint(output: str, tool: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(tool + " ")]
    assert lines, f"make printed no {tool} line: {output}"
    return lines[0]


def test_demo_addresses_move_the_listeners_and_the_hints(tmp_path: Path) -> None:
    """Points 1 and 4: DEMO_ADDRESS and DEMO_SNMP_ADDRESS are where the demo listens, the printed lines use them,
    and the printed snmpwalk shows the system group by its SNMPv2-MIB names."""
    require_tool("snmpwalk", "snmp")
    with running("demo", tmp_path) as demo:
        output = demo.output()
        assert f"curl http://{demo.http}/metrics" in output
        walk = _hint(output, "snmpwalk")
        assert f" {demo.snmp} " in walk
        ran = subprocess.run(walk, shell=True, capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env=_clean_env())
        assert ran.returncode == 0 and ran.stderr == "", ran.stderr
        assert "SNMPv2-MIB::sysDescr.0 = STRING:" in ran.stdout
        assert "SNMPv2-SMI::mib-2.1." not in ran.stdout  # (VM-MIB, mib-2.236, is not shipped: numeric it stays)
        assert "LIBVIRT-EXPORTER-MIB::lvxDomainName." in ran.stdout
    assert "Traceback" not in demo.output()


def _audit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "exporter.audit" in line]


def test_readme_snmpset_lines_run_against_make_demo_control(tmp_path: Path) -> None:
    """Point 2: the README's configuration is what `make demo-control` runs, and its snmpget/snmpset lines do what
    they say against it.  Point 10: the audit lines name the principal without its secret and domains by name."""
    require_tool("snmpset", "snmp")
    text = _readme_section("Controlling domains with snmpset")
    assert "`make demo-control`" in text
    shown = tomllib.loads(re.search(r"```toml\n(.*?)```", text, re.S).group(1))
    shipped = tomllib.loads((ROOT / "examples" / "control.toml").read_text())
    assert shipped["control"] | shown["control"] == shipped["control"]
    for key in ("communities", "users"):
        for entry in shown["snmp"][key]:
            assert entry in shipped["snmp"][key], entry
    commands = re.findall(r"^    (snmp(?:get|set) .+)$", text, re.M)
    assert len(commands) == 5
    with running("demo-control", tmp_path) as demo:
        assert _hint(demo.output(), "snmpset").count(demo.snmp) == 1
        outputs = []
        for command in commands:
            assert command.count("127.0.0.1:1161") == 1, command
            ran = subprocess.run(command.replace("127.0.0.1:1161", demo.snmp), shell=True, capture_output=True,
                                 text=True, timeout=60, cwd=ROOT, env=_clean_env())
            assert ran.returncode == 0 and ran.stderr == "", (command, ran.stderr)
            outputs.append(ran.stdout)
        assert outputs[0].strip().endswith("INTEGER: 5")
        assert outputs[1].strip().endswith("paused(2)") and outputs[2].strip().endswith("running(1)"), outputs
        assert "reboot" in outputs[4] and "success" in outputs[4], outputs[4]
        # The demo's community public is read-only: its SET is refused, and audited without the community.
        refused = subprocess.run(
            ["snmpset", "-v2c", "-c", "public", "-M", snmp.MIB_DIRS, "-m", "LIBVIRT-EXPORTER-MIB", demo.snmp,
             "lvxDomainAdminState.5", "i", "paused"], capture_output=True, text=True, timeout=60, env=_clean_env())
        assert "noAccess" in refused.stderr, refused.stderr
        wait_until(lambda: "snmp.communities[0](v2c)" in demo.output(), 30, "the refused SET to be audited",
                   every=0.1)
    audit = _audit_lines(demo.output())
    assert len(audit) == 4, demo.output()
    assert all("principal=operator(v3)" in line and "domain=web1" in line for line in audit[:3]), audit
    assert "principal=snmp.communities[0](v2c)" in audit[3] and "domain=web1" in audit[3], audit
    assert "refused" in audit[3]
    assert not [line for line in audit if "public" in line or "community1" in line or "(model" in line]


def test_audit_names_principals_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """Point 10: whatever way the agent words its principal, the audit line names a community by its entry."""
    assert control.principal_name("community2", 2) == "snmp.communities[1](v2c)"
    assert control.principal_name("community1", 1) == "snmp.communities[0](v1)"
    assert control.principal_name("operator", 3) == "operator(v3)"
    assert control.principal_name("community1", 3) == "community1(v3)"  # a v3 user may have any name
    # A refused SET is described varbind by varbind: the spin lock is no domain, a row with no domain has none.
    spin_lock = mib.BY_NAME["lvxActionSpinLock"].oid + (0,)
    admin_state = mib.BY_NAME["lvxDomainAdminState"].oid
    web1 = Domain(name="web1", uuid="6695eb01-f6a4-8304-79aa-97f2502e193f", id=1, state=1)
    snap = Snapshot(up=True, taken_at=0.0, domains=(web1,))
    described = setreq.describe([spin_lock, admin_state + (5,)], snap, {5: web1.uuid})
    assert described == "web1"
    nothing_there = setreq.describe([admin_state + (9,)], snap, {5: web1.uuid})
    assert nothing_there == "lvxDomainAdminState.9"
    with caplog.at_level(logging.INFO, logger="exporter.audit"):
        control.audit(control.principal_name("community1", 2), "127.0.0.1:5000", "web1", "set",
                      "refused: NoAccessError")
        control.audit("agentx-master", "/var/agentx/master", "web1", "suspend", "success")
        control.audit(control.principal_name("operator", 3), "127.0.0.1:5000", described, "set", "refused: X")
        control.audit(control.principal_name("operator", 3), "127.0.0.1:5000", nothing_there, "set",
                      "refused: NoCreationError")
    assert [r.getMessage() for r in caplog.records] == [
        "SET principal=snmp.communities[0](v2c) from=127.0.0.1:5000 domain=web1 action=set "
        "result=refused: NoAccessError",
        "SET principal=agentx-master from=/var/agentx/master domain=web1 action=suspend result=success",
        "SET principal=operator(v3) from=127.0.0.1:5000 domain=web1 action=set result=refused: X",
        "SET principal=operator(v3) from=127.0.0.1:5000 domain=lvxDomainAdminState.9 action=set "
        "result=refused: NoCreationError",
    ]


def test_readme_mib_install_works_in_a_clean_home(tmp_path: Path) -> None:
    """Point 3: the README's lines for loading the MIBs without -M/-m, run as written with an empty HOME, give a
    net-snmp that knows our objects and the system group's names, with nothing on stderr."""
    require_tool("snmptranslate", "snmp")
    require((snmp.BASE_MIBS / "SNMPv2-SMI").exists(), "no base MIBs: run make base-mibs")
    text = _readme_section("SNMP")
    block = re.search(r"^    (mkdir -p ~/\.snmp/mibs\n(?:    .+\n)+)", text, re.M)
    assert block, "the README shows no lines that install the MIBs"
    lines = [line.removeprefix("    ") for line in block.group(1).splitlines()]
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(HOME=str(home))
    for line in lines:
        subprocess.run(["bash", "-c", line], check=True, cwd=ROOT, env=env, timeout=30)
    for name, expected in (("LIBVIRT-EXPORTER-MIB::lvxDomainOperState", ".1.3.6.1.4.1.8072.9999.9999"),
                           ("LIBVIRT-MIB::libvirtGuestState", ".1.3.6.1.4.1.36957")):
        ran = subprocess.run(["snmptranslate", "-On", name], capture_output=True, text=True, env=env, timeout=30)
        assert ran.returncode == 0 and ran.stderr == "" and ran.stdout.startswith(expected), ran.stdout + ran.stderr
    ran = subprocess.run(["snmptranslate", ".1.3.6.1.2.1.1.1.0"], capture_output=True, text=True, env=env,
                         timeout=30)
    assert ran.stdout.strip() == "SNMPv2-MIB::sysDescr.0" and ran.stderr == "", ran.stdout + ran.stderr


def test_readme_check_snmp_against_a_stopped_exporter(tmp_path: Path) -> None:
    """Point 5: with nothing answering, the README's flags give UNKNOWN within seconds; and its account of what
    happens otherwise (check_snmp's own alarm at -t times -e plus 5 seconds: CRITICAL, no cause named) holds, here
    with -t 6 -e 0, which times out after 5 s rather than the defaults' 55 s."""
    require(Path(CHECK_SNMP).exists(), "check_snmp missing (Debian package monitoring-plugins-standard)")
    text = _readme_section("Nagios and Icinga")
    assert "after 55 s the answer is CRITICAL" in " ".join(text.split())
    shown = re.search(r"^    \$ (/usr/lib/nagios/plugins/check_snmp .+)\n    (.+)\n", text, re.M)
    assert shown, "the README shows no check_snmp line for a stopped exporter"
    command, expected = shown.groups()
    assert "-p 1161" in command and "-t " in command and "-e " in command
    port = snmp.free_udp_port()  # nothing listens there
    env = _clean_env(MIBDIRS=snmp.MIB_DIRS)
    started = time.monotonic()
    ran = subprocess.run(command.replace("-p 1161", f"-p {port}"), shell=True, capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=env)
    took = time.monotonic() - started
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert ran.stdout.strip() == expected.replace("1161", str(port)), ran.stdout
    assert took < 10
    slow = re.sub(r" -t \d+ -e \d+", " -t 6 -e 0", command.replace("-p 1161", f"-p {port}"))
    ran = subprocess.run(slow, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stdout.strip() == "CRITICAL - Plugin timed out while executing system call"


@pytest.mark.parametrize("folder", ["zabbix", "prometheus"])
def test_integration_folders_say_what_each_file_is(folder: str) -> None:
    """Point 13: every file in zabbix/ and prometheus/ is named in that folder's README."""
    base = ROOT / folder
    readme = (base / "README.md").read_text()
    files = [p.relative_to(base).as_posix() for p in base.rglob("*")
             if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts]
    assert files
    for name in files:
        assert f"`{name}`" in readme, name


def test_make_demo_dry_run_uses_the_demo_addresses() -> None:
    """Point 1, cheaply: both demo targets listen where DEMO_ADDRESS and DEMO_SNMP_ADDRESS say, and print no
    other address (a dry run: nothing runs)."""
    require_tool("make", "make")
    for target in ("demo", "demo-control"):
        ran = subprocess.run(["make", "-n", "-o", "venv", "-o", "base-mibs", target, "DEMO_ADDRESS=127.0.0.1:1",
                              "DEMO_SNMP_ADDRESS=127.0.0.1:2"], capture_output=True, text=True, cwd=ROOT,
                             env=_clean_env(), timeout=30)
        assert ran.returncode == 0, ran.stderr
        assert "9177" not in ran.stdout and "1161" not in ran.stdout, ran.stdout
        assert "--web.listen-address 127.0.0.1:1 --snmp.listen-address 127.0.0.1:2" in ran.stdout
