"""One hung QEMU costs its own freshness and nothing else (real tier).

A private libvirtd runs eight TCG domains whose boot sector reads its disk
about once a second, so CPU time and block counters move at every poll.  One QEMU
process is frozen with SIGSTOP, which hangs every monitor command sent to it
(a real hang: no mock).  The other domains must stay fresh at every poll,
the frozen one must be named, and everything must come back after SIGCONT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import _READ_LOOP, RealHost, _boot_disk, _real_domain_xml, require_tool, start_real_host
from tests.support import snmp
from tests.support.process import Exporter, Metrics

pytestmark = pytest.mark.realqemu

INTERVAL = 3.0  # poll interval (s)
DOMAIN_TIMEOUT = 1.0
COUNT = 8


@pytest.fixture(scope="module")
def tcg_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHost]:
    """Eight running TCG domains (2 vCPUs, a qcow2 disk read about once a second, a tap, a balloon)."""
    host = start_real_host(tmp_path_factory.mktemp("stuck"), "lxe-stuck", COUNT, kvm=False, code=_READ_LOOP)
    yield host
    host.daemon.shutdown()


def _qemu_pid(host: RealHost, name: str) -> int:
    return int((host.daemon.root / "run" / "qemu" / f"{name}.pid").read_text().strip())


def _exporter(host: RealHost, tmp_path: Path, extra_config: str = "") -> tuple[Exporter, str]:
    port = snmp.free_udp_port()
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", f"127.0.0.1:{port}", extra_config)
    exp = Exporter(["--config.file", str(cfg), "--libvirt.uri", host.uri,
                    "--libvirt.poll-interval", f"{INTERVAL:g}s", "--libvirt.poll-timeout", "6s",
                    "--libvirt.domain-timeout", f"{DOMAIN_TIMEOUT:g}s"], log=tmp_path / "log")
    return exp, f"127.0.0.1:{port}"


def _all_fresh(m: Metrics, names: tuple[str, ...]) -> bool:
    return all(m.get("libvirt_domain_block_stats_read_requests_total", domain=n, target_device="vda") is not None
               and m.get("libvirt_domain_timed_out", domain=n) == 0 for n in names)


def _counters(m: Metrics, name: str) -> tuple[float, float]:
    cpu = m.get("libvirt_domain_info_cpu_time_seconds_total", domain=name)
    reads = m.get("libvirt_domain_block_stats_read_requests_total", domain=name, target_device="vda")
    assert cpu is not None and reads is not None, f"{name} lost its counters"
    return cpu, reads


def test_one_frozen_qemu_leaves_the_others_fresh(tcg_host: RealHost, tmp_path: Path) -> None:
    """SIGSTOP one QEMU for over three polls: the other seven advance at every poll, the frozen one is flagged
    in /metrics and over SNMP with its state kept, another client is not delayed, and SIGCONT clears it all."""
    require_tool("snmpget", "snmp")
    frozen, healthy = tcg_host.domains[0], tcg_host.domains[1:]
    pid = _qemu_pid(tcg_host, frozen)
    exp, target = _exporter(tcg_host, tmp_path)
    with exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == COUNT and _all_fresh(m, tcg_host.domains),
                     timeout=60, what="all eight domains with block counters")
        index = snmp.domain_index(target, frozen)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            flagged = exp.wait_for(lambda m: m.get("libvirt_domain_timed_out", domain=frozen) == 1,
                                   timeout=4 * INTERVAL, what="the frozen domain to be flagged")
            assert flagged.get("libvirt_domain_state_code", domain=frozen) == 1  # still listed, as running
            assert flagged.get("libvirt_domain_block_stats_read_requests_total", domain=frozen,
                               target_device="vda") is None  # its old counters are not served as fresh
            assert flagged.get("libvirt_domain_memory_stats_rss_bytes", domain=frozen) is None
            assert flagged.get("libvirt_domain_info_cpu_time_seconds_total", domain=frozen) is None
            assert flagged.get("libvirt_exporter_stuck_calls", group="domain") == 1
            assert flagged.get("libvirt_exporter_poll_stalled") == 0

            # Over SNMP: same state, flagged, its age growing; the healthy rows are not flagged.
            row = snmp.values(snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqn", "-Oe", target,
                                      f"lvxDomainOperState.{index}", f"lvxDomainStatsTimedOut.{index}",
                                      f"lvxDomainStatsAge.{index}", f"lvxBlockReadRequests.{index}.1"))
            oper, timed_out, age, reads = row.values()
            assert (oper, timed_out) == ("1", "1") and int(age.split()[0]) >= 1, row
            assert "No Such Instance" in reads, row
            healthy_index = snmp.domain_index(target, healthy[0])
            assert snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target,
                           f"lvxDomainStatsTimedOut.{healthy_index}").strip() == "2"

            # Another libvirt client asking for a healthy domain is not held up by us.
            t0 = time.monotonic()
            tcg_host.daemon.virsh("domstats", healthy[0])
            assert time.monotonic() - t0 < 5

            # At every poll while frozen (over three polls): each healthy domain's counters advance and the
            # served snapshot is never older than two poll intervals.
            previous = flagged
            polls = 0
            while polls < 4:
                sample = exp.scrape()
                age_now = sample.get("libvirt_exporter_snapshot_age_seconds")
                assert age_now is not None and age_now < 2 * INTERVAL, f"snapshot {age_now}s old"
                ts = sample.get("libvirt_exporter_snapshot_timestamp_seconds")
                if ts != previous.get("libvirt_exporter_snapshot_timestamp_seconds"):
                    for name in healthy:
                        cpu0, reads0 = _counters(previous, name)
                        cpu1, reads1 = _counters(sample, name)
                        assert cpu1 > cpu0 and reads1 > reads0, f"{name} did not advance: {cpu0}->{cpu1}, " \
                                                                f"{reads0}->{reads1}"
                        assert sample.get("libvirt_domain_timed_out", domain=name) == 0
                    assert sample.get("libvirt_domain_timed_out", domain=frozen) == 1
                    assert sample.get("libvirt_domains_number") == COUNT
                    previous = sample
                    polls += 1
                time.sleep(0.2)
            assert time.monotonic() - stopped_at > 3 * INTERVAL
            stats_age = previous.get("libvirt_domain_stats_age_seconds", domain=frozen)
            assert stats_age is not None and stats_age > 3 * INTERVAL
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        back = exp.wait_for(lambda m: m.get("libvirt_domain_timed_out", domain=frozen) == 0
                            and m.get("libvirt_domain_block_stats_read_requests_total", domain=frozen,
                                      target_device="vda") is not None,
                            timeout=2 * INTERVAL + 2 * DOMAIN_TIMEOUT + 4, what="the thawed domain to be fresh")
        assert time.monotonic() - resumed < 2 * INTERVAL + 2 * DOMAIN_TIMEOUT + 4
        assert back.get("libvirt_domain_stats_age_seconds", domain=frozen) is None  # no longer behind the snapshot
        assert back.get("libvirt_domain_stats_timestamp_seconds", domain=frozen) >= \
            back.get("libvirt_exporter_snapshot_timestamp_seconds")
        assert back.get("libvirt_exporter_stuck_calls", group="domain") == 0
        assert exp.proc.poll() is None
    log = (tmp_path / "log").read_text()
    assert log.count(f"domain {frozen} has not answered") == 1, log
    assert log.count(f"domain {frozen} answers again") == 1, log
    assert "Traceback" not in log


def test_started_while_a_qemu_is_frozen(tcg_host: RealHost, tmp_path: Path) -> None:
    """An exporter that starts (or reconnects: the same first poll) while a QEMU is frozen: its first poll finds
    which stats groups the driver has without asking any running domain, so it completes; the seven others are
    served with their counters and the frozen one is flagged. (Before, that probe asked the first domain listed
    for every group, and hung on it for as long as it stayed frozen.)"""
    import libvirt

    conn = libvirt.openReadOnly(tcg_host.uri)
    try:
        frozen = conn.listAllDomains(0)[0].name()  # the one libvirt lists first: the probe used to ask it
    finally:
        conn.close()
    healthy = tuple(name for name in tcg_host.domains if name != frozen)
    pid = _qemu_pid(tcg_host, frozen)
    os.kill(pid, signal.SIGSTOP)
    try:
        exp, _ = _exporter(tcg_host, tmp_path)
        with exp:
            first = exp.wait_for(lambda m: m.get("libvirt_domains_number") == COUNT
                                 and m.get("libvirt_domain_timed_out", domain=frozen) == 1,
                                 timeout=6 * INTERVAL, what="the first poll, with the frozen domain flagged")
            assert _all_fresh(first, healthy)
            assert first.get("libvirt_exporter_poll_stalled") == 0
    finally:
        os.kill(pid, signal.SIGCONT)


def test_control_around_a_frozen_domain(tcg_host: RealHost, tmp_path: Path) -> None:
    """An action hanging on a frozen QEMU holds up nobody: SETs on a healthy domain succeed meanwhile; once the
    domain is flagged, a SET on it is refused at once (resourceUnavailable), except a hard power-off, which works."""
    require_tool("snmpset", "snmp")
    frozen, healthy = tcg_host.domains[2], tcg_host.domains[3]
    pid = _qemu_pid(tcg_host, frozen)
    exp, target = _exporter(tcg_host, tmp_path, snmp.OPERATOR_CONFIG.replace('reply_within = "1s"',
                                                                             'reply_within = "1s"\ntimeout = "15s"'))

    def snmpset(index: str, value: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        result = snmp.run("snmpset", *snmp.OPERATOR_ARGS, "-t", "10", "-r", "0", target,
                          f"lvxDomainAdminState.{index}", "i", value)
        return result, time.monotonic() - t0

    with exp:
        exp.wait_for(lambda m: _all_fresh(m, tcg_host.domains), timeout=60, what="all domains fresh")
        frozen_index, healthy_index = snmp.domain_index(target, frozen), snmp.domain_index(target, healthy)
        os.kill(pid, signal.SIGSTOP)
        try:
            # Asked before the exporter notices: the suspend hangs in libvirt and answers in progress.
            hung, _ = snmpset(frozen_index, "paused")
            assert hung.returncode == 0, hung.stderr
            assert snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-Oe", target,
                           f"lvxDomainLastActionResult.{frozen_index}").strip() == "2"  # inProgress
            # Meanwhile the healthy domain obeys at once, both ways.
            for value, state in (("paused", "paused"), ("running", "running")):
                done, took = snmpset(healthy_index, value)
                assert done.returncode == 0 and took < 5, (done.stderr, took)
                assert snmp.wait_outcome(target, healthy_index) == "3"
                assert tcg_host.daemon.virsh("domstate", healthy).strip() == state
            # control.timeout (15 s; a destroy of a stopped QEMU takes 11 s) gives up on the hung suspend.
            assert snmp.wait_outcome(target, frozen_index, timeout=30) == "4"  # failed
            exp.wait_for(lambda m: m.get("libvirt_domain_timed_out", domain=frozen) == 1, timeout=4 * INTERVAL,
                         what="the frozen domain to be flagged")
            refused, took = snmpset(frozen_index, "paused")
            assert refused.returncode != 0 and "resourceUnavailable" in refused.stderr and took < 3, \
                (refused.stderr, took)
            assert snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, "lvxDomainCount.0").split()[0] == str(COUNT)
            # A hard power-off still works (libvirt kills the stopped process).
            off, _ = snmpset(frozen_index, "off")
            assert off.returncode == 0, off.stderr
            assert snmp.wait_outcome(target, frozen_index, timeout=40) == "3"
            assert tcg_host.daemon.virsh("domstate", frozen).strip() == "shut off"
            exp.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=frozen) == 5
                         and m.get("libvirt_domain_timed_out", domain=frozen) == 0, timeout=4 * INTERVAL,
                         what="the powered-off domain shown shut off, no longer flagged")
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # powered off
            tcg_host.daemon.virsh("start", frozen, check=False)
    log = (tmp_path / "log").read_text()
    assert f"SET refused: domain {frozen} is not answering" in log, log
    assert "Traceback" not in log


@dataclass
class _Fuse:
    bindfs_pid: int
    mount: Path
    pool: str
    domain: str


def _fuse_daemon(mount: Path) -> int:
    """The bindfs process serving ``mount`` (it runs in the private libvirtd's mount namespace)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and args[0].endswith(b"bindfs") and str(mount).encode() in args:
                return int(proc.name)
    raise AssertionError(f"no bindfs process serves {mount}")


@pytest.fixture
def fuse_storage(tcg_host: RealHost, tmp_path: Path) -> Iterator[_Fuse]:
    """A FUSE mount (bindfs) inside the private libvirtd's mount namespace, holding a dir storage pool and the
    disk of one more running domain.  Stopping bindfs makes both hang for real, like a dead NFS server."""
    require_tool("bindfs", "bindfs")
    require_tool("nsenter", "util-linux")
    daemon = tcg_host.daemon
    netns = ["nsenter", "-t", (daemon.root / "run" / "libvirtd.pid").read_text().strip(), "-m"]
    src, mount = tmp_path / "fuse-src", tmp_path / "fuse-mnt"
    src.mkdir()
    mount.mkdir()
    _boot_disk(tmp_path / "fuse.raw", src / "lxe-fuse.qcow2", _READ_LOOP)
    subprocess.run([*netns, "bindfs", str(src), str(mount)], check=True, timeout=30)
    fuse = _Fuse(_fuse_daemon(mount), mount, "lxe-fuse-pool", "lxe-fuse")
    pool_xml, dom_xml = tmp_path / "pool.xml", tmp_path / "dom.xml"
    pool_xml.write_text(f"<pool type='dir'><name>{fuse.pool}</name><target><path>{mount}</path></target></pool>")
    dom_xml.write_text(_real_domain_xml(fuse.domain, mount / "lxe-fuse.qcow2", f"lxfu{os.getpid() % 10000}", False))
    try:
        daemon.virsh("pool-define", str(pool_xml))
        daemon.virsh("pool-start", fuse.pool)
        daemon.virsh("define", str(dom_xml))
        daemon.virsh("start", fuse.domain)
        yield fuse
    finally:
        try:
            os.kill(fuse.bindfs_pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        for args in (("destroy", fuse.domain), ("undefine", fuse.domain), ("pool-destroy", fuse.pool),
                     ("pool-undefine", fuse.pool)):
            daemon.virsh(*args, check=False)
        subprocess.run([*netns, "umount", str(mount)], check=False, timeout=30)


def test_hung_storage_costs_only_its_own_freshness(tcg_host: RealHost, fuse_storage: _Fuse, tmp_path: Path) -> None:
    """The FUSE daemon under a pool and a domain's disk stopped (with a pool refresh in flight): the pool is left
    out and reported stuck, the domain on it is flagged, the eight others stay fresh at every poll; all recover."""
    fuse = fuse_storage
    healthy = tcg_host.domains
    exp, _ = _exporter(tcg_host, tmp_path)
    with exp:
        exp.wait_for(lambda m: _all_fresh(m, (*healthy, fuse.domain))
                     and m.get("libvirt_storage_pool_state", storage_pool=fuse.pool) == 2,
                     timeout=60, what="all nine domains fresh and the FUSE pool running")
        os.kill(fuse.bindfs_pid, signal.SIGSTOP)
        refresh = subprocess.Popen(["virsh", "-c", tcg_host.uri, "pool-refresh", fuse.pool],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            stuck = exp.wait_for(lambda m: m.get("libvirt_domain_timed_out", domain=fuse.domain) == 1
                                 and m.get("libvirt_exporter_stuck_calls", group="pool") == 1,
                                 timeout=6 * INTERVAL, what="the FUSE domain flagged and the pool call stuck")
            assert stuck.get("libvirt_storage_pool_state", storage_pool=fuse.pool) is None
            assert stuck.get("libvirt_domain_state_code", domain=fuse.domain) == 1
            previous, polls = stuck, 0
            while polls < 3:
                sample = exp.scrape()
                assert sample.get("libvirt_exporter_snapshot_age_seconds") < 2 * INTERVAL
                if sample.get("libvirt_exporter_snapshot_timestamp_seconds") != \
                        previous.get("libvirt_exporter_snapshot_timestamp_seconds"):
                    for name in healthy:
                        cpu0, reads0 = _counters(previous, name)
                        cpu1, reads1 = _counters(sample, name)
                        assert cpu1 > cpu0 and reads1 > reads0, f"{name} did not advance"
                    assert sample.get("libvirt_domain_timed_out", domain=fuse.domain) == 1
                    assert sample.get("libvirt_exporter_stuck_calls", group="pool") == 1
                    previous, polls = sample, polls + 1
                time.sleep(0.2)
        finally:
            os.kill(fuse.bindfs_pid, signal.SIGCONT)
            refresh.wait(timeout=60)
        exp.wait_for(lambda m: _all_fresh(m, (*healthy, fuse.domain))
                     and m.get("libvirt_storage_pool_state", storage_pool=fuse.pool) == 2
                     and m.get("libvirt_exporter_stuck_calls", group="pool") == 0,
                     timeout=4 * INTERVAL + 4, what="the pool and the FUSE domain back")
    log = (tmp_path / "log").read_text()
    assert log.count(f"the pool call of {tcg_host.uri} has not answered") == 1, log
    assert log.count(f"the pool call of {tcg_host.uri} returned after") == 1, log
    assert log.count(f"domain {fuse.domain} has not answered") == 1, log
    assert "Traceback" not in log
