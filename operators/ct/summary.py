"""The JSON summary of a segmentation run: what went in, what came out, and how long it took."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.core.atomic_io import write_json_atomically
from operators.core.timing import StageTimings, peak_memory_mib
from operators.ct.series_selector import SeriesSelection
from operators.ct.volume import CTVolume

logger = logging.getLogger(__name__)


def organ_volume_ml(mask_zyx: np.ndarray, voxel_volume_mm3: float) -> float:
    """Volume of the mask in millilitres (1 mL = 1000 mm^3)."""
    return float(np.count_nonzero(mask_zyx)) * voxel_volume_mm3 / 1000.0


def mask_points_lps_mm(mask_zyx: np.ndarray, affine_lps: np.ndarray) -> np.ndarray:
    """(n, 3) LPS positions (mm) of the mask's voxel centres, through the (possibly sheared) affine."""
    return np.argwhere(mask_zyx)[:, ::-1].astype(np.float64) @ affine_lps[:3, :3].T + affine_lps[:3, 3]


def mask_extent_lps_mm(mask_zyx: np.ndarray, affine_lps: np.ndarray) -> dict[str, list[float] | None]:
    """Centroid and bounding box (LPS mm, of voxel centres) of the mask; None values when it is empty."""
    if not mask_zyx.any():
        return {"centroid_lps_mm": None, "bounding_box_lps_mm": None}
    points = mask_points_lps_mm(mask_zyx, affine_lps)
    return {
        "centroid_lps_mm": _rounded_mm(points.mean(axis=0)),
        "bounding_box_lps_mm": {"min": _rounded_mm(points.min(axis=0)), "max": _rounded_mm(points.max(axis=0))},
    }


def _rounded_mm(values: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in values]


def gantry_tilt_summary(volume: CTVolume) -> dict[str, Any]:
    """The tilt found in the slice positions, the scanner's own GantryDetectorTilt, and what was done."""
    tag = volume.source_datasets[0].get("GantryDetectorTilt") if volume.source_datasets else None
    return {
        "angle_deg": round(volume.gantry_tilt_deg, 2),
        "tilted": volume.gantry_tilted,
        "gantry_detector_tilt_deg": None if tag in (None, "") else float(tag),
        "handling": "sheared geometry kept for every output; orthogonal resampling for the network" if volume.gantry_tilted else None,
    }


def lossy_compression_summary(volume: CTVolume) -> dict[str, Any]:
    """Whether the pixels went through lossy compression (LossyImageCompression 01 on any source), and how."""
    lossy = [ds for ds in volume.source_images if str(ds.get("LossyImageCompression", "")) == "01"]
    methods = sorted({str(m) for ds in lossy for m in _values(ds.get("LossyImageCompressionMethod"))})
    return {"lossy": bool(lossy), "slices": len(lossy), "methods": methods}


def _values(value: Any) -> list:
    """A DICOM value as a list: empty, one value, or a multi-value."""
    if value in (None, ""):
        return []
    return [value] if isinstance(value, str) else list(value)


def segmentation_summary(
    selection: SeriesSelection,
    volume: CTVolume,
    mask_zyx: np.ndarray,
    outputs: dict[str, Path | None],
    organ: str,
    run_info: dict[str, Any],
) -> dict[str, Any]:
    """A JSON-ready dictionary; ``run_info`` carries app, model, device and timings."""
    first = volume.source_datasets[0]
    return {
        organ: {
            "volume_ml": round(organ_volume_ml(mask_zyx, volume.voxel_volume_mm3), 3),
            "voxel_count": int(np.count_nonzero(mask_zyx)),
            "found": bool(mask_zyx.any()),
            **mask_extent_lps_mm(mask_zyx, volume.affine_lps),
        },
        "input": {
            "study_instance_uid": str(first.StudyInstanceUID),
            "series_instance_uid": str(first.SeriesInstanceUID),
            "series_number": first.get("SeriesNumber"),
            "series_description": str(first.get("SeriesDescription", "")),
            "grid_zyx": list(volume.hu_zyx.shape),
            "spacing_xyz_mm": [round(s, 4) for s in volume.spacing_xyz_mm],
            "voxel_volume_mm3": round(volume.voxel_volume_mm3, 4),
            "gantry_tilt": gantry_tilt_summary(volume),
            "sop_instance_uids": [str(ds.SOPInstanceUID) for ds in volume.source_images],
            "source_frame_numbers": None if volume.source_frame_numbers is None else list(volume.source_frame_numbers),
            "transfer_syntaxes": sorted({str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")) for ds in volume.source_images}),
            "lossy_compression": lossy_compression_summary(volume),
            "dropped_slices": [dropped.as_json() for dropped in volume.dropped_slices],
            "skipped_series": [{"series_instance_uid": s.series_instance_uid, "reason": reason} for s, reason in selection.skipped],
            "skipped_files": [{"path": str(f.path), "reason": f.reason} for f in selection.skipped_files],
        },
        "outputs": {name: (path.name if path else None) for name, path in outputs.items()},
        **run_info,
    }


class SegmentationSummaryOperator(Operator):
    """Writes the run's JSON summary once every output file is written.

    Named inputs:
        selection: SeriesSelection; volume: CTVolume; mask: numpy uint8 (z, y, x);
        seg_path, sr_path, stl_path, overlay_path: pathlib.Path (stl_path None when the mask is empty);
        checks: an object with ``as_json()`` (operators.ct.checks.ResultChecks), the result's flags and checks.

    Named outputs:
        none.

    File outputs:
        <output_path>: JSON with organ volume (mL), the series and instances used, the slices dropped
        (unreadable pixel data), skipped series and files,
        model identity (name, version, SHA-256, integrity), the checks and their flags, device and
        per-stage timings (s), peak memory (MiB).
    """

    INPUT_SELECTION = "selection"
    INPUT_VOLUME = "volume"
    INPUT_MASK = "mask"
    INPUT_SEG_PATH = "seg_path"
    INPUT_SR_PATH = "sr_path"
    INPUT_STL_PATH = "stl_path"
    INPUT_OVERLAY_PATH = "overlay_path"
    INPUT_CHECKS = "checks"
    INPUTS = (INPUT_SELECTION, INPUT_VOLUME, INPUT_MASK, INPUT_SEG_PATH, INPUT_SR_PATH, INPUT_STL_PATH, INPUT_OVERLAY_PATH, INPUT_CHECKS)

    def __init__(
        self, fragment: Fragment, *args, output_path: Path, organ: str, run_info: dict[str, Any], timings: StageTimings, **kwargs
    ) -> None:
        self.output_path = Path(output_path)
        self.organ = organ
        self.run_info = run_info
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        for name in self.INPUTS:
            spec.input(name)

    def compute(self, op_input, op_output, context) -> None:
        received = {name: op_input.receive(name) for name in self.INPUTS}
        outputs = {
            "dicom_seg": received[self.INPUT_SEG_PATH],
            "dicom_sr": received[self.INPUT_SR_PATH],
            "stl": received[self.INPUT_STL_PATH],
            "overlay_png": received[self.INPUT_OVERLAY_PATH],
        }
        run_info = self.run_info | {
            "checks": received[self.INPUT_CHECKS].as_json(),
            "timings_s": self.timings.as_dict(),
            "peak_memory_mib": round(peak_memory_mib(), 1),
        }
        selection, volume, mask = (received[name] for name in (self.INPUT_SELECTION, self.INPUT_VOLUME, self.INPUT_MASK))
        summary = segmentation_summary(selection, volume, mask, outputs, self.organ, run_info)
        write_json_atomically(self.output_path, summary)
        logger.info("%s volume %.1f mL; outputs in %s", self.organ, summary[self.organ]["volume_ml"], self.output_path.parent)
