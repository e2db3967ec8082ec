"""Prometheus's own SNMP path: the snmp_exporter module we ship (prometheus/snmp.yml) is current, says what
the snmp_exporter generator says for our MIB, and Debian's snmp_exporter reading our agent with it serves the
values our /metrics serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from exporter import fields, snmpyml
from exporter.fieldtypes import Field
from exporter.snmp.syntax import C64
from tests.conftest import ROOT, demo_agent, require, require_tool
from tests.support import snmp
from tests.support.process import Metrics
from tests.support.snmp_exporter import SnmpExporter, packaged_binary

#: The field tables the module walks, with the label each one's rows carry besides the domain's.
_DEVICE_LABEL = {"domain": None, "vcpu": ("lvxVcpuNumber", "vcpu"), "block": ("lvxBlockTarget", "target_device"),
                 "interface": ("lvxInterfaceTarget", "target_device"), "host": None}


def test_committed_module_is_generated() -> None:
    """prometheus/snmp.yml is exactly what `python -m exporter.snmpyml` writes from the field table and MIB."""
    assert snmpyml.OUTPUT.read_text(encoding="utf-8") == snmpyml.render(), \
        "prometheus/snmp.yml is stale: run python -m exporter.snmpyml"


def _generator_module(tmp_path: Path) -> dict[str, Any]:
    """What Debian's prometheus-snmp-generator makes of LIBVIRT-EXPORTER-MIB for the same walk and lookups."""
    generator = packaged_binary("prometheus-snmp-generator")
    require(generator is not None, "prometheus-snmp-generator not found (Debian package prometheus-snmp-exporter)")
    assert generator is not None
    require(snmp.BASE_MIBS.joinpath("SNMPv2-SMI").exists(), "base MIBs missing: run `make base-mibs`")
    mibs = tmp_path / "mibs"
    mibs.mkdir()
    for name in ("SNMPv2-SMI", "SNMPv2-TC", "SNMPv2-CONF"):  # all our MIB imports; nothing else to misparse
        shutil.copy(snmp.BASE_MIBS / name, mibs / name)
    shutil.copy(snmpyml.MIB_TEXT, mibs)
    walks = snmpyml._WALKS
    config = {"modules": {snmpyml.MODULE: {
        "walk": ["lvxHost", "lvxDomainTable", "lvxVcpuTable", "lvxBlockTable", "lvxInterfaceTable"],
        "lookups": [{"source_indexes": list(sources), "lookup": target}
                    for sources, target in dict.fromkeys(lk for *_, lookups in walks for lk in lookups)],
    }}}
    (tmp_path / "generator.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run([generator, "--fail-on-parse-errors", "generate"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"MIBDIRS": str(mibs), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    module: dict[str, Any] = yaml.safe_load((tmp_path / "snmp.yml").read_text())[snmpyml.MODULE]
    return module


def test_debian_generator_agrees(tmp_path: Path) -> None:
    """Every metric of our module (name, OID, type, help, indexes, lookups) is the generator's, and the generator
    has no other metric but the not-accessible index columns, which no agent ever returns.  One difference is
    ours on purpose: the generator types every Counter64-based object a counter, LvxGauge64 (sizes, limits)
    included; ours are gauges."""
    theirs = _generator_module(tmp_path)
    ours = snmpyml.module()
    assert ours["walk"] == theirs["walk"]
    by_name = {m["name"]: {k: v for k, v in m.items() if k != "enum_values"} for m in theirs["metrics"]}
    index_columns = {"lvxDomainIndex", "lvxVcpuNumber", "lvxBlockIndex", "lvxInterfaceIndex"}
    assert set(by_name) - {m["name"] for m in ours["metrics"]} == index_columns
    mib = snmpyml.MIB_TEXT.read_text()
    gauge64 = set(re.findall(r"^(\w+)\s+OBJECT-TYPE\s+SYNTAX\s+LvxGauge64\b", mib, re.MULTILINE))
    assert {"lvxBlockCapacity", "lvxBlockLimitTotalBytes"} <= gauge64
    for metric in ours["metrics"]:
        expected = by_name[metric["name"]]
        if metric["name"] in gauge64:
            assert expected["type"] == "counter" and metric["type"] == "gauge", metric["name"]
            expected = dict(expected, type="gauge")
        assert metric == expected, metric["name"]


def _config(tmp_path: Path) -> Path:
    """The shipped module twice, as a site would configure it: with the agent's community, and with its v3 user."""
    module = yaml.safe_load(snmpyml.OUTPUT.read_text())[snmpyml.MODULE]
    v2 = dict(module, auth={"community": snmp.COMMUNITY})
    v3 = dict(module, version=3, auth={"username": snmp.V3_USER, "security_level": "authPriv",
                                       "password": snmp.V3_AUTH, "auth_protocol": "SHA256",
                                       "priv_protocol": "AES", "priv_password": snmp.V3_PRIV})
    path = tmp_path / "snmp.yml"
    path.write_text(yaml.safe_dump({"lvx_v2": v2, "lvx_v3": v3}, sort_keys=False))
    return path


def _as_metric(field: Field, value: float, served: float) -> bool:
    """Whether an SNMP value (in the MIB's unit) is the value /metrics serves (in the family's base unit).

    snmp_exporter wraps Counter64 values at 2^53 by default (--snmp.wrap-large-counters), so that a float64
    holds them exactly: a value past that (the test driver's CPU times are nanoseconds since 1970) is held
    against the /metrics value taken modulo 2^53, within the rounding that value carries."""
    if field.unit == "bool":
        return served == (1 if value == 1 else 0)
    if field.unit == "percent":
        return round(served) == value
    if field.column is not None and field.column.unit == "kib" and field.unit == "bytes":
        return int(served) // 1024 == value
    raw = served / (field.metric_value(1) or 1)
    if field.column is not None and field.column.syntax == C64 and raw >= 2**53:
        return abs(value - raw % 2**53) <= raw * 2**-50
    return field.metric_value(int(value)) == served


def _snmp_series(scraped: Metrics) -> dict[tuple[str, str, str], tuple[Field, float]]:
    """(family, domain, device) -> (field, SNMP value) for every sample of a column that has a /metrics family."""
    by_column = {f.column.name: f for f in fields.FIELDS
                 if f.column is not None and f.family is not None and f.table in _DEVICE_LABEL}
    found = {}
    for (name, labels), value in scraped.samples.items():
        field = by_column.get(name)
        if field is None:
            continue
        lbl = dict(labels)
        device = _DEVICE_LABEL[field.table]
        assert field.family is not None
        found[(field.family.name, lbl.get("lvxDomainName", ""), lbl[device[0]] if device else "")] = (field, value)
    return found


def _served_series(metrics: Metrics, families: set[str]) -> dict[tuple[str, str, str], float]:
    found = {}
    for (name, labels), value in metrics.samples.items():
        if name in families:
            lbl = dict(labels)
            found[(name, lbl.get("domain", ""), lbl.get("target_device", lbl.get("vcpu", "")))] = value
    return found


def test_snmp_exporter_serves_what_metrics_serves(tmp_path: Path) -> None:
    """Debian's snmp_exporter with our module scrapes the agent (v2c and v3 authPriv) without a failed, retried
    or unmatched varbind and without a warning, types counters as counters, labels rows with the domain's name
    and the device, and every per-domain, per-device and host value equals /metrics' for the same snapshot."""
    binary = packaged_binary("prometheus-snmp-exporter")
    require(binary is not None, "prometheus-snmp-exporter not found (Debian package prometheus-snmp-exporter)")
    assert binary is not None
    with demo_agent(tmp_path) as (exp, target), \
            SnmpExporter(binary, _config(tmp_path), tmp_path / "snmp_exporter.log") as snmp_exporter:
        served = exp.scrape()
        for module in ("lvx_v2", "lvx_v3"):
            status, text = snmp_exporter.scrape(module, target)
            assert status == 200, text[-2000:]
            scraped = Metrics(text)
            assert "snmp_error" not in text
            assert scraped.get("snmp_scrape_packets_retried") == 0
            pdus = scraped.get("snmp_scrape_pdus_returned")
            samples = [n for n, _ in scraped.samples if not n.startswith("snmp_scrape_")]
            assert pdus is not None and pdus == len(samples), "some walked varbind matched no metric of the module"
            series = _snmp_series(scraped)
            domains = {d for _, d, _ in series} - {""}  # "": the host's scalars
            assert domains == {s["domain"] for s in served.series("libvirt_domain_info")}
            wanted = _served_series(served, {family for family, *_ in series})
            assert set(series) == set(wanted)
            wrong = {key: (value, wanted[key]) for key, (field, value) in series.items()
                     if not _as_metric(field, value, wanted[key])}
            assert not wrong, f"SNMP value, /metrics value: {wrong}"
        counters = {f.column.name for f in fields.FIELDS if f.column and f.family and f.family.kind == "counter"}
        typed = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
        assert {name for name, kind in typed.items() if kind == "counter"} == counters & set(typed)
        assert {"lvxDomainCpuTime", "lvxBlockReadBytes", "lvxInterfaceTransmitBytes"} <= counters & set(typed)
        assert typed["lvxBlockCapacity"] == "gauge"  # an LvxGauge64: Counter64 on the wire, a gauge all the same
        log = snmp_exporter.output()
        assert "level=warn" not in log and "level=error" not in log, log[-3000:]
        for complaint in ("Unable to", "not supported by target", "Error scraping target", "Error parsing"):
            assert complaint not in log, log[-3000:]


def test_readme_scrape_job_is_a_valid_prometheus_config(tmp_path: Path) -> None:
    """The README's scrape job for snmp_exporter passes `promtool check config`, and asks for our module."""
    promtool = require_tool("promtool", "prometheus")
    section = (ROOT / "README.md").read_text().split("### Through Prometheus's snmp_exporter\n", 1)[1]
    job = section.split("```yaml\nscrape_configs:", 1)[1].split("```", 1)[0]
    (tmp_path / "prometheus.yml").write_text("scrape_configs:" + job)
    check = subprocess.run([promtool, "check", "config", "prometheus.yml"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    (scrape,) = yaml.safe_load(job.join(["scrape_configs:", ""]))["scrape_configs"]
    assert scrape["params"]["module"] == [snmpyml.MODULE]
