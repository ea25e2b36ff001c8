"""``python -m gateway serve|receive|worker|jobs|retry --config CONFIG``.

serve: run the DICOM service until SIGTERM/SIGINT (every role in one process). receive / worker: only the
receiving role (C-STORE SCP, dispatcher) or the working role (runs jobs), for the cluster mode (``queue:
postgresql://...``); several of each may run on several hosts. jobs: list the jobs and their state, with
the host and worker of each job's last attempt and its start and end (``--json`` for tools). retry JOB_ID:
give a failed job its attempts back (from any host). clean [--dry-run]: one pass of the retention cleaner
(``gateway.retention``; ``serve`` runs it periodically), printing what it removed (or would). Exit 2 with one line
``gateway: error: ...`` on a bad configuration or argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.postgres import QueueUnreachable, open_queue
from gateway.queue import STATES, Job

logger = logging.getLogger("gateway")

EXIT_ERROR = 2
CLI_RECONNECT_S = 10.0  # how long jobs and retry wait for the cluster's PostgreSQL


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway", description="DICOM gateway: PACS-triggered runs of the apps.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the DICOM service until SIGTERM")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    receive = commands.add_parser("receive", help="cluster mode: receive studies (C-STORE SCP) and turn them into jobs")
    worker = commands.add_parser("worker", help="cluster mode: run jobs (the apps) and export their outputs")
    for sub in (receive, worker):
        sub.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    jobs = commands.add_parser("jobs", help="list jobs and their state")
    jobs.add_argument("--state", choices=STATES, action="append", help="only jobs in this state (repeatable)")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job, with its outputs")
    retry = commands.add_parser("retry", help="run a failed job again")
    retry.add_argument("job_id", type=int)
    clean = commands.add_parser("clean", help="remove the jobs and received files retention has expired, once")
    clean.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    for sub in (serve, receive, worker, jobs, retry, clean):
        sub.add_argument("--config", type=Path, required=True, help="the gateway's YAML configuration")
    return parser.parse_args(argv)


def _age(timestamp: float | None, now: float) -> str:
    return "-" if not timestamp else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def superseded_by(jobs: list[Job]) -> dict[int, int]:
    """Job id -> the id of the later job whose result replaced its result."""
    return {job.supersedes_job_id: job.id for job in jobs if job.supersedes_job_id is not None}


def ran_by(job: Job) -> str:
    """``host/worker`` of the job's last attempt, ``-`` before any."""
    return f"{job.node}/{job.worker}" if job.node else "-"


def format_jobs(jobs: list[Job], sent: dict[int, tuple[int, int]], now: float, replaced_by: dict[int, int] | None = None) -> str:
    """A table: one line per job (outputs sent / recorded, which job it supersedes or is superseded by, first line of its error)."""
    replaced_by = superseded_by(jobs) if replaced_by is None else replaced_by
    header = (
        f"{'id':>5}  {'state':<8}  {'route':<16}  {'attempts':>8}  {'outputs':>7}  {'created':<19}  {'finished':<19}  "
        f"{'host/worker':<24}  {'attempt started':<19}  {'attempt ended':<19}  {'supersedes':>10}  {'superseded by':>13}  group / error"
    )
    lines = [header]
    for job in jobs:
        done, total = sent.get(job.id, (0, 0))
        detail = job.group_key + (f"  {job.error.splitlines()[0][:160]}" if job.error else "")
        supersedes = str(job.supersedes_job_id) if job.supersedes_job_id is not None else "-"
        lines.append(
            f"{job.id:>5}  {job.state:<8}  {job.route or '-':<16}  {job.attempts:>8}  {f'{done}/{total}':>7}  "
            f"{_age(job.created_at, now):<19}  {_age(job.finished_at, now):<19}  {ran_by(job):<24}  "
            f"{_age(job.attempt_started_at, now):<19}  {_age(job.attempt_ended_at, now):<19}  {supersedes:>10}  {replaced_by.get(job.id, '-'):>13}  "
            f"{detail}"
        )
    return "\n".join(lines) + "\n"


def list_jobs(config: GatewayConfig, states: list[str] | None, as_json: bool) -> str:
    if not config.clustered and not config.database.exists():
        return "" if as_json else f"no jobs yet (no database at {config.database})\n"
    queue = open_queue(config, CLI_RECONNECT_S)
    try:
        everything = queue.jobs()
        jobs = queue.jobs(states) if states else everything
        outputs = {job.id: queue.outputs(job.id) for job in jobs}
    finally:
        queue.close()
    replaced_by = superseded_by(everything)
    if as_json:
        records = []
        for job in jobs:
            record = asdict(job) | {"superseded_by": replaced_by.get(job.id)}
            record["outputs"] = [{**asdict(o), "path": str(o.path)} for o in outputs[job.id]]
            records.append(json.dumps(record))
        return "".join(line + "\n" for line in records)
    sent = {job_id: (sum(o.sent_at is not None for o in rows), len(rows)) for job_id, rows in outputs.items()}
    return format_jobs(jobs, sent, time.time(), replaced_by)


def serve(config: GatewayConfig, command: str = "serve") -> int:
    from gateway.service import ROLES, Gateway  # pynetdicom only where needed

    gateway = Gateway(config, ROLES[command])
    received: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:  # only sets flags: no logging inside a signal handler
        received.append(signum)
        gateway.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    gateway.start()
    gateway.wait()
    logger.info("Received %s", ", ".join(signal.Signals(s).name for s in received) or "a stop request")
    gateway.stop()
    return 0


def clean_once(config: GatewayConfig, path: Path, dry_run: bool) -> int:
    """``gateway clean``: one retention pass now; exit 2 when retention is not configured."""
    from gateway.retention import clean

    if config.retention is None:
        sys.stderr.write(f"gateway: error: retention is not configured in {path} (give retention: {{completed_days: N, failed_days: M}})\n")
        return EXIT_ERROR
    if not config.clustered and not config.database.exists():
        sys.stdout.write(f"nothing to clean (no database at {config.database})\n")
        return 0
    queue = open_queue(config)
    try:
        report = clean(config, queue, time.time(), dry_run)
    finally:
        queue.close()
    sys.stdout.write(report.describe() + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        sys.stderr.write(f"gateway: error: {error}\n")
        return EXIT_ERROR
    try:
        return run_command(args, config)
    except QueueUnreachable as error:  # the cluster mode's PostgreSQL did not answer
        sys.stderr.write(f"gateway: error: {error}\n")
        return EXIT_ERROR


def run_command(args: argparse.Namespace, config: GatewayConfig) -> int:
    if args.command in ("receive", "worker") and not config.clustered:
        sys.stderr.write(
            f"gateway: error: {args.command} needs the cluster mode (queue: postgresql://... in {args.config}); "
            "with queue: sqlite run 'serve'\n"
        )
        return EXIT_ERROR
    if args.command in ("serve", "receive", "worker"):
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        return serve(config, args.command)
    if args.command == "jobs":
        sys.stdout.write(list_jobs(config, args.state, args.json))
        return 0
    if args.command == "clean":
        return clean_once(config, args.config, args.dry_run)
    queue = open_queue(config, CLI_RECONNECT_S)
    try:
        job = queue.retry(args.job_id)
    except (KeyError, ValueError) as error:
        sys.stderr.write(f"gateway: error: {error.args[0]}\n")
        return EXIT_ERROR
    finally:
        queue.close()
    sys.stdout.write(f"job {job.id} is {job.state} again\n")
    return 0
