"""The demo inputs are reused only when the same generator, with the same parameters, wrote them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training.synthetic.demo_inputs import CT_GENERATOR_SOURCES, SLIDE_GENERATOR_SOURCES, STAMP_FILE, write_demo_ct
from training.synthetic.stamp import REPO_ROOT, generator_sources

SMALL = {"shape_zyx": (8, 48, 48), "spacing_zyx_mm": (20.0, 8.0, 8.0), "seed": 3}


def test_demo_ct_is_reused_when_its_generator_is_unchanged(tmp_path):
    first = write_demo_ct(tmp_path, **SMALL)
    written = {p: p.stat().st_mtime_ns for p in first.dicom_dir.iterdir()}
    again = write_demo_ct(tmp_path, **SMALL)
    assert again == first and {p: p.stat().st_mtime_ns for p in again.dicom_dir.iterdir()} == written


def test_demo_ct_written_by_another_generator_version_is_rewritten(tmp_path):
    demo = write_demo_ct(tmp_path, **SMALL)
    stamp_path = demo.dicom_dir.parent / STAMP_FILE
    stamp_path.write_text("0" * 64)
    (demo.dicom_dir / "stale.dcm").write_bytes(b"left by an older generator")
    write_demo_ct(tmp_path, **SMALL)
    assert not (demo.dicom_dir / "stale.dcm").exists() and stamp_path.read_text() != "0" * 64
    assert len(list(demo.dicom_dir.glob("*.dcm"))) == SMALL["shape_zyx"][0]


def test_demo_ct_with_other_parameters_is_rewritten(tmp_path):
    demo = write_demo_ct(tmp_path, **SMALL)
    write_demo_ct(tmp_path, **{**SMALL, "shape_zyx": (6, 48, 48)})
    assert len(list(demo.dicom_dir.glob("*.dcm"))) == 6


LIST_LOADED_PROJECT_FILES = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
for name, module in sys.modules.items():
    if name.startswith("training.") and getattr(module, "__file__", None):
        print(module.__file__)
"""


def files_loaded_by(source_names: tuple[str, ...]) -> set[Path]:
    """The project's module files (package __init__ files aside) that importing the named generator modules loads."""
    modules = [f"training.synthetic.{name.removesuffix('.py')}" for name in source_names]
    out = subprocess.run(
        [sys.executable, "-c", LIST_LOADED_PROJECT_FILES, *modules], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {Path(line).resolve() for line in out.splitlines() if Path(line).name != "__init__.py"}


@pytest.mark.parametrize("sources", [CT_GENERATOR_SOURCES, SLIDE_GENERATOR_SOURCES])
def test_stamp_covers_every_project_module_the_generator_loads(sources: tuple[str, ...]) -> None:
    assert files_loaded_by(sources) - set(generator_sources(sources)) == set()


def test_slide_stamp_covers_the_annotation_rasteriser_outside_synthetic() -> None:
    assert REPO_ROOT / "training" / "pathology" / "annotations.py" in generator_sources(SLIDE_GENERATOR_SOURCES)
