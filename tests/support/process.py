"""Run the real ``libvirt-exporter`` command as a subprocess and scrape it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _counters_typed_without_total(text: str) -> set[str]:
    """Counter families whose ``# TYPE`` line names them without ``_total``: prometheus_client's parser
    renames their samples NAME_total, which the exposition never said."""
    found = set()
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["#", "TYPE"] and len(words) == 4 and words[3] == "counter" \
                and not words[2].endswith("_total"):
            found.add(words[2])
    return found


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a text exposition keyed by (name, labels), each named as the exposition names it.

    Parsed by prometheus_client: a line it cannot parse raises ValueError, and so does a sample with a
    timestamp (the exporter writes none).
    """
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ValueError(f"unparsable exposition line {_first_bad_line(text)!r}: {exc}") from exc
    unsuffixed = _counters_typed_without_total(text)
    samples = {}
    for family in families:
        for sample in family.samples:
            if sample.timestamp is not None:
                raise ValueError(f"unparsable exposition: {sample.name} has a timestamp ({sample.timestamp})")
            name = sample.name
            if family.type == "counter" and family.name in unsuffixed and name == family.name + "_total":
                name = family.name
            samples[(name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def _first_bad_line(text: str) -> str | None:
    """The first sample line that does not parse on its own (for the error message)."""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                list(text_string_to_metric_families(line))
            except ValueError:
                return line
    return None


class Metrics:
    """One scrape, with lookups by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = parse_exposition(text)

    def get(self, name: str, **labels: str) -> float | None:
        want = set(labels.items())
        found = [v for (n, lbl), v in self.samples.items() if n == name and want <= set(lbl)]
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series")
        return found[0] if found else None

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(lbl) for (n, lbl) in self.samples if n == name]

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}


class Exporter(Daemon):
    """``python -m exporter`` on a free loopback port."""

    what: ClassVar[str] = "exporter"
    proc: subprocess.Popen[bytes]

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        listen: str | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """``listen`` is HOST:PORT for --web.listen-address (a free loopback port by default); ``prefix`` a
        command that runs the exporter (say, in a namespace of its own)."""
        super().__init__(log)
        if listen is None:
            listen = f"127.0.0.1:{free_port()}"
        first = listen.split(",")[0]
        self.port = int(first.rsplit(":", 1)[1])
        self.url = f"http://{first}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIBVIRT_EXPORTER_")}
        full_env.update(env or {})
        self.log_path = log
        self._spawn([*(prefix or []), sys.executable, "-m", "exporter", "--web.listen-address", listen, *args],
                    capture=log is not None, env=full_env, cwd=ROOT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            try:
                return http_get(self.url + "/healthz", timeout=1)[0] == 200
            except OSError:
                return False

        self._wait_started(healthy, timeout, f"the exporter to answer {self.url}/healthz", every=0.05)

    def scrape(self, path: str = "/metrics") -> Metrics:
        status, body = http_get(self.url + path)
        assert status == 200, f"GET {path} gave {status}"
        return Metrics(body.decode())

    def wait_for(self, predicate: Callable[[Metrics], bool], timeout: float = 30.0, what: str = "") -> Metrics:
        def scraped() -> Metrics | None:
            metrics = self.scrape()
            return metrics if predicate(metrics) else None

        return wait_until(scraped, timeout, what or str(predicate), every=0.1)

    def wait_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the exporter's log says ``text``; fails at once if it exits."""
        def said() -> bool:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"the exporter exited with {self.proc.returncode}")
            return False

        try:
            wait_until(said, timeout, f"the exporter's log to say {text!r}", every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the exporter's log: {self.output()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = super().stop(sig)
        assert code is not None
        return code

    def __enter__(self) -> Exporter:
        self.wait_ready()
        return self
