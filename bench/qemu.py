"""Benchmark: a real QEMU compute node of N TCG domains (default 60), ours against the floor and kumina's.

Each TCG domain has 128 MiB, 2 vCPUs, a boot disk that it reads about once a
second (so counters move), an empty second disk, a tap NIC and a balloon,
behind a private libvirtd.  Measured in one go:

* **poll**: our poll of every group against the floor, one bare
  ``getAllDomainStats`` of the same groups; with the vCPU placement asked
  every poll (``libvirt.vcpu_placement_every = 1``) and at the default (one
  poll in 4).  The three alternate, 8 times; medians.
* **scrape**: ``/metrics`` latency of our exporter (which serves its last
  poll) and of kumina's (which asks libvirt on every scrape); peak RSS of both.
* **SNMP**: a bulk walk of our MIB (varbinds/s) and a GETNEXT walk of one
  column (PDUs/s), SNMPv2c and SNMPv3 authPriv (SHA-256, AES).
* **SIGTERM to exit**: ours when idle, and ours and kumina's while one
  domain's QEMU is SIGSTOPped and a libvirt call to it hangs.

The stuck-domain case over time, side by side with kumina, is
``bench/stuck.py`` (``STUCK.md``), on a host of the same shape.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import libvirt

from bench.measure import (
    LVX,
    V3_USER_TOML,
    p95,
    peak_rss_mb,
    ratio,
    scrape_times,
    snmp_rates,
    start_kumina,
    timed,
    v3_rates,
)
from exporter.snapshot import ALL_GROUPS
from exporter.source import Source
from tests.conftest import _READ_LOOP, start_real_host
from tests.support.process import Exporter
from tests.support.snmp import free_udp_port

PREFIX = "lxq-"
GUEST_MIB = 128
#: The groups we export, as one bulk call: the floor of any poll.
ALL_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
             | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK
             | libvirt.VIR_DOMAIN_STATS_PERF | libvirt.VIR_DOMAIN_STATS_IOTHREAD | libvirt.VIR_DOMAIN_STATS_DIRTYRATE)


@dataclass
class FleetRow:
    domains: int
    wanted: int  # asked for; fewer when the machine lacks the memory
    kvm: bool
    floor_s: float = 0.0
    poll_every_s: float = 0.0  # vCPU placement asked every poll
    poll_default_s: float = 0.0  # at the default, one poll in 4
    scrape_median: float = 0.0
    scrape_p95: float = 0.0
    kumina_median: float | None = None
    kumina_p95: float | None = None
    bulk_rate: float = 0.0
    varbinds: int = 0
    getnext_rate: float = 0.0
    v3_bulk_rate: float = 0.0
    v3_getnext_rate: float = 0.0
    rss_mb: float = 0.0
    kumina_rss_mb: float | None = None
    term_idle_s: float = 0.0
    term_stuck_s: float = 0.0
    kumina_term_stuck_s: float | None = None


def affordable(wanted: int) -> int:
    """How many guests of GUEST_MIB fit in half of the memory available now (at least 2)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return max(2, min(wanted, int(line.split()[1]) // 1024 // 2 // GUEST_MIB))
    return wanted


def sigterm_seconds(proc: subprocess.Popen[bytes]) -> float:
    """From SIGTERM to the process's exit."""
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return time.perf_counter() - t0


def _exporter(uri: str, work: Path, name: str) -> tuple[Exporter, str]:
    port = free_udp_port()
    config = work / f"{name}.toml"
    config.write_text(f'[state]\ndirectory = "{work / name}"\n[snmp]\nlisten_address = ["127.0.0.1:{port}"]\n'
                      '[[snmp.communities]]\nname = "bench"\n' + V3_USER_TOML)
    config.chmod(0o600)
    exp = Exporter(["--config.file", str(config), "--libvirt.uri", uri, "--libvirt.poll-interval", "5s"],
                   log=work / f"{name}.log")
    exp.wait_ready(timeout=120)
    return exp, f"127.0.0.1:{port}"


def _polls(uri: str, row: FleetRow, rounds: int = 8) -> None:
    conn = libvirt.openReadOnly(uri)
    every, default = Source(uri, placement_every=1), Source(uri, placement_every=4)
    every.open()
    default.open()
    try:
        def bare() -> None:
            conn.getAllDomainStats(ALL_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)

        bare()
        every.poll(ALL_GROUPS)
        default.poll(ALL_GROUPS)  # warm: definitions parsed, every placement asked once
        floor, ours_every, ours_default = [], [], []
        for _ in range(rounds):
            floor.append(timed(bare)[0])
            ours_every.append(timed(lambda: every.poll(ALL_GROUPS))[0])
            ours_default.append(timed(lambda: default.poll(ALL_GROUPS))[0])
        row.floor_s = statistics.median(floor)
        row.poll_every_s = statistics.median(ours_every)
        row.poll_default_s = statistics.median(ours_default)
    finally:
        every.close()
        default.close()
        conn.close()


def fleet(work: Path, wanted: int, kumina: str | None, scrapes: int = 20) -> FleetRow:
    n = affordable(wanted)
    root = work / "fleet"
    root.mkdir()
    host = start_real_host(root, PREFIX, n, kvm=False, code=_READ_LOOP, data_disk=True)  # TCG, as stuck.py
    row = FleetRow(n, wanted, host.kvm)
    try:
        _polls(host.uri, row)
        exp, target = _exporter(host.uri, work, "fleet-ours")
        try:
            exp.wait_for(lambda m: m.get("libvirt_domains_number") == n, timeout=120, what=f"{n} domains")
            times, _ = scrape_times(exp.url + "/metrics", scrapes)
            row.scrape_median, row.scrape_p95 = statistics.median(times), p95(times)
            row.bulk_rate, row.varbinds, row.getnext_rate = snmp_rates(target, "bench", LVX, f"{LVX}.1.2.1.2")
            row.v3_bulk_rate, varbinds, row.v3_getnext_rate = v3_rates(target, LVX, f"{LVX}.1.2.1.2")
            if varbinds != row.varbinds:
                raise RuntimeError(f"the v3 walk gave {varbinds} varbinds, the v2c walk {row.varbinds}")
            row.rss_mb = peak_rss_mb(exp.proc.pid)
            row.term_idle_s = sigterm_seconds(exp.proc)
        finally:
            exp.stop()
        if kumina:
            proc, url = start_kumina(kumina, host.uri)
            try:
                times, _ = scrape_times(url + "/metrics", scrapes)
                row.kumina_median, row.kumina_p95 = statistics.median(times), p95(times)
                row.kumina_rss_mb = peak_rss_mb(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        _stuck_exits(host.daemon.root, host.uri, work, kumina, row)
    finally:
        host.daemon.shutdown()
    return row


def _stuck_exits(root: Path, uri: str, work: Path, kumina: str | None, row: FleetRow) -> None:
    """SIGTERM while a libvirt call hangs on a SIGSTOPped QEMU: ours once it reports the domain timed out,
    kumina's while a scrape of it hangs."""
    frozen = int((root / "run" / "qemu" / f"{PREFIX}0.pid").read_text().strip())
    os.kill(frozen, signal.SIGSTOP)
    try:
        exp, _ = _exporter(uri, work, "fleet-stuck")
        try:
            try:
                exp.wait_for(lambda m: m.get("libvirt_domain_timed_out", domain=f"{PREFIX}0") == 1, timeout=120,
                             what=f"{PREFIX}0 timed out")
            except AssertionError as exc:
                raise RuntimeError(f"{exc}; the exporter's log ends: {exp.output()[-3000:]}") from None
            row.term_stuck_s = sigterm_seconds(exp.proc)
        finally:
            exp.stop()
        if kumina:
            proc, url = start_kumina(kumina, uri)
            hung = threading.Thread(target=lambda: _ignore_errors(url + "/metrics"), daemon=True)
            hung.start()
            hung.join(2.0)  # the scrape is under way (and hangs on the frozen domain's monitor)
            try:
                row.kumina_term_stuck_s = sigterm_seconds(proc)
            finally:
                proc.kill()
                proc.wait()
    finally:
        os.kill(frozen, signal.SIGCONT)


def _ignore_errors(url: str) -> None:
    try:
        urllib.request.urlopen(url, timeout=120).read()
    except OSError:
        pass


def lines(row: FleetRow) -> list[str]:
    shown = "n/a" if row.kumina_median is None else f"{row.kumina_median:.4f}"
    fewer = f" (of {row.wanted} asked: the machine's memory allowed {row.domains})" if row.domains < row.wanted else ""
    kvm = "KVM" if row.kvm else "TCG"
    return [
        "",
        f"## A real QEMU compute node: {row.domains} {kvm} domains{fewer}",
        "",
        "Each with 2 vCPUs, 128 MiB, 2 disks, a tap NIC and a balloon, behind a private libvirtd "
        "(`bench/qemu.py`). Medians.",
        "",
        "| measured | ours | peer or floor | ratio |",
        "|---|---|---|---|",
        f"| poll, vCPU placement at the default (one poll in 4) | {row.poll_default_s * 1000:.1f} ms | "
        f"one bare getAllDomainStats: {row.floor_s * 1000:.1f} ms | {ratio(row.poll_default_s, row.floor_s)} |",
        f"| poll, vCPU placement every poll | {row.poll_every_s * 1000:.1f} ms | the same floor | "
        f"{ratio(row.poll_every_s, row.floor_s)} |",
        f"| scrape (median / p95) | {row.scrape_median:.4f} / {row.scrape_p95:.4f} s | kumina: {shown} / "
        f"{'n/a' if row.kumina_p95 is None else f'{row.kumina_p95:.4f}'} s | kumina/ours "
        f"{ratio(row.kumina_median, row.scrape_median)} |",
        f"| SNMPv2c bulk walk ({row.varbinds} varbinds) | {row.bulk_rate:.0f} varbinds/s | | |",
        f"| SNMPv3 authPriv (SHA-256/AES) bulk walk | {row.v3_bulk_rate:.0f} varbinds/s | our v2c: "
        f"{row.bulk_rate:.0f} | {ratio(row.v3_bulk_rate, row.bulk_rate)} |",
        f"| SNMPv3 authPriv GETNEXT walk of one column | {row.v3_getnext_rate:.0f} PDUs/s | our v2c: "
        f"{row.getnext_rate:.0f} | {ratio(row.v3_getnext_rate, row.getnext_rate)} |",
        f"| peak RSS | {row.rss_mb:.0f} MB | kumina: "
        f"{'n/a' if row.kumina_rss_mb is None else f'{row.kumina_rss_mb:.0f}'} MB | "
        f"{ratio(row.rss_mb, row.kumina_rss_mb)} |",
        f"| SIGTERM to exit, idle | {row.term_idle_s:.3f} s | | |",
        f"| SIGTERM to exit, a call hung on a SIGSTOPped QEMU | {row.term_stuck_s:.3f} s | kumina, a scrape hung: "
        f"{'n/a' if row.kumina_term_stuck_s is None else f'{row.kumina_term_stuck_s:.3f}'} s | |",
    ]
