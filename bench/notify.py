"""Benchmark: SNMP notifications per second per target, into a real snmptrapd on loopback.

For each row a Notifier is built with one trap target and one inform target
(both SNMPv2c, or both SNMPv3 authPriv), a fresh snmptrapd listens on two
loopback ports, and N lifecycle notifications are submitted at once to each
target (queues sized to hold them).  A target's time is until its ``sent``
counter reaches N (informs: acknowledged) and snmptrapd has logged all N;
then every notification is checked to have arrived exactly once, in order.
The same run measures the old path: v2c through pysnmp one at a time (the
Notifier's private ``_v2c_via_pysnmp`` switch), and v3 one at a time.

Also measured: snmptrapd's own ceiling (pre-encoded traps from a bare socket
at fixed rates, with its log to a file and with no log at all, its CPU per
trap, and how many it lost in its socket buffer), our v2c traps without the
pacing (what the sender does, and what the receiver loses), and the inform
window (v2c and v3) against the rate.

Writes ``NOTIFY.md`` into the output folder and prints its tables.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from exporter.config.snmp import NotifyTarget, V3User  # noqa: E402
from exporter.config.values import ListenAddress  # noqa: E402
from exporter.snmp import mib  # noqa: E402
from exporter.snmp.notify import PYSNMP_WINDOW, Notifier, notifier_engine_id  # noqa: E402
from exporter.snmp.syntax import NotificationDef  # noqa: E402
from exporter.snmp.v2send import TRAP_BURST, TRAP_PDU, TRAP_RATE, WINDOW, encode_notification  # noqa: E402
from tests.support.snmp import BASE_MIBS, free_udp_port  # noqa: E402
from tests.support.trapd import Trapd  # noqa: E402

ENGINE_ID = bytes.fromhex("80001f8805aabbccddeeff00112233")
TRAPPER = V3User("trapper", "trapper-auth-key", "trapper-priv-key", "SHA-256", "AES")
INFORMER = V3User("informer", "informer-auth-key", "informer-priv-key", "SHA-512", "AES-256")
V3_USERS = [f"-e 0x{notifier_engine_id(ENGINE_ID).hex()} trapper SHA-256 trapper-auth-key AES trapper-priv-key",
            "informer SHA-512 informer-auth-key AES-256 informer-priv-key"]
_HEADER = re.compile(rb"->\[127\.0\.0\.1\]:(\d+)")
_NUMBER = re.compile(r'STRING: "bench(\d+)"')


def notification(i: int) -> NotificationDef:
    """lvxDomainSuspended for domain ``bench<i>``: what a lifecycle event sends (six varbinds of its own)."""
    (lvx, *_) = [n for n in mib.lifecycle_notifications(
        "suspended", f"bench{i}", f"4d1f0a52-0c6c-4c3e-9b1a-{i:012d}", 1 + i % 5000, 3, 1,
        persistent=True, previous_state=1) if n.mib == "libvirt-exporter"]
    return lvx


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_receive_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full socket buffer (the whole machine's)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["RcvbufErrors"])


class LogTail:
    """Counts what snmptrapd has logged per port, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""
        self.port: int | None = None
        self.counts: dict[int, int] = {}

    def poll(self) -> dict[int, int]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            header = _HEADER.search(line)
            if header:
                self.port = int(header.group(1))
            elif line.startswith(b".1.3.6.1.2.1.1.3.0") and self.port is not None:
                self.counts[self.port] = self.counts.get(self.port, 0) + 1
                self.port = None
        return self.counts


@dataclass
class Row:
    version: str
    kind: str
    path: str
    count: int
    seconds: float
    sent_seconds: float
    exact: bool
    dropped: int
    retries: int
    our_cpu_us: float  # our process's CPU per notification, both targets of the run together
    trapd_cpu_us: float  # snmptrapd's, likewise

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def targets(version_: str, ports: list[int], count: int, kinds: tuple[str, ...]) -> list[NotifyTarget]:
    result = []
    for kind, port in zip(kinds, ports, strict=False):
        address = ListenAddress("127.0.0.1", port)
        if version_ == "v3":
            result.append(NotifyTarget(address, kind=kind, version="v3",
                                       user=TRAPPER if kind == "trap" else INFORMER, queue_size=count))
        else:
            result.append(NotifyTarget(address, kind=kind, community=f"bench-{kind}", queue_size=count))
    return result


async def _run(trapd: Trapd, cfgs: list[NotifyTarget], count: int, state: Path, old: bool,
               window: int | None, trap_rate: float | None, settle: float | None) -> list[dict[str, float]]:
    notifier = Notifier(cfgs, ENGINE_ID, state)
    if old:
        notifier._v2c_via_pysnmp = True
        notifier._pysnmp_window = 1
    if window is not None:
        notifier._v2c_window = window
        notifier._pysnmp_window = window
    notifier._trap_rate = trap_rate
    await notifier.start()
    tail = LogTail(trapd.log)
    tail.poll()
    names = notifier.target_names
    sent_at: dict[str, float] = {}
    received_at: dict[str, float] = {}
    try:
        work = [notification(i) for i in range(count)]
        cpu0, trapd_cpu0 = time.process_time(), cpu_seconds(trapd.proc.pid)
        t0 = time.monotonic()
        for n in work:
            notifier.submit(n)
        progress_at, last = t0, (-1, -1)
        while len(received_at) < len(names) or len(sent_at) < len(names):
            await asyncio.sleep(0.01)
            now = time.monotonic()
            counts = tail.poll()
            for name, cfg in zip(names, cfgs, strict=True):
                if name not in sent_at and notifier.sent[name] + notifier.dropped[name] >= count:
                    sent_at[name] = now - t0
                if name not in received_at and counts.get(cfg.address.port, 0) >= count:
                    received_at[name] = now - t0
            seen = (sum(counts.values()), sum(notifier.sent.values()))
            if seen != last:
                progress_at, last = now, seen
            elif settle is not None and now - progress_at > settle:
                break  # nothing more is coming (traps lost in the receiver's buffer)
            elif now - progress_at > 60:
                raise RuntimeError(f"no progress for 60 s: {counts} {dict(notifier.sent)}")
        cpu = time.process_time() - cpu0
        trapd_cpu = cpu_seconds(trapd.proc.pid) - trapd_cpu0
    finally:
        await notifier.stop()
    counts = tail.poll()
    return [{"sent": notifier.sent[name], "dropped": notifier.dropped[name], "retries": notifier.retries[name],
             "sent_s": sent_at.get(name, float("nan")), "done_s": max(sent_at.get(name, 0.0),
                                                                        received_at.get(name, float("nan"))),
             "received": counts.get(cfg.address.port, 0), "cpu": cpu, "trapd_cpu": trapd_cpu}
            for name, cfg in zip(names, cfgs, strict=True)]


def logged_numbers(trapd: Trapd, port: int) -> list[int]:
    return [int(m.group(1)) for r in trapd.received() if r.port == port and (m := _NUMBER.search(r.text))]


def measure(folder: Path, version_: str, path: str, count: int, kinds: tuple[str, ...] = ("trap", "inform"),
            window: int | None = None, trap_rate: float | None = TRAP_RATE,
            settle: float | None = None) -> list[tuple[Row, dict[str, float]]]:
    folder.mkdir(parents=True)
    trapd = Trapd(folder / "trapd", len(kinds), V3_USERS)
    try:
        cfgs = targets(version_, trapd.ports, count, kinds)
        results = asyncio.run(_run(trapd, cfgs, count, folder / "state", path == "old", window, trap_rate, settle))
        rows = []
        for cfg, r in zip(cfgs, results, strict=True):
            numbers = logged_numbers(trapd, cfg.address.port)
            exact = numbers == list(range(count))
            r["ascending"] = float(all(a < b for a, b in itertools.pairwise(numbers)))
            total = count * len(kinds)
            rows.append((Row(version_, cfg.kind, path, count, r["done_s"], r["sent_s"], exact, int(r["dropped"]),
                             int(r["retries"]), r["cpu"] / total * 1e6, r["trapd_cpu"] / total * 1e6), r))
        return rows
    finally:
        trapd.stop()


# -- snmptrapd's own ceiling ---------------------------------------------------------------------------------------


def receiver_ceiling(folder: Path, logging_: str, rate: float, count: int) -> dict[str, float]:
    """Pre-encoded v2c traps from a bare socket at ``rate``/s: what snmptrapd logged, lost, and its CPU per trap."""
    folder.mkdir(parents=True)
    port = free_udp_port()
    conf = folder / "snmptrapd.conf"
    conf.write_text("disableAuthorization yes\n")
    log_file = folder / "trapd.log"
    logs = ["-Lf", str(log_file)] if logging_ == "file" else ["-Ln"]
    exe = shutil.which("snmptrapd")
    assert exe is not None
    proc = subprocess.Popen([exe, "-f", "-C", "-c", str(conf), *logs, "-On", "-n", "-M", str(BASE_MIBS), "-m", "",
                             f"udp:127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and logging_ == "file" and (
                not log_file.exists() or "NET-SNMP version" not in log_file.read_text(errors="replace")):
            time.sleep(0.05)
        time.sleep(0.5)  # past its start-up work, whatever the log says
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            datagrams = [encode_notification(b"ceiling", TRAP_PDU, i + 1, i, notification(i)) for i in range(count)]
            errors0, cpu0 = udp_receive_errors(), cpu_seconds(proc.pid)
            t0 = time.monotonic()
            for i, datagram in enumerate(datagrams):
                sock.sendto(datagram, ("127.0.0.1", port))
                if i % 10 == 9:  # ten at a time, then wait for the schedule (less CPU than a busy loop)
                    ahead = t0 + (i + 1) / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            sent_s = time.monotonic() - t0
            last, stable = -1.0, time.monotonic()
            while time.monotonic() - stable < 0.5:  # until snmptrapd stops working
                time.sleep(0.1)
                now_cpu = cpu_seconds(proc.pid)
                if now_cpu != last:
                    last, stable = now_cpu, time.monotonic()
        lost = udp_receive_errors() - errors0
        cpu = cpu_seconds(proc.pid) - cpu0
        logged = log_file.read_text(errors="replace").count("STRING: \"bench") if logging_ == "file" else -1
        return {"rate": count / sent_s, "lost": lost, "logged": logged, "cpu_us": cpu / max(1, count - lost) * 1e6}
    finally:
        proc.terminate()
        proc.wait(timeout=5)


# -- report ----------------------------------------------------------------------------------------------------------


def machine() -> list[str]:
    model = cpu_model()
    trapd_version = subprocess.run(["snmptrapd", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"NET-SNMP Version:\s*(\S+)", trapd_version)
    return [f"{model}, {os.cpu_count()} CPUs (shared with other work while this ran; load average at start "
            f"{os.getloadavg()[0]:.2f})",
            f"Linux {platform.release()}, Python {platform.python_version()}, pysnmp {version('pysnmp')}, "
            f"pyasn1 {version('pyasn1')}, net-snmp snmptrapd {found.group(1) if found else '?'}"]


def table(rows: list[Row], old: dict[tuple[str, str], Row]) -> list[str]:
    out = ["| version | kind | path | N | notifications/s | vs old | all sent after s | exactly once, in order | "
           "dropped | retries | our CPU µs/notif. | snmptrapd CPU µs/notif. |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = old.get((r.version, r.kind))
        ratio = f"{r.rate / base.rate:.1f}x" if base is not None and r.path != "old" and base.rate else ""
        out.append(f"| {r.version} | {r.kind} | {r.path} | {r.count} | {r.rate:.0f} | {ratio} | {r.sent_seconds:.2f} "
                   f"| {'yes' if r.exact else 'NO'} | {r.dropped} | {r.retries} | {r.our_cpu_us:.0f} | "
                   f"{r.trapd_cpu_us:.0f} |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000, help="notifications per target, our v2c path")
    parser.add_argument("--slow-count", type=int, default=2000, help="per target on the old path and for v3")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    if shutil.which("snmptrapd") is None:
        print("snmptrapd not found (Debian package snmptrapd)", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = machine()
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        work = Path(tmp)
        step = iter(range(1000))

        def run(*a: object, **k: object) -> list[tuple[Row, dict[str, float]]]:
            return measure(work / f"run{next(step)}", *a, **k)  # type: ignore[arg-type]

        rows: list[Row] = []
        for version_, path, count in (("v2c", "ours", args.count), ("v2c", "old", args.slow_count),
                                      ("v3", "ours", args.slow_count), ("v3", "old", args.slow_count)):
            got = run(version_, path, count)
            rows += [r for r, _ in got]
            print(f"{version_} {path}: " + ", ".join(f"{r.kind} {r.rate:.0f}/s" for r, _ in got), flush=True)
        old = {(r.version, r.kind): r for r in rows if r.path == "old"}

        # our v2c traps without pacing: what we send, what snmptrapd keeps
        (_, raw), = run("v2c", "ours, unpaced", args.count, kinds=("trap",), trap_rate=None, settle=2.0)
        print(f"unpaced traps: sent {args.count / raw['sent_s']:.0f}/s, received {int(raw['received'])}", flush=True)

        windows = []
        for w in (1, 8, WINDOW, 64):
            (r, _), = run("v2c", f"window {w}", args.count // 2, kinds=("inform",), window=w)
            windows.append(r)
            print(f"v2c informs, window {w}: {r.rate:.0f}/s", flush=True)
        for w in sorted({1, PYSNMP_WINDOW, 16}):
            (r, _), = run("v3", f"window {w}", args.slow_count // 4, kinds=("inform",), window=w)
            windows.append(r)
            print(f"v3 informs, window {w}: {r.rate:.0f}/s", flush=True)

        ceiling = []
        for logging_ in ("file", "none"):
            for rate in (2000, 4000, 6000, 8000):
                c = receiver_ceiling(work / f"ceiling-{logging_}-{rate}", logging_, rate, 20000)
                ceiling.append((logging_, rate, c))
                print(f"snmptrapd, log {logging_}, {rate}/s: lost {c['lost']}, {c['cpu_us']:.0f} µs/trap", flush=True)

    lines = ["# SNMP notifications: throughput per target", "",
             f"Generated by `bench/notify.py` on {started}.", "", *[f"- {m}" for m in header], "",
             "## Method", "",
             "Each run builds a `Notifier` in this process (no libvirt: notifications are submitted directly) with one "
             "trap target and one inform target, both SNMPv2c (communities) or both SNMPv3 authPriv (SHA-256/AES and "
             "SHA-512/AES-256 users), sending to a fresh `snmptrapd` on two loopback ports (logging to a file, `-Lf`, "
             "as the tests do).  N notifications (lvxDomainSuspended, six varbinds, the domain name numbered) are "
             "submitted at once to each target, whose queue holds N.  A target's time runs until its `sent` counter "
             "reaches N (an inform counts when acknowledged) and `snmptrapd` has logged all N; both targets run at "
             "the same time, in one event loop.  Then the log is checked: every notification exactly once, in order.  "
             "The *old* path is the one-at-a-time pysnmp sender this replaced (v2c through pysnmp's "
             "`send_notification`, one outstanding; the Notifier keeps it behind a private switch for this "
             "benchmark), and v3 with one `send_notification` outstanding.  CPU per notification is for the whole "
             "run (both targets), ours from `time.process_time`, snmptrapd's from `/proc`.", "",
             f"Our v2c traps are paced to {TRAP_RATE:.0f}/s after a burst of {TRAP_BURST} "
             "(`exporter.snmp.v2send.TRAP_RATE`); v2c informs keep up to "
             f"{WINDOW} outstanding; v3 informs keep up to {PYSNMP_WINDOW} pysnmp sends outstanding "
             "(v3 traps: one at a time).", "",
             "## Throughput", "", *table(rows, old), "",
             "## Unpaced traps, inform windows", "",
             f"Our v2c traps with the pacing off ({args.count} at once): sent at {args.count / raw['sent_s']:.0f}/s; "
             f"snmptrapd logged {int(raw['received'])} of them (the rest overflowed its socket buffer; "
             f"{'each once, in order, of those logged' if raw['ascending'] else 'NOT in order'}).", "",
             *table(windows, {}), "",
             "## snmptrapd's ceiling", "",
             "20,000 pre-encoded v2c traps from a bare socket at a fixed rate (ten at a time); *lost* is the kernel's "
             "count of datagrams dropped for a full socket buffer during the run (`RcvbufErrors`, whole machine).", "",
             "| log | offered/s | lost | logged | snmptrapd CPU µs/trap |", "|---|---|---|---|---|",
             *[f"| {lg} | {c['rate']:.0f} | {c['lost']} | {'' if c['logged'] < 0 else int(c['logged'])} | "
               f"{c['cpu_us']:.0f} |" for lg, _, c in ceiling], "",
             "## What limits the rate", "",
             *analysis(rows, windows, ceiling, args.count / raw["sent_s"], int(raw["received"]), args.count), ""]
    text = "\n".join(lines)
    (args.out / "NOTIFY.md").write_text(text, encoding="utf-8")
    print()
    print(text)
    return 0


def analysis(rows: list[Row], windows: list[Row], ceiling: list[tuple[str, int, dict[str, float]]],
             unpaced_rate: float, unpaced_received: int, count: int) -> list[str]:
    def row(version_: str, kind: str, path: str, among: list[Row] = rows) -> Row:
        return next(r for r in among if (r.version, r.kind, r.path) == (version_, kind, path))

    file_us = statistics.median(c["cpu_us"] for lg, _, c in ceiling if lg == "file")
    none_us = statistics.median(c["cpu_us"] for lg, _, c in ceiling if lg == "none")
    kept = [rate for lg, rate, c in ceiling if lg == "file" and c["lost"] == 0]
    v2c_trap, v2c_inform = row("v2c", "trap", "ours"), row("v2c", "inform", "ours")
    old_trap, old_inform = row("v2c", "trap", "old"), row("v2c", "inform", "old")
    v3_trap, v3_inform = row("v3", "trap", "ours"), row("v3", "inform", "ours")
    v2c_windows = ", ".join(f"{r.path}: {r.rate:.0f}/s" for r in windows if r.version == "v2c")
    v3_windows = ", ".join(f"{r.path}: {r.rate:.0f}/s" for r in windows if r.version == "v3")
    v3_gain = max(r.rate for r in windows if r.version == "v3") / row("v3", "inform", "window 1", windows).rate
    return [
        f"- **snmptrapd** spent a median {file_us:.0f} µs of CPU per trap logging to a file (`-Lf`) and "
        f"{none_us:.0f} µs with no log at all (`-Ln`): decoding and handling the message is its cost, not the "
        f"log, so `-Lf` keeps up as well as anything; a core of its own would take about {1e6 / file_us:.0f} "
        f"traps/s.  Offered steadily, it lost none up to {max(kept) if kept else 0}/s in this run (the machine "
        "was shared: whenever it is not scheduled for a moment, what exceeds its socket buffer, about 300 such "
        "datagrams by default, is lost without a trace).",
        f"- **v2c traps** ({v2c_trap.rate:.0f}/s, {v2c_trap.rate / old_trap.rate:.0f}x the old path) go at our "
        f"pacing rate, {TRAP_RATE:.0f}/s: the cap is deliberate, as a trap sender cannot see its receiver fall "
        f"behind.  Unpaced, the sender put out {unpaced_rate:.0f}/s and snmptrapd logged {unpaced_received} of "
        f"{count}.",
        f"- **v2c informs** ({v2c_inform.rate:.0f}/s, {v2c_inform.rate / old_inform.rate:.0f}x the old path) are "
        f"bound by CPU: ours ({v2c_inform.our_cpu_us:.0f} µs per notification, both targets and the benchmark's "
        f"own log reading together) and snmptrapd's ({v2c_inform.trapd_cpu_us:.0f} µs), on two shared cores.  By "
        f"window (informs alone): {v2c_windows}.  One at a time, we and snmptrapd take turns; with a few "
        "outstanding both work at once, and beyond that the differences are within this machine's noise.  Over "
        "a network the window matters more: one outstanding inform allows at most one per round trip.  "
        "The window also bounds what the "
        "receiver's socket buffer must hold, so informs are never lost there.",
        f"- **The old path** spent {old_trap.our_cpu_us:.0f} µs of our CPU per notification (pysnmp's message "
        "processing), one at a time: a couple of hundred a second on a loop with nothing else to do, and less "
        "when the loop is busy with the rest of the exporter's work.",
        f"- **v3** ({v3_trap.rate:.0f} traps/s, {v3_inform.rate:.0f} informs/s, {v3_trap.our_cpu_us:.0f} µs of our "
        "CPU per notification) is bound by pysnmp: USM, encryption and its object model, per message.  v3 traps "
        "go one at a time on both paths (a trap has no round trip to overlap), so their two rows differ by this "
        "machine's noise only.  Several `send_notification` calls outstanding on one engine are safe (each "
        "inform is matched by its own message ID; every one arrived once, in order, with no retries), and gain "
        f"little, the CPU being the limit: {v3_windows} (informs alone; best {v3_gain:.1f}x one at a time).",
    ]


if __name__ == "__main__":
    sys.exit(main())
