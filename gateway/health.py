"""The gateway's upkeep beside its DICOM work: the disk watermark, the metrics, the retention cleaner, and an HTTP
endpoint (``http_host``:``http_port``, off unless ``http_port`` is configured) with

- ``GET /healthz``: 200 and ``{"status": "ok", "checks": {...}}`` when the SCP, the dispatcher and every worker are
  alive and the storage folder is writable and below its watermark; otherwise 503 with ``"status": "unhealthy"``
  and each failing check's reason in ``checks`` (e.g. ``"worker-0": "not running"``).
- ``GET /metrics``: the Prometheus text format (``gateway.metrics``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST

from gateway.config import GatewayConfig
from gateway.jobs import STATES
from gateway.metrics import GatewayMetrics, jobs_by_state
from gateway.queue import JobQueue
from gateway.reception import ReceivedInstance
from gateway.resources import DiskUsage, StorageWatermark, disk_usage
from gateway.retention import RetentionLoop

logger = logging.getLogger(__name__)

OK = "ok"


def health_report(checks: Mapping[str, str | None]) -> tuple[int, dict]:
    """The HTTP status and JSON body of ``/healthz`` from each check's problem (None: fine)."""
    failing = sorted(name for name, problem in checks.items() if problem)
    body = {"status": "unhealthy" if failing else OK, "checks": {name: problem or OK for name, problem in checks.items()}}
    if failing:
        body["failing"] = failing
    return (HTTPStatus.SERVICE_UNAVAILABLE if failing else HTTPStatus.OK), body


def storage_write_problem(folder: Path) -> str | None:
    """Why a file cannot be written (and synced) in ``folder`` now, or None."""
    try:
        fd, name = tempfile.mkstemp(prefix=".healthz-", dir=folder)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as error:
        return f"{folder} is not writable: {error.strerror or error}"
    return None


def thread_problem(thread: threading.Thread | None) -> str | None:
    return None if thread is not None and thread.is_alive() else "not running"


def scp_problem(server: object | None) -> str | None:
    """Whether the pynetdicom server still listens and its accepting thread still runs."""
    socket = getattr(server, "socket", None)
    if server is None or socket is None or socket.fileno() == -1:
        return "not listening"
    serving = [t for t in threading.enumerate() if t.name.startswith("AcceptorServer@") and t.is_alive()]
    return None if serving else "its accepting thread is not running"


class _Handler(BaseHTTPRequestHandler):
    monitor: Monitor  # set on the subclass each server gets

    def do_GET(self) -> None:  # the name http.server calls
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            status, body = health_report(self.monitor.checks())
            self._reply(status, "application/json", json.dumps(body).encode())
        elif path == "/metrics":
            self._reply(HTTPStatus.OK, CONTENT_TYPE_LATEST, self.monitor.metrics.exposition())
        else:
            self._reply(HTTPStatus.NOT_FOUND, "text/plain", b"not found: try /healthz or /metrics\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("HTTP %s: " + format, self.client_address[0], *args)


class Monitor:
    """Watermark, metrics, retention and the HTTP endpoint of one gateway process (``serve``, or a cluster role)."""

    def __init__(self, config: GatewayConfig, queue: JobQueue) -> None:
        self.config = config
        self.queue = queue
        self.watermark = StorageWatermark(config.storage_dir, config.storage_watermark_percent, config.storage_min_free_bytes)
        self.metrics = GatewayMetrics(self._job_states, self._usage)
        self._scp: object | None = None
        self._threads: Sequence[threading.Thread] = ()
        self._listens = True
        self._http: ThreadingHTTPServer | None = None
        self._retention = RetentionLoop(config, queue) if config.retention is not None else None

    # --- hooks the service calls -------------------------------------------------------------------
    def storage_refused(self) -> str | None:
        """The watermark's reason to refuse storage now (counted), or None: the SCP's ``storage_refused``."""
        problem = self.watermark.problem()
        if problem:
            self.metrics.refused.inc()
        return problem

    def instance_stored(self, instance: ReceivedInstance) -> None:
        self.metrics.instances_received.labels(calling_aet=instance.calling_aet).inc()

    def app_ran(self, route: str, seconds: float, error: str | None) -> None:
        self.metrics.app_ran(route, seconds, error)

    def export_failed(self, destination: str, count: int = 1) -> None:
        self.metrics.export_failures.labels(destination=destination).inc(count)

    # --- life cycle --------------------------------------------------------------------------------
    def start(self, scp: object | None, threads: Sequence[threading.Thread], listens: bool = True) -> None:
        """Watch ``scp`` (unless this process ``listens`` for no associations: a cluster worker) and ``threads``."""
        self._scp, self._threads, self._listens = scp, threads, listens
        if self._retention is not None:
            self._retention.start()
        if self.config.http_port is None:
            return
        handler = type("Handler", (_Handler,), {"monitor": self})
        self._http = ThreadingHTTPServer((self.config.http_host, self.config.http_port), handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="http", daemon=True).start()
        logger.info("Health and metrics on http://%s:%d/healthz and /metrics", self.config.http_host, self.config.http_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._retention is not None:
            self._retention.stop()

    # --- what /healthz and /metrics read -----------------------------------------------------------
    def checks(self) -> dict[str, str | None]:
        checks: dict[str, str | None] = {"scp": scp_problem(self._scp)} if self._listens else {}
        checks |= {thread.name: thread_problem(thread) for thread in self._threads}
        checks["storage"] = storage_write_problem(self.config.storage_dir) or self.watermark.problem()
        return checks

    def _job_states(self) -> dict[str, int]:
        return jobs_by_state((job.state for job in self.queue.jobs()), STATES)

    def _usage(self) -> DiskUsage | None:
        try:
            return disk_usage(self.config.storage_dir)
        except OSError:
            return None
