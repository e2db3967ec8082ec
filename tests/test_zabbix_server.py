"""The Zabbix template in front of a real Zabbix 6.0 server (Debian's packages, tests/support/zabbix.py).

The template is imported through the frontend's API and linked to two hosts that point at the exporter on the
demo host, one by SNMPv2c (the community in ``{$SNMP_COMMUNITY}``, as the README says) and one by SNMPv3
authPriv.  Discovery and item checks are forced with "Execute now" tasks.  Lifecycle notifications go the
way Zabbix users receive them: snmptrapd with a trap receiver in its embedded Perl
(zabbix/zabbix-trap-receiver.pl) writes the server's SNMPTrapperFile, which its SNMP trapper reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from exporter.snmp import mib_lvx
from tests.conftest import ROOT, demo_agent, require
from tests.support import snmp
from tests.support.process import Exporter, Metrics
from tests.support.trapd import Trapd
from tests.support.zabbix import Api, Zabbix, missing, zabbix_stack

TEMPLATE_FILE = ROOT / "zabbix" / "libvirt-exporter-snmp.yaml"
TEMPLATE = "libvirt-exporter SNMP"
DOMAIN_RULES = ("lvx.domain.discovery", "lvx.disk.discovery", "lvx.nic.discovery")
#: Per-domain items with stable values on the demo host, and the /metrics series each must equal.
DOMAIN_ITEMS = {"lvx.domain.state": "libvirt_domain_state_code", "lvx.domain.vcpus": "libvirt_domain_info_virtual_cpus",
                "lvx.domain.memory": "libvirt_domain_info_memory_usage_bytes",
                "lvx.domain.memory.max": "libvirt_domain_info_maximum_memory_bytes"}
HOST_ITEMS = {"lvx.domains": "libvirt_domains_number", "lvx.host.cpus": "libvirt_node_cpus",
              "lvx.host.memory.total": "libvirt_node_memory_total_bytes", "lvx.libvirt.connection": None}
#: What configuration.import may create (everything the template holds).
IMPORT_RULES = {kind: {"createMissing": True, "updateExisting": True}
                for kind in ("groups", "templates", "items", "triggers", "discoveryRules", "graphs", "valueMaps")}


@dataclass
class Setup:
    api: Api
    exporter: Exporter
    target: str  # the agent's SNMP address
    hosts: dict[str, str]  # "v2" / "v3": hostid
    trap_file_text: Callable[[], str]


@pytest.fixture(scope="module")
def zabbix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zabbix]:
    reason = missing()
    require(reason is None, f"the Zabbix tier: {reason}")
    with zabbix_stack(tmp_path_factory.mktemp("zabbix")) as stack:
        yield stack


@pytest.fixture(scope="module")
def setup(zabbix: Zabbix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("zabbix-agent")
    receiver = ROOT / "zabbix" / "zabbix-trap-receiver.pl"
    perl = f'perl $zabbix_trap_file = "{zabbix.server.trap_file}";\nperl do "{receiver}";\n'
    with Trapd(folder / "trapd", 1, [], extra_conf=perl) as trapd:
        notify = f"""{snmp.OPERATOR_CONFIG}
[[snmp.notify]]
address = "127.0.0.1:{trapd.ports[0]}"
community = "zabbix-trap-community"
mibs = ["libvirt-exporter", "libvirt"]
"""
        with demo_agent(folder, notify) as (exporter, target):
            api = zabbix.api
            # The data set's own host polls an agent that is not there: disabled, it stays quiet.
            (own,) = api.call("host.get", {"filter": {"host": "Zabbix server"}})
            api.call("host.update", {"hostid": own["hostid"], "status": 1})
            assert api.call("configuration.import", {"format": "yaml", "source": TEMPLATE_FILE.read_text(),
                                                     "rules": IMPORT_RULES}) is True
            hosts = _create_hosts(api, target)
            yield Setup(api, exporter, target, hosts, zabbix.server.trap_file.read_text)


def _create_hosts(api: Api, target: str) -> dict[str, str]:
    (template,) = api.call("template.get", {"filter": {"host": TEMPLATE}})
    group = api.call("hostgroup.create", {"name": "libvirt-exporter tests"})["groupids"][0]
    address, port = target.rsplit(":", 1)
    base = {"type": 2, "main": 1, "useip": 1, "ip": address, "dns": "", "port": port}
    v2 = {**base, "details": {"version": 2, "bulk": 1, "community": "{$SNMP_COMMUNITY}"}}
    v3 = {**base, "details": {"version": 3, "bulk": 1, "securityname": snmp.V3_USER, "securitylevel": 2,
                              "authprotocol": 3, "authpassphrase": snmp.V3_AUTH,  # SHA-256
                              "privprotocol": 1, "privpassphrase": snmp.V3_PRIV, "contextname": ""}}  # AES-128
    hosts = {}
    for name, interface, macros in (("v2", v2, [{"macro": "{$SNMP_COMMUNITY}", "value": snmp.COMMUNITY}]),
                                    ("v3", v3, [])):
        created = api.call("host.create", {"host": f"hypervisor-snmp{name}", "groups": [{"groupid": group}],
                                           "templates": [{"templateid": template["templateid"]}],
                                           "interfaces": [interface], "macros": macros})
        hosts[name] = created["hostids"][0]
    return hosts


def _items(api: Api, hostid: str, **extra: Any) -> list[dict[str, Any]]:
    return list(api.call("item.get", {"hostids": [hostid], "output": ["itemid", "key_", "name", "lastvalue",
                                                                        "lastclock", "state", "error", "status"],
                                      **extra}))


def _discovered(s: Setup, hostid: str) -> list[dict[str, Any]]:
    """The host's items once discovery (forced) has found every domain of the demo host, and the NICs and disks
    of its active ones."""
    rules = s.api.call("discoveryrule.get", {"hostids": [hostid], "output": ["itemid"]})
    metrics = s.exporter.scrape()
    wanted = {"lvx.domain.state[": len(metrics.series("libvirt_domain_state_code")),
              "lvx.nic.rx.bytes[": len(metrics.series("libvirt_domain_interface_stats_receive_bytes_total")),
              "lvx.disk.read.bytes[": len(metrics.series("libvirt_domain_block_stats_read_bytes_total"))}

    def found() -> list[dict[str, Any]] | None:
        items = _items(s.api, hostid)
        done = all(len([i for i in items if i["key_"].startswith(key)]) >= n for key, n in wanted.items())
        return items if done else None

    return s.api.until(found, 120, f"discovery to find {wanted}",
                       nudge=lambda: s.api.check_now([r["itemid"] for r in rules]))


def _domain_names(items: list[dict[str, Any]]) -> dict[str, str]:
    """{SNMP index: domain name} from the discovered state items ("Domain NAME: state")."""
    return {i["key_"][len("lvx.domain.state["):-1]: i["name"].removeprefix("Domain ").removesuffix(": state")
            for i in items if i["key_"].startswith("lvx.domain.state[")}


def test_template_imports_and_discovers_every_domain(setup: Setup) -> None:
    """The import keeps everything the file holds; each host discovers one entity per domain, disks and NICs,
    with no error on any rule; the job rules find nothing on the test driver, without an error either."""
    data = yaml.safe_load(TEMPLATE_FILE.read_text())["zabbix_export"]
    (wanted,) = data["templates"]
    (template,) = setup.api.call("template.get", {"filter": {"host": TEMPLATE}, "selectItems": "count",
                                                  "selectDiscoveries": ["key_"], "selectValueMaps": ["name"],
                                                  "selectMacros": ["macro"], "selectGraphs": "count"})
    assert int(template["items"]) == len(wanted["items"])
    assert {d["key_"] for d in template["discoveries"]} == {r["key"] for r in wanted["discovery_rules"]}
    assert {v["name"] for v in template["valuemaps"]} == {v["name"] for v in wanted["valuemaps"]}
    assert int(template["graphs"]) == len(data["graphs"])
    prototypes = setup.api.call("itemprototype.get", {"templateids": [template["templateid"]], "output": ["key_"]})
    assert len(prototypes) == sum(len(r["item_prototypes"]) for r in wanted["discovery_rules"])
    triggers = setup.api.call("triggerprototype.get", {"templateids": [template["templateid"]]})
    assert len(triggers) == sum(len(p.get("trigger_prototypes", [])) for r in wanted["discovery_rules"]
                                for p in r["item_prototypes"])
    metrics = setup.exporter.scrape()
    domains = {s["domain"] for s in metrics.series("libvirt_domain_state_code")}
    for name, hostid in setup.hosts.items():
        items = _discovered(setup, hostid)
        assert sorted(_domain_names(items).values()) == sorted(domains), name
        assert len([i for i in items if i["key_"].startswith("lvx.domain.vcpus[")]) == len(domains)
        disks = {i["key_"] for i in items if i["key_"].startswith("lvx.disk.read.bytes[")}
        nics = {i["key_"] for i in items if i["key_"].startswith("lvx.nic.rx.bytes[")}
        assert len(nics) == len(metrics.series("libvirt_domain_interface_stats_receive_bytes_total")), (name, nics)
        # lvxBlockTable also lists legacy1's disk (shut off): the rule's filter leaves it out.
        assert len(disks) == len(metrics.series("libvirt_domain_block_stats_read_bytes_total")), (name, disks)
        rules = setup.api.call("discoveryrule.get", {"hostids": [hostid], "output": ["key_", "state", "error"]})
        assert all(r["state"] == "0" and r["error"] == "" for r in rules), rules


def _wait_values(s: Setup, hostid: str) -> tuple[list[dict[str, Any]], Metrics]:
    """The host's items after checks forced until each polled item has a value or is unsupported (those whose
    value is a rate need two checks: they are not waited for, but for the shut-off domain's CPU usage)."""
    items = _discovered(s, hostid)
    polled = [i["itemid"] for i in items if not i["key_"].startswith("snmptrap")]
    rates = {i["itemid"] for i in s.api.call("item.get", {"itemids": polled, "output": ["itemid", "name"],
                                                          "selectPreprocessing": ["type"]})
             if any(step["type"] == "10" for step in i["preprocessing"])  # change per second
             and i["name"] != "Domain legacy1: CPU usage"}

    def read() -> list[dict[str, Any]] | None:
        now = _items(s.api, hostid, itemids=polled)
        return now if all(i["lastclock"] != "0" or i["state"] == "1" for i in now if i["itemid"] not in rates) \
            else None

    return (s.api.until(read, 120, "a value (or an error) for each polled item", nudge=lambda: s.api.check_now(polled)),
            s.exporter.scrape())


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_item_values_equal_metrics(setup: Setup, version: str) -> None:
    """No item is unsupported.  Each domain's state, vCPUs, memory and maximum memory, and the host's domain
    count, CPUs and memory, as Zabbix read them by SNMP (with the template's preprocessing), equal what /metrics
    says; the CPU usage of the shut-off domain reads 0."""
    items, metrics = _wait_values(setup, setup.hosts[version])
    unsupported = {i["key_"]: i["error"] for i in items if i["state"] == "1"}
    assert not unsupported, unsupported  # a stopped domain's disks are not discovered, its CPU usage reads 0
    names = _domain_names(items)
    compared = 0
    for item in items:
        base, _, index = item["key_"].partition("[")
        if base in DOMAIN_ITEMS:
            expected = metrics.get(DOMAIN_ITEMS[base], domain=names[index.rstrip("]")])
        elif item["key_"] in HOST_ITEMS:
            series = HOST_ITEMS[item["key_"]]
            expected = metrics.get(series) if series else 1.0  # lvxLibvirtConnection: up(1)
        else:
            continue
        assert expected is not None and float(item["lastvalue"]) == expected, (item["key_"], item["name"],
                                                                                item["lastvalue"], expected)
        compared += 1
    assert compared == len(DOMAIN_ITEMS) * len(names) + len(HOST_ITEMS)
    (off_cpu,) = [i for i in items if i["name"] == "Domain legacy1: CPU usage"]
    assert off_cpu["state"] == "0" and off_cpu["lastclock"] != "0" and float(off_cpu["lastvalue"]) == 0.0


def _trigger_values(s: Setup, hostid: str) -> dict[str, str]:
    triggers = s.api.call("trigger.get", {"hostids": [hostid], "output": ["description", "value"],
                                          "expandDescription": True})
    return {t["description"]: t["value"] for t in triggers}


def _admin_state(s: Setup, domain: str, state: str) -> None:
    index = snmp.domain_index(s.target, domain)
    result = snmp.run("snmpset", *snmp.OPERATOR_ARGS, "-t", "5", "-r", "0", s.target, f"lvxDomainAdminState.{index}",
                      "i", state)
    assert result.returncode == 0, result.stderr
    assert snmp.wait_outcome(s.target, index) == "3"  # success


def _until_triggers(s: Setup, hostid: str, domain: str, wanted: dict[str, str]) -> None:
    """Force the domain's state check until its triggers have the ``wanted`` values (1 problem, 0 OK)."""
    (state,) = [i for i in _items(s.api, hostid, search={"key_": "lvx.domain.state["})
                if i["name"] == f"Domain {domain}: state"]
    s.api.until(lambda: all(_trigger_values(s, hostid).get(t) == v for t, v in wanted.items()), 120,
                f"triggers {wanted}", nudge=lambda: s.api.check_now([state["itemid"]]))


def test_triggers_fire_for_paused_and_crashed_domains_and_clear(setup: Setup) -> None:
    """crashy1 starts crashed and batch1 paused: their triggers are problems.  web1 paused by an SNMP SET:
    "not running" fires, and clears once it is resumed; crashy1 powered off clears "crashed" (it is still not
    running), started again it clears "not running" too."""
    hostid = setup.hosts["v2"]
    _wait_values(setup, hostid)
    values = _trigger_values(setup, hostid)
    assert values["Domain crashy1 crashed"] == "1" and values["Domain crashy1 is not running"] == "1"
    assert values["Domain batch1 is not running"] == "1" and values["Domain batch1 crashed"] == "0"
    assert values["Domain web1 is not running"] == "0" and values["libvirt connection lost"] == "0"
    _admin_state(setup, "web1", "paused")
    _until_triggers(setup, hostid, "web1", {"Domain web1 is not running": "1", "Domain web1 crashed": "0"})
    problems = setup.api.call("problem.get", {"hostids": [hostid], "output": ["name"]})
    assert "Domain web1 is not running" in {p["name"] for p in problems}
    _admin_state(setup, "web1", "running")
    _until_triggers(setup, hostid, "web1", {"Domain web1 is not running": "0"})
    _admin_state(setup, "crashy1", "off")
    _until_triggers(setup, hostid, "crashy1", {"Domain crashy1 crashed": "0", "Domain crashy1 is not running": "1"})
    _admin_state(setup, "crashy1", "running")
    _until_triggers(setup, hostid, "crashy1", {"Domain crashy1 is not running": "0"})


def _trap_history(s: Setup, hostid: str, key: str) -> list[str]:
    (item,) = _items(s.api, hostid, filter={"key_": key})
    rows = s.api.call("history.get", {"itemids": [item["itemid"]], "history": 2, "output": ["value"],
                                      "sortfield": "clock", "sortorder": "ASC"})
    return [r["value"] for r in rows]


def test_lifecycle_traps_land_on_the_trap_items(setup: Setup) -> None:
    """batch1 resumed and paused again by SNMP SETs: snmptrapd's Perl receiver writes each notification to the
    SNMPTrapperFile, Zabbix's SNMP trapper gives our MIB's (lvxDomainResumed, lvxDomainSuspended) to the
    template's snmptrap[...] item and libvirt-snmp's libvirtGuestNotif to snmptrap.fallback, on both hosts
    (the trapper matches the sender's address, which both interfaces have)."""
    (key,) = [i["key"] for i in yaml.safe_load(TEMPLATE_FILE.read_text())["zabbix_export"]["templates"][0]["items"]
              if i["type"] == "SNMP_TRAP" and i["key"] != "snmptrap.fallback"]
    lvx = ".".join(map(str, mib_lvx.LVX_ROOT))
    name_column = f".{lvx}.1.2.1.2."  # lvxDomainName.INDEX, a varbind of each
    _admin_state(setup, "batch1", "running")
    _admin_state(setup, "batch1", "paused")
    for name, hostid in setup.hosts.items():
        def ours(hostid: str = hostid) -> list[str] | None:
            texts = [t for t in _trap_history(setup, hostid, key) if '"batch1"' in t]
            return texts if len(texts) >= 2 else None

        texts = setup.api.until(ours, 60, f"{name}: batch1's two notifications on {key}")
        for code in (4, 3):  # lvxDomainResumed, lvxDomainSuspended (the same second: no order to rely on)
            assert any(f"OID: .{lvx}.0.{code}\n" in t for t in texts), (code, texts)
        assert all(name_column in t and "ZBXTRAP" not in t for t in texts), texts
        others = setup.api.until(lambda hostid=hostid: [t for t in _trap_history(setup, hostid, "snmptrap.fallback")
                                                        if '"batch1"' in t], 60, f"{name}: libvirtGuestNotif")
        assert all(".1.3.6.1.4.1.36957" in t and lvx not in t for t in others), others
    assert "zabbix-trap-community" not in setup.trap_file_text()  # the receiver keeps communities out
