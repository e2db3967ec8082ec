"""A real Prometheus server (Debian's package) on a loopback port, with a private TSDB."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.process import free_port, http_get


class Prometheus:
    def __init__(self, folder: Path, scrape_configs: str, scrape_interval: str = "1s", rule_files: str = "") -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            raise AssertionError("prometheus not found (Debian package prometheus)")
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
            + (f"rule_files:\n{rule_files}\n" if rule_files else "")
            + f"scrape_configs:\n{scrape_configs}\n")
        self.log = folder / "prometheus.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.output()}")
            try:
                if http_get(self.url + "/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, **params: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr, **params)["result"]

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns at least one series."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.25)
        targets = self.api("targets")
        raise AssertionError(f"no result for {expr} in {timeout}s; targets: {targets}; log: {self.output()}")

    def until(self, path: str, key: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """``api(path)[key]`` once it is not empty (active targets, firing alerts); [] after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.api(path)[key]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
