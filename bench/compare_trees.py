"""Render, MIB-view build and peak RSS of two checkouts of the exporter on the same generated host, in one
run on one machine: how a restructuring is shown to cost nothing (the machine's noise cancels in the ratio).

    git worktree add /tmp/old <rev>
    .venv/bin/python bench/compare_trees.py /tmp/old . --domains 1000 3000

Each tree is measured in its own process (PYTHONPATH picks the tree), best of five, on a host from
``exporter.hostgen`` polled once through libvirt's test driver.  The hugetlb figures, which only the newer tree has,
are left out with ``--same-output``; "text new/old" says how much more the newer tree writes all the same
(labels and families added since).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = r"""
import dataclasses, gc, json, resource, sys, tempfile, time
from pathlib import Path
from exporter import hostgen
from exporter.poller import snapshot_of
try:
    from exporter.textrender import snapshot_text
except ImportError:  # trees before the text renderer had a module of its own
    from exporter.prometheus import snapshot_text
from exporter.snapshot import ALL_GROUPS
from exporter.snmp import mib
try:
    from exporter.snmp.mib_system import SystemInfo
except ImportError:  # trees before the MIB modules were split
    SystemInfo = mib.SystemInfo
from exporter.source import Source

n, same = int(sys.argv[1]), sys.argv[2] == "1"
node = Path(tempfile.mkdtemp()) / "node.xml"
node.write_text(hostgen.node_xml(hostgen.HostShape(domains=n)))
src = Source(f"test://{node}")
src.open()
snap = snapshot_of(src.poll(ALL_GROUPS), time.time(), 0.1)
src.close()
if same and hasattr(snap.domains[0].memory, "hugetlb_pgalloc"):
    snap = dataclasses.replace(snap, domains=tuple(d.replace_fields(memory=dataclasses.replace(
        d.memory, hugetlb_pgalloc=None, hugetlb_pgfail=None)) for d in snap.domains))
groups = frozenset(ALL_GROUPS)
indexes = mib.Indexes({d.uuid: i for i, d in enumerate(snap.domains, 1)}, {}, {})

def best(fn):
    times = []
    for _ in range(5):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

print(json.dumps({"render_s": best(lambda: snapshot_text(snap, groups)),
                  "view_s": best(lambda: mib.build_view(snap, indexes, SystemInfo())),
                  "bytes": len(snapshot_text(snap, groups)),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def measure(tree: Path, domains: int, same: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(domains), "1" if same else "0"], env=env,
                         capture_output=True, text=True, check=True, cwd=tree, timeout=900)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--domains", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--same-output", action="store_true", help="leave out what only the newer tree renders")
    args = parser.parse_args()
    print("| N | render old s | render new s | new/old | text new/old | view old s | view new s | new/old "
          "| RSS old MB | RSS new MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.domains:
        old, new = measure(args.old, n, args.same_output), measure(args.new, n, args.same_output)
        render, text, view = (new[k] / old[k] for k in ("render_s", "bytes", "view_s"))
        print(f"| {n} | {old['render_s']:.3f} | {new['render_s']:.3f} | {render:.2f}x | {text:.3f}x "
              f"| {old['view_s']:.3f} | {new['view_s']:.3f} | {view:.2f}x "
              f"| {old['rss_mb']:.0f} | {new['rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
