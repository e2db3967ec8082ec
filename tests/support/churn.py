"""Lifecycle churn against the real exporter, shared by tests/test_churn.py and bench/churn.py.

The pieces:

* :func:`populate` defines and starts N small test-driver domains on the
  connection that keeps libvirtd's shared ``test:///default`` host alive;
* :class:`EventLog` counts the lifecycle events libvirt really delivers (a
  callback on a connection of its own, libvirt's default event loop in a
  thread) and remembers, per domain UUID, when it last changed;
* :class:`ChurnDriver` is a thread with its own connection that suspends,
  resumes, destroys, starts, shuts down, adds (defineXML + create, or a
  transient createXML) and undefines domains at a given rate, steering so
  that the population stays near N;
* :class:`Sampler` compares, every couple of seconds, what libvirt lists
  against ``/metrics`` (``libvirt_domain_state_code``) and the SNMP domain
  table (lvxDomainUUID and lvxDomainOperState, bulk-walked with net-snmp),
  and records latencies, the exporter's own counters and its RSS;
* :class:`ChurnRig` starts it all (private libvirtd, snmptrapd with a trap
  port and an inform port, the exporter) and :func:`run_churn` runs a quiet
  phase, a churn phase, waits for the notification queues to settle and
  checks every notification against the events, by content.

The freshness rule: a front end may serve a state that differs from the one
libvirt reports just after the read (or serve a domain libvirt no longer
lists, or miss one it lists) only if that domain changed at most ``grace``
seconds before the read began, or during it.  A read cannot be blamed for an
event it raced with, nor for one less than ``grace`` seconds old.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import libvirt

from exporter.snapshot import STATE_NAMES as SNAPSHOT_STATE_NAMES
from exporter.snmp import mib_lvx
from exporter.source import start_event_loop
from exporter.source.connection import EVENT_NAMES
from tests.support import snmp
from tests.support.libvirtd import PrivateLibvirtd
from tests.support.process import Exporter, Metrics
from tests.support.trapd import Trapd
from tests.support.wait import poll_until

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

KINDS = EVENT_NAMES  # libvirt's lifecycle event codes by the exporter's names for them
STATE_NAMES = dict(SNAPSHOT_STATE_NAMES)
LVX = ".".join(map(str, mib_lvx.LVX_ROOT))
DOMAIN_ENTRY = ".".join(map(str, mib_lvx.LVX_DOMAIN_ENTRY))
UUID_COLUMN = f"{DOMAIN_ENTRY}.3"  # lvxDomainUUID
STATE_COLUMN = f"{DOMAIN_ENTRY}.5"  # lvxDomainOperState
_TRAP_UUID = re.compile(re.escape(f".{UUID_COLUMN}.") + r'\d+ = STRING: "([0-9a-f-]{36})"')
_CODE_KIND = {code: kind for kind, code in mib_lvx.LVX_NOTIFICATIONS.items()}
TRAP_COMMUNITY = "churn-trap"
INFORM_COMMUNITY = "churn-inform"


def state_name(code: int | None) -> str:
    return "absent" if code is None else f"{STATE_NAMES.get(code, 'unknown')}({code})"


def domain_xml(name: str, serial: int) -> str:
    """A small test-driver domain: one disk, one NIC (named so that libvirt keeps it), a balloon."""
    return (
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='/var/lib/libvirt/images/{name}.qcow2'/><target dev='vda' bus='virtio'/></disk>"
        f"<interface type='bridge'><source bridge='br0'/><target dev='ch{serial:06d}'/><model type='virtio'/>"
        "</interface><memballoon model='virtio'/></devices></domain>"
    )


def populate(conn: libvirt.virConnect, count: int, prefix: str = "churn") -> dict[str, str]:
    """Define and start ``count`` persistent domains on ``conn``; {uuid: name}."""
    made = {}
    for i in range(count):
        name = f"{prefix}-{i:05d}"
        dom = conn.defineXML(domain_xml(name, i))
        dom.create()
        made[dom.UUIDString()] = name
    return made


def truth(conn: libvirt.virConnect) -> dict[str, tuple[str, int]]:
    """What libvirt lists now: {uuid: (name, state code)}, from one bulk call (again if it raced an undefine)."""
    for attempt in range(3):
        try:
            return {dom.UUIDString(): (dom.name(), int(stats["state.state"]))
                    for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)}
        except libvirt.libvirtError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# -- events -----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: float  # time.monotonic() when the callback ran
    uuid: str
    name: str
    kind: str


class EventLog:
    """Lifecycle events as libvirt delivers them to a connection of our own, and per-domain change times."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self._changed: dict[str, tuple[float, str]] = {}  # uuid -> (when, what)
        self.names: dict[str, str] = {}
        self._conn: libvirt.virConnect | None = None
        self._callback: int | None = None

    def open(self) -> None:
        start_event_loop()  # libvirt's default loop in a daemon thread (idempotent, shared with the exporter code)
        self._conn = libvirt.open(self.uri)
        self._callback = self._conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None)

    def close(self) -> None:
        if self._conn is not None:
            try:
                if self._callback is not None:
                    self._conn.domainEventDeregisterAny(self._callback)
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def _on_event(self, _conn: object, dom: libvirt.virDomain, event: int, _detail: int, _opaque: object) -> None:
        now = time.monotonic()
        record = Event(now, dom.UUIDString(), dom.name(), KINDS.get(event, f"event{event}"))
        with self._lock:
            self.events.append(record)
            self.names[record.uuid] = record.name
            self._mark(record.uuid, now, record.kind)

    def _mark(self, uuid: str, when: float, what: str) -> None:
        before = self._changed.get(uuid)
        if before is None or before[0] <= when:
            self._changed[uuid] = (when, what)

    def touch(self, uuid: str, name: str, what: str) -> None:
        """An action on ``uuid`` is about to be made (its event may reach the exporter before it reaches us)."""
        with self._lock:
            self.names[uuid] = name
            self._mark(uuid, time.monotonic(), what)

    def last_change(self, uuid: str) -> tuple[float, str] | None:
        with self._lock:
            return self._changed.get(uuid)

    def count(self) -> int:
        with self._lock:
            return len(self.events)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(e.kind for e in self.events)

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)


# -- the churn driver ------------------------------------------------------------------


@dataclass
class _Dom:
    name: str
    state: str  # running, paused, shutoff
    persistent: bool


OPS = ("suspend", "resume", "destroy", "start", "shutdown", "add", "undefine")


class ChurnDriver(threading.Thread):
    """Lifecycle operations at ``rate`` per second for ``duration`` seconds, on a connection of its own.

    The population stays near its size at the start: additions (half persistent
    defineXML + create, half transient createXML) are balanced by undefines of
    shut-off domains and by transient domains that stop; at most a fifth of the
    domains are paused and between 5 % and 25 % shut off.
    """

    def __init__(self, uri: str, log: EventLog, rate: float, duration: float, prefix: str = "churn",
                 seed: int = 7) -> None:
        super().__init__(name="churn-driver", daemon=True)
        self.uri = uri
        self.log = log
        self.rate = rate
        self.duration = duration
        self.prefix = prefix
        self.random = Random(seed)
        self.stop_event = threading.Event()
        self.ops: Counter[str] = Counter()
        self.errors: list[str] = []
        self.started_at = 0.0
        self.finished_at = 0.0
        self._doms: dict[str, _Dom] = {}
        self._serial = 100000
        self._target = 0

    def _load(self, conn: libvirt.virConnect) -> None:
        names = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused"}
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(self.prefix + "-"):
                self._doms[dom.UUIDString()] = _Dom(dom.name(), names.get(dom.state()[0], "shutoff"),
                                                    bool(dom.isPersistent()))

    def _pick(self, state: str, persistent: bool | None = None) -> str | None:
        found = [u for u, d in self._doms.items()
                 if d.state == state and (persistent is None or d.persistent == persistent)]
        return self.random.choice(found) if found else None

    def _choose(self) -> str:
        n = max(1, len(self._doms))
        by_state = Counter(d.state for d in self._doms.values())
        shutoff_persistent = sum(1 for d in self._doms.values() if d.state == "shutoff" and d.persistent)
        weights = {
            "suspend": 1.0 if by_state["running"] and by_state["paused"] < 0.2 * n else 0.0,
            "resume": 1.0 if by_state["paused"] else 0.0,
            "destroy": 1.0 if by_state["running"] + by_state["paused"] and by_state["shutoff"] < 0.25 * n else 0.0,
            "start": 1.0 if shutoff_persistent and by_state["shutoff"] > 0.05 * n else 0.0,
            "shutdown": 1.0 if by_state["running"] and by_state["shutoff"] < 0.25 * n else 0.0,
            "add": 0.0 if len(self._doms) > self._target else (3.0 if len(self._doms) < self._target - 5 else 1.0),
            "undefine": (0.0 if len(self._doms) < self._target or by_state["shutoff"] <= 0.05 * n
                         else (1.0 if shutoff_persistent else 0.0)),
        }
        ops = [op for op in OPS if weights[op] > 0]
        return self.random.choices(ops, [weights[op] for op in ops])[0] if ops else "add"

    def _one(self, conn: libvirt.virConnect, op: str) -> None:
        if op == "add":
            self._serial += 1
            name = f"{self.prefix}-n{self._serial}"
            xml = domain_xml(name, self._serial)
            persistent = self.random.random() < 0.5
            if persistent:
                dom = conn.defineXML(xml)
                self.log.touch(dom.UUIDString(), name, "defined (by the driver)")
                dom.create()
            else:
                dom = conn.createXML(xml, 0)
                self.log.touch(dom.UUIDString(), name, "created (by the driver)")
            self._doms[dom.UUIDString()] = _Dom(name, "running", persistent)
            return
        wanted = {"suspend": "running", "resume": "paused", "shutdown": "running", "start": "shutoff",
                  "undefine": "shutoff", "destroy": self.random.choice(("running", "running", "paused"))}[op]
        uuid = self._pick(wanted, persistent=True if op in ("start", "undefine") else None)
        if uuid is None and op == "destroy":
            uuid = self._pick("running") or self._pick("paused")
        if uuid is None:
            return
        entry = self._doms[uuid]
        self.log.touch(uuid, entry.name, f"{op} (by the driver)")
        dom = conn.lookupByUUIDString(uuid)
        try:
            if op == "suspend":
                dom.suspend()
                entry.state = "paused"
            elif op == "resume":
                dom.resume()
                entry.state = "running"
            elif op == "start":
                dom.create()
                entry.state = "running"
            elif op == "undefine":
                dom.undefine()
                del self._doms[uuid]
            else:
                if op == "destroy":
                    dom.destroy()
                else:
                    dom.shutdown()
                if entry.persistent:
                    entry.state = "shutoff"
                else:
                    del self._doms[uuid]
        finally:
            self.log.touch(uuid, entry.name, f"{op} (by the driver)")

    def run(self) -> None:
        conn = libvirt.open(self.uri)
        try:
            self._load(conn)
            self._target = len(self._doms)
            self.started_at = time.monotonic()
            k = 0
            while not self.stop_event.is_set():
                due = self.started_at + k / self.rate
                if due - self.started_at >= self.duration:
                    break
                wait = due - time.monotonic()
                if wait > 0 and self.stop_event.wait(wait):
                    break
                op = self._choose()
                try:
                    self._one(conn, op)
                    self.ops[op] += 1
                except libvirt.libvirtError as exc:
                    self.errors.append(f"{op}: {exc.get_error_message()}")
                    self._doms.clear()
                    self._load(conn)  # start again from what libvirt says
                except Exception as exc:  # a harness bug must show, not end the churn silently
                    self.errors.append(f"{op}: {type(exc).__name__}: {exc}")
                    raise
                k += 1
        finally:
            self.finished_at = time.monotonic()
            conn.close()


# -- sampling ---------------------------------------------------------------------------


@dataclass
class FrontRead:
    front: str  # "/metrics" or "SNMP table"
    started: float
    finished: float
    states: dict[str, int]  # uuid -> state code served
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass(frozen=True)
class Problem:
    front: str  # "/metrics", "SNMP table" or "exporter"
    kind: str  # missing, wrong state, gone from libvirt, read failed, exited
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Sample:
    phase: str  # quiet, churn, settled
    t: float  # seconds since the rig's first sample
    listed: int  # domains libvirt lists
    scrape_s: float
    walk_s: float
    served_metrics: int
    served_snmp: int
    poll_s: float | None
    events_total: float | None
    queue: dict[str, float]
    sent: dict[str, float]
    dropped: dict[str, float]
    rss_mb: float
    problems: list[Problem] = field(default_factory=list)


def _metrics_text(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read().decode()
    # Only what is compared or recorded: parsing every series of a big host would slow the sampler down.
    return "\n".join(line for line in body.splitlines()
                     if line.startswith(("libvirt_domain_state_code{", "libvirt_exporter_", "libvirt_up ")))


def exporter_figures(m: Metrics, targets: Iterable[str]) -> tuple[dict[str, float], dict[str, float],
                                                                  dict[str, float]]:
    """(queue length, sent, dropped) per target, from one scrape."""
    queue, sent, dropped = {}, {}, {}
    for t in targets:
        queue[t] = m.get("libvirt_exporter_notification_queue_length", target=t) or 0.0
        sent[t] = m.get("libvirt_exporter_notifications_sent_total", target=t) or 0.0
        dropped[t] = m.get("libvirt_exporter_notifications_dropped_total", target=t) or 0.0
    return queue, sent, dropped


class Sampler:
    """One comparison of libvirt against both front ends, every ``every`` seconds."""

    def __init__(self, uri: str, exporter: Exporter, snmp_target: str, log: EventLog, targets: list[str],
                 grace: float = 1.0) -> None:
        self.conn = libvirt.open(uri)
        self.exporter = exporter
        self.snmp_target = snmp_target
        self.log = log
        self.targets = targets
        self.grace = grace
        self.origin = time.monotonic()

    def close(self) -> None:
        self.conn.close()

    def scrape(self) -> tuple[FrontRead, Metrics | None]:
        started = time.monotonic()
        try:
            text = _metrics_text(self.exporter.url + "/metrics", timeout=60)
        except OSError as exc:
            return FrontRead("/metrics", started, time.monotonic(), {}, f"scrape failed: {exc}"), None
        finished = time.monotonic()
        metrics = Metrics(text)
        states = {}
        for labels in metrics.series("libvirt_domain_state_code"):
            value = metrics.samples[("libvirt_domain_state_code", frozenset(labels.items()))]
            states[labels["uuid"]] = int(value)
        return FrontRead("/metrics", started, finished, states), metrics

    def _walk(self, column: str) -> dict[str, str]:
        result = snmp.run("snmpbulkwalk", *snmp.V2_ARGS, "-On", "-Oq", "-Cr50", "-t", "30", "-r", "0",
                          self.snmp_target, column, mibs=False, timeout=120)
        if result.returncode != 0 or "Timeout" in result.stderr:
            raise RuntimeError(result.stderr.strip()[:300] or f"exit {result.returncode}")
        return {oid.rsplit(".", 1)[1]: value for oid, value in snmp.values(result.stdout).items()
                if oid.startswith(column + ".")}

    def walk(self) -> FrontRead:
        """lvxDomainUUID then lvxDomainOperState, joined on the row index."""
        started = time.monotonic()
        try:
            uuids = self._walk(UUID_COLUMN)
            states = self._walk(STATE_COLUMN)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return FrontRead("SNMP table", started, time.monotonic(), {}, f"walk failed: {exc}")
        finished = time.monotonic()
        served = {}
        for index, uuid in uuids.items():
            state = states.get(index)
            if state is not None and state.lstrip("-").isdigit():
                served[uuid] = int(state)
        return FrontRead("SNMP table", started, finished, served)

    def compare(self, read: FrontRead, listed: dict[str, tuple[str, int]]) -> list[Problem]:
        """Problems of one read against libvirt's list taken just after it (see the module's freshness rule)."""
        if read.error is not None:
            return [Problem(read.front, "read failed", f"{read.front}: {read.error}")]
        since = read.started - self.grace
        problems: list[Problem] = []

        def excused(uuid: str) -> bool:
            changed = self.log.last_change(uuid)
            return changed is not None and changed[0] >= since

        def last(uuid: str) -> str:
            changed = self.log.last_change(uuid)
            if changed is None:
                return "no event for it since the churn began"
            return f"its last event {read.finished - changed[0]:.1f} s before the read finished ({changed[1]})"

        for uuid, (name, state) in sorted(listed.items(), key=lambda kv: kv[1][0]):
            served = read.states.get(uuid)
            if served == state or excused(uuid):
                continue
            what = "missing" if served is None else f"served as {state_name(served)}"
            problems.append(Problem(read.front, "missing" if served is None else "wrong state",
                                    f"{read.front}: {name} ({uuid}) {what}, libvirt says {state_name(state)}; "
                                    f"{last(uuid)}; the read took {read.seconds:.2f} s"))
        for uuid in sorted(read.states.keys() - listed.keys()):
            if excused(uuid):
                continue
            name = self.log.names.get(uuid, "?")
            problems.append(Problem(read.front, "gone from libvirt",
                                    f"{read.front}: {name} ({uuid}) served as {state_name(read.states[uuid])}, but "
                                    f"libvirt no longer lists it; {last(uuid)}; the read took {read.seconds:.2f} s"))
        return problems

    def sample(self, phase: str) -> Sample:
        scrape, metrics = self.scrape()
        after_scrape = truth(self.conn)
        walk = self.walk()
        after_walk = truth(self.conn)
        problems = self.compare(scrape, after_scrape) + self.compare(walk, after_walk)
        queue: dict[str, float] = {}
        sent: dict[str, float] = {}
        dropped: dict[str, float] = {}
        poll = events = None
        if metrics is not None:
            queue, sent, dropped = exporter_figures(metrics, self.targets)
            poll = metrics.get("libvirt_exporter_poll_duration_seconds")
            events = metrics.get("libvirt_exporter_events_total")
        if self.exporter.proc.poll() is not None:
            problems.append(Problem("exporter", "exited", f"the exporter exited with {self.exporter.proc.returncode}: "
                                                          f"{self.exporter.output()}"))
        return Sample(phase, scrape.started - self.origin, len(after_walk), scrape.seconds, walk.seconds,
                      len(scrape.states), len(walk.states), poll, events, queue, sent, dropped,
                      rss_mb(self.exporter.proc.pid), problems)

    def run_phase(self, phase: str, seconds: float, every: float = 2.0,
                  until: threading.Thread | None = None) -> list[Sample]:
        """A sample every ``every`` seconds for ``seconds`` (or until the thread ``until`` ends)."""
        samples = []
        start = time.monotonic()
        k = 0
        while True:
            samples.append(self.sample(phase))
            k = max(k + 1, int((time.monotonic() - start) / every) + 1)  # a late sample skips its missed slots
            due = start + k * every
            if due - start > seconds or (until is not None and not until.is_alive()):
                return samples
            if until is not None:
                until.join(max(0.0, due - time.monotonic()))
                if not until.is_alive():
                    return samples
            else:
                # the sampling schedule, not a wait on a result
                threading.Event().wait(max(0.0, due - time.monotonic()))


# -- the rig --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnPlan:
    domains: int = 300
    rate: float = 20.0  # lifecycle operations per second
    churn_s: float = 60.0
    quiet_s: float = 0.0
    poll_interval: str = "2s"
    every: float = 2.0  # sampling period
    grace: float = 1.0
    settle_s: float = 120.0  # longest wait for the exporter to catch up after the churn


class ChurnRig:
    """A private libvirtd with ``domains`` test-driver domains, snmptrapd (trap and inform ports), the exporter."""

    def __init__(self, folder: Path, plan: ChurnPlan) -> None:
        self.folder = folder
        self.plan = plan
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        self.daemon = PrivateLibvirtd(folder / "libvirtd")
        self.keep: libvirt.virConnect | None = None
        self.trapd: Trapd | None = None
        self.exporter: Exporter | None = None
        self.snmp_target = ""
        self.uri = self.daemon.uri("test")

    def start_daemon(self) -> None:
        """Raises :class:`tests.support.libvirtd.DaemonError` when libvirtd cannot start."""
        self.daemon.start()
        self.keep = libvirt.open(self.uri)  # kept open: the shared test host lives while it does
        populate(self.keep, self.plan.domains)

    def start_rest(self) -> None:
        """snmptrapd (an AssertionError if it cannot start) and the exporter, ready with every domain."""
        self.trapd = Trapd(self.folder / "trapd", 2, [])
        trap_port, inform_port = self.trapd.ports
        port = snmp.free_udp_port()
        self.snmp_target = f"127.0.0.1:{port}"
        cfg = snmp.agent_config(self.folder / "exporter.toml", self.folder / "state", self.snmp_target, f"""
[[snmp.notify]]
address = "127.0.0.1:{trap_port}"
community = "{TRAP_COMMUNITY}"
mibs = ["libvirt-exporter"]

[[snmp.notify]]
address = "127.0.0.1:{inform_port}"
type = "inform"
community = "{INFORM_COMMUNITY}"
mibs = ["libvirt-exporter"]
""")
        self.exporter = Exporter(["--config.file", str(cfg), "--libvirt.uri", self.uri,
                                  "--libvirt.poll-interval", self.plan.poll_interval], log=self.folder / "exporter.log")
        self.exporter.wait_ready(timeout=60)
        assert self.keep is not None
        listed = len(self.keep.listAllDomains(0))
        self.exporter.wait_for(lambda m: m.get("libvirt_domains_number") == listed, timeout=120,
                               what=f"the exporter to list all {listed} domains")

    @property
    def targets(self) -> dict[str, int]:
        """Exporter target name -> snmptrapd port."""
        assert self.trapd is not None
        trap_port, inform_port = self.trapd.ports
        return {f"v2c-trap@127.0.0.1:{trap_port}": trap_port, f"v2c-inform@127.0.0.1:{inform_port}": inform_port}

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
        if self.trapd is not None:
            self.trapd.stop()
        if self.keep is not None:
            try:
                self.keep.close()
            except libvirt.libvirtError:
                pass
        self.daemon.shutdown()


# -- a whole run -----------------------------------------------------------------------


@dataclass
class TargetResult:
    name: str
    port: int
    sent: float = 0.0
    dropped: float = 0.0
    queued: float = 0.0
    received: int = 0
    content_problems: list[str] = field(default_factory=list)


@dataclass
class ChurnReport:
    plan: ChurnPlan
    samples: list[Sample]
    events: Counter[str]
    events_total: float  # the exporter's libvirt_exporter_events_total gained during the churn
    expected_notifications: int
    targets: list[TargetResult]
    ops: Counter[str]
    op_errors: list[str]
    churn_seconds: float  # first to last operation
    settle_seconds: float
    settled: bool
    exporter_log_tail: str = ""

    @property
    def event_count(self) -> int:
        return sum(self.events.values())

    def phase(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == name]

    def failed_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.problems]

    def failures(self) -> list[str]:
        """Everything that breaks "nothing is dropped and no domain goes missing", most telling first."""
        out = []
        if not self.settled:
            out.append(f"the exporter had not caught up {self.plan.settle_s:.0f} s after the churn "
                       f"(events {self.events_total:.0f} of {self.event_count}, "
                       + ", ".join(f"{t.name}: sent {t.sent:.0f}, dropped {t.dropped:.0f}, queued {t.queued:.0f}"
                                   for t in self.targets) + ")")
        if self.events_total != self.event_count:
            out.append(f"libvirt_exporter_events_total rose by {self.events_total:.0f}, libvirt delivered "
                       f"{self.event_count} events")
        for t in self.targets:
            if t.dropped:
                out.append(f"{t.name}: {t.dropped:.0f} notifications dropped")
            if t.sent != self.expected_notifications:
                out.append(f"{t.name}: sent {t.sent:.0f}, expected {self.expected_notifications} (one per event)")
            if t.received != self.expected_notifications:
                out.append(f"{t.name}: snmptrapd received {t.received} on port {t.port}, expected "
                           f"{self.expected_notifications}")
            out += [f"{t.name}: {p}" for p in t.content_problems]
        bad = self.failed_samples()
        if bad:
            out.append(f"{len(bad)} of {len(self.samples)} samples failed: " + self.problem_breakdown()
                       + "; the first of each kind:")
            shown: Counter[tuple[str, str]] = Counter()
            for sample in bad:
                for problem in sample.problems:
                    shown[(problem.front, problem.kind)] += 1
                    if shown[(problem.front, problem.kind)] <= 6:
                        out.append(f"  {sample.phase} sample at +{sample.t:.1f} s: {problem}")
        if self.op_errors:
            out.append(f"{len(self.op_errors)} churn operations failed in libvirt, first: {self.op_errors[:3]}")
        return out

    def problem_breakdown(self) -> str:
        """How many problems of each kind, per front end, over every sample (and in how many samples)."""
        kinds: Counter[tuple[str, str]] = Counter()
        samples: Counter[tuple[str, str]] = Counter()
        for s in self.samples:
            seen = set()
            for p in s.problems:
                kinds[(p.front, p.kind)] += 1
                seen.add((p.front, p.kind))
            samples.update(seen)
        return ", ".join(f"{front} {kind}: {n} (in {samples[(front, kind)]} samples)"
                         for (front, kind), n in sorted(kinds.items())) or "none"

    def summary(self) -> str:
        churn = self.phase("churn")
        return (f"{self.event_count} events in {self.churn_seconds:.1f} s ({dict(self.events)}), "
                f"exporter events_total +{self.events_total:.0f}; "
                + "; ".join(f"{t.name}: sent {t.sent:.0f} dropped {t.dropped:.0f} received {t.received}"
                            for t in self.targets)
                + f"; {len(self.failed_samples())}/{len(self.samples)} samples failed; churn median poll "
                f"{median([s.poll_s for s in churn if s.poll_s is not None]):.3f} s, scrape "
                f"{median([s.scrape_s for s in churn]):.3f} s, walk {median([s.walk_s for s in churn]):.3f} s, "
                f"max queue {max((max(s.queue.values(), default=0) for s in churn), default=0):.0f}, "
                f"RSS max {max((s.rss_mb for s in self.samples), default=0):.0f} MB")


def check_notifications(trapd: Trapd, port: int, events: list[Event]) -> tuple[int, list[str]]:
    """(lvx notifications received on ``port``, problems): each event's must arrive exactly once, in order.

    A notification is told apart by its content: its trap OID gives the event kind, its lvxDomainUUID varbind
    the domain; per domain, the kinds received must be exactly the kinds libvirt delivered, in the same order.
    """
    expected: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for e in events:
        if e.kind in mib_lvx.LVX_NOTIFICATIONS:
            expected.setdefault(e.uuid, []).append(e.kind)
            names[e.uuid] = e.name
    got: dict[str, list[str]] = {}
    received = 0
    unreadable = 0
    for r in trapd.received():
        if r.port != port or not r.trap_oid.startswith(LVX + ".0."):
            continue
        received += 1
        code = int(r.trap_oid.rsplit(".", 1)[1])
        match = _TRAP_UUID.search(r.text)
        if match is None or code not in _CODE_KIND:
            unreadable += 1
            continue
        got.setdefault(match.group(1), []).append(_CODE_KIND[code])
    problems = []
    if unreadable:
        problems.append(f"{unreadable} notifications without a readable kind or lvxDomainUUID")
    wrong = []
    for uuid in sorted(expected.keys() | got.keys(), key=lambda u: names.get(u, u)):
        want, have = expected.get(uuid, []), got.get(uuid, [])
        if want != have:
            missing = sum((Counter(want) - Counter(have)).values())
            extra = sum((Counter(have) - Counter(want)).values())
            wrong.append(f"{names.get(uuid, '?')} ({uuid}): libvirt delivered {want}, received {have} "
                         f"({missing} missing, {extra} extra{', out of order' if not missing and not extra else ''})")
    if wrong:
        problems.append(f"{len(wrong)} domains whose notifications differ from their events, first: "
                        + "; ".join(wrong[:5]))
    return received, problems


def expected_notifications(events: Iterable[Event]) -> int:
    """One libvirt-exporter notification per lifecycle event of a kind LVX_NOTIFICATIONS knows."""
    return sum(1 for e in events if e.kind in mib_lvx.LVX_NOTIFICATIONS)


def _settle(rig: ChurnRig, log: EventLog, base: Metrics, timeout: float) -> tuple[bool, Metrics]:
    """Wait until the exporter has counted every event and sent every notification (the condition, polled).

    Gives up early once the queues are empty and nothing has moved for 5 s: a notification that was never
    queued will not come.
    """
    assert rig.exporter is not None
    base_events = base.get("libvirt_exporter_events_total") or 0.0
    _, base_sent, _ = exporter_figures(base, rig.targets)
    deadline = time.monotonic() + timeout
    last_change = time.monotonic()
    previous: tuple[float, ...] = ()
    while True:
        m = rig.exporter.scrape()
        queue, sent, dropped = exporter_figures(m, rig.targets)
        events = (m.get("libvirt_exporter_events_total") or 0.0) - base_events
        expected = expected_notifications(log.snapshot())
        if events == log.count() and all(sent[t] - base_sent[t] == expected and not queue[t] for t in rig.targets):
            return True, m
        now_state = (events, log.count(), *sent.values(), *dropped.values(), *queue.values())
        if now_state != previous:
            previous, last_change = now_state, time.monotonic()
        if time.monotonic() > deadline or (not any(queue.values()) and time.monotonic() - last_change > 5.0):
            return False, m
        time.sleep(0.2)


def run_churn(rig: ChurnRig) -> ChurnReport:
    """Quiet phase (if any), churn phase, settle, a last sample, and every count compared."""
    assert rig.exporter is not None and rig.trapd is not None
    trapd = rig.trapd
    plan = rig.plan
    log = EventLog(rig.uri)
    log.open()
    sampler = Sampler(rig.uri, rig.exporter, rig.snmp_target, log, list(rig.targets), plan.grace)
    try:
        samples: list[Sample] = []
        if plan.quiet_s > 0:
            samples += sampler.run_phase("quiet", plan.quiet_s, plan.every)
        base = rig.exporter.scrape()
        base_events = base.get("libvirt_exporter_events_total") or 0.0
        _, base_sent, base_dropped = exporter_figures(base, rig.targets)
        assert log.count() == 0, f"events before the churn began: {log.snapshot()[:5]}"
        driver = ChurnDriver(rig.uri, log, plan.rate, plan.churn_s)
        driver.start()
        samples += sampler.run_phase("churn", plan.churn_s + plan.every, plan.every, until=driver)
        driver.join()
        settle_start = time.monotonic()
        settled, final = _settle(rig, log, base, plan.settle_s)
        settle_seconds = time.monotonic() - settle_start
        samples.append(sampler.sample("settled"))
        expected = expected_notifications(log.snapshot())
        queue, sent, dropped = exporter_figures(final, rig.targets)
        results = []
        for name, port in rig.targets.items():
            # Every notification counted as sent must reach snmptrapd: wait for that many (or 30 s).
            want = min(int(sent[name] - base_sent[name]), expected)
            received, problems = poll_until(lambda port=port: check_notifications(trapd, port, log.snapshot()),
                                            lambda checked, want=want: checked[0] >= want, 30, every=0.2)
            results.append(TargetResult(name, port, sent[name] - base_sent[name], dropped[name] - base_dropped[name],
                                        queue[name], received, problems))
        return ChurnReport(
            plan=plan, samples=samples, events=log.counts(),
            events_total=(final.get("libvirt_exporter_events_total") or 0.0) - base_events,
            expected_notifications=expected, targets=results, ops=driver.ops, op_errors=driver.errors,
            churn_seconds=driver.finished_at - driver.started_at, settle_seconds=settle_seconds, settled=settled,
            exporter_log_tail=rig.exporter.output(),
        )
    finally:
        sampler.close()
        log.close()
