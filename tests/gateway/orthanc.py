"""A real Orthanc (Debian's ``orthanc`` package) for the gateway tests: started with its own config, stopped by PID.

It is installed when missing and when we may (root with apt-get), with an ``exit 101``
``/usr/sbin/policy-rc.d`` during the install so the package does not start its system service
(one already there is left as it is). Otherwise the tests that need it skip, saying how to install it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

logger = logging.getLogger(__name__)

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
POLICY_RC = Path("/usr/sbin/policy-rc.d")
ORTHANC_AET = "ORTHANC"


def free_port() -> int:
    """A TCP port free on every interface now (Orthanc listens on all of them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def apt_install(*packages: str) -> str | None:
    """Install Debian packages without starting services; None on success, else why not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"needs the Debian packages {' '.join(packages)}: apt-get install {' '.join(packages)} (see scripts/setup.sh)"
    placed = not POLICY_RC.exists()
    if placed:
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages], env=env, capture_output=True, text=True, timeout=900, check=False
        )
        if result.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=900, check=False)
            result = subprocess.run(
                ["apt-get", "install", "-y", "-qq", *packages], env=env, capture_output=True, text=True, timeout=900, check=False
            )
    finally:
        if placed:
            POLICY_RC.unlink(missing_ok=True)
    return None if result.returncode == 0 else f"apt-get install {' '.join(packages)} failed: {result.stderr.strip()[-300:]}"


def require_orthanc(dicomweb: bool = False) -> None:
    missing = [
        p for p, ok in (("orthanc", Path(ORTHANC).exists()), ("orthanc-dicomweb", not dicomweb or DICOMWEB_PLUGIN.exists())) if not ok
    ]
    if missing:
        problem = apt_install(*missing)
        if problem:
            pytest.skip(problem)


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

    def add_modality(self, name: str, aet: str, port: int) -> None:
        self.request("PUT", f"/modalities/{name}", {"AET": aet, "Host": "127.0.0.1", "Port": port})

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


def start_orthanc(folder: Path, modalities: dict[str, tuple[str, int]] | None = None, dicomweb: bool = False) -> Orthanc:
    """Start Orthanc with storage, index and config in ``folder``, on free loopback ports; wait until it answers."""
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
