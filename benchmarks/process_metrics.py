"""Run one command as a child process and measure it alone: wall time, peak RSS and CPU seconds.

``os.wait4`` on the child's pid returns the resource usage of that one child (and the children it
waited for), so each pipeline's peak memory is its own, not the maximum over every child this
benchmark ever ran (which is what ``RUSAGE_CHILDREN`` would give).
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STACK_BYTES = 32 * 1024 * 1024  # Holoscan asks for a 32 MiB stack (as ``ulimit -s 32768``)


@dataclass(frozen=True)
class ProcessMeasurement:
    returncode: int
    wall_s: float
    peak_rss_mib: float
    cpu_s: float  # user + system
    load_before: float  # 1-minute load average when the run started
    load_after: float
    timed_out: bool


def _raise_stack_limit() -> None:
    """In the child before exec: a 32 MiB stack where the hard limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and soft < STACK_BYTES and (hard == resource.RLIM_INFINITY or hard >= STACK_BYTES):
        resource.setrlimit(resource.RLIMIT_STACK, (STACK_BYTES, hard))


def run_measured(
    command: Sequence[str], log_path: Path, timeout_s: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> ProcessMeasurement:
    """Run ``command`` with stdout and stderr to ``log_path``; kill it after ``timeout_s``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    timed_out = False
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_raise_stack_limit)
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid == process.pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                timed_out = True
                logger.error("Killed after %.0f s: %s", timeout_s, " ".join(command))
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # so that Popen does not wait again
    return ProcessMeasurement(
        returncode=process.returncode,
        wall_s=wall,
        peak_rss_mib=usage.ru_maxrss / 1024.0,  # Linux: KiB
        cpu_s=usage.ru_utime + usage.ru_stime,
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
        timed_out=timed_out,
    )
