"""The running gateway: the SCP, a dispatcher turning quiet groups into jobs, and workers running them.

Start-up first makes the database agree with the disk: temporary files of interrupted writes are
deleted, associations still open are marked ``killed`` (the gateway died before their release),
stored files the database does not know (a crash between rename and commit) are recorded as from a
killed association, and jobs a crash left running are queued again. Quiet periods count from the
later of a group's last instance and this start (``gateway.grouping``). ``stop()`` (SIGTERM) stops accepting associations,
stops a running app (its attempt does not count; it runs again after restart) and returns.

Roles (the cluster mode, ``queue: postgresql://...``): ``receive`` (the SCP and the dispatcher), ``work`` (a procrastinate
worker running jobs, ``gateway.cluster``), or both (``serve``); any number of each on any number of hosts. There the
start-up recovery leaves what live processes are doing alone: only temporary and unrecorded files older than ``lease_s``
are a crash's leftovers, and jobs and associations are recovered by their expired leases (``Cluster.sweep``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydicom import dcmread

from gateway.config import GatewayConfig, Route
from gateway.grouping import group_key, ready_groups
from gateway.health import Monitor
from gateway.postgres import open_queue
from gateway.queue import FAILED, RUNNING, Holder, Job, JobQueue, LeaseLost, Supersession, supersession
from gateway.reception import ReceivedInstance
from gateway.routing import choose_route, describe, routing_attributes
from gateway.runner import build_command, build_env, dicom_output, dicom_outputs, job_paths, output_set_problem, prepare_input, run_app
from gateway.scp import start_scp
from gateway.sender import send_files
from gateway.storage import remove_temp_files, stored_files, written_before
from gateway.validation import UNDECODABLE, uid_problems

logger = logging.getLogger(__name__)

ALWAYS_DESCRIBED = ("Modality", "SOPClassUID")
Role = Literal["receive", "work"]
ROLES: dict[str, tuple[Role, ...]] = {"serve": ("receive", "work"), "receive": ("receive",), "worker": ("work",)}


def job_log(job_dir: Path, message: str) -> None:
    """Append a timestamped line to the job's own log (``jobs/<id>/job.log``), besides the gateway log."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with (job_dir / "job.log").open("a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")


def register_orphan_files(config: GatewayConfig, queue: JobQueue, older_than: float | None = None) -> int:
    """Record stored files the database does not know (written, but the gateway died before recording them): their
    association never got to its release, so they are recorded as from a killed one. ``older_than`` (seconds since the
    epoch): only files last written before it (another receiver records a file it has just renamed)."""
    known = queue.known_paths()
    added = 0
    killed: int | None = None
    for path in stored_files(config.incoming_dir):
        if str(path) in known or (older_than is not None and not written_before(path, older_than)):
            continue
        try:
            ds = dcmread(path, stop_before_pixels=True)
            if bad := uid_problems(ds):  # its UIDs would name the job's input folders
                logger.error("Stored file %s is not recorded: %s; left in place", path, "; ".join(f"{k}: {v}" for k, v in bad.items()))
                continue
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            if killed is None:
                killed = queue.association_started("(recovered)", "(unknown)")
                queue.association_ended(killed, "killed")
            queue.record_instance(
                ReceivedInstance(
                    str(ds.SOPInstanceUID),
                    str(ds.SOPClassUID),
                    study,
                    series,
                    group_key(config.grouping, study, series),
                    path,
                    "(recovered)",
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    killed,
                )
            )
            added += 1
        except UNDECODABLE as error:
            logger.error("Stored file %s is not readable (%s); left in place", path, error)
    return added


class Gateway:
    def __init__(self, config: GatewayConfig, roles: tuple[Role, ...] = ROLES["serve"]) -> None:
        self.config = config
        self.roles = roles
        self.queue = open_queue(config)
        self.cluster = None  # gateway.cluster.Cluster in the cluster mode, once started
        self._running: dict[int, tuple[str, threading.Event, float]] = {}  # cluster jobs: owner, their stop, claimed at
        self._stop = threading.Event()
        self._busy: set[int] = set()
        self._busy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._routes = {route.name: route for route in config.routes}
        self._keywords = sorted({*ALWAYS_DESCRIBED, *(k for route in config.routes for k in route.match)})
        self.up_since = 0.0  # when start() ran: no quiet period counts time before it
        self.monitor = Monitor(config, self.queue)  # disk watermark, metrics, retention, /healthz (gateway.health)

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.config.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.config.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.up_since = time.time()
        if self.config.clustered:
            self._start_cluster()
            return
        killed = self.queue.associations_killed()
        if killed:
            logger.warning("%d associations were still open when the gateway stopped: their studies wait the cut-off wait", killed)
        self._recover_files()
        for job in self.queue.recover(self.config.max_attempts):
            state = self.queue.job(job.id).state
            logger.warning("Job %d was interrupted while running (attempt %d): now %s", job.id, job.attempts, state)
            job_log(job_paths(self.config.jobs_dir, job.id).root, f"interrupted during attempt {job.attempts} (gateway restarted): {state}")
        self._server = start_scp(self.config, self.queue, self.monitor.instance_stored, self.monitor.storage_refused)
        self._threads = [threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work_loop, args=(i,), name=f"worker-{i}", daemon=True) for i in range(self.config.workers)
        ]
        for thread in self._threads:
            thread.start()
        self.monitor.start(self._server, self._threads)

    def _recover_files(self, older_than: float | None = None) -> None:
        removed = remove_temp_files(self.config.incoming_dir, older_than)
        if removed:
            logger.warning("Deleted %d partly written files left by an interrupted reception", removed)
        recovered = register_orphan_files(self.config, self.queue, older_than)
        if recovered:
            logger.warning("Recorded %d stored files the database did not know", recovered)

    def _start_cluster(self) -> None:
        from gateway.cluster import Cluster  # procrastinate only in the cluster mode

        config = self.config
        self.queue.process_owner = f"{config.node_name}/{os.getpid()}"
        self.cluster = Cluster(config.queue, self.queue, config.node_name, config.lease_s, config.max_attempts)
        if "receive" in self.roles:
            self._recover_files(older_than=self.up_since - config.lease_s)
            self._server = start_scp(config, self.queue, self.monitor.instance_stored, self.monitor.storage_refused)
            self._threads = [threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True)]
            self._threads[0].start()
        if "work" in self.roles:
            self.cluster.start_worker(config.workers, self.run_claimed)
        self.cluster.start_sweeping(min(1.0, config.lease_s / 4), self._alive)
        self.monitor.start(self._server, [*self._threads, *self.cluster.threads], listens="receive" in self.roles)
        logger.info("Started as %s on %s (queue %s)", " and ".join(self.roles), config.node_name, config.queue)

    def _alive(self) -> None:
        """Renew this process's leases (its open associations, its jobs); a job whose lease another worker took, or any
        job once the gateway stops, is told to stop."""
        renewed_at = time.time()
        if "receive" in self.roles:
            self.queue.associations_alive(self.queue.process_owner, renewed_at)
        held = {job_id for owner in self.cluster.holders() for job_id in self.queue.renew(owner, renewed_at)}
        with self._busy_lock:
            for job_id, (owner, stop, claimed_at) in self._running.items():
                if self._stop.is_set() or (job_id not in held and claimed_at < renewed_at):
                    if not stop.is_set() and not self._stop.is_set():
                        logger.warning("Job %d: %s lost its lease (another worker took the job): stopping its run", job_id, owner)
                    stop.set()

    def stop(self) -> None:
        logger.info("Stopping: no new associations; a running app is stopped and will run again after restart")
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        with self._busy_lock:
            for _owner, stop, _claimed_at in self._running.values():
                stop.set()
        for thread in self._threads:
            thread.join(self.config.shutdown_grace_s + 15)
        if self.cluster is not None:
            self.cluster.stop(self.config.shutdown_grace_s + 15)
        self.monitor.stop()
        self.queue.close()
        logger.info("Stopped")

    def request_stop(self) -> None:
        """Ask the service to stop (safe from a signal handler); ``wait()`` then returns."""
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    # --- grouping and routing -----------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        interval = min(1.0, self.config.quiet_period_s / 4)
        while not self._stop.wait(interval):
            try:
                self.dispatch_ready(time.time())
            except Exception:
                logger.exception("Dispatching failed; will try again")

    def dispatch_ready(self, now: float) -> list[int]:
        """Route every group that has been quiet for the quiet period (with the gateway up); returns the new job ids."""
        created: list[int] = []
        config = self.config
        for key in ready_groups(self.queue.waiting_groups(), now, config.quiet_period_s, self.up_since, config.cut_off_wait_s):
            routed: dict[str, list[str]] = {}
            unrouted: dict[str, str] = {}
            for series_uid, sample in self.queue.waiting_series(key).items():
                attributes = routing_attributes(sample, self._keywords)
                route = choose_route(self.config.routes, attributes)
                if route is None:
                    unrouted[series_uid] = f"no route matches series {series_uid} ({describe(attributes)})"
                else:
                    routed.setdefault(route.name, []).append(series_uid)
            cutoff = now - self.config.quiet_period_s
            ids = self.queue.dispatch_group(key, cutoff, routed, unrouted, now)
            created += ids
            if self.cluster is not None and routed:
                self.cluster.defer(ids[: len(routed)])  # the routed jobs come first
            for job_id in ids:
                job = self.queue.job(job_id)
                if job.route is None:
                    logger.warning("Group %s: %s; its files are kept in %s", key, job.error, self.config.incoming_dir)
                else:
                    logger.info("Group %s: job %d for route %s on %d series", key, job.id, job.route, len(job.series_uids))
                job_log(
                    job_paths(self.config.jobs_dir, job_id).root,
                    f"created for group {key}: route {job.route}, series {', '.join(job.series_uids)}"
                    + (f"; {job.error}" if job.error else ""),
                )
        return created

    # --- running and sending ------------------------------------------------------------------
    def _work_loop(self, index: int = 0) -> None:
        holder = Holder(self.config.node_name, f"{os.getpid()}.{index}")
        while not self._stop.is_set():
            with self._busy_lock:
                job = self.queue.claim(self._busy, holder=holder)
                if job is not None:
                    self._busy.add(job.id)
            if job is None:
                self._stop.wait(0.5)
                continue
            try:
                self._process_guarded(job, holder.owner, self._stop)
            finally:
                with self._busy_lock:
                    self._busy.discard(job.id)

    def run_claimed(self, job_id: int, holder: Holder) -> None:
        """The worker role's task (``gateway.cluster``): claim this job if it can run now, and process it."""
        if self._stop.is_set():
            return
        job = self.queue.claim(set(), holder=holder, held_after=time.time() - self.config.lease_s, only=job_id)
        if job is None:
            return
        stop = threading.Event()
        with self._busy_lock:
            self._running[job.id] = (holder.owner, stop, time.time())
        try:
            self._process_guarded(job, holder.owner, stop)
        finally:
            with self._busy_lock:
                self._running.pop(job.id, None)

    def _process_guarded(self, job: Job, owner: str, stop: threading.Event) -> None:
        try:
            self.process(job, owner, stop)
        except LeaseLost as error:
            logger.warning("Job %d: %s; nothing more is recorded by this worker", job.id, error)
        except Exception as error:
            logger.exception("Job %d: unexpected error", job.id)
            if self.queue.job(job.id).state == RUNNING:
                with suppress(LeaseLost):
                    self.queue.app_failed(
                        job.id,
                        f"gateway error: {type(error).__name__}: {error}",
                        self.config.max_attempts,
                        self.config.retry_delay_s,
                        owner,
                    )

    def process(self, job: Job, owner: str | None = None, stop: threading.Event | None = None) -> None:
        if job.state == RUNNING:
            if not self._run(job, self._routes[job.route], owner, stop or self._stop):
                return
        self._send(job.id, owner)

    def _run(self, job: Job, route: Route, owner: str | None, stop: threading.Event) -> bool:
        paths = job_paths(self.config.jobs_dir, job.id)
        count = prepare_input(paths, self.queue.series_files(job.series_uids))
        earlier = self.earlier_result(job)
        job = self.queue.set_supersedes(job.id, earlier)
        command = build_command(route, self.config.python, paths.input, paths.output, earlier)
        message = f"attempt {job.attempts}/{self.config.max_attempts}: route {route.name} on {count} instances: {' '.join(command)}"
        if earlier is not None:
            message += f" (supersedes job {earlier.job_id}, SEG {earlier.sop_instance_uid or '-'})"
        logger.info("Job %d %s", job.id, message)
        job_log(paths.root, message)
        result = run_app(
            command,
            build_env(route, os.environ, paths),
            paths.log(job.attempts),
            route.timeout_s,
            stop,
            cwd=paths.work,
            grace_s=self.config.shutdown_grace_s,
            partial=(paths.output, paths.work),  # emptied when the app is stopped (timeout, shutdown); its log stays
        )
        self.monitor.app_ran(route.name, result.seconds, result.error)
        if result.error is None and (problem := output_set_problem(paths.output)):
            result = replace(result, error=problem)
        if result.error is None:
            outputs = dicom_outputs(paths.output)
            self.queue.app_succeeded(job.id, outputs, [d.name for d in self.config.destinations], owner)
            message = f"app finished in {result.seconds:.1f} s: {len(outputs)} DICOM outputs"
            logger.info("Job %d %s", job.id, message)
            job_log(paths.root, message)
            return True
        if stop.is_set() and result.error.startswith("stopped: gateway shutdown"):
            self.queue.interrupted(job.id, owner)
            logger.warning("Job %d stopped by the shutdown; it runs again after restart", job.id)
            job_log(paths.root, "stopped by the gateway's shutdown; runs again after restart")
            return False
        state = self.queue.app_failed(job.id, result.error, self.config.max_attempts, self.config.retry_delay_s, owner)
        level = logging.ERROR if state == FAILED else logging.WARNING
        logger.log(
            level,
            "Job %d attempt %d failed after %.1f s (%s): now %s; log %s",
            job.id,
            job.attempts,
            result.seconds,
            result.error,
            state,
            result.log,
        )
        job_log(paths.root, f"attempt {job.attempts} failed ({result.error}): {state}")
        return False

    def earlier_result(self, job: Job) -> Supersession | None:
        """The result this job supersedes; outputs recorded by an earlier version (no SOP class kept) are read again."""
        earlier = self.queue.earlier_result(job)
        if earlier is None or earlier.sop_instance_uid is not None:
            return earlier
        outputs = self.queue.outputs(earlier.job_id)
        if all(o.sop_class_uid is not None for o in outputs):
            return earlier
        described = [
            replace(o, sop_class_uid=d.sop_class_uid, series_uid=d.series_uid) if (d := dicom_output(o.path)) else o for o in outputs
        ]
        return supersession(earlier.job_id, described)

    def _send(self, job_id: int, owner: str | None = None) -> None:
        paths = job_paths(self.config.jobs_dir, job_id)
        errors: list[str] = []
        for destination in self.config.destinations:
            pending = [o.path for o in self.queue.outputs(job_id, unsent_only=True) if o.destination == destination.name]
            if not pending:
                continue
            if doubt := self.queue.output_sending(job_id, pending, destination.name, owner):
                job_log(paths.root, f"{doubt} outputs to {destination.name} in doubt (a worker died sending them): sent again, same UIDs")
            results = send_files(pending, destination, self.config.ae_title)
            for path, error in results.items():
                if error is None:
                    self.queue.output_sent(job_id, path, destination.name)
                else:
                    self.queue.output_failed(job_id, path, destination.name, error)
                    errors.append(f"{destination.name}: {path.name}: {error}")
                    self.monitor.export_failed(destination.name)
            sent = sum(error is None for error in results.values())
            message = f"sent {sent}/{len(results)} outputs to {destination.name}"
            logger.info("Job %d %s", job_id, message)
            job_log(paths.root, message)
        if errors:
            state = self.queue.sending_failed(
                job_id, "; ".join(errors)[:2000], self.config.max_send_attempts, self.config.retry_delay_s, owner
            )
            logger.log(
                logging.ERROR if state == FAILED else logging.WARNING, "Job %d: sending failed (%s): now %s", job_id, errors[0], state
            )
            job_log(paths.root, f"sending failed ({errors[0]}): {state}")
            return
        self.queue.sending_done(job_id, owner)
        logger.info("Job %d done", job_id)
        job_log(paths.root, "done")
