"""The layout rules of the source tree (issue 11), checked by scanning every import."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from map_packaging import stage

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400  # "about 400 lines at most" outside tests/


def tracked_python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [REPO_ROOT / name for name in listed if (REPO_ROOT / name).is_file()]


def imported_modules(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """Absolute dotted names of every module ``path`` imports (relative imports resolved against ``root``),
    as the MAP stager reads them."""
    return [".".join(module) for module, is_name in stage.imported_modules(path, root) if not is_name]


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("operators/wsi", "operators.ct"),
        ("operators/ct", "operators.wsi"),
        ("operators/core", "operators.ct"),
        ("operators/core", "operators.wsi"),
        ("operators/core", "operators.dicom"),
        ("operators/core", "operators.models"),
        ("operators/models", "operators.ct"),
        ("operators/models", "operators.wsi"),
        ("operators/dicom", "operators.ct"),
        ("operators/dicom", "operators.wsi"),
        ("operators", "training"),
        ("operators", "apps"),
        ("operators", "gateway"),
        ("training/pathology", "training.spleen"),
    ],
)
def test_no_import_runs_the_wrong_way(importer: str, forbidden: str):
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {module}"
        for path in tracked_python_files()
        if path.is_relative_to(REPO_ROOT / importer)
        for module in imported_modules(path)
        if is_under(module, forbidden)
    ]
    assert offenders == []


def test_nothing_outside_tests_imports_tests():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {module}"
        for path in tracked_python_files()
        if not path.is_relative_to(REPO_ROOT / "tests")
        for module in imported_modules(path)
        if is_under(module, "tests")
    ]
    assert offenders == []


def test_no_source_file_outside_tests_is_over_about_400_lines():
    long_files = {
        str(path.relative_to(REPO_ROOT)): n
        for path in tracked_python_files()
        if not path.is_relative_to(REPO_ROOT / "tests") and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long_files == {}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..ct.volume import CTVolume\n", "operators.ct.volume"),
        ("from .grid import MapGrid\n", "operators.wsi.grid"),
        ("import operators.ct.volume as v\n", "operators.ct.volume"),
        ("def f():\n    from operators.ct import volume\n", "operators.ct"),
    ],
)
def test_the_scan_resolves_relative_lazy_and_plain_imports(source: str, expected: str, tmp_path: Path):
    module = tmp_path / "operators" / "wsi" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    assert imported_modules(module, root=tmp_path) == [expected]
    assert is_under(expected, "operators.ct") == ("operators.ct" in expected)
