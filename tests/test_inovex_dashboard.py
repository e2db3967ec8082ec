"""inovex's Grafana dashboard works unchanged: every query of it, answered by a real Prometheus scraping us.

The dashboard is ``dashboards/openstack-libvirt-dashboard/libvirt-openstack.json`` in
inovex/prometheus-libvirt-exporter (read at commit 8dbcadd5).  Its four template variables chain
project -> instance name -> instance id -> domain, all from ``libvirt_domain_openstack_info``; its 28
panels each have one query, which filters on ``domain="$dom_id"``.  The queries are re-typed below (their
layout aside: whitespace means nothing to PromQL), the variables filled in as Grafana fills them: the
``label_values(selector, label)`` queries through the label-values API, ``$__rate_interval`` with a
range that holds several scrapes.

The test driver has no vCPU delay and no block times; the three panels that need those are answered on the
real QEMU tier (:func:`test_panels_that_need_qemu`).  inovex's names for the five families exported under
ours come with ``--collector.inovex`` (off by default).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from exporter.poller import snapshot_of
from exporter.snapshot import ALL_GROUPS
from exporter.source import Source
from exporter.textrender import snapshot_text
from tests.conftest import DEMO_HOST, RealHost, require_tool
from tests.support.process import Exporter, Metrics
from tests.support.prometheus import Prometheus

#: (variable, selector, label) in the dashboard's order; each selector uses the variables before it.
VARIABLES = [
    ("project_name", "libvirt_domain_openstack_info", "project_name"),
    ("vm_name", 'libvirt_domain_openstack_info{project_name="$project_name"}', "instance_name"),
    ("vm_id", 'libvirt_domain_openstack_info{instance_name="$vm_name", project_name="$project_name"}',
     "instance_id"),
    ("dom_id", 'libvirt_domain_openstack_info{instance_name="$vm_name", project_name="$project_name", '
               'instance_id="$vm_id"}', "domain"),
]

_D = '{domain="$dom_id"}'
_R = "[$__rate_interval]"


def _rate(name: str) -> str:
    return f"rate({name}{_D}{_R})"


def _named(name: str) -> str:
    """The dashboard's other selector form: the name as a __name__ matcher."""
    return f'rate({{__name__=~"{name}", domain="$dom_id"}}{_R})'


_BLK = "libvirt_domain_block_stats_"
_NIC = "libvirt_domain_interface_stats_"

#: (panel title, query) for every panel, in the dashboard's order.
PANELS = [
    ("VM • Power State", f"libvirt_domain_info_state{_D}"),
    ("CPU • Allocated vCPUs", f"libvirt_domain_vcpu_current{_D}"),
    ("Memory • Allocated RAM", f"libvirt_domain_memory_stats_maximum_bytes{_D}"),
    ("Storage • Disk Count", f"count({_BLK}info{_D})"),
    ("Network • Port Count", f"count({_NIC}info{_D})"),
    ("CPU • Usage %", f"({_rate('libvirt_domain_info_cpu_time_seconds_total')}/libvirt_domain_vcpu_current{_D}) * 100"),
    ("CPU • Steal Time %", f"(sum by (domain) ({_rate('libvirt_domain_vcpu_delay_seconds_total')})"
                           f"/sum by (domain) ({_rate('libvirt_domain_vcpu_time_seconds_total')})) * 100"),
    ("Memory • Usage %", f"libvirt_domain_memory_stats_used_percent{_D}"),
    ("Memory • Total Swap Activity", f"sum by (domain)({_rate('libvirt_domain_memory_stats_swap_in_bytes')} + "
                                     f"{_rate('libvirt_domain_memory_stats_swap_out_bytes')})"),
    ("Storage • Total IOPS", f"sum by (domain, target_device) ({_rate(_BLK + 'read_requests_total')} + "
                             f"{_rate(_BLK + 'write_requests_total')})"),
    ("Storage • Read IOPS", f"sum by (domain, target_device) ({_named(_BLK + 'read_requests_total')})"),
    ("Storage • Write IOPS", f"sum by (domain, target_device) ({_named(_BLK + 'write_requests_total')})"),
    ("Storage • Total Throughput", f"sum by (domain, target_device) ({_rate(_BLK + 'read_bytes_total')} + "
                                   f"{_rate(_BLK + 'write_bytes_total')})"),
    ("Storage • Read Throughput", f"sum by (domain, target_device) ({_named(_BLK + 'read_bytes_total')})"),
    ("Storage • Write Throughput", f"sum by (domain, target_device) ({_named(_BLK + 'write_bytes_total')})"),
    ("Storage • Read Latency", f"(sum by (domain, target_device) ({_named(_BLK + 'read_time_seconds_total')}) / "
                               f"sum by (domain, target_device) ({_named(_BLK + 'read_requests_total')})) * 1000"),
    ("Storage • Write Latency", f"(sum by (domain, target_device) ({_named(_BLK + 'write_time_seconds_total')}) / "
                                f"sum by (domain, target_device) ({_named(_BLK + 'write_requests_total')})) * 1000"),
    ("Storage • Average Block Size",
     f"(sum by (domain, target_device) ({_rate(_BLK + 'read_bytes_total')} + {_rate(_BLK + 'write_bytes_total')}) / "
     f"sum by (domain, target_device) ({_rate(_BLK + 'read_requests_total')} + "
     f"{_rate(_BLK + 'write_requests_total')}))"),
    ("Network • Total Throughput", f"sum by (domain, target_device)({_rate(_NIC + 'receive_bytes_total')} + "
                                   f"{_rate(_NIC + 'transmit_bytes_total')})"),
    ("Network • Receive Throughput", f"sum by (domain, target_device)({_rate(_NIC + 'receive_bytes_total')})"),
    ("Network • Transmit Throughput", f"sum by (domain, target_device)({_rate(_NIC + 'transmit_bytes_total')})"),
    ("Network • Total Packets", f"sum by (domain, target_device)({_rate(_NIC + 'transmit_packets_total')} + "
                                f"{_rate(_NIC + 'receive_packets_total')})"),
    ("Network • Receive Packets", f"sum by (domain, target_device)({_rate(_NIC + 'receive_packets_total')})"),
    ("Network • Transmit Packets", f"sum by (domain, target_device)({_rate(_NIC + 'transmit_packets_total')})"),
    ("Network • Receive Errors", f"sum by (domain, target_device)({_rate(_NIC + 'receive_errors_total')})"),
    ("Network • Transmit Errors", f"sum by (domain, target_device)({_rate(_NIC + 'transmit_errors_total')})"),
    ("Network • Receive Drops", f"sum by (domain, target_device)({_rate(_NIC + 'receive_drops_total')})"),
    # sic: the dashboard's transmit-drops panel queries receive drops
    ("Network • Transmit Drops", f"sum by (domain, target_device)({_rate(_NIC + 'receive_drops_total')})"),
]

#: Panels whose families the test driver cannot give: vCPU delay, block read and write times.
NEEDS_QEMU = {"CPU • Steal Time %", "Storage • Read Latency", "Storage • Write Latency"}

#: inovex's names that --collector.inovex adds, with the family of ours each repeats.
COMPAT = {
    "libvirt_domain_info_state": "libvirt_domain_state_code",
    "libvirt_domain_vcpu_current": "libvirt_domain_info_virtual_cpus",
    "libvirt_domain_memory_stats_maximum_bytes": "libvirt_domain_info_maximum_memory_bytes",
    "libvirt_domain_memory_stats_swap_in_bytes": "libvirt_domain_memory_stats_swap_in_bytes_total",
    "libvirt_domain_memory_stats_swap_out_bytes": "libvirt_domain_memory_stats_swap_out_bytes_total",
}

RATE_INTERVAL = "5s"  # Grafana's $__rate_interval for a 1 s scrape interval: four scrapes


def _fill(text: str, variables: dict[str, str]) -> str:
    text = text.replace("$__rate_interval", RATE_INTERVAL)
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(f"${name}", variables[name])
    return text


def test_the_table_has_every_panel() -> None:
    assert len(PANELS) == 28 and len({title for title, _ in PANELS}) == 28
    assert {title for title, _ in PANELS} >= NEEDS_QEMU


def _texts(groups: frozenset[str]) -> Metrics:
    source = Source(f"test://{DEMO_HOST}")
    source.open()
    try:
        snap = snapshot_of(source.poll(ALL_GROUPS), time.time(), 0.1)
    finally:
        source.close()
    return Metrics(snapshot_text(snap, groups).decode())


def test_inovex_names_only_with_the_switch() -> None:
    """Off by default; switched on, each of inovex's names repeats our family's values (and the state's text)."""
    plain = _texts(frozenset(ALL_GROUPS))
    assert not set(COMPAT) & plain.names()
    compat = _texts(frozenset(ALL_GROUPS) | {"inovex"})
    for theirs, ours in COMPAT.items():
        mine = {tuple(sorted(lbl.items())): compat.get(ours, **lbl) for lbl in compat.series(ours)}
        assert mine, ours
        got = {tuple(sorted((k, v) for k, v in lbl.items() if k != "state_desc")): compat.get(theirs, **lbl)
               for lbl in compat.series(theirs)}
        assert got == mine, theirs
    states = {s["domain"]: s["state_desc"] for s in compat.series("libvirt_domain_info_state")}
    assert states == {"web1": "the domain is running", "web2": "the domain is running", "db1": "the domain is running",
                      "batch1": "the domain is paused by user", "legacy1": "the domain is shut off",
                      "crashy1": "the domain is crashed"}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Metrics]]:
    """The demo host (three Nova domains) behind the exporter with --collector.inovex, scraped every second by a
    real Prometheus."""
    require_tool("prometheus", "prometheus")
    folder = tmp_path_factory.mktemp("inovex-dashboard")
    with Exporter(["--libvirt.uri", f"test://{DEMO_HOST}", "--libvirt.poll-interval", "1s", "--collector.inovex"],
                  log=folder / "log") as exp:
        metrics = exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="the demo host")
        prom = Prometheus(folder / "prometheus", f"  - job_name: libvirt\n    static_configs:\n"
                                                 f"      - targets: ['127.0.0.1:{exp.port}']\n")
        try:
            yield prom, metrics
        finally:
            prom.stop()


def _label_values(prom: Prometheus, selector: str, label: str) -> list[str]:
    """Grafana's label_values(selector, label), as its Prometheus data source asks for it."""
    values: list[str] = prom.api(f"label/{label}/values", **{"match[]": selector})
    return values


def test_variables_chain_to_a_domain(scraped: tuple[Prometheus, Metrics]) -> None:
    """Project, instance name, instance id and domain, each from the one before, as the exporter's Nova metadata
    says."""
    prom, metrics = scraped
    prom.wait_for("libvirt_domain_openstack_info")
    nova = metrics.series("libvirt_domain_openstack_info")
    chosen: dict[str, str] = {}
    expected = {"project_name": sorted({s["project_name"] for s in nova})}
    for name, selector, label in VARIABLES:
        values = _label_values(prom, _fill(selector, chosen), label)
        if name == "project_name":
            assert values == expected["project_name"] == ["data", "shop"]
        else:
            rows = [s for s in nova if all(s[lbl] == chosen[var] for var, _, lbl in VARIABLES if var in chosen)]
            assert values == sorted({s[label] for s in rows}), name
        chosen[name] = "shop" if name == "project_name" else values[0]
    (web,) = [s for s in nova if s["domain"] == chosen["dom_id"]]
    assert (web["project_name"], web["instance_name"], web["instance_id"]) == (
        "shop", chosen["vm_name"], chosen["vm_id"])


@pytest.mark.parametrize(("title", "query"), [p for p in PANELS if p[0] not in NEEDS_QEMU], ids=lambda x: x)
def test_panel_has_data(scraped: tuple[Prometheus, Metrics], title: str, query: str) -> None:
    """Each panel's query, for a Nova domain of the demo host, returns at least one series."""
    prom, metrics = scraped
    (web1,) = [s for s in metrics.series("libvirt_domain_openstack_info") if s["domain"] == "web1"]
    found = prom.wait_for(_fill(query, {"dom_id": web1["domain"]}), timeout=30)
    assert all(series["metric"].get("domain", "web1") == "web1" for series in found), found


@pytest.mark.realqemu
def test_panels_that_need_qemu(real_host: RealHost, tmp_path) -> None:
    """Steal time and read and write latency, for a real QEMU domain (vCPU delay and block times exist only
    there)."""
    require_tool("prometheus", "prometheus")
    name = real_host.domains[0]
    with Exporter(["--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "1s", "--collector.inovex"],
                  log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 2, what="both QEMU domains")
        prom = Prometheus(tmp_path / "prometheus", f"  - job_name: libvirt\n    static_configs:\n"
                                                   f"      - targets: ['127.0.0.1:{exp.port}']\n")
        try:
            for title, query in PANELS:
                if title in NEEDS_QEMU:
                    found = prom.wait_for(_fill(query, {"dom_id": name}), timeout=30)
                    assert {s["metric"]["domain"] for s in found} == {name}, title
        finally:
            prom.stop()
