"""What people plug the exporter into, each tried with the real tool: Grafana's queries through a real
Prometheus, Prometheus rules with promtool, the systemd unit with systemd-analyze."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEMO_HOST, ROOT, require_tool
from tests.support.process import Exporter
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


def test_every_dashboard_query_returns_data(scraped: tuple[Prometheus, str]) -> None:
    prom, instance = scraped
    board = json.loads(DASHBOARD.read_text())
    for variable in board["templating"]["list"][1:]:  # label_values(metric{...}, label) as Grafana runs it
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        selector = match.group(1).replace("$instance", instance.replace(".", "\\\\."))
        values = prom.api(f"label/{match.group(2)}/values", **{"match[]": selector})
        assert values, (variable["name"], selector)
    queries = _panel_queries()
    assert len(queries) >= 25
    for title, expr in queries:
        concrete = (expr.replace("$instance", instance.replace(".", "\\\\.")).replace("$domain", ".*")
                    .replace("$__rate_interval", "20s"))
        result = prom.query(concrete)  # raises on a parse error
        assert result, f"{title}: {concrete} returned nothing"


def test_rules_check_and_unit_tests() -> None:
    promtool = require_tool("promtool", "prometheus")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", RULES.with_name("libvirt-exporter.rules.test.yml").name],
                          capture_output=True, text=True, timeout=60, cwd=RULES.parent)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_rules_load_into_prometheus_and_stay_quiet_on_a_healthy_host(scraped: tuple[Prometheus, str]) -> None:
    prom, _ = scraped
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 8 and all(r["health"] == "ok" for r in rules), rules
    # the demo host has a crashed domain (crashy1): exactly that alert fires, nothing about the exporter
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        firing = prom.api("alerts")["alerts"]
        if firing:
            break
        time.sleep(0.5)
    names = {a["labels"]["alertname"] for a in firing}
    assert "LibvirtExporterDown" not in names and "LibvirtDown" not in names
    assert {a["labels"].get("domain") for a in firing if a["labels"]["alertname"] == "LibvirtDomainCrashed"} \
        == {"crashy1"}, firing


def _unit_copy(folder: Path, *dropins: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's command (verify checks that it exists)."""
    text = (ROOT / "systemd" / "libvirt-exporter.service").read_text()
    text = text.replace("/usr/local/bin/libvirt-exporter", str(Path(sys.executable).with_name("libvirt-exporter")))
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
        verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
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
    assert shutil.which("systemd-analyze") is None or "configuration error" not in exp.output()


def _readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def demo_agent(tmp_path: Path) -> Iterator[Exporter]:
    """The exporter as `make demo` runs it (SNMP on 127.0.0.1:1161, community public)."""
    require_tool("snmpwalk", "snmp")
    config = tmp_path / "demo.toml"
    config.write_text((ROOT / "examples" / "demo.toml").read_text())
    config.chmod(0o600)
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
    plugin = "/usr/lib/nagios/plugins/check_snmp"
    assert Path(plugin).exists(), "check_snmp missing (Debian package monitoring-plugins-standard)"
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
    config = tmp_path / "away.toml"
    config.write_text((ROOT / "examples" / "demo.toml").read_text())
    config.chmod(0o600)
    with Exporter(["--config.file", str(config), "--libvirt.uri", f"qemu+unix:///system?socket={tmp_path}/none",
                   "--state.directory", str(tmp_path / "state2")], log=tmp_path / "log2") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 0, what="libvirt_up 0")
        away = subprocess.run(up_check, shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert away.returncode == 2 and "*2*" in away.stdout, away.stdout
