"""The spleen CT segmentation application: a graph of single-purpose operators on the MONAI Deploy SDK.

    DICOM folder -> series selection -> abdominal pre-flight -> HU volume -> sliding-window UNet
                 -> largest component -> result checks -> DICOM SEG -> DICOM SR, STL, overlay PNG -> JSON summary

Output files in the output folder: ``spleen_seg.dcm``, ``spleen_sr.dcm`` (the volume as a TID 1500 SR
referencing the SEG), ``spleen.stl`` (absent when no spleen is found), ``spleen_overlay.png``,
``summary.json``. They are written into a staging folder and published
as one set, summary.json last (operators.core.output_set); a failed run leaves the previous set.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from holoscan.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from pydicom.sr.codedict import codes

from apps.common.context import app_context
from operators.core.device import Precision, choose_compute_device
from operators.core.output_set import staged_output_set
from operators.core.timing import StageTimings
from operators.ct.checks import ResultChecksOperator, SeriesPreflightOperator, volume_range_ml
from operators.ct.inference import CTSegmentationInferenceOperator, SlidingWindowSettings
from operators.ct.overlay_writer import OverlayWriterOperator
from operators.ct.postprocessing import MaskPostprocessingOperator
from operators.ct.preflight import AbdominalPolicy, AbdominalRule
from operators.ct.seg_writer import DicomSegWriterOperator
from operators.ct.series_selector import CTSeriesSelectorOperator, GantryTiltPolicy, SeriesRules
from operators.ct.sr_writer import VolumeSrWriterOperator
from operators.ct.stl_writer import STLWriterOperator
from operators.ct.summary import SegmentationSummaryOperator
from operators.ct.volume import CTVolumeOperator
from operators.dicom.scan import DicomFolderLoaderOperator
from operators.dicom.seg import EquipmentSpec, ResultSeries, SegmentSpec
from operators.models.config import load_model_config, model_dir
from operators.models.loader import check_output_channels, load_model
from operators.models.networks import build_spleen_unet
from operators.models.runtime import PREBUILT_CACHE_DIRNAME, Backend, choose_runtime, prepare_network

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent
MODEL_NAME = "spleen_ct_segmentation"
DEFAULT_MODEL_PATH = model_dir(MODEL_NAME) / "model.ts"
PREBUILT_RUNTIME_CACHE = APP_DIR.parents[1] / PREBUILT_CACHE_DIRNAME  # in a MAP: /opt/holoscan/app/runtime_cache
MANUFACTURER = "clinical-ai-apps"
SEG_FILE, STL_FILE, OVERLAY_FILE, SUMMARY_FILE = "spleen_seg.dcm", "spleen.stl", "spleen_overlay.png", "summary.json"
SR_FILE = "spleen_sr.dcm"
OUTPUT_FILES = (SEG_FILE, SR_FILE, STL_FILE, OVERLAY_FILE, SUMMARY_FILE)


def app_manifest() -> dict:
    """The app's title and version, from its MAP manifest (the one place they are written)."""
    return yaml.safe_load((APP_DIR / "app.yaml").read_text())["application"]


@dataclass(frozen=True)
class SpleenAppOptions:
    """Options beyond the SDK's -i/-o/-m/-w; None means the model config's value."""

    largest_component: bool = True
    overlap: float | None = None
    sw_batch_size: int | None = None
    crop_to_body: bool = True
    precision: Precision = "auto"
    backend: Backend = "auto"
    device: str = "auto"
    min_slices: int = SeriesRules.min_slices
    on_gantry_tilt: GantryTiltPolicy = SeriesRules.on_gantry_tilt
    on_non_abdominal: AbdominalPolicy = "refuse"
    volume_range_ml: tuple[float, float] | None = None
    result_series_uid: str | None = None
    supersedes_sop_uid: str | None = None
    allow_unverified_model: bool = False


class SpleenSegApp(Application):
    """Segments the spleen in the best CT series of a DICOM folder."""

    def __init__(self, *args, options: SpleenAppOptions = SpleenAppOptions(), **kwargs) -> None:
        self.app_options = options
        self.staging: Path | None = None
        self.context: AppContext | None = None
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        """Run the graph into a staging folder inside the output folder; publish the set when it is done."""
        self.context = app_context(self.argv)
        with staged_output_set(Path(self.context.output_path), OUTPUT_FILES) as staging:
            self.staging = staging
            super().run()

    def compose(self) -> None:
        context = self.context or app_context(self.argv)
        output_folder = self.staging or Path(context.output_path)
        config = load_model_config(MODEL_NAME)
        options = self.app_options
        timings = StageTimings()
        rules = SeriesRules(min_slices=options.min_slices, on_gantry_tilt=options.on_gantry_tilt)
        compute = choose_compute_device(options.device, options.precision)
        settings = SlidingWindowSettings.from_config(
            config["inference"], overlap=options.overlap, sw_batch_size=options.sw_batch_size, crop_to_body=options.crop_to_body
        )

        # Fail fast on a bad model, before any DICOM is read.
        plausible_ml = volume_range_ml(config["checks"], options.volume_range_ml)
        model = load_model(
            Path(context.model_path),
            lambda: build_spleen_unet(config["network"]),
            compute.device,
            allow_unverified=options.allow_unverified_model,
        )
        check_output_channels(model, (1, 1, *settings.roi_size), config["network"]["out_channels"], compute.device)
        runtime = choose_runtime(options.backend, compute, config.get("runtime", {}))
        example = torch.zeros(settings.sw_batch_size, 1, *settings.roi_size)
        with timings.stage("network_preparation"):  # an OpenVINO conversion on the first run; a cache read after
            network = prepare_network(
                model.module, runtime, example, model.sha256, batch_size=settings.sw_batch_size, cache_dirs=[PREBUILT_RUNTIME_CACHE]
            )

        manifest = app_manifest()
        segment = SegmentSpec(
            label="Spleen",
            property_category=codes.SCT.AnatomicalStructure,
            property_type=codes.SCT.Spleen,
            algorithm_name=model.name,
            algorithm_version=model.version,
        )
        equipment = EquipmentSpec(MANUFACTURER, "spleen_seg_app", str(manifest["version"]), platform.node() or "unknown")
        result = ResultSeries.new(options.result_series_uid, options.supersedes_sop_uid)
        run_info = {
            "result": result.as_json(),
            "app": {"name": manifest["title"], "version": str(manifest["version"])},
            "model": model.identity(),
            **runtime.ran(network).as_json(),
            "sliding_window": {"roi_size": list(settings.roi_size), "overlap": settings.overlap, "crop_to_body": settings.crop_to_body},
            "largest_component": options.largest_component,
        }

        loader = DicomFolderLoaderOperator(
            self, CountCondition(self, 1), name="dicom_loader", input_folder=Path(context.input_path), timings=timings
        )
        selector = CTSeriesSelectorOperator(self, name="series_selector", rules=rules)
        preflight = SeriesPreflightOperator(
            self, name="preflight", rule=AbdominalRule.from_config(config["checks"]), policy=options.on_non_abdominal
        )
        volume = CTVolumeOperator(self, name="ct_volume", rules=rules, timings=timings)
        inference = CTSegmentationInferenceOperator(
            self,
            name="inference",
            network=network,
            preprocessing=config["preprocessing"],
            settings=settings,
            compute=compute,
            timings=timings,
        )
        postprocessing = MaskPostprocessingOperator(
            self, name="postprocessing", largest_component=options.largest_component, timings=timings
        )
        checks = ResultChecksOperator(
            self, name="result_checks", plausible_ml=plausible_ml, model_verified=model.integrity.status == "verified"
        )
        seg_writer = DicomSegWriterOperator(
            self,
            name="seg_writer",
            output_path=output_folder / SEG_FILE,
            segment=segment,
            equipment=equipment,
            result=result,
            timings=timings,
        )
        sr_writer = VolumeSrWriterOperator(
            self, name="sr_writer", output_path=output_folder / SR_FILE, segment=segment, equipment=equipment, timings=timings
        )
        stl_writer = STLWriterOperator(self, name="stl_writer", output_path=output_folder / STL_FILE, timings=timings)
        overlay_writer = OverlayWriterOperator(self, name="overlay_writer", output_path=output_folder / OVERLAY_FILE, timings=timings)
        summary = SegmentationSummaryOperator(
            self, name="summary", output_path=output_folder / SUMMARY_FILE, organ="spleen", run_info=run_info, timings=timings
        )

        self.add_flow(loader, selector, {(loader.OUTPUT_SCAN, selector.INPUT_SCAN)})
        self.add_flow(selector, preflight, {(selector.OUTPUT_SELECTION, preflight.INPUT_SELECTION)})
        self.add_flow(preflight, volume, {(preflight.OUTPUT_SELECTION, volume.INPUT_SELECTION)})
        self.add_flow(preflight, summary, {(preflight.OUTPUT_SELECTION, summary.INPUT_SELECTION)})
        self.add_flow(preflight, checks, {(preflight.OUTPUT_ABDOMINAL, checks.INPUT_ABDOMINAL)})
        self.add_flow(volume, inference, {(volume.OUTPUT_VOLUME, inference.INPUT_VOLUME)})
        self.add_flow(inference, postprocessing, {(inference.OUTPUT_MASK, postprocessing.INPUT_MASK)})
        self.add_flow(volume, checks, {(volume.OUTPUT_VOLUME, checks.INPUT_VOLUME)})
        self.add_flow(postprocessing, checks, {(postprocessing.OUTPUT_MASK, checks.INPUT_MASK)})
        for consumer in (seg_writer, sr_writer, summary):
            self.add_flow(checks, consumer, {(checks.OUTPUT_CHECKS, consumer.INPUT_CHECKS)})
        for writer in (seg_writer, sr_writer, stl_writer, overlay_writer, summary):
            self.add_flow(volume, writer, {(volume.OUTPUT_VOLUME, writer.INPUT_VOLUME)})
            self.add_flow(postprocessing, writer, {(postprocessing.OUTPUT_MASK, writer.INPUT_MASK)})
        self.add_flow(seg_writer, summary, {(seg_writer.OUTPUT_PATH, summary.INPUT_SEG_PATH)})
        self.add_flow(seg_writer, sr_writer, {(seg_writer.OUTPUT_PATH, sr_writer.INPUT_SEG_PATH)})
        self.add_flow(sr_writer, summary, {(sr_writer.OUTPUT_PATH, summary.INPUT_SR_PATH)})
        self.add_flow(stl_writer, summary, {(stl_writer.OUTPUT_PATH, summary.INPUT_STL_PATH)})
        self.add_flow(overlay_writer, summary, {(overlay_writer.OUTPUT_PATH, summary.INPUT_OVERLAY_PATH)})
