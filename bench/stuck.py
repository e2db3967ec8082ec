"""Benchmark: one frozen QEMU domain on a real QEMU host, our exporter against kumina's.

What it measures
----------------
A private libvirtd runs N TCG domains (default 60), each reading its own
qcow2 disk in a loop so that its block counters and CPU time keep moving.
Our exporter (``python -m exporter``, poll every 5 s, 2 s per-domain deadline)
and kumina's Go exporter (``prometheus-libvirt-exporter``, which asks libvirt
on every scrape) run side by side against that host and are each scraped
about once a second, each from its own thread (so a slow scrape of one never
delays the other; a scrape gives up after 60 s).

Three phases:

* **baseline** (30 s): every domain healthy;
* **stall** (``--stall``, 120 s): the QEMU process of ``lxb-0`` is SIGSTOPped,
  so any libvirt call that needs its monitor hangs for as long as it stays
  stopped, and calls that need its job wait 30 s and fail;
* **recovery** (30 s): the QEMU is SIGCONTed.

For every scrape it records the start time, the latency, the number of
domains listed and the number of domains with *fresh* data:

* ``fresh``: the domain's CPU time or vda read-request count is greater than
  the value this exporter delivered at least two poll intervals (10 s)
  earlier, i.e. the exporter has delivered newer data than it had 10 s
  before. The same window for both exporters: ours serves one cached
  snapshot per 5 s poll, so a one-second comparison would be zero four
  scrapes out of five for it by design;
* ``fresh (prev)``: the brief's literal rule, the same comparison against
  this exporter's previous scrape that had the domain (zero for ours on the
  scrapes that fall between two polls);
* ``ok`` (ours only): domains with ``libvirt_domain_timed_out`` 0 and stats
  younger than two poll intervals (``libvirt_domain_stats_age_seconds``
  where a domain is behind the snapshot, else the snapshot's age).

A failed or timed-out scrape counts as 0 listed and 0 fresh.

Writes ``STUCK.md`` and ``stuck.png`` into ``--out`` (default ``bench/``),
and keeps the exporters' logs in ``/tmp/bench-stuck/``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from tests.conftest import _READ_LOOP, RealHost, start_real_host  # noqa: E402
from tests.support.process import Exporter, free_port  # noqa: E402

WORK = Path("/tmp/bench-stuck")
PREFIX = "lxb-"
POLL_S = 5.0
DOMAIN_TIMEOUT_S = 2.0
POLL_TIMEOUT_S = 10.0
WINDOW_S = 2 * POLL_S  # "fresh": newer than what the exporter delivered this long before
SCRAPE_EVERY_S = 1.0
SCRAPE_TIMEOUT_S = 60.0
PHASES = ("baseline", "stall", "recovery")

CPU = "libvirt_domain_info_cpu_time_seconds_total"
READS = "libvirt_domain_block_stats_read_requests_total"
TIMED_OUT = "libvirt_domain_timed_out"
AGE = "libvirt_domain_stats_age_seconds"
SNAPSHOT_AGE = "libvirt_exporter_snapshot_age_seconds"
_LINE = re.compile(r'^(libvirt_domain_[a-z_]+)\{([^}]*)\}\s+(\S+)', re.M)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    start: float  # time.monotonic() at the request
    latency: float
    ok: bool
    listed: int = 0
    fresh: int = 0  # newer than this exporter's value WINDOW_S before
    fresh_prev: int = 0  # newer than this exporter's previous scrape that had the domain
    healthy: int | None = None  # ours: timed_out 0 and stats age < WINDOW_S
    error: str = ""
    frozen: str = ""  # what the scrape said of the domain that gets frozen (for the CSV)
    reads: float | None = None  # its vda read requests


@dataclass
class Parsed:
    listed: set[str] = field(default_factory=set)
    values: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # domain -> (cpu, reads)
    timed_out: dict[str, float] = field(default_factory=dict)
    age: dict[str, float] = field(default_factory=dict)  # only domains behind the snapshot have one
    snapshot_age: float | None = None


def parse(text: str) -> Parsed:
    """Only the per-domain series this benchmark reads."""
    out = Parsed()
    cpu: dict[str, float] = {}
    reads: dict[str, float] = {}
    for name, raw_labels, raw_value in _LINE.findall(text):
        labels = dict(_LABEL.findall(raw_labels))
        domain = labels.get("domain")
        if domain is None:
            continue
        out.listed.add(domain)
        try:
            value = float(raw_value)
        except ValueError:
            continue
        if name == CPU:
            cpu[domain] = value
        elif name == READS and labels.get("target_device") == "vda":
            reads[domain] = value
        elif name == TIMED_OUT:
            out.timed_out[domain] = value
        elif name == AGE:
            out.age[domain] = value
    for domain in cpu.keys() | reads.keys():
        out.values[domain] = (cpu.get(domain), reads.get(domain))
    age = re.search(rf"^{SNAPSHOT_AGE} (\S+)", text, re.M)
    out.snapshot_age = float(age.group(1)) if age else None
    return out


def newer(now: tuple[float | None, float | None], then: tuple[float | None, float | None]) -> bool:
    return any(a is not None and b is not None and a > b for a, b in zip(now, then, strict=False))


class Scraper(threading.Thread):
    """Scrapes one exporter about once a second until stopped, judging freshness as it goes."""

    def __init__(self, name: str, url: str, stop: threading.Event, ours: bool) -> None:
        super().__init__(name=f"scrape-{name}", daemon=True)
        self.url = url
        self.stop_event = stop
        self.ours = ours
        self.scrapes: list[Scrape] = []
        self.last_values: dict[str, tuple[float | None, float | None]] = {}
        self.history: dict[str, deque[tuple[float, tuple[float | None, float | None]]]] = {}

    def run(self) -> None:
        while not self.stop_event.is_set():
            start = time.monotonic()
            self.scrapes.append(self.scrape_once(start))
            self.stop_event.wait(max(0.0, start + SCRAPE_EVERY_S - time.monotonic()))

    def scrape_once(self, start: float) -> Scrape:
        try:
            with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT_S) as response:
                text = response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace").strip().replace("\n", " ")
            return Scrape(start, time.monotonic() - start, False, error=f"HTTP {exc.code}: {body[:160]}")
        except (OSError, TimeoutError) as exc:
            return Scrape(start, time.monotonic() - start, False, error=f"{type(exc).__name__}: {exc}"[:160])
        latency = time.monotonic() - start
        parsed = parse(text)
        fresh = fresh_prev = 0
        for domain, now in parsed.values.items():
            if domain in self.last_values and newer(now, self.last_values[domain]):
                fresh_prev += 1
            past = self.history.setdefault(domain, deque())
            reference = None
            while past and past[0][0] <= start - WINDOW_S:  # keep only the newest entry at least WINDOW_S old
                reference = past.popleft()[1]
            if reference is not None:
                past.appendleft((start - WINDOW_S, reference))
                if newer(now, reference):
                    fresh += 1
            past.append((start, now))
            self.last_values[domain] = now
        healthy = None
        if self.ours:
            default_age = WINDOW_S if parsed.snapshot_age is None else parsed.snapshot_age  # not behind: as old
            healthy = sum(1 for d in parsed.listed                                           # as the snapshot
                          if parsed.timed_out.get(d, 1) == 0 and parsed.age.get(d, default_age) < WINDOW_S)
        target = f"{PREFIX}0"
        cpu, reads = parsed.values.get(target, (None, None))
        frozen = f"cpu={cpu} reads={reads} timed_out={parsed.timed_out.get(target)} age={parsed.age.get(target)}"
        return Scrape(start, latency, True, len(parsed.listed), fresh, fresh_prev, healthy, frozen=frozen,
                      reads=reads)


def listed_count(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
            parsed = parse(response.read().decode(errors="replace"))
    except (OSError, TimeoutError):
        return 0
    return sum(1 for d, (cpu, _reads) in parsed.values.items() if d.startswith(PREFIX) and cpu is not None)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


@dataclass
class PhaseStats:
    started: int  # scrapes started in the phase: their latency
    failed: int
    median: float
    p95: float
    maximum: float
    delivered: int  # scrapes that ended in the phase with data: their freshness
    listed_median: float
    fresh_median: float
    fresh_min: int
    prev_median: float
    prev_min: int
    healthy_median: float | None
    healthy_min: int | None


def phase_stats(started: list[Scrape], ended: list[Scrape], ours: bool) -> PhaseStats:
    """Latency of the scrapes started in a phase; freshness of those that ended in it (data delivered then).

    A failed scrape delivers 0 domains; a phase in which no scrape ended delivered nothing: 0 as well.
    """
    lat = [s.latency for s in started] or [0.0]

    def counts(attr: str) -> list[int]:
        return [int(getattr(s, attr) or 0) if s.ok else 0 for s in ended] or [0]

    fresh, prev, listed, healthy = counts("fresh"), counts("fresh_prev"), counts("listed"), counts("healthy")
    return PhaseStats(
        started=len(started), failed=sum(1 for s in started if not s.ok),
        median=statistics.median(lat), p95=p95(lat), maximum=max(lat),
        delivered=sum(1 for s in ended if s.ok), listed_median=statistics.median(listed),
        fresh_median=statistics.median(fresh), fresh_min=min(fresh),
        prev_median=statistics.median(prev), prev_min=min(prev),
        healthy_median=statistics.median(healthy) if ours else None,
        healthy_min=min(healthy) if ours else None,
    )


def latency_phase(sc: Scrape, bounds: dict[str, tuple[float, float]]) -> str:
    """A scrape in flight at any moment of the stall is a stall scrape; any other, that of its start."""
    lo, hi = bounds["stall"]
    if sc.start < hi and sc.start + sc.latency > lo:
        return "stall"
    return next((p for p, (a, b) in bounds.items() if a <= sc.start < b), "outside")


def delivery_phase(sc: Scrape, bounds: dict[str, tuple[float, float]]) -> str:
    """The phase in which a scrape's answer (or failure) arrived."""
    end = sc.start + sc.latency
    return next((p for p, (a, b) in bounds.items() if a <= end < b), "outside")


def by_phase(scrapes: list[Scrape], bounds: dict[str, tuple[float, float]], ours: bool) -> dict[str, PhaseStats]:
    return {phase: phase_stats([s for s in scrapes if latency_phase(s, bounds) == phase],
                               [s for s in scrapes if delivery_phase(s, bounds) == phase], ours)
            for phase in bounds}


def fmt_num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def log_summary(path: Path, marks: tuple[str, ...] = ("WARNING", "ERROR", "Traceback")) -> list[str]:
    """The lines of a log that carry one of ``marks``, grouped with their digits blanked out."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for line in lines:
        if not any(mark in line for mark in marks):
            continue
        key = re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", "", line)  # Go's log time stamp
        key = re.sub(r"\d+(\.\d+)?", "N", key)
        counts[key] += 1
        first.setdefault(key, line)
    return [f"{n} x `{first[k][:300]}`" for k, n in counts.most_common(12)]


def render(out: Path, args: argparse.Namespace, n: int, ours: Scraper, kumina: Scraper,
           bounds: dict[str, tuple[float, float]], load: dict[str, float], notes: list[str],
           started: float, host_secs: float) -> str:
    stats = {"ours": by_phase(ours.scrapes, bounds, True), "kumina": by_phase(kumina.scrapes, bounds, False)}
    read_rate = "its read rate unknown"
    base = [sc for sc in ours.scrapes if bounds["baseline"][0] <= sc.start < bounds["baseline"][1] and sc.ok]
    if len(base) > 1 and base[-1].reads and base[0].reads is not None and base[-1].start > base[0].start:
        # The snapshots' own times are not known here: a rough rate over the phase (within one poll at each end).
        rate = (base[-1].reads - base[0].reads) / (base[-1].start - base[0].start)
        read_rate = f"about {rate:.1f} reads a second here"
    lines = [
        "# One frozen QEMU domain: our exporter against kumina's",
        "",
        f"Regenerated by `bench/stuck.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {machine()}. Shared and noisy: read the ratios, not the absolute times.",
        "",
        f"Host: a private libvirtd ({tool_version(['libvirtd', '--version'])}, "
        f"{tool_version(['qemu-system-x86_64', '--version'])}) running {n} TCG domains "
        f"(`{PREFIX}0`..`{PREFIX}{n - 1}`: 128 MiB, 2 vCPUs, one qcow2 disk whose boot sector keeps reading it, "
        f"{read_rate}, one tap, a virtio balloon), started in {host_secs:.0f} s. Both exporters talk to it "
        "over `qemu+unix`. Machine CPU busy (all processes): "
        + ", ".join(f"{p} {load.get(p, 0):.0f}%" for p in PHASES) + ".",
        "",
        f"Ours: `python -m exporter --libvirt.poll-interval {POLL_S:g}s --libvirt.domain-timeout "
        f"{DOMAIN_TIMEOUT_S:g}s --libvirt.poll-timeout {POLL_TIMEOUT_S:g}s --no-snmp.enabled` (one cached "
        "snapshot per poll, served to every scrape). Kumina's: Debian's `prometheus-libvirt-exporter` 0.2.0, "
        "which asks libvirt on every scrape.",
        "",
        f"Each exporter is scraped about every {SCRAPE_EVERY_S:g} s from its own thread (a scrape gives up "
        f"after {SCRAPE_TIMEOUT_S:g} s). Phases: baseline {args.baseline:g} s, **stall** {args.stall:g} s "
        f"(`SIGSTOP` of `{PREFIX}0`'s QEMU), recovery {args.recovery:g} s (`SIGCONT`).",
        "",
        "* **scrapes, failed, median/p95/max s**: the scrapes that *started* in the phase, except that a scrape "
        "in flight at any moment of the stall counts as a stall scrape;",
        "* **delivered** and the domain counts: the scrapes that *ended* in the phase, i.e. the data a "
        "Prometheus server actually received then (a failed scrape counts 0; a phase in which no scrape ended "
        "counts 0);",
        f"* **fresh**: domains whose CPU time or vda read requests are greater than the value the same "
        f"exporter delivered at least {WINDOW_S:g} s (two of our poll intervals) earlier, i.e. newer data than "
        f"{WINDOW_S:g} s before (a domain frozen at the stall's start still counts for up to {WINDOW_S:g} s);",
        "* **fresh (prev)**: the same against the exporter's previous scrape (the literal rule; ours serves one "
        f"snapshot per {POLL_S:g} s poll, so four scrapes in five show 0 here by design);",
        f"* **ok**: ours only, domains with `libvirt_domain_timed_out` 0 and stats younger than {WINDOW_S:g} s "
        "(`libvirt_domain_stats_age_seconds` where the domain is behind the snapshot, else the snapshot's age).",
        "",
        "| exporter | phase | scrapes | failed | median s | p95 s | max s | delivered | listed | fresh median | "
        "fresh min | fresh (prev) median | fresh (prev) min | ok median | ok min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("ours", "kumina"):
        for phase in PHASES:
            st = stats[name][phase]
            lines.append(
                f"| {name} | {phase} | {st.started} | {st.failed} | {st.median:.3f} | {st.p95:.3f} | "
                f"{st.maximum:.3f} | {st.delivered} | {fmt_num(st.listed_median)} | {fmt_num(st.fresh_median)} | "
                f"{st.fresh_min} | {fmt_num(st.prev_median)} | {st.prev_min} | {fmt_num(st.healthy_median)} | "
                f"{fmt_num(st.healthy_min)} |")
    o, k = stats["ours"]["stall"], stats["kumina"]["stall"]
    speed = f"{k.median / o.median:.0f}x" if o.median > 0 else "n/a"
    fresh = (f"{o.fresh_median / k.fresh_median:.2f}x" if k.fresh_median > 0
             else f"n/a: kumina's median is 0, ours {fmt_num(o.fresh_median)}")
    lines += [
        "",
        "During the stall:",
        f"* scrape median: ours {o.median:.3f} s, kumina's {k.median:.3f} s (kumina/ours {speed}); "
        f"max ours {o.maximum:.3f} s, kumina's {k.maximum:.3f} s;",
        f"* fresh domains per delivered scrape, median: ours {fmt_num(o.fresh_median)}, kumina's "
        f"{fmt_num(k.fresh_median)} (ours/kumina {fresh}); minimum ours {o.fresh_min}, kumina's {k.fresh_min};",
        f"* scrapes that delivered data: ours {o.delivered}, kumina's {k.delivered}.",
    ]
    ended = [sc for sc in kumina.scrapes if delivery_phase(sc, bounds) == "stall"]
    if len(ended) <= 12:
        lines[-1] = lines[-1][:-1] + ";"
        lines.append("* each of kumina's scrapes that ended during the stall (took s: listed/fresh): " + (", ".join(
            f"{sc.latency:.1f}: {sc.listed}/{sc.fresh}" if sc.ok else f"{sc.latency:.1f}: failed" for sc in ended)
            or "none") + ".")
    errors: Counter[str] = Counter()
    for name, s in (("ours", ours), ("kumina", kumina)):
        for sc in s.scrapes:
            if not sc.ok:
                errors[f"{name}: {re.sub(r'[0-9]+', 'N', sc.error)}"] += 1
    if errors:
        lines += ["", "Failed scrapes:"] + [f"* {n} x {e}" for e, n in errors.most_common(8)]
    warnings = log_summary(WORK / "ours.log")
    lines += ["", f"Our exporter's log (`{WORK / 'ours.log'}`), WARNING/ERROR lines grouped (digits as N):"]
    lines += [f"* {w}" for w in warnings] if warnings else ["* none"]
    partial = [sc for sc in kumina.scrapes if sc.ok and sc.listed < n]
    if partial:
        notes.append(f"{len(partial)} of kumina's scrapes answered HTTP 200 with only "
                     f"{min(sc.listed for sc in partial)}-{max(sc.listed for sc in partial)} of the {n} domains: "
                     "it stops collecting at the first libvirt error and only logs it (below).")
    try:
        klog = (WORK / "kumina.log").read_text(errors="replace")
    except OSError:
        klog = ""
    # Whoever asks the frozen monitor first hangs there until SIGCONT; everyone else waits libvirt's 30 s for
    # the domain's job and fails. Which exporter comes first varies from run to run.
    if "held by monitor=remoteDispatchConnectGetAllDomainStats" in klog:
        notes.append(f"Our exporter's call (getAllDomainStats) was the one stuck in {PREFIX}0's frozen monitor "
                     "(by kumina's log); kumina's calls waited 30 s for the domain's job and failed.")
    elif "held by monitor=remoteDispatchDomain" in klog:
        notes.append(f"Kumina's own call was the one stuck in {PREFIX}0's frozen monitor (by its log); its later "
                     "calls, and ours, waited 30 s for the domain's job and failed.")
    kumina_errors = log_summary(WORK / "kumina.log", ("Failed", "error", "rror"))
    if kumina_errors:
        lines += ["", f"Kumina's log (`{WORK / 'kumina.log'}`), error lines grouped (digits as N):"]
        lines += [f"* {w}" for w in kumina_errors]
    if notes:
        lines += ["", "Notes:"] + [f"* {note}" for note in notes]
    lines += ["", f"Run time up to this report: {time.monotonic() - started:.0f} s (host start-up included; the "
              "clean-up, which destroys the domains one by one, comes after). Plot: `stuck.png`. Every scrape: "
              f"`{WORK / 'scrapes.csv'}` (not kept in the tree).", ""]
    text = "\n".join(lines)
    (out / "STUCK.md").write_text(text, encoding="utf-8")
    plot(out / "stuck.png", n, ours, kumina, bounds)
    write_csv(WORK / "scrapes.csv", {"ours": ours, "kumina": kumina}, bounds)
    return text


def write_csv(path: Path, scrapers: dict[str, Scraper], bounds: dict[str, tuple[float, float]]) -> None:
    """Every scrape, for a closer look: exporter, phase, seconds since the baseline, latency, counts."""
    t0 = bounds["baseline"][0]
    rows = ["exporter,phase,delivered_in,t,latency,ok,listed,fresh,fresh_prev,ok_domains,frozen_domain,error"]
    for name, s in scrapers.items():
        for sc in s.scrapes:
            phase = f"{latency_phase(sc, bounds)},{delivery_phase(sc, bounds)}"
            rows.append(f"{name},{phase},{sc.start - t0:.3f},{sc.latency:.4f},{int(sc.ok)},{sc.listed},{sc.fresh},"
                        f"{sc.fresh_prev},{'' if sc.healthy is None else sc.healthy},\"{sc.frozen}\","
                        f"\"{sc.error.replace(chr(34), chr(39))}\"")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def plot(path: Path, n: int, ours: Scraper, kumina: Scraper, bounds: dict[str, tuple[float, float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    t0, t_end = bounds["baseline"][0], bounds["recovery"][1]
    stall = bounds["stall"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for ax in (top, bottom):
        ax.axvspan(stall[0] - t0, stall[1] - t0, color="tab:red", alpha=0.12, label=f"{PREFIX}0 SIGSTOPped")
        ax.grid(True, alpha=0.3)

    def delivered(s: Scraper, attr: str) -> tuple[list[float], list[float]]:
        """Domain counts at the time each scrape ended (when the data arrived); a failed scrape gives 0."""
        kept = [sc for sc in s.scrapes if t0 <= sc.start + sc.latency < t_end]
        return ([sc.start + sc.latency - t0 for sc in kept],
                [float(getattr(sc, attr) or 0) if sc.ok else 0.0 for sc in kept])

    x, y = delivered(ours, "fresh")
    top.step(x, y, where="post", color="tab:blue", label=f"ours: fresh (newer than {WINDOW_S:g} s before)")
    x, y = delivered(ours, "healthy")
    top.plot(x, y, ":", color="tab:cyan", label=f"ours: timed_out 0 and stats age < {WINDOW_S:g} s")
    x, y = delivered(kumina, "fresh")
    top.plot(x, y, "o", color="tab:orange", markersize=4,
             label=f"kumina: fresh (newer than {WINDOW_S:g} s before), one dot per scrape that ended")
    top.set_ylabel("domains with fresh data")
    top.set_ylim(-1, n * 1.08 + 1)
    top.legend(loc="lower left", fontsize=8)
    top.set_title(f"{n} TCG domains, one frozen (SIGSTOP) for {stall[1] - stall[0]:.0f} s")

    for s, color, label in ((ours, "tab:blue", "ours"), (kumina, "tab:orange", "kumina")):
        kept = [sc for sc in s.scrapes if t0 <= sc.start < t_end]
        bottom.plot([sc.start - t0 for sc in kept if sc.ok], [sc.latency for sc in kept if sc.ok], ".",
                    color=color, label=f"{label}: scrape latency")
        for sc in kept:  # a long scrape: a bar from its start to its end, at its latency
            if sc.latency > 2:
                bottom.hlines(sc.latency, sc.start - t0, sc.start + sc.latency - t0, color=color, alpha=0.5)
        failed = [sc for sc in kept if not sc.ok]
        if failed:
            bottom.plot([sc.start - t0 for sc in failed], [sc.latency for sc in failed], "x", color=color,
                        markersize=8, label=f"{label}: failed scrape")
    bottom.set_yscale("log")
    bottom.set_ylabel("scrape seconds (log)")
    bottom.set_xlabel("seconds since the baseline started")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class BenchError(Exception):
    pass


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def kill_by_pidfiles(run: Path) -> None:
    """A host that failed half-way: its QEMUs and daemons are ours, known by the pid files in our own folder."""
    for pidfile in [*sorted((run / "qemu").glob("*.pid")), run / "libvirtd.pid", run / "virtlogd.pid"]:
        try:
            pid = int(pidfile.read_text().strip())
            # A stale pid file may name a reused pid: only a process whose command line names our folder is ours.
            if str(run.parent).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def wait_listing(urls: dict[str, str], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending:
        for name, url in list(pending.items()):
            if listed_count(url) >= n:
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{', '.join(pending)} did not list all {n} domains within {timeout:.0f} s")
        time.sleep(1)


def run_phase(seconds: float, loads: dict[str, float], phase: str) -> tuple[float, float]:
    busy0, total0 = cpu_ticks()
    start = time.monotonic()
    time.sleep(seconds)
    busy1, total1 = cpu_ticks()
    loads[phase] = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
    return start, time.monotonic()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--domains", type=int, default=60, help="TCG domains on the host (default 60)")
    parser.add_argument("--stall", type=float, default=120.0, help="seconds lxb-0 stays SIGSTOPped (default 120)")
    parser.add_argument("--baseline", type=float, default=30.0, help="seconds before the stall (default 30)")
    parser.add_argument("--recovery", type=float, default=30.0, help="seconds after the stall (default 30)")
    parser.add_argument("--out", default=str(ROOT / "bench"), help="folder for STUCK.md and stuck.png")
    args = parser.parse_args(argv)
    if args.domains < 1 or args.stall <= 0 or args.baseline <= 0 or args.recovery <= 0:
        parser.error("--domains, --stall, --baseline and --recovery must be positive")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unpacked = ROOT / "build" / "kumina" / "usr" / "bin" / "prometheus-libvirt-exporter"
    kumina_bin = str(unpacked) if unpacked.exists() else shutil.which("prometheus-libvirt-exporter")
    if kumina_bin is None:
        print("kumina's prometheus-libvirt-exporter not found (make bench unpacks it)", file=sys.stderr)
        return 2
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _on_term)
    WORK.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="host-", dir=WORK))
    host: RealHost | None = None
    ours_exp: Exporter | None = None
    kumina_proc: subprocess.Popen[bytes] | None = None
    kumina_log = None
    stop = threading.Event()
    scrapers: list[Scraper] = []
    frozen_pid: int | None = None
    notes: list[str] = []
    try:
        print(f"starting {args.domains} TCG domains under a private libvirtd in {root} ...", file=sys.stderr,
              flush=True)
        try:
            host = start_real_host(root, PREFIX, args.domains, kvm=False, code=_READ_LOOP)
        except BaseException as exc:  # pytest's skip/fail outcomes are BaseException
            if isinstance(exc, KeyboardInterrupt):
                raise
            print(f"cannot start the real QEMU host: {exc}", file=sys.stderr)
            return 1
        host_secs = time.monotonic() - started
        print(f"host up in {host_secs:.0f} s: {host.uri}", file=sys.stderr, flush=True)

        ours_exp = Exporter(["--libvirt.uri", host.uri, "--libvirt.poll-interval", f"{POLL_S:g}s",
                             "--libvirt.domain-timeout", f"{DOMAIN_TIMEOUT_S:g}s",
                             "--libvirt.poll-timeout", f"{POLL_TIMEOUT_S:g}s", "--no-snmp.enabled",
                             "--state.directory", str(WORK / "state")],
                            log=WORK / "ours.log")
        kport = free_port()
        kumina_log = open(WORK / "kumina.log", "wb")
        kumina_proc = subprocess.Popen([kumina_bin, f"--web.listen-address=127.0.0.1:{kport}",
                                        f"--libvirt.uri={host.uri}"],
                                       stdout=kumina_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        ours_exp.wait_ready(timeout=60)
        urls = {"ours": ours_exp.url + "/metrics", "kumina": f"http://127.0.0.1:{kport}/metrics"}
        wait_listing(urls, args.domains, timeout=300)
        print("both exporters list every domain; scraping", file=sys.stderr, flush=True)

        ours = Scraper("ours", urls["ours"], stop, ours=True)
        kumina = Scraper("kumina", urls["kumina"], stop, ours=False)
        scrapers = [ours, kumina]
        for s in scrapers:
            s.start()
        time.sleep(WINDOW_S + 1)  # warm-up: every later scrape has a value WINDOW_S old to compare with
        loads: dict[str, float] = {}
        bounds: dict[str, tuple[float, float]] = {}
        print(f"baseline {args.baseline:g} s", file=sys.stderr, flush=True)
        bounds["baseline"] = run_phase(args.baseline, loads, "baseline")
        frozen_pid = int((root / "run" / "qemu" / f"{PREFIX}0.pid").read_text().strip())
        print(f"stall {args.stall:g} s: SIGSTOP {PREFIX}0 (pid {frozen_pid})", file=sys.stderr, flush=True)
        os.kill(frozen_pid, signal.SIGSTOP)
        try:
            bounds["stall"] = run_phase(args.stall, loads, "stall")
        finally:
            os.kill(frozen_pid, signal.SIGCONT)
            frozen_pid = None
        print(f"recovery {args.recovery:g} s: SIGCONT", file=sys.stderr, flush=True)
        bounds["recovery"] = run_phase(args.recovery, loads, "recovery")
        stop.set()
        for s in scrapers:
            s.join(timeout=SCRAPE_TIMEOUT_S + 5)
        for name, proc_alive in (("ours", ours_exp.proc.poll() is None),
                                 ("kumina", kumina_proc.poll() is None)):
            if not proc_alive:
                notes.append(f"{name}'s exporter exited during the run")
        text = render(out, args, args.domains, ours, kumina, bounds, loads, notes, started, host_secs)
        print(text)
        return 0
    except BenchError as exc:
        print(f"bench/stuck.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/stuck.py: interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
        if frozen_pid is not None:
            try:
                os.kill(frozen_pid, signal.SIGCONT)
            except OSError:
                pass
        stop.set()
        if kumina_proc is not None and kumina_proc.poll() is None:
            kumina_proc.terminate()
            try:
                kumina_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kumina_proc.kill()
                kumina_proc.wait()
        if kumina_log is not None:
            kumina_log.close()
        if ours_exp is not None:
            ours_exp.stop()
        for s in scrapers:
            s.join(timeout=5)
        if host is not None:
            host.daemon.shutdown()
        else:
            kill_by_pidfiles(root / "run")
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
