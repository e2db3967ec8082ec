"""Where each vCPU last ran, asked of libvirt less often than every poll.

The bulk ``vcpu`` group has each vCPU's state and times but not the host CPU it
runs on: that takes a ``vcpus()`` call per running domain, which on a QEMU host
was about a sixth of the poll.  The host CPU is a momentary sample (the guest's
threads move between host CPUs many times a second), so an answer a few polls
old says as much as a fresh one.  With ``every`` N > 1 each domain is asked on
one poll in N, the domains spread evenly over the N polls by their UUID, and
in between the last answer is served again.  A domain seen for the first time,
restarted, or with a vCPU the last answer lacks is asked at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection

from exporter.snapshot import Domain
from exporter.source.parse import Placement


class Placements:
    """The last placement of each running domain's vCPUs, and which domains are due to be asked again."""

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.every = every
        self._known: dict[str, tuple[int, Placement]] = {}  # uuid -> (domain id when asked, placement)

    def cached(self, uuid: str, dom_id: int, poll: int) -> Placement | None:
        """The placement to serve again on poll number ``poll``, or None when the domain is to be asked."""
        if self.every == 1:
            return None
        known = self._known.get(uuid)
        if known is None or known[0] != dom_id:
            return None
        if (poll + zlib.crc32(uuid.encode())) % self.every == 0:
            return None
        return known[1]

    def remember(self, domain: Domain) -> None:
        """Keep what a domain built with a fresh answer says (its vCPUs' host CPUs)."""
        if self.every == 1 or domain.id < 0 or not domain.vcpus:
            return
        self._known[domain.uuid] = (domain.id, {
            v.number: (0, 0, -1 if v.physical_cpu is None else v.physical_cpu) for v in domain.vcpus})

    def forget_except(self, seen: Collection[str]) -> None:
        for uuid in set(self._known) - set(seen):
            del self._known[uuid]
