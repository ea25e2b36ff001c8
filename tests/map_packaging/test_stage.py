"""Staging an app as a self-contained MAP source folder."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from map_packaging.app_specs import APPS, REPO_ROOT, app_spec
from map_packaging.stage import StagingError, stage_app, unresolved_first_party_imports


@pytest.mark.parametrize("app", sorted(APPS))
def test_staged_folder_holds_entry_point_manifest_requirements_code_and_model_configs_but_no_weights(app: str, tmp_path: Path):
    staged = stage_app(app_spec(app), tmp_path / "staged")
    assert (staged / "__main__.py").read_bytes() == (REPO_ROOT / "apps" / app / "__main__.py").read_bytes()
    assert (staged / "app.yaml").read_bytes() == (REPO_ROOT / "apps" / app / "app.yaml").read_bytes()
    assert (staged / "requirements.txt").read_bytes() == (REPO_ROOT / "requirements.txt").read_bytes()
    for module in (
        "apps/__init__.py",
        "apps/common/entrypoint.py",
        f"apps/{app}/app.py",
        "operators/models/networks.py",
        "operators/models/loader.py",
    ):
        assert (staged / module).is_file(), module
    for model in app_spec(app).model_names:
        assert (staged / "model_zoo" / model / "config.json").is_file()
    assert not [p for p in staged.rglob("*") if p.suffix in (".ts", ".pt", ".pth", ".pyc") or p.name == "__pycache__"]


@pytest.mark.parametrize("app", sorted(APPS))
def test_every_project_import_of_the_staged_code_resolves_inside_the_staged_folder(app: str, tmp_path: Path):
    staged = stage_app(app_spec(app), tmp_path / "staged")
    assert unresolved_first_party_imports(staged) == []


def test_import_check_names_a_project_module_missing_from_the_folder(tmp_path: Path):
    staged = stage_app(app_spec("spleen_seg_app"), tmp_path / "staged")
    (staged / "operators" / "models" / "networks.py").unlink()
    (staged / "operators" / "extra.py").write_text("from training.spleen import settings\nfrom .core.timing import StageTimings\n")
    missing = unresolved_first_party_imports(staged)
    assert "apps/spleen_seg_app/app.py: operators.models.networks" in missing
    assert "operators/extra.py: training.spleen" in missing
    assert not [m for m in missing if m.endswith("operators.core.timing")]


def test_staging_refuses_a_folder_that_is_not_empty(tmp_path: Path):
    (tmp_path / "old.txt").write_text("stale")
    with pytest.raises(StagingError, match="not empty"):
        stage_app(app_spec("spleen_seg_app"), tmp_path)


def test_unknown_app_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="spleen_seg_app"):
        app_spec("no_such_app")


IMPORT_PROBE = """
import json, runpy, sys
runpy.run_path(sys.argv[1], run_name="staged_app")
print(json.dumps({name: module.__file__ for name, module in sys.modules.items()
                  if name.split(".")[0] in ("apps", "operators") and getattr(module, "__file__", None)}))
"""


def _stack_32mib() -> None:  # as `ulimit -s 32768`: the entry point then has no reason to re-execute itself
    resource.setrlimit(resource.RLIMIT_STACK, (32 * 1024 * 1024, resource.getrlimit(resource.RLIMIT_STACK)[1]))


def probe_imports(app_dir: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the entry point's imports (not main) of ``app_dir`` in a fresh interpreter; prints module -> file."""
    return subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(app_dir)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=_stack_32mib,
    )


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUPY_CACHE_DIR")}, **extra}


@pytest.mark.slow
@pytest.mark.parametrize("app", sorted(APPS))
def test_staged_copy_imports_only_its_own_code_from_elsewhere_without_pythonpath(app: str, tmp_path: Path):
    staged = stage_app(app_spec(app), tmp_path / "staged")
    copy = shutil.copytree(staged, tmp_path / "copy" / "app")
    shutil.rmtree(staged)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = probe_imports(copy, elsewhere, clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"apps.common.entrypoint", f"apps.{app}.app", "operators.models.networks", "operators.models.loader"} <= set(modules)
    assert all(Path(path).is_relative_to(copy) for path in modules.values()), modules


# `monai-deploy run` runs the container as the host user's uid; for a uid the image does not know, Docker
# sets HOME=/, which that user cannot write. `import cupy` (via monai.deploy.operators) creates
# ~/.cupy/kernel_cache at import time. A file standing in for HOME makes that creation fail here even as root.


@pytest.mark.slow
def test_staged_app_imports_when_home_is_not_writable(tmp_path: Path):
    staged = stage_app(app_spec("spleen_seg_app"), tmp_path / "staged")
    (tmp_path / "home").write_text("not a folder")
    result = probe_imports(staged, tmp_path, clean_env(HOME=str(tmp_path / "home")))
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_staged_app_imports_with_unwritable_home_once_cupy_cache_dir_points_at_a_writable_folder(tmp_path: Path):
    staged = stage_app(app_spec("spleen_seg_app"), tmp_path / "staged")
    (tmp_path / "home").write_text("not a folder")
    result = probe_imports(staged, tmp_path, clean_env(HOME=str(tmp_path / "home"), CUPY_CACHE_DIR=str(tmp_path / "cupy")))
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    ("app", "carried", "not_carried"),
    [
        ("spleen_seg_app", ("core", "models", "dicom", "ct"), ("wsi",)),
        ("wsi_metastasis_app", ("core", "models", "dicom", "wsi", "wsi/slide", "wsi/outputs"), ("ct",)),
    ],
)
def test_a_map_carries_only_the_operator_packages_its_app_imports(
    app: str, carried: tuple[str, ...], not_carried: tuple[str, ...], tmp_path: Path
):
    staged = stage_app(app_spec(app), tmp_path / "staged")
    for package in carried:
        assert (staged / "operators" / package / "__init__.py").is_file(), package
        source = sorted(p.name for p in (REPO_ROOT / "operators" / package).glob("*.py"))
        assert sorted(p.name for p in (staged / "operators" / package).glob("*.py")) == source, package
    for package in not_carried:
        assert not (staged / "operators" / package).exists(), package
