"""The libvirt boundary: the only package that imports :mod:`libvirt`.

It turns libvirt data into :mod:`exporter.snapshot` dataclasses and libvirt
errors into :mod:`exporter.errors` exceptions.  One :class:`Source` owns one
connection.  :meth:`Source.poll` is a blocking call meant for a worker thread;
event callbacks arrive on libvirt's default event loop, which runs in a daemon
thread started by :func:`start_event_loop`.

Its parts:

- :mod:`~exporter.source.connection`: open, close, keepalive, event
  callbacks, lifecycle actions, lanes, and libvirt errors turned into ours;
- :mod:`~exporter.source.poll`: :class:`Source` and :class:`PollResult`;
- :mod:`~exporter.source.bulk`: the bulk stats calls and the probe of the groups a driver serves in bulk;
- :mod:`~exporter.source.fallback`: per-domain calls for groups a driver lacks in bulk;
- :mod:`~exporter.source.jobs`: the domains of a poll and their deadlines;
- :mod:`~exporter.source.host`: node figures, storage pools and networks;
- :mod:`~exporter.source.parse`, :mod:`~exporter.source.domain` and
  :mod:`~exporter.source.domxml`: pure parsers (no libvirt import) of bulk
  records, call results and domain XML.
"""

from exporter.source.connection import start_event_loop
from exporter.source.poll import PollResult, Source

__all__ = ["PollResult", "Source", "start_event_loop"]
