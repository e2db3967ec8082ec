"""Events between and during polls, on libvirt's real test driver (``test:///default``, shared in-process).

The exporter's poller, its SNMP agent and its Prometheus exposition run in
this process against ``test:///default``; a second connection of the test
defines, starts and removes domains, and libvirt delivers the events.  To
hold a poll open while events arrive, the source's poll is wrapped so that
its result waits for the test's go-ahead: libvirt itself is not mocked.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from exporter.config import Config, resolve
from exporter.exposition import Exposition
from exporter.poller import Poller
from exporter.snapshot import STATE_PAUSED, STATE_RUNNING, Domain, Snapshot
from exporter.snmp import mib
from exporter.snmp.model import SnmpModel
from exporter.snmp.view import MibView
from exporter.source import PollResult, Source, start_event_loop
from tests.support.process import parse_exposition
from tests.support.wait import async_wait_until

URI = "test:///default"


def _xml(name: str, memory_mib: int = 256) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>{memory_mib}</memory><vcpu>2</vcpu>"
            "<os><type>hvm</type></os><devices><disk type='file' device='disk'><source file='/x.img'/>"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>")


class HeldSource(Source):
    """A real source whose poll result, when ``hold`` is set, waits for ``release`` before it is returned."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hold = False
        self.holding = threading.Event()
        self.release = threading.Event()

    def poll(self, groups, keep=lambda _name: True) -> PollResult:  # type: ignore[no-untyped-def]
        result = super().poll(groups, keep)
        if self.hold:
            self.holding.set()
            self.release.wait(30)
        return result


@pytest.fixture()
def host() -> Iterator[libvirt.virConnect]:
    start_event_loop()
    conn = libvirt.open(URI)  # kept open: the default test host lives while a connection to it does
    yield conn
    for dom in conn.listAllDomains(0):
        if dom.name() != "test":
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
    conn.close()


def _config(tmp_path: Path) -> Config:
    return resolve({}, {}, {"libvirt": {"uri": URI, "poll_interval": "1h"}, "control": {"enabled": True},
                            "state": {"directory": str(tmp_path)},
                            "snmp": {"communities": [{"name": "public"}]}})


def _served(agent: SnmpModel, exposition: Exposition, name: str) -> tuple[int | None, int | None]:
    """The state of domain ``name`` in the SNMP domain table and in /metrics (None where it is missing)."""
    view = agent.view()
    index = None
    for oid, (_, value) in view.walk(mib.BY_NAME["lvxDomainName"].oid):
        if oid[:-1] != mib.BY_NAME["lvxDomainName"].oid:
            break
        if value == name:
            index = oid[-1]
    snmp_state = None
    if index is not None:
        found = view.get(mib.BY_NAME["lvxDomainOperState"].oid + (index,))
        snmp_state = found[1] if found else None
    metrics = parse_exposition(exposition.render().decode())
    prom = [v for (metric, labels), v in metrics.items()
            if metric == "libvirt_domain_state_code" and ("domain", name) in labels]
    return snmp_state, int(prom[0]) if prom else None


def _domain(snap: Snapshot, name: str) -> Domain | None:
    return next((d for d in snap.domains if d.name == name), None)


async def _until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    await async_wait_until(condition, timeout, what, every=0.01)


def _run(config: Config, body: Callable[[Poller, HeldSource, SnmpModel, Exposition], Awaitable[None]]) -> None:
    sources: list[HeldSource] = []

    def factory() -> HeldSource:
        source = HeldSource(URI, read_only=False, call_timeout=config.libvirt.domain_deadline_s,
                            poll_timeout=config.libvirt.poll_deadline_s)
        sources.append(source)
        return source

    async def main() -> None:
        poller = Poller(config.libvirt, read_only=False, source_factory=factory)
        agent = SnmpModel(config.snmp, Path(config.state_directory), lambda: poller.snapshot)
        poller.subscribe(agent.on_snapshot)
        exposition = Exposition(lambda: poller.snapshot, config.libvirt.collectors)
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        try:
            await _until(lambda: poller.snapshot.up, "the first poll")
            agent.view()  # a view exists: later events patch it
            await body(poller, sources[-1], agent, exposition)
        finally:
            sources[-1].release.set()
            stop.set()
            await task

    asyncio.run(main())


def test_new_domain_is_served_at_its_event_with_its_definition(host: libvirt.virConnect, tmp_path: Path) -> None:
    """Defined and started between polls (the next one an hour away): the domain is in the SNMP table and
    in /metrics at once, with the memory and vCPUs of its definition; suspended, it is paused in both;
    undefined after a stop, it is gone from both."""

    async def body(poller: Poller, _source: HeldSource, agent: SnmpModel, exposition: Exposition) -> None:
        dom = host.defineXML(_xml("fresh", 384))
        dom.create()
        await _until(lambda: _served(agent, exposition, "fresh") == (STATE_RUNNING, STATE_RUNNING),
                     "the new domain in both front ends")
        await _until(lambda: (_domain(poller.snapshot, "fresh") or Domain("", "", 0, 0)).max_memory_kib == 384 * 1024,
                     "its definition")
        fresh = _domain(poller.snapshot, "fresh")
        assert fresh is not None and fresh.vcpus_max == 2 and [b.target for b in fresh.blocks] == ["vda"]
        dom.suspend()
        await _until(lambda: _served(agent, exposition, "fresh") == (STATE_PAUSED, STATE_PAUSED), "paused in both")
        dom.destroy()
        dom.undefine()
        await _until(lambda: _served(agent, exposition, "fresh") == (None, None), "gone from both")
        assert poller.snapshot.poll_errors.get("timeout", 0) == 0

    _run(_config(tmp_path), body)


def test_poll_result_never_undoes_later_events(host: libvirt.virConnect, tmp_path: Path) -> None:
    """A poll lists the host, then events add one domain and remove another before its result is served:
    the result keeps the added one (with its definition) and does not bring back the removed one."""
    old = host.defineXML(_xml("old"))

    async def body(poller: Poller, source: HeldSource, agent: SnmpModel, exposition: Exposition) -> None:
        await _until(lambda: _domain(poller.snapshot, "old") is not None, "the old domain polled")
        source.hold = True
        taken = poller.snapshot.taken_at
        poller._wake.set()  # ask for a poll now (the interval is an hour)
        await _until(source.holding.is_set, "a poll holding its result", timeout=15)
        source.hold = False
        new = host.defineXML(_xml("new", 512))
        new.create()
        old.undefine()
        await _until(lambda: _domain(poller.snapshot, "new") is not None and _domain(poller.snapshot, "old") is None,
                     "the events applied")
        await _until(lambda: (_domain(poller.snapshot, "new") or Domain("", "", 0, 0)).max_memory_kib == 512 * 1024,
                     "the new domain's definition")
        source.release.set()
        await _until(lambda: poller.snapshot.taken_at != taken, "the held poll's result served")
        snap = poller.snapshot
        new_dom, old_dom = _domain(snap, "new"), _domain(snap, "old")
        assert old_dom is None, "the poll result brought back a domain undefined after the poll began"
        assert new_dom is not None, "the poll result dropped a domain defined after the poll began"
        assert (new_dom.state, new_dom.max_memory_kib) == (STATE_RUNNING, 512 * 1024)
        assert _served(agent, exposition, "new") == (STATE_RUNNING, STATE_RUNNING)
        assert _served(agent, exposition, "old") == (None, None)

    _run(_config(tmp_path), body)


def test_patched_snmp_view_equals_a_rebuilt_one(tmp_path: Path) -> None:
    """A thousand random events and definition merges, some domains with vCPUs, disks and NICs: after
    each, the view the agent patches serves exactly what a view built afresh from the snapshot serves."""
    import random

    from exporter.events import apply_event, with_definition
    from exporter.snapshot import Block, DomainEvent, Host, Interface, Update, Vcpu

    rng = random.Random(13)

    def uuid(i: int) -> str:
        return f"00000000-0000-4000-8000-{i:012d}"

    def devices(dom: Domain) -> Domain:
        n = rng.randrange(3)
        return dom.replace_fields(vcpus=tuple(Vcpu(k, 1, 10 * k) for k in range(n + 1)),
                                  blocks=tuple(Block(f"vd{'abc'[k]}", source=f"/i/{k}", read_bytes=k)
                                               for k in range(n)),
                                  interfaces=tuple(Interface(f"tap{k}", mac=f"52:54:00:00:00:0{k}") for k in range(n)))

    snap = Snapshot(up=True, taken_at=time.time(), host=Host(driver="TEST"), domains=tuple(
        devices(Domain(name=f"d{i:04d}", uuid=uuid(i), id=i, state=STATE_RUNNING, active=True)) for i in range(30)))
    config = _config(tmp_path)
    agent = SnmpModel(config.snmp, Path(config.state_directory), lambda: snap)
    agent.on_snapshot(snap, Update())
    agent.view()

    def served(view: MibView) -> list[tuple[tuple[int, ...], object]]:
        return [(oid, value(0) if callable(value) else value) for oid, (_, value) in view.items()]

    later = 30
    kinds = ["suspended", "resumed", "stopped", "started", "defined", "undefined", "crashed", "shutdown"]
    for step in range(1200):
        if rng.random() < 0.15:  # a definition read: devices change
            if not snap.domains:
                continue
            before = rng.choice(snap.domains)
            after = with_definition(before, devices(before))
            change = (before, after)
            domains = tuple(after if d is before else d for d in snap.domains)
            update = Update(None, (change,) if after is not before else ())
        else:
            i = later if rng.random() < 0.2 else rng.randrange(later)
            later += i == later
            applied = apply_event(snap.domains, DomainEvent(uuid(i), f"d{i:04d}", rng.choice(kinds)))
            domains = applied.domains
            update = Update(None, ((applied.before, applied.after),) if applied.changed else ())
        snap = snap.replace(domains=domains)
        agent.on_snapshot(snap, update)
        if rng.random() < 0.3:
            fresh = mib.build_view(snap, agent._indexes, agent._system(),
                                   table_last_change_ticks=agent._last_change_ticks, started_at=agent._started,
                                   spin_lock=agent.spin_lock)
            assert served(agent.view()) == served(fresh), f"patched view differs after step {step}"
