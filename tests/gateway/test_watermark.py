"""The disk watermark: above it the real SCP rejects associations that would store (C-ECHO still works) and answers a
C-STORE in an association already open with 0xA700; below it again, it stores. On a real filesystem that fills up:
a small tmpfs mounted by the test (root, as the test machines run), and through ``gateway serve`` with a
``storage_min_free_bytes`` no disk has."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom.sop_class import CTImageStorage, Verification

from gateway.config import parse_config
from gateway.queue import JobQueue
from gateway.resources import DiskUsage, StorageWatermark, disk_usage, watermark_problem
from gateway.scp import OUT_OF_RESOURCES, SUCCESS, start_scp
from gateway.sender import SenderAE
from testkit.gateway_process import GATEWAY_AET, SCU_AET, GatewayProcess, echo, write_config
from testkit.gateway_samples import ct_series
from tests.gateway.fake_seg_app import fake_route

MB = 1_000_000


@pytest.mark.parametrize(
    ("total", "available", "max_percent", "min_free", "problem"),
    [
        (100 * MB, 30 * MB, 75, 0, None),
        (100 * MB, 25 * MB, 75, 0, None),  # exactly at the mark: still room
        (100 * MB, 20 * MB, 75, 0, "storage 80.0 % used, 20.0 MB available of 100.0 MB: above the 75 % watermark"),
        (100 * MB, 50 * MB, 75, 60 * MB, "storage 50.0 % used, 50.0 MB available of 100.0 MB: below min_free_bytes 60.0 MB"),
        (0, 0, 75, 0, "storage 100.0 % used, 0.0 MB available of 0.0 MB: above the 75 % watermark"),
    ],
)
def test_the_watermark_names_the_use_and_the_limit_it_passed(total: int, available: int, max_percent: float, min_free: int, problem):
    assert watermark_problem(DiskUsage(total, available), max_percent, min_free) == problem


def test_a_storage_folder_that_cannot_be_read_refuses_without_raising(tmp_path: Path):
    watermark = StorageWatermark(tmp_path / "missing")
    assert watermark.problem() == f"cannot read the use of {tmp_path / 'missing'}: No such file or directory"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (a real filesystem that fills up), unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path, percent: float) -> Path:
    """Write a ballast file until the disk is about ``percent`` % used."""
    usage = disk_usage(disk)
    ballast = disk / "ballast"
    ballast.write_bytes(os.urandom(int(usage.total_bytes * percent / 100) - usage.used_bytes))
    return ballast


def associate(port: int, *contexts):
    ae = SenderAE(ae_title=SCU_AET)
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title=GATEWAY_AET)


def rejection(assoc) -> tuple[int, int, int]:
    primitive = assoc.acceptor.primitive
    return primitive.result, primitive.result_source, int(primitive.diagnostic)


def test_above_the_watermark_associations_are_rejected_and_below_it_accepted_again(
    small_disk: Path, tmp_path: Path, gateway_port: int, caplog: pytest.LogCaptureFixture
):
    config = parse_config(
        {"ae_title": GATEWAY_AET, "host": "127.0.0.1", "port": gateway_port, "allowed_calling_aets": [SCU_AET],
         "storage_dir": str(small_disk / "storage"), "routes": [fake_route(tmp_path)]},
        tmp_path,
    )  # fmt: skip
    config.incoming_dir.mkdir(parents=True)
    queue = JobQueue(config.database)
    watermark = StorageWatermark(config.storage_dir, max_use_percent=75)
    server = start_scp(config, queue, storage_refused=watermark.problem)
    [first, second, third] = ct_series(3)
    try:
        caplog.set_level(logging.INFO, logger="gateway")
        ballast = fill(small_disk, 90)
        assoc = associate(gateway_port, CTImageStorage, Verification)
        assert assoc.is_rejected and rejection(assoc) == (0x02, 0x03, 0x02)  # transient, provider (presentation), local limit
        assert echo(gateway_port) == SUCCESS  # a C-ECHO alone is still answered
        refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "Refusing new instances" in r.getMessage()]
        assert len(refused) == 1 and "above the 75 % watermark" in refused[0] and "% used" in refused[0]

        ballast.unlink()
        assoc = associate(gateway_port, CTImageStorage)
        assert assoc.is_established
        assert assoc.send_c_store(first).Status == SUCCESS
        ballast = fill(small_disk, 90)  # the disk fills while the association is open
        assert assoc.send_c_store(second).Status == OUT_OF_RESOURCES
        ballast.unlink()
        assert assoc.send_c_store(third).Status == SUCCESS
        assoc.release()
        assert queue.instance_count() == 2
        assert any("Accepting instances again" in r.getMessage() for r in caplog.records)
    finally:
        server.shutdown()
        queue.close()


@pytest.mark.slow
def test_gateway_serve_refuses_a_sender_when_min_free_bytes_exceeds_the_free_space(tmp_path: Path, gateway_port: int):
    free = disk_usage(tmp_path).available_bytes
    config = write_config(tmp_path, gateway_port, [fake_route(tmp_path)], storage_min_free_bytes=free + 10**15)
    gateway = GatewayProcess(config, gateway_port, tmp_path / "gateway.log").start()
    try:
        assoc = associate(gateway_port, CTImageStorage)
        assert assoc.is_rejected and rejection(assoc) == (0x02, 0x03, 0x02)
        log = gateway.log_text()
        assert "Refusing new instances (A-ASSOCIATE-RJ, C-STORE 0xA700): storage " in log and "below min_free_bytes" in log
        assert f"Rejected association from {SCU_AET}" in log
        assert gateway.process is not None and gateway.process.poll() is None  # still serving
    finally:
        assert gateway.terminate() == 0
