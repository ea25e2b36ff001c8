"""Gantry-tilted copies of the demo phantom through the spleen app: where the outputs land.

For each tilt the demo anatomy is scanned with tilted planes (training.synthetic.ct_tilt) and the
spleen app runs on it (its command line, default options). Reported per tilt: Dice of the SEG
against the resampled truth; distance from the STL's volume centroid to the centroid of the SEG's
voxels placed through the SEG's own frame positions (pydicom only); the same distance for the surface
built from the orthogonal affine the app used before (slices stepped along the normal); the STL
volume against the summary's voxel volume; the tilt the app reported.

    python -m benchmarks.gantry_tilt [--tilts 0 5 10 25 -10]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import trimesh

from operators.core.metrics import dice_score
from operators.ct.series_selector import select_ct_series
from operators.ct.stl_writer import mask_surface_lps
from operators.ct.volume import build_ct_volume
from operators.dicom.scan import scan_dicom_folder
from operators.dicom.seg_readback import read_seg_on_source
from testkit.seg_geometry import seg_voxel_points_lps_mm
from training.synthetic.ct_phantom import make_abdomen_phantom
from training.synthetic.ct_tilt import resample_phantom, tilted_grid
from training.synthetic.demo_inputs import DEMO_CT_SEED, DEMO_CT_SHAPE_ZYX, DEMO_CT_SPACING_ZYX_MM

REPO_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger(__name__)


def orthogonal_affine(affine_lps: np.ndarray) -> np.ndarray:
    """The affine before the fix: the slice column along the normal, by the slice separation."""
    result = affine_lps.copy()
    normal = np.cross(affine_lps[:3, 0], affine_lps[:3, 1])
    normal /= np.linalg.norm(normal)
    result[:3, 2] = normal * abs(float(affine_lps[:3, 2] @ normal))
    return result


def measure_tilt(phantom, tilt_deg: float, work: Path) -> dict:
    grid = tilted_grid(DEMO_CT_SHAPE_ZYX, DEMO_CT_SPACING_ZYX_MM, tilt_deg, "x")
    hu, truth = resample_phantom(phantom, grid)
    dicom, out = work / f"tilt_{tilt_deg:g}" / "dicom", work / f"tilt_{tilt_deg:g}" / "out"
    grid.write(hu, dicom, tilt_deg=tilt_deg, seed=DEMO_CT_SEED)
    command = [sys.executable, str(REPO_ROOT / "apps" / "spleen_seg_app"), "-i", str(dicom), "-o", str(out)]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO_ROOT)
    summary = json.loads((out / "summary.json").read_text())
    seg = out / "spleen_seg.dcm"
    mask = read_seg_on_source(seg, summary["input"]["sop_instance_uids"])
    voxels = seg_voxel_points_lps_mm(seg)
    surface = trimesh.load(out / "spleen.stl")
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(dicom)))
    before = trimesh.Trimesh(*mask_surface_lps(mask, orthogonal_affine(volume.affine_lps)))
    return {
        "tilt_deg": tilt_deg,
        "reported_deg": summary["input"]["gantry_tilt"]["angle_deg"],
        "dice": dice_score(mask, truth),
        "stl_centroid_error_mm": float(np.linalg.norm(surface.center_mass - voxels.mean(axis=0))),
        "orthogonal_affine_centroid_error_mm": float(np.linalg.norm(before.center_mass - voxels.mean(axis=0))),
        "stl_volume_vs_voxels": surface.volume / 1000 / summary["spleen"]["volume_ml"] - 1,
        "volume_ml": summary["spleen"]["volume_ml"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tilts", type=float, nargs="+", default=[0.0, 5.0, 10.0, 25.0, -10.0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n, rows, columns = DEMO_CT_SHAPE_ZYX
    phantom = make_abdomen_phantom((n + 60, rows, columns), DEMO_CT_SPACING_ZYX_MM, DEMO_CT_SEED)
    with tempfile.TemporaryDirectory() as work:
        results = [measure_tilt(phantom, tilt, Path(work)) for tilt in args.tilts]
    header = "tilt_deg reported_deg dice stl_centroid_error_mm orthogonal_affine_centroid_error_mm stl_volume_vs_voxels volume_ml"
    sys.stdout.write(header + "\n")
    for row in results:
        sys.stdout.write(
            f"{row['tilt_deg']:8.1f} {row['reported_deg']:12.2f} {row['dice']:.4f} {row['stl_centroid_error_mm']:21.3f} "
            f"{row['orthogonal_affine_centroid_error_mm']:35.2f} {row['stl_volume_vs_voxels']:+20.2%} {row['volume_ml']:9.1f}\n"
        )


if __name__ == "__main__":
    main()
