"""HTTP security: TLS and basic auth from an exporter-toolkit web config, tried with curl and a real Prometheus;
the config file holding SNMP secrets must not be readable by others."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import DEMO_HOST, ROOT, require_tool
from tests.support.process import Exporter, free_port
from tests.support.prometheus import Prometheus

USER, PASSWORD = "prometheus", "scrape-secret"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libvirt-exporter test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, usage, serial in (("server", ExtendedKeyUsageOID.SERVER_AUTH, 2),
                                ("client", ExtendedKeyUsageOID.CLIENT_AUTH, 3)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, folder / f"{name}.key")
    return folder


def _web_config(folder: Path, pki: Path, extra_tls: str = "", users: bool = True) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()
    hashed = "$2y$" + hashed[4:]  # as htpasswd -B writes it
    text = (f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n{extra_tls}"
            + (f"basic_auth_users:\n  {USER}: '{hashed}'\n" if users else ""))
    path = folder / "web.yml"
    path.write_text(text)
    return path


def _curl(url: str, *args: str) -> str:
    """The HTTP status curl got, or 'error N' if the connection failed."""
    result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", *args, url],
                            capture_output=True, text=True, timeout=30)
    return result.stdout if result.returncode == 0 else f"error {result.returncode}"


def _start(web_config: Path, log: Path) -> Exporter:
    exp = Exporter(["--libvirt.uri", f"test://{DEMO_HOST}", "--web.config.file", str(web_config)], log=log)
    try:
        exp.wait_output("serving metrics on https")
    except AssertionError:
        exp.stop()
        raise
    return exp


def test_tls_and_basic_auth_with_curl(pki: Path, tmp_path: Path) -> None:
    require_tool("curl", "curl")
    exp = _start(_web_config(tmp_path, pki), tmp_path / "log")
    try:
        url = f"https://127.0.0.1:{exp.port}/metrics"
        cacert = ("--cacert", str(pki / "ca.crt"))
        assert _curl(url, *cacert, "-u", f"{USER}:{PASSWORD}") == "200"
        assert _curl(url, *cacert, "-u", f"{USER}:{PASSWORD}", "--compressed") == "200"
        assert _curl(url, *cacert) == "401"  # no credentials
        assert _curl(url, *cacert, "-u", f"{USER}:wrong") == "401"
        assert _curl(url, *cacert, "-u", f"nobody:{PASSWORD}") == "401"
        assert _curl(f"https://127.0.0.1:{exp.port}/healthz", *cacert) == "401"  # every path is protected
        assert _curl(url, "-u", f"{USER}:{PASSWORD}").startswith("error")  # an unknown CA is not trusted
        assert _curl(f"http://127.0.0.1:{exp.port}/metrics", "-u", f"{USER}:{PASSWORD}") in ("400", "error 52",
                                                                                                "error 56")
        body = subprocess.run(["curl", "-sS", "--compressed", *cacert, "-u", f"{USER}:{PASSWORD}", url],
                              capture_output=True, text=True, timeout=30, check=True).stdout
        assert "libvirt_up 1" in body and body.rstrip().endswith(tuple("0123456789"))
        assert exp.proc.poll() is None
    finally:
        exp.stop()
    assert "Traceback" not in exp.output()


def test_status_page_and_mibs_over_tls_need_the_credentials(pki: Path, tmp_path: Path) -> None:
    require_tool("curl", "curl")
    exp = _start(_web_config(tmp_path, pki), tmp_path / "log")
    try:
        base, cacert = f"https://127.0.0.1:{exp.port}", ("--cacert", str(pki / "ca.crt"))
        for path in ("/", "/mibs/LIBVIRT-EXPORTER-MIB.txt"):
            assert _curl(base + path, *cacert) == "401", path
            assert _curl(base + path, *cacert, "-u", f"{USER}:wrong") == "401", path
            assert _curl(base + path, *cacert, "-u", f"{USER}:{PASSWORD}") == "200", path
        page = subprocess.run(["curl", "-sS", "--compressed", *cacert, "-u", f"{USER}:{PASSWORD}", base + "/"],
                              capture_output=True, text=True, timeout=30, check=True).stdout
        assert "Connected" in page and 'href="/mibs/LIBVIRT-EXPORTER-MIB.txt"' in page
        assert PASSWORD not in page
    finally:
        exp.stop()


def test_client_certificates_when_required(pki: Path, tmp_path: Path) -> None:
    require_tool("curl", "curl")
    extra = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki}/ca.crt\n  min_version: TLS13\n"
    exp = _start(_web_config(tmp_path, pki, extra, users=False), tmp_path / "log")
    try:
        url = f"https://127.0.0.1:{exp.port}/metrics"
        cacert = ("--cacert", str(pki / "ca.crt"))
        assert _curl(url, *cacert, "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key")) == "200"
        assert _curl(url, *cacert).startswith("error")  # no client certificate
        assert _curl(url, *cacert, "--cert", str(pki / "server.crt"), "--key", str(pki / "server.key"),
                     "--tls-max", "1.2").startswith("error")  # below min_version
        assert exp.proc.poll() is None
    finally:
        exp.stop()


def test_prometheus_scrapes_over_tls_with_basic_auth(pki: Path, tmp_path: Path) -> None:
    require_tool("prometheus", "prometheus")
    exp = _start(_web_config(tmp_path, pki), tmp_path / "log")
    scrape = f"""
  - job_name: libvirt
    scheme: https
    tls_config:
      ca_file: {pki}/ca.crt
    basic_auth:
      username: {USER}
      password: {PASSWORD}
    static_configs:
      - targets: ["127.0.0.1:{exp.port}"]
  - job_name: libvirt-no-password
    scheme: https
    tls_config:
      ca_file: {pki}/ca.crt
    static_configs:
      - targets: ["127.0.0.1:{exp.port}"]
"""
    try:
        with Prometheus(tmp_path / "prometheus", scrape) as prom:
            up = prom.wait_for('up{job="libvirt"} == 1')
            assert up and prom.wait_for('libvirt_domains_number{job="libvirt"} == 6')
            refused = prom.wait_for('up{job="libvirt-no-password"} == 0')
            assert refused
            targets = prom.api("targets")["activeTargets"]
            errors = {t["labels"]["job"]: t["lastError"] for t in targets}
            assert errors["libvirt"] == "" and "401" in errors["libvirt-no-password"]
    finally:
        exp.stop()


@pytest.mark.parametrize(("text", "message"), [
    ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n", "cannot load cert_file"),
    ("basic_auth_users:\n  alice: plaintext\n", "not a bcrypt hash"),
    ("tls_server_config:\n  cert_file: a\n", "needs both cert_file and key_file"),
    ("http_server_config:\n  http2: true\n", "unsupported key(s): http_server_config"),
    ("basic_auth_users: [\n", "not valid YAML"),
])
def test_web_config_errors_stop_start_up(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", str(path)],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert "web.config_file" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_with_secrets_must_not_be_world_readable(tmp_path: Path) -> None:
    """A config file holding SNMP communities or keys that others may read is refused (exit 2)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[state]\ndirectory = "{tmp_path}/state"\n[snmp]\nlisten_address = ["127.0.0.1:{free_port()}"]\n'
                   '[[snmp.communities]]\nname = "secret-community"\n')
    cfg.chmod(0o644)
    args = ["--config.file", str(cfg), "--libvirt.uri", f"test://{DEMO_HOST}"]
    refused = subprocess.run([sys.executable, "-m", "exporter", *args, "--web.listen-address",
                              f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert refused.returncode == 2
    assert "holds secrets (snmp.communities)" in refused.stderr and "mode 0644" in refused.stderr, refused.stderr
    assert "secret-community" not in refused.stderr
    cfg.chmod(0o640)  # readable by a group (the service's) is fine
    with Exporter(args, log=tmp_path / "log") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="libvirt_up 1")
    plain = tmp_path / "plain.toml"  # no secrets: any mode
    plain.write_text('[libvirt]\npoll_interval = "5s"\n')
    plain.chmod(0o644)
    with Exporter(["--config.file", str(plain), "--libvirt.uri", f"test://{DEMO_HOST}"], log=tmp_path / "log2") as exp:
        exp.wait_for(lambda m: m.get("libvirt_up") == 1, what="libvirt_up 1")
