"""What the benchmarks share: timing, scraping, SNMP walk rates, peak RSS, and kumina's exporter."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

#: LIBVIRT-EXPORTER-MIB's root, which the walks read.
LVX = "1.3.6.1.4.1.8072.9999.9999"
#: The SNMPv3 authPriv user the benchmarks give our agent, and net-snmp's options for it.
V3_USER_TOML = ('[[snmp.users]]\nname = "bench3"\nauth_key = "bench-auth-key-1"\npriv_key = "bench-priv-key-1"\n'
                'auth_protocol = "SHA-256"\npriv_protocol = "AES"\n')
V3_OPTIONS = ("-v3", "-l", "authPriv", "-u", "bench3", "-a", "SHA-256", "-A", "bench-auth-key-1", "-x", "AES",
              "-X", "bench-priv-key-1")


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def scrape_times(url: str, count: int) -> tuple[list[float], str]:
    times, text = [], ""
    for _ in range(count):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as response:
            text = response.read().decode()
        times.append(time.perf_counter() - t0)
    return times, text


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def domains_in(text: str, metric: str) -> int:
    return len(set(re.findall(rf'^{metric}\{{[^}}]*domain="([^"]+)"', text, re.M)))


def snmp_rates(target: str, community: str, root: str, column: str,
               security: Sequence[str] | None = None) -> tuple[float, int, float]:
    """(bulk varbinds/s, varbinds, GETNEXT PDUs/s): SNMPv2c with ``community``, or the net-snmp ``security``
    options given (``-v3 -l authPriv ...``)."""
    who = list(security) if security is not None else ["-v2c", "-c", community]
    bulk, varbinds = bulk_walk(target, who, root)
    t0 = time.perf_counter()
    out = subprocess.run(["snmpwalk", *who, "-m", "", "-On", "-t", "30", target, column],
                         capture_output=True, text=True, check=True).stdout
    pdus = sum(1 for line in out.splitlines()) + 1
    return bulk, varbinds, pdus / (time.perf_counter() - t0)


def bulk_walk(target: str, who: Sequence[str], root: str) -> tuple[float, int]:
    """(varbinds/s, varbinds) of one ``snmpbulkwalk -Cr50`` of ``root``, ``who`` being the version and
    credentials options."""
    t0 = time.perf_counter()
    out = subprocess.run(["snmpbulkwalk", *who, "-m", "", "-On", "-Cr50", "-t", "30", target, root],
                         capture_output=True, text=True, check=True).stdout
    varbinds = sum(1 for line in out.splitlines() if "No more variables" not in line)
    return varbinds / (time.perf_counter() - t0), varbinds


def v3_rates(target: str, root: str, column: str,
             options: Sequence[str] = V3_OPTIONS) -> tuple[float, int, float]:
    """:func:`snmp_rates` as SNMPv3 authPriv (SHA-256, AES): our bench user unless ``options`` say otherwise."""
    return snmp_rates(target, "", root, column, security=options)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"



def start_kumina(binary: str, uri: str) -> tuple[subprocess.Popen[bytes], str]:
    """kumina's exporter on a free loopback port, reading ``uri``, once it answers; (process, base URL)."""
    from tests.support.process import free_port

    port = free_port()
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", f"--libvirt.uri={uri}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, url
