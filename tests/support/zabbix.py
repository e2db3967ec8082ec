"""A private Zabbix 6.0 server from Debian's packages, for the template's test tier.

:func:`zabbix_stack` starts, below a folder of the test's own, on loopback ports it picks:

- a PostgreSQL cluster (``initdb`` then ``postgres`` in the foreground, as the ``postgres`` user when run as
  root), with Debian's schema, images and data loaded;
- ``zabbix_server -f`` with a config file of its own (PID, log, socket and temp files in that folder; short
  cache updates; one SNMP trapper reading ``traps.log``);
- the frontend's JSON-RPC API under PHP's built-in web server.  Debian's frontend reads its config from the
  fixed path ``/etc/zabbix/zabbix.conf.php`` (a class constant of ``CConfigFile``); rather than write
  there, PHP's ``auto_prepend_file`` loads a copy of that class whose constant names our own file, so the
  frontend's autoloader never loads the original;

and stops them all on the way out.  :class:`Api` talks to the frontend.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tests.support.daemon import Daemon
from tests.support.process import free_port
from tests.support.wait import wait_until

FRONTEND = Path("/usr/share/zabbix")
SQL = Path("/usr/share/zabbix-server-pgsql")
CONFIG_CLASS = FRONTEND / "include" / "classes" / "core" / "CConfigFile.php"
DEBIAN_CONFIG = "/etc/zabbix/zabbix.conf.php"
ADMIN, PASSWORD = "Admin", "zabbix"  # the data set's default login

#: Loads gzipped SQL files into a database, each sent as one query: psql sends data.sql's 130,000 INSERTs
#: one at a time, which takes about twice as long.
_LOAD_SQL = """<?php
$db = pg_connect($argv[1]);
if ($db === false) { fwrite(STDERR, "cannot connect\\n"); exit(1); }
foreach (array_slice($argv, 2) as $file) {
    if (@pg_query($db, gzdecode(file_get_contents($file))) === false) {
        fwrite(STDERR, "$file: " . pg_last_error($db) . "\\n");
        exit(1);
    }
}
"""


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps them versioned)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def missing() -> str | None:
    """What this machine lacks to run the stack, with the Debian package to install, or None."""
    for tool, package in (("zabbix_server", "zabbix-server-pgsql"), ("php", "php-cli"),
                          ("snmptrapd", "snmptrapd"), ("perl", "perl-base")):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian package {package})"
    checks = ((postgres_bin() is not None, "PostgreSQL's server (Debian package postgresql)"),
              (SQL.joinpath("data.sql.gz").exists(), "Zabbix's SQL scripts (Debian package zabbix-server-pgsql)"),
              (CONFIG_CLASS.exists(), "Zabbix's frontend (Debian package zabbix-frontend-php)"))
    for ok, what in checks:
        if not ok:
            return f"{what} is missing"
    php = subprocess.run(["php", "-r", "exit(function_exists('pg_connect') ? 0 : 1);"], capture_output=True)
    if php.returncode != 0:
        return "PHP has no PostgreSQL support (Debian package php-pgsql)"
    perl = subprocess.run(["perl", "-MNetSNMP::TrapReceiver", "-e", "1"], capture_output=True)
    if perl.returncode != 0:
        return "Perl's NetSNMP::TrapReceiver, for snmptrapd's embedded Perl, is missing (Debian package libsnmp-perl)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run PostgreSQL as (Debian package postgresql)"
    return None


def server_port() -> int:
    """A free loopback TCP port that zabbix_server accepts for ListenPort (1024-32767)."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free TCP port in 20000-32767")


class Postgres(Daemon):
    """A PostgreSQL cluster of its own in ``folder`` (which the server's user must own), listening on a loopback
    port and a socket in ``folder``; the database ``zabbix``, owned by the superuser ``zabbix``, no password."""

    what: ClassVar[str] = "postgres"
    stop_timeout: ClassVar[float] = 20.0

    def __init__(self, folder: Path) -> None:
        super().__init__(folder / "postgres.log")
        bindir = postgres_bin()
        assert bindir is not None
        self.bindir = bindir
        self.folder = folder
        self.port = free_port()
        # As root, run as the postgres user: it refuses root.  setpriv execs it, so signals reach it directly.
        self.as_user = (["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"]
                        if os.geteuid() == 0 else [])
        initdb = subprocess.run([*self.as_user, str(bindir / "initdb"), "-D", str(folder / "data"), "-U", "zabbix",
                                 "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                                capture_output=True, text=True, timeout=300)
        assert initdb.returncode == 0, f"initdb failed: {initdb.stderr}"
        # The data are thrown away afterwards: durability off makes the schema's load much faster.
        self._spawn([*self.as_user, str(bindir / "postgres"), "-D", str(folder / "data"), "-h", "127.0.0.1",
                     "-p", str(self.port), "-k", str(folder), "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"], capture=True)
        self._wait_started(self._ready, 120, "PostgreSQL to accept connections")
        try:
            self.psql("-d", "postgres", "-c", "CREATE DATABASE zabbix")
        except AssertionError:
            self.stop()
            raise

    def _ready(self) -> bool:
        return subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.folder), "-p", str(self.port)],
                              timeout=30).returncode == 0

    def psql(self, *args: str) -> str:
        result = subprocess.run([str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.folder),
                                 "-p", str(self.port), "-U", "zabbix", *args],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"psql {args}: {result.stderr}"
        return result.stdout

    def load_zabbix(self, work: Path) -> None:
        """Debian's schema.sql, images.sql and data.sql into the database ``zabbix``."""
        loader = work / "load-sql.php"
        loader.write_text(_LOAD_SQL)
        files = [str(SQL / f"{name}.sql.gz") for name in ("schema", "images", "data")]
        result = subprocess.run(["php", str(loader), f"host={self.folder} port={self.port} user=zabbix dbname=zabbix",
                                 *files], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"loading Zabbix's SQL failed: {result.stderr}"
        # Planner statistics for the tables just filled: without them the API's first imports and host
        # creations take seconds each, until autovacuum gets there.
        self.psql("-d", "zabbix", "-c", "ANALYZE")

    def stop(self, sig: int = signal.SIGINT) -> int | None:
        return super().stop(sig)  # SIGINT: a fast shutdown (SIGTERM waits for every client to leave)


class ZabbixServer(Daemon):
    """``zabbix_server -f`` with a config file in ``folder``, its database on ``db``."""

    what: ClassVar[str] = "zabbix_server"
    stop_timeout: ClassVar[float] = 30.0
    tail_chars: ClassVar[int | None] = 6000

    def __init__(self, folder: Path, db: Postgres) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(folder / "zabbix_server.log")  # its console log (LogType=console) and any start-up error
        self.port = server_port()
        self.trap_file = folder / "traps.log"
        self.trap_file.touch()
        conf = folder / "zabbix_server.conf"
        settings = {
            "ListenIP": "127.0.0.1", "ListenPort": self.port, "LogType": "console",
            "PidFile": folder / "zabbix_server.pid", "SocketDir": folder, "TmpDir": folder,
            "DBHost": db.folder, "DBPort": db.port, "DBName": "zabbix", "DBUser": "zabbix",
            # Root is the test's user here; the processes of a test need no other.
            "AllowRoot": 1,
            # New hosts, items and triggers reach the server's cache within a second.
            "CacheUpdateFrequency": 1,
            "StartSNMPTrapper": 1, "SNMPTrapperFile": self.trap_file,
            # Few processes: this server watches two hosts.
            "StartPollers": 2, "StartPollersUnreachable": 1, "StartTrappers": 1, "StartPingers": 0,
            "StartDiscoverers": 0, "StartHTTPPollers": 0, "StartAlerters": 1, "StartEscalators": 1,
            "StartTimers": 1, "StartLLDProcessors": 1, "StartPreprocessors": 1, "StartHistoryPollers": 1,
            "StartDBSyncers": 1, "StartODBCPollers": 0, "StartReportWriters": 0,
            "Timeout": 5, "UnreachablePeriod": 5, "UnavailableDelay": 5, "UnreachableDelay": 1,
        }
        conf.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        exe = shutil.which("zabbix_server")
        assert exe is not None
        self._spawn([exe, "-f", "-c", str(conf)], capture=True)
        self._wait_started(lambda: "started [task manager" in self.output() and "started [snmp trapper" in
                           self.output(), 120, "zabbix_server's task manager and SNMP trapper")


class Frontend(Daemon):
    """The frontend (its API) under ``php -S`` on a free loopback port, configured for ``db`` and ``server``."""

    what: ClassVar[str] = "php -S"

    def __init__(self, folder: Path, db: Postgres, server: ZabbixServer) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(folder / "php.log")
        conf = folder / "zabbix.conf.php"
        conf.write_text(f"""<?php
$DB['TYPE'] = 'POSTGRESQL';
$DB['SERVER'] = '{db.folder}';
$DB['PORT'] = '{db.port}';
$DB['DATABASE'] = 'zabbix';
$DB['USER'] = 'zabbix';
$DB['PASSWORD'] = '';
$DB['SCHEMA'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER = '127.0.0.1';
$ZBX_SERVER_PORT = '{server.port}';
$ZBX_SERVER_NAME = 'libvirt-exporter tests';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
""")
        original = CONFIG_CLASS.read_text()
        assert f"'{DEBIAN_CONFIG}'" in original, f"{CONFIG_CLASS} no longer names {DEBIAN_CONFIG}"
        config_class = folder / "CConfigFile.php"
        config_class.write_text(original.replace(f"'{DEBIAN_CONFIG}'", f"'{conf}'"))
        self.url = f"http://127.0.0.1:{free_port()}/api_jsonrpc.php"
        host = self.url.split("/")[2]
        # opcache keeps the frontend's compiled code between requests (the CLI turns it off by default).
        self._spawn(["php", "-d", f"auto_prepend_file={config_class}", "-d", "opcache.enable_cli=1",
                     "-d", "memory_limit=1G", "-d", "post_max_size=64M", "-d", "max_execution_time=300",
                     "-S", host, "-t", str(FRONTEND)],
                    capture=True)
        self._wait_started(self._answers, 60, "the frontend's API")

    def _answers(self) -> bool:
        try:
            return bool(Api(self.url).call("apiinfo.version", {}))
        except OSError:
            return False


class ApiError(AssertionError):
    pass


class Api:
    """A JSON-RPC client of the frontend, logged in once :meth:`login` ran."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token: str | None = None

    def call(self, method: str, params: Any) -> Any:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
        if self.token is not None and method not in ("apiinfo.version", "user.login"):  # these refuse a token
            body["auth"] = self.token
        request = urllib.request.Request(self.url, json.dumps(body).encode(),
                                         {"Content-Type": "application/json-rpc"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
        if "error" in answer:
            raise ApiError(f"{method}: {answer['error']}")
        return answer["result"]

    def login(self, user: str = ADMIN, password: str = PASSWORD) -> None:
        self.token = self.call("user.login", {"username": user, "password": password})

    def check_now(self, itemids: list[str]) -> None:
        """The frontend's "Execute now" for items or discovery rules (a task of type 6 each)."""
        if itemids:
            self.call("task.create", [{"type": 6, "request": {"itemid": i}} for i in itemids])

    def until(self, read: Callable[[], Any], timeout: float, what: str, nudge: Callable[[], None] | None = None,
              every: float = 0.5) -> Any:
        """The first truthy ``read()``; ``nudge`` runs first and then every 5 s of waiting (a check-now: the
        server ignores it for items its cache does not hold yet)."""
        state = {"last": -1e9}

        def attempt() -> Any:
            if nudge is not None and time.monotonic() - state["last"] >= 5:
                state["last"] = time.monotonic()
                nudge()
            return read()

        return wait_until(attempt, timeout, what, every)


@dataclass
class Zabbix:
    api: Api
    server: ZabbixServer
    frontend: Frontend
    db: Postgres


@contextlib.contextmanager
def zabbix_stack(folder: Path) -> Iterator[Zabbix]:
    """PostgreSQL, zabbix_server and the API below ``folder``, the API logged in as Admin; all stopped after."""
    # The postgres user cannot enter pytest's root-only folders: its cluster lives in a folder of its own.
    pg_folder = Path(tempfile.mkdtemp(prefix="lvx-zabbix-pg-"))
    pg_folder.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(pg_folder, "postgres", "postgres")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, pg_folder, True)
        db = stack.enter_context(Postgres(pg_folder))
        db.load_zabbix(folder)
        server = stack.enter_context(ZabbixServer(folder / "server", db))
        frontend = stack.enter_context(Frontend(folder / "web", db, server))
        api = Api(frontend.url)
        api.login()
        yield Zabbix(api, server, frontend, db)
