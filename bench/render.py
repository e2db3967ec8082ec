"""The cost of rendering one snapshot for ``/metrics``, in-process: ours against prometheus_client's own
rendering of the same series, on a host from ``exporter.hostgen`` polled through libvirt's test driver.

    .venv/bin/python bench/render.py --domains 1000 3000

"first" is the scrape right after a poll: a new snapshot whose domain objects are all new, rendered by an
exposition that rendered the previous poll's snapshot (what a running exporter does every poll).  "cold" is
the same with a fresh exposition (the first scrape after start).  prometheus_client's figure is
``generate_latest`` over a collector of the same snapshot.  Each figure is the best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from exporter import hostgen  # noqa: E402
from exporter.exposition import Exposition, SnapshotCollector  # noqa: E402
from exporter.poller import snapshot_of  # noqa: E402
from exporter.snapshot import ALL_GROUPS, Snapshot  # noqa: E402
from exporter.source import Source  # noqa: E402


def snapshots(n: int, count: int) -> list[Snapshot]:
    """``count`` successive polls of one generated host of ``n`` domains (2 disks, 2 NICs, 4 vCPUs)."""
    shape = hostgen.HostShape(domains=n, mixed_states=False, prefix="bench")
    with tempfile.TemporaryDirectory() as tmp:
        node = Path(tmp) / "node.xml"
        node.write_text(hostgen.node_xml(shape))
        source = Source(f"test://{node}")
        source.open()
        try:
            result = []
            for _ in range(count):
                started = time.time()
                result.append(snapshot_of(source.poll(ALL_GROUPS), started, time.time() - started))
            return result
        finally:
            source.close()


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(n: int, repeat: int) -> dict[str, float]:
    snaps = snapshots(n, repeat + 1)
    groups = frozenset(ALL_GROUPS)
    current = {"snap": snaps[0]}
    exposition = Exposition(lambda: current["snap"], groups)
    exposition.render()  # the previous poll's snapshot, rendered by its first scrape

    def first() -> None:
        current["snap"] = snaps[1 + (exposition.renders - 1) % repeat]
        exposition.render()

    def cold() -> None:
        Exposition(lambda: snaps[-1], groups).render()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snaps[-1], groups, clock=None))
    series = sum(1 for line in generate_latest(registry).splitlines() if not line.startswith(b"#"))
    return {"series": series, "first": best(first, repeat), "cold": best(cold, repeat),
            "client": best(lambda: generate_latest(registry), repeat)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, nargs="+", default=[1000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| domains | series | ours, first scrape after a poll s | ours, cold s | prometheus_client s "
          "| client/ours (first) | client/ours (cold) |")
    print("|---|---|---|---|---|---|---|")
    for n in args.domains:
        r = measure(n, args.repeat)
        print(f"| {n} | {r['series']:.0f} | {r['first']:.4f} | {r['cold']:.4f} | {r['client']:.4f} "
              f"| {r['client'] / r['first']:.1f}x | {r['client'] / r['cold']:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
