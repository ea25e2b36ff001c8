"""The gateway as its users run it, ``python -m gateway serve|receive|worker --config CONFIG``, in a subprocess; small SCU helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import yaml
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from gateway.sender import SenderAE

REPO_ROOT = Path(__file__).resolve().parents[1]
SCU_AET = "TEST_SCU"
GATEWAY_AET = "GATEWAY"


def write_config(folder: Path, port: int, routes: list[dict], destinations: list[dict] | None = None, **settings: object) -> Path:
    config = {
        "ae_title": GATEWAY_AET,
        "host": "127.0.0.1",
        "port": port,
        "allowed_calling_aets": [SCU_AET, "ORTHANC"],
        "storage_dir": str(folder / "gateway-data"),
        "quiet_period_s": 1,
        "retry_delay_s": 0.5,
        # the test machine's disk use is not the tests' to assume (CI's disk was 76.6 % used, above the default 75 %):
        # no watermark unless a test sets one
        "storage_watermark_percent": 100,
        "routes": routes,
        "destinations": destinations or [],
        **settings,
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def echo(port: int, calling_aet: str = SCU_AET, tls_args: tuple[ssl.SSLContext, str] | None = None) -> int | None:
    """C-ECHO status, or None when no association (refused, rejected or nobody listening); over TLS with ``tls_args``."""
    ae = SenderAE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AET, tls_args=tls_args)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return getattr(status, "Status", None)


def store(
    port: int, items: list[Dataset | Path], calling_aet: str = SCU_AET, tls_args: tuple[ssl.SSLContext, str] | None = None
) -> list[int | None]:
    """C-STORE each item over one association (a Path is sent as its raw file bytes); the statuses (None: no answer)."""
    ae = SenderAE(ae_title=calling_aet)
    for sop_class in (CTImageStorage, MRImageStorage):
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):  # one context each: an SCP accepts one syntax per context
            ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AET, tls_args=tls_args)
    assert assoc.is_established, f"no association with the gateway on port {port}"
    statuses = []
    try:
        for item in items:
            if not assoc.is_established:  # aborted (the receiver died): the rest go unacknowledged, for the sender to resend
                statuses.append(None)
                continue
            status = assoc.send_c_store(item)
            statuses.append(getattr(status, "Status", None))
    finally:
        assoc.release()
    return statuses


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback port (checked before C-ECHO, to keep pynetdicom quiet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class GatewayProcess:
    """One gateway process in a role: ``serve`` and ``receive`` are ready once they answer C-ECHO on ``port``; a
    ``worker`` listens on no port and is returned as soon as it is started."""

    def __init__(
        self,
        config: Path,
        port: int,
        log: Path,
        role: Literal["serve", "receive", "worker"] = "serve",
        tls_args: tuple[ssl.SSLContext, str] | None = None,  # the readiness C-ECHO over DICOM TLS
    ) -> None:
        self.config, self.port, self.log, self.role, self.tls_args = config, port, log, role, tls_args
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30) -> GatewayProcess:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", self.role, "--config", str(self.config)],
            cwd=REPO_ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN"},
        )
        if self.role == "worker":
            return self
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            if port_open(self.port) and echo(self.port, tls_args=self.tls_args) == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"gateway did not answer C-ECHO within {timeout_s} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def jobs(self) -> list[dict]:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "jobs", "--json", "--config", str(self.config)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [json.loads(line) for line in result.stdout.splitlines()]

    def wait_for_jobs(self, states: set[str], count: int = 1, timeout_s: float = 120) -> list[dict]:
        """Poll ``gateway jobs`` until ``count`` jobs are in ``states`` (all of them finished), or fail with the log."""
        deadline = time.monotonic() + timeout_s
        jobs: list[dict] = []
        while time.monotonic() < deadline:
            jobs = self.jobs()
            if len([j for j in jobs if j["state"] in states]) >= count:
                return jobs
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"jobs did not reach {states}: {jobs}\n{self.log_text()[-4000:]}")
