"""``python -m map_packaging``: stage and context from the command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from map_packaging.__main__ import main

from .conftest import SPLEEN_MODELS


def test_stage_writes_the_folder_and_logs_the_monai_deploy_package_command(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="map_packaging"):
        assert main(["stage", "--app", "spleen_seg_app", "--out", str(tmp_path / "staged"), "--models", str(SPLEEN_MODELS)]) == 0
    assert (tmp_path / "staged" / "__main__.py").is_file()
    command = next(r.getMessage() for r in caplog.records if "monai-deploy package" in r.getMessage())
    staged = (tmp_path / "staged").resolve()
    assert f"monai-deploy package {staged} -c {staged / 'app.yaml'} -t spleen-seg-app --platform x86_64 --cuda 13" in command
    assert "--source " in command and "artifacts.json" in command


def test_context_writes_manifests_dockerfile_app_and_models(tmp_path: Path):
    assert main(["context", "--app", "spleen_seg_app", "--models", str(SPLEEN_MODELS), "--out", str(tmp_path / "ctx")]) == 0
    for path in (
        "Dockerfile",
        "map/app.json",
        "map/pkg.json",
        "app/__main__.py",
        "pip/requirements.txt",
        "models/spleen_ct_segmentation/model.ts",
    ):
        assert (tmp_path / "ctx" / path).is_file(), path
    assert json.loads((tmp_path / "ctx" / "map" / "app.json").read_text())["command"] == '["python3", "/opt/holoscan/app"]'


def test_unknown_app_is_a_usage_error(tmp_path: Path):
    with pytest.raises(SystemExit) as error:
        main(["stage", "--app", "nope", "--out", str(tmp_path)])
    assert error.value.code == 2
