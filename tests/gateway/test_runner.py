"""How an app is started (as its MAP runs it) and which of its outputs are sent; the job listing."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.cli import format_jobs
from gateway.config import Route
from gateway.queue import Job
from gateway.runner import build_command, build_env, dicom_outputs, job_paths, last_error_line, run_app
from testkit.gateway_samples import ct_series, write_series


def test_app_folder_runs_with_python_and_the_holoscan_variables(tmp_path: Path):
    route = Route(
        name="spleen", match={"Modality": ("CT",)}, app=Path("/apps/spleen_seg_app"), model=Path("/models/model.ts"), args=("--x", "1")
    )
    paths = job_paths(tmp_path, 7)
    assert build_command(route, "python3", paths.input, paths.output) == ["python3", "/apps/spleen_seg_app", "--x", "1"]
    env = build_env(route, {"PATH": "/bin"}, paths)
    assert env["HOLOSCAN_INPUT_PATH"] == str(tmp_path / "000007" / "input")
    assert env["HOLOSCAN_OUTPUT_PATH"] == str(tmp_path / "000007" / "output")
    assert env["HOLOSCAN_MODEL_PATH"] == "/models/model.ts" and env["PATH"] == "/bin"


def test_configured_command_gets_input_output_and_model_filled_in(tmp_path: Path):
    route = Route(
        name="map",
        match={"Modality": ("CT",)},
        model=Path("/m"),
        command=("monai-deploy", "run", "spleen:1.0", "-i", "{input}", "-o", "{output}", "--model={model}"),
    )
    assert build_command(route, "python3", Path("/in"), Path("/out")) == [
        "monai-deploy",
        "run",
        "spleen:1.0",
        "-i",
        "/in",
        "-o",
        "/out",
        "--model=/m",
    ]


def test_only_dicom_files_anywhere_in_the_output_tree_are_outputs(tmp_path: Path):
    [seg] = write_series(ct_series(1), tmp_path / "slide-1")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "overlay.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (tmp_path / "tumor_seg.dcm").write_bytes(b"not dicom at all")
    assert dicom_outputs(tmp_path) == {seg: seg.stem}


def test_app_error_line_is_the_one_the_apps_print(tmp_path: Path):
    log = "INFO loading\nTraceback...\nspleen_seg_app: error: no CT series found\nWARNING bye\n"
    assert last_error_line(log) == "spleen_seg_app: error: no CT series found"
    assert last_error_line("one\ntwo\n") == "two"


def test_app_past_its_timeout_is_stopped_and_reported(tmp_path: Path):
    result = run_app(["sleep", "30"], {}, tmp_path / "log", timeout_s=0.5, stop=threading.Event(), grace_s=1)
    assert result.error == "stopped: timeout after 0.5 s" and result.seconds < 5


def test_missing_command_is_reported_not_raised(tmp_path: Path):
    result = run_app([str(tmp_path / "nope")], {}, tmp_path / "log", timeout_s=5, stop=threading.Event())
    assert result.error.startswith("cannot start") and result.returncode == -1


def test_job_listing_shows_state_attempts_outputs_and_error():
    job = Job(
        id=3,
        group_key="study:1.2",
        route="spleen-ct",
        series_uids=("1.2.3",),
        state="failed",
        attempts=3,
        send_attempts=0,
        error="exit 2: spleen_seg_app: error: no CT series\nmore",
        next_try_at=0,
        created_at=0,
        updated_at=0,
        finished_at=None,
    )
    header, line = format_jobs([job], {3: (0, 1)}, now=0).splitlines()
    assert header.split()[:5] == ["id", "state", "route", "attempts", "outputs"]
    assert line.split()[:5] == ["3", "failed", "spleen-ct", "3", "0/1"]
    assert line.endswith("study:1.2  exit 2: spleen_seg_app: error: no CT series")
