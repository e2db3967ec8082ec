"""Writes grafana/libvirt-exporter.json, the dashboard, from the panel list below.

    python grafana/build.py          # rewrite the JSON
    python grafana/build.py --check  # exit 1 if the JSON is not what this script makes

Kept as code so that every query is in one readable list; a test evaluates
each of them through a real Prometheus scraping the demo exporter.  The JSON
follows Grafana 10/11's dashboard schema (schemaVersion 39): the data source
is a variable, and so are the hypervisor (``instance``) and the domains.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).with_name("libvirt-exporter.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
HOST = 'instance=~"$instance"'
DOM = 'instance=~"$instance", domain=~"$domain"'
RATE = "$__rate_interval"
NOVA = 'instance=~"$instance", project_name=~"$project", flavor_name=~"$flavor"'


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (expression, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    description: str = ""


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Exporter health", (
        Panel("libvirt connection", ((f"libvirt_up{{{HOST}}}", "{{instance}}"),), "bool_yes_no", "stat", 6,
              "1 while the exporter is connected to libvirtd."),
        Panel("Snapshot age", ((f"libvirt_exporter_snapshot_age_seconds{{{HOST}}}", "{{instance}}"),), "s", "stat", 6,
              "Age of the data being served; grows if a poll is stuck."),
        Panel("Poll duration", ((f"libvirt_exporter_poll_duration_seconds{{{HOST}}}", "{{instance}}"),), "s",
              width=6),
        Panel("Poll errors",
              ((f"sum by (instance, group) (increase(libvirt_exporter_poll_errors_total{{{HOST}}}[{RATE}]))",
                "{{instance}} {{group}}"),), "short", width=6),
    )),
    ("Host", (
        Panel("Domains", ((f"libvirt_domains_number{{{HOST}}}", "all {{instance}}"),
                          (f"count by (instance) (libvirt_domain_state_code{{{HOST}}} == 1)", "running {{instance}}")),
              "short", width=6),
        Panel("Host CPUs", ((f"libvirt_node_cpus{{{HOST}}}", "{{instance}}"),), "short", "stat", 6),
        Panel("Host memory", ((f"libvirt_node_memory_total_bytes{{{HOST}}}", "total {{instance}}"),
                              (f"libvirt_node_memory_free_bytes{{{HOST}}}", "free {{instance}}")), "bytes", width=6),
        Panel("Host CPU time", ((f"sum by (instance, mode) (rate(libvirt_node_cpu_seconds_total{{{HOST}}}[{RATE}]))",
                                 "{{instance}} {{mode}}"),), "s", width=6),
    )),
    ("Domain CPU", (
        Panel("CPU usage (cores)", ((f"rate(libvirt_domain_info_cpu_time_seconds_total{{{DOM}}}[{RATE}])",
                                     "{{domain}}"),), "short",
              description="CPU seconds per second: 1 is one host core busy."),
        Panel("vCPU usage", ((f"rate(libvirt_domain_vcpu_time_seconds_total{{{DOM}}}[{RATE}])",
                              "{{domain}} vcpu{{vcpu}}"),), "percentunit"),
        Panel("vCPUs", ((f"libvirt_domain_info_virtual_cpus{{{DOM}}}", "{{domain}}"),), "short"),
        Panel("State", ((f"libvirt_domain_state_code{{{DOM}}}", "{{domain}}"),), "short",
              description="0 nostate, 1 running, 2 blocked, 3 paused, 4 shutdown, 5 shut off, 6 crashed, "
                          "7 pmsuspended."),
    )),
    ("Domain memory", (
        Panel("Memory", ((f"libvirt_domain_info_memory_usage_bytes{{{DOM}}}", "{{domain}} current"),
                         (f"libvirt_domain_info_maximum_memory_bytes{{{DOM}}}", "{{domain}} maximum")), "bytes"),
        Panel("Balloon and guest view", ((f"libvirt_domain_memory_stats_actual_balloon_bytes{{{DOM}}}",
                                          "{{domain}} balloon"),
                                         (f"libvirt_domain_memory_stats_usable_bytes{{{DOM}}}", "{{domain}} usable"),
                                         (f"libvirt_domain_memory_stats_rss_bytes{{{DOM}}}", "{{domain}} rss")),
              "bytes"),
    )),
    ("Disks", (
        Panel("Disk throughput", ((f"rate(libvirt_domain_block_stats_read_bytes_total{{{DOM}}}[{RATE}])",
                                   "{{domain}} {{target_device}} read"),
                                  (f"-rate(libvirt_domain_block_stats_write_bytes_total{{{DOM}}}[{RATE}])",
                                   "{{domain}} {{target_device}} write")), "Bps"),
        Panel("Disk IOPS", ((f"rate(libvirt_domain_block_stats_read_requests_total{{{DOM}}}[{RATE}])",
                             "{{domain}} {{target_device}} read"),
                            (f"-rate(libvirt_domain_block_stats_write_requests_total{{{DOM}}}[{RATE}])",
                             "{{domain}} {{target_device}} write")), "iops"),
        Panel("Disk allocation", ((f"libvirt_domain_block_stats_allocation_bytes{{{DOM}}} / "
                                   f"libvirt_domain_block_stats_capacity_bytes{{{DOM}}}",
                                   "{{domain}} {{target_device}}"),), "percentunit"),
        Panel("Disk errors", ((f"increase(libvirt_domain_block_stats_errors_total{{{DOM}}}[{RATE}])",
                               "{{domain}} {{target_device}}"),), "short"),
    )),
    ("OpenStack", (
        Panel("CPU by project", ((f"sum by (project_name) (rate(libvirt_domain_info_cpu_time_seconds_total{{{HOST}}}"
                                  f"[{RATE}]) * on (instance, uuid) group_left (project_name) "
                                  f"libvirt_domain_openstack_info{{{NOVA}}})", "{{project_name}}"),), "short",
              description="Host cores used by the instances of each project (the Project and Flavor variables)."),
        Panel("Instances by flavor", ((f"count by (flavor_name) (libvirt_domain_openstack_info{{{NOVA}}})",
                                       "{{flavor_name}}"),), "short"),
    )),
    ("Jobs and I/O limits", (
        Panel("Migrations and jobs", ((f"libvirt_domain_job_info_memory_remaining_bytes{{{DOM}}}",
                                       "{{domain}} memory left"),
                                      (f"libvirt_domain_job_info_memory_processed_bytes{{{DOM}}}",
                                       "{{domain}} memory moved")), "bytes",
              description="A domain's running migration, save or dump: guest memory moved and still to move. "
                          "Memory left that stops shrinking is a migration that does not converge."),
        Panel("Use of I/O limits", ((f"(rate(libvirt_domain_block_stats_read_bytes_total{{{DOM}}}[{RATE}]) + "
                                     f"rate(libvirt_domain_block_stats_write_bytes_total{{{DOM}}}[{RATE}])) / "
                                     f"(libvirt_domain_block_stats_limit_total_bytes{{{DOM}}} > 0)",
                                     "{{domain}} {{target_device}} throughput"),
                                    (f"rate(libvirt_domain_block_stats_read_requests_total{{{DOM}}}[{RATE}]) / "
                                     f"(libvirt_domain_block_stats_limit_read_requests{{{DOM}}} > 0)",
                                     "{{domain}} {{target_device}} read requests"),
                                    (f"rate(libvirt_domain_block_stats_write_requests_total{{{DOM}}}[{RATE}]) / "
                                     f"(libvirt_domain_block_stats_limit_write_requests{{{DOM}}} > 0)",
                                     "{{domain}} {{target_device}} write requests")), "percentunit",
              description="Disk I/O as a share of the disk's limits (disks whose definition sets some); "
                          "at 100% the guest is throttled."),
    )),
    ("Network interfaces", (
        Panel("NIC throughput", ((f"rate(libvirt_domain_interface_stats_receive_bytes_total{{{DOM}}}[{RATE}])",
                                  "{{domain}} {{target_device}} rx"),
                                 (f"-rate(libvirt_domain_interface_stats_transmit_bytes_total{{{DOM}}}[{RATE}])",
                                  "{{domain}} {{target_device}} tx")), "Bps"),
        Panel("NIC packets", ((f"rate(libvirt_domain_interface_stats_receive_packets_total{{{DOM}}}[{RATE}])",
                               "{{domain}} {{target_device}} rx"),
                              (f"-rate(libvirt_domain_interface_stats_transmit_packets_total{{{DOM}}}[{RATE}])",
                               "{{domain}} {{target_device}} tx")), "pps"),
        Panel("NIC errors and drops", (
            (f"rate(libvirt_domain_interface_stats_receive_errors_total{{{DOM}}}[{RATE}]) + "
             f"rate(libvirt_domain_interface_stats_transmit_errors_total{{{DOM}}}[{RATE}])",
             "{{domain}} {{target_device}} errors"),
            (f"rate(libvirt_domain_interface_stats_receive_drops_total{{{DOM}}}[{RATE}]) + "
             f"rate(libvirt_domain_interface_stats_transmit_drops_total{{{DOM}}}[{RATE}])",
             "{{domain}} {{target_device}} drops")), "pps", width=24),
    )),
)


def _variable(name: str, label: str, query: str, multi: bool) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"{name}-query", "qryType": 1},
        "definition": query, "refresh": 2, "sort": 1, "multi": multi, "includeAll": multi,
        "allValue": ".*" if multi else None, "current": {}, "options": [], "hide": 0, "regex": "",
    }


def dashboard() -> dict:
    panels: list[dict] = []
    y = 0
    next_id = 1
    for row_title, row_panels in ROWS:
        panels.append({"type": "row", "title": row_title, "id": next_id, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        next_id += 1
        y += 1
        x = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            spec: dict = {
                "type": panel.kind, "title": panel.title, "id": next_id, "datasource": DS,
                "description": panel.description,
                "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}} if panel.kind == "timeseries" else
                           {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto"},
                "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + n),
                             "range": True, "editorMode": "code"}
                            for n, (expr, legend) in enumerate(panel.queries)],
            }
            panels.append(spec)
            next_id += 1
            x += panel.width
        y += 8
    return {
        "title": "libvirt exporter",
        "uid": "libvirt-exporter",
        "description": "Hypervisor, domain CPU, memory, disks and NICs, and the exporter's own health "
                       "(libvirt-exporter, kumina-compatible metric names).",
        "tags": ["libvirt", "kvm", "qemu"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            _variable("instance", "Hypervisor", "label_values(libvirt_up, instance)", False),
            _variable("domain", "Domain", 'label_values(libvirt_domain_info{instance=~"$instance"}, domain)', True),
            _variable("project", "Project",
                      'label_values(libvirt_domain_openstack_info{instance=~"$instance"}, project_name)', True),
            _variable("flavor", "Flavor", 'label_values(libvirt_domain_openstack_info{instance=~"$instance", '
                                          'project_name=~"$project"}, flavor_name)', True),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
