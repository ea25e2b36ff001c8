"""Whole-slide metastasis detection: a graph of single-purpose operators per slide, on the MONAI Deploy SDK.

    slide -> tissue mask -> probability map (patch or dense) -> lesion detections -> outputs

A folder of slides is processed slide by slide with one model load; each slide's graph is a fresh
SDK Application writing into a staging folder, published as one set when the slide is done
(operators.core.output_set). A slide that fails, for any reason (unreadable, implausible network
outputs, outputs that do not fit, or an unexpected error, whose traceback is logged), gets
``error.json`` (slide, error, error_type) in its output folder beside its previous outputs, and the
others go on; the run ends with one line naming the failed slides and their reasons. Under
torchrun each rank takes every WORLD_SIZE-th slide from RANK.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from holoscan.conditions import CountCondition
from monai.deploy.core import Application

from apps.common.context import app_context
from operators.core.atomic_io import write_json_atomically
from operators.core.device import ComputeDevice, Precision, choose_compute_device
from operators.core.errors import AppInputError, OutputWriteError
from operators.core.output_set import ERROR_RECORD, staged_output_set
from operators.core.timing import StageTimings
from operators.dicom.seg import ResultSeries
from operators.models.config import load_model_config, model_dir
from operators.models.loader import UNVERIFIED_MODEL_FLAG, load_model
from operators.models.networks import build_patch_classifier
from operators.models.runtime import PREBUILT_CACHE_DIRNAME, Backend, choose_runtime
from operators.wsi.classifier import PatchClassifier, PatchContract, prepare_classifier
from operators.wsi.inference import InferenceMode, InferenceSettings, ProbabilityMapOperator
from operators.wsi.nms import LesionDetectionOperator, nms_parameters
from operators.wsi.outputs.results_writer import OUTPUT_FILES, WsiResultsWriterOperator
from operators.wsi.slide.backend_choice import BackendRequest
from operators.wsi.slide.sources import SlideSource, find_slides
from operators.wsi.tissue_mask import TissueMaskOperator

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent
MODEL_NAME = "pathology_tumor_detection"
DEFAULT_MODEL_PATH = model_dir(MODEL_NAME)  # the folder: model.pt (bundle layout) or model.ts
PREBUILT_RUNTIME_CACHE = APP_DIR.parents[1] / PREBUILT_CACHE_DIRNAME  # in a MAP: /opt/holoscan/app/runtime_cache
MANUFACTURER = "clinical-ai-apps"


def app_manifest() -> dict[str, Any]:
    """The app's title and version, from its MAP manifest (the one place they are written)."""
    return yaml.safe_load((APP_DIR / "app.yaml").read_text())["application"]


@dataclass(frozen=True)
class WsiAppOptions:
    """Options beyond the SDK's -i/-o/-m/-w; None means the model config's value."""

    mode: InferenceMode | None = None
    tta: bool = False
    mpp_override: float | None = None
    slide_backend: BackendRequest = "auto"
    backend: Backend = "auto"
    batch_size: int | None = None
    workers: int = min(4, os.cpu_count() or 1)
    precision: Precision = "auto"
    device: str = "auto"
    nms_threshold: float | None = None
    nms_radius_um: float | None = None
    result_series_uid: str | None = None
    supersedes_sop_uid: str | None = None
    allow_unverified_model: bool = False


class WsiMetastasisApp(Application):
    """Processes one slide with an already loaded classifier."""

    def __init__(
        self,
        *args,
        slide: SlideSource,
        output_dir: Path,
        classifier: PatchClassifier,
        compute: ComputeDevice,
        config: dict[str, Any],
        options: WsiAppOptions,
        seg_result: ResultSeries | None = None,
        **kwargs,
    ) -> None:
        self.slide = slide
        self.output_dir = output_dir
        self.seg_result = seg_result
        self.classifier = classifier
        self.compute_device = compute
        self.model_config = config
        self.app_options = options
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        config, options = self.model_config, self.app_options
        preprocessing, inference, post = config["preprocessing"], config["inference"], config["postprocessing"]
        settings = InferenceSettings.from_config(
            inference, mode=options.mode, batch_size=options.batch_size, tta=options.tta, workers=options.workers
        )
        timings = StageTimings()
        manifest = app_manifest()
        model = self.classifier.model
        run_info = {
            "app": {"name": manifest["title"], "version": str(manifest["version"])},
            "model": model.identity(),
            "flags": [UNVERIFIED_MODEL_FLAG] if model.integrity.status == "unverified" else [],
            **self.classifier.runtime.as_json(),
            "inference": {
                "mode_requested": settings.mode,
                "tta": settings.tta,
                "batch_size": settings.batch_size,
                "workers": settings.workers,
            },
            "equipment": {
                "manufacturer": MANUFACTURER,
                "model_name": "wsi_metastasis_app",
                "software_version": str(manifest["version"]),
                "device_serial_number": platform.node() or "unknown",
            },
        }
        tissue = TissueMaskOperator(
            self,
            CountCondition(self, 1),
            name="tissue_mask",
            source=self.slide,
            model_mpp=preprocessing["model_mpp"],
            mask_stride_model_px=config["tissue_mask"]["mask_downsample"],
            window_model_px=preprocessing["patch_size_px"],
            mpp_override=options.mpp_override,
            backend=options.slide_backend,
            timings=timings,
        )
        probability = ProbabilityMapOperator(
            self,
            name="probability_map",
            classifier=self.classifier,
            compute=self.compute_device,
            settings=settings,
            dense_stride_model_px=inference["dense_stride_px"],
            timings=timings,
        )
        radius_um, threshold = nms_parameters(post, options.nms_radius_um, options.nms_threshold)
        detections = LesionDetectionOperator(self, name="lesion_detection", radius_um=radius_um, threshold=threshold, timings=timings)
        writer = WsiResultsWriterOperator(
            self,
            name="results_writer",
            output_dir=self.output_dir,
            run_info=run_info,
            threshold=threshold,
            timings=timings,
            seg_result=self.seg_result,
        )
        self.add_flow(tissue, probability, {(tissue.OUTPUT_TISSUE, probability.INPUT_TISSUE)})
        self.add_flow(probability, detections, {(probability.OUTPUT_PROBABILITY, detections.INPUT_PROBABILITY)})
        self.add_flow(detections, writer, {(detections.OUTPUT_DETECTIONS, writer.INPUT_DETECTIONS)})


def distributed_share(slides: list[SlideSource]) -> list[SlideSource]:
    """This process's slides under torchrun (RANK, WORLD_SIZE), or all of them."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return slides[rank::world]


def run_slides(sdk_argv: list[str], options: WsiAppOptions) -> None:
    """Process every slide of the input with one model load; raise when any slide failed."""
    context = app_context(sdk_argv[1:])  # like Application, which drops the interpreter (argv[0])
    output_root = Path(context.output_path)
    slides = distributed_share(find_slides(Path(context.input_path)))
    config = load_model_config(MODEL_NAME)
    local_rank = os.environ.get("LOCAL_RANK")  # set by torchrun: rank r takes GPU LOCAL_RANK
    compute = choose_compute_device(options.device, options.precision, None if local_rank is None else int(local_rank))
    if (options.result_series_uid or options.supersedes_sop_uid) and len(slides) > 1:
        raise AppInputError(f"--result-series-uid and --supersedes-sop-uid name one result, and the input holds {len(slides)} slides")
    model = load_model(
        Path(context.model_path),
        lambda: build_patch_classifier(config["network"]),
        compute.device,
        allow_unverified=options.allow_unverified_model,
    )
    contract = PatchContract.from_config(config)
    runtime = choose_runtime(options.backend, compute, config.get("runtime", {}))
    classifier = prepare_classifier(
        model, runtime, contract=contract, batch_size=InferenceSettings.cpu_micro_batch, cache_dirs=[PREBUILT_RUNTIME_CACHE]
    )

    def process(slide: SlideSource, output_dir: Path) -> None:
        seg_result = ResultSeries.new(options.result_series_uid, options.supersedes_sop_uid)
        with staged_output_set(output_dir, OUTPUT_FILES) as staging:
            WsiMetastasisApp(
                sdk_argv,
                slide=slide,
                output_dir=staging,
                classifier=classifier,
                compute=compute,
                config=config,
                options=options,
                seg_result=seg_result,
            ).run()

    failures = process_each_slide(slides, output_root, process)
    if failures:
        message = batch_failure_message(failures, len(slides))
        if all(failure.input_problem for failure in failures):
            raise AppInputError(message)
        raise SlideBatchError(message)


class SlideBatchError(Exception):
    """At least one slide failed for an unexpected reason (a bug, logged with its traceback); the others were processed."""


@dataclass(frozen=True)
class SlideFailure:
    """Why one slide gave no result: ``input_problem`` for an :class:`AppInputError` (the slide, the
    model's outputs or the output folder), False for anything else (a bug)."""

    name: str
    error: str
    error_type: str
    input_problem: bool


def process_each_slide(slides: list[SlideSource], output_root: Path, process: Callable[[SlideSource, Path], None]) -> list[SlideFailure]:
    """``process(slide, output_root / slide.name)`` for every slide; a slide that raises is recorded in its
    folder's error.json (slide, error, error_type) and the next one goes on. Returns the failures."""
    failures: list[SlideFailure] = []
    for slide in slides:
        output_dir = output_root / slide.name
        try:
            process(slide, output_dir)
            continue
        except AppInputError as error:
            failure = SlideFailure(slide.name, " ".join(str(error).split()), type(error).__name__, input_problem=True)
            logger.error("%s: %s", slide.name, failure.error)
        except Exception as error:  # a bug met on this slide: its traceback is logged, the other slides go on
            logger.exception("%s: unexpected failure", slide.name)
            failure = SlideFailure(
                slide.name, f"unexpected {type(error).__name__}: {' '.join(str(error).split())}", type(error).__name__, False
            )
        record = {"slide": str(slide.path), "error": failure.error, "error_type": failure.error_type}
        try:
            write_json_atomically(output_dir / ERROR_RECORD, record)
        except OutputWriteError as write_error:  # e.g. the disk that ran out of room for the outputs
            logger.error("%s: cannot write %s (%s)", slide.name, ERROR_RECORD, write_error)
        failures.append(failure)
    return failures


FAILURES_NAMED_WITH_REASON = 3


def batch_failure_message(failures: list[SlideFailure], total: int) -> str:
    """One line: how many slides failed, the first few with their reasons, and where the records are."""
    shown = "; ".join(f"{failure.name}: {failure.error}" for failure in failures[:FAILURES_NAMED_WITH_REASON])
    rest = failures[FAILURES_NAMED_WITH_REASON:]
    more = f"; and {', '.join(failure.name for failure in rest)}" if rest else ""
    where = "see error.json in its output folder" if len(failures) == 1 else "see error.json in their output folders"
    return f"{len(failures)} of {total} slides failed ({shown}{more}); {where}"
