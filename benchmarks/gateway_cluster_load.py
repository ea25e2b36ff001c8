"""The gateway's cluster mode under load (``python -m benchmarks.gateway_load --cluster``): separate receiver and
worker processes on one PostgreSQL queue (a server of its own, testkit/postgres.py) and one storage folder.

- instances/s received with 1 and 2 receivers: ``instances`` small CT instances over ``associations`` concurrent
  associations, dealt over the receivers (association i to receiver i mod R), no job made (a quiet period of an hour);
- jobs/s with 1, 2 and 3 workers on the stand-in app (tests/gateway/fake_seg_app.py, a real SEG per study; run as
  an app folder, not imported): ``studies`` studies of ``slices`` slices are received and queued first, then the
  workers start; jobs/s counts from the first attempt's start to the last attempt's end as the jobs record them
  (worker start-up left out; the wall time with start-up is reported beside it).

Each configuration gets a fresh database and storage folder. Every figure comes with its check: nothing lost,
nothing stored twice, every job done and run once. Scaling is each rate over the rate with one process; where it
stops is the first count that adds less than 10 %.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

from testkit.cluster import Cluster, cluster
from testkit.gateway_process import REPO_ROOT
from testkit.load import make_load, send_concurrently, stored_uids
from testkit.postgres import PostgresServer

logger = logging.getLogger("gateway_load.cluster")

NO_JOB = [{"name": "none", "match": {"Modality": "NOTHING"}, "command": ["true"]}]
STAND_IN_APP = REPO_ROOT / "tests" / "gateway" / "fake_seg_app.py"
RECEIVER_COUNTS = (1, 2)
WORKER_COUNTS = (1, 2, 3)
QUEUEING_ASSOCIATIONS = 4  # the studies for the workers arrive over 4 associations (below max_associations)
GAIN_THAT_COUNTS = 1.10  # a process that adds less than 10 % is where scaling stops


def receive_rate(server: PostgresServer, receivers: int, instances: int, associations: int, folder: Path) -> dict:
    """Instances/s into ``receivers`` receivers, and the checks (failed statuses, lost, stored twice)."""
    nodes = cluster(folder, server.create_database(f"receive_{receivers}"), NO_JOB, receivers=receivers, workers=0, quiet_period_s=3600)
    nodes.start()
    try:
        result = send_concurrently(nodes.ports, make_load(instances, associations))
    finally:
        exits = nodes.stop()
    on_disk = Counter(stored_uids(nodes.storage_dir))
    return {
        "measure": "receive",
        "receivers": receivers,
        "instances": instances,
        "associations": associations,
        "seconds": round(result.seconds, 2),
        "instances_per_s": round(result.per_second, 1),
        "failed_statuses": len(result.failed_statuses),
        "failed_by_status": dict(Counter("no answer" if s is None else f"0x{s:04X}" for s in result.failed_statuses)),
        "lost": len(set(result.sent_uids) - set(on_disk)),  # not stored (the sender resends those it got no success for)
        "lost_acknowledged": len(set(result.sent_uids) - set(on_disk) - set(result.unacknowledged_uids)),  # must be 0
        "stored_twice": sum(n - 1 for n in on_disk.values()),
        "clean_exits": set(exits.values()) == {0},
    }


def _queued(nodes: Cluster, studies: int) -> list[dict]:
    return nodes.wait_for(lambda jobs: len(jobs) == studies and {j["state"] for j in jobs} == {"pending"}, f"{studies} pending jobs")


def job_rate(server: PostgresServer, workers: int, studies: int, slices: int, folder: Path) -> dict:
    """Jobs/s of ``workers`` workers on ``studies`` queued studies, and the checks (every job done, each run once)."""
    runs = folder / "runs.txt"
    route = {"name": "stand-in", "match": {"Modality": "CT"}, "app": str(STAND_IN_APP), "env": {"FAKE_APP_RUNS": str(runs)}}
    nodes = cluster(folder, server.create_database(f"jobs_{workers}"), [route], receivers=1, workers=workers, quiet_period_s=1)
    receiver = nodes.receivers[0].start()
    try:
        series = [make_load(slices, 1)[0] for _ in range(studies)]
        batches = [[ds for one in series[i::QUEUEING_ASSOCIATIONS] for ds in one] for i in range(QUEUEING_ASSOCIATIONS)]
        assert send_concurrently(receiver.port, [b for b in batches if b]).failed_statuses == []
        _queued(nodes, studies)
        began = time.monotonic()
        for worker in nodes.workers:
            worker.start()
        jobs = nodes.wait_for(lambda jobs: all(j["state"] in {"done", "failed"} for j in jobs), f"{studies} finished jobs", 900)
        wall = time.monotonic() - began
    finally:
        exits = nodes.stop()
    span = max(j["attempt_ended_at"] for j in jobs) - min(j["attempt_started_at"] for j in jobs)
    events = Counter(line.split()[0] for line in runs.read_text().splitlines()) if runs.exists() else Counter()
    return {
        "measure": "jobs",
        "workers": workers,
        "jobs": studies,
        "slices_per_study": slices,
        "seconds": round(span, 2),
        "jobs_per_s": round(studies / span, 3),
        "wall_s_with_worker_start": round(wall, 2),
        "done": sum(j["state"] == "done" for j in jobs),
        "runs": events.get("start", 0),
        "nodes_used": len({j["node"] for j in jobs}),
        "clean_exits": set(exits.values()) == {0},
    }


def scaling(rates: dict[int, float]) -> tuple[dict[int, float], int | None]:
    """Each rate over the rate of the smallest count; and the first count that adds less than 10 % (None if none)."""
    counts = sorted(rates)
    base = rates[counts[0]]
    stops = next((n for previous, n in zip(counts, counts[1:], strict=False) if rates[n] < GAIN_THAT_COUNTS * rates[previous]), None)
    return {n: round(rates[n] / base, 2) for n in counts}, stops


def run_cluster(instances: int, associations: int, studies: int, slices: int, folder: Path) -> list[dict]:
    """Every configuration in one run, on one PostgreSQL server; the figures, the summary last."""
    load_before = os.getloadavg()
    server = PostgresServer.start_new()
    try:
        rows = [receive_rate(server, r, instances, associations, folder / f"receive-{r}") for r in RECEIVER_COUNTS]
        rows += [job_rate(server, w, studies, slices, folder / f"jobs-{w}") for w in WORKER_COUNTS]
    finally:
        server.close()
    receive_scaling, receive_stops = scaling({r["receivers"]: r["instances_per_s"] for r in rows if r["measure"] == "receive"})
    job_scaling, job_stops = scaling({r["workers"]: r["jobs_per_s"] for r in rows if r["measure"] == "jobs"})
    checks_pass = all(r["clean_exits"] for r in rows) and all(
        r["failed_statuses"] == r["lost"] == r["lost_acknowledged"] == r["stored_twice"] == 0 for r in rows if r["measure"] == "receive"
    )
    checks_pass = checks_pass and all(r["done"] == r["runs"] == r["jobs"] for r in rows if r["measure"] == "jobs")
    summary = {
        "measure": "summary",
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "receive_scaling": receive_scaling,
        "receive_scaling_stops_at": receive_stops,
        "job_scaling": job_scaling,
        "job_scaling_stops_at": job_stops,
        "checks_pass": checks_pass,
    }
    return [*rows, summary]
