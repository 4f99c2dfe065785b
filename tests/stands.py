"""Test stands with real parts for remote charts: a real OCI registry (Debian's `docker-registry`)
on 127.0.0.1 that charts are pushed to with the real `helm push`, and a Helm chart repository served
over HTTPS on 127.0.0.1 with a self-signed certificate made here.  prbot reaches both only as an
operator's stand-ins (PRBOT_REMOTE_STANDINS, PRBOT_REMOTE_CA)."""

from __future__ import annotations

import datetime
import functools
import http.server
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prbot.tools import find_tool

REGISTRY_BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OciRegistry:
    """A running `docker-registry serve` on 127.0.0.1:PORT, storage in a temporary directory."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("docker-registry") or REGISTRY_BINARY
        if not os.access(binary, os.X_OK):
            raise RuntimeError("docker-registry is not installed (Debian package docker-registry; "
                               ".ci/run installs it): the OCI chart tests need a real registry")
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = root / "registry.log"
        config = root / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
                          f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                          f"http:\n  addr: {self.host}\n")
        self._log = open(self.log, "wb")                      # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        self.helm_home = root / "helm-home"
        self.helm_home.mkdir()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def push(self, archive: Path, namespace: str) -> str:
        """`helm push ARCHIVE oci://127.0.0.1:PORT/NAMESPACE --plain-http`: the manifest digest."""
        home = str(self.helm_home)
        env = {"PATH": os.environ["PATH"], "HOME": home, "HELM_CACHE_HOME": f"{home}/cache",
               "HELM_CONFIG_HOME": f"{home}/config", "HELM_DATA_HOME": f"{home}/data"}
        done = subprocess.run([find_tool("helm"), "push", str(archive), f"oci://{self.host}/{namespace}",
                               "--plain-http"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        digest = re.search(r"Digest: (sha256:[0-9a-f]{64})", done.stdout + done.stderr)
        assert digest is not None, done.stdout + done.stderr
        return digest[1]

    def requests(self, pattern: str) -> list[str]:
        """The access-log lines of prbot's requests (its User-Agent) whose "METHOD PATH" matches
        `pattern` (a regex) — `helm push` asks for manifests too."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if re.search(r'"(GET|HEAD|PUT|POST|PATCH) ', line)
                and line.endswith('"prbot"') and re.search(pattern, line)]


def make_chart(where: Path, name: str, version: str, greeting: str) -> Path:
    """A chart NAME-VERSION packaged with the real `helm package`: the .tgz path."""
    src = where / f"src-{name}-{version}" / name
    (src / "templates").mkdir(parents=True)
    (src / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    (src / "values.yaml").write_text(f"greeting: {greeting}\n")
    (src / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-chart\n"
        "data:\n  greeting: {{ .Values.greeting }}\n  version: {{ .Chart.Version | quote }}\n")
    out = where / "packaged"
    out.mkdir(exist_ok=True)
    done = subprocess.run([find_tool("helm"), "package", str(src), "--destination", str(out)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": str(where)})
    assert done.returncode == 0, done.stderr
    return out / f"{name}-{version}.tgz"


@contextmanager
def oci_registry() -> Iterator[OciRegistry]:
    root = Path(tempfile.mkdtemp(prefix="prbot-oci-registry-"))
    registry = OciRegistry(root)
    try:
        yield registry
    finally:
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# An HTTPS chart repository with a self-signed certificate
# --------------------------------------------------------------------------------------------

def self_signed(where: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, made with `cryptography`: (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prbot test chart repository")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = where / "repo-ca.pem", where / "repo-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def https_chart_repository(served: Path, cert: Path, key: str | Path) -> Iterator[tuple[str, list[str]]]:
    """Serve `served` over HTTPS on 127.0.0.1: (`https://127.0.0.1:PORT`, the paths asked for)."""
    hits: list[str] = []
    handler = type("Handler", (_Quiet,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def helm_repository(served: Path, archives: list[Path]) -> None:
    """`served/charts/`: the archives and the index the real `helm repo index` writes for them."""
    charts = served / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        shutil.copyfile(archive, charts / archive.name)
    done = subprocess.run([find_tool("helm"), "repo", "index", str(charts)], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"], "HOME": str(served.parent)})
    assert done.returncode == 0, done.stderr
