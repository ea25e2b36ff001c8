"""The cluster mode's engine: jobs delivered to workers by ``procrastinate`` from the same PostgreSQL database.

Each gateway job has at most one waiting procrastinate job, task ``gateway.run_job(job_id)`` on queue
``gateway`` (its ``queueing_lock`` is ``gateway-job-<id>``). Procrastinate's workers take them with row
locks (``FOR UPDATE SKIP LOCKED``) and LISTEN/NOTIFY, so any number of workers on any number of hosts
share one queue, and a job that runs for hours is never redelivered by a timeout. The gateway's own
``jobs`` table stays the one record of state: the task claims its job there (``JobQueue.claim`` with
``only``), which refuses a job that is not due, is behind an earlier job on its series, or is held by a
live worker, so a task delivered twice runs the app once.

``sweep`` (every process, about once a second) keeps the two in step: jobs whose worker stopped renewing
its lease for ``lease_s`` are interrupted (the attempt counts; a ``sending`` one is freed to resume),
associations whose receiver stopped renewing them are marked killed (their study waits the cut-off
wait), and every job that could run now and has no waiting task gets one (a retry delay over, an
earlier job on its series finished, ``gateway retry`` on any host, a task lost in a crash).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

import procrastinate
import psycopg
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.schema import SchemaManager

from gateway.jobs import UNFINISHED, Holder, claimable
from gateway.postgres import SCHEMA_LOCK, PostgresJobQueue

logger = logging.getLogger(__name__)

TASK, QUEUE = "gateway.run_job", "gateway"


def queueing_lock(job_id: int) -> str:
    return f"gateway-job-{job_id}"


def ensure_procrastinate_schema(dsn: str) -> bool:
    """Apply procrastinate's schema once per database (several processes may start together); True if applied."""
    with psycopg.connect(dsn, autocommit=True) as db, db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        if db.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is not None:
            return False
        db.execute(SchemaManager.get_schema())
    return True


class Cluster:
    """Deferring jobs (any role), sweeping (any role), and a procrastinate worker running ``run_job`` (worker role)."""

    def __init__(self, dsn: str, queue: PostgresJobQueue, node: str, lease_s: float, max_attempts: int) -> None:
        self.dsn, self.queue, self.node, self.lease_s, self.max_attempts = dsn, queue, node, lease_s, max_attempts
        ensure_procrastinate_schema(dsn)
        self._deferrer = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=dsn, min_size=1, max_size=2))
        self._deferrer.open()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._owners: set[str] = set()  # the holders of this process's worker slots
        self._free_slots: list[str] = []
        self._slots_lock = threading.Lock()

    # --- deferring and sweeping ----------------------------------------------------------------
    def defer(self, job_ids: Iterable[int]) -> list[int]:
        """A waiting task for each job (none for one that has one already); returns the ids deferred."""
        deferred = []
        for job_id in job_ids:
            try:
                self._deferrer.configure_task(TASK, queue=QUEUE, queueing_lock=queueing_lock(job_id)).defer(job_id=job_id)
            except AlreadyEnqueued:
                continue
            deferred.append(job_id)
        return deferred

    def waiting_tasks(self) -> set[str]:
        rows = self.queue._query("SELECT queueing_lock FROM procrastinate_jobs WHERE status = 'todo' AND queue_name = ?", (QUEUE,))
        return {row[0] for row in rows}

    def sweep(self, now: float | None = None) -> list[int]:
        """Expire dead workers' leases and dead receivers' associations, and defer every claimable job with no task."""
        now = time.time() if now is None else now
        stale = now - self.lease_s
        for job in self.queue.recover(self.max_attempts, now, stale_before=stale):
            logger.warning("Job %d: its worker %s stopped renewing its lease during attempt %d", job.id, job.lease_owner, job.attempts)
        killed = self.queue.associations_killed(now, stale_before=stale)
        if killed:
            logger.warning("%d associations' receiver stopped: their studies wait the cut-off wait", killed)
        waiting = self.waiting_tasks()
        ready = [job.id for job in claimable(self.queue.jobs(UNFINISHED), now, held_after=stale) if queueing_lock(job.id) not in waiting]
        return self.defer(ready)

    def start_sweeping(self, interval_s: float, alive: Callable[[], None]) -> None:
        """Sweep, and renew this process's leases (``alive``), every ``interval_s`` until ``stop``."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    alive()
                    self.sweep()
                except Exception:
                    logger.exception("Sweeping the queue failed; will try again")

        self._start(loop, "sweeper")

    # --- the worker role -----------------------------------------------------------------------
    def holders(self) -> set[str]:
        with self._slots_lock:
            return set(self._owners)

    def start_worker(self, concurrency: int, run_job: Callable[[int, Holder], None]) -> None:
        """A procrastinate worker (``concurrency`` jobs at once, each in its own thread) calling ``run_job(job_id, holder)``;
        it is started again when it stops on a lost connection."""
        pid = os.getpid()
        self._free_slots = [f"{pid}.{i}" for i in range(concurrency)]
        self._owners = {Holder(self.node, name).owner for name in self._free_slots}
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.dsn, min_size=1, max_size=concurrency + 3))

        @app.task(name=TASK, queue=QUEUE)
        def gateway_run_job(job_id: int) -> None:
            with self._slots_lock:
                slot = self._free_slots.pop()
            try:
                run_job(job_id, Holder(self.node, slot))
            finally:
                with self._slots_lock:
                    self._free_slots.append(slot)

        options = {
            "queues": [QUEUE],
            "concurrency": concurrency,
            "name": f"{self.node}/{pid}",
            "install_signal_handlers": False,
            "delete_jobs": "successful",
            "fetch_job_polling_interval": min(5.0, self.lease_s / 4),
            "update_heartbeat_interval": min(10.0, self.lease_s / 4),
            "stalled_worker_timeout": self.lease_s,
        }

        async def supervise() -> None:
            while not self._stop.is_set():
                try:
                    async with app.open_async():
                        worker = asyncio.create_task(app.run_worker_async(**options))
                        while not self._stop.is_set() and not worker.done():
                            await asyncio.sleep(0.2)
                        worker.cancel()
                        try:
                            await worker
                        except asyncio.CancelledError:
                            pass
                except Exception:  # a lost connection stops procrastinate's worker: start it again
                    logger.exception("The procrastinate worker stopped; starting it again")
                    await asyncio.sleep(1.0)

        self._start(lambda: asyncio.run(supervise()), "procrastinate-worker")

    # --- life cycle ----------------------------------------------------------------------------
    @property
    def threads(self) -> list[threading.Thread]:
        """The sweeper's and the procrastinate worker's threads (``/healthz`` watches them)."""
        return list(self._threads)

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout_s: float) -> None:
        """Stop sweeping and the worker (it waits for its running jobs, which the gateway's stop interrupts)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._deferrer.close()
