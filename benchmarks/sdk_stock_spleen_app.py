"""The MONAI Deploy App SDK's stock spleen pipeline, for benchmarking this project's spleen app against.

Built only from the SDK's own operators, wired as the SDK's example apps (ai_spleen_seg_app,
ai_livertumor_seg_app) wire them, with the transforms and inferer settings of the model-zoo
spleen_ct_segmentation bundle's inference config:

    DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator
        -> StockSpleenSegOperator (delegates to the SDK's MonaiSegInferenceOperator)
        -> DICOMSegmentationWriterOperator

    pre:  LoadImaged (the SDK's InMemImageReader), EnsureChannelFirstd, Orientationd RAS,
          Spacingd 1.5, 1.5, 2.0 mm (bilinear), ScaleIntensityRanged -57..164 HU -> 0..1 (clip), EnsureTyped
    infer: sliding window, roi 96^3, sw_batch_size 4, overlap 0.5, float32
    post: Activationsd softmax, Invertd (bilinear), AsDiscreted argmax

Usage (the SDK's -i/-o/-m options, or the HOLOSCAN_* environment variables):

    ulimit -s 32768; python benchmarks/sdk_stock_spleen_app.py -i DICOM_DIR -o OUT -m MODEL.ts

Writes one DICOM SEG, named by its SOP Instance UID, in OUT, and ``stock_timings.json`` with the wall
time of each operator's compute (seconds) so that a benchmark can see where the time goes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Operator, OperatorSpec, init_app_context
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.dicom_utils import ModelInfo
from monai.deploy.operators.monai_seg_inference_operator import InMemImageReader, MonaiSegInferenceOperator
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)
from pydicom.sr.codedict import codes

logger = logging.getLogger(__name__)

TIMINGS_FILE = "stock_timings.json"
IMAGE_KEY, PRED_KEY = "image", "pred"
ROI_SIZE = (96, 96, 96)
SW_BATCH_SIZE = 4
OVERLAP = 0.5

# The SDK example's rule selects every CT series and segments the first. Its example also lists
# StudyDescription and SeriesDescription with the pattern "(.*?)", which the SDK's selector treats as
# required attributes (a series without a StudyDescription is silently not selected), so only the
# modality is matched here.
CT_SERIES_RULES = """
{
    "selections": [
        {
            "name": "CT Series",
            "conditions": {
                "Modality": "(?i)CT"
            }
        }
    ]
}
"""


class OperatorTimings:
    """Seconds of compute per operator name, written to a JSON file at the end of the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def write(self, path: Path) -> None:
        payload = {name: round(s, 3) for name, s in self.seconds.items()}
        payload["total_in_app"] = round(time.perf_counter() - self.started, 3)
        path.write_text(json.dumps(payload, indent=2))


def timed(operator_class: type, timings: OperatorTimings) -> type:
    """A subclass of an SDK operator whose compute is timed; behaviour is otherwise unchanged."""

    class Timed(operator_class):  # type: ignore[misc, valid-type]
        def compute(self, op_input, op_output, context) -> None:
            start = time.perf_counter()
            try:
                super().compute(op_input, op_output, context)
            finally:
                timings.add(self.name, time.perf_counter() - start)

    Timed.__name__ = f"Timed{operator_class.__name__}"
    return Timed


def stock_pre_transforms(reader: InMemImageReader) -> Compose:
    """The bundle's preprocessing, reading the SDK's in-memory Image."""
    return Compose(
        [
            LoadImaged(keys=IMAGE_KEY, reader=reader),
            EnsureChannelFirstd(keys=IMAGE_KEY),
            Orientationd(keys=IMAGE_KEY, axcodes="RAS"),
            Spacingd(keys=IMAGE_KEY, pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
            ScaleIntensityRanged(keys=IMAGE_KEY, a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped(keys=IMAGE_KEY),
        ]
    )


def stock_post_transforms(pre_transforms: Compose) -> Compose:
    """The bundle's postprocessing: softmax, inversion to the source grid (bilinear), argmax."""
    return Compose(
        [
            Activationsd(keys=PRED_KEY, softmax=True),
            Invertd(keys=PRED_KEY, transform=pre_transforms, orig_keys=IMAGE_KEY, nearest_interp=False, to_tensor=True),
            AsDiscreted(keys=PRED_KEY, argmax=True),
        ]
    )


class StockSpleenSegOperator(Operator):
    """Spleen segmentation delegated to the SDK's MonaiSegInferenceOperator, as in the SDK's examples.

    Named input: image (SDK Image). Named output: seg_image (SDK Image, uint8 label on the source grid).
    """

    def __init__(self, fragment: Fragment, *args: Any, app_context: AppContext, model_path: Path, **kwargs: Any) -> None:
        self.owner = fragment  # passed on to the delegate operator, as the SDK's examples do
        self.app_context = app_context
        self.model_path = model_path
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.output("seg_image")

    def compute(self, op_input, op_output, context) -> None:
        input_image = op_input.receive("image")
        if not input_image:
            raise ValueError("Input image is not found.")
        pre_transforms = stock_pre_transforms(InMemImageReader(input_image))
        infer_operator = MonaiSegInferenceOperator(
            self.owner,
            roi_size=ROI_SIZE,
            pre_transforms=pre_transforms,
            post_transforms=stock_post_transforms(pre_transforms),
            overlap=OVERLAP,
            sw_batch_size=SW_BATCH_SIZE,
            app_context=self.app_context,
            model_name="",
            model_path=self.model_path,
            name="monai_seg_inference",
        )
        infer_operator.input_dataset_key = IMAGE_KEY
        infer_operator.pred_dataset_key = PRED_KEY
        op_output.emit(infer_operator.compute_impl(input_image, context), "seg_image")


def spleen_segment_descriptions() -> list[SegmentDescription]:
    return [
        SegmentDescription(
            segment_label="Spleen",
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Spleen,
            algorithm_name="volumetric (3D) segmentation of the spleen from CT image",
            algorithm_family=codes.DCM.ArtificialIntelligence,
            algorithm_version="0.1.0",
        )
    ]


class StockSpleenSegApp(Application):
    """The SDK's stock DICOM-in, DICOM-SEG-out spleen pipeline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.timings = OperatorTimings()
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        app_context = init_app_context(self.argv)
        input_path, output_path, model_path = Path(app_context.input_path), Path(app_context.output_path), Path(app_context.model_path)
        self.output_path = output_path
        t = self.timings

        loader = timed(DICOMDataLoaderOperator, t)(self, CountCondition(self, 1), input_folder=input_path, name="study_loader_op")
        selector = timed(DICOMSeriesSelectorOperator, t)(self, rules=CT_SERIES_RULES, name="series_selector_op")
        to_volume = timed(DICOMSeriesToVolumeOperator, t)(self, name="series_to_vol_op")
        inference = timed(StockSpleenSegOperator, t)(self, app_context=app_context, model_path=model_path, name="spleen_seg_op")
        seg_writer = timed(DICOMSegmentationWriterOperator, t)(
            self,
            segment_descriptions=spleen_segment_descriptions(),
            model_info=ModelInfo(creator="MONAI Deploy SDK stock pipeline (benchmark)", name="spleen_ct_segmentation", version="0.1.0"),
            custom_tags={"SeriesDescription": "AI generated Seg, not for clinical use."},
            output_folder=output_path,
            name="dicom_seg_writer",
        )

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, inference, {("image", "image")})
        self.add_flow(selector, seg_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(inference, seg_writer, {("seg_image", "seg_image")})


def main() -> int:
    # The SDK's Application treats argv[0] as the interpreter and argv[1] as the app.
    app = StockSpleenSegApp([sys.executable, *sys.argv])
    app.run()
    output_path = getattr(app, "output_path", None)
    if output_path is not None:
        app.timings.write(Path(output_path) / TIMINGS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
