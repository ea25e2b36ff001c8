"""Synthetic phantoms written in the Medical Segmentation Decathlon Task09 (spleen) layout.

``out_dir/dataset.json``, ``out_dir/imagesTr/spleen_N.nii.gz`` (int16 HU) and
``out_dir/labelsTr/spleen_N.nii.gz`` (uint8, 1 = spleen). As in the real dataset the NIfTI arrays
are (x, y, z) and the affine maps (i, j, k) to RAS millimetres with negative x and y steps: the
phantom's column index runs toward the patient's left and its row index toward posterior (DICOM
LPS), which in RAS is -x and -y. Loading such a file with MONAI and reorienting to RAS gives the
same tensor as :func:`operators.ct.preprocessing.volume_to_metatensor` on the (z, y, x) array with
its LPS affine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from training.synthetic.ct_phantom import make_abdomen_phantom
from training.synthetic.dicom_series import centred_origin_lps_mm

logger = logging.getLogger(__name__)

# Ranges for randomly sampled acquisitions (used when no shape/spacing is given).
IN_PLANE_SPACING_MM = (0.7, 1.6)
SLICE_SPACING_MM = (1.5, 3.0)
FIELD_OF_VIEW_MM = (340.0, 440.0)
SCAN_LENGTH_MM = (170.0, 500.0)
MAX_MATRIX = 512


@dataclass(frozen=True)
class MsdCase:
    case_id: int
    image: Path
    label: Path
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    spleen_volume_ml: float
    phantom_seed: int


def nifti_affine_ras(shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float], origin_lps_mm: Sequence[float] | None = None) -> np.ndarray:
    """4x4 affine from (x, y, z) = (column, row, slice) indices to RAS mm, for an axial LPS volume."""
    sz, sy, sx = (float(s) for s in spacing_zyx_mm)
    ox, oy, oz = origin_lps_mm if origin_lps_mm is not None else centred_origin_lps_mm(shape_zyx, spacing_zyx_mm)
    return np.array([[-sx, 0, 0, -ox], [0, -sy, 0, -oy], [0, 0, sz, oz], [0, 0, 0, 1]], dtype=np.float64)


def write_nifti_zyx(volume_zyx: np.ndarray, affine_ras: np.ndarray, path: Path) -> None:
    """Save a (z, y, x) array as an (x, y, z) NIfTI-1 with qform and sform set to ``affine_ras``."""
    image = nib.Nifti1Image(np.ascontiguousarray(np.transpose(volume_zyx, (2, 1, 0))), affine_ras)
    image.set_qform(affine_ras, code=1)
    image.set_sform(affine_ras, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def sample_acquisition(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A random CT acquisition: (shape_zyx, spacing_zyx_mm) with square pixels, at most 512x512."""
    in_plane = float(rng.uniform(*IN_PLANE_SPACING_MM))
    slice_mm = float(rng.uniform(*SLICE_SPACING_MM))
    matrix = min(MAX_MATRIX, int(round(rng.uniform(*FIELD_OF_VIEW_MM) / in_plane)))
    slices = int(round(rng.uniform(*SCAN_LENGTH_MM) / slice_mm))
    return (slices, matrix, matrix), (round(slice_mm, 3), round(in_plane, 4), round(in_plane, 4))


def case_seed(dataset_seed: int, case_id: int) -> int:
    """Phantom seed of a case: a 32-bit hash of (dataset seed, case id), so training phantoms do not
    reuse the small seeds (0, 1, 42, ...) that demos and tests pick."""
    return int(np.random.SeedSequence([int(dataset_seed), int(case_id), 0x5B1EE4]).generate_state(1)[0])


def write_msd_spleen_dataset(
    out_dir: Path,
    n_cases: int,
    shape_zyx: Sequence[int] | None = None,
    spacing_zyx_mm: Sequence[float] | None = None,
    seed: int = 0,
    workers: int = 1,
) -> list[MsdCase]:
    """Write ``n_cases`` phantoms as spleen_1..spleen_N with a Task09-style dataset.json.

    ``shape_zyx`` / ``spacing_zyx_mm`` fix the acquisition of every case; left as None, each case
    draws its own (in-plane 0.7-1.6 mm, slices 1.5-3 mm, 340-440 mm field of view, 170-500 mm
    long). Case ``i`` is phantom seed :func:`case_seed` ``(seed, i)``, so the same arguments give
    the same files, whatever the number of worker processes.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    out_dir = Path(out_dir)
    (out_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    jobs = []
    for case_id in range(1, n_cases + 1):
        shape, spacing = sample_acquisition(rng)
        if shape_zyx is not None:
            shape = tuple(int(n) for n in shape_zyx)
        if spacing_zyx_mm is not None:
            spacing = tuple(float(s) for s in spacing_zyx_mm)
        jobs.append((out_dir, case_id, shape, spacing, case_seed(seed, case_id)))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            cases = list(pool.map(_write_case, *zip(*jobs, strict=False)))
    else:
        cases = [_write_case(*job) for job in jobs]
    _write_dataset_json(out_dir, cases)
    return cases


def _write_case(
    out_dir: Path, case_id: int, shape: tuple[int, int, int], spacing: tuple[float, float, float], phantom_seed: int
) -> MsdCase:
    phantom = make_abdomen_phantom(shape, spacing, phantom_seed)
    affine = nifti_affine_ras(shape, spacing)
    image = out_dir / "imagesTr" / f"spleen_{case_id}.nii.gz"
    label = out_dir / "labelsTr" / f"spleen_{case_id}.nii.gz"
    write_nifti_zyx(phantom.hu_zyx, affine, image)
    write_nifti_zyx(phantom.spleen_mask_zyx, affine, label)
    logger.info(
        "case %d (phantom seed %d): shape %s spacing %s mm, spleen %.0f mL", case_id, phantom_seed, shape, spacing, phantom.spleen_volume_ml
    )
    return MsdCase(case_id, image, label, shape, spacing, phantom.spleen_volume_ml, phantom_seed)


def _write_dataset_json(out_dir: Path, cases: list[MsdCase]) -> None:
    dataset = {
        "name": "Spleen",
        "description": "Spleen Segmentation (synthetic abdominal CT phantoms)",
        "reference": "training.synthetic.ct_phantom",
        "licence": "CC-BY-SA 4.0",
        "release": "synthetic",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{c.image.name}", "label": f"./labelsTr/{c.label.name}"} for c in cases],
        "test": [],
    }
    (out_dir / "dataset.json").write_text(json.dumps(dataset, indent=4) + "\n")
