"""The benchmark, tiny (N=20), so that it never rots: it runs and produces every figure."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, require


def test_bench_runs_and_reports_every_figure(tmp_path) -> None:
    """bench/run.py at N=20 writes RESULTS.md with every column filled, snmpd's rates, the QEMU line (without
    and with a job running) and the compute node's table (3 domains here, 60 in `make bench`)."""
    kumina = ROOT / "build" / "kumina" / "usr" / "bin" / "prometheus-libvirt-exporter"
    require(kumina.exists(), "kumina's exporter not unpacked: run `make test` (it unpacks build/kumina)")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--sizes", "20", "--scrapes", "3",
                             "--fleet", "3", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| 20 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 20
    for i, cell in enumerate(cells):
        assert cell not in ("", "n/a", "0", "0.000") and re.match(r"^[\d.]+x?$", cell), (i, cell)
    assert cells[8] == "21"  # all 20 generated domains plus the test driver's own
    assert re.search(r"snmpd walking its own tree \(\d+ varbinds\): \d+ varbinds/s in bulk, \d+ GETNEXT", text)
    assert re.search(r"Real QEMU \(5 domains, bulk stats of every group we export\): our poll [\d.]+ ms", text)
    assert re.search(r"While a memory dump of one of them runs \(medians of \d+\): ours [\d.]+ ms, "
                     r"the floor [\d.]+ ms: [\d.]+x", text)
    assert re.search(r"as SNMPv3 authPriv \(SHA-256/AES\): \d+ varbinds/s in bulk", text)
    assert re.search(r"Rendering one snapshot of 20 domains \(\d+ series; .*the first scrape after a poll [\d.]+ s, "
                     r"the first after start \(no label set cached\) [\d.]+ s; prometheus_client's own rendering of "
                     r"the same series [\d.]+ s, [\d.]+x ours after a poll", text)
    assert re.search(r"over 20 domains \(\d+ varbinds; .*v2c \d+ varbinds/s, v3 on the fast path \d+ \([\d.]+x\), "
                     r"v3 through pysnmp alone \d+ \([\d.]+x\)", text)
    node = text.split("## A real QEMU compute node: 3 TCG domains", 1)[1]
    for measured in ("poll, vCPU placement at the default", "poll, vCPU placement every poll", "scrape (median / p95)",
                     "SNMPv2c bulk walk", "SNMPv3 authPriv (SHA-256/AES) bulk walk", "SNMPv3 authPriv GETNEXT",
                     "peak RSS", "SIGTERM to exit, idle", "SIGTERM to exit, a call hung"):
        (line,) = [row for row in node.splitlines() if row.startswith(f"| {measured}")]
        assert "n/a" not in line and re.search(r"\| [\d.]+( / [\d.]+)? (ms|s|MB|varbinds/s|PDUs/s) \|", line), line


def test_load_short(tmp_path) -> None:
    """bench/load.py for 15 s (`make load` runs 60 s at 1000 domains): no errors, and RSS flat once warm."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--domains", "300", "--duration", "15",
                             "--poll", "3s", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = (tmp_path / "LOAD.md").read_text()
    scrapes = re.search(r"\| scrapes \| (\d+) \| 0 \| ([\d.]+) \| ([\d.]+) \|", text)
    walks = re.search(r"\| bulk walks \| (\d+) \| 0 \|", text)
    assert scrapes and walks, text
    assert int(scrapes.group(1)) > 100 and int(walks.group(1)) >= 4
    assert float(scrapes.group(3)) < 2.0  # p95 latency bounded under 20 concurrent scrapers
    rss = re.search(r"after warm-up: first (\d+), last (\d+), max (\d+)", text)
    first, last, peak = (int(x) for x in rss.groups())
    assert last <= first * 1.2 and peak <= first * 1.3, text


def _bench_module(name: str) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_notify_bench_builds_its_notifications() -> None:
    """bench/notify.py (`make bench`, several minutes) is not run here; its notification, what every run sends,
    is built and encoded as the bench does, so that an API change breaks this test rather than the bench."""
    from exporter.snmp.v2send import TRAP_PDU, encode_notification

    notify: object = _bench_module("notify")
    note = notify.notification(7)  # type: ignore[attr-defined]
    assert note.mib == "libvirt-exporter" and b"bench7" in encode_notification(b"c", TRAP_PDU, 1, 0, note)


def test_compare_trees_runs(tmp_path) -> None:
    """bench/compare_trees.py on this tree against itself, tiny: it runs and fills its table."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "compare_trees.py"), str(ROOT), str(ROOT),
                             "--domains", "20", "--same-output"], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 20 |")]
    assert len(row.strip("|").split("|")) == 10
