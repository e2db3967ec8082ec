"""A domain's job (virDomainGetJobStats) and the outcome of its last one, on real QEMU: a memory dump observed
while it runs, then a managed save's completed statistics, each held against what libvirt answers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator

import libvirt
import pytest

from exporter import fields
from exporter.snmp import mib_lvx
from tests.conftest import ROOT, RealHost, own_domain, require_tool
from tests.support import snmp
from tests.support.process import Exporter, Metrics
from tests.support.prometheus import Prometheus
from tests.support.wait import poll_until

pytestmark = pytest.mark.realqemu

NAME = "lxjob"
#: virDomainJobOperation
DUMP, SAVE = 8, 2
_JOB = ".".join(map(str, mib_lvx.LVX_JOB_ENTRY))
_COLUMN = {f.column.name: f.column.number for f in fields.of_table("job") if f.column is not None}


@pytest.fixture
def big_domain(real_host: RealHost, tmp_path) -> Iterator[str]:
    """A running 1 GiB QEMU guest of its own (its memory-only dump takes seconds), removed afterwards."""
    with own_domain(real_host, tmp_path, NAME, lambda xml: xml.replace("<memory unit='MiB'>128</memory>",
                                                                       "<memory unit='MiB'>1024</memory>")) as name:
        yield name


def _lvx_job(target: str, index: str) -> dict[str, str]:
    """lvxJobTable's row of one domain, by column name."""
    rows = snmp.values(snmp.ok("snmpbulkwalk", *snmp.V2_ARGS, "-Oqn", "-OU", target, _JOB))
    by_number = {oid.lstrip(".").removeprefix(_JOB + ".").split(".")[0]: value for oid, value in rows.items()
                 if oid.endswith(f".{index}")}
    return {name: by_number[str(n)] for name, n in _COLUMN.items() if str(n) in by_number}


def _zabbix_rules() -> list[dict]:
    import yaml

    data = yaml.safe_load((ROOT / "zabbix" / "libvirt-exporter-snmp.yaml").read_text())["zabbix_export"]
    return data["templates"][0]["discovery_rules"]


def _column_name(prototype_oid: str) -> str:
    """lvxJobTable's column that a Zabbix item prototype's OID ({#SNMPINDEX} the domain's index) reads."""
    column = prototype_oid.removeprefix(_JOB + ".").split(".")[0]
    (name,) = [n for n, number in _COLUMN.items() if str(number) == column]
    return name


def _dashboard_queries(title: str) -> list[str]:
    board = json.loads((ROOT / "grafana" / "libvirt-exporter.json").read_text())
    (panel,) = [p for p in board["panels"] if p["title"] == title]
    return [t["expr"] for t in panel["targets"]]


def test_a_dump_is_seen_while_it_runs_and_a_save_completes(real_host: RealHost, big_domain: str, tmp_path) -> None:
    """A 1 GiB memory dump: its job served while it runs (memory moved never decreasing, the total libvirt's),
    in lvxJobTable too, and in the dashboard's jobs panel through a real Prometheus; gone after.  Then a managed
    save: its completed statistics, as libvirt keeps them, in both front ends."""
    require_tool("prometheus", "prometheus")
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    cfg = snmp.agent_config(tmp_path / "c.toml", tmp_path / "state", target)
    conn = libvirt.openReadOnly(real_host.uri)
    dom = conn.lookupByName(big_domain)
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", real_host.uri, "--libvirt.poll-interval", "0.25s"],
                  log=tmp_path / "log") as exp, contextlib.ExitStack() as stack:
        exp.wait_for(lambda m: m.get("libvirt_domain_state_code", domain=big_domain) == 1, what="the big domain")
        assert exp.scrape().get("libvirt_domain_job_info_type", domain=big_domain) is None  # no job: not served
        index = snmp.ok("snmpget", *snmp.V2_ARGS, "-Oqv", target, f"lvxDomainNameIndex.'{big_domain}'").strip()
        assert _lvx_job(target, index) == {}
        prom = stack.enter_context(Prometheus(tmp_path / "prometheus", f"  - job_name: libvirt\n    static_configs:\n"
                                                                       f"      - targets: ['127.0.0.1:{exp.port}']\n"))
        prom.wait_for("libvirt_up")

        # A memory-only dump: the domain is paused for it (its state says it has a job), for seconds.
        core = tmp_path / "core"
        dump = subprocess.Popen(["virsh", "-c", real_host.uri, "dump", "--memory-only", big_domain, str(core)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[Metrics] = []
        libvirt_says: list[dict] = []
        lvx: list[dict[str, str]] = []

        def watch() -> None:
            while True:
                metrics = exp.scrape()
                if metrics.get("libvirt_domain_job_info_type", domain=big_domain) is not None:
                    seen.append(metrics)
                    libvirt_says.append(dom.jobStats(0))
                    lvx.append(_lvx_job(target, index))
                try:
                    dump.wait(timeout=0.1)
                    return
                except subprocess.TimeoutExpired:
                    continue

        watcher = threading.Thread(target=watch)
        began = time.time()
        watcher.start()
        try:
            output, _ = dump.communicate(timeout=120)
        finally:
            watcher.join(timeout=60)
        ended = time.time()
        assert dump.returncode == 0, output
        assert seen, "the dump's job was never served"
        processed = [m.get("libvirt_domain_job_info_memory_processed_bytes", domain=big_domain) for m in seen]
        assert None not in processed and processed == sorted(processed), processed
        total = {m.get("libvirt_domain_job_info_memory_total_bytes", domain=big_domain) for m in seen}
        assert total == {next(s["memory_total"] for s in libvirt_says if "memory_total" in s)}
        assert {m.get("libvirt_domain_job_info_operation", domain=big_domain) for m in seen} == {DUMP}
        assert {m.get("libvirt_domain_job_info_type", domain=big_domain) for m in seen} <= {2, 3}  # unbounded; done
        elapsed = [m.get("libvirt_domain_job_info_time_elapsed_seconds", domain=big_domain) for m in seen]
        assert elapsed == sorted(elapsed), elapsed
        # Each served figure was polled before libvirt's reading taken just after that scrape (the last reading
        # may come when the job is over and has no time_elapsed).
        for served, said in zip(elapsed, libvirt_says, strict=True):
            assert "time_elapsed" not in said or served <= said["time_elapsed"] / 1e3, (served, said)
        rows = [row for row in lvx if row]
        assert rows and {row["lvxJobOperation"] for row in rows} == {str(DUMP)}
        assert {int(row["lvxJobMemoryTotal"]) for row in rows} == total
        # The dashboard's jobs panel, over the dump's time, as Grafana would ask.
        for expr in _dashboard_queries("Migrations and jobs"):
            query = expr.replace("$instance", ".*").replace("$domain", big_domain)
            result = prom.api("query_range", query=query, start=str(began), end=str(ended + 2), step="0.5")["result"]
            assert [s["metric"]["domain"] for s in result] == [big_domain], query
        # Over: the job's families go (the dump keeps no completed statistics).
        gone = exp.wait_for(lambda m: m.get("libvirt_domain_job_info_type", domain=big_domain) is None
                            and m.get("libvirt_domain_state_code", domain=big_domain) == 1, timeout=15,
                            what="the job gone")
        assert gone.get("libvirt_domain_job_last_type", domain=big_domain) is None
        core.unlink()

        # A managed save completes with libvirt's JOB_COMPLETED event: its outcome stays, the domain shut off.
        real_host.daemon.virsh("managedsave", big_domain)
        completed = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
        assert completed["type"] == libvirt.VIR_DOMAIN_JOB_COMPLETED and completed["operation"] == SAVE
        metrics = exp.wait_for(lambda m: m.get("libvirt_domain_job_last_operation", domain=big_domain) == SAVE
                               and m.get("libvirt_domain_state_code", domain=big_domain) == 5, timeout=15,
                               what="the save's outcome")
        assert metrics.get("libvirt_domain_job_last_type", domain=big_domain) == completed["type"]
        assert metrics.get("libvirt_domain_job_last_time_elapsed_seconds", domain=big_domain) == pytest.approx(
            completed["time_elapsed"] / 1e3)
        assert metrics.get("libvirt_domain_job_last_downtime_seconds", domain=big_domain) == pytest.approx(
            completed["downtime"] / 1e3)
        assert metrics.get("libvirt_domain_job_last_data_processed_bytes", domain=big_domain) == completed[
            "data_processed"]
        assert metrics.get("libvirt_domain_job_last_memory_iteration", domain=big_domain) == completed[
            "memory_iteration"]
        assert metrics.get("libvirt_domain_job_info_type", domain=big_domain) is None
        row = poll_until(lambda: _lvx_job(target, index), lambda r: "lvxJobLastOperation" in r, 10)
        assert (row["lvxJobLastType"], row["lvxJobLastOperation"], row["lvxJobLastTimeElapsed"]) == (
            str(completed["type"]), str(SAVE), str(completed["time_elapsed"]))
        assert "lvxJobOperation" not in row  # no job now, only the last one's outcome
        # The Zabbix template's job rules: the running job's items were all in the rows seen during the dump, the
        # last job's discovery finds this domain and each of its items answers.
        (running,) = [r for r in _zabbix_rules() if r["key"] == "lvx.job.discovery"]
        seen_columns = {name for row in rows for name in row}
        for proto in running["item_prototypes"]:
            assert _column_name(proto["snmp_oid"]) in seen_columns, proto["key"]
        (last,) = [r for r in _zabbix_rules() if r["key"] == "lvx.job.last.discovery"]
        for proto in last["item_prototypes"]:
            assert _column_name(proto["snmp_oid"]) in row, proto["key"]
    conn.close()

