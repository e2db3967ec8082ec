"""Under lifecycle churn nothing is dropped and no domain goes missing (private libvirtd tier).

A private libvirtd (root, a mount namespace of its own) serves libvirt's test
driver; one connection stays open so that ``test:///default`` is one shared
host, and 300 domains are defined and started on it.  The exporter polls it
every 2 s and sends each lifecycle event as a libvirt-exporter notification to
a v2c trap target and a v2c inform target, both on a real snmptrapd on
loopback, with the default queue sizes.  A driver thread then makes about 45
lifecycle operations a second for 50 s (over 2,000 events).

Every 2 s, libvirt's list is compared with ``/metrics`` and with a bulk walk
of the SNMP domain table: every domain libvirt lists must be served by both
with its current state, unless it changed less than a second before the read
began (or during it).  At the end: the events libvirt delivered ==
libvirt_exporter_events_total == notifications sent to each target ==
notifications snmptrapd received on each port, each exactly once (told apart
by trap OID and lvxDomainUUID), and none dropped.

Like the real-QEMU tier it needs root and starts its own daemons: in CI (CI
set) it fails when libvirtd cannot start; elsewhere it is skipped with the
reason (shown by ``-ra``).  snmptrapd failing to start is always a failure.
It takes about a minute (50 s of churn).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import require, require_tool
from tests.support.churn import ChurnPlan, ChurnRig, run_churn
from tests.support.libvirtd import DaemonError

# The tier of the private libvirtd (root, its own daemons), shared with the real-QEMU tests: no QEMU runs here.
pytestmark = pytest.mark.realqemu

PLAN = ChurnPlan(domains=300, rate=45.0, churn_s=50.0, quiet_s=0.0, poll_interval="2s", every=2.0, grace=1.0,
                 settle_s=120.0)
MIN_EVENTS = 2000
WITHIN_S = 60.0


def test_churn_drops_nothing_and_loses_no_domain(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "the private libvirtd needs root")
    for tool, package in (("libvirtd", "libvirt-daemon"), ("virtlogd", "libvirt-daemon"), ("virsh", "libvirt-clients"),
                          ("snmptrapd", "snmptrapd"), ("snmpbulkwalk", "snmp")):
        require_tool(tool, package)
    rig = ChurnRig(tmp_path / "churn", PLAN)
    try:
        try:
            rig.start_daemon()
        except DaemonError as exc:
            require(False, f"cannot start a private libvirtd: {exc}")
        rig.start_rest()
        report = run_churn(rig)
    finally:
        rig.close()
    (tmp_path / "summary.txt").write_text(report.summary() + "\n" + "\n".join(report.failures()) + "\n")
    print(report.summary())

    assert report.event_count >= MIN_EVENTS and report.churn_seconds <= WITHIN_S, (
        f"the driver made only {report.event_count} events in {report.churn_seconds:.1f} s "
        f"(wanted {MIN_EVENTS} within {WITHIN_S:.0f} s; operations {dict(report.ops)})")
    failures = report.failures()
    assert not failures, ("under churn: " + report.summary() + "\n" + "\n".join(failures)
                          + "\n--- exporter log (tail) ---\n" + report.exporter_log_tail[-1500:])
