"""Peak RSS of a running exporter on a generated host: ``python -m exporter`` against libvirt's test driver
(a node file from ``exporter.hostgen``) served by a private libvirtd, as in production, with the standalone
SNMP agent on, scraped after each of several polls (plain and gzip) and walked over SNMP once.

    .venv/bin/python bench/rss.py --domains 1000 3000

VmHWM is the peak resident set since start; VmRSS the resident set at the end.  Ports are free loopback
ports picked at run time.  ``--direct`` opens the node file in the exporter's own process instead (no
libvirtd; the test driver's copy of the host then counts in the exporter's RSS).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter import hostgen  # noqa: E402
from tests.support.libvirtd import PrivateLibvirtd  # noqa: E402
from tests.support.process import Exporter  # noqa: E402
from tests.support.snmp import free_udp_port  # noqa: E402


def status_mb(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(rest.split()[0]) / 1024
    return found


def scrape(url: str, gzipped: bool) -> bytes:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    with urllib.request.urlopen(request, timeout=300) as response:
        return bytes(response.read())


def measure(n: int, polls: int, interval: float, work: Path, daemon: PrivateLibvirtd | None
            ) -> dict[str, float]:
    node = work / f"node-{n}.xml"
    node.write_text(hostgen.node_xml(hostgen.HostShape(domains=n, mixed_states=False, prefix="bench")))
    uri = f"test://{node}" if daemon is None else f"test+unix://{node}?socket={daemon.socket}"
    port = free_udp_port()
    config = work / f"rss-{n}.toml"
    config.write_text(f'[state]\ndirectory = "{work / f"state-{n}"}"\n[snmp]\nmode = "standalone"\n'
                      f'listen_address = ["127.0.0.1:{port}"]\n[[snmp.communities]]\nname = "bench"\n')
    config.chmod(0o600)
    exp = Exporter(["--config.file", str(config), "--libvirt.uri", uri,
                    "--libvirt.poll-interval", f"{interval}s", "--libvirt.poll-timeout", "10m"],
                   log=work / f"exporter-{n}.log")
    try:
        exp.wait_ready(timeout=300)
        exp.wait_for(lambda m: (m.get("libvirt_domains_number") or 0) >= n, timeout=300, what=f"{n} domains")
        url = exp.url + "/metrics"
        for _ in range(polls):
            scrape(url, False)
            scrape(url, True)
            time.sleep(interval)
        if shutil.which("snmpbulkwalk"):
            subprocess.run(["snmpbulkwalk", "-v2c", "-c", "bench", "-m", "", "-On", "-Cr50", "-t", "30",
                            f"127.0.0.1:{port}", "1.3.6.1.4.1.8072.9999.9999"], capture_output=True, check=True)
        scrape(url, False)
        return status_mb(exp.proc.pid)
    finally:
        exp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, nargs="+", default=[1000])
    parser.add_argument("--polls", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval, seconds")
    parser.add_argument("--direct", action="store_true", help="no libvirtd: the test driver in-process")
    args = parser.parse_args()
    print("| domains | peak RSS (VmHWM) MB | RSS at end MB | peak MB per 1000 domains |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        daemon = None if args.direct else PrivateLibvirtd(Path(tmp) / "libvirtd")
        if daemon is not None:
            daemon.start()
        try:
            for n in args.domains:
                r = measure(n, args.polls, args.interval, Path(tmp), daemon)
                print(f"| {n} | {r['VmHWM']:.0f} | {r['VmRSS']:.0f} | {r['VmHWM'] * 1000 / n:.0f} |", flush=True)
        finally:
            if daemon is not None:
                daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
