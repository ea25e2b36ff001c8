"""Independent validators used by the tests: dicom3tools' dciodvfy, and dcmqi's readers (QIICR's C++
tools, PyPI wheel ``dcmqi``: ``tid1500reader`` for TID 1500 SRs, ``segimage2itkimage`` for SEGs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DCIODVFY = shutil.which("dciodvfy")
requires_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed; scripts/setup.sh --with-test-tools installs it"
)

DCMQI_BIN = Path(sys.executable).parent  # the wheel installs its tools beside the venv's python
requires_dcmqi = pytest.mark.skipif(
    not (DCMQI_BIN / "tid1500reader").exists(),
    reason="dcmqi is not installed in the venv; scripts/setup.sh --with-test-tools installs it (requirements-test.txt)",
)

# dicom3tools 1.00 (2022-06-18, Debian's) verifies Common Z Coordinate Value (006A,0010) of every Annotation
# Group Sequence item with the condition "Annotation Coordinate Type is not 3D" whether or not the attribute
# is present, so every 2D annotation object gets this error with an empty value (checked here: the error
# goes away when the object claims 3D). PS3.3 C.37.1.2 (Table C.37.1.2-1) makes the attribute Type 1C,
# required only for Annotation Coordinate Type 3D; a 2D object does not carry it, and the tests that allow
# this error assert that it is absent.
DCIODVFY_2D_ANN_FALSE_ERROR = "Error - Only valid for AnnotationCoordinateType of 3D - attribute <CommonZCoordinateValue> = <>"


def dciodvfy_errors(path: Path) -> list[str]:
    """The 'Error' lines dciodvfy reports for a DICOM file (empty when it conforms to its IOD)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    if result.returncode != 0 and not errors:
        errors = [f"dciodvfy exited {result.returncode}: {result.stderr.strip()}"]
    return errors


def _run_dcmqi(tool: str, *args: str) -> None:
    result = subprocess.run([str(DCMQI_BIN / tool), *args], capture_output=True, text=True, check=False, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"{tool} exited {result.returncode}: {(result.stdout + result.stderr)[-2000:]}")


def tid1500_metadata(sr_path: Path, folder: Path) -> dict[str, Any]:
    """dcmqi's ``tid1500reader`` reading of a TID 1500 SR: its JSON metadata."""
    output = Path(folder) / f"{Path(sr_path).stem}.tid1500.json"
    _run_dcmqi("tid1500reader", "--inputDICOM", str(sr_path), "--outputMetadata", str(output))
    return json.loads(output.read_text())


def seg_to_itk_images(seg_path: Path, folder: Path) -> list[Path]:
    """dcmqi's ``segimage2itkimage`` conversion of a SEG: one NRRD image per segment (in segment order)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _run_dcmqi("segimage2itkimage", "--inputDICOM", str(seg_path), "--outputDirectory", str(folder), "--outputType", "nrrd", "-p", "seg")
    return sorted(folder.glob("seg-*.nrrd"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
