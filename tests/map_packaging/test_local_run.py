"""The container's command and variables, localized for a run without Docker."""

from __future__ import annotations

import sys
from pathlib import Path

from map_packaging.local_run import LocalMounts, container_environment, container_path_map, entrypoint_command, local_environment, localize


def mounts(tmp_path: Path) -> LocalMounts:
    return LocalMounts(tmp_path / "in", tmp_path / "out", tmp_path / "work")


def test_monai_deploy_run_variables_point_input_and_output_at_the_mounts_under_the_working_directory(spleen_context):
    env = container_environment(spleen_context.app_json)
    assert (env["HOLOSCAN_INPUT_PATH"], env["HOLOSCAN_OUTPUT_PATH"]) == ("/var/holoscan/input/", "/var/holoscan/output/")
    assert env["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"


def test_localized_variables_name_the_context_folders_and_the_local_mounts(spleen_context, tmp_path: Path):
    local = mounts(tmp_path)
    path_map = container_path_map(spleen_context.root, local)
    env = local_environment(spleen_context.app_json, path_map, {"PATH": "/usr/bin", "PYTHONPATH": "/repo", "HOLOSCAN_MODEL_PATH": "/stale"})
    assert Path(env["HOLOSCAN_INPUT_PATH"]) == local.input_dir and Path(env["HOLOSCAN_OUTPUT_PATH"]) == local.output_dir
    assert Path(env["HOLOSCAN_MODEL_PATH"]) == spleen_context.models_dir
    assert Path(env["HOLOSCAN_APPLICATION"]) == spleen_context.app_dir
    assert Path(env["HOLOSCAN_WORKDIR"]) == local.work_dir
    assert Path(env["HOLOSCAN_APP_MANIFEST_PATH"]) == spleen_context.root / "map" / "app.json"
    assert Path(env["HOLOSCAN_CONFIG_PATH"]) == spleen_context.root / "app.config"
    assert "PYTHONPATH" not in env and env["PATH"] == "/usr/bin"


def test_entrypoint_command_is_this_python_on_the_context_app_folder(spleen_context, tmp_path: Path):
    path_map = container_path_map(spleen_context.root, mounts(tmp_path))
    assert entrypoint_command(spleen_context.app_json, path_map) == [sys.executable, str(spleen_context.app_dir)]


def test_localize_replaces_whole_path_components_only(tmp_path: Path):
    path_map = {"/var/holoscan": tmp_path / "work", "/var/holoscan/output": tmp_path / "out"}
    assert localize("/var/holoscan/output/x/seg.dcm", path_map) == str(tmp_path / "out" / "x" / "seg.dcm")
    assert localize("/var/holoscan/logs", path_map) == str(tmp_path / "work" / "logs")
    assert localize("/var/holoscanX/logs", path_map) == "/var/holoscanX/logs"
    assert localize("input/", path_map) == "input/"
