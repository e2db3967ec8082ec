"""What people plug the exporter into, each tried with the real tool: Grafana's queries through a real
Prometheus, Prometheus rules with promtool, the systemd unit with systemd-analyze."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import yaml

from exporter.hostgen import HostShape, domain_xml
from exporter.snmp import mib
from tests.conftest import DEMO_HOST, ROOT, require, require_tool
from tests.support import snmp
from tests.support.libvirtd import DaemonError, PrivateLibvirtd
from tests.support.process import Exporter, free_port
from tests.support.prometheus import Prometheus

DASHBOARD = ROOT / "grafana" / "libvirt-exporter.json"
RULES = ROOT / "prometheus" / "libvirt-exporter.rules.yml"


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, str]]:
    """A real Prometheus scraping the demo exporter every second, with our rules loaded."""
    require_tool("prometheus", "prometheus")
    folder = tmp_path_factory.mktemp("prom")
    with Exporter(["--libvirt.uri", f"test://{DEMO_HOST}", "--libvirt.poll-interval", "1s"],
                  log=folder / "exporter.log") as exp:
        instance = f"127.0.0.1:{exp.port}"
        scrape = f'  - job_name: libvirt\n    static_configs:\n      - targets: ["{instance}"]\n'
        with Prometheus(folder / "prometheus", scrape, rule_files=f"  - {RULES}") as prom:
            prom.wait_for(f'count_over_time(libvirt_up{{instance="{instance}"}}[1m]) >= 6', timeout=60)
            yield prom, instance


def _panel_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


def test_dashboard_is_generated_and_well_formed() -> None:
    subprocess.run([sys.executable, str(ROOT / "grafana" / "build.py"), "--check"], check=True, timeout=60)
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"instance", "domain"} <= set(variables)
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("host", "cpu", "memory", "disk", "nic", "poll", "libvirt connection"):
        assert topic in titles, topic


#: Panels whose data the test driver cannot give, with the test that shows them with data on real QEMU.
NEEDS_QEMU = {"Migrations and jobs": "tests/test_jobs.py"}


def test_every_dashboard_query_returns_data(scraped: tuple[Prometheus, str]) -> None:
    prom, instance = scraped
    board = json.loads(DASHBOARD.read_text())
    for variable in board["templating"]["list"][1:]:  # label_values(metric{...}, label) as Grafana runs it
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        selector = match.group(1).replace("$instance", instance.replace(".", "\\\\.")).replace("$project", ".*")
        values = prom.api(f"label/{match.group(2)}/values", **{"match[]": selector})
        assert values, (variable["name"], selector)
    queries = _panel_queries()
    assert len(queries) >= 25
    for title, expr in queries:
        concrete = (expr.replace("$instance", instance.replace(".", "\\\\.")).replace("$domain", ".*")
                    .replace("$project", ".*").replace("$flavor", ".*").replace("$__rate_interval", "20s"))
        result = prom.query(concrete)  # raises on a parse error
        assert result or title in NEEDS_QEMU, f"{title}: {concrete} returned nothing"


def test_rules_check_and_unit_tests() -> None:
    promtool = require_tool("promtool", "prometheus")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 11 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", RULES.with_name("libvirt-exporter.rules.test.yml").name],
                          capture_output=True, text=True, timeout=60, cwd=RULES.parent)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_rules_load_into_prometheus_and_stay_quiet_on_a_healthy_host(scraped: tuple[Prometheus, str]) -> None:
    prom, _ = scraped
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 11 and all(r["health"] == "ok" for r in rules), rules
    # the demo host has a crashed domain (crashy1): exactly that alert fires, nothing about the exporter
    firing = prom.until("alerts", "alerts")
    names = {a["labels"]["alertname"] for a in firing}
    assert "LibvirtExporterDown" not in names and "LibvirtDown" not in names
    assert {a["labels"].get("domain") for a in firing if a["labels"]["alertname"] == "LibvirtDomainCrashed"} \
        == {"crashy1"}, firing


def _unit_copy(folder: Path, *dropins: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's command (verify checks that it exists), as the README
    tells a virtualenv's owner to change it."""
    text = (ROOT / "systemd" / "libvirt-exporter.service").read_text()
    text = text.replace("ExecStart=/usr/bin/libvirt-exporter",
                        f"ExecStart={Path(sys.executable).with_name('libvirt-exporter')}")
    for dropin in dropins:
        text = text.replace("\n[Install]", dropin.read_text().split("[Service]", 1)[1] + "\n[Install]")
    path = folder / "libvirt-exporter.service"
    path.write_text(text)
    return path


def test_systemd_unit_verifies_and_scores(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    for dropins in ((), (ROOT / "systemd" / "port-161.conf",)):
        folder = tmp_path / str(len(dropins))
        folder.mkdir()
        unit = _unit_copy(folder, *dropins)
        # Documentation=man:libvirt-exporter(1): verify runs man, which finds the checkout's page through MANPATH.
        verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "MANPATH": f"{ROOT / 'man'}:"})
        assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
        security = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                                  timeout=60)
        score = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", security.stdout)
        assert score, security.stdout[-500:] + security.stderr
        readme = (ROOT / "systemd" / "README.md").read_text()
        if dropins:
            assert f"with `port-161.conf` it is {score.group(1)}" in readme
        else:
            assert f"**{score.group(1)} {score.group(2)}**" in readme
        assert float(score.group(1)) <= 2.0
    text = (ROOT / "systemd" / "libvirt-exporter.service").read_text()
    for directive in ("StateDirectory=libvirt-exporter", "EnvironmentFile=", "Restart=on-failure",
                      "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                      "CapabilityBoundingSet=\n", "RestrictAddressFamilies=", "SupplementaryGroups=libvirt"):
        assert directive in text, directive
    assert "CAP_NET_BIND_SERVICE" in (ROOT / "systemd" / "port-161.conf").read_text()


def test_the_units_environment_is_a_valid_configuration(tmp_path: Path) -> None:
    """The Environment= lines of the unit start the exporter (the URI swapped for the demo host)."""
    text = (ROOT / "systemd" / "libvirt-exporter.service").read_text()
    env = dict(re.findall(r"^Environment=(\w+)=(.*)$", text, re.M))
    assert env["LIBVIRT_EXPORTER_LIBVIRT_URI"] == "qemu:///system"
    env["LIBVIRT_EXPORTER_LIBVIRT_URI"] = f"test://{DEMO_HOST}"
    env["LIBVIRT_EXPORTER_STATE_DIRECTORY"] = str(tmp_path / "state")
    config = tmp_path / "config.toml"
    config.write_text('[libvirt]\npoll_interval = "2s"\n')
    env["LIBVIRT_EXPORTER_CONFIG_FILE"] = str(config)
    for line in (ROOT / "systemd" / "libvirt-exporter.default").read_text().splitlines():
        match = re.fullmatch(r"#(LIBVIRT_EXPORTER_\w+)=(.*)", line)
        if match and match.group(1) not in env and "LISTEN" not in match.group(1):
            env[match.group(1)] = match.group(2)  # the commented examples are valid too
    with Exporter([], env=env, log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="libvirt_up 1")
    assert f"connected to libvirt at test://{DEMO_HOST}" in exp.output()  # the URI came from the environment


def _readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def demo_agent(tmp_path: Path) -> Iterator[Exporter]:
    """The exporter as `make demo` runs it (SNMP on 127.0.0.1:1161, community public)."""
    require_tool("snmpwalk", "snmp")
    config = snmp.demo_config(tmp_path / "demo.toml")
    with Exporter(["--config.file", str(config), "--libvirt.uri", f"test://{DEMO_HOST}",
                   "--state.directory", str(tmp_path / "state")], log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_domains_number") == 6, what="six domains")
        yield exp


def test_readme_named_walk_prints_what_it_says(demo_agent: Exporter) -> None:
    text = _readme_section("SNMP")
    block = re.search(r"^    \$ (snmpwalk .+)\n((?:    \S.*\n)+)", text, re.M)
    assert block, "the README shows no walk with its output"
    command, expected = block.group(1), [line[4:] for line in block.group(2).splitlines()]
    ran = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    assert ran.stdout.splitlines() == expected


def test_readme_check_snmp_examples(demo_agent: Exporter, tmp_path: Path) -> None:
    """The README's check_snmp lines give the output shown; with libvirt away the 'exporter up' check is CRITICAL."""
    require(Path("/usr/lib/nagios/plugins/check_snmp").exists(),
            "check_snmp missing (Debian package monitoring-plugins-standard)")
    text = _readme_section("Nagios and Icinga")
    env_line = re.search(r"^    export MIBDIRS=(\S+)$", text, re.M)
    assert env_line
    env = {"PATH": "/usr/bin:/bin", "MIBDIRS": ":".join(str(ROOT / d) for d in env_line.group(1).split(":"))}
    pairs = re.findall(r"^    (/usr/lib/nagios/plugins/check_snmp .+)\n    (SNMP \w+ - .+)$", text, re.M)
    assert len(pairs) == 3
    codes = {"OK": 0, "WARNING": 1, "CRITICAL": 2}
    for command, expected in pairs:
        ran = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
        assert ran.stdout.strip() == expected, (command, ran.stdout, ran.stderr)
        assert ran.returncode == codes[expected.split()[1]]
    up_check = pairs[2][0]
    demo_agent.stop()
    down = subprocess.run(up_check + " -t 2 -e 0", shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=env)
    assert down.returncode == 3 and "Timeout" in down.stdout  # no exporter: UNKNOWN, as the README says
    # an exporter whose libvirtd is away: CRITICAL
    config = snmp.demo_config(tmp_path / "away.toml")
    with Exporter(["--config.file", str(config), "--libvirt.uri", f"qemu+unix:///system?socket={tmp_path}/none",
                   "--state.directory", str(tmp_path / "state2")], log=tmp_path / "log2") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 0, what="libvirt_up 0")
        away = subprocess.run(up_check, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert away.returncode == 2 and "*2*" in away.stdout, away.stdout


def test_zabbix_template_oids_exist_and_answer(demo_agent: Exporter) -> None:
    """Every OID of the Zabbix template names an object of our MIB (snmptranslate) and returns data (snmpget and
    snmpwalk against the agent, discovery indexes substituted); triggers and graphs refer to the template's keys."""
    subprocess.run([sys.executable, str(ROOT / "zabbix" / "build.py"), "--check"], check=True, timeout=60)
    data = yaml.safe_load((ROOT / "zabbix" / "libvirt-exporter-snmp.yaml").read_text())["zabbix_export"]
    assert data["version"] == "6.0"
    (template,) = data["templates"]
    name = template["template"]
    uuids = re.findall(r"uuid: ([0-9a-f]+)", (ROOT / "zabbix" / "libvirt-exporter-snmp.yaml").read_text())
    assert len(uuids) == len(set(uuids)) and all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", u)
                                                 for u in uuids)
    rules = template["discovery_rules"]
    # The job rules find nothing on the demo host (the test driver has no jobs): tests/test_jobs.py holds them
    # against a real QEMU dump and save.
    job_rules = {"lvx.job.discovery", "lvx.job.last.discovery"}
    assert {r["key"] for r in rules} == {"lvx.domain.discovery", "lvx.disk.discovery", "lvx.nic.discovery"} | job_rules
    target = "127.0.0.1:1161"
    args = ["-v2c", "-c", "public"]

    def object_name(numeric: str) -> str:
        out = snmp.ok("snmptranslate", numeric).strip()
        assert out.startswith("LIBVIRT-EXPORTER-MIB::"), (numeric, out)
        obj = out.split("::", 1)[1].split(".", 1)[0]
        assert obj in mib.BY_NAME, (numeric, out)
        return obj

    keys = {item["key"] for item in template["items"]}
    for item in template["items"]:
        if item["type"] == "SNMP_TRAP":
            continue  # filled by the server's SNMP trapper: tests/test_zabbix_server.py
        object_name(item["snmp_oid"])
        value = snmp.ok("snmpget", *args, "-On", target, item["snmp_oid"])
        assert "No Such" not in value and " = " in value, (item["key"], value)
    checked = 0
    for rule in rules:
        columns = re.findall(r"\{#\w+\},([\d.]+)", rule["snmp_oid"])
        assert len(columns) >= 2
        if rule["key"] in job_rules:
            for column in columns:
                object_name(column)
            for proto in rule["item_prototypes"]:
                keys.add(proto["key"])
                object_name(proto["snmp_oid"].replace("{#SNMPINDEX}", "1"))
            continue
        rows = {}
        for column in columns:
            object_name(column)
            rows[column] = snmp.values(snmp.ok("snmpwalk", *args, "-On", target, column, mibs=False))
            assert rows[column], (rule["key"], column)
        index = next(iter(rows[columns[0]])).removeprefix(columns[0].lstrip(".") + ".")
        for proto in rule["item_prototypes"]:
            keys.add(proto["key"])
            instance = proto["snmp_oid"].replace("{#SNMPINDEX}", index)
            object_name(instance)
            value = snmp.ok("snmpget", *args, "-On", target, instance, mibs=False)
            assert "No Such" not in value, (proto["key"], value)
            checked += 1
        assert rule["graph_prototypes"] and any(p.get("trigger_prototypes") for p in rule["item_prototypes"])
    assert checked >= 15
    expressions = [t["expression"] for i in template["items"] for t in i.get("triggers", [])]
    expressions += [t["expression"] for r in rules for p in r["item_prototypes"]
                    for t in p.get("trigger_prototypes", [])]
    for expression in expressions:
        for key in re.findall(rf"/{re.escape(name)}/([^,)]+)", expression):
            assert key in keys, (expression, key)
    graphs = data["graphs"] + [g for r in rules for g in r.get("graph_prototypes", [])]
    assert all(gi["item"]["key"] in keys and gi["item"]["host"] == name for g in graphs for gi in g["graph_items"])


def test_fleet_configuration_checks_and_relabels(tmp_path: Path) -> None:
    """prometheus/fleet.yml passes promtool, and Prometheus turns its file_sd targets into HOST:9177 with
    instance=HOST and the file's labels."""
    promtool = require_tool("promtool", "prometheus")
    check = subprocess.run([promtool, "check", "config", "fleet.yml"], capture_output=True, text=True, timeout=60,
                           cwd=ROOT / "prometheus")
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    fleet = yaml.safe_load((ROOT / "prometheus" / "fleet.yml").read_text())
    (job,) = fleet["scrape_configs"]
    folder = tmp_path / "prometheus"
    (folder / "targets").mkdir(parents=True)
    (folder / "targets" / "libvirt-test.yml").write_text('- targets: ["127.0.0.1"]\n  labels: {site: lab}\n')
    job["file_sd_configs"][0]["files"] = [str(folder / "targets" / "libvirt-*.yml")]
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    job["scrape_timeout"] = "1s"  # the helper scrapes every second
    scrape = yaml.safe_dump([job]).replace("\n", "\n  ")
    with Prometheus(folder, "  " + scrape) as prom:
        (target,) = prom.until("targets", "activeTargets")
        assert target["labels"]["instance"] == "127.0.0.1" and target["labels"]["site"] == "lab"
        assert target["scrapeUrl"] == "http://127.0.0.1:9177/metrics"


def test_remote_libvirtd_over_tcp_and_a_uri_alias(tmp_path: Path) -> None:
    """libvirt's remote transport: the exporter reads a libvirtd listening on 127.0.0.1 over test+tcp, once by
    URI and once through a uri_aliases name from libvirt.conf (given to the exporter's own mount namespace, so
    the machine's /etc/libvirt is untouched)."""
    require(shutil.which("libvirtd") is not None and shutil.which("unshare") is not None,
            "libvirtd or unshare missing (Debian packages libvirt-daemon, util-linux)")
    port = free_port()
    daemon = PrivateLibvirtd(tmp_path / "daemon", tcp_port=port)
    try:
        daemon.start()
    except DaemonError as exc:
        require(False, f"cannot start a private libvirtd listening on TCP: {exc}")
    uri = f"test+tcp://127.0.0.1:{port}/default"
    conn = libvirt.open(uri)  # keeps the shared test host alive and defines three domains on it
    try:
        shape = HostShape(domains=3, disks=1, nics=1, vcpus=2, prefix="remote", mixed_states=False)
        for i in range(shape.domains):
            conn.defineXML(domain_xml(shape, i, with_runstate=False)).create()
        with Exporter(["--libvirt.uri", uri], log=tmp_path / "log1") as exp:
            metrics = exp.wait_for(lambda m: (m.get("libvirt_domains_number") or 0) >= 3, what="the remote domains")
            names = {s["domain"] for s in metrics.series("libvirt_domain_info")}
            assert {"remote00000", "remote00001", "remote00002"} <= names
            assert metrics.get("libvirt_domain_block_stats_read_bytes_total", domain="remote00001",
                               target_device="vda") is not None
        etc = tmp_path / "client-etc"
        etc.mkdir()
        (etc / "libvirt.conf").write_text(f'uri_aliases = [\n  "hv-lab={uri}",\n]\n')
        prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount --bind "$0" /etc/libvirt && exec "$@"', str(etc)]
        with Exporter(["--libvirt.uri", "hv-lab"], log=tmp_path / "log2", prefix=prefix) as exp:
            metrics = exp.wait_for(lambda m: (m.get("libvirt_domains_number") or 0) >= 3, what="domains via the alias")
            assert metrics.get("libvirt_up") == 1
        assert "connected to libvirt at hv-lab" in exp.output()
    finally:
        conn.close()
        daemon.shutdown()
