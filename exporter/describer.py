"""Definitions of the domains that events announce, read off the event loop.

A ``defined`` or ``started`` event makes a domain known before the next poll, but only by name and state; its
definition (devices, memory, metadata) is read here, by at most two reader tasks, each read bounded by the
domain deadline and made in a worker thread, so that a hung read never blocks the loop.  What is read goes
back to the poller as a :class:`Described`, which it merges into the served snapshot and keeps for the poll
under way (whose result may predate it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from exporter.errors import SourceError
from exporter.events import position, with_definition
from exporter.snapshot import Domain
from exporter.source import Source
from exporter.threads import in_daemon_thread

log = logging.getLogger(__name__)

READERS = 2


@dataclass(frozen=True, slots=True)
class Described:
    """A domain's definition as read after ``after_poll`` polls had begun."""

    domain: Domain
    after_poll: int


def merged(domains: tuple[Domain, ...], described: Domain) -> tuple[Domain, ...]:
    """``domains`` with ``described``'s definition merged into its domain, if that is still there."""
    pos = position(domains, described.uuid, described.name)
    if pos is None:
        return domains
    return domains[:pos] + (with_definition(domains[pos], described),) + domains[pos + 1:]


def retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback of a call given up on: its late failure is expected, not an error."""
    if not future.cancelled():
        future.exception()


class Describer:
    """Reads the definitions asked for with :meth:`ask`, on at most :data:`READERS` tasks (repeated requests
    for a domain coalesce) and hands each to ``deliver``."""

    def __init__(self, source: Callable[[], Source | None], groups: Callable[[], Iterable[str]],
                 deadline_s: float, polls_begun: Callable[[], int], deliver: Callable[[Described], None]) -> None:
        self._source = source
        self._groups = groups
        self._deadline_s = deadline_s
        self._polls_begun = polls_begun
        self._deliver = deliver
        self._wanted: dict[str, None] = {}  # domains whose definition is to be read, in order
        self._readers = 0

    def ask(self, uuid: str, loop: asyncio.AbstractEventLoop | None) -> None:
        self._wanted[uuid] = None
        if self._readers < READERS and loop is not None:
            self._readers += 1
            loop.create_task(self._reader())

    async def _reader(self) -> None:
        try:
            while self._wanted:
                uuid = next(iter(self._wanted))
                del self._wanted[uuid]
                source = self._source()
                if source is None:
                    self._wanted.clear()
                    return
                begun = self._polls_begun()
                future = in_daemon_thread(source.describe, uuid, self._groups(), name="libvirt-describe")
                try:
                    # A definition that hangs is left to its thread; the next poll reads the domain anyway.
                    domain = await asyncio.wait_for(asyncio.shield(future), self._deadline_s)
                except TimeoutError:
                    future.add_done_callback(retrieve)
                    log.debug("reading the definition of %s took longer than %gs; left to the next poll", uuid,
                              self._deadline_s)
                    continue
                except SourceError as err:  # gone meanwhile (its event follows), or libvirt lost (the poll sees it)
                    log.debug("could not read the definition of %s: %s", uuid, err)
                    continue
                self._deliver(Described(domain, begun))
        except Exception:  # never let a reader die silently; the next poll reads every domain anyway
            log.exception("reading a domain definition failed")
        finally:
            self._readers -= 1
