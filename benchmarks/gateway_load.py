"""Load on the gateway: K concurrent associations C-STORE N small CT instances; every one must be on disk once.

``python benchmarks/gateway_load.py [--instances 2000] [--associations 4]`` starts
``python -m gateway serve`` in a temporary folder, sends, stops it, and prints one JSON line:
instances, associations, seconds, instances_per_s, failed statuses, lost and duplicated counts.
The test tests/gateway/test_load.py runs the same check at 2,000 instances over 4 associations.

``python -m benchmarks.gateway_load --cluster [--instances 2000] [--associations 8] [--studies 12] [--slices 20]``
measures the cluster mode instead (benchmarks/gateway_cluster_load.py): instances/s with 1 and 2 receivers, jobs/s
with 1, 2 and 3 workers on the stand-in app, one JSON line per configuration and a summary line with the scaling.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.gateway_cluster_load import run_cluster
from testkit.gateway_process import GatewayProcess, write_config
from testkit.load import make_load, send_concurrently, stored_uids
from testkit.orthanc import free_port

logger = logging.getLogger("gateway_load")
ROUTES = [{"name": "none", "match": {"Modality": "NOTHING"}, "command": ["true"]}]


def run(instances: int, associations: int, folder: Path) -> dict:
    port = free_port()
    gateway = GatewayProcess(write_config(folder, port, ROUTES, quiet_period_s=3600), port, folder / "gateway.log").start()
    try:
        result = send_concurrently(port, make_load(instances, associations))
    finally:
        gateway.terminate()
    on_disk = Counter(stored_uids(folder / "gateway-data"))
    with sqlite3.connect(folder / "gateway-data" / "gateway.sqlite") as db:
        recorded = db.execute("SELECT COUNT(*), SUM(receive_count) FROM instances").fetchone()
    return {
        "instances": instances,
        "associations": associations,
        "seconds": round(result.seconds, 2),
        "instances_per_s": round(result.per_second, 1),
        "failed_statuses": len(result.failed_statuses),
        "lost": len(set(result.sent_uids) - set(on_disk)),
        "duplicated_files": sum(n - 1 for n in on_disk.values()),
        "recorded": recorded[0],
        "receptions": recorded[1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--associations", type=int, help="concurrent associations (default 4; 8 with --cluster)")
    parser.add_argument("--cluster", action="store_true", help="separate receivers and workers on PostgreSQL (see the docstring)")
    parser.add_argument("--studies", type=int, default=12, help="--cluster: studies queued for the workers")
    parser.add_argument("--slices", type=int, default=20, help="--cluster: slices per study")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # 'connection refused' while the gateway starts
    if args.cluster:
        return cluster_main(args.instances, args.associations or 8, args.studies, args.slices)
    args.associations = args.associations or 4
    with tempfile.TemporaryDirectory(prefix="gateway-load-") as folder:
        figures = run(args.instances, args.associations, Path(folder))
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0 if figures["lost"] == figures["duplicated_files"] == figures["failed_statuses"] == 0 else 1


def cluster_main(instances: int, associations: int, studies: int, slices: int) -> int:
    with tempfile.TemporaryDirectory(prefix="gateway-cluster-load-") as folder:
        rows = run_cluster(instances, associations, studies, slices, Path(folder))
    sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
    return 0 if rows[-1]["checks_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
