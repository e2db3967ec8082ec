"""The ``libvirt-exporter`` command.

``libvirt-exporter [serve]`` runs the service; ``libvirt-exporter dump`` polls
once and prints the Prometheus exposition, which is handy for checking
permissions.  A configuration error prints one line naming the key and exits
with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from exporter import __version__, webconfig
from exporter.config import SETTINGS, Config, load_file, read_config_path, resolve
from exporter.config.values import check_state_directory, redact_uri
from exporter.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    file_only = "; ".join(f"{s.key} ({s.help})" for s in SETTINGS if s.file_only)
    parser = argparse.ArgumentParser(
        prog="libvirt-exporter",
        description="Export libvirt host and domain metrics to Prometheus and SNMP, with SNMP lifecycle control.",
        epilog="Every setting can also come from the TOML file (--config.file) or from the environment "
        "variable shown; the command line wins over the environment, which wins over the file. "
        f"Set only in the file, because they hold secrets or structure: {file_only}. "
        "A relative path (--config.file, --state.directory, --web.config.file) is taken from the working "
        "directory at start-up. See the README for the file's layout.",
    )
    parser.add_argument("command", nargs="?", choices=("serve", "dump"), default="serve",
                        help="serve (default): run the exporter; dump: poll once and print the metrics")
    parser.add_argument("--version", action="version", version=f"libvirt-exporter {__version__}")
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="TOML configuration file; a relative path is taken from the working directory "
                             "(env LIBVIRT_EXPORTER_CONFIG_FILE)")
    for setting in SETTINGS:
        if setting.file_only:
            continue  # secrets never go on the command line
        help_text = f"{setting.help} (env {setting.env})"
        if setting.boolean:
            parser.add_argument(setting.cli, dest=setting.key, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(setting.cli, dest=setting.key, metavar="VALUE", default=None, help=help_text)
    return parser


def load_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[str, Config]:
    """Parse arguments and resolve the configuration (raises ConfigError)."""
    args = build_parser().parse_args(argv)
    cli = {s.key: getattr(args, s.key) for s in SETTINGS if not s.file_only}
    path = read_config_path(args.config_file, environ)
    file_data: dict[str, Any] = load_file(path) if path else {}
    return args.command, resolve(cli, environ, file_data, config_file=path)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas before any thread starts (unless MALLOC_ARENA_MAX says otherwise).

    Every HTTP request runs in a thread of its own, and glibc gives threads
    arenas of their own (up to eight per core), each keeping what it once
    held: under 20 concurrent scrapers the RSS crept up by some 15% a minute.
    With two arenas it stays flat (bench/LOAD.md).  Not glibc: nothing done.
    """
    return _mallopt("MALLOC_ARENA_MAX", -8, arenas)  # M_ARENA_MAX


def fix_mmap_threshold(size: int = 128 * 1024) -> bool:
    """Have glibc's malloc give blocks of ``size`` bytes or more their own mapping, always (unless
    MALLOC_MMAP_THRESHOLD_ says otherwise).

    By default glibc raises that threshold to the size of each mapped block freed, so after the first
    /metrics rendering is replaced its family texts (hundreds of KB each) come from the heap, whose freed
    room is held on to: the peak RSS at 3000 domains was some 30 MB higher (bench/rss.py).  A fixed
    threshold returns each large block when it is freed.  Not glibc: nothing done.
    """
    return _mallopt("MALLOC_MMAP_THRESHOLD_", -3, size)  # M_MMAP_THRESHOLD


def _mallopt(variable: str, option: int, value: int) -> bool:
    """glibc's mallopt(option, value), unless the environment sets ``variable`` (its own say wins); False where
    there is no glibc."""
    if variable in os.environ:
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(option, value))
    except (OSError, AttributeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()
    fix_mmap_threshold()
    try:
        command, config = load_config(argv, os.environ)
        web = webconfig.load(config.web.config_file) if config.web.config_file else webconfig.WebConfig()
        if command == "serve":
            check_state_directory(config.state_directory)
    except ConfigError as exc:
        print(f"libvirt-exporter: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_level)
    if command == "dump":
        return dump(config)
    try:
        return asyncio.run(serve(config, web))
    except KeyboardInterrupt:
        return 0


def warn_if_test_driver(config: Config) -> None:
    """The default URI reads libvirt's built-in test driver: say so, whatever the command."""
    if config.libvirt.uri.startswith("test:"):
        log.warning("serving libvirt's built-in test driver (%s), whose domains are made up; set libvirt.uri "
                    "for a real host", redact_uri(config.libvirt.uri))


#: libvirt's VIR_ERR_NO_CONNECT: no driver took the URI (cli.py does not import libvirt; exporter/source/ does).
_NO_CONNECT = 5


def connect_failure(uri: str, exc: SourceError) -> str:
    """One clear line for a libvirt connection that could not be opened.

    libvirt's own text for a name that is neither a URI nor an alias runs two messages together ("no connection
    driver available for URI 'x' does not include a driver name"); that case is said in our words only, any
    other failure with libvirt's words after ours.
    """
    said = " ".join(str(exc).split())
    if "://" not in uri and exc.code == _NO_CONNECT:
        return (f"cannot connect to libvirt at {uri}: {uri!r} is not a libvirt URI (like qemu:///system) and no "
                "uri_aliases entry in libvirt.conf has that name")
    if "Failed to connect socket" in said:
        why = "no libvirt daemon answers on its socket (is libvirtd, or virtqemud, running?)"
    else:
        why = "libvirt refused the connection"
    return f"cannot connect to libvirt at {uri}: {why}; libvirt said: {said}"


def dump(config: Config) -> int:
    """Poll once and print the exposition; exit 1 if libvirt cannot be read."""
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.exposition import SnapshotCollector
    from exporter.poller import ERROR_GROUPS, snapshot_of
    from exporter.snapshot import frozen_map
    from exporter.source import Source

    warn_if_test_driver(config)
    source = Source(config.libvirt.uri, keepalive_interval=config.libvirt.keepalive_interval_s,
                    keepalive_count=config.libvirt.keepalive_count)
    started = time.time()
    try:
        try:
            source.open()
        except SourceError as exc:
            print(f"libvirt-exporter: {connect_failure(redact_uri(config.libvirt.uri), exc)}", file=sys.stderr)
            return 1
        result = source.poll(config.libvirt.collectors, config.libvirt.keep_domain)
    except SourceError as exc:
        print(f"libvirt-exporter: cannot read libvirt at {redact_uri(config.libvirt.uri)}: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
    errors = {g: 0 for g in ERROR_GROUPS} | dict(result.errors)
    snap = snapshot_of(result, started, time.time() - started, poll_errors=frozen_map(errors))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap, config.libvirt.collectors))
    sys.stdout.write(generate_latest(registry).decode())
    return 0


async def serve(config: Config, web_config: webconfig.WebConfig | None = None) -> int:
    from exporter import app
    from exporter.indexmap import StateError
    from exporter.source import start_event_loop

    warn_if_test_driver(config)
    start_event_loop()
    try:
        service = app.build(config, web_config)
        await service.start()
    except (app.StartError, StateError) as exc:
        log.error("%s", exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.warning("SIGHUP ignored: the configuration is read at start-up only; restart")
    )
    try:
        await service.run(stop)
    finally:
        await service.stop()
        log.info("stopped")
    return 0
