"""Record what libvirt answers for one domain, for the in-process parser tests (tests/test_parse.py).

Two recordings, each a JSON file under ``tests/data/``:

- ``qemu-domain-stats.json``: a real TCG QEMU domain under a private libvirtd
  (the helpers of the real tier: :func:`tests.conftest.start_real_host`).  It
  holds the domain's ``getAllDomainStats(0)`` record with every group, its XML,
  and the per-domain calls the exporter makes beside the bulk call
  (``vcpus()`` for the vCPU placement; ``info()``, ``memoryStats()`` and the
  device calls for reference).  Needs root, libvirtd, virtlogd, QEMU.
- ``test-driver-calls.json``: libvirt's test driver (no daemon) on
  ``examples/demo-host.xml``: for a running domain with a balloon (web1) and a
  shut-off one (legacy1), the bulk record (only the ``state`` group there) and
  the results of the per-domain fallback calls (info, state, vcpus,
  getCPUStats, memoryStats, blockStats, blockInfo, interfaceStats).

Re-record (as root, from the repository root; takes about 15 s) with::

    .venv/bin/python -m tests.support.record_stats            # both files
    .venv/bin/python -m tests.support.record_stats --test-only # only the test driver (no root)

The numbers differ on every recording; tests/test_parse.py reads whatever the
files say, so a re-recording needs no change there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import libvirt

from exporter.source import domxml

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
QEMU_FILE = DATA / "qemu-domain-stats.json"
TEST_FILE = DATA / "test-driver-calls.json"

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (what JSON keeps anyway), so that the file reads the same as it is written."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _try(fn: Any, *args: Any) -> Any:
    try:
        return _plain(fn(*args))
    except libvirt.libvirtError as exc:
        return {"error": exc.get_error_message() or str(exc)}


def _domain_record(conn: libvirt.virConnect, dom: libvirt.virDomain) -> dict[str, Any]:
    xml = dom.XMLDesc(0)
    cfg = domxml.parse(xml)
    active = dom.ID() >= 0
    ((_, bulk),) = conn.domainListGetStats([dom], 0, 0)
    record: dict[str, Any] = {
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "id": dom.ID(),
        "persistent": bool(dom.isPersistent()),
        "autostart": bool(dom.autostart()),
        "xml": xml,
        "bulk": _plain(dict(bulk)),
        "state": _try(dom.state, 0),
        "info": _try(dom.info),
    }
    if active:
        record.update(
            vcpus=_try(dom.vcpus),
            cpu_stats=_try(dom.getCPUStats, True),
            memory_stats=_try(dom.memoryStats),
            block_stats={d.target: _try(dom.blockStats, d.target) for d in cfg.disks},
            block_info={d.target: _try(dom.blockInfo, d.target) for d in cfg.disks},
            interface_stats={n.target: _try(dom.interfaceStats, n.target) for n in cfg.nics if n.target},
        )
    return record


def _write(path: Path, payload: dict[str, Any]) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def record_test_driver() -> None:
    conn = libvirt.openReadOnly(f"test://{ROOT / 'examples' / 'demo-host.xml'}")
    try:
        payload = {
            "recorded": time.strftime("%Y-%m-%d"),
            "libvirt": conn.getLibVersion(),
            "driver": conn.getType(),
            "domains": {name: _domain_record(conn, conn.lookupByName(name)) for name in ("web1", "legacy1")},
        }
    finally:
        conn.close()
    _write(TEST_FILE, payload)


def record_qemu() -> None:
    from tests.conftest import _READ_LOOP, start_real_host

    with tempfile.TemporaryDirectory(prefix="lxe-record-") as folder:
        host = start_real_host(Path(folder), "lxe-rec", 1, kvm=False, code=_READ_LOOP)
        try:
            time.sleep(3)  # let the boot loop read a few sectors and the vCPUs accumulate time
            conn = libvirt.openReadOnly(host.uri)
            try:
                dom = conn.lookupByName(host.domains[0])
                payload = {
                    "recorded": time.strftime("%Y-%m-%d"),
                    "libvirt": conn.getLibVersion(),
                    "hypervisor": conn.getVersion(),
                    "driver": conn.getType(),
                    "domains": {dom.name(): _domain_record(conn, dom)},
                }
            finally:
                conn.close()
        finally:
            host.daemon.shutdown()
    _write(QEMU_FILE, payload)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-only", action="store_true", help="record only the test driver (no root needed)")
    args = parser.parse_args(argv)
    record_test_driver()
    if not args.test_only:
        record_qemu()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
