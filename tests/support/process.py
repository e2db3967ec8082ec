"""Run the real ``libvirt-exporter`` command as a subprocess and scrape it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


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


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a text exposition keyed by (name, labels)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise ValueError(f"unparsable exposition line: {line!r}")
        labels = frozenset(_LABEL.findall(match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    return samples


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


class Exporter:
    """``python -m exporter`` on a free loopback port."""

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
        if listen is None:
            listen = f"127.0.0.1:{free_port()}"
        first = listen.split(",")[0]
        self.port = int(first.rsplit(":", 1)[1])
        self.url = f"http://{first}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIBVIRT_EXPORTER_")}
        full_env.update(env or {})
        self.log_path = log
        self._log = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "exporter", "--web.listen-address", listen, *args],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}: {self.output()}")
            try:
                status, _ = http_get(self.url + "/healthz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"exporter not ready in {timeout}s: {self.output()}")

    def scrape(self, path: str = "/metrics") -> Metrics:
        status, body = http_get(self.url + path)
        assert status == 200, f"GET {path} gave {status}"
        return Metrics(body.decode())

    def wait_for(self, predicate: Callable[[Metrics], bool], timeout: float = 20.0, what: str = "") -> Metrics:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.scrape()
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")

    def wait_output(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the exporter's log says ``text``; fails at once if it exits."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the exporter's log never said {text!r}: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self._log, "close"):
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Exporter:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
