"""The CT bad-input suite: the spleen app, through its command line, on malformed or unusual inputs.

Each refused case asserts the exit code (2), the one line on stderr naming the problem (the last
line, no traceback) and an output folder with nothing in it. Most are refused by the scan or the
series selector, from headers, before any pixel is read; the inputs are copies of the demo series
(80 slices of 256 x 256) changed with pydicom. A truncated edge slice is not refused: the series is
segmented on the rest, and summary.json, the SEG and the SR say so.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, MRImageStorage

from operators.models.config import load_model_config
from operators.models.loader import card_for_weights
from operators.models.networks import build_spleen_unet
from testkit.transcode import to_legacy_converted
from tests.conftest import REPO_ROOT, run_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs the app once per case
APP = "spleen_seg_app"
MIDDLE = 40  # a slice inside the stack (files are named in slice-position order)
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24


def demo_copy(demo_dir: Path, target: Path) -> list[Path]:
    """A copy of the demo series; its files sorted by name are sorted by slice position."""
    shutil.copytree(demo_dir, target)
    return sorted(target.glob("*.dcm"))


def rewrite(paths: list[Path], change: Callable[[Dataset, int], None]) -> None:
    """Read each file, ``change(dataset, index)`` it, and save it in place (invalid values allowed: they are the point)."""
    with warnings.catch_warnings(), pydicom.config.disable_value_validation():
        warnings.simplefilter("ignore")
        for index, path in enumerate(paths):
            dataset = pydicom.dcmread(path)
            change(dataset, index)
            dataset.save_as(path)


def changed(change: Callable[[Dataset, int], None], only: int | None = None) -> Callable[[Path, Path], list[str]]:
    """A case: the demo series with ``change`` applied to every slice, or to slice ``only``."""

    def make(demo_dir: Path, case: Path) -> list[str]:
        paths = demo_copy(demo_dir, case / "in")
        rewrite(paths if only is None else [paths[only]], change)
        return ["-i", str(case / "in")]

    return make


def setter(keyword: str, value) -> Callable[[Dataset, int], None]:
    return lambda dataset, _: setattr(dataset, keyword, value)


def without(keyword: str) -> Callable[[Dataset, int], None]:
    return lambda dataset, _: delattr(dataset, keyword)


def alternating_frames_of_reference(dataset: Dataset, index: int) -> None:
    dataset.FrameOfReferenceUID = ("1.2.826.0.1.3680043.8.498.71", "1.2.826.0.1.3680043.8.498.72")[index % 2]


def as_mr(dataset: Dataset, _: int) -> None:
    dataset.Modality = "MR"
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = MRImageStorage


def half_matrix(dataset: Dataset, _: int) -> None:
    """The slice at half the matrix and twice the pixel spacing (the same field of view)."""
    pixels = dataset.pixel_array[::2, ::2].copy()
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.PixelSpacing = [2 * float(v) for v in dataset.PixelSpacing]
    dataset.PixelData = pixels.tobytes()


def tilted_by_one_degree(dataset: Dataset, _: int) -> None:
    dataset.ImageOrientationPatient = [0.9998477, 0.0, 0.0174524, 0.0, 1.0, 0.0]


def in_an_undecodable_syntax(dataset: Dataset, _: int) -> None:
    """Encapsulated pixel data under MPEG-2 (a video syntax no installed decoder reads)."""
    dataset.PixelData = encapsulate([dataset.PixelData])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = MPEG2MPML


def second_study(dataset: Dataset, index: int) -> None:
    if index == MIDDLE:
        dataset.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.73"


def empty_folder(demo_dir: Path, case: Path) -> list[str]:
    (case / "in").mkdir()
    return ["-i", str(case / "in")]


def non_dicom_files(demo_dir: Path, case: Path) -> list[str]:
    (case / "in").mkdir()
    (case / "in" / "notes.txt").write_text("patient list, not DICOM\n")
    shutil.copy(REPO_ROOT / "README.md", case / "in" / "readme.dcm")  # a DICOM name does not make a DICOM file
    return ["-i", str(case / "in")]


def one_slice(demo_dir: Path, case: Path) -> list[str]:
    (case / "in").mkdir()
    shutil.copy(sorted(demo_dir.glob("*.dcm"))[MIDDLE], case / "in")
    return ["-i", str(case / "in")]


def a_gap(demo_dir: Path, case: Path) -> list[str]:
    demo_copy(demo_dir, case / "in")[MIDDLE].unlink()
    return ["-i", str(case / "in")]


def a_duplicated_position(demo_dir: Path, case: Path) -> list[str]:
    """A second instance (its own SOP Instance UID) at the position of another slice, replacing its neighbour."""
    paths = demo_copy(demo_dir, case / "in")
    position = pydicom.dcmread(paths[MIDDLE], stop_before_pixels=True).ImagePositionPatient
    rewrite([paths[MIDDLE + 1]], setter("ImagePositionPatient", position))
    return ["-i", str(case / "in")]


def truncated_pixel_data(demo_dir: Path, case: Path) -> list[str]:
    path = demo_copy(demo_dir, case / "in")[MIDDLE]
    path.write_bytes(path.read_bytes()[:-4000])
    return ["-i", str(case / "in")]


def unreadable_slice(demo_dir: Path, case: Path) -> list[str]:
    demo_copy(demo_dir, case / "in")[MIDDLE].chmod(0)  # binds root too: the app runs without CAP_DAC_OVERRIDE
    return ["-i", str(case / "in")]


def zero_length_file(demo_dir: Path, case: Path) -> list[str]:
    (case / "in").mkdir()
    (case / "in" / "CT0001.dcm").write_bytes(b"")
    return ["-i", str(case / "in")]


def dicomdir_only(demo_dir: Path, case: Path) -> list[str]:
    (case / "in").mkdir()
    shutil.copy(get_testdata_file("DICOMDIR"), case / "in" / "DICOMDIR")
    return ["-i", str(case / "in")]


def structured_report_only(demo_dir: Path, case: Path) -> list[str]:
    (case / "in").mkdir()
    shutil.copy(get_testdata_file("test-SR.dcm"), case / "in")
    return ["-i", str(case / "in")]


def enhanced_ct_with_two_frames_at_one_position(demo_dir: Path, case: Path) -> list[str]:
    """A Legacy Converted Enhanced CT of the demo series whose frame 42 claims frame 41's position."""
    path = to_legacy_converted(demo_dir, case / "in" / "enhanced_ct.dcm")
    dataset = pydicom.dcmread(path)
    frames = dataset.PerFrameFunctionalGroupsSequence
    frames[MIDDLE + 1].PlanePositionSequence[0].ImagePositionPatient = frames[MIDDLE].PlanePositionSequence[0].ImagePositionPatient
    dataset.save_as(path)
    return ["-i", str(case / "in")]


def corrupt_model(demo_dir: Path, case: Path) -> list[str]:
    (case / "model").mkdir()
    (case / "model" / "model.ts").write_bytes(np.random.default_rng(0).bytes(4096))
    return ["-i", str(demo_dir), "-m", str(case / "model" / "model.ts")]


def nan_model(demo_dir: Path, case: Path) -> list[str]:
    """A checkpoint of the spleen UNet, with a verified card, whose first convolution's weights are NaN: it loads."""
    (case / "model").mkdir()
    network = build_spleen_unet(load_model_config("spleen_ct_segmentation")["network"])
    with torch.no_grad():
        next(network.parameters()).fill_(float("nan"))
    weights = case / "model" / "model.pt"
    torch.save(network.state_dict(), weights)
    card = card_for_weights({"name": "Spleen UNet with NaN weights (test)", "version": "0.0.1"}, weights)
    (case / "model" / "metadata.json").write_text(json.dumps(card))
    return ["-i", str(demo_dir), "-m", str(weights), "--backend", "torch"]


def wrong_output_channels(demo_dir: Path, case: Path) -> list[str]:
    """A TorchScript UNet with 3 output channels where the app needs 2 (background, spleen)."""
    (case / "model").mkdir()
    network = build_spleen_unet({**load_model_config("spleen_ct_segmentation")["network"], "out_channels": 3})
    torch.jit.save(torch.jit.script(network), str(case / "model" / "model.ts"))
    return ["-i", str(demo_dir), "-m", str(case / "model" / "model.ts")]


@dataclass(frozen=True)
class BadInput:
    make: Callable[[Path, Path], list[str]]  # (demo series folder, this case's folder) -> the app's arguments but -o
    message: str  # what the one-line error must say


CASES = {
    "empty-folder": BadInput(empty_folder, "input folder is empty: "),
    "non-dicom-files": BadInput(
        non_dicom_files, "no DICOM series found; 2 files skipped: notes.txt (not a DICOM file), readme.dcm (not a DICOM file)"
    ),
    "one-slice": BadInput(one_slice, "1 slice, fewer than the 5 required"),
    "a-gap": BadInput(a_gap, "uneven slice spacing: 5 mm between sorted slices 39 and 40 where the median is 2.5 mm (a missing slice?)"),
    "duplicated-position": BadInput(a_duplicated_position, "two slices at the same position (sorted slices 40 and 41)"),
    "truncated-middle-slice": BadInput(
        truncated_pixel_data, "refused, not resampled: uneven slice spacing: 5 mm between sorted slices 39 and 40"
    ),
    "alternating-frames-of-reference": BadInput(
        changed(alternating_frames_of_reference), "its slices carry 2 FrameOfReferenceUIDs (1.2.826.0.1.3680043.8.498.71, "
    ),
    "missing-frame-of-reference": BadInput(
        changed(without("FrameOfReferenceUID"), only=MIDDLE), "missing geometry attributes: FrameOfReferenceUID (on 1 of 80 slices)"
    ),
    "study-uid-path": BadInput(
        changed(setter("StudyInstanceUID", "1.2/../../x")), "StudyInstanceUID '1.2/../../x' is not a DICOM UID (component '2/'"
    ),
    "series-uid-path": BadInput(
        changed(setter("SeriesInstanceUID", "../../../x")), "SeriesInstanceUID '../../../x' is not a DICOM UID (it has an empty"
    ),
    "sop-instance-uid-letters": BadInput(
        changed(setter("SOPInstanceUID", "1.2.826.0.1.abc"), only=MIDDLE),
        "SOPInstanceUID '1.2.826.0.1.abc' is not a DICOM UID (component 'abc' is not digits only)",
    ),
    "frame-of-reference-uid-leading-zero": BadInput(
        changed(setter("FrameOfReferenceUID", "1.2.826.0.01")),
        "FrameOfReferenceUID '1.2.826.0.01' is not a DICOM UID (component '01' has a leading zero)",
    ),
    "two-studies-in-one-series": BadInput(changed(second_study), "its files carry 2 StudyInstanceUIDs"),
    "missing-pixel-spacing": BadInput(changed(without("PixelSpacing")), "missing geometry attributes: PixelSpacing (on 80 of 80 slices)"),
    "malformed-orientation": BadInput(
        changed(setter("ImageOrientationPatient", [1, 0, 0, 0, 1]), only=MIDDLE),
        "ImageOrientationPatient [1.0, 0.0, 0.0, 0.0, 1.0] is not 6 finite numbers",
    ),
    "mixed-orientations": BadInput(changed(tilted_by_one_degree, only=MIDDLE), "slices have different orientations"),
    "mixed-sizes": BadInput(changed(half_matrix, only=MIDDLE), "slices have different matrix sizes"),
    "mr-only": BadInput(changed(as_mr), "modality is MR, not CT"),
    "dicomdir-only": BadInput(
        dicomdir_only, "no DICOM series found; 1 file skipped: DICOMDIR (DICOMDIR (a media directory, not an image))"
    ),
    "sr-only": BadInput(structured_report_only, "modality is SR, not CT"),
    "undecodable-transfer-syntax": BadInput(
        changed(in_an_undecodable_syntax), "(1.2.840.10008.1.2.4.100) has no pixel data decoder in pydicom"
    ),
    "corrupt-model": BadInput(corrupt_model, "is neither a TorchScript model nor a PyTorch checkpoint"),
    "wrong-output-channels": BadInput(wrong_output_channels, "expected 2 output channels"),
    "nan-model": BadInput(nan_model, "non-finite network outputs: "),
    "unreadable-file-among-good-ones": BadInput(
        unreadable_slice,
        "uneven slice spacing: 5 mm between sorted slices 39 and 40 where the median is 2.5 mm (a missing slice?); "
        "1 file skipped: CT0041.dcm (cannot be read (Permission denied))",
    ),
    "zero-length-file": BadInput(zero_length_file, "no DICOM series found; 1 file skipped: CT0001.dcm (empty file (0 bytes))"),
    "non-abdominal": BadInput(changed(setter("BodyPartExamined", "HEAD")), "cannot hold a spleen: BodyPartExamined is HEAD"),
    "enhanced-ct-inconsistent-frames": BadInput(
        enhanced_ct_with_two_frames_at_one_position, "1 file): two slices at the same position (sorted slices"
    ),
}


def without_root_file_access() -> None:
    """In the child, before exec: drop the capabilities that let root read any file, so a chmod 000 file is unreadable."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {capability})")


def run_unprivileged(args: list[str]) -> subprocess.CompletedProcess:
    """The app as a user without root's file access (what ``run_app`` does, with the capabilities dropped when root)."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "apps" / APP), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "HOLOSCAN_LOG_LEVEL": "WARN"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        preexec_fn=without_root_file_access if os.geteuid() == 0 else None,
    )


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_bad_input_is_refused_with_exit_2_one_line_naming_it_and_no_output(demo_ct, tmp_path: Path, case: BadInput):
    args = [*case.make(demo_ct.dicom_dir, tmp_path), "-o", str(tmp_path / "out")]
    result = run_unprivileged(args) if case.make is unreadable_slice else run_app(APP, args)
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line.startswith(f"{APP}: error: ") and case.message in last_line, last_line
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert list((tmp_path / "out").iterdir()) == []


def test_a_truncated_edge_slice_is_left_out_and_every_output_says_so(demo_ct, tmp_path: Path):
    paths = demo_copy(demo_ct.dicom_dir, tmp_path / "in")
    edge = pydicom.dcmread(paths[-1], stop_before_pixels=True)
    paths[-1].write_bytes(paths[-1].read_bytes()[:-4000])
    result = run_app(APP, ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--backend", "torch"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "leave out 1 slice unreadable: CT0080.dcm at [-191.25, -191.25, 98.75] mm" in result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    [dropped] = summary["input"]["dropped_slices"]
    assert dropped["sop_instance_uid"] == edge.SOPInstanceUID and dropped["file"] == "CT0080.dcm"
    assert dropped["image_position_patient_mm"] == [-191.25, -191.25, 98.75] and dropped["reason"].startswith("pixel data unreadable")
    assert len(summary["input"]["sop_instance_uids"]) == 79 and edge.SOPInstanceUID not in summary["input"]["sop_instance_uids"]
    assert summary["checks"]["flags"] == ["SLICES DROPPED"] and summary["checks"]["dropped_slices"] == 1
    seg = hd.seg.segread(tmp_path / "out" / "spleen_seg.dcm")
    assert seg.NumberOfFrames == 79 and seg.SeriesDescription == "Spleen - SLICES DROPPED - NOT FOR CLINICAL USE"
    assert seg.ImageComments.startswith("Covers 79 of the 80 slices of the source series")
    assert f"{edge.SOPInstanceUID} at (-191.25, -191.25, 98.75) mm: pixel data unreadable" in seg.ImageComments
    referenced = {ref.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence for ref in item.ReferencedInstanceSequence}
    assert edge.SOPInstanceUID not in referenced and len(referenced) == 79
    sr = pydicom.dcmread(tmp_path / "out" / "spleen_sr.dcm")
    assert "SLICES DROPPED" in sr.SeriesDescription
