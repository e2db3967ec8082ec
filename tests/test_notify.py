"""Notifications to a real snmptrapd: v2c traps and informs, v3 authPriv traps and informs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from exporter.snmp.notify import notifier_engine_id
from tests.conftest import ROOT, require_tool
from tests.support import snmp
from tests.support.process import Exporter
from tests.support.trapd import Trapd

ENGINE_ID = "80001f8805aabbccddeeff00112233"
NOTIFIER_ID = "0x" + notifier_engine_id(bytes.fromhex(ENGINE_ID)).hex()
LVX = "1.3.6.1.4.1.8072.9999.9999"
WRITER = ["-v3", "-l", "authPriv", "-u", "admin", "-a", "SHA-256", "-A", "admin-auth-key", "-x", "AES",
          "-X", "admin-priv-key"]


def notify_config(ports: list[int], dead_port: int | None = None) -> str:
    v2c_trap, v2c_inform, v3_trap, v3_inform = ports
    text = f"""
[control]
enabled = true

[[snmp.users]]
name = "admin"
auth_key = "admin-auth-key"
priv_key = "admin-priv-key"
write = true

[[snmp.notify]]
address = "127.0.0.1:{v2c_trap}"
community = "trap-community"
mibs = ["libvirt-exporter", "libvirt", "vm"]

[[snmp.notify]]
address = "127.0.0.1:{v2c_inform}"
type = "inform"
community = "inform-community"

[[snmp.notify]]
address = "127.0.0.1:{v3_trap}"
version = "v3"
user = "trapper"
auth_key = "trapper-auth-key"
priv_key = "trapper-priv-key"

[[snmp.notify]]
address = "127.0.0.1:{v3_inform}"
version = "v3"
type = "inform"
user = "informer"
auth_key = "informer-auth-key"
priv_key = "informer-priv-key"
auth_protocol = "SHA-512"
priv_protocol = "AES-256"
"""
    if dead_port is not None:
        text += f"""
[[snmp.notify]]
address = "127.0.0.1:{dead_port}"
type = "inform"
community = "nobody-listens"
queue_size = 3
"""
    return text


@pytest.fixture
def trapd(tmp_path) -> Iterator[Trapd]:
    require_tool("snmptrapd", "snmptrapd")
    receiver = Trapd(tmp_path, 4, [
        f"-e {NOTIFIER_ID} trapper SHA-256 trapper-auth-key AES trapper-priv-key",
        "informer SHA-512 informer-auth-key AES-256 informer-priv-key",
    ])
    yield receiver
    receiver.stop()


def _exporter(trapd: Trapd, tmp_path, dead_port: int | None = None) -> tuple[Exporter, str]:
    """The demo host with control on, sending to the trap receiver's ports (and a dead one if given)."""
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}",
                            notify_config(trapd.ports, dead_port=dead_port))
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml",
                    "--snmp.engine-id", ENGINE_ID], log=tmp_path / "log")
    return exp, f"127.0.0.1:{port}"


def _set(target: str, *args: str) -> None:
    result = snmp.run("snmpset", *WRITER, "-t", "5", "-r", "0", target, *args)
    assert result.returncode == 0, result.stderr


def test_lifecycle_notifications_reach_snmptrapd(trapd: Trapd, tmp_path) -> None:
    """pause, resume, power off, start: each arrives as v2c trap, v2c inform, v3 trap and v3 inform."""
    exp, target = _exporter(trapd, tmp_path)
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        i = snmp.domain_index(target, "web1")
        for state in ("paused", "running", "off", "running"):
            _set(target, f"lvxDomainAdminState.{i}", "i", state)
        # suspended(3), resumed(4), stopped(2), started(1), in that order, on every target
        expected = [f"{LVX}.0.3", f"{LVX}.0.4", f"{LVX}.0.2", f"{LVX}.0.1"]
        for p in trapd.ports:
            got = [r.trap_oid for r in trapd.wait_for(4 if p != trapd.ports[0] else 12, port=p)
                   if r.trap_oid.startswith(LVX)]
            assert got == expected, (p, got)
        v2c = trapd.received()
        first = next(r for r in v2c if r.port == trapd.ports[0] and r.trap_oid == f"{LVX}.0.3")
        assert f".{LVX}.1.2.1.2.{i} = STRING: \"web1\"" in first.text  # varbinds indexed by the row
        assert f".{LVX}.1.2.1.5.{i} = INTEGER: 3" in first.text  # paused
        # libvirt-snmp's and VM-MIB's notifications go to the target that asked for them
        others = [r.trap_oid for r in v2c if r.port == trapd.ports[0] and not r.trap_oid.startswith(LVX)]
        assert others == ["1.3.6.1.4.1.36957.0.1", "1.3.6.1.2.1.236.0.4", "1.3.6.1.4.1.36957.0.1",
                          "1.3.6.1.2.1.236.0.1", "1.3.6.1.4.1.36957.0.1", "1.3.6.1.2.1.236.0.3",
                          "1.3.6.1.4.1.36957.0.1", "1.3.6.1.2.1.236.0.1"]
        paused_vm = next(r for r in v2c if r.trap_oid == "1.3.6.1.2.1.236.0.4")
        assert f".1.3.6.1.2.1.236.1.4.1.6.{i} = INTEGER: 4" in paused_vm.text  # the state before: running
        metrics = exp.scrape()
        sent = {s["target"]: metrics.get("libvirt_exporter_notifications_sent_total", target=s["target"])
                for s in metrics.series("libvirt_exporter_notifications_sent_total")}
        assert sent == {f"v2c-trap@127.0.0.1:{trapd.ports[0]}": 12, f"v2c-inform@127.0.0.1:{trapd.ports[1]}": 4,
                        f"v3-trap@127.0.0.1:{trapd.ports[2]}": 4, f"v3-inform@127.0.0.1:{trapd.ports[3]}": 4}
    assert f"SNMPv3 traps come from engine ID {NOTIFIER_ID}" in exp.output()


def test_action_failure_notification(trapd: Trapd, tmp_path) -> None:
    """A SET whose libvirt call fails sends lvxDomainActionFailed with libvirt's message."""
    exp, target = _exporter(trapd, tmp_path)
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        i = snmp.domain_index(target, "legacy1")
        result = snmp.run("snmpset", *WRITER, "-t", "5", "-r", "0", target, f"lvxDomainAdminState.{i}", "i", "paused")
        assert "commitFailed" in result.stderr
        (failed,) = [r for r in trapd.wait_for(1, port=trapd.ports[3]) if r.trap_oid == f"{LVX}.0.10"]
        assert "unsupported flags" in failed.text and f".{LVX}.1.2.1.29.{i} = INTEGER: 2" in failed.text


def test_dead_inform_target_delays_nobody(trapd: Trapd, tmp_path) -> None:
    """An inform target nobody answers: retried and its overflow counted, while the others get theirs at once."""
    dead = snmp.free_udp_port()
    exp, target = _exporter(trapd, tmp_path, dead_port=dead)
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        i = snmp.domain_index(target, "web2")
        t0 = time.monotonic()
        for _ in range(3):
            _set(target, f"lvxDomainAdminState.{i}", "i", "paused")
            _set(target, f"lvxDomainAdminState.{i}", "i", "running")
        got = trapd.wait_for(6, port=trapd.ports[1])  # the live inform target
        assert len(got) == 6 and time.monotonic() - t0 < 10
        dead_name = f"v2c-inform@127.0.0.1:{dead}"
        metrics = exp.wait_for(
            lambda m: (m.get("libvirt_exporter_notification_retries_total", target=dead_name) or 0) >= 1,
            timeout=20, what="a retry to the dead target")
        assert metrics.get("libvirt_exporter_notifications_sent_total", target=dead_name) == 0
        assert metrics.get("libvirt_exporter_notifications_dropped_total", target=dead_name) >= 2  # queue of 3
        assert metrics.get("libvirt_exporter_notification_queue_length", target=dead_name) == 3
    log = exp.output()
    assert log.count(f"notification queue for {dead_name} is full") == 1  # logged once, not per drop
    assert log.count(f"inform to {dead_name} not acknowledged") == 1
