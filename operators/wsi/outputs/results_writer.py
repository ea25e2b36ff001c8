"""Write everything a slide produced into its output folder, and its JSON summary.

File outputs in ``<output>/<slide name>/``:
    tissue_mask.png        the tissue mask on the mask grid (white = tissue)
    detections.csv         Camelyon16 submission format: ``probability,x,y`` per line, level-0 px
    probability_map.npy    float32 (rows, cols) map; probability_map.json places it on level 0
    probability_map.tif    pyramidal 8-bit TIFF of the map at its own mpp, for viewers
    detections.geojson     detections (points) and tumor contours (polygons), level-0 px, for QuPath
    overlay.png            heatmap over the slide thumbnail
    tumor_seg.dcm          DICOM input only: FRACTIONAL tiled SEG on the matching pyramid level
    tumor_annotations.dcm  DICOM input only: Bulk Simple Annotations of level 0, the GeoJSON's points and
                           outlines (absent when there are neither)
    tumor_probability_map.dcm  DICOM input only: float Parametric Map of the map on the SEG's level
    summary.json           slide score, lesion count, mpp and level, tissue area, timings, model
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec
from PIL import Image

from operators.core.atomic_io import write_atomically, write_json_atomically
from operators.core.timing import StageTimings, peak_memory_mib
from operators.dicom.seg import EquipmentSpec, ResultSeries, write_seg
from operators.wsi.nms import SlideDetections
from operators.wsi.outputs.bulk_annotations import build_bulk_annotations
from operators.wsi.outputs.dicom_seg import build_fractional_wsi_seg, tumor_segment
from operators.wsi.outputs.geojson import detections_and_contours_geojson, write_geojson
from operators.wsi.outputs.heatmap import render_heatmap_overlay
from operators.wsi.outputs.map_files import write_detections_csv, write_probability_map
from operators.wsi.outputs.parametric_map import build_probability_parametric_map

logger = logging.getLogger(__name__)

OVERLAY_LONG_SIDE_PX = 1024
SUMMARY_FILE = "summary.json"
OUTPUT_FILES = (
    "tissue_mask.png",
    "detections.csv",
    "probability_map.npy",
    "probability_map.tif",
    "probability_map.json",
    "detections.geojson",
    "overlay.png",
    "tumor_seg.dcm",
    "tumor_annotations.dcm",
    "tumor_probability_map.dcm",
    SUMMARY_FILE,
)


def write_png(image: Image.Image, path: Path) -> Path:
    return write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def write_slide_results(
    result: SlideDetections,
    output_dir: Path,
    run_info: dict[str, Any],
    threshold: float,
    seg_result: ResultSeries | None = None,
    flags: tuple[str, ...] = (),
) -> dict[str, str]:
    """Write the slide's files (not the summary); returns {kind: file name}. ``seg_result`` places the
    DICOM SEG (a new series when None); ``flags`` go into the SeriesDescription of every DICOM object.

    The overlay's thumbnail and the DICOM SEG's source levels come from the slide the tissue stage
    resolved, re-opened without choosing its backend or checking it again.
    """
    tissue = result.probability.tissue
    prob_map = result.probability.probability_map
    files: dict[str, str] = {}
    files["tissue_mask"] = write_png(Image.fromarray((tissue.mask * 255).astype(np.uint8)), output_dir / "tissue_mask.png").name
    files["detections_csv"] = write_detections_csv(result.detections, output_dir / "detections.csv").name
    map_files = write_probability_map(
        prob_map, output_dir / "probability_map.npy", output_dir / "probability_map.tif", output_dir / "probability_map.json"
    )
    files |= {
        "probability_map_npy": map_files.npy.name,
        "probability_map_tiff": map_files.tiff.name,
        "probability_map_geometry": map_files.sidecar.name,
    }
    geojson = detections_and_contours_geojson(result.detections, prob_map, threshold)
    files["geojson"] = write_geojson(geojson, output_dir / "detections.geojson").name
    with tissue.slide.open() as slide:
        downsample = max(1.0, max(tissue.size_xy) / OVERLAY_LONG_SIDE_PX)
        overlay = render_heatmap_overlay(slide.thumbnail(downsample), prob_map, downsample)
        files["overlay_png"] = write_png(overlay, output_dir / "overlay.png").name
        if tissue.is_dicom:
            model = run_info["model"]
            segment, equipment = tumor_segment(model["name"], model["version"]), EquipmentSpec(**run_info["equipment"])
            seg = build_fractional_wsi_seg(slide, prob_map, segment, equipment, result=seg_result, flags=flags)
            files["dicom_seg"] = write_seg(seg, output_dir / "tumor_seg.dcm").name
            level0 = slide.dicom_source.volume_levels[0][0].header
            annotations = build_bulk_annotations(level0, geojson, segment, equipment, flags=flags)
            if annotations is not None:
                files["dicom_annotations"] = write_seg(annotations, output_dir / "tumor_annotations.dcm").name
            parametric_map = build_probability_parametric_map(slide, prob_map, segment, equipment, flags=flags)
            files["dicom_parametric_map"] = write_seg(parametric_map, output_dir / "tumor_probability_map.dcm").name
    return files


def slide_summary(result: SlideDetections, files: dict[str, str], run_info: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    """The JSON summary; every length carries its unit, every position is (x, y) at level 0."""
    probability = result.probability
    tissue, grid = probability.tissue, probability.probability_map.grid
    return {
        "slide": {
            "name": tissue.source.name,
            "path": str(tissue.source.path),
            "size_xy_level0_px": list(tissue.size_xy),
            "mpp": round(tissue.mpp, 5),
            "mpp_source": tissue.mpp_source,
            "reader": tissue.backend,
            "dicom": tissue.is_dicom,
        },
        "slide_score": round(result.slide_score, 6),
        "lesion_count": len(result.detections),
        "top_detections": [
            {"probability": round(d.probability, 6), "x_level0_px": d.x, "y_level0_px": d.y} for d in result.detections[:10]
        ],
        "tissue_area_mm2": round(tissue.tissue_area_mm2, 4),
        "probability_map": {
            "mode": probability.mode,
            "shape_rows_cols": list(grid.shape_rows_cols),
            "map_mpp": round(grid.map_mpp, 4),
            "stride_level0_px": round(grid.stride_level0_px, 4),
            "origin_xy_level0_px": [round(v, 4) for v in grid.origin_xy_level0],
            "model_mpp": grid.model_mpp,
            "level0_px_per_model_px": round(grid.level0_px_per_model_px, 5),
            "windows_per_s": round(probability.windows_per_s, 2),
        },
        "outputs": files,
        **{key: value for key, value in run_info.items() if key != "equipment"},
        "timings_s": timings,
        "peak_memory_mib": round(peak_memory_mib(), 1),
    }


class WsiResultsWriterOperator(Operator):
    """Writes the slide's CSV, map, GeoJSON, overlay, tissue mask, DICOM SEG, annotations and parametric map (DICOM input), summary.

    Named inputs:
        detections: SlideDetections (with its SlideProbability and SlideTissue).

    Named outputs:
        none.

    File outputs:
        see the module docstring; all in ``output_dir`` (the app's staging folder, published as one set),
        each written atomically, summary.json last.
    """

    INPUT_DETECTIONS = "detections"

    def __init__(
        self,
        fragment: Fragment,
        *args,
        output_dir: Path,
        run_info: dict[str, Any],
        threshold: float,
        timings: StageTimings,
        seg_result: ResultSeries | None = None,
        **kwargs,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.run_info = run_info
        self.seg_result = seg_result
        self.threshold = threshold
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_DETECTIONS)

    def compute(self, op_input, op_output, context) -> None:
        result: SlideDetections = op_input.receive(self.INPUT_DETECTIONS)
        with self.timings.stage("outputs"):
            flags = tuple(self.run_info.get("flags", ()))
            files = write_slide_results(result, self.output_dir, self.run_info, self.threshold, self.seg_result, flags)
        summary = slide_summary(result, files, self.run_info, self.timings.as_dict())
        if self.seg_result is not None:
            summary["result"] = self.seg_result.as_json() if "dicom_seg" in files else None
        write_json_atomically(self.output_dir / SUMMARY_FILE, summary)
        logger.info(
            "%s: score %.3f, %d lesions; outputs in %s",
            result.probability.tissue.source.name,
            result.slide_score,
            len(result.detections),
            self.output_dir,
        )
