"""The gateway as a cluster on one machine, for the cluster tests and benchmark: receivers (``python -m gateway
receive``) and workers (``python -m gateway worker``) as separate processes with one PostgreSQL queue and one storage
folder, as several hosts sharing a mounted folder would run them; and an Orthanc that logs every C-STORE it
receives, duplicates included (Orthanc itself keeps one copy per SOP Instance UID, so its index cannot show a
second export of the same output).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from testkit.gateway_process import REPO_ROOT, GatewayProcess, write_config
from testkit.gateway_samples import ct_series
from testkit.orthanc import Orthanc, free_port, start_orthanc

logger = logging.getLogger(__name__)

FINISHED = frozenset({"done", "failed", "unrouted"})
RECEPTIONS = "receptions.txt"
# Orthanc calls ReceivedInstanceFilter for every instance it is given, before it checks whether it has it already;
# only those a C-STORE brought are logged (not the test's own uploads over REST).
RECEPTION_LUA = """function ReceivedInstanceFilter(dicom, origin, info)
  if origin["RequestOrigin"] == "DicomProtocol" then
    local log = io.open("{log}", "a")
    log:write(dicom.SOPInstanceUID .. "\\n")
    log:close()
  end
  return true
end
"""


def start_counting_orthanc(folder: Path, modalities: dict[str, tuple[str, int]] | None = None) -> Orthanc:
    """A real Orthanc whose Lua filter appends the SOP Instance UID of every instance a C-STORE brings to ``receptions.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / RECEPTIONS
    if any(c in str(log) for c in '"\\\n'):
        raise ValueError(f"{log}: a folder name Lua cannot take in a plain string")
    script = folder / "receptions.lua"
    script.write_text(RECEPTION_LUA.format(log=log))
    return start_orthanc(folder, modalities, settings={"LuaScripts": [str(script)]})


def receptions(orthanc: Orthanc) -> Counter[str]:
    """How many times Orthanc received each SOP Instance UID by C-STORE (a counting Orthanc's log)."""
    log = orthanc.folder / RECEPTIONS
    return Counter(log.read_text().split()) if log.exists() else Counter()


def study_of(job: dict) -> str:
    """The StudyInstanceUID of a job grouped by study (its group key is ``study:<uid>``)."""
    kind, _, uid = job["group_key"].partition(":")
    assert kind == "study", f"job {job['id']} is grouped by {kind}, not by study"
    return uid


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces


@dataclass
class Cluster:
    """Receivers and workers of one queue; ``stopped`` holds the processes a test killed on purpose."""

    receivers: list[GatewayProcess]
    workers: list[GatewayProcess]
    storage_dir: Path
    stopped: list[GatewayProcess] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [r.port for r in self.receivers]

    @property
    def processes(self) -> list[GatewayProcess]:
        return self.receivers + self.workers

    def start(self, timeout_s: float = 60) -> Cluster:
        for process in self.processes:
            process.start(timeout_s)
        return self

    def jobs(self) -> list[dict]:
        """``gateway jobs --json`` as an operator on any host runs it (with the first receiver's config)."""
        return self.receivers[0].jobs()

    def owner(self, pid: int) -> GatewayProcess | None:
        """The cluster process that ``pid`` (an app run) descends from."""
        ours = {p.process.pid: p for p in self.processes if p.process is not None}
        current: int | None = pid
        while current and current not in ours:
            current = parent_pid(current)
        return ours.get(current) if current else None

    def kill(self, process: GatewayProcess) -> None:
        """SIGKILL, as a power-off would; the process is no longer expected to be alive."""
        process.kill()
        self.stopped.append(process)

    def dead(self) -> list[GatewayProcess]:
        """Processes that exited without a test asking them to."""
        return [p for p in self.processes if p not in self.stopped and p.process is not None and p.process.poll() is not None]

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.role} {p.log.parent.name} ---\n{p.log_text()[-tail:]}" for p in self.processes)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 300, detail: Callable[[], str] = str) -> None:
        """Poll ``condition`` until it holds; fail with every log (and ``detail()``) when a process died or time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            if self.dead():
                break
            time.sleep(0.2)
        died = ", ".join(f"{p.role} {p.log.parent.name} (exit {p.process.returncode})" for p in self.dead()) or "none"
        raise AssertionError(f"timed out waiting for {what}; died: {died}; {detail()}\n{self.logs()}")

    def wait_for(self, condition: Callable[[list[dict]], bool], what: str, timeout_s: float = 300) -> list[dict]:
        """Poll the jobs listing until ``condition`` holds; the jobs then."""
        jobs: list[dict] = []

        def holds() -> bool:
            jobs[:] = self.jobs()
            return condition(jobs)

        self.wait_until(holds, what, timeout_s, lambda: f"jobs: {summary(jobs)}")
        return jobs

    def wait_for_studies(self, studies: set[str], timeout_s: float = 300) -> list[dict]:
        """Until every study in ``studies`` has a job and every job is finished."""

        def settled(jobs: list[dict]) -> bool:
            return {study_of(j) for j in jobs} >= studies and all(j["state"] in FINISHED for j in jobs)

        return self.wait_for(settled, f"{len(studies)} studies to have finished jobs", timeout_s)

    def stop(self, timeout_s: float = 90) -> dict[str, int]:
        """SIGTERM every started process not stopped on purpose; their exit codes by ``role name``."""
        started = [p for p in self.processes if p.process is not None and p not in self.stopped]
        return {f"{p.role} {p.log.parent.name}": p.terminate(timeout_s) for p in started}


def summary(jobs: list[dict]) -> str:
    return json.dumps(Counter(j["state"] for j in jobs))


def cluster(
    folder: Path,
    queue: str,
    routes: list[dict],
    destinations: list[dict] | None = None,
    receivers: int = 2,
    workers: int = 3,
    **settings: object,
) -> Cluster:
    """Configs and processes (not started) for ``receivers`` receivers and ``workers`` workers on one queue: each its
    own folder, config and log under ``folder``, named ``receiver-N`` / ``worker-N`` (also its node_name), one shared
    ``folder/storage``; ``settings`` go into every config."""
    storage = folder / "storage"

    def role(name: str, kind: str) -> GatewayProcess:
        home = folder / name
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = write_config(home, port, routes, destinations, storage_dir=str(storage), queue=queue, node_name=name, **settings)
        return GatewayProcess(config, port, home / "gateway.log", role=kind)

    return Cluster(
        [role(f"receiver-{i + 1}", "receive") for i in range(receivers)],
        [role(f"worker-{i + 1}", "worker") for i in range(workers)],
        storage,
    )


def split_studies(studies: int, slices: int, associations: int, size: int = 8) -> tuple[list[list[Dataset]], dict[str, list[Dataset]]]:
    """``studies`` one-series CT studies of ``slices`` slices each, dealt slice by slice over ``associations``
    batches, so each study arrives through every association (and with two receivers, through both); the batches
    and the series by study."""
    series = [ct_series(slices, size=size) for _ in range(studies)]
    everything = [ds for one in zip(*series, strict=True) for ds in one]  # interleaved: study 1 slice 1, study 2 slice 1, ...
    batches = [everything[i::associations] for i in range(associations)]
    return batches, {str(one[0].StudyInstanceUID): one for one in series}


def gateway_command(config: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """``python -m gateway ARGS --config CONFIG`` (e.g. ``retry 3`` from another host's config)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def orthanc_destination(orthanc: Orthanc) -> dict:
    return {"name": "orthanc", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}


def outputs_by_destination(jobs: Sequence[dict]) -> Counter[tuple[str, str]]:
    """(destination, SOP Instance UID) -> how many output records the jobs hold (one each when exported once)."""
    return Counter((o["destination"], o["sop_instance_uid"]) for j in jobs for o in j["outputs"])
