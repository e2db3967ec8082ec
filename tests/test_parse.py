"""The pure parsers of the libvirt boundary, fed answers recorded from libvirt (no connection, no daemon).

tests/data/qemu-domain-stats.json is a real QEMU domain's ``getAllDomainStats``
record (every group) with its XML and per-domain call results;
tests/data/test-driver-calls.json holds what libvirt's test driver answers
(bulk ``state`` only, so the per-domain fallback calls).  Both are written by
tests/support/record_stats.py, whose docstring says how to re-record them;
every expected number below is read from the files, so a new recording needs
no edit here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from exporter.snapshot import (
    DOMAIN_GROUPS,
    PAUSED_IOERROR,
    STATE_NOSTATE,
    STATE_PAUSED,
    Block,
    Domain,
    Host,
    Interface,
    Memory,
)
from exporter.source import domxml, parse
from exporter.source.domain import build_domain

DATA = Path(__file__).resolve().parent / "data"
ALL = frozenset(DOMAIN_GROUPS)


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))["domains"]


@pytest.fixture(scope="module")
def qemu() -> dict[str, Any]:
    (record,) = _load("qemu-domain-stats.json").values()
    return record


@pytest.fixture(scope="module")
def test_driver() -> dict[str, Any]:
    return _load("test-driver-calls.json")


class Recorded:
    """A DomainReads that answers from a recording and notes each call; a recorded failure answers None."""

    def __init__(self, record: Mapping[str, Any], fail: frozenset[str] = frozenset()) -> None:
        self.record = record
        self.fail = fail
        self.calls: list[str] = []

    def _answer(self, key: str, target: str | None = None) -> Any:
        self.calls.append(key if target is None else f"{key}({target})")
        value = self.record.get(key)
        if target is not None and value is not None:
            value = value.get(target)
        if key in self.fail or (isinstance(value, dict) and set(value) == {"error"}):
            return None
        return value

    def state(self) -> list[int]:
        self.calls.append("state")
        return list(self.record["state"])

    def info(self) -> Any:
        return self._answer("info")

    def cpu_stats(self) -> Any:
        return self._answer("cpu_stats")

    def memory_stats(self) -> Any:
        return self._answer("memory_stats")

    def vcpus(self) -> Any:
        return self._answer("vcpus")

    def block_stats(self, target: str) -> Any:
        return self._answer("block_stats", target)

    def block_info(self, target: str) -> Any:
        return self._answer("block_info", target)

    def interface_stats(self, target: str) -> Any:
        return self._answer("interface_stats", target)

    def block_io_tune(self, target: str) -> Any:
        return self._answer("block_io_tune", target)

    def disk_errors(self) -> Any:
        return self._answer("disk_errors")


def _build(record: Mapping[str, Any], *, stats: Mapping[str, Any] | None = None, bulk: frozenset[str] = ALL,
           wanted: frozenset[str] = ALL, monitor: bool = True, reads: Recorded | None = None,
           placement: parse.Placement | None = None) -> Domain:
    return build_domain(
        name=record["name"], uuid=record["uuid"], dom_id=record["id"], persistent=record["persistent"],
        autostart=record["autostart"], cfg=domxml.parse(record["xml"]),
        stats=record["bulk"] if stats is None else stats, bulk=bulk, wanted=wanted,
        read=reads if reads is not None else Recorded(record), monitor=monitor, placement=placement,
    )


# -- a real QEMU domain's bulk record ---------------------------------------------------


def test_qemu_recording_has_every_group(qemu: dict[str, Any]) -> None:
    """A re-recording that lost a group would make the tests below vacuous."""
    keys = set(qemu["bulk"])
    for key in ("state.state", "cpu.time", "cpu.user", "cpu.system", "balloon.current", "balloon.maximum",
                "vcpu.current", "vcpu.maximum", "vcpu.0.time", "vcpu.0.wait", "vcpu.0.delay", "block.count",
                "block.0.rd.bytes", "block.0.capacity", "net.count", "net.0.rx.bytes"):
        assert key in keys, key
    assert qemu["id"] >= 0 and qemu["bulk"]["block.count"] >= 1 and qemu["bulk"]["net.count"] >= 1


def test_qemu_bulk_record_parses_to_the_recorded_numbers(qemu: dict[str, Any]) -> None:
    """Every field of the Domain is the recorded bulk value, in the snapshot's unit (ns, KiB, bytes)."""
    s = qemu["bulk"]
    reads = Recorded(qemu)
    dom = _build(qemu, reads=reads)
    assert reads.calls == ["vcpus"]  # only the physical CPU of each vCPU, which the bulk group lacks
    assert (dom.name, dom.uuid, dom.id, dom.active) == (qemu["name"], qemu["uuid"], qemu["id"], True)
    assert (dom.state, dom.state_reason) == (s["state.state"], s["state.reason"])
    assert (dom.persistent, dom.autostart) == (qemu["persistent"], qemu["autostart"])
    # CPU: nanoseconds in, nanoseconds stored.
    assert (dom.cpu_time_ns, dom.cpu_user_ns, dom.cpu_system_ns) == (s["cpu.time"], s["cpu.user"], s["cpu.system"])
    # Balloon: KiB in, KiB stored; a last-update of 0 (no guest driver) is "not reported".
    assert (dom.max_memory_kib, dom.memory_kib) == (s["balloon.maximum"], s["balloon.current"])
    assert dom.memory.actual_kib == s["balloon.current"]
    assert dom.memory.rss_kib == s.get("balloon.rss")
    assert dom.memory.last_update_s == (s.get("balloon.last-update") or None)
    for field, key in (("available_kib", "available"), ("unused_kib", "unused"), ("usable_kib", "usable"),
                       ("disk_caches_kib", "disk_caches"), ("swap_in_kib", "swap_in"),
                       ("swap_out_kib", "swap_out"), ("major_faults", "major_fault"),
                       ("minor_faults", "minor_fault")):
        assert getattr(dom.memory, field) == s.get("balloon." + key), field  # None where QEMU had nothing
    # vCPUs: time, wait and delay in ns from the bulk record; the physical CPU from vcpus().
    assert (dom.vcpus_current, dom.vcpus_max) == (s["vcpu.current"], s["vcpu.maximum"])
    placement = {n: cpu for n, _state, _time, cpu in qemu["vcpus"][0]}
    assert [v.number for v in dom.vcpus] == list(range(s["vcpu.current"]))
    for v in dom.vcpus:
        p = f"vcpu.{v.number}."
        assert (v.state, v.time_ns, v.wait_ns, v.delay_ns) == (s[p + "state"], s[p + "time"], s[p + "wait"],
                                                               s[p + "delay"])
        assert v.physical_cpu == (placement[v.number] if placement[v.number] >= 0 else None)
    # Block devices: counters and sizes in requests, bytes and ns; configuration from the XML.
    cfg = domxml.parse(qemu["xml"])
    assert [b.target for b in dom.blocks] == [d.target for d in cfg.disks]
    for n in range(s["block.count"]):
        p = f"block.{n}."
        blk = next(b for b in dom.blocks if b.target == s[p + "name"])
        assert (blk.read_requests, blk.read_bytes, blk.read_time_ns) == (s[p + "rd.reqs"], s[p + "rd.bytes"],
                                                                         s[p + "rd.times"])
        assert (blk.write_requests, blk.write_bytes, blk.write_time_ns) == (s[p + "wr.reqs"], s[p + "wr.bytes"],
                                                                            s[p + "wr.times"])
        assert (blk.flush_requests, blk.flush_time_ns) == (s[p + "fl.reqs"], s[p + "fl.times"])
        assert (blk.capacity_bytes, blk.allocation_bytes, blk.physical_bytes) == (
            s[p + "capacity"], s[p + "allocation"], s[p + "physical"])
        assert blk.errors is None  # the bulk group has no error count
        disk = cfg.disk(blk.target)
        assert (blk.source, blk.bus, blk.driver_type) == (disk.source, disk.bus, disk.driver_type)
    assert dom.blocks[0].read_requests, "the recorded boot loop read its disk"
    # Interfaces: bytes, packets, errors and drops as counted.
    for n in range(s["net.count"]):
        p = f"net.{n}."
        nic = next(i for i in dom.interfaces if i.target == s[p + "name"])
        assert (nic.receive_bytes, nic.receive_packets, nic.receive_errors, nic.receive_drops) == (
            s[p + "rx.bytes"], s[p + "rx.pkts"], s[p + "rx.errs"], s[p + "rx.drop"])
        assert (nic.transmit_bytes, nic.transmit_packets, nic.transmit_errors, nic.transmit_drops) == (
            s[p + "tx.bytes"], s[p + "tx.pkts"], s[p + "tx.errs"], s[p + "tx.drop"])
        assert nic.model == "virtio" and nic.interface_type == "ethernet" and nic.mac
    assert (dom.os_type, dom.arch, dom.machine) == (cfg.os_type, cfg.arch, cfg.machine)


def test_qemu_per_domain_calls_parse_to_the_recorded_numbers(qemu: dict[str, Any]) -> None:
    """The same QEMU domain through the fallback: what its per-domain calls answered, field by field."""
    state_only = {k: v for k, v in qemu["bulk"].items() if k.startswith("state.")}
    dom = _build(qemu, stats=state_only, bulk=frozenset({"state"}))
    info = qemu["info"]
    assert (dom.max_memory_kib, dom.memory_kib, dom.cpu_time_ns) == (info[1], info[2], info[4])
    assert (dom.cpu_user_ns, dom.cpu_system_ns) == (qemu["cpu_stats"][0]["user_time"],
                                                    qemu["cpu_stats"][0]["system_time"])
    assert dom.memory == Memory(actual_kib=qemu["memory_stats"]["actual"], rss_kib=qemu["memory_stats"].get("rss"),
                                last_update_s=qemu["memory_stats"].get("last_update") or None)
    assert [(v.number, v.state, v.time_ns, v.physical_cpu) for v in dom.vcpus] == [
        (n, st, t, cpu if cpu >= 0 else None) for n, st, t, cpu in qemu["vcpus"][0]]
    assert all(v.wait_ns is None and v.delay_ns is None for v in dom.vcpus)  # vcpus() has no such figures
    for blk in dom.blocks:
        rd_req, rd_bytes, wr_req, wr_bytes, errs = qemu["block_stats"][blk.target]
        assert (blk.read_requests, blk.read_bytes, blk.write_requests, blk.write_bytes) == (
            rd_req, rd_bytes, wr_req, wr_bytes)
        assert blk.errors == (errs if errs >= 0 else None)  # QEMU answers -1: not reported
        assert [blk.capacity_bytes, blk.allocation_bytes, blk.physical_bytes] == qemu["block_info"][blk.target]
    for nic in dom.interfaces:
        assert _net(nic) == qemu["interface_stats"][nic.target]


def _net(nic: Interface) -> list[int | None]:
    return [nic.receive_bytes, nic.receive_packets, nic.receive_errors, nic.receive_drops,
            nic.transmit_bytes, nic.transmit_packets, nic.transmit_errors, nic.transmit_drops]


# -- the test driver: no bulk groups but state ---------------------------------------------


def test_test_driver_domain_without_bulk_groups(test_driver: dict[str, Any]) -> None:
    """web1 (running, with a balloon): every figure comes from a per-domain call, parsed to the recorded answer."""
    web1 = test_driver["web1"]
    assert set(web1["bulk"]) == {"state.state", "state.reason"}  # what the test driver serves in bulk
    reads = Recorded(web1)
    dom = _build(web1, bulk=frozenset({"state"}), reads=reads)
    targets = ["vda", "vdb"]
    assert reads.calls == ["info", "cpu_stats", "memory_stats", "vcpus",
                           *[f"{call}({t})" for t in targets for call in ("block_stats", "block_info")],
                           "interface_stats(tap-web1)"]
    assert (dom.state, dom.state_reason) == tuple(web1["bulk"][k] for k in ("state.state", "state.reason"))
    info = web1["info"]
    assert (dom.max_memory_kib, dom.memory_kib, dom.vcpus_current, dom.cpu_time_ns) == (info[1], info[2], info[3],
                                                                                       info[4])
    cpu = web1["cpu_stats"][0]
    assert (dom.cpu_user_ns, dom.cpu_system_ns) == (cpu["user_time"], cpu["system_time"])
    m = web1["memory_stats"]
    assert dom.memory == Memory(
        actual_kib=m["actual"], available_kib=m["available"], unused_kib=m["unused"], usable_kib=m["usable"],
        rss_kib=m["rss"], disk_caches_kib=m["disk_caches"], swap_in_kib=m["swap_in"], swap_out_kib=m["swap_out"],
        major_faults=m["major_fault"], minor_faults=m["minor_fault"], last_update_s=m["last_update"],
        hugetlb_pgalloc=m["hugetlb_pgalloc"], hugetlb_pgfail=m["hugetlb_pgfail"])
    assert [(v.number, v.state, v.time_ns, v.physical_cpu) for v in dom.vcpus] == [
        tuple(v) for v in web1["vcpus"][0]]
    assert [b.target for b in dom.blocks] == targets
    for blk in dom.blocks:
        rd_req, rd_bytes, wr_req, wr_bytes, errs = web1["block_stats"][blk.target]
        assert (blk.read_requests, blk.read_bytes, blk.write_requests, blk.write_bytes, blk.errors) == (
            rd_req, rd_bytes, wr_req, wr_bytes, errs)
        assert [blk.capacity_bytes, blk.allocation_bytes, blk.physical_bytes] == web1["block_info"][blk.target]
        assert blk.read_time_ns is None and blk.flush_requests is None  # blockStats() has no times or flushes
    (nic,) = dom.interfaces
    assert _net(nic) == web1["interface_stats"]["tap-web1"]
    assert (nic.mac, nic.bridge) == ("52:54:00:00:a1:01", "br0")


def test_test_driver_shut_off_domain_asks_nothing(test_driver: dict[str, Any]) -> None:
    """legacy1 (shut off): configuration only, no call, no counter, no NIC."""
    legacy = test_driver["legacy1"]
    reads = Recorded(legacy)
    dom = _build(legacy, bulk=frozenset({"state"}), reads=reads)
    assert reads.calls == []
    cfg = domxml.parse(legacy["xml"])
    assert (dom.active, dom.id, dom.state) == (False, -1, legacy["bulk"]["state.state"])
    assert (dom.max_memory_kib, dom.memory_kib) == (cfg.max_memory_kib, cfg.memory_kib)
    assert (dom.vcpus_current, dom.vcpus_max) == (cfg.vcpus_current, cfg.vcpus_max)
    assert dom.cpu_time_ns is None and dom.vcpus == () and dom.interfaces == () and dom.memory == Memory()
    assert [b.target for b in dom.blocks] == [d.target for d in cfg.disks]
    assert all(b.read_bytes is None and b.capacity_bytes is None for b in dom.blocks)


def test_without_monitor_no_call_is_made(test_driver: dict[str, Any]) -> None:
    """A stuck domain (monitor=False): state and definition only; state comes from state() without the bulk."""
    web1 = test_driver["web1"]
    reads = Recorded(web1)
    dom = _build(web1, stats={}, bulk=frozenset(), monitor=False, reads=reads)
    assert reads.calls == ["state"]
    assert (dom.state, dom.state_reason) == tuple(web1["state"])
    assert dom.cpu_time_ns is None and dom.vcpus == () and dom.memory == Memory()
    assert all(b.read_bytes is None for b in dom.blocks) and all(n.receive_bytes is None for n in dom.interfaces)


def test_failed_calls_leave_none(test_driver: dict[str, Any]) -> None:
    """A failed call leaves its figures None (never 0); what other calls answered stays."""
    web1 = test_driver["web1"]
    reads = Recorded(web1, fail=frozenset({"block_stats", "cpu_stats", "interface_stats", "memory_stats"}))
    dom = _build(web1, bulk=frozenset({"state"}), reads=reads)
    assert all(b.read_bytes is None and b.errors is None and b.capacity_bytes for b in dom.blocks)
    assert dom.cpu_time_ns == web1["info"][4] and dom.cpu_user_ns is None and dom.cpu_system_ns is None
    assert dom.memory == Memory() and all(v is None for v in _net(dom.interfaces[0]))
    # info() failing too: memory and vCPU counts from the definition, no CPU time at all.
    reads = Recorded(web1, fail=frozenset({"info", "cpu_stats", "vcpus"}))
    dom = _build(web1, bulk=frozenset({"state"}), reads=reads)
    cfg = domxml.parse(web1["xml"])
    assert reads.calls.count("info") == 2  # asked again for the vCPU count, as before the split
    assert (dom.max_memory_kib, dom.vcpus_current, dom.cpu_time_ns) == (cfg.max_memory_kib, cfg.vcpus_current,
                                                                        None)


# -- I/O limits and disk errors --------------------------------------------------------------


def _two_disks(state: int, reason: int) -> dict[str, Any]:
    xml = ("<domain type='kvm'><name>d</name><devices>"
           "<disk type='file' device='disk'><source file='/a'/><target dev='vda' bus='virtio'/>"
           "<iotune><total_bytes_sec>1048576</total_bytes_sec></iotune></disk>"
           "<disk type='file' device='disk'><source file='/b'/><target dev='vdb' bus='virtio'/></disk>"
           "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>"
           "</devices></domain>")
    tune = {"total_bytes_sec": 1048576, "total_bytes_sec_max": 0, "total_bytes_sec_max_length": 1,
            "group_name": "g", "some_future_key": 9}
    return {"name": "d", "uuid": "u", "id": 3, "persistent": True, "autostart": False, "xml": xml,
            "state": [state, reason], "bulk": {"state.state": state, "state.reason": reason},
            "block_io_tune": {"vda": tune}, "disk_errors": {"vdb": 2}}


def test_limits_asked_only_for_limited_disks_and_errors_only_when_paused_for_one() -> None:
    """vda's definition sets a limit: blockIoTune(vda) alone; diskErrors only while paused for an I/O error,
    every disk of a running domain at 0 without asking; a CD-ROM never has a code."""
    record = _two_disks(1, 1)
    reads = Recorded(record)
    dom = _build(record, stats=record["bulk"], bulk=frozenset({"state"}), wanted=frozenset({"state", "block"}),
                 reads=reads)
    assert [c for c in reads.calls if c.startswith(("block_io", "disk_err"))] == ["block_io_tune(vda)"]
    vda, vdb, sda = dom.blocks
    assert (vda.iotune.total_bytes_sec, vda.iotune.total_bytes_sec_max_length, vda.iotune.read_iops_sec) == (
        1048576, 1, None)
    assert vdb.iotune.total_bytes_sec is None and not vdb.limited
    assert (vda.error_code, vdb.error_code, sda.error_code) == (0, 0, None)

    record = _two_disks(STATE_PAUSED, PAUSED_IOERROR)
    reads = Recorded(record)
    dom = _build(record, stats=record["bulk"], bulk=frozenset({"state"}), wanted=frozenset({"state", "block"}),
                 reads=reads)
    assert "disk_errors" in reads.calls
    assert [b.error_code for b in dom.blocks] == [0, 2, None]
    # The call failing: unknown, not "no error".
    reads = Recorded(record, fail=frozenset({"disk_errors", "block_io_tune"}))
    dom = _build(record, stats=record["bulk"], bulk=frozenset({"state"}), wanted=frozenset({"state", "block"}),
                 reads=reads)
    assert [b.error_code for b in dom.blocks] == [None, None, None]
    assert dom.blocks[0].iotune.total_bytes_sec is None
    # Without calls (an event's description, a hung monitor): neither.
    reads = Recorded(record)
    dom = _build(record, stats=record["bulk"], bulk=frozenset({"state"}), wanted=frozenset({"state", "block"}),
                 reads=reads, monitor=False)
    assert [c for c in reads.calls if c.startswith(("block_io", "disk_err"))] == []


# -- missing keys give None, not 0 -------------------------------------------------------------


def test_missing_bulk_keys_give_none(qemu: dict[str, Any]) -> None:
    """Groups in bulk whose keys are missing: every figure None; devices named only by the stats are added."""
    stats = {"state.state": 1, "state.reason": 1, "block.count": 2, "block.0.name": "vda", "block.1.name": "sdz",
             "block.1.path": "/dev/sdz", "net.count": 1, "net.0.name": "tap-extra", "vcpu.maximum": 1,
             "vcpu.0.state": 1}
    dom = _build(qemu, stats=stats, reads=Recorded({"vcpus": None}))
    assert dom.cpu_time_ns is None and dom.cpu_user_ns is None and dom.cpu_system_ns is None
    assert dom.memory == Memory()
    (vcpu,) = dom.vcpus
    assert (vcpu.time_ns, vcpu.wait_ns, vcpu.delay_ns, vcpu.physical_cpu) == (None, None, None, None)
    vda = next(b for b in dom.blocks if b.target == "vda")
    assert vda.source.endswith(".qcow2")  # from the XML
    assert Block(target="sdz", source="/dev/sdz", error_code=0) in dom.blocks  # running: no disk error
    assert all(getattr(b, f) is None for b in dom.blocks
               for f in ("read_requests", "read_bytes", "write_bytes", "flush_time_ns", "capacity_bytes"))
    extra = next(i for i in dom.interfaces if i.target == "tap-extra")
    assert extra == Interface(target="tap-extra")
    assert parse.memory_from_bulk({}) == Memory() and parse.memory_from_call({}) == Memory()


def test_minus_one_and_junk_give_none() -> None:
    """The old calls' -1 and values that are not numbers are "not reported"; a real 0 stays 0."""
    assert parse.opt_int(None) is None and parse.opt_int("x") is None and parse.opt_int(0) == 0
    base = Block(target="vda")
    blk = parse.block_from_calls(base, (-1, 0, 7, -1, -1), None)
    assert (blk.read_requests, blk.read_bytes, blk.write_requests, blk.write_bytes, blk.errors) == (
        None, 0, 7, None, None)
    assert blk.capacity_bytes is None
    nic = parse.interface_from_call(Interface(target="t"), (1, 2, -1, 0, -1, 5, 0, -1))
    assert _net(nic) == [1, 2, None, 0, None, 5, 0, None]
    assert parse.cpu_split_from_call([]) == (None, None) and parse.cpu_split_from_call(None) == (None, None)
    assert parse.state_from_bulk({}) is None and parse.state_from_bulk({"state.state": 3}) == (3, 0)
    assert parse.vcpus_from_placement(parse.placement_from_call([[(0, 0, 5, -1)], []]))[0].physical_cpu is None


def test_state_outside_libvirts_range_is_nostate(test_driver: dict[str, Any]) -> None:
    web1 = test_driver["web1"]
    dom = _build(web1, stats={"state.state": 42}, bulk=frozenset({"state"}), wanted=frozenset({"state"}))
    assert dom.state == STATE_NOSTATE


# -- the node -------------------------------------------------------------------------------


def test_node_memory_units_and_fallbacks() -> None:
    """getMemoryStats is in KiB (free counts buffers and cache), getInfo's memory in MiB; both stored in bytes."""
    assert parse.node_memory(None, {"total": 100, "free": 10, "buffers": 1, "cached": 2}) == (100 * 1024, 13 * 1024)
    assert parse.node_memory(["x86_64", 512, 4, 2000], {}) == (512 * 1024 * 1024, None)
    assert parse.node_memory(None, None) == (None, None)
    host = parse.node_host(Host(hostname="h"), ["x86_64", 512, 4, 2000, 1, 1, 4, 1], {"user": 7}, 1, 2)
    assert (host.hostname, host.cpu_model, host.cpus, host.cpu_mhz) == ("h", "x86_64", 4, 2000)
    assert (host.memory_total_bytes, host.memory_free_bytes, dict(host.cpu_time_ns)) == (1, 2, {"user": 7})
    bare = parse.node_host(Host(), None, None, None, None)
    assert (bare.cpu_model, bare.cpus, bare.cpu_mhz, dict(bare.cpu_time_ns)) == ("", None, None, {})


def test_every_balloon_figure_from_bulk_and_from_the_call() -> None:
    """Each balloon figure of the field table, from its bulk key and from memoryStats()'s name for it (which
    differs only for the actual size and the update time)."""
    bulk = {"balloon.current": 1, "balloon.available": 2, "balloon.unused": 3, "balloon.usable": 4,
            "balloon.rss": 5, "balloon.disk_caches": 6, "balloon.swap_in": 7, "balloon.swap_out": 8,
            "balloon.major_fault": 9, "balloon.minor_fault": 10, "balloon.hugetlb_pgalloc": 11,
            "balloon.hugetlb_pgfail": 12, "balloon.last-update": 13}
    call = {key.removeprefix("balloon."): value for key, value in bulk.items()
            if key not in ("balloon.current", "balloon.last-update")} | {"actual": 1, "last_update": 13}
    expected = Memory(actual_kib=1, available_kib=2, unused_kib=3, usable_kib=4, rss_kib=5, disk_caches_kib=6,
                      swap_in_kib=7, swap_out_kib=8, major_faults=9, minor_faults=10, hugetlb_pgalloc=11,
                      hugetlb_pgfail=12, last_update_s=13)
    assert parse.memory_from_bulk(bulk) == expected
    assert parse.memory_from_call(call) == expected


def test_vcpu_placement_asked_on_one_poll_in_n(qemu: dict[str, Any]) -> None:
    """With placements every 3 polls: each domain asks vcpus() on exactly one poll in 3 (the first sight at once),
    serves the last answer in between, asks again at once when restarted (a new id) or when a vCPU is missing from the
    last answer, and is forgotten when it goes."""
    from exporter.source.placement import Placements

    placements = Placements(3)
    uuids = [f"00000000-0000-0000-0000-{n:012d}" for n in range(30)]
    asked: dict[str, list[int]] = {u: [] for u in uuids}
    for poll in range(1, 10):
        for uuid in uuids:
            record = {**qemu, "uuid": uuid}
            reads = Recorded(record)
            dom = _build(record, reads=reads, placement=placements.cached(uuid, qemu["id"], poll))
            if "vcpus" in reads.calls:
                asked[uuid].append(poll)
                placements.remember(dom)
            want = {n: cpu for n, _s, _t, cpu in qemu["vcpus"][0]}
            assert {v.number: v.physical_cpu for v in dom.vcpus} == {
                n: (c if c >= 0 else None) for n, c in want.items()}  # the same figures, asked or served again
    for uuid in uuids:
        first, *rest = asked[uuid]
        assert first == 1 and len(rest) in (2, 3) and all(b - a == 3 for a, b in itertools.pairwise(rest)), asked[uuid]
    by_poll = [sum(p in asked[u] for u in uuids) for p in range(2, 10)]
    assert max(by_poll) - min(by_poll) <= 8, by_poll  # spread over the polls, not all on one
    # a restarted domain (another id) is asked at once; so is one with a vCPU the last answer lacks
    uuid = uuids[0]
    due_later = next(p for p in range(10, 13) if placements.cached(uuid, qemu["id"], p) is not None)
    assert placements.cached(uuid, qemu["id"] + 1, due_later) is None
    reads = Recorded({**qemu, "uuid": uuid})
    _build({**qemu, "uuid": uuid}, reads=reads, placement={0: (0, 0, 1)})
    assert "vcpus" in reads.calls
    placements.forget_except(uuids[1:])
    assert placements.cached(uuid, qemu["id"], due_later) is None
    # every 1: always asked, nothing kept
    assert Placements(1).cached(uuid, qemu["id"], 2) is None
