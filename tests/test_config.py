"""Configuration: layering, validation, and the CLI's exit code 2."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from exporter.cli import load_config
from exporter.config import resolve
from exporter.config.values import ListenAddress, parse_duration, parse_listen_address
from exporter.errors import ConfigError
from tests.support.process import ROOT


def test_defaults() -> None:
    """With nothing given, every documented default applies."""
    config = resolve({}, {}, {})
    assert config.libvirt.uri == "test:///default"
    assert config.libvirt.poll_interval_s == 15.0
    assert config.libvirt.poll_deadline_s == 15.0
    assert config.web.listen_addresses == (ListenAddress("", 9177),)
    assert config.web.telemetry_path == "/metrics"
    assert "block" in config.libvirt.collectors and "pool" in config.libvirt.collectors


def test_file_then_env_then_cli() -> None:
    """The command line beats the environment, which beats the file."""
    file_data = {"libvirt": {"uri": "qemu:///system", "poll_interval": 30, "keepalive_count": 4},
                 "web": {"listen_address": ["127.0.0.1:9100"]}}
    env = {"LIBVIRT_EXPORTER_LIBVIRT_POLL_INTERVAL": "20s", "LIBVIRT_EXPORTER_WEB_TELEMETRY_PATH": "/m"}
    cli = {"libvirt.poll_interval": "5s"}
    config = resolve(cli, env, file_data)
    assert config.libvirt.uri == "qemu:///system"  # file only
    assert config.libvirt.keepalive_count == 4
    assert config.web.telemetry_path == "/m"  # env only
    assert config.libvirt.poll_interval_s == 5.0  # cli wins over env and file
    assert config.web.listen_addresses == (ListenAddress("127.0.0.1", 9100),)
    assert resolve({}, env, file_data).libvirt.poll_interval_s == 20.0  # env wins over file


def test_collectors_and_filters() -> None:
    """Collector switches and the include/exclude filter resolve from every layer."""
    config = resolve({"collectors.block": False}, {"LIBVIRT_EXPORTER_COLLECTORS_POOL": "off"},
                     {"collectors": {"vcpu": False}, "domains": {"include": "web.*", "exclude": "web9"}})
    assert not {"block", "pool", "vcpu"} & config.libvirt.collectors
    assert "interface" in config.libvirt.collectors
    keep = config.libvirt.keep_domain
    assert keep("web1") and not keep("web9") and not keep("db1")


@pytest.mark.parametrize(
    ("raw", "seconds"), [(15, 15.0), ("15", 15.0), ("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), (0.25, 0.25)]
)
def test_durations(raw: object, seconds: float) -> None:
    """Durations accept plain seconds and ms/s/m/h suffixes."""
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(":9177", ListenAddress("", 9177)), ("127.0.0.1:1", ListenAddress("127.0.0.1", 1)),
     ("[::1]:9177", ListenAddress("::1", 9177)), ("localhost:80", ListenAddress("localhost", 80))],
)
def test_listen_addresses(raw: str, expected: ListenAddress) -> None:
    """IPv4, IPv6 in brackets, host names and the wildcard all parse."""
    assert parse_listen_address(raw) == expected


@pytest.mark.parametrize(
    ("layer", "key", "value", "fragment"),
    [
        ("file", "libvirt.poll_interval", "soon", "expected a duration"),
        ("file", "libvirt.poll_interval", -1, "greater than zero"),
        ("file", "libvirt.uri", "not a uri!", "neither a libvirt URI"),
        ("file", "libvirt.uri", 42, "expected a string"),
        ("file", "web.listen_address", "127.0.0.1:99999", "out of range"),
        ("file", "web.listen_address", "::1:9177", "brackets"),
        ("file", "libvirt.keepalive_count", "three", "whole number"),
        ("file", "collectors.block", "maybe", "true or false"),
        ("file", "domains.include", "web[", "regular expression"),
        ("file", "log.level", "loud", "expected one of"),
        ("file", "web.telemetry_path", "metrics", "absolute path"),
        ("env", "libvirt.poll_interval", "0", "greater than zero"),
        ("cli", "libvirt.poll_interval", "fast", "expected a duration"),
    ],
)
def test_bad_values_name_the_key(layer: str, key: str, value: object, fragment: str) -> None:
    """Each bad value is refused with the key, the reason and where it came from."""
    section, name = key.split(".")
    layers: dict[str, dict] = {"cli": {}, "env": {}, "file": {}}
    if layer == "file":
        layers["file"] = {section: {name: value}}
    elif layer == "env":
        layers["env"] = {f"LIBVIRT_EXPORTER_{section.upper()}_{name.upper()}": value}
    else:
        layers["cli"] = {key: value}
    with pytest.raises(ConfigError) as info:
        resolve(layers["cli"], layers["env"], layers["file"])
    assert info.value.key == key
    assert fragment in str(info.value)
    assert {"file": "config file", "env": "environment", "cli": "command line"}[layer] in str(info.value)


def test_unknown_keys_are_refused() -> None:
    """Typos in the file or the environment are errors, not silently ignored."""
    with pytest.raises(ConfigError, match=r"libvirt\.pol_interval: unknown key"):
        resolve({}, {}, {"libvirt": {"pol_interval": 5}})
    with pytest.raises(ConfigError, match="LIBVIRT_EXPORTER_LIBVIRT_URL: unknown environment variable"):
        resolve({}, {"LIBVIRT_EXPORTER_LIBVIRT_URL": "qemu:///system"}, {})


def test_cli_flags_map_to_settings(tmp_path) -> None:
    """Flags such as --libvirt.poll-interval and --no-collector.block reach the config."""
    path = tmp_path / "c.toml"
    path.write_text('[libvirt]\nuri = "qemu:///system"\npoll_interval = "30s"\n')
    command, config = load_config(
        ["dump", "--config.file", str(path), "--libvirt.poll-interval", "3s", "--no-collector.block",
         "--domain.exclude", "tmp-.*"], {}
    )
    assert command == "dump"
    assert config.libvirt.uri == "qemu:///system"
    assert config.libvirt.poll_interval_s == 3.0
    assert "block" not in config.libvirt.collectors
    assert not config.libvirt.keep_domain("tmp-1")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin", **(env or {})})


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--libvirt.poll-interval", "abc"], {}, "libvirt.poll_interval: expected a duration"),
        (["--web.listen-address", "nowhere"], {}, "web.listen_address: expected HOST:PORT"),
        ([], {"LIBVIRT_EXPORTER_LIBVIRT_URI": "::bad::"}, "libvirt.uri:"),
        (["--config.file", "/nonexistent/x.toml"], {}, "config.file: /nonexistent/x.toml: no such file"),
    ],
)
def test_cli_exit_code_2(args: list[str], env: dict[str, str], expected: str) -> None:
    """A bad setting stops the command at once: one line on stderr, exit 2."""
    result = _run(*args, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_toml(tmp_path) -> None:
    """A config file that is not TOML is reported with its path, exit 2."""
    path = tmp_path / "broken.toml"
    path.write_text("[libvirt\nuri=")
    result = _run("--config.file", str(path))
    assert result.returncode == 2
    assert f"{path}: not valid TOML" in result.stderr


def test_version_and_help() -> None:
    """--version prints the version; --help lists every setting with its variable."""
    assert _run("--version").stdout.startswith("libvirt-exporter 0.")
    text = _run("--help").stdout
    for flag in ("--libvirt.uri", "--web.listen-address", "--collector.block", "--no-collector.block",
                 "LIBVIRT_EXPORTER_LIBVIRT_POLL_INTERVAL", "--domain.include"):
        assert flag in text


@pytest.mark.parametrize(
    "uri",
    ["qemu:///system", "qemu+ssh://monitor@hv1.example.net/system", "qemu+tls://hv1/system?no_verify=1",
     "test:///default", "test+unix:///default?socket=/run/x.sock", "hv1", "lab-host.2"],
)
def test_uri_forms_accepted(uri: str) -> None:
    """Local, remote and uri_aliases names pass; libvirt resolves aliases itself."""
    assert resolve({"libvirt.uri": uri}, {}, {}).libvirt.uri == uri


def test_writing_v3_user_needs_privacy() -> None:
    """A v3 user allowed to write must use authPriv; a missing view is refused; no secret is echoed."""
    users = [{"name": "ops", "auth_key": "secret-auth-1", "write": True}]
    with pytest.raises(ConfigError, match=r"^snmp.users\[0\].write: is true but the user has no priv_key") as info:
        resolve({}, {}, {"snmp": {"users": users}})
    assert "secret-auth-1" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^snmp.communities\[0\].view: 'ops-only' is not a view") as info:
        resolve({}, {}, {"snmp": {"communities": [{"name": "very-secret", "view": "ops-only"}]}})
    assert "very-secret" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^snmp.users\[0\].auth_key: must have at least 8 characters"):
        resolve({}, {}, {"snmp": {"users": [{"name": "ops", "auth_key": "short"}]}})


def test_readme_lists_every_setting() -> None:
    """The README's configuration table names every setting, with its flag and variable where it has them."""
    from exporter.config import SETTINGS

    text = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    listed = " ".join(rows)
    for setting in SETTINGS:
        key = "collectors.NAME" if setting.key.startswith("collectors.") else setting.key
        assert f"`{key}`" in listed, key
        if not setting.file_only and not setting.key.startswith("collectors."):
            assert f"`{setting.cli}`" in listed or f"{setting.cli}`" in listed, setting.cli
            assert setting.env in listed or setting.env.rsplit("_", 1)[1] in listed, setting.env


def test_malloc_arenas_capped_unless_the_environment_says(monkeypatch) -> None:
    """glibc's per-thread arenas made RSS creep under concurrent scrapes (bench/LOAD.md): capped at start-up."""
    import platform

    from exporter.cli import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() == (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the operator's setting wins


def test_domain_timeout_defaults_and_bounds() -> None:
    """libvirt.domain_timeout: 5 s by default (half a short poll timeout), and a clear error when it is too short
    or not shorter than the poll timeout that bounds the whole poll."""
    assert resolve({}, {}, {}).libvirt.domain_deadline_s == 5.0
    assert resolve({}, {}, {"libvirt": {"poll_timeout": "4s"}}).libvirt.domain_deadline_s == 2.0
    assert resolve({}, {"LIBVIRT_EXPORTER_LIBVIRT_DOMAIN_TIMEOUT": "2s"}, {}).libvirt.domain_deadline_s == 2.0
    with pytest.raises(ConfigError, match=r"^libvirt.domain_timeout: must be shorter than the poll timeout \(15s\)"):
        resolve({}, {}, {"libvirt": {"domain_timeout": "15s"}})
    with pytest.raises(ConfigError, match=r"^libvirt.domain_timeout: must be at least 50ms"):
        resolve({}, {}, {"libvirt": {"domain_timeout": "10ms"}})


# -- issue 14, a new user's path -------------------------------------------------


@pytest.mark.parametrize(
    ("snmp", "key", "fragment"),
    [
        ({"communities": [{"name": "first-secret"}, {"name": "second-secret", "write": "maybe"}]},
         "snmp.communities[1].write", "expected true or false, got 'maybe'"),
        ({"communities": [{"name": "first-secret", "wirte": True}]}, "snmp.communities[0].wirte", "unknown key"),
        ({"communities": [{"name": "first-secret"}, {"name": "first-secret"}]}, "snmp.communities[1].name",
         "the same community as snmp.communities[0]"),
        ({"users": [{"name": "ops", "auth_key": "ops-auth-key", "priv_protocol": "DES"}]},
         "snmp.users[0].priv_protocol", "must be one of AES"),
        ({"notify": [{"address": "127.0.0.1:162", "community": "c"}, {"address": "127.0.0.1:162", "type": "x"}]},
         "snmp.notify[1].type", "must be trap or inform"),
        ({"notify": [{"address": "127.0.0.1:162", "version": "v3", "user": "t", "auth_key": "short"}]},
         "snmp.notify[0].auth_key", "at least 8 characters"),
        ({"views": {"mine": ["1.3.6.x"]}}, "snmp.views.mine", "not a numeric OID"),
    ],
)
def test_entry_errors_name_the_entry_and_key(snmp: dict, key: str, fragment: str, tmp_path) -> None:
    """Point 9: a bad value inside [[snmp.communities]] and the other lists of tables names its entry (counted
    from 0) and key, as the README says, and never echoes a community."""
    with pytest.raises(ConfigError) as info:
        resolve({}, {}, {"snmp": snmp})
    assert info.value.key == key and str(info.value).startswith(f"{key}: ") and fragment in str(info.value)
    assert "secret" not in str(info.value)
    text = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert "`snmp.communities[1].write`" in text
    if key == "snmp.communities[1].write":  # and so says the command, in one line
        path = tmp_path / "c.toml"
        path.write_text('[[snmp.communities]]\nname = "first-secret"\n[[snmp.communities]]\n'
                        'name = "second-secret"\nwrite = "maybe"\n')
        path.chmod(0o600)
        result = _run("--config.file", str(path))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"libvirt-exporter: configuration error: snmp.communities[1].write: expected true or false, got 'maybe' "
            f"(from config file {path})"], result.stderr


def test_relative_paths_are_taken_from_the_working_directory(tmp_path, monkeypatch) -> None:
    """Point 7: --config.file, --state.directory and --web.config.file may all be relative, from the working
    directory at start-up; --help and the README say so."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[state]\ndirectory = "from-file"\n')
    (tmp_path / "web.yml").write_text("")
    _, config = load_config(["--config.file", "c.toml", "--web.config.file", "web.yml"], {})
    assert config.config_file == str(tmp_path / "c.toml")
    assert config.state_directory == str(tmp_path / "from-file")
    assert config.web.config_file == str(tmp_path / "web.yml")
    _, config = load_config([], {"LIBVIRT_EXPORTER_CONFIG_FILE": "c.toml",
                                 "LIBVIRT_EXPORTER_STATE_DIRECTORY": "sub/state"})
    assert config.config_file == str(tmp_path / "c.toml")
    assert config.state_directory == str(tmp_path / "sub" / "state")
    with pytest.raises(ConfigError, match=r"^state\.directory: must not be /"):
        resolve({"state.directory": "/"}, {}, {})
    with pytest.raises(ConfigError, match=r"^web\.telemetry_path: must be an absolute path"):
        resolve({"web.telemetry_path": "metrics"}, {}, {})  # an HTTP path, not a file
    help_text = " ".join(_run("--help").stdout.split("options:", 1)[1].split())  # past the usage line
    for flag in ("--config.file PATH", "--web.config.file VALUE", "--state.directory VALUE"):
        after = help_text.split(flag, 1)[1].split(" --", 1)[0]
        assert "relative path is taken from the working directory" in after, (flag, after)
    text = " ".join((ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0].split())
    assert "may be relative: they are taken from the working directory at start-up" in text


@pytest.mark.parametrize("below", [False, True])
def test_state_directory_that_is_a_file_stops_start_up(tmp_path, below: bool) -> None:
    """Point 8: a state directory that is a file (or below one) is refused with the other settings: one line
    naming state.directory, exit 2, and nothing listens."""
    from tests.support.process import free_port
    from tests.support.snmp import agent_config, free_udp_port

    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    state = blocker / "sub" if below else blocker
    config = agent_config(tmp_path / "c.toml", state, f"127.0.0.1:{free_udp_port()}")
    web = f"127.0.0.1:{free_port()}"
    result = _run("--config.file", str(config), "--libvirt.uri", f"test://{ROOT}/examples/demo-host.xml",
                  "--web.listen-address", web)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("libvirt-exporter: configuration error: state.directory: "), lines
    assert str(blocker) in lines[0] and "not a directory" in lines[0]
    assert blocker.read_text() == "not a directory"


def test_dump_warns_about_the_test_driver_as_serve_does(caplog: pytest.LogCaptureFixture) -> None:
    """Point 6: `dump` with no URI prints the test driver's made-up domain, and says so with serve's warning."""
    from exporter.cli import warn_if_test_driver

    result = _run("dump")
    assert result.returncode == 0
    assert "libvirt_domain_info{" in result.stdout and 'domain="test"' in result.stdout
    with caplog.at_level(logging.WARNING, logger="exporter.cli"):
        warn_if_test_driver(resolve({}, {}, {}))  # what serve logs at start-up
    (record,) = caplog.records
    assert f"WARNING exporter.cli: {record.getMessage()}" in result.stderr.splitlines(), result.stderr


def test_dump_with_a_bogus_uri_says_what_is_wrong() -> None:
    """Point 11: a URI that is neither a URI nor an alias gets our own line, libvirt's words last."""
    result = _run("dump", "--libvirt.uri", "bogus")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("libvirt-exporter: cannot connect to libvirt at bogus: 'bogus' is not a libvirt URI "
                               "(like qemu:///system) and no uri_aliases entry in libvirt.conf has that name"), lines
    assert "does not include a driver name" not in result.stderr  # libvirt's two messages run together


def test_every_setting_has_a_place_in_its_section() -> None:
    """Each declared setting lands on an attribute of Config or of its section (a typo fails here, not in use)."""
    import dataclasses

    from exporter.config import SETTINGS, Config

    config = Config()
    for setting in SETTINGS:
        if setting.key.startswith("collectors."):
            assert not setting.field
            continue
        section, _, attr = setting.field.rpartition(".")
        holder = getattr(config, section) if section else config
        assert attr in {f.name for f in dataclasses.fields(holder)}, (setting.key, setting.field)
