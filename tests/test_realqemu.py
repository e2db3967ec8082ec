"""The real hypervisor tier: a private libvirtd running two QEMU domains.

Here the bulk-stats path is exercised for real: every stats group comes from
one getAllDomainStats call, and the values are checked against what the same
libvirtd reports for the same domains.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid as uuidlib

import libvirt
import pytest

from exporter import hostgen
from exporter.snmp import mib, mib_lvx
from tests.conftest import RealHost, require_tool
from tests.support import snmp
from tests.support.process import Exporter, Metrics
from tests.support.wait import poll_until, wait_until
from tests.test_metadata import SITE_TOML

pytestmark = pytest.mark.realqemu

# (exposed family, bulk stats key suffix, scale) for per-device counters.
_BLOCK = [
    ("libvirt_domain_block_stats_read_requests_total", "rd.reqs", 1),
    ("libvirt_domain_block_stats_read_bytes_total", "rd.bytes", 1),
    ("libvirt_domain_block_stats_read_time_seconds_total", "rd.times", 1e-9),
    ("libvirt_domain_block_stats_write_requests_total", "wr.reqs", 1),
    ("libvirt_domain_block_stats_write_bytes_total", "wr.bytes", 1),
    ("libvirt_domain_block_stats_flush_requests_total", "fl.reqs", 1),
    ("libvirt_domain_block_stats_flush_time_seconds_total", "fl.times", 1e-9),
]
_NET = [
    ("libvirt_domain_interface_stats_receive_bytes_total", "rx.bytes"),
    ("libvirt_domain_interface_stats_receive_packets_total", "rx.pkts"),
    ("libvirt_domain_interface_stats_transmit_bytes_total", "tx.bytes"),
    ("libvirt_domain_interface_stats_transmit_packets_total", "tx.pkts"),
    ("libvirt_domain_interface_stats_receive_drops_total", "rx.drop"),
    ("libvirt_domain_interface_stats_transmit_errors_total", "tx.errs"),
]


def _bulk(uri: str) -> dict[str, dict]:
    conn = libvirt.openReadOnly(uri)
    try:
        return {dom.name(): stats for dom, stats in conn.getAllDomainStats(0, 0)}
    finally:
        conn.close()


def _between(before: float, exported: float | None, after: float, what: str) -> None:
    assert exported is not None, f"{what} is not exported"
    slack = 1e-9 * max(abs(after), 1.0)  # float rounding of ns -> s
    assert before - slack <= exported <= after + slack, f"{what}: {exported} not within [{before}, {after}]"


def test_metrics_match_libvirt_bulk_stats(real_host: RealHost, tmp_path) -> None:
    """/metrics shows, for each QEMU domain, the cpu, vcpu, balloon, block and net values libvirtd reports."""
    with Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s"], log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 2, what="both QEMU domains")
        before = _bulk(real_host.uri)
        t_before = time.time()
        metrics = exp.wait_for(
            lambda m: (m.get("libvirt_exporter_snapshot_timestamp_seconds") or 0) > t_before, what="a fresh poll")
        after = _bulk(real_host.uri)
    for name in real_host.domains:
        b, a = before[name], after[name]
        ids = {"domain": name}
        assert metrics.get("libvirt_domain_state_code", **ids) == a["state.state"] == 1
        assert metrics.get("libvirt_domain_info_maximum_memory_bytes", **ids) == a["balloon.maximum"] * 1024
        # No guest OS, so no balloon driver: libvirt says last-update 0 (or nothing), which is left out.
        assert a.get("balloon.last-update", 0) == 0
        assert metrics.get("libvirt_domain_memory_stats_last_update_timestamp_seconds", **ids) is None
        assert metrics.get("libvirt_domain_info_memory_usage_bytes", **ids) == a["balloon.current"] * 1024
        assert metrics.get("libvirt_domain_info_virtual_cpus", **ids) == a["vcpu.current"] == 2
        _between(b["cpu.time"] / 1e9, metrics.get("libvirt_domain_info_cpu_time_seconds_total", **ids),
                 a["cpu.time"] / 1e9, f"{name} cpu.time")
        _between(b["cpu.user"] / 1e9, metrics.get("libvirt_domain_cpu_user_seconds_total", **ids),
                 a["cpu.user"] / 1e9, f"{name} cpu.user")
        for n in range(2):
            vcpu = {**ids, "vcpu": str(n)}
            for family, key in (("libvirt_domain_vcpu_time_seconds_total", "time"),
                                ("libvirt_domain_vcpu_delay_seconds_total", "delay"),
                                ("libvirt_domain_vcpu_wait_seconds_total", "wait")):
                _between(b[f"vcpu.{n}.{key}"] / 1e9, metrics.get(family, **vcpu), a[f"vcpu.{n}.{key}"] / 1e9,
                         f"{name} vcpu.{n}.{key}")
            assert metrics.get("libvirt_domain_vcpu_state", **vcpu) == a[f"vcpu.{n}.state"]
            assert metrics.get("libvirt_domain_vcpu_cpu", **vcpu) is not None
        # RSS is a gauge that moves both ways: it must be of the same size as libvirt's readings.
        _between(min(b["balloon.rss"], a["balloon.rss"]) * 1024 * 0.5,
                 metrics.get("libvirt_domain_memory_stats_rss_bytes", **ids),
                 max(b["balloon.rss"], a["balloon.rss"]) * 1024 * 1.5, f"{name} balloon.rss")
        assert a["block.0.name"] == "vda"
        vda = {**ids, "target_device": "vda"}
        for family, key, scale in _BLOCK:
            _between(b[f"block.0.{key}"] * scale, metrics.get(family, **vda), a[f"block.0.{key}"] * scale,
                     f"{name} block.0.{key}")
        assert metrics.get("libvirt_domain_block_stats_read_requests_total", **vda) > 0  # the BIOS read the disk
        assert metrics.get("libvirt_domain_block_stats_capacity_bytes", **vda) == a["block.0.capacity"] == 64 << 20
        assert metrics.get("libvirt_domain_block_stats_physical_bytes", **vda) is not None
        tap = a["net.0.name"]
        nic = {**ids, "target_device": tap}
        for family, key in _NET:
            _between(b[f"net.0.{key}"], metrics.get(family, **nic), a[f"net.0.{key}"], f"{name} net.0.{key}")
        (info,) = [s for s in metrics.series("libvirt_domain_interface_stats_info") if s["domain"] == name]
        assert info["interface_type"] == "ethernet" and info["model_type"] == "virtio"
        assert info["mac_address"].startswith("52:54:00:")
    assert metrics.get("libvirt_versions_info", driver="QEMU") == 1
    assert metrics.get("libvirt_node_cpus") == os.cpu_count()
    errors = {s["group"]: metrics.get("libvirt_exporter_poll_errors_total", group=s["group"])
              for s in metrics.series("libvirt_exporter_poll_errors_total")}
    assert set(errors.values()) == {0}, errors


def test_promtool_on_real_output(real_host: RealHost, tmp_path) -> None:
    """promtool check metrics prints nothing for a real QEMU host's exposition."""
    promtool = require_tool("promtool", "prometheus")
    with Exporter(["--libvirt.uri", real_host.uri], log=tmp_path / "log") as exp:
        metrics = exp.wait_for(lambda m: m.get("libvirt_domains_number") == 2, what="both domains")
    result = subprocess.run([promtool, "check", "metrics"], input=metrics.text, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


def test_lifecycle_events_update_at_once(real_host: RealHost, tmp_path) -> None:
    """virsh suspend/resume on the daemon shows in /metrics within a second, with polls 60 s apart."""
    name = real_host.domains[1]
    with Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "60s"], log=tmp_path / "log") as exp:
        first = exp.wait_for(lambda m: m.get("libvirt_domains_number") == 2, what="both domains")
        polled_at = first.get("libvirt_exporter_snapshot_timestamp_seconds")
        try:
            real_host.daemon.virsh("suspend", name)
            t0 = time.monotonic()
            paused = exp.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=name) == 3, timeout=5,
                                  what="paused state")
            assert time.monotonic() - t0 < 1.5
            assert paused.get("libvirt_exporter_snapshot_timestamp_seconds") == polled_at
            assert paused.get("libvirt_exporter_events_total") >= 1
        finally:
            real_host.daemon.virsh("resume", name, check=False)
        exp.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=name) == 1, timeout=5, what="running")


def _domain_count(m: Metrics) -> float | None:
    return m.get("libvirt_domains_number")


def test_stalled_libvirtd_does_not_stall_scrapes(real_host: RealHost, tmp_path) -> None:
    """A frozen libvirtd (SIGSTOP): scrapes stay fast on the last snapshot, the stall is reported, then recovers."""
    pid = real_host.daemon.proc.pid
    with Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s", "--libvirt.poll-timeout", "2s"],
                  log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        os.kill(pid, signal.SIGSTOP)
        try:
            stalled = exp.wait_for(lambda m: m.get("libvirt_exporter_poll_stalled") == 1, timeout=10,
                                   what="the stall to be reported")
            t0 = time.monotonic()
            metrics = exp.scrape()
            assert time.monotonic() - t0 < 0.5
            assert metrics.get("libvirt_up") == 1 and _domain_count(metrics) == 2
            assert stalled.get("libvirt_exporter_snapshot_age_seconds") >= 2
        finally:
            os.kill(pid, signal.SIGCONT)
        # The stalled poll returns now with data as old as the stall: it must never be served as fresh.
        def fresh_poll() -> bool:
            m = exp.scrape()
            stalled, age = m.get("libvirt_exporter_poll_stalled"), m.get("libvirt_exporter_snapshot_age_seconds")
            assert stalled == 1 or age < 2, f"old data served as fresh: stalled {stalled}, age {age}"
            return stalled == 0

        wait_until(fresh_poll, 15, "a fresh poll after SIGCONT (within 15 s)")
        assert exp.proc.poll() is None
    assert "past its 2.0s deadline" in exp.output()
    assert "its data is that old, so it is dropped" in exp.output()


def test_sigterm_exits_while_libvirtd_is_frozen(real_host: RealHost, tmp_path) -> None:
    """SIGTERM ends the exporter promptly and cleanly even while a libvirt call hangs."""
    pid = real_host.daemon.proc.pid
    exp = Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s"], log=tmp_path / "log")
    try:
        exp.wait_ready()
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(1.5)  # the next poll is now stuck inside libvirt
        exp.proc.send_signal(signal.SIGTERM)
        assert exp.proc.wait(timeout=5) == 0
    finally:
        os.kill(pid, signal.SIGCONT)
        exp.stop()
    assert "Traceback" not in exp.output()


def test_connecting_to_a_frozen_libvirtd(real_host: RealHost, tmp_path) -> None:
    """A libvirtd that accepts but never answers: the connect times out (libvirt_up 0) and SIGTERM still works."""
    pid = real_host.daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)
    exp = Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-timeout", "2s",
                    "--libvirt.reconnect-backoff-max", "1s"], log=tmp_path / "log")
    try:
        exp.wait_ready()
        metrics = exp.wait_for(lambda m: (m.get("libvirt_exporter_poll_errors_total", group="connection") or 0) >= 1,
                               timeout=15, what="a timed-out connection attempt")
        assert metrics.get("libvirt_up") == 0
        exp.proc.send_signal(signal.SIGTERM)
        assert exp.proc.wait(timeout=5) == 0
    finally:
        os.kill(pid, signal.SIGCONT)
        exp.stop()
    assert "did not answer within 2s" in exp.output()


def test_libvirtd_restart_under_running_exporter(real_host: RealHost, tmp_path) -> None:
    """libvirtd stopped and started: libvirt_up goes 0 then 1, domains come back, no crash."""
    with Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s",
                   "--libvirt.reconnect-backoff-max", "1s"], log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        real_host.daemon.stop()
        down = exp.wait_for(lambda m: m.get("libvirt_up") == 0, timeout=15, what="libvirt_up 0")
        assert not [n for n in down.names() if n.startswith("libvirt_domain")]
        time.sleep(2)  # a few failed reconnects while it is down
        real_host.daemon.start()
        back = exp.wait_for(lambda m: m.get("libvirt_up") == 1 and _domain_count(m) == 2, timeout=30,
                            what="libvirt_up 1 with both domains")
        assert back.get("libvirt_exporter_reconnects_total") >= 1
        assert exp.proc.poll() is None
    log = exp.output()
    assert log.count("lost the libvirt connection") == 1, log
    assert log.count("restored") == 1, log
    assert "Traceback" not in log


def test_snmp_shows_real_counters(real_host: RealHost, tmp_path) -> None:
    """Over SNMP, the QEMU domains appear with real block, interface and vCPU counters equal to /metrics."""
    require_tool("snmpbulkwalk", "snmp")
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}")
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1h"],
                  log=tmp_path / "log") as exp:
        metrics = exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        target = f"127.0.0.1:{port}"
        for name in real_host.domains:
            index = snmp.domain_index(target, name)
            block = snmp.values(snmp.ok("snmpwalk", *snmp.V2_ARGS, "-Oqn", "-OU", target,
                                        f"lvxBlockReadRequests.{index}"))
            (reads,) = block.values()
            assert int(reads) > 0
            assert int(reads) == metrics.get("libvirt_domain_block_stats_read_requests_total", domain=name,
                                             target_device="vda")
            nic = snmp.values(snmp.ok("snmpwalk", *snmp.V2_ARGS, "-Oqn", "-OU", target,
                                      f"lvxInterfaceReceiveBytes.{index}"))
            (rx,) = nic.values()
            tap = next(s["target_device"] for s in metrics.series("libvirt_domain_interface_stats_info")
                   if s["domain"] == name)
            assert int(rx) == metrics.get("libvirt_domain_interface_stats_receive_bytes_total", domain=name,
                                          target_device=tap)
            delay = snmp.values(snmp.ok("snmpwalk", *snmp.V2_ARGS, "-Oqn", "-OU", target, f"lvxVcpuDelay.{index}"))
            assert len(delay) == 2  # bulk-only statistic, present for both vCPUs
            state = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target, f"lvxDomainOperState.{index}")
            assert state.strip() == "1"


def _control_exporter(real_host: RealHost, tmp_path) -> tuple[Exporter, str]:
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}", snmp.OPERATOR_CONFIG)
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1h"],
                   log=tmp_path / "log")
    return exp, f"127.0.0.1:{port}"


def test_snmpset_controls_a_real_domain(real_host: RealHost, tmp_path) -> None:
    """v3 authPriv snmpset pauses, resumes, shuts down (ignored: no guest OS), powers off, starts and reboots QEMU."""
    name = real_host.domains[1]
    exp, target = _control_exporter(real_host, tmp_path)
    with exp:
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        index = snmp.domain_index(target, name)

        def set_state(value: str) -> None:
            result = snmp.run("snmpset", *snmp.OPERATOR_ARGS, "-t", "10", "-r", "0", target,
                              f"lvxDomainAdminState.{index}", "i", value)
            assert result.returncode == 0, result.stderr
            # A slow action answers inProgress after reply_within (1 s); wait for the outcome.
            assert snmp.wait_outcome(target, index) in ("1", "3")  # none (a no-op) or success

        def libvirt_state() -> str:
            return real_host.daemon.virsh("domstate", name).strip()

        try:
            set_state("paused")
            assert libvirt_state() == "paused"
            oper = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target, f"lvxDomainOperState.{index}")
            assert oper.strip() == "3"
            set_state("running")
            assert libvirt_state() == "running"
            set_state("shutdown")  # ACPI to a guest with no OS: accepted by libvirt, ignored by the guest
            assert snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target,
                           f"lvxDomainLastAction.{index}", f"lvxDomainLastActionResult.{index}").split() == ["5", "3"]
            time.sleep(2)
            assert libvirt_state() == "running"  # reported as done by libvirt, yet the guest kept running
            set_state("off")
            assert libvirt_state() == "shut off"
            set_state("running")
            assert libvirt_state() == "running"
            for action in ("reboot", "reset"):  # ACPI reboot (ignored by a guest with no OS), then a hard reset
                done = snmp.run("snmpset", *snmp.OPERATOR_ARGS, "-t", "10", "-r", "0", target,
                                f"lvxDomainAction.{index}", "i", action)
                assert done.returncode == 0, done.stderr
                assert libvirt_state() == "running"
        finally:
            real_host.daemon.virsh("start", name, check=False)
            real_host.daemon.virsh("resume", name, check=False)
        assert exp.scrape().get("libvirt_domain_state_code", domain=name) == 1
    assert exp.output().count(f"domain={name} action=") >= 6


def test_wrong_sets_leave_a_real_domain_untouched(real_host: RealHost, tmp_path) -> None:
    """On QEMU, every wrong SET gets its SNMP error and the domain keeps running."""
    name = real_host.domains[0]
    exp, target = _control_exporter(real_host, tmp_path)
    with exp:
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        index = snmp.domain_index(target, name)
        lvx = ".".join(map(str, mib_lvx.LVX_ROOT))
        cases = [
            (snmp.OPERATOR_ARGS, [f"{lvx}.1.2.1.27.{index}", "s", "off"], "wrongType"),
            (snmp.OPERATOR_ARGS, [f"{lvx}.1.2.1.27.{index}", "i", "0"], "wrongValue"),
            (snmp.OPERATOR_ARGS, [f"{lvx}.1.2.1.27.99999", "i", "4"], "noCreation"),
            (snmp.OPERATOR_ARGS, [f"{lvx}.1.1.14.0", "i", "12345", f"{lvx}.1.2.1.27.{index}", "i", "4"],
             "inconsistentValue"),
            (snmp.V2_ARGS, [f"{lvx}.1.2.1.27.{index}", "i", "4"], "noAccess"),
            (snmp.V3_ARGS, [f"{lvx}.1.2.1.27.{index}", "i", "4"], "noAccess|authorizationError"),
        ]
        for who, args, error in cases:
            result = snmp.run("snmpset", *who, "-t", "10", "-r", "0", target, *args, mibs=False)
            assert result.returncode != 0 and re.search(f"Reason: ({error})", result.stderr), (args, result.stderr)
            assert real_host.daemon.virsh("domstate", name).strip() == "running"
    assert exp.output().count("result=refused") == len(cases)


def test_real_libvirt_failure_is_commit_failed(real_host: RealHost, tmp_path) -> None:
    """Starting a domain whose disk is missing: commitFailed, with libvirt's own message."""
    broken = tmp_path / "broken.xml"
    broken.write_text(
        "<domain type='qemu'><name>lxe-broken</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><source file='{tmp_path}/missing.qcow2'/><target dev='vda' bus='virtio'/>"
        "<driver name='qemu' type='qcow2'/></disk></devices></domain>")
    real_host.daemon.virsh("define", str(broken))
    exp, target = _control_exporter(real_host, tmp_path)
    try:
        with exp:
            exp.wait_for(lambda m: _domain_count(m) == 3, what="three domains")
            index = snmp.domain_index(target, "lxe-broken")
            result = snmp.run("snmpset", *snmp.OPERATOR_ARGS, "-t", "10", "-r", "0", target,
                              f"lvxDomainAdminState.{index}", "i", "running")
            assert "Reason: commitFailed" in result.stderr, result.stderr
            error = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, f"lvxDomainLastActionError.{index}")
            assert "missing.qcow2" in error
        assert "start of domain lxe-broken failed:" in exp.output()
    finally:
        real_host.daemon.virsh("undefine", "lxe-broken", check=False)


def test_real_create_and_go_with_a_state_is_refused(real_host: RealHost, tmp_path) -> None:
    """libvirt-snmp's way of starting a domain, on QEMU (which, unlike the test driver, can start one paused).

    libvirtGuestRowStatus createAndGo with libvirtGuestState paused in the same request is inconsistentValue on
    the State varbind, as libvirt-snmp answers (libvirtGuestState_check_value judges it against the shut-off
    row before the commit could start anything), and QEMU stays off; createAndGo alone starts it running;
    State running on a running domain is inconsistentValue too.  The shut-off domain has its row meanwhile."""
    name = real_host.domains[1]
    guest = ".".join(str(b) for b in uuidlib.UUID(real_host.daemon.virsh("domuuid", name).strip()).bytes)
    state, row = (".".join(map(str, mib.BY_NAME[n].oid)) + "." + guest for n in ("libvirtGuestState",
                                                                                  "libvirtGuestRowStatus"))
    exp, target = _control_exporter(real_host, tmp_path)

    def put(*args: str) -> subprocess.CompletedProcess[str]:
        return snmp.run("snmpset", *snmp.OPERATOR_ARGS, "-On", "-t", "15", "-r", "0", target, *args, mibs=False)

    def read_until(wanted: str) -> str:
        return poll_until(lambda: snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, state, mibs=False).strip(),
                          lambda got: got == wanted, 30, every=0.2)

    def libvirt_state() -> str:
        return real_host.daemon.virsh("domstate", name).strip()

    with exp:
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        try:
            real_host.daemon.virsh("destroy", name)
            assert read_until("5") == "5"  # shutoff, in its row
            refused = put(row, "i", "4", state, "i", "3")
            assert "Reason: inconsistentValue" in refused.stderr and f"Failed object: .{state}\n" in refused.stderr, \
                refused.stderr
            time.sleep(1)
            assert libvirt_state() == "shut off"
            started = put(row, "i", "4")
            assert started.returncode == 0, started.stderr
            assert read_until("1") == "1"
            assert libvirt_state() == "running"
            same = put(state, "i", "1")
            assert "Reason: inconsistentValue" in same.stderr, same.stderr
            assert libvirt_state() == "running"
        finally:
            real_host.daemon.virsh("start", name, check=False)
            real_host.daemon.virsh("resume", name, check=False)
    log = exp.log_path.read_text() if exp.log_path else ""
    assert f"domain={name} action=start result=" in log and log.count("result=refused") == 2


def test_gets_answered_while_an_action_hangs(real_host: RealHost, tmp_path) -> None:
    """libvirtd frozen mid-SET: GETs still answer at once, the SET answers inProgress, the action finishes later."""
    name = real_host.domains[1]
    pid = real_host.daemon.proc.pid
    exp, target = _control_exporter(real_host, tmp_path)
    with exp:
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        index = snmp.domain_index(target, name)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            pending = subprocess.Popen(
                ["snmpset", "-M", snmp.MIB_DIRS, "-m", snmp.MODULES, *snmp.OPERATOR_ARGS, "-t", "8", "-r", "0", target,
                 f"lvxDomainAdminState.{index}", "i", "paused"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            time.sleep(0.2)
            t0 = time.monotonic()
            state = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target, f"lvxDomainOperState.{index}")
            assert time.monotonic() - t0 < 0.5 and state.strip() == "1"
            _out, err = pending.communicate(timeout=15)
            assert pending.returncode == 0, err
            assert 0.9 < time.monotonic() - started < 5  # answered after reply_within (1 s)
            result = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target, f"lvxDomainLastActionResult.{index}")
            assert result.strip() == "2"  # inProgress
        finally:
            os.kill(pid, signal.SIGCONT)
        assert snmp.wait_outcome(target, index, timeout=15) == "3"  # success once libvirtd woke up
        assert real_host.daemon.virsh("domstate", name).strip() == "paused"
        real_host.daemon.virsh("resume", name)
    assert f"domain={name} action=suspend result=in progress" in exp.output()


def test_real_lifecycle_notifications(real_host: RealHost, tmp_path) -> None:
    """On QEMU: pause, resume, power off and start arrive at snmptrapd as v2c trap, v2c inform and v3 trap/inform."""
    from tests.support.trapd import Trapd
    from tests.test_notify import ENGINE_ID, LVX, NOTIFIER_ID, WRITER, notify_config

    require_tool("snmptrapd", "snmptrapd")
    trapd = Trapd(tmp_path, 4, [f"-e {NOTIFIER_ID} trapper SHA-256 trapper-auth-key AES trapper-priv-key",
                                "informer SHA-512 informer-auth-key AES-256 informer-priv-key"])
    name = real_host.domains[1]
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}",
                            notify_config(trapd.ports))
    target = f"127.0.0.1:{port}"
    try:
        with Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--snmp.engine-id", ENGINE_ID],
                      log=tmp_path / "log") as exp:
            exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
            index = snmp.domain_index(target, name)
            for state in ("paused", "running", "off", "running"):
                result = snmp.run("snmpset", *WRITER, "-t", "15", "-r", "0", target,
                                  f"lvxDomainAdminState.{index}", "i", state)
                assert result.returncode == 0, result.stderr
                assert snmp.wait_outcome(target, index) in ("1", "3")
            # QEMU sends more events than the test driver (shutdown before stopped, resumed with started):
            # every one is passed on; the four the actions cause must all be there, on every target.
            expected = {f"{LVX}.0.3", f"{LVX}.0.4", f"{LVX}.0.2", f"{LVX}.0.1"}
            for p in trapd.ports:
                got = poll_until(lambda p=p: [r.trap_oid for r in trapd.received()
                                              if r.port == p and r.trap_oid.startswith(LVX)],
                                 lambda got: expected <= set(got), 30, every=0.2)
                assert expected <= set(got), (p, got)
                assert got.index(f"{LVX}.0.3") < got.index(f"{LVX}.0.2") < got.index(f"{LVX}.0.1"), got
    finally:
        trapd.stop()
        real_host.daemon.virsh("start", name, check=False)
        real_host.daemon.virsh("resume", name, check=False)


def test_inform_burst_survives_a_receiver_outage(real_host: RealHost, tmp_path) -> None:
    """200 lifecycle events, the inform receiver down for 10 s in the middle: every inform arrives, retried;
    a second target with a small queue drops its overflow, counts it and logs it once.

    The events come from libvirt's test driver served by the private libvirtd (a second connection suspends
    200 domains; the exporter's own connection gets the events), so they cross libvirt's RPC as in production.
    """
    require_tool("snmptrapd", "snmptrapd")
    from exporter.hostgen import HostShape, domain_xml
    from tests.support.trapd import Trapd

    uri = real_host.daemon.uri("test")
    conn = libvirt.open(uri)  # holds the shared test host while the test runs
    shape = HostShape(domains=200, disks=0, nics=0, vcpus=1, prefix="burst", mixed_states=False)
    domains = []
    receiver = Trapd(tmp_path / "trapd-1", 2, [])
    second: Trapd | None = None
    try:
        for i in range(shape.domains):
            dom = conn.defineXML(domain_xml(shape, i, with_runstate=False))
            dom.create()
            domains.append(dom)
        big, small = receiver.ports
        extra = f"""
[[snmp.notify]]
address = "127.0.0.1:{big}"
type = "inform"
community = "burst-community"

[[snmp.notify]]
address = "127.0.0.1:{small}"
type = "inform"
community = "burst-community"
queue_size = 20
"""
        port = snmp.free_udp_port()
        cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}", extra)
        with Exporter(["--config.file", str(cfg), "--libvirt.uri", uri, "--libvirt.poll-interval", "1h"],
                      log=tmp_path / "log") as exp:
            exp.wait_for(lambda m: (_domain_count(m) or 0) >= 200, what="200 domains")
            for dom in domains[:100]:
                dom.suspend()
            receiver.wait_for(200, timeout=20)  # 100 per target
            receiver.stop()
            down_at = time.monotonic()
            for dom in domains[100:]:
                dom.suspend()
            time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
            second = Trapd(tmp_path / "trapd-2", 2, [], port_numbers=[big, small])

            def suspended(port: int) -> set[str]:
                got = [r for t in (receiver, second) for r in t.received() if r.port == port]
                return set(re.findall(r'"(burst\d+)"', "\n".join(r.text for r in got)))

            poll_until(lambda: len(suspended(big)), lambda arrived: arrived >= 200, 60, every=0.5)
            assert len(suspended(big)) == 200, f"{len(suspended(big))} of 200 informs arrived"
            target = f"v2c-inform@127.0.0.1:{small}"
            metrics = exp.wait_for(lambda m: m.get("libvirt_exporter_notification_queue_length", target=target) == 0,
                                   timeout=60, what="the small queue to drain")
            big_target = f"v2c-inform@127.0.0.1:{big}"
            assert metrics.get("libvirt_exporter_notifications_sent_total", target=big_target) >= 200
            assert metrics.get("libvirt_exporter_notifications_dropped_total", target=big_target) == 0
            assert metrics.get("libvirt_exporter_notification_retries_total", target=big_target) >= 1
            sent = metrics.get("libvirt_exporter_notifications_sent_total", target=target)
            dropped = metrics.get("libvirt_exporter_notifications_dropped_total", target=target)
            assert dropped >= 50 and sent + dropped >= 200, (sent, dropped)
            assert len(suspended(small)) == sent  # every inform it counted as delivered arrived, once per domain
        log = exp.log_path.read_text()
        # logged once per overflow (one in each half of the burst at most), never once per dropped inform
        assert 1 <= log.count(f"notification queue for {target} is full") <= 2
        assert "Traceback" not in log
    finally:
        receiver.stop()
        if second is not None:
            second.stop()
        for dom in domains:
            try:
                dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
        conn.close()


def _fds_and_threads(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


class _Load:
    """Scrapers and SNMP walkers in threads, recording every failure."""

    def __init__(self, exp: Exporter, target: str, scrapers: int = 4, walkers: int = 2) -> None:
        import threading

        self._stop = threading.Event()
        self.errors: list[str] = []
        self.done = 0
        self._threads = [threading.Thread(target=self._scrape, args=(exp,), daemon=True) for _ in range(scrapers)]
        self._threads += [threading.Thread(target=self._walk, args=(target,), daemon=True) for _ in range(walkers)]

    def _scrape(self, exp: Exporter) -> None:
        from tests.support.process import http_get

        while not self._stop.is_set():
            try:
                status, _ = http_get(exp.url + "/metrics", timeout=10)
                if status != 200:
                    self.errors.append(f"scrape {status}")
            except OSError as exc:
                self.errors.append(f"scrape {exc}")
            self.done += 1

    def _walk(self, target: str) -> None:
        while not self._stop.is_set():
            result = snmp.run("snmpbulkwalk", *snmp.V2_ARGS, "-On", "-t", "5", "-r", "1", target,
                              ".".join(map(str, mib_lvx.LVX_ROOT)), mibs=False)
            if result.returncode != 0:
                self.errors.append(f"walk: {result.stderr.strip()}")
            self.done += 1

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_libvirtd_killed_under_load(real_host: RealHost, tmp_path) -> None:
    """SIGKILL of libvirtd while scrapes and walks run: served throughout, libvirt_up 0 and lvxLibvirtConnection
    down(2) meanwhile, reconnected within two poll intervals of libvirtd answering, no leaked fds or threads."""
    require_tool("snmpbulkwalk", "snmp")
    interval = 2.0
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", target)
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval",
                   f"{interval}s", "--libvirt.reconnect-backoff-max", "1s"], log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains")
        with _Load(exp, target) as warmup:  # every kind of request once, so lazily made things exist
            time.sleep(2)
        assert warmup.errors == [] and warmup.done > 4
        time.sleep(1)
        before = _fds_and_threads(exp.proc.pid)
        connection = ".".join(map(str, mib.BY_NAME["lvxLibvirtConnection"].oid)) + ".0"
        with _Load(exp, target) as load:
            real_host.daemon.stop(signal.SIGKILL)
            exp.wait_for(lambda m: m.get("libvirt_up") == 0, timeout=15, what="libvirt_up 0")
            down = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, connection, mibs=False)
            assert down.strip() == "2", down
            time.sleep(3)  # failed reconnects meanwhile
            real_host.daemon.start()
            answering = time.monotonic()
            exp.wait_for(lambda m: m.get("libvirt_up") == 1 and _domain_count(m) == 2, timeout=30,
                         what="libvirt_up 1 with both domains")
            took = time.monotonic() - answering
            up = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, connection, mibs=False)
            assert up.strip() == "1", up
            time.sleep(1)
        assert took <= 2 * interval, f"reconnected {took:.1f}s after libvirtd answered"
        assert load.errors == [], load.errors[:5]
        assert load.done > 10
        time.sleep(2)  # let the last request threads end
        after = _fds_and_threads(exp.proc.pid)
        assert after[0] <= before[0], f"file descriptors {before[0]} -> {after[0]}"
        assert after[1] <= before[1], f"threads {before[1]} -> {after[1]}"
        assert exp.proc.poll() is None
    log = exp.output()
    assert log.count("lost the libvirt connection") == 1 and "Traceback" not in log, log


def test_new_qemu_domain_is_served_at_its_events(real_host: RealHost, tmp_path) -> None:
    """A QEMU domain defined between polls (the next an hour away) is in /metrics and the SNMP table at its
    defined event, shut off and with its definition, before any poll; started, it is running in both;
    destroyed and undefined, it is gone from both."""
    from tests.conftest import _boot_disk, _real_domain_xml

    require_tool("snmpget", "snmp")
    tmp_path.chmod(0o755)
    name = "lxfresh"
    disk = tmp_path / f"{name}.qcow2"
    _boot_disk(tmp_path / f"{name}.raw", disk)
    xml = tmp_path / f"{name}.xml"
    # As Nova defines it: its metadata, and a volume's serial and cache mode on the disk; and a site's own
    # element beside Nova's, which the config's [metadata] section maps to labels.
    nova = ('<metadata><nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">'
            "<nova:name>fresh-server</nova:name><nova:flavor name='m1.tiny'/><nova:owner>"
            "<nova:user uuid='u-9'>carol</nova:user><nova:project uuid='p-9'>ops</nova:project></nova:owner>"
            f"</nova:instance><site:owner xmlns:site='{hostgen.SITE_NAMESPACE}' team='blue'>"
            "<site:cost>cc-9</site:cost></site:owner></metadata>")
    xml.write_text(_real_domain_xml(name, disk, f"lxf{os.getpid() % 10000}", real_host.kvm)
                   .replace(f"<name>{name}</name>", f"<name>{name}</name>{nova}")
                   .replace("<driver name='qemu' type='qcow2'/>", "<driver name='qemu' type='qcow2' cache='none'/>")
                   .replace("<target dev='vda' bus='virtio'/>",
                            "<target dev='vda' bus='virtio'/><serial>vol-9</serial>"),
                   encoding="utf-8")
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", target, extra=SITE_TOML)

    def snmp_state() -> str | None:
        found = snmp.run("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target, f"lvxDomainNameOperState.'{name}'")
        text = found.stdout.strip()
        return None if found.returncode != 0 or "No Such" in text else text

    with Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1h"],
                  log=tmp_path / "log") as exp:
        polled_at = exp.wait_for(lambda m: _domain_count(m) == 2, what="both domains").get(
            "libvirt_exporter_snapshot_timestamp_seconds")
        try:
            real_host.daemon.virsh("define", str(xml))
            defined = exp.wait_for(lambda m: m.get("libvirt_domain_info_maximum_memory_bytes", domain=name)
                                   == 128 << 20, timeout=10, what="the defined domain with its definition")
            assert defined.get("libvirt_exporter_snapshot_timestamp_seconds") == polled_at  # no poll: the event
            assert defined.get("libvirt_domain_state_code", domain=name) == 5
            assert defined.get("libvirt_domain_vcpu_maximum", domain=name) == 2
            # The definition read at the event carries what Nova wrote, as libvirt gave it back.
            (info,) = [s for s in defined.series("libvirt_domain_openstack_info") if s["domain"] == name]
            assert (info["instance_name"], info["flavor_name"], info["user_name"], info["project_id"]) == (
                "fresh-server", "m1.tiny", "carol", "p-9")
            (vda,) = [s for s in defined.series("libvirt_domain_block_stats_info") if s["domain"] == name]
            assert (vda["serial"], vda["driver_cache"]) == ("vol-9", "none")
            (site,) = [s for s in defined.series("libvirt_domain_metadata_info") if s["domain"] == name]
            assert (site["team"], site["cost_centre"]) == ("blue", "cc-9")
            assert wait_until(snmp_state, 10, "the defined domain in the SNMP table") == "5"
            real_host.daemon.virsh("start", name)
            exp.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=name) == 1, timeout=10,
                         what="the started domain running")
            wait_until(lambda: snmp_state() == "1", 10, "running in the SNMP table")
        finally:
            real_host.daemon.virsh("destroy", name, check=False)
            real_host.daemon.virsh("undefine", name, check=False)
        exp.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=name) is None
                     and _domain_count(m) == 2, timeout=15, what="the domain gone")
        wait_until(lambda: snmp_state() is None, 10, "gone from the SNMP table")
