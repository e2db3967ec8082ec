"""Load test: concurrent scrapers and SNMP bulk walkers against one exporter, with its RSS sampled.

``make load`` runs it in full (60 s, 20 scrapers, 4 walkers, 1000 domains)
and writes ``bench/LOAD.md`` and ``bench/load.png``; ``make test`` runs a
short version.  The host is a generated node file on libvirt's test driver,
polled every few seconds, so snapshots change under the load (each change
re-renders /metrics and rebuilds the SNMP view).

Exits 1 if any scrape or walk failed.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.hostgen import HostShape, node_xml  # noqa: E402
from exporter.snmp import mib_lvx  # noqa: E402
from tests.support import snmp  # noqa: E402
from tests.support.process import Exporter  # noqa: E402


@dataclass
class Results:
    scrape_s: list[float] = field(default_factory=list)
    walk_s: list[float] = field(default_factory=list)
    walk_varbinds: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _scraper(url: str, stop: threading.Event, out: Results) -> None:
    while not stop.is_set():
        request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})  # as Prometheus asks
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = gzip.decompress(response.read())
            took = time.perf_counter() - t0
            ok = response.status == 200 and b"libvirt_up 1" in body
            with out.lock:
                out.scrape_s.append(took)
                if not ok:
                    out.errors.append(f"scrape: status {response.status}")
        except Exception as exc:
            with out.lock:
                out.errors.append(f"scrape: {type(exc).__name__}: {exc}")


def _walker(target: str, stop: threading.Event, out: Results) -> None:
    root = ".".join(map(str, mib_lvx.LVX_ROOT))
    while not stop.is_set():
        t0 = time.perf_counter()
        result = subprocess.run(["snmpbulkwalk", *snmp.V2_ARGS, "-m", "", "-On", "-Cr50", "-t", "10", "-r", "1",
                                 target, root], capture_output=True, text=True)
        took = time.perf_counter() - t0
        with out.lock:
            if result.returncode != 0 or "Timeout" in result.stderr:
                out.errors.append(f"walk: {result.stderr.strip()[:200]}")
            else:
                out.walk_s.append(took)
                out.walk_varbinds.append(result.stdout.count("\n"))


def run(domains: int, duration: float, scrapers: int, walkers: int, poll: str, work: Path) -> tuple[Results, float]:
    host = work / "host.xml"
    host.write_text(node_xml(HostShape(domains=domains, disks=2, nics=2, vcpus=4)), encoding="utf-8")
    port = snmp.free_udp_port()
    target = f"127.0.0.1:{port}"
    cfg = snmp.agent_config(work / "c.toml", work / "state", target)
    out = Results()
    with Exporter(["--config.file", str(cfg), "--libvirt.uri", f"test://{host}", "--libvirt.poll-interval", poll],
                  log=work / "exporter.log") as exp:
        exp.wait_for(lambda m: (m.get("libvirt_domains_number") or 0) >= domains, timeout=120, what="the host")
        stop = threading.Event()
        threads = [threading.Thread(target=_scraper, args=(exp.url + "/metrics", stop, out), daemon=True)
                   for _ in range(scrapers)]
        threads += [threading.Thread(target=_walker, args=(target, stop, out), daemon=True) for _ in range(walkers)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - start < duration:
            time.sleep(1)
            out.rss_mb.append((time.monotonic() - start, _rss_mb(exp.proc.pid)))
            if exp.proc.poll() is not None:
                out.errors.append(f"the exporter exited with {exp.proc.returncode}")
                break
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - start
        if "Traceback" in exp.output():
            out.errors.append("a traceback in the exporter's log")
    return out, elapsed


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(out: Results, elapsed: float, args: argparse.Namespace, folder: Path) -> str:
    settle = [mb for t, mb in out.rss_mb if t >= min(10.0, elapsed / 3)] or [mb for _, mb in out.rss_mb]
    lines = [
        "# Load test",
        "",
        f"Regenerated by `make load` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{args.duration:.0f} s, {args.scrapers} concurrent scrapers (gzip, as Prometheus asks) and "
        f"{args.walkers} concurrent `snmpbulkwalk`s of the whole LIBVIRT-EXPORTER-MIB, on a {args.domains}-domain "
        f"host (2 disks, 2 NICs, 4 vCPUs each) polled every {args.poll}.",
        "",
        "| what | count | errors | median s | p95 s | p99 s | max s |",
        "|---|---|---|---|---|---|---|",
        f"| scrapes | {len(out.scrape_s)} | {sum(e.startswith('scrape') for e in out.errors)} | "
        f"{statistics.median(out.scrape_s) if out.scrape_s else 0:.4f} | {_pct(out.scrape_s, .95):.4f} | "
        f"{_pct(out.scrape_s, .99):.4f} | {max(out.scrape_s, default=0):.4f} |",
        f"| bulk walks | {len(out.walk_s)} | {sum(e.startswith('walk') for e in out.errors)} | "
        f"{statistics.median(out.walk_s) if out.walk_s else 0:.3f} | {_pct(out.walk_s, .95):.3f} | "
        f"{_pct(out.walk_s, .99):.3f} | {max(out.walk_s, default=0):.3f} |",
        "",
        f"Throughput: {len(out.scrape_s) / elapsed:.1f} scrapes/s and "
        f"{sum(out.walk_varbinds) / elapsed:.0f} varbinds/s walked, at the same time.",
        "",
        f"RSS (MB) after warm-up: first {settle[0]:.0f}, last {settle[-1]:.0f}, max {max(settle):.0f}; "
        f"whole run: min {min(mb for _, mb in out.rss_mb):.0f}, max {max(mb for _, mb in out.rss_mb):.0f}.",
        "",
        "| s | " + " | ".join(f"{t:.0f}" for t, _ in out.rss_mb[::max(1, len(out.rss_mb) // 12)]) + " |",
        "|---|" + "---|" * len(out.rss_mb[::max(1, len(out.rss_mb) // 12)]),
        "| RSS MB | " + " | ".join(f"{mb:.0f}" for _, mb in out.rss_mb[::max(1, len(out.rss_mb) // 12)]) + " |",
    ]
    if out.errors:
        lines += ["", "Errors (first 10):", ""] + [f"- {e}" for e in out.errors[:10]]
    text = "\n".join(lines) + "\n"
    (folder / "LOAD.md").write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([t for t, _ in out.rss_mb], [mb for _, mb in out.rss_mb])
        ax.set_xlabel("seconds under load")
        ax.set_ylabel("exporter RSS (MB)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{args.scrapers} scrapers + {args.walkers} bulk walkers, {args.domains} domains")
        fig.tight_layout()
        fig.savefig(folder / "load.png", dpi=100)
    except ImportError:
        pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--scrapers", type=int, default=20)
    parser.add_argument("--walkers", type=int, default=4)
    parser.add_argument("--poll", default="5s", help="the exporter's poll interval")
    parser.add_argument("--out", default=str(ROOT / "bench"))
    args = parser.parse_args(argv)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lxe-load-") as tmp:
        out, elapsed = run(args.domains, args.duration, args.scrapers, args.walkers, args.poll, Path(tmp))
    print(report(out, elapsed, args, folder))
    return 1 if out.errors else 0


if __name__ == "__main__":
    sys.exit(main())
