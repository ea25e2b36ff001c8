"""Build a CT volume in Hounsfield units, with its geometry, from the chosen series.

Pixel data is read here, for the chosen series only. A file whose pixel data is truncated or cannot
be decoded is skipped with a warning and recorded (``CTVolume.dropped_slices``: summary.json and the
SEG say the result covers fewer slices than the series); if that leaves a gap, the series is refused
(never resampled over a missing slice), with an error that names the gap and the unreadable files.
A multi-frame Enhanced CT or Legacy Converted Enhanced CT instance is read whole, its frames being
the slices (:mod:`operators.ct.enhanced_ct`); unreadable pixel data there refuses the series.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset

from operators.core.errors import InvalidSeriesError
from operators.core.timing import StageTimings
from operators.ct.enhanced_ct import frame_headers, is_multiframe_ct, read_multiframe_hu
from operators.ct.series_selector import SeriesRules, SeriesSelection
from operators.ct.slice_geometry import gantry_tilt_deg, index_to_lps_affine, off_line_reason, stack_geometry, uneven_spacing_reason
from operators.dicom.pixel_decoding import ensure_decoder_plugins
from operators.dicom.scan import counted_list

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DroppedSlice:
    """A slice of the chosen series left out of the volume: its instance, file, position (LPS mm, from its
    header) and why (e.g. truncated pixel data). The volume, and so the SEG, covers the others only."""

    sop_instance_uid: str
    path: Path
    image_position_patient_mm: tuple[float, ...] | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "file": self.path.name,
            "image_position_patient_mm": None if self.image_position_patient_mm is None else list(self.image_position_patient_mm),
            "reason": self.reason,
        }

    def describe(self) -> str:
        where = "" if self.image_position_patient_mm is None else f" at {[round(v, 2) for v in self.image_position_patient_mm]} mm"
        return f"{self.path.name}{where} ({self.reason})"


@dataclass(frozen=True)
class CTVolume:
    """A CT volume and where it came from.

    ``hu_zyx`` is float32 Hounsfield units indexed (slice, row, column); ``affine_lps`` maps
    (column, row, slice) indices to patient LPS millimetres; ``source_datasets`` are the slices in
    the same order as ``hu_zyx`` (headers only: pixel data is dropped once decoded).
    ``gantry_tilt_deg`` is the angle between the slice-position step and the slice normal; the
    affine's slice column is always that real step, so it is sheared when the gantry is tilted.
    ``gantry_tilted`` says the angle is above the rules' tolerance (not position rounding).
    For a multi-frame source, ``source_datasets`` are per-frame headers, ``multiframe_source`` the
    instance's header and ``source_frame_numbers`` the 1-based frame of each slice of ``hu_zyx``.
    ``dropped_slices`` are the series' slices left out (unreadable pixel data at an end of the stack).
    """

    hu_zyx: np.ndarray
    affine_lps: np.ndarray
    source_datasets: tuple[Dataset, ...]
    gantry_tilt_deg: float = 0.0
    gantry_tilted: bool = False
    multiframe_source: Dataset | None = None
    source_frame_numbers: tuple[int, ...] | None = None
    dropped_slices: tuple[DroppedSlice, ...] = ()

    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine_lps[:3, :3], axis=0))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine_lps[:3, :3])))

    @property
    def source_images(self) -> tuple[Dataset, ...]:
        """What a derived object (SEG) references: the slices, or the one multi-frame instance."""
        return self.source_datasets if self.multiframe_source is None else (self.multiframe_source,)

    def in_source_order(self, array_zyx: np.ndarray) -> np.ndarray:
        """An array on this volume's grid with its slices in the source's order (frame order for a multi-frame source)."""
        if self.source_frame_numbers is None:
            return array_zyx
        result = np.empty_like(array_zyx)
        result[np.asarray(self.source_frame_numbers) - 1] = array_zyx
        return result


def read_slice(path) -> tuple[Dataset, np.ndarray] | str:
    """A slice's dataset and HU pixels, or why it cannot be used."""
    ensure_decoder_plugins()
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as error:  # noqa: BLE001 -- pydicom and its decoders raise many types on truncated or corrupt pixel data
        return f"pixel data unreadable ({type(error).__name__}: {error})"
    if pixels.shape != (dataset.Rows, dataset.Columns):
        return f"pixel data has shape {pixels.shape}, expected ({dataset.Rows}, {dataset.Columns})"
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    hu = pixels.astype(np.float32)
    if slope != 1:
        hu *= slope
    hu += intercept
    del dataset.PixelData
    return dataset, hu


def build_ct_volume(selection: SeriesSelection, rules: SeriesRules = SeriesRules()) -> CTVolume:
    """Read the chosen series' pixels, apply rescale slope/intercept, order slices along the normal."""
    series = selection.chosen
    if is_multiframe_ct(series.first):
        instance = series.instances[0]
        frames = frame_headers(instance.header)
        hu = read_multiframe_hu(instance.path, frames, series.label)
        return _assemble_volume(series.label, frames, list(hu), rules, multiframe_source=instance.header)
    slices: dict[str, tuple[Dataset, np.ndarray]] = {}
    dropped: list[DroppedSlice] = []
    for instance in series.instances:
        sop_uid = str(instance.header.SOPInstanceUID)
        if sop_uid in slices:
            logger.warning("Skipping %s: another file of %s holds the same SOPInstanceUID", instance.path, series.label)
            continue
        result = read_slice(instance.path)
        if isinstance(result, str):
            logger.warning("Skipping %s: %s", instance.path, result)
            dropped.append(DroppedSlice(sop_uid, instance.path, _position(instance.header), result))
            continue
        slices[sop_uid] = result
    dropped = [d for d in dropped if d.sop_instance_uid not in slices]  # a truncated copy of a slice read from another file
    try:
        if len(slices) < rules.min_slices:
            raise InvalidSeriesError(f"{series.label}: only {len(slices)} readable slices, {rules.min_slices} required")
        datasets, pixels = [dataset for dataset, _ in slices.values()], [hu for _, hu in slices.values()]
        volume = _assemble_volume(series.label, datasets, pixels, rules)
    except InvalidSeriesError as error:
        if not dropped:
            raise
        raise InvalidSeriesError(f"{error}; {dropped_slices_phrase(dropped)}") from error
    if dropped:
        logger.warning("%s: the volume and its outputs leave out %s", series.label, dropped_slices_phrase(dropped))
    return dataclasses.replace(volume, dropped_slices=tuple(dropped))


def dropped_slices_phrase(dropped: list[DroppedSlice]) -> str:
    """One phrase naming the dropped slices (the first few) and why."""
    return counted_list([d.describe() for d in dropped], "slice", "unreadable")


def _position(header: Dataset) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in header.ImagePositionPatient)
    except (AttributeError, TypeError, ValueError):
        return None


def _assemble_volume(
    label: str, datasets: list[Dataset], pixels: list[np.ndarray], rules: SeriesRules, multiframe_source: Dataset | None = None
) -> CTVolume:
    """Check the slices' geometry, sort them along the normal and build the affine (one path for every source)."""
    geometry = stack_geometry(datasets)
    reason = uneven_spacing_reason(geometry.gaps_mm, rules.spacing_relative_tolerance) or off_line_reason(geometry)
    if reason:
        raise InvalidSeriesError(f"{label} refused, not resampled: {reason}")
    hu_zyx = np.empty((len(pixels), *pixels[0].shape), dtype=np.float32)
    for z, index in enumerate(geometry.order):
        hu_zyx[z] = pixels[index]
    sorted_datasets = tuple(datasets[index] for index in geometry.order)
    affine = index_to_lps_affine(sorted_datasets[0], geometry, len(sorted_datasets))
    tilt = gantry_tilt_deg(geometry)
    tilted = tilt > rules.gantry_tilt_tolerance_deg
    if tilted:
        logger.warning(
            "%s: gantry tilt of %.2f degrees (GantryDetectorTilt %s): outputs keep the sheared geometry; "
            "the network sees an orthogonal resampling",
            label,
            tilt,
            sorted_datasets[0].get("GantryDetectorTilt", "absent"),
        )
    logger.info(
        "Volume %s voxels (z, y, x), spacing (x, y, z) %s mm, HU range %.0f..%.0f",
        hu_zyx.shape,
        [round(float(s), 3) for s in np.linalg.norm(affine[:3, :3], axis=0)],
        hu_zyx.min(),
        hu_zyx.max(),
    )
    return CTVolume(
        hu_zyx=hu_zyx,
        affine_lps=affine,
        source_datasets=sorted_datasets,
        gantry_tilt_deg=tilt,
        gantry_tilted=tilted,
        multiframe_source=multiframe_source,
        source_frame_numbers=None if multiframe_source is None else tuple(index + 1 for index in geometry.order),
    )


class CTVolumeOperator(Operator):
    """Turns the chosen series into a HU volume with its LPS geometry.

    Named inputs:
        selection: SeriesSelection from the series selector.

    Named outputs:
        volume: CTVolume, float32 HU (z, y, x), affine (column, row, slice) -> LPS mm, sorted source datasets.
    """

    INPUT_SELECTION = "selection"
    OUTPUT_VOLUME = "volume"

    def __init__(self, fragment: Fragment, *args, rules: SeriesRules, timings: StageTimings, **kwargs) -> None:
        self.rules = rules
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_SELECTION)
        spec.output(self.OUTPUT_VOLUME)

    def compute(self, op_input, op_output, context) -> None:
        selection = op_input.receive(self.INPUT_SELECTION)
        with self.timings.stage("volume"):
            volume = build_ct_volume(selection, self.rules)
        op_output.emit(volume, self.OUTPUT_VOLUME)
