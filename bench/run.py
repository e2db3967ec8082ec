"""Benchmark: libvirt-exporter against kumina's exporter, net-snmp's snmpd and the libvirt floor.

Everything runs in one go on this machine, through a private libvirtd (so
every libvirt call crosses its RPC, as in production):

* hosts of N domains x (2 disks, 2 NICs, 4 vCPUs) defined on the daemon's
  shared ``test+unix:///default`` host, one connection kept open for the run;
* the poll cycle (wall and CPU) against the floor: a bare loop making the
  same libvirt calls for the same data;
* ``/metrics`` latency (median, p95) for us and for kumina's exporter, and
  how many domains each exported; our peak RSS;
* SNMP: a full ``snmpbulkwalk`` (varbinds/s) and an ``snmpwalk`` of one
  column (GETNEXT PDUs/s), against net-snmp's ``snmpd`` walking its own tree,
  and the same two walks through ``snmpd`` with the exporter as its AgentX
  subagent;
* real QEMU: our poll against one bare ``getAllDomainStats`` call.

Writes ``RESULTS.md`` and ``cost.png`` (when matplotlib is installed) into
the output folder.  ``make bench`` runs it in full; ``make test`` runs it
tiny (N=20) so that it never rots.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import render, v3rate  # noqa: E402
from bench.machine import machine  # noqa: E402
from bench.measure import (  # noqa: E402
    LVX,
    V3_USER_TOML,
    domains_in,
    p95,
    peak_rss_mb,
    ratio,
    scrape_times,
    snmp_rates,
    start_kumina,
    timed,
    v3_rates,
)
from bench.qemu import FleetRow, fleet  # noqa: E402
from bench.qemu import lines as fleet_lines  # noqa: E402
from exporter.exposition import Exposition  # noqa: E402
from exporter.hostgen import HostShape, domain_xml  # noqa: E402
from exporter.poller import snapshot_of  # noqa: E402
from exporter.snapshot import ALL_GROUPS  # noqa: E402
from exporter.source import Source  # noqa: E402
from tests.support.libvirtd import PrivateLibvirtd, kvm_usable  # noqa: E402
from tests.support.process import Exporter  # noqa: E402
from tests.support.snmp import free_udp_port  # noqa: E402
from tests.support.snmpd import COMMUNITY as MASTER_COMMUNITY  # noqa: E402
from tests.support.snmpd import RO_USER, Snmpd  # noqa: E402

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

Rates = tuple[float, int, float]  # (bulk varbinds/s, varbinds, GETNEXT PDUs/s)


@dataclass
class Row:
    n: int
    poll_wall: float = 0.0
    poll_cpu: float = 0.0
    floor_wall: float = 0.0
    scrape_first: float = 0.0  # a scrape that renders a new snapshot; later ones reuse the rendering
    scrape_median: float = 0.0
    scrape_p95: float = 0.0
    scrape_domains: int = 0
    kumina_median: float | None = None
    kumina_p95: float | None = None
    kumina_domains: int | None = None
    bulk_rate: float = 0.0
    bulk_varbinds: int = 0
    getnext_rate: float = 0.0
    agentx_bulk_rate: float = 0.0
    agentx_getnext_rate: float = 0.0
    v3_bulk_rate: float = 0.0  # SNMPv3 authPriv (SHA-256/AES), the same walk as bulk_rate
    rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


def floor_poll(conn: libvirt.virConnect, domains: Sequence[libvirt.virDomain]) -> None:
    """The libvirt calls our poll makes for the same data, and nothing else (XML is cached by us)."""
    conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
    conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
    conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
    for dom in domains:
        dom.info()
        dom.getCPUStats(True)
        dom.memoryStats()
        dom.vcpus()
        for dev in ("vda", "vdb"):
            dom.blockStats(dev)
            dom.blockInfo(dev)
    conn.getInfo()
    conn.getCPUStats(-1)
    conn.listAllStoragePools(0)
    conn.listAllNetworks(0)


def define_host(conn: libvirt.virConnect, n: int) -> list[libvirt.virDomain]:
    """Bring the shared test host to exactly n generated domains (plus libvirt's own 'test')."""
    shape = HostShape(domains=n, disks=2, nics=2, vcpus=4, mixed_states=False, prefix="bench")
    existing = {d.name() for d in conn.listAllDomains(0)}
    for i in range(n):
        if f"bench{i:05d}" not in existing:
            conn.createXML(domain_xml(shape, i, with_runstate=False), 0)
    return [d for d in conn.listAllDomains(0) if d.name().startswith("bench")]


def bench_size(daemon: PrivateLibvirtd, conn: libvirt.virConnect, n: int, scrapes: int, work: Path,
               kumina: str | None) -> Row:
    row = Row(n)
    uri = daemon.uri("test")
    domains = define_host(conn, n)
    floor_conn = libvirt.openReadOnly(uri)
    floor_domains = [d for d in floor_conn.listAllDomains(0) if d.name().startswith("bench")]
    floor_poll(floor_conn, floor_domains)  # warm up
    row.floor_wall = min(timed(lambda: floor_poll(floor_conn, floor_domains))[0] for _ in range(3))
    floor_conn.close()

    source = Source(uri)
    source.open()
    source.poll(ALL_GROUPS)  # warm up: XML parsed and cached
    polls = [timed(lambda: source.poll(ALL_GROUPS)) for _ in range(3)]
    snaps = []
    for _ in range(2):
        started = time.time()  # a snapshot is stamped with its poll's start, as the poller does
        result = source.poll(ALL_GROUPS)
        snaps.append(snapshot_of(result, started, time.time() - started))
    source.close()
    # A scrape right after a poll renders the new snapshot, with the label sets the previous poll's rendering
    # kept (what a running exporter does at every poll), measured in-process.
    served = [snaps[0]]
    exposition = Exposition(lambda: served[0], frozenset(ALL_GROUPS))
    exposition.render()
    served[0] = snaps[1]
    row.scrape_first = timed(exposition.render)[0]
    row.poll_wall = min(p[0] for p in polls)
    row.poll_cpu = min(p[1] for p in polls)

    port = free_udp_port()
    master = Snmpd(work / f"snmpd-{n}")  # the host's snmpd, with the exporter as its AgentX subagent too
    config = work / f"bench-{n}.toml"
    config.write_text(f'[state]\ndirectory = "{work / "state"}"\n[snmp]\nmode = "both"\n'
                      f'listen_address = ["127.0.0.1:{port}"]\n[snmp.agentx]\nsocket = "{master.socket}"\n'
                      '[[snmp.communities]]\nname = "bench"\n' + V3_USER_TOML)
    config.chmod(0o600)
    exp = Exporter(["--config.file", str(config), "--libvirt.uri", uri, "--libvirt.poll-interval", "1h",
                    "--libvirt.poll-timeout", "10m"], log=work / f"exporter-{n}.log")
    try:
        exp.wait_ready(timeout=300)
        exp.wait_for(lambda m: (m.get("libvirt_domains_number") or 0) >= len(domains), timeout=300,
                     what=f"{len(domains)} domains")
        exp.wait_output("registered 3 subtrees", timeout=30)
        times, text = scrape_times(exp.url + "/metrics", scrapes)
        row.scrape_median, row.scrape_p95 = statistics.median(times), p95(times)
        row.scrape_domains = domains_in(text, "libvirt_domain_info_maximum_memory_bytes")
        target = f"127.0.0.1:{port}"
        row.bulk_rate, row.bulk_varbinds, row.getnext_rate = snmp_rates(target, "bench", LVX, f"{LVX}.1.2.1.2")
        row.v3_bulk_rate, varbinds, _ = v3_rates(target, LVX, f"{LVX}.1.2.1.2")
        if varbinds != row.bulk_varbinds:
            raise RuntimeError(f"the SNMPv3 walk gave {varbinds} varbinds, the v2c walk {row.bulk_varbinds}")
        row.agentx_bulk_rate, varbinds, row.agentx_getnext_rate = snmp_rates(master.target, MASTER_COMMUNITY, LVX,
                                                                             f"{LVX}.1.2.1.2")
        if varbinds != row.bulk_varbinds:
            raise RuntimeError(f"the walk through snmpd gave {varbinds} varbinds, the agent {row.bulk_varbinds}")
        row.rss_mb = peak_rss_mb(exp.proc.pid)
    finally:
        exp.stop()
        master.stop()

    if kumina:
        proc, kurl = start_kumina(kumina, uri)
        try:
            times, text = scrape_times(kurl + "/metrics", scrapes)
            row.kumina_median, row.kumina_p95 = statistics.median(times), p95(times)
            row.kumina_domains = domains_in(text, "libvirt_domain_info_maximum_memory_bytes")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return row


def snmpd_rates(work: Path) -> tuple[Rates, Rates]:
    """net-snmp's own agent walking its own tree, on a loopback port of its own: SNMPv2c, and SNMPv3 authPriv
    (SHA-256/AES) as its read-only user."""
    own = Snmpd(work / "snmpd-own")
    try:
        return (snmp_rates(own.target, MASTER_COMMUNITY, "1.3.6.1", "1.3.6.1.2.1.25"),
                v3_rates(own.target, "1.3.6.1", "1.3.6.1.2.1.25", options=RO_USER))
    finally:
        own.stop()


@dataclass
class QemuRow:
    domains: int
    ours: float  # our poll, best of 5
    floor: float  # one bare getAllDomainStats of the same groups, best of 5
    job_ours: float  # the same two while a memory dump of one domain runs: medians of what fits in the dump
    job_floor: float
    job_samples: int


def real_qemu(work: Path) -> QemuRow | None:
    """Our poll of 5 real QEMU domains against one bare getAllDomainStats call, without and with a job running
    (a memory-only dump of a 1 GiB domain, which pauses it: the poll asks that domain for its job)."""
    daemon = PrivateLibvirtd(work / "qemu-daemon")
    daemon.start()
    try:
        for i in range(5):
            disk = work / f"q{i}.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
            xml = work / f"q{i}.xml"
            xml.write_text(
                f"<domain type='{'kvm' if kvm_usable() else 'qemu'}'><name>bench-q{i}</name>"
                f"<memory unit='MiB'>{1024 if i == 4 else 128}</memory><vcpu>2</vcpu>"
                "<os><type arch='x86_64' machine='pc'>hvm</type>"
                f"</os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
                f"<interface type='ethernet'><target dev='lxb{os.getpid() % 1000}q{i}'/><model type='virtio'/>"
                "</interface><memballoon model='virtio'/></devices></domain>")
            daemon.virsh("create", str(xml))
        conn = libvirt.openReadOnly(daemon.uri())
        groups = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                  | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK
                  | libvirt.VIR_DOMAIN_STATS_PERF | libvirt.VIR_DOMAIN_STATS_IOTHREAD
                  | libvirt.VIR_DOMAIN_STATS_DIRTYRATE)

        def bare() -> None:  # the groups we export, as one call: the floor of any poll
            conn.getAllDomainStats(groups, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)

        bare()
        floor = min(timed(bare)[0] for _ in range(5))
        source = Source(daemon.uri())
        source.open()
        source.poll(ALL_GROUPS)
        ours = min(timed(lambda: source.poll(ALL_GROUPS))[0] for _ in range(5))
        dump = subprocess.Popen(["virsh", "-c", daemon.uri(), "dump", "--memory-only", "bench-q4",
                                 str(work / "bench-q4.core")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        job_ours: list[float] = []
        job_floor: list[float] = []
        while dump.poll() is None:
            job_floor.append(timed(bare)[0])
            job_ours.append(timed(lambda: source.poll(ALL_GROUPS))[0])
        (work / "bench-q4.core").unlink(missing_ok=True)
        source.close()
        conn.close()
        return QemuRow(5, ours, floor, statistics.median(job_ours), statistics.median(job_floor), len(job_ours))
    finally:
        daemon.shutdown()


def report(rows: list[Row], snmpd: tuple[Rates, Rates], v3: tuple[int, dict[str, tuple[float, int]]],
           rendering: tuple[int, dict[str, float]], qemu: QemuRow | None, node: FleetRow | None, out: Path) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Regenerated by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {machine()}. Shared and noisy: read the ratios, not the absolute times.",
        "",
        "Hosts of N domains x (2 disks, 2 NICs, 4 vCPUs) on libvirt's test driver behind a private libvirtd",
        "(`test+unix:///default`), so every call crosses libvirt's RPC. The test driver has no bulk stats:",
        "the poll falls back to per-domain calls, and so does the floor.",
        "",
        "Our exporter renders each snapshot once (the first scrape after a poll, \"render s\", with the label sets",
        "kept from the previous poll's rendering) and serves that rendering until the next poll (\"scrape median\");",
        "kumina's polls libvirt on every scrape, and exports at most 512 domains. The test driver's values hardly",
        "change between polls, which our number memo exploits: on a host whose counters all move, the render costs",
        "more.",
        "",
        "| N | poll wall s | poll CPU s | floor s | poll/floor | render s | scrape median s | p95 s | domains | "
        "kumina median s | kumina p95 s | kumina domains | kumina/ours | bulk varbinds/s | GETNEXT PDUs/s | "
        "AgentX bulk varbinds/s | AgentX GETNEXT PDUs/s | v3 authPriv bulk varbinds/s | v3/v2c | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.n} | {r.poll_wall:.3f} | {r.poll_cpu:.3f} | {r.floor_wall:.3f} | {ratio(r.poll_wall, r.floor_wall)}"
            f" | {r.scrape_first:.4f} | {r.scrape_median:.4f} | {r.scrape_p95:.4f} | {r.scrape_domains} | "
            f"{'n/a' if r.kumina_median is None else f'{r.kumina_median:.4f}'} | "
            f"{'n/a' if r.kumina_p95 is None else f'{r.kumina_p95:.4f}'} | "
            f"{'n/a' if r.kumina_domains is None else r.kumina_domains} | {ratio(r.kumina_median, r.scrape_median)}"
            f" | {r.bulk_rate:.0f} | {r.getnext_rate:.0f} | {r.agentx_bulk_rate:.0f} | {r.agentx_getnext_rate:.0f}"
            f" | {r.v3_bulk_rate:.0f} | {ratio(r.v3_bulk_rate, r.bulk_rate)} | {r.rss_mb:.0f} |")
    (bulk, varbinds, getnext), (v3_bulk, _, v3_getnext) = snmpd
    lines += [
        "",
        f"net-snmp's snmpd walking its own tree ({varbinds} varbinds): {bulk:.0f} varbinds/s in bulk, "
        f"{getnext:.0f} GETNEXT PDUs/s; as SNMPv3 authPriv (SHA-256/AES): {v3_bulk:.0f} varbinds/s in bulk "
        f"({ratio(v3_bulk, bulk)} of its v2c), {v3_getnext:.0f} GETNEXT PDUs/s.",
    ]
    if rows:
        last = rows[-1]
        lines.append(f"At N={last.n}: our bulk walk is {ratio(last.bulk_rate, bulk)} of snmpd's, "
                     f"our GETNEXT {ratio(last.getnext_rate, getnext)} of snmpd's. Through snmpd as an AgentX "
                     f"subagent: {ratio(last.agentx_bulk_rate, last.bulk_rate)} of the standalone agent's bulk rate, "
                     f"{ratio(last.agentx_getnext_rate, last.getnext_rate)} of its GETNEXT rate. Our SNMPv3 authPriv "
                     f"bulk walk: {ratio(last.v3_bulk_rate, last.bulk_rate)} of our v2c, "
                     f"{ratio(last.v3_bulk_rate, v3_bulk)} of snmpd's v3.")
    v3_n, walks = v3
    (v2c_rate, v2c_varbinds), fast, alone = walks["v2c"], walks["v3 fast"][0], walks["v3 pysnmp"][0]
    lines += ["", f"SNMPv3 authPriv (SHA-256/AES) against SNMPv2c on one agent over {v3_n} domains ({v2c_varbinds} "
                  f"varbinds; `bench/v3rate.py`, the agent in-process): v2c {v2c_rate:.0f} varbinds/s, v3 on the fast "
                  f"path {fast:.0f} ({ratio(fast, v2c_rate)}), v3 through pysnmp alone {alone:.0f} "
                  f"({ratio(alone, v2c_rate)})."]
    render_n, cost = rendering
    lines += ["", f"Rendering one snapshot of {render_n} domains ({cost['series']:.0f} series; `bench/render.py`, "
                  f"in-process, best of 3): the first scrape after a poll {cost['first']:.3f} s, the first after start "
                  f"(no label set cached) {cost['cold']:.3f} s; prometheus_client's own rendering of the same series "
                  f"{cost['client']:.3f} s, {ratio(cost['client'], cost['first'])} ours after a poll, "
                  f"{ratio(cost['client'], cost['cold'])} ours after start."]
    if len(rows) > 1 and rows[-1].n > rows[0].n:
        per_1000 = (rows[-1].rss_mb - rows[0].rss_mb) / (rows[-1].n - rows[0].n) * 1000
        lines.append(f"Peak RSS grows by {per_1000:.0f} MB per 1000 domains (N={rows[0].n} to N={rows[-1].n}).")
    if qemu is not None:
        lines += ["", f"Real QEMU ({qemu.domains} domains, bulk stats of every group we export): our poll "
                      f"{qemu.ours * 1000:.1f} ms, one bare getAllDomainStats of the same groups "
                      f"{qemu.floor * 1000:.1f} ms: {ratio(qemu.ours, qemu.floor)} the floor (our poll also asks a "
                      "quarter of the running domains for their vCPU placement, and the host for its figures). While a "
                      "memory dump "
                      f"of one of them runs (medians of {qemu.job_samples}): ours {qemu.job_ours * 1000:.1f} ms, "
                      f"the floor {qemu.job_floor * 1000:.1f} ms: {ratio(qemu.job_ours, qemu.job_floor)} "
                      "(the poll also asks the dumping domain for its job)."]
    if node is not None:
        lines += fleet_lines(node)
    text = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        ns = [r.n for r in rows]
        ax.plot(ns, [r.poll_wall for r in rows], "o-", label="our poll")
        ax.plot(ns, [r.floor_wall for r in rows], "o--", label="floor (bare libvirt calls)")
        ax.plot(ns, [r.scrape_median for r in rows], "s-", label="our scrape (median)")
        if all(r.kumina_median is not None for r in rows):
            ax.plot(ns, [r.kumina_median for r in rows], "s--", label="kumina scrape (median)")
        ax.set_xlabel("domains")
        ax.set_ylabel("seconds")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        ax.set_title("Cost against host size")
        fig.tight_layout()
        fig.savefig(out / "cost.png", dpi=100)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,300,1000,3000")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench"))
    parser.add_argument("--no-qemu", action="store_true", help="skip the real QEMU parts")
    parser.add_argument("--fleet", type=int, default=60, help="domains of the real QEMU compute node (default 60)")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.sizes.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unpacked = ROOT / "build" / "kumina" / "usr" / "bin" / "prometheus-libvirt-exporter"
    kumina = str(unpacked) if unpacked.exists() else shutil.which("prometheus-libvirt-exporter")
    if kumina is None:
        print("kumina's prometheus-libvirt-exporter not found (make bench unpacks it): no kumina figures",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="lxe-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        daemon = PrivateLibvirtd(work / "daemon")
        daemon.start()
        rows = []
        try:
            conn = libvirt.open(daemon.uri("test"))  # kept open: the shared test host lives while it does
            for n in sizes:
                print(f"N={n} ...", file=sys.stderr, flush=True)
                rows.append(bench_size(daemon, conn, n, args.scrapes, work, kumina))
            conn.close()
        finally:
            daemon.shutdown()
        snmpd = snmpd_rates(work)
        v3_n = min(sizes[-1], 1000)
        (work / "v3rate").mkdir()
        v3 = v3rate.measure(v3_n, work / "v3rate", rounds=2, pysnmp_rounds=1)
        rendering = render.measure(v3_n, repeat=3)
        qemu = None if args.no_qemu else real_qemu(work)
        node = None if args.no_qemu else fleet(work, args.fleet, kumina, args.scrapes)
    print(report(rows, snmpd, (v3_n, v3), (v3_n, rendering), qemu, node, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
