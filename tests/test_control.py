"""Lifecycle control with snmpset, on libvirt's test driver."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

from exporter.snmp import mib, mib_lvx
from tests.conftest import ROOT, require_tool
from tests.support import snmp
from tests.support.process import Exporter
from tests.support.wait import wait_until

WRITER = "admin"
WRITER_ARGS = ["-v3", "-l", "authPriv", "-u", WRITER, "-a", "SHA-512", "-A", "admin-auth-key", "-x", "AES-256",
               "-X", "admin-priv-key"]
WRITE_COMMUNITY = "write-community-for-tests"
LVX = ".".join(map(str, mib_lvx.LVX_ROOT))

CONTROL = f"""
[control]
enabled = true

[[snmp.users]]
name = "{WRITER}"
auth_key = "admin-auth-key"
priv_key = "admin-priv-key"
auth_protocol = "SHA-512"
priv_protocol = "AES-256"
write = true

[[snmp.communities]]
name = "{WRITE_COMMUNITY}"
write = true
"""


@pytest.fixture
def ctl(tmp_path) -> Iterator[tuple[Exporter, str]]:
    """The demo host with control enabled; a fresh host for every test (node-file URIs are private)."""
    require_tool("snmpset", "snmp")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}", CONTROL)
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml",
                    "--libvirt.poll-interval", "1h"], log=tmp_path / "log")
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        yield exp, f"127.0.0.1:{port}"


def _get(target: str, *oids: str) -> list[str]:
    return snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", "-OU", target, *oids).split("\n")[: len(oids)]


def _set(target: str, *args: str, who: list[str] = WRITER_ARGS) -> subprocess.CompletedProcess[str]:
    return snmp.run("snmpset", *who, "-t", "5", "-r", "0", target, *args)


def _state(exp: Exporter, name: str) -> float | None:
    return exp.scrape().get("libvirt_domain_state_code", domain=name)


def test_admin_state_lifecycle(ctl: tuple[Exporter, str]) -> None:
    """pause, resume, graceful shutdown, start and power off web1; each shows at once in SNMP and /metrics."""
    exp, target = ctl
    i = snmp.domain_index(target, "web1")
    for wanted, state, action in (("paused", "3", "3"), ("running", "1", "4"), ("off", "5", "6"),
                                  ("running", "1", "2"), ("shutdown", "5", "5")):
        result = _set(target, f"lvxDomainAdminState.{i}", "i", wanted)
        assert result.returncode == 0, result.stderr
        assert _get(target, f"lvxDomainOperState.{i}", f"lvxDomainLastAction.{i}",
                    f"lvxDomainLastActionResult.{i}") == [state, action, "3"]
        assert _state(exp, "web1") == int(state)
    # Setting the state a domain already has succeeds and does nothing.
    assert _set(target, f"lvxDomainAdminState.{i}", "i", "off").returncode == 0
    assert "action=off (already) result=success" in exp.output()


def test_actions_reboot_reset_managed_save(ctl: tuple[Exporter, str]) -> None:
    """One-shot actions: reboot and reset keep it running; managedSave stops it and start restores it."""
    _exp, target = ctl
    i = snmp.domain_index(target, "db1")
    assert _set(target, f"lvxDomainAction.{i}", "i", "reboot").returncode == 0
    assert _set(target, f"lvxDomainAction.{i}", "i", "reset").returncode == 0
    assert _get(target, f"lvxDomainOperState.{i}", f"lvxDomainLastAction.{i}") == ["1", "8"]
    assert _set(target, f"lvxDomainAction.{i}", "i", "managedSave").returncode == 0
    assert _get(target, f"lvxDomainOperState.{i}", f"lvxDomainAction.{i}") == ["5", "1"]  # reads return none
    assert _set(target, f"lvxDomainAdminState.{i}", "i", "running").returncode == 0
    assert _get(target, f"lvxDomainOperState.{i}") == ["1"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["{lvx}.1.2.1.27.{web1}", "s", "running"], "wrongType"),
        (["{lvx}.1.2.1.27.{web1}", "u", "1"], "wrongType"),
        (["{lvx}.1.2.1.27.{web1}", "i", "9"], "wrongValue"),
        (["{lvx}.1.2.1.28.{web1}", "i", "0"], "wrongValue"),
        (["{lvx}.1.2.1.28.{legacy1}", "i", "2"], "inconsistentValue"),  # reboot a shut-off domain
        (["{lvx}.1.2.1.27.{crashy1}", "i", "2"], "inconsistentValue"),  # pause a crashed domain
        (["{lvx}.1.2.1.27.4242", "i", "1"], "noCreation"),  # no such domain
        (["{lvx}.1.2.1.2.{web1}", "s", "renamed"], "notWritable"),  # a read-only column
        (["{lvx}.1.1.14.0", "i", "77"], "inconsistentValue"),  # wrong spin-lock value
        (["1.3.6.1.4.1.36957.1.1.1.3.1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16", "i", "3"], "inconsistentName"),
        (["1.3.6.1.4.1.36957.1.1.1.9.{web1_uuid}", "i", "5"], "wrongValue"),  # createAndWait: unsupported
    ],
)
def test_wrong_sets_get_the_right_error(ctl: tuple[Exporter, str], args: list[str], error: str) -> None:
    """Each kind of wrong SET gets its SNMP error, and the domains are left as they were."""
    exp, target = ctl
    fill = {"lvx": LVX, **{n: snmp.domain_index(target, n) for n in ("web1", "legacy1", "crashy1")},
            "web1_uuid": ".".join(map(str, uuidlib.UUID("4d1f0a52-0c6c-4c3e-9b1a-0000000000a1").bytes))}
    before = {s["domain"]: exp.scrape().get("libvirt_domain_state_code", domain=s["domain"])
              for s in exp.scrape().series("libvirt_domain_state_code")}
    result = snmp.run("snmpset", *WRITER_ARGS, "-t", "5", "-r", "0", target,
                      *[a.format(**fill) for a in args], mibs=False)
    assert result.returncode != 0
    assert f"Reason: {error}" in result.stderr, result.stderr
    after = {name: _state(exp, name) for name in before}
    assert after == before
    assert "result=refused: " in exp.output()


def test_read_only_principals_cannot_write(ctl: tuple[Exporter, str]) -> None:
    """The read-only community and v3 user get noAccess / authorizationError; the domain is untouched."""
    exp, target = ctl
    i = snmp.domain_index(target, "web1")
    for who in (snmp.V2_ARGS, snmp.V3_ARGS):
        result = _set(target, f"lvxDomainAdminState.{i}", "i", "off", who=who)
        assert result.returncode != 0 and re.search(r"noAccess|authorizationError", result.stderr)
    assert _state(exp, "web1") == 1
    assert exp.output().count("result=refused: NoAccessError") == 2


def test_set_is_all_or_nothing(ctl: tuple[Exporter, str]) -> None:
    """A SET whose second varbind is wrong runs nothing, not even the first."""
    exp, target = ctl
    web1, legacy1 = snmp.domain_index(target, "web1"), snmp.domain_index(target, "legacy1")
    result = _set(target, f"lvxDomainAdminState.{web1}", "i", "paused", f"lvxDomainAction.{legacy1}", "i", "reboot")
    assert "Reason: inconsistentValue" in result.stderr and f"lvxDomainAction.{legacy1}" in result.stderr
    assert _state(exp, "web1") == 1


def test_spin_lock_stops_a_repeated_request(ctl: tuple[Exporter, str]) -> None:
    """lvxActionSpinLock: the first SET with the value read succeeds, the same SET again fails."""
    exp, target = ctl
    i = snmp.domain_index(target, "web2")
    (lock,) = _get(target, "lvxActionSpinLock.0")
    args = ("lvxActionSpinLock.0", "i", lock, f"lvxDomainAction.{i}", "i", "reboot")
    assert _set(target, *args).returncode == 0
    again = _set(target, *args)
    assert "Reason: inconsistentValue" in again.stderr and "lvxActionSpinLock" in again.stderr
    assert _get(target, "lvxActionSpinLock.0") == [str(int(lock) + 1)]
    assert exp.output().count("domain=web2 action=reboot result=success") == 1


def test_retransmitted_set_runs_once(ctl: tuple[Exporter, str]) -> None:
    """The very same SET message sent twice (a retransmission) runs its action once; both get the reply."""
    exp, target = ctl
    i = int(snmp.domain_index(target, "web2"))
    proto = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    pdu = proto.SetRequestPDU()
    proto.apiPDU.set_defaults(pdu)
    proto.apiPDU.set_request_id(pdu, 424242)
    proto.apiPDU.set_varbinds(pdu, [(mib.BY_NAME["lvxDomainAction"].oid + (i,), proto.Integer(2))])
    msg = proto.Message()
    proto.apiMessage.set_defaults(msg)
    proto.apiMessage.set_community(msg, WRITE_COMMUNITY)
    proto.apiMessage.set_pdu(msg, pdu)
    data = encoder.encode(msg)
    host, port = target.split(":")
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(data, (host, int(port)))
        sock.sendto(data, (host, int(port)))
        for _ in range(2):
            reply, _ = decoder.decode(sock.recv(65535), asn1Spec=proto.Message())
            replies.append(int(proto.apiPDU.get_error_status(proto.apiMessage.get_pdu(reply))))
    assert replies == [0, 0]
    wait_until(lambda: "domain=web2 action=reboot result=success" in exp.output(), 30, "the reboot's audit line")
    time.sleep(0.3)  # room for a second, duplicate run to show (it must not)
    assert exp.output().count("domain=web2 action=reboot result=success") == 1


def test_libvirt_snmp_compatible_writes(ctl: tuple[Exporter, str]) -> None:
    """libvirtGuestState and libvirtGuestRowStatus behave as libvirt-snmp's do."""
    exp, target = ctl
    web2 = ".".join(map(str, uuidlib.UUID("4d1f0a52-0c6c-4c3e-9b1a-0000000000a2").bytes))
    legacy1 = ".".join(map(str, uuidlib.UUID("4d1f0a52-0c6c-4c3e-9b1a-0000000000d1").bytes))
    state, row = "1.3.6.1.4.1.36957.1.1.1.3", "1.3.6.1.4.1.36957.1.1.1.9"

    def put(*args: str) -> subprocess.CompletedProcess[str]:
        return snmp.run("snmpset", *WRITER_ARGS, "-t", "5", "-r", "0", target, *args, mibs=False)

    assert put(f"{state}.{web2}", "i", "3").returncode == 0  # running -> paused
    assert _state(exp, "web2") == 3
    assert "inconsistentValue" in put(f"{state}.{web2}", "i", "4").stderr  # paused -> shutdown: not allowed
    assert put(f"{state}.{web2}", "i", "1").returncode == 0  # paused -> running
    assert put(f"{state}.{web2}", "i", "4").returncode == 0  # running -> shutdown
    assert _state(exp, "web2") == 5
    assert put(f"{row}.{legacy1}", "i", "4").returncode == 0  # createAndGo starts a defined domain
    assert _state(exp, "legacy1") == 1
    assert "inconsistentValue" in put(f"{row}.{legacy1}", "i", "4").stderr  # already running
    assert put(f"{row}.{legacy1}", "i", "6").returncode == 0  # destroy powers it off
    assert _state(exp, "legacy1") == 5
    # createAndGo with a state in the same request: inconsistentValue, as libvirt-snmp (its check of the state
    # against the shut-off row fails first); nothing starts.  tests/test_libvirt_mib.py has every case.
    refused = put(f"{row}.{legacy1}", "i", "4", f"{state}.{legacy1}", "i", "3")
    assert "Reason: inconsistentValue" in refused.stderr
    assert _state(exp, "legacy1") == 5


def test_libvirt_failure_is_commit_failed_with_its_message(ctl: tuple[Exporter, str]) -> None:
    """A libvirt failure: commitFailed, libvirt's message in lvxDomainLastActionError and the log."""
    exp, target = ctl
    i = snmp.domain_index(target, "legacy1")
    result = _set(target, f"lvxDomainAdminState.{i}", "i", "paused")  # start paused: unsupported by the test driver
    assert result.returncode != 0 and "Reason: commitFailed" in result.stderr
    action, outcome, error = _get(target, f"lvxDomainLastAction.{i}", f"lvxDomainLastActionResult.{i}",
                                  f"lvxDomainLastActionError.{i}")
    assert (action, outcome) == ("2", "4")  # start, failed
    assert "unsupported flags" in error
    assert "start_paused of domain legacy1 failed: unsupported flags" in exp.output()
    assert _state(exp, "legacy1") == 5


def test_failed_step_undoes_the_earlier_ones(ctl: tuple[Exporter, str]) -> None:
    """Two domains in one SET: the second fails in libvirt, so the first is put back (commitFailed at 2)."""
    exp, target = ctl
    web1, legacy1 = snmp.domain_index(target, "web1"), snmp.domain_index(target, "legacy1")
    result = _set(target, f"lvxDomainAdminState.{web1}", "i", "paused", f"lvxDomainAdminState.{legacy1}", "i", "paused")
    assert "Reason: commitFailed" in result.stderr and f"lvxDomainAdminState.{legacy1}" in result.stderr
    assert _state(exp, "web1") == 1  # suspended, then resumed by the undo
    assert "domain=web1,legacy1 action=suspend,start paused result=commitFailed" in exp.output()


def test_control_off_by_default_means_not_writable(tmp_path) -> None:
    """Without control.enabled even a write-enabled principal gets notWritable, and libvirt stays read-only."""
    require_tool("snmpset", "snmp")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}",
                            CONTROL.replace("enabled = true", "enabled = false"))
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml"],
                  log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        target = f"127.0.0.1:{port}"
        result = _set(target, f"lvxDomainAdminState.{snmp.domain_index(target, 'web1')}", "i", "off")
        assert "Reason: notWritable" in result.stderr
    assert "SNMP community 2 may write, but control.enabled is off" in exp.output()


def test_readme_snmpset_commands(tmp_path) -> None:
    """The README's "Controlling domains with snmpset" commands work as written against its configuration."""
    require_tool("snmpset", "snmp")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Controlling domains with snmpset", 1)[1].split("\n## ", 1)[0]
    config = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    commands = re.findall(r"^    (snmp\w+ .+)$", section, re.M)
    assert len(commands) >= 4
    cfg = tmp_path / "c.toml"
    cfg.write_text(config + f'\n[state]\ndirectory = "{tmp_path / "state"}"\n')
    cfg.chmod(0o600)
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml"],
                  log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        for command in commands:
            ran = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert ran.returncode == 0 and ran.stderr == "", (command, ran.stderr)
        assert _state(exp, "web1") == 1  # the README ends with web1 running again
    assert exp.output().count("domain=web1") >= 3
