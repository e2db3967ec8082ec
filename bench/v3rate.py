"""Benchmark: SNMPv3 authPriv walks (SHA-256/AES) against SNMPv2c, with the v3 fast path on and off.

One standalone agent (the exporter's own StandaloneAgent, in this process on its own event-loop thread, over
a snapshot of N test-driver domains x 2 disks x 2 NICs x 4 vCPUs) is walked with net-snmp's
``snmpbulkwalk -Cr50``: v2c, v3 authPriv through the fast path, and v3 authPriv through pysnmp alone (the
fast path switched off for v3 only).  ``python -m bench.v3rate [N]`` prints varbinds per second for each.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import bulk_walk  # noqa: E402
from exporter.config.snmp import V3User  # noqa: E402
from exporter.hostgen import HostShape, node_xml  # noqa: E402
from tests.support.inproc_agent import InProcessAgent, demo_snapshot  # noqa: E402

COMMUNITY = "bench"
USER = V3User("bench-v3", "bench-auth-key", "bench-priv-key", "SHA-256", "AES")


def bulk_rate(target: str, *args: str, root: str = "1.3.6.1") -> tuple[float, int]:
    """(varbinds/s, varbinds) of one ``snmpbulkwalk -Cr50`` of ``root`` with the given version arguments."""
    return bulk_walk(target, args, root)


def v3_args(user: V3User = USER) -> list[str]:
    return ["-v3", "-l", "authPriv", "-u", user.name, "-a", user.auth_protocol, "-A", user.auth_key,
            "-x", user.priv_protocol, "-X", user.priv_key]


def measure(n: int, work: Path, rounds: int = 3, pysnmp_rounds: int | None = None) -> dict[str, tuple[float, int]]:
    """Best of ``rounds`` walks each (``pysnmp_rounds`` for the slow one): {"v2c", "v3 fast", "v3 pysnmp"} ->
    (varbinds/s, varbinds)."""
    host = work / f"host-{n}.xml"
    host.write_text(node_xml(HostShape(domains=n, disks=2, nics=2, vcpus=4, mixed_states=False, prefix="bench")))
    snmp = {"communities": [{"name": COMMUNITY}],
            "users": [{"name": USER.name, "auth_key": USER.auth_key, "priv_key": USER.priv_key}]}
    agent = InProcessAgent(work, snmp, demo_snapshot(f"test://{host}"))
    target = f"127.0.0.1:{agent.port}"
    try:
        bulk_rate(target, "-v2c", "-c", COMMUNITY)  # warm up: the view is built on the first request
        results = {"v2c": max(bulk_rate(target, "-v2c", "-c", COMMUNITY) for _ in range(rounds)),
                   "v3 fast": max(bulk_rate(target, *v3_args()) for _ in range(rounds))}
        with agent.pysnmp_only():
            results["v3 pysnmp"] = max(bulk_rate(target, *v3_args()) for _ in range(pysnmp_rounds or rounds))
        return results
    finally:
        agent.close()


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 1000
    with tempfile.TemporaryDirectory(prefix="v3rate-") as tmp:
        results = measure(n, Path(tmp))
    v2c = results["v2c"][0]
    print(f"{n} domains, snmpbulkwalk -Cr50 of 1.3.6.1:")
    for name, (rate, varbinds) in results.items():
        print(f"  {name:10} {rate:9,.0f} varbinds/s  ({varbinds} varbinds, {rate / v2c:.2f}x v2c)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
