"""The newer bulk groups and the pinning: vCPU pinning (libvirt_domain_vcpu_pinning_info, VM-MIB's
vmCpuAffinityTable) on the test driver and on real QEMU; I/O threads, perf events, halt polling and the dirty
rate on real QEMU, each held against what libvirt answers in the same test."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import libvirt
import pytest

from exporter.domstats import cpulist_text
from exporter.snmp import mib_lvx, mib_vm
from tests.conftest import DEMO_HOST, RealHost, demo_agent, own_domain
from tests.support import snmp
from tests.support.process import Exporter, Metrics

_AFFINITY = ".".join(map(str, mib_vm.VM_CPU_AFFINITY_ENTRY + (mib_vm.CPU_AFFINITY,)))


def _pin_sets(uri: str, name: str) -> list[tuple[int, ...]]:
    """libvirt's own answer: each vCPU's host CPUs (virDomainGetVcpuPinInfo)."""
    conn = libvirt.openReadOnly(uri)
    try:
        return [tuple(i for i, on in enumerate(cpus) if on) for cpus in conn.lookupByName(name).vcpuPinInfo(0)]
    finally:
        conn.close()


def _host_cpus(uri: str) -> int:
    conn = libvirt.openReadOnly(uri)
    try:
        return int(conn.getInfo()[2])
    finally:
        conn.close()


def _served_pins(metrics: Metrics, name: str) -> dict[int, str]:
    return {int(s["vcpu"]): s["cpus"] for s in metrics.series("libvirt_domain_vcpu_pinning_info")
            if s["domain"] == name}


def _affinity(target: str, index: str) -> dict[int, set[int]]:
    """vmCpuAffinityTable of one domain: the enabled host CPUs (from 0) of each vCPU (from 0) that has rows."""
    rows = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-Oe", target, _AFFINITY, mibs=False))
    found: dict[int, set[int]] = {}
    for oid, value in rows.items():
        vm, vcpu, cpu = oid.rsplit(".", 3)[1:]
        if vm == index:
            cpus = found.setdefault(int(vcpu) - 1, set())
            if value == "1":
                cpus.add(int(cpu) - 1)
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, str]]:
    with demo_agent(tmp_path_factory.mktemp("groups")) as served:
        yield served


def test_demo_pinning_in_both_front_ends(demo: tuple[Exporter, str]) -> None:
    """db1's <vcpupin> and <vcpu cpuset>: each vCPU's CPU list as libvirt's vcpuPinInfo gives it, in one _info series
    per vCPU and in vmCpuAffinityTable; a domain pinned nowhere may use every host CPU and has no affinity rows."""
    exp, target = demo
    uri = f"test://{DEMO_HOST}"
    metrics = exp.scrape()
    expected = _pin_sets(uri, "db1")
    assert expected[0] == (2, 3) and expected[1] == (4, 7) and expected[2] == (4, 5, 6, 7)  # the demo's pins
    assert _served_pins(metrics, "db1") == {n: cpulist_text(cpus) for n, cpus in enumerate(expected)}
    everything = cpulist_text(tuple(range(_host_cpus(uri))))
    assert set(_served_pins(metrics, "web1").values()) == {everything}
    index = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, "lvxDomainNameIndex.'db1'").strip()
    assert _affinity(target, index) == {n: set(cpus) for n, cpus in enumerate(expected)}
    web1 = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, "lvxDomainNameIndex.'web1'").strip()
    assert _affinity(target, web1) == {}


# -- real QEMU ------------------------------------------------------------------------------------------------------

NAME = "lxgroups"
_PERF_EVENTS = ("cpu_clock", "task_clock", "page_faults", "context_switches", "cpu_migrations")


@pytest.fixture
def tuned_domain(real_host: RealHost, tmp_path) -> Iterator[str]:
    """A running QEMU domain with two I/O threads, vCPU 0 pinned to host CPU 0, and software perf events."""
    tuned = "<vcpu>2</vcpu><iothreads>2</iothreads><cputune><vcpupin vcpu='0' cpuset='0'/></cputune>"
    with own_domain(real_host, tmp_path, NAME, lambda xml: xml.replace("<vcpu>2</vcpu>", tuned)) as name:
        real_host.daemon.virsh("perf", name, "--enable", ",".join(_PERF_EVENTS), "--live")
        yield name


def _bulk(uri: str, name: str) -> dict:
    conn = libvirt.openReadOnly(uri)
    try:
        dom = conn.lookupByName(name)
        flags = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_PERF | libvirt.VIR_DOMAIN_STATS_IOTHREAD
                 | libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
        return dict(conn.domainListGetStats([dom], flags, 0)[0][1])
    finally:
        conn.close()


@pytest.mark.realqemu
def test_iothreads_perf_haltpoll_dirty_rate_and_pinning(real_host: RealHost, tuned_domain: str, tmp_path) -> None:
    if os.cpu_count() == 1:
        pytest.fail("the pinning part needs a host with two CPUs or more")
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", target)
    # A dirty-rate calculation started by an operator (the exporter only reads it, unless configured to start one).
    real_host.daemon.virsh("domdirtyrate-calc", tuned_domain, "--seconds", "1")
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s"],
                  log=tmp_path / "log") as exp:
        first = exp.wait_for(lambda m: m.get("libvirt_domain_dirty_rate_calc_status", domain=tuned_domain) == 2
                             and m.get("libvirt_domain_perf_page_faults_total", domain=tuned_domain) is not None,
                             timeout=30, what="the measured dirty rate and the perf events")
        assert first.get("libvirt_domain_dirty_rate_calc_status", domain=tuned_domain) == 2
        before = _bulk(real_host.uri, tuned_domain)
        asked = time.time()
        metrics = exp.wait_for(lambda m: (m.get("libvirt_exporter_snapshot_timestamp_seconds") or 0) > asked,
                               what="a poll begun after libvirt's first reading")
        after = _bulk(real_host.uri, tuned_domain)
        ids = {"domain": tuned_domain}
        # I/O threads: ids 1 and 2, libvirt's figures (which do not change by themselves).
        for n in (1, 2):
            io = {**ids, "iothread": str(n)}
            assert metrics.get("libvirt_domain_iothread_poll_max_seconds", **io) == after[
                f"iothread.{n}.poll-max-ns"] / 1e9
            assert metrics.get("libvirt_domain_iothread_poll_grow", **io) == after[f"iothread.{n}.poll-grow"]
            assert metrics.get("libvirt_domain_iothread_poll_shrink", **io) == after[f"iothread.{n}.poll-shrink"]
        assert {s["iothread"] for s in metrics.series("libvirt_domain_iothread_poll_grow")
                if s["domain"] == tuned_domain} == {"1", "2"}
        # Perf events: the enabled ones, between libvirt's readings before and after; the others absent.
        for event in _PERF_EVENTS:
            family = (f"libvirt_domain_perf_{event}_seconds_total" if event.endswith("clock")
                      else f"libvirt_domain_perf_{event}_total")
            scale = 1e-9 if event.endswith("clock") else 1
            value = metrics.get(family, **ids)
            assert value is not None and before[f"perf.{event}"] * scale <= value <= after[f"perf.{event}"] * scale, (
                event, before[f"perf.{event}"], value, after[f"perf.{event}"])
        assert metrics.get("libvirt_domain_perf_cpu_cycles_total", **ids) is None  # not enabled
        # Halt polling: between the readings.
        for key, family in (("success", "libvirt_domain_cpu_haltpoll_success_seconds_total"),
                            ("fail", "libvirt_domain_cpu_haltpoll_fail_seconds_total")):
            value = metrics.get(family, **ids)
            assert value is not None and before[f"cpu.haltpoll.{key}.time"] / 1e9 <= value <= after[
                f"cpu.haltpoll.{key}.time"] / 1e9
        # The dirty rate: the calculation's outcome, as libvirt reports it.
        assert metrics.get("libvirt_domain_dirty_rate_calc_period_seconds", **ids) == after["dirtyrate.calc_period"]
        assert metrics.get("libvirt_domain_dirty_rate_bytes_per_second", **ids) == after[
            "dirtyrate.megabytes_per_second"] * 2**20
        # Pinning: vCPU 0 on CPU 0, vCPU 1 anywhere, as vcpuPinInfo says.
        expected = _pin_sets(real_host.uri, tuned_domain)
        assert expected[0] == (0,)
        assert _served_pins(metrics, tuned_domain) == {n: cpulist_text(c) for n, c in enumerate(expected)}
        # SNMP: the same figures in LVX and VM-MIB.
        index = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, f"lvxDomainNameIndex.'{tuned_domain}'").strip()
        assert _affinity(target, index) == {0: {0}}  # vCPU 1 is pinned to none: no rows
        lvx = ".".join(map(str, mib_lvx.LVX_ROOT))
        io_rows = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-OU", target, "lvxIoThreadTable"))
        polls = {oid.rsplit(".", 1)[1]: v for oid, v in io_rows.items()
                 if oid.lstrip(".").startswith(f"{lvx}.1.12.1.2.{index}.")}
        assert polls == {str(n): str(after[f"iothread.{n}.poll-max-ns"]) for n in (1, 2)}
        faults = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-OU", target, f"lvxPerfPageFaults.{index}").strip()
        assert before["perf.page_faults"] <= int(faults)
        rate = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", "-OU", target, f"lvxDomainDirtyRate.{index}").strip()
        assert int(rate) == after["dirtyrate.megabytes_per_second"]
        # Re-pinned live: served at once (the tunable event re-reads the definition).
        real_host.daemon.virsh("vcpupin", tuned_domain, "1", "0", "--live")
        exp.wait_for(lambda m: _served_pins(m, tuned_domain).get(1) == "0", timeout=10, what="vCPU 1 re-pinned")
        assert _pin_sets(real_host.uri, tuned_domain)[1] == (0,)


@pytest.mark.realqemu
def test_dirty_rate_calculations_started_when_configured(real_host: RealHost, tmp_path) -> None:
    """dirtyrate.calc_every 2 (1 s each): the exporter opens libvirt read-write and starts calculations on every
    running domain, whose outcome it then serves, as libvirt reports it."""
    name = real_host.domains[1]
    with Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s", "--dirtyrate.calc-every", "2"],
                  log=tmp_path / "log") as exp:
        metrics = exp.wait_for(lambda m: m.get("libvirt_domain_dirty_rate_bytes_per_second", domain=name) is not None,
                               timeout=30, what="a dirty rate the exporter's own calculation measured")
        after = _bulk(real_host.uri, name)
        assert after["dirtyrate.calc_period"] == 1 and after["dirtyrate.calc_status"] in (1, 2)
        assert metrics.get("libvirt_domain_dirty_rate_calc_period_seconds", domain=name) == 1
        assert "opening libvirt read-write: dirty-rate calculations are configured" in exp.output()
