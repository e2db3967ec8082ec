"""A real Prometheus server (Debian's package) on a loopback port, with a private TSDB."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from tests.support.daemon import Daemon
from tests.support.process import free_port, http_get
from tests.support.wait import poll_until, wait_until


class Prometheus(Daemon):
    what: ClassVar[str] = "prometheus"
    proc: subprocess.Popen[bytes]

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
        super().__init__(self.log)
        self._spawn([exe, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"], capture=True, cwd=folder)
        self._wait_started(self._ready, 30, f"prometheus to be ready on {self.url}")

    def _ready(self) -> bool:
        try:
            return http_get(self.url + "/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

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
        try:
            found: list[dict[str, Any]] = wait_until(lambda: self.query(expr), timeout, f"a result for {expr}",
                                                     every=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; targets: {self.api('targets')}; log: {self.output()}") from None
        return found

    def until(self, path: str, key: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """``api(path)[key]`` once it is not empty (active targets, firing alerts); [] after ``timeout``."""
        found: list[dict[str, Any]] = poll_until(lambda: self.api(path)[key], bool, timeout, every=0.5)
        return found
