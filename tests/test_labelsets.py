"""The label sets kept between renderings (exporter.labelsets): reused while a domain's definition is
unchanged, written anew when it changes, dropped when the domain goes; and a renderer that keeps them writes
what a fresh one writes."""

from __future__ import annotations

import random

from exporter.labelsets import LabelSets
from exporter.snapshot import ALL_GROUPS, Block, Domain, Interface, Snapshot, Vcpu
from exporter.textrender import TextRenderer

GROUPS = frozenset(ALL_GROUPS)


def _domain(n: int, stats: int = 0, **changes: object) -> Domain:
    dom = Domain(name=f"vm{n}", uuid=f"00000000-0000-4000-8000-{n:012d}", id=n, state=1, os_type="hvm",
                 cpu_time_ns=stats, vcpus=(Vcpu(0, 1, stats), Vcpu(1, 1, stats)),
                 blocks=(Block("vda", source=f"/img/vm{n}.qcow2", read_bytes=stats),),
                 interfaces=(Interface("tap0", mac="52:54:00:00:00:01", receive_bytes=stats),))
    return dom.replace_fields(**changes) if changes else dom


def _texts(labels: LabelSets, domains: list[Domain]) -> list[object]:
    return [(e.own, e.children, e.info, e.metadata) for e in labels.of(tuple(domains))]


def test_unchanged_definitions_reuse_their_label_sets() -> None:
    """A new poll (new objects, new numbers, same definitions) writes no label set."""
    labels = LabelSets(GROUPS)
    first = labels.of(tuple(_domain(n) for n in range(5)))
    assert labels.written == 5
    again = labels.of(tuple(_domain(n, stats=7) for n in range(5)))
    assert labels.written == 5 and all(a is b for a, b in zip(first, again, strict=True))
    # Through the per-domain path too (one domain changed, the others reused).
    labels.of(tuple(_domain(n, stats=9, state=3 if n == 2 else 1) for n in range(5)))
    assert labels.written == 6


def test_a_redefined_domain_gets_new_label_sets() -> None:
    """A rename, new [metadata] labels, a new disk, a changed disk source: new label sets for that domain
    alone, equal to those of a cache that never saw the old definition."""
    base = [_domain(n) for n in range(4)]
    changes: list[dict[str, object]] = [
        {"name": "renamed"},
        {"metadata": (("team", "blue"),)},
        {"metadata": (("team", "red"),)},
        {"blocks": (Block("vda", source="/img/vm1.qcow2"), Block("vdb", source="/img/new.qcow2"))},
        {"blocks": (Block("vda", source="/img/elsewhere.qcow2"),)},
        {"vcpus": (Vcpu(0), Vcpu(1), Vcpu(2))},
        {"interfaces": (Interface("tap9", mac="52:54:00:00:00:09"),)},
    ]
    labels = LabelSets(GROUPS)
    labels.of(tuple(base))
    for change in changes:
        written = labels.written
        domains = [base[0], base[1].replace_fields(**change), *base[2:]]
        assert _texts(labels, domains) == _texts(LabelSets(GROUPS), domains), change
        assert labels.written == written + 1, change
    entry = labels.of((base[0], base[1].replace_fields(metadata=(("team", "x"),))))[1]
    assert entry.metadata == 'domain="vm1",uuid="00000000-0000-4000-8000-000000000001",team="x"} '


def test_removed_domains_leave_the_cache() -> None:
    """Under churn (domains coming and going, ever new uuids) the cache holds the last snapshot's domains
    and no more."""
    labels = LabelSets(GROUPS)
    rng = random.Random(3)
    alive = list(range(10))
    next_id = 10
    for _ in range(200):
        alive.remove(rng.choice(alive))
        alive.append(next_id)
        next_id += 1
        labels.of(tuple(_domain(n) for n in alive))
        assert len(labels) == len(alive) == 10
    labels.of(())
    assert len(labels) == 0


def test_a_renderer_that_kept_label_sets_writes_what_a_fresh_one_writes() -> None:
    """Snapshot after snapshot (numbers changed, a domain redefined, added, removed), the kept label sets
    and the kept number texts give the text a fresh renderer gives."""
    renderer = TextRenderer(GROUPS)
    snapshots = [
        [_domain(n, stats=1) for n in range(6)],
        [_domain(n, stats=2) for n in range(6)],
        [_domain(n, stats=2, **({"name": "moved", "metadata": (("team", "a"),)} if n == 3 else {}))
         for n in range(6)],
        [_domain(n, stats=3) for n in (0, 1, 2, 4, 5, 6)],
        [_domain(n, stats=3 + n) for n in (0, 2, 4, 6, 8)],
    ]
    for domains in snapshots:
        snap = Snapshot(up=True, taken_at=1.0, domains=tuple(domains))
        assert b"".join(renderer.render(snap)) == b"".join(TextRenderer(GROUPS).render(snap))
        assert len(renderer.labels) == len(domains)
