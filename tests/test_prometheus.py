"""The Prometheus front end: names, values, units, promtool, and the README table."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import sys
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from exporter import docs
from exporter.exposition import Exposition, SnapshotCollector
from exporter.gofloat import Numbers, go_float, go_floats
from exporter.poller import ERROR_GROUPS
from exporter.prometheus import SPECS
from exporter.snapshot import ALL_GROUPS, Domain, Snapshot, frozen_map
from exporter.source import Source
from exporter.textrender import snapshot_text
from tests.conftest import ROOT, require_tool


def _snapshot(uri: str, groups=ALL_GROUPS) -> Snapshot:
    source = Source(uri)
    source.open()
    started = time.time()
    result = source.poll(groups)
    source.close()
    return Snapshot(up=True, taken_at=started, poll_duration_s=0.01, last_success_at=started, host=result.host,
                    domains=result.domains, pools=result.pools, networks=result.networks,
                    poll_errors=frozen_map({g: 0 for g in ERROR_GROUPS} | dict(result.errors)))


def _registry(snap: Snapshot, groups=frozenset(ALL_GROUPS)) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap, frozenset(groups)))
    return registry


def test_values_and_units(demo_uri: str) -> None:
    """Each family carries the snapshot's value in base units with domain and uuid labels."""
    snap = _snapshot(demo_uri)
    reg = _registry(snap)
    web1 = next(d for d in snap.domains if d.name == "web1")
    ids = {"domain": "web1", "uuid": web1.uuid}
    get = reg.get_sample_value
    assert get("libvirt_up") == 1
    assert get("libvirt_domains_number") == 6
    assert get("libvirt_domain_state_code", ids) == 1
    assert get("libvirt_domain_state_code", {"domain": "batch1", "uuid": "4d1f0a52-0c6c-4c3e-9b1a-0000000000c1"}) == 3
    assert get("libvirt_domain_info_maximum_memory_bytes", ids) == 4096 * 1024 * 1024
    assert get("libvirt_domain_info_memory_usage_bytes", ids) == 3072 * 1024 * 1024
    assert get("libvirt_domain_info_virtual_cpus", ids) == 4
    assert get("libvirt_domain_info_cpu_time_seconds_total", ids) == pytest.approx(web1.cpu_time_ns / 1e9)
    assert get("libvirt_domain_info", {**ids, "os_type": "hvm", "os_type_arch": "x86_64", "os_type_machine": "pc",
                                       "state_desc": "the domain is running", "persistent": "true",
                                       "autostart": "false"}) == 1
    vda = {**ids, "target_device": "vda"}
    assert get("libvirt_domain_block_stats_read_bytes_total", vda) == web1.blocks[0].read_bytes
    assert get("libvirt_domain_block_stats_capacity_bytes", vda) == web1.blocks[0].capacity_bytes
    assert get("libvirt_domain_block_stats_info", {**vda, "device": "disk", "disk_type": "file",
                                                   "target_bus": "virtio", "driver_type": "qcow2",
                                                   "source_file": "/var/lib/libvirt/images/web1.qcow2",
                                                   "serial": "0c3f9b5e-5f7a-4d5c-9e2b-7d1a6c8e4f01",
                                                   "driver_name": "qemu", "driver_cache": "none",
                                                   "driver_discard": "unmap", "source_protocol": ""}) == 1
    tap = {**ids, "target_device": "tap-web1"}
    assert get("libvirt_domain_interface_stats_receive_bytes_total", tap) == web1.interfaces[0].receive_bytes
    assert get("libvirt_domain_interface_stats_info", {**tap, "mac_address": "52:54:00:00:a1:01",
                                                       "interface_type": "bridge", "source_bridge": "br0",
                                                       "source_network": "", "model_type": "virtio",
                                                       "mtu_size": "1450",
                                                       "virtual_interface": "7d4e2a6b-1c3f-4e5d-8a9b-0c1d2e3f4a5b",
                                                       }) == 1
    assert get("libvirt_domain_vcpu_time_seconds_total", {**ids, "vcpu": "3"}) == pytest.approx(
        web1.vcpus[3].time_ns / 1e9)
    assert get("libvirt_domain_memory_stats_rss_bytes", ids) == web1.memory.rss_kib * 1024
    assert get("libvirt_node_cpus") == 16
    assert get("libvirt_storage_pool_capacity_bytes",
               {"storage_pool": "images", "uuid": "4d1f0a52-0c6c-4c3e-9b1a-0000000000f3"}) > 0
    assert get("libvirt_network_active", {"network": "isolated", "uuid": "4d1f0a52-0c6c-4c3e-9b1a-0000000000f2"}) == 1
    assert get("libvirt_exporter_poll_errors_total", {"group": "block"}) == 0
    # An inactive domain: state and configuration, but no live counters.
    legacy = {"domain": "legacy1", "uuid": "4d1f0a52-0c6c-4c3e-9b1a-0000000000d1"}
    assert get("libvirt_domain_state_code", legacy) == 5
    assert get("libvirt_domain_info_cpu_time_seconds_total", legacy) is None


def test_every_domain_series_has_domain_and_uuid(demo_uri: str) -> None:
    """Labels: domain and uuid on every domain series, target_device on devices, vcpu on vCPUs."""
    for spec in SPECS:
        if spec.name.startswith("libvirt_domain_"):
            assert spec.labels[:2] == ("domain", "uuid"), spec.name
        if spec.name.startswith(("libvirt_domain_block_", "libvirt_domain_interface_")):
            assert spec.labels[2] == "target_device", spec.name
        if spec.name.startswith("libvirt_domain_vcpu_") and spec.name not in ("libvirt_domain_vcpu_maximum",
                                                                            "libvirt_domain_vcpu_current"):
            assert spec.labels[:3] == ("domain", "uuid", "vcpu"), spec.name
        assert (spec.kind == "counter") == spec.name.endswith("_total"), spec.name


def test_libvirt_down_serves_no_stale_series(demo_uri: str) -> None:
    """When libvirt is unreachable: libvirt_up 0 and no domain, host, pool or network series."""
    snap = Snapshot(up=False, taken_at=time.time(), poll_errors=frozen_map({"connection": 3}))
    text = generate_latest(_registry(snap)).decode()
    assert "libvirt_up 0.0" in text
    assert 'libvirt_exporter_poll_errors_total{group="connection"} 3.0' in text
    assert not re.search(r"^libvirt_(domain|node|storage|network)", text, re.M)


def test_disabled_collectors_vanish(demo_uri: str) -> None:
    """--no-collector.block removes every block family, and nothing else."""
    groups = frozenset(ALL_GROUPS) - {"block"}
    text = generate_latest(_registry(_snapshot(demo_uri, groups), groups)).decode()
    assert "libvirt_domain_block_stats" not in text
    assert "libvirt_domain_interface_stats_receive_bytes_total" in text


def test_promtool_accepts_output(demo_uri: str, tmp_path) -> None:
    """promtool check metrics prints nothing for the full demo exposition."""
    promtool = require_tool("promtool", "prometheus")
    text = generate_latest(_registry(_snapshot(demo_uri)))
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result.stderr


def _readme_metrics() -> dict[str, tuple[str, str]]:
    """Rows of the README's metrics table: name -> (type, labels)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `(libvirt_[a-z_]+)` \| (gauge|counter) \| ([^|]*) \|", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3).strip())
    return rows


def test_readme_table_matches_exported_metrics() -> None:
    """Every exported family is in the README table with its type and labels, and nothing else is; the table
    is exactly what the declarations make of it (`python -m exporter.docs` rewrites it)."""
    text = (ROOT / "README.md").read_text()
    start, end = docs.table_span(text)
    assert text[start:end] == docs.metrics_table(), "README's metrics table is stale: run python -m exporter.docs"
    rows = _readme_metrics()
    specs = {s.name: s for s in SPECS}
    assert set(rows) == set(specs), (set(rows) ^ set(specs))
    for name, (kind, labels) in rows.items():
        assert kind == specs[name].kind, name
        listed = [part.strip(" `") for part in labels.split(",") if part.strip()]
        assert listed == list(specs[name].labels), name


def test_dump_lists_every_family_it_has_data_for(demo_uri: str) -> None:
    """The one-shot `dump` command prints a valid exposition with all six demo domains."""
    promtool = shutil.which("promtool")
    result = subprocess.run([sys.executable, "-m", "exporter", "dump", "--libvirt.uri", demo_uri], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    domains = set(re.findall(r'^libvirt_domain_state_code\{domain="([^"]+)"', result.stdout, re.M))
    assert domains == {"web1", "web2", "db1", "batch1", "legacy1", "crashy1"}
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=result.stdout, capture_output=True, text=True)
        assert check.returncode == 0 and not check.stdout and not check.stderr


def test_dump_reports_unreachable_libvirt(tmp_path) -> None:
    """`dump` against a dead socket exits 1 with the reason, no traceback."""
    result = subprocess.run([sys.executable, "-m", "exporter", "dump", "--libvirt.uri",
                             f"qemu+unix:///system?socket={tmp_path}/none"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot connect to libvirt at qemu+unix:///system" in result.stderr and "Traceback" not in result.stderr
    assert "no libvirt daemon answers on its socket" in result.stderr


def test_exposition_renders_each_snapshot_once(demo_uri: str) -> None:
    """Scrapes of one snapshot reuse its rendering; the age and process metrics are fresh each time."""
    current = {"snap": _snapshot(demo_uri)}
    clock = {"now": current["snap"].taken_at + 5}
    exposition = Exposition(lambda: current["snap"], frozenset(ALL_GROUPS), clock=lambda: clock["now"])
    first = exposition.render().decode()
    clock["now"] += 10
    second = exposition.render().decode()
    assert exposition.renders == 1
    assert "libvirt_exporter_snapshot_age_seconds 5.0" in first
    assert "libvirt_exporter_snapshot_age_seconds 15.0" in second
    assert "process_resident_memory_bytes" in second
    assert first.count("libvirt_domain_state_code{") == second.count("libvirt_domain_state_code{") == 6
    current["snap"] = current["snap"].replace(domains=current["snap"].domains[:2])
    third = exposition.render().decode()
    assert exposition.renders == 2
    assert third.count("libvirt_domain_state_code{") == 2


def _label_order_free(text: str) -> list[str]:
    """Exposition lines in order, each sample's labels sorted by name (prometheus_client sorts them; the fast
    text keeps each family's declared order); everything else byte for byte."""
    lines = []
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if match:
            pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2))
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == match.group(2), line  # nothing left unparsed
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(pairs))
            line = f"{match.group(1)}{{{labels}}} {match.group(3)}"
        lines.append(line)
    return lines


def _edge_domains(snap: Snapshot) -> tuple[Domain, ...]:
    """Copies of the first domain carrying values at the edges of the number format, an odd name, and
    [metadata] labels (libvirt_domain_metadata_info)."""
    base = snap.domains[0]
    edges: list[tuple[float | int, int | None]] = [
        (0.0, 0), (-0.0, -1), (1e-7, -5), (math.nan, 2**60), (math.inf, -(2**60)), (-math.inf, 10**6),
        (1e22, 999_999), (1234567.0, 2**53 + 1), (1.5e6, 123_456_789_012_345), (1796284092.6677117, 10**15),
    ]
    domains = []
    for n, (stats_at, code) in enumerate(edges):
        domains.append(base.replace_fields(
            name=f"edge{n}", uuid=f"00000000-0000-4000-8000-{n:012d}", stats_at=stats_at, state_reason=code,
            max_memory_kib=None if code is None else abs(code), cpu_time_ns=code,
            metadata=(("team", f"t{n}"), ("cost_centre", "" if n % 2 else 'a "b" \\ c\nd'))))
    domains.append(base.replace_fields(name='we"ird\\name\nx', uuid="00000000-0000-4000-8000-00000000ffff"))
    return tuple(domains)


def test_fast_text_equals_prometheus_client_output(demo_uri: str) -> None:
    """The cached exposition text says exactly what prometheus_client's rendering of the same snapshot says,
    line by line, byte for byte but for the order of labels within a series: families, help texts, series
    order, label values and number formatting (0, -0, 1e-07, NaN, +-Inf, large integers, integral floats),
    including the [metadata] family."""
    snap = _snapshot(demo_uri)
    snap = snap.replace(domains=snap.domains + _edge_domains(snap))
    assert any(d.metadata for d in snap.domains)
    reference = generate_latest(_registry(snap)).decode()
    reference = "\n".join(line for line in reference.splitlines() if "_age_seconds" not in line) + "\n"  # live
    fast = snapshot_text(snap, frozenset(ALL_GROUPS)).decode()
    assert "libvirt_domain_metadata_info{" in fast and "NaN" in fast and "+Inf" in fast and "-0.0" in fast
    assert _label_order_free(fast) == _label_order_free(reference)
    for groups in (frozenset(ALL_GROUPS) - {"block", "vcpu"}, frozenset(ALL_GROUPS) | {"inovex"}):
        reference = generate_latest(_registry(snap, groups)).decode()
        reference = "\n".join(line for line in reference.splitlines() if "_age_seconds" not in line) + "\n"
        assert _label_order_free(snapshot_text(snap, groups).decode()) == _label_order_free(reference)


def test_go_floats_write_numbers_as_prometheus_client_does() -> None:
    """Every number, a column at a time, as prometheus_client's floatToGoString writes it: the integer and
    small-float shortcuts, Go's exponent form from seven digits up, the float edges; and the memo that keeps
    texts from one rendering to the next gives the same texts."""
    rng = random.Random(17)
    values: list[float | int] = [
        0, -0.0, 0.0, 1, -1, True, False, 1e-7, -1e-7, 5e-324, 999_999, 1_000_000, -1_000_000, 1_000_000.5,
        1_500_000, 999_999.9999999999, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), 10**15, 10**16 - 1, 10**16, 10**22,
        1e16, 9.999e15, 1e22, -1e22, 2**64 - 1, 1099511627776, 1073741824.0, math.nan, math.inf, -math.inf]
    values += [rng.randrange(-(2**64), 2**64) for _ in range(2000)]
    values += [rng.randrange(0, 10 ** rng.randrange(1, 18)) for _ in range(4000)]
    values += [rng.randrange(1, 100) * 10 ** rng.randrange(0, 17) for _ in range(2000)]
    values += [rng.random() * 10 ** rng.randrange(-10, 20) for _ in range(4000)]
    values += [rng.uniform(-1e17, 1e17) for _ in range(2000)]
    expected = [floatToGoString(v) for v in values]
    assert go_floats(values) == expected
    assert [go_float(v) for v in values] == expected
    numbers = Numbers(limit=5000, probe_every=2)
    for _ in range(4):  # the same column again: texts from the memo; then zeros of both signs
        assert numbers.texts("c", values) == expected
        numbers.done()
    assert numbers.texts("z", [0, -0.0, 0.0, 0]) == ["0.0", "-0.0", "0.0", "0.0"]
