"""One hung QEMU costs its own freshness and nothing else (real tier).

A private libvirtd runs eight TCG domains whose boot sector keeps reading
its disk, so CPU time and block counters move at every poll.  One QEMU
process is frozen with SIGSTOP, which hangs every monitor command sent to it
(a real hang: no mock).  The other domains must stay fresh at every poll,
the frozen one must be named, and everything must come back after SIGCONT.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _READ_LOOP, RealHost, require_tool, start_real_host
from tests.support import snmp
from tests.support.process import Exporter, Metrics

pytestmark = pytest.mark.realqemu

INTERVAL = 3.0  # poll interval (s)
DOMAIN_TIMEOUT = 1.0
COUNT = 8


@pytest.fixture(scope="module")
def tcg_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHost]:
    """Eight running TCG domains (2 vCPUs, a qcow2 disk read 18 times a second, a tap, a balloon)."""
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
                    "--libvirt.domain-timeout", f"{DOMAIN_TIMEOUT:g}s", "--log.level", "debug"], log=tmp_path / "log")
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
        assert back.get("libvirt_domain_stats_age_seconds", domain=frozen) < 2 * INTERVAL
        assert back.get("libvirt_exporter_stuck_calls", group="domain") == 0
        assert exp.proc.poll() is None
    log = (tmp_path / "log").read_text()
    assert log.count(f"domain {frozen} has not answered") == 1, log
    assert log.count(f"domain {frozen} answered again") == 1, log
    assert "Traceback" not in log
