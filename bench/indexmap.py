"""Micro-benchmark: the cost of IndexMap.assign for one new UUID, by map size.

    python bench/indexmap.py --dir /dev/shm/x --sizes 300 2000
    python bench/indexmap.py --module /tmp/old/indexmap.py --dir /var/tmp/x   # another version of the module

For each size a fresh map of that many entries is built with one call, then
``--new`` single-UUID calls each name one new UUID (the per-event call) and
``--known`` calls name one known UUID.  Times are wall-clock, including the
fsync/fdatasync, so the filesystem under ``--dir`` matters: say which it was.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load(module_path: str | None) -> ModuleType:
    if module_path is None:
        import exporter.indexmap

        return exporter.indexmap
    spec = importlib.util.spec_from_file_location("indexmap_under_test", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uuid(prefix: str, i: int) -> str:
    return f"{prefix}{i:07d}-9a3c-4b1e-8f00-5d2e7c1a0b44"


def measure(module: ModuleType, directory: Path, size: int, new: int, known: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix=f"imap-{size}-", dir=directory))
    try:
        imap = module.IndexMap(work / "snmp-indexes.json")
        imap.assign("domain", [uuid("a", i) for i in range(size)])
        times = []
        for i in range(new):
            name = uuid("n", i)
            start = time.perf_counter_ns()
            imap.assign("domain", [name])
            times.append(time.perf_counter_ns() - start)
        hits = []
        for i in range(known):
            name = uuid("a", i % size)
            start = time.perf_counter_ns()
            imap.assign("domain", [name])
            hits.append(time.perf_counter_ns() - start)
        return {
            "new_median_ms": statistics.median(times) / 1e6,
            "new_mean_ms": statistics.fmean(times) / 1e6,
            "new_max_ms": max(times) / 1e6,
            "known_median_us": statistics.median(hits) / 1e3,
        }
    finally:
        shutil.rmtree(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", help="path of an indexmap.py to time instead of exporter.indexmap")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the state files go")
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 2000])
    parser.add_argument("--new", type=int, default=200, help="single-UUID calls naming a new UUID")
    parser.add_argument("--known", type=int, default=2000, help="single-UUID calls naming a known UUID")
    args = parser.parse_args()
    module = load(args.module)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    print(f"module {module.__file__}, files in {directory} ({os.statvfs(directory).f_bsize}-byte blocks)")
    print("| entries | new UUID median ms | mean ms | max ms | known UUID median us |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        r = measure(module, directory, size, args.new, args.known)
        print(f"| {size} | {r['new_median_ms']:.3f} | {r['new_mean_ms']:.3f} | {r['new_max_ms']:.3f} "
              f"| {r['known_median_us']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
