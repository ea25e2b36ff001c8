"""4 concurrent associations, 2,000 instances: every one on disk and in the queue, none lost, none twice."""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from testkit.gateway_process import GatewayProcess, write_config
from testkit.load import make_load, send_concurrently, stored_uids

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

INSTANCES, ASSOCIATIONS = 2000, 4
ROUTES = [{"name": "none", "match": {"Modality": "NOTHING"}, "command": ["true"]}]


def test_2000_instances_over_4_concurrent_associations_are_all_stored_once(tmp_path: Path, gateway_port: int):
    gateway = GatewayProcess(
        write_config(tmp_path, gateway_port, ROUTES, quiet_period_s=3600), gateway_port, tmp_path / "gateway.log"
    ).start()
    try:
        batches = make_load(INSTANCES, ASSOCIATIONS)
        result = send_concurrently(gateway_port, batches)
    finally:
        assert gateway.terminate() == 0
    logger.info("%d instances in %.1f s: %.0f instances/s", len(result.sent_uids), result.seconds, result.per_second)
    assert result.failed_statuses == []
    on_disk = Counter(stored_uids(tmp_path / "gateway-data"))
    assert len(result.sent_uids) == INSTANCES and set(on_disk) == set(result.sent_uids)
    assert max(on_disk.values()) == 1
    with sqlite3.connect(tmp_path / "gateway-data" / "gateway.sqlite") as db:
        rows = db.execute("SELECT sop_instance_uid, receive_count FROM instances").fetchall()
    assert sorted(uid for uid, _ in rows) == sorted(result.sent_uids) and {count for _, count in rows} == {1}
