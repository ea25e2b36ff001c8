"""A real Orthanc (Debian's ``orthanc`` package, ``orthanc-dicomweb`` for DICOMweb): started with its own config, stopped by PID.

It is not installed here: ``missing_orthanc`` says which packages are absent and which set-up command
installs them (scripts/setup.sh keeps the package's system service from starting on install).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from testkit import missing_packages

logger = logging.getLogger(__name__)

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AET = "ORTHANC"


def free_port() -> int:
    """A TCP port free on every interface now (Orthanc listens on all of them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def missing_orthanc(dicomweb: bool = False) -> str | None:
    """Why Orthanc (with its DICOMweb plugin when asked) cannot start here, or None when it can."""
    missing = [
        package
        for package, present in (("orthanc", Path(ORTHANC).exists()), ("orthanc-dicomweb", not dicomweb or DICOMWEB_PLUGIN.exists()))
        if not present
    ]
    return missing_packages("A real Orthanc", missing) if missing else None


@dataclass
class Orthanc:
    process: subprocess.Popen
    http_port: int
    dicom_port: int
    aet: str
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(self, method: str, path: str, body: bytes | dict | list | None = None, timeout_s: float = 300) -> object:
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
        kind = response.headers.get("Content-Type", "")
        return json.loads(payload) if "json" in kind else payload

    def upload(self, files: list[Path]) -> list[dict]:
        return [self.request("POST", "/instances", Path(f).read_bytes()) for f in files]

    def add_modality(self, name: str, aet: str, port: int, use_tls: bool = False) -> None:
        """``use_tls``: Orthanc's C-STOREs to it go over DICOM TLS (with the ``dicom_tls_settings`` certificate)."""
        self.request("PUT", f"/modalities/{name}", {"AET": aet, "Host": "127.0.0.1", "Port": port, "UseDicomTls": use_tls})

    def store_to(self, modality: str, resource_ids: list[str]) -> dict:
        """Orthanc sends the resources to the modality by C-STORE (as a PACS user's "send to" does)."""
        return self.request("POST", f"/modalities/{modality}/store", {"Resources": resource_ids, "Synchronous": True})

    def find(self, level: str, query: dict[str, str]) -> list[str]:
        return self.request("POST", "/tools/find", {"Level": level, "Query": query})

    def series_instances(self, series_id: str) -> list[str]:
        return self.request("GET", f"/series/{series_id}")["Instances"]

    def instance_file(self, instance_id: str) -> bytes:
        return self.request("GET", f"/instances/{instance_id}/file")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def dicom_tls_settings(certificate: Path, private_key: Path, trusted: Path, remote_certificate_required: bool = True) -> dict:
    """``start_orthanc`` settings for DICOM TLS (Orthanc 1.9+): its DICOM port takes TLS only, with this certificate (also
    presented as a client), trusting the certificates or CAs in ``trusted``; a peer without a certificate is refused
    unless ``remote_certificate_required`` is false."""
    return {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(certificate),
        "DicomTlsPrivateKey": str(private_key),
        "DicomTlsTrustedCertificates": str(trusted),
        "DicomTlsRemoteCertificateRequired": remote_certificate_required,
    }


def start_orthanc(
    folder: Path, modalities: dict[str, tuple[str, int]] | None = None, dicomweb: bool = False, settings: dict | None = None
) -> Orthanc:
    """Start Orthanc with storage, index and config in ``folder``, on free loopback ports; wait until it answers.
    ``settings`` adds or replaces configuration keys (e.g. ``LuaScripts``)."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "gateway-tests",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": {name: [aet, "127.0.0.1", port] for name, (aet, port) in (modalities or {}).items()},
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "SaveJobs": False,
        "StableAge": 3600,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
        "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
        **(settings or {}),
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    orthanc = Orthanc(process, http_port, dicom_port, ORTHANC_AET, folder)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            orthanc.request("GET", "/system", timeout_s=2)
            return orthanc
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    orthanc.stop()
    raise RuntimeError(f"Orthanc did not answer on port {http_port} within 30 s")
