"""Real CT data nobody on this project wrote: pydicom's GE test series and InVesalius' head CT.

The head CT (Debian package invesalius-examples, Cranium.inv3) is a tar.gz holding ``main.plist``
(shape (slices, rows, columns), spacing (x, y, z) mm) and ``matrix.dat`` (raw int16 HU); it is
turned into a DICOM CT series by the project's own series writer.
"""

from __future__ import annotations

import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.synthetic.dicom_series import write_ct_series

CRANIUM_INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
GE_CT5N = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
requires_cranium = pytest.mark.skipif(
    not CRANIUM_INV3.exists(), reason="Debian package invesalius-examples is not installed; scripts/setup.sh --with-test-tools installs it"
)


def read_inv3_volume(inv3: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """HU volume (slice, row, column) and spacing (z, y, x) mm of an InVesalius 3 project."""
    with tarfile.open(inv3, "r:gz") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        main = plistlib.loads(archive.extractfile(members["main.plist"]).read())
        matrix = main["matrix"]
        raw = archive.extractfile(members[matrix["filename"]]).read()
    volume = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"])).reshape(matrix["shape"])
    spacing_x, spacing_y, spacing_z = (float(v) for v in main["spacing"])
    return volume, (spacing_z, spacing_y, spacing_x)


def write_cranium_series(out_dir: Path) -> Path:
    volume, spacing_zyx = read_inv3_volume(CRANIUM_INV3)
    write_ct_series(
        volume,
        spacing_zyx,
        out_dir,
        patient_id="INV3-CRANIUM",
        patient_name="InVesalius^Cranium",
        series_description="InVesalius Cranium head CT",
        body_part_examined="HEAD",
        seed=51,
    )
    return out_dir
