"""Run an app on a job's input as its MAP runs it: ``python3 <app folder>`` with the HOLOSCAN_* variables
(or a configured command such as ``monai-deploy run``), output and log in the job's folder.

The app runs in its own process group; on Linux it also gets SIGKILL when the gateway dies
(PR_SET_PDEATHSIG; it fires when the worker thread that started it ends, and that thread waits for
it), so a gateway killed mid-job leaves no orphan writing into the folder the rerun uses. Processes
the app itself starts are not covered by that, but they are in its group: past ``timeout_s`` (or at
shutdown) the whole group gets SIGTERM, then SIGKILL after the grace period, and once the app has
ended, any process still in its group (a child that ignored SIGTERM, or one the app left behind) is
killed too, so that nothing writes into the job's folder after the attempt. An app stopped that way
leaves no partial outputs: its output and work folders are emptied, its log is kept.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from gateway.config import Route
from gateway.queue import DicomOutput, Supersession
from gateway.storage import link_or_copy

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
SUMMARY_FILE, ERROR_FILE = "summary.json", "error.json"
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def log(self, attempt: int) -> Path:
        return self.root / f"attempt-{attempt}.log"


@dataclass(frozen=True)
class AppResult:
    returncode: int
    seconds: float
    error: str | None  # None on success; else the app's last error line, or what stopped it
    log: Path


def job_paths(jobs_dir: Path, job_id: int) -> JobPaths:
    return JobPaths(Path(jobs_dir) / f"{job_id:06d}")


def prepare_input(paths: JobPaths, series_files: Mapping[str, list[Path]]) -> int:
    """Lay out the job's input as ``input/<SeriesInstanceUID>/<file>`` (hard links to the received files); clear old output."""
    shutil.rmtree(paths.input, ignore_errors=True)
    shutil.rmtree(paths.output, ignore_errors=True)
    count = 0
    for series_uid, files in series_files.items():
        for source in files:
            link_or_copy(source, paths.input / series_uid / source.name)
            count += 1
    paths.output.mkdir(parents=True, exist_ok=True)
    paths.work.mkdir(parents=True, exist_ok=True)
    return count


def supersede_args(earlier: Supersession | None) -> list[str]:
    """The options both apps take for a rerun: keep the earlier SEG's series, and name the SEG this one supersedes."""
    if earlier is None:
        return []
    series = ["--result-series-uid", earlier.series_uid] if earlier.series_uid else []
    return series + (["--supersedes-sop-uid", earlier.sop_instance_uid] if earlier.sop_instance_uid else [])


def build_command(route: Route, python: str, input_dir: Path, output_dir: Path, earlier: Supersession | None = None) -> list[str]:
    """The app's command line: the route's ``command`` with {input} {output} {model} filled in, else ``python APP ARGS``
    (with the rerun options of ``supersede_args`` when the job supersedes an earlier result)."""
    values = {"input": str(input_dir), "output": str(output_dir), "model": str(route.model or "")}
    if route.command:
        return [part.format(**values) for part in route.command]
    return [python, str(route.app), *(arg.format(**values) for arg in route.args), *supersede_args(earlier)]


def build_env(route: Route, base_env: Mapping[str, str], paths: JobPaths) -> dict[str, str]:
    """The environment a MAP container gives its app: HOLOSCAN_INPUT_PATH, _OUTPUT_PATH, _MODEL_PATH, _WORKDIR."""
    env = {
        **base_env,
        **route.env,
        "HOLOSCAN_INPUT_PATH": str(paths.input),
        "HOLOSCAN_OUTPUT_PATH": str(paths.output),
        "HOLOSCAN_WORKDIR": str(paths.work),
    }
    if route.model is not None:
        env["HOLOSCAN_MODEL_PATH"] = str(route.model)
    return env


def last_error_line(log_text: str, limit: int = 500) -> str:
    """The line that says why an app failed: its ``<app>: error:`` line, else its last non-empty line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    line = (errors or lines or ["(no output)"])[-1]
    return line[:limit]


def _die_with_parent() -> None:
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_app(
    command: list[str],
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
    stop: threading.Event,
    cwd: Path | None = None,
    on_start: Callable[[int], None] | None = None,
    grace_s: float = 10.0,
    partial: Sequence[Path] = (),
) -> AppResult:
    """Run the command to completion (or until ``timeout_s``, or ``stop``): output to ``log_path``. An app stopped leaves
    nothing partial: the folders in ``partial`` (its output and work folders) are emptied."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as error:
            return AppResult(-1, 0.0, f"cannot start {command[0]}: {error.strerror}", log_path)
        if on_start:
            on_start(process.pid)
        stopped_by = None
        while process.poll() is None:
            if stop.wait(0.2):
                stopped_by = "gateway shutdown"
            elif time.monotonic() - started > timeout_s:
                stopped_by = f"timeout after {timeout_s:g} s"
            if stopped_by:
                _terminate(process, grace_s)
                break
        kill_group(process.pid, grace_s if stopped_by else 0.0)
    seconds = time.monotonic() - started
    if stopped_by:
        discard_partial_outputs(partial)
        return AppResult(process.returncode, seconds, f"stopped: {stopped_by}", log_path)
    if process.returncode != 0:
        return AppResult(
            process.returncode, seconds, f"exit {process.returncode}: {last_error_line(log_path.read_text(errors='replace'))}", log_path
        )
    return AppResult(0, seconds, None, log_path)


def _terminate(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the app's process group, SIGKILL if it has not gone after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def group_alive(pgid: int) -> bool:
    """Whether a process other than a zombie is still in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(_in_group(pid, pgid) for pid in _pids())


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()] if os.path.isdir("/proc") else []


def _in_group(pid: int, pgid: int) -> bool:
    """``/proc/PID/stat``: its state (field 3) is not Z and its process group (field 5) is ``pgid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and int(fields[2]) == pgid


def kill_group(pgid: int, grace_s: float) -> None:
    """After the app (the group's leader) ended: wait up to ``grace_s`` for the rest of its group, then SIGKILL it."""
    deadline = time.monotonic() + grace_s
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            logger.warning("Killing what is left of the app's process group %d", pgid)
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        time.sleep(0.1)


def discard_partial_outputs(folders: Sequence[Path]) -> None:
    """After an app was stopped (timeout or shutdown): empty the folders it wrote in (its log is elsewhere, and stays)."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)


def dicom_output(path: Path) -> DicomOutput | None:
    """The UIDs recorded of a DICOM file, or None when the file is not DICOM (or not readable)."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID"])
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return None
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        return None
    return DicomOutput(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.get("SeriesInstanceUID", "")) or None)


def visible_files(output_dir: Path, pattern: str = "*") -> list[Path]:
    """Files in the output tree, leaving out hidden ones and everything in hidden folders (an app's ``.partial-*`` staging)."""
    output_dir = Path(output_dir)
    return sorted(
        path
        for path in output_dir.rglob(pattern)
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(output_dir).parts)
    )


def dicom_outputs(output_dir: Path) -> dict[Path, DicomOutput]:
    """Every DICOM file in the output tree (SEG, SR, ...) with its UIDs; other files are not sent."""
    found: dict[Path, DicomOutput] = {}
    for path in visible_files(output_dir):
        if (dicom := dicom_output(path)) is not None:
            found[path] = dicom
    return found


def output_set_problem(output_dir: Path) -> str | None:
    """Why the app's output folder is not a complete output set, or None when it is.

    Complete: at least one ``summary.json``, no ``error.json``, every file a summary lists under ``outputs``
    present beside it, and every DICOM file in the tree listed by the summary of its folder.
    """
    output_dir = Path(output_dir)
    errors = visible_files(output_dir, ERROR_FILE)
    if errors:
        return f"the app wrote {errors[0].relative_to(output_dir)}: {_first_line(errors[0])}"
    summaries = visible_files(output_dir, SUMMARY_FILE)
    if not summaries:
        return f"incomplete output set: no {SUMMARY_FILE} in {output_dir}"
    listed: set[Path] = set()
    for summary in summaries:
        try:
            files = json.loads(summary.read_text()).get("outputs") or {}
        except (OSError, ValueError, AttributeError) as error:
            return f"incomplete output set: {summary.relative_to(output_dir)} is not a JSON object ({type(error).__name__})"
        for kind, name in sorted(files.items()):
            if name is None:
                continue
            path = summary.parent / str(name)
            if not path.resolve().is_relative_to(summary.parent.resolve()):
                return f"incomplete output set: {summary.relative_to(output_dir)} lists {kind} {name}, which is outside its folder"
            if not path.is_file():
                return f"incomplete output set: {summary.relative_to(output_dir)} lists {kind} {name}, which is missing"
            listed.add(path)
    unlisted = sorted(path for path in dicom_outputs(output_dir) if path not in listed)
    if unlisted:
        return f"incomplete output set: {unlisted[0].relative_to(output_dir)} is listed in no {SUMMARY_FILE}"
    return None


def _first_line(path: Path) -> str:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return "(unreadable)"
    message = document.get("error", document) if isinstance(document, dict) else document
    return (str(message).splitlines() or [""])[0][:300]
