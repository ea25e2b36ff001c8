"""A stand-in app for the gateway's fault tests: run as the gateway runs an app folder, it writes a real DICOM SEG.

Reads the CT series under HOLOSCAN_INPUT_PATH, appends ``start <pid>`` to $FAKE_APP_RUNS, waits
while the file $FAKE_APP_HOLD exists (so a test can kill the gateway mid-job), writes HOLOSCAN_OUTPUT_PATH/seg.dcm
(highdicom, a threshold mask referencing the source series) and summary.json listing it, then appends
``finish <pid>``. Like the real apps it takes ``--result-series-uid UID`` (the SEG's series) and
``--supersedes-sop-uid UID`` (noted in the SEG's ImageComments, as a UID does not fit the 64 characters of
ContentDescription beside any text, and in the summary).
With $FAKE_APP_FAIL it exits 2 with one ``fake_seg_app: error:`` line, as the real apps do on bad input;
with $FAKE_APP_INCOMPLETE it exits 0 with a summary that lists a file it did not write.
``fake_route`` routes a gateway to it, and ``runs`` reads back its events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread


def fake_route(tmp_path: Path, **env: str) -> dict:
    """A CT route to this app, noting its runs in tmp_path/runs.txt, held while tmp_path/hold exists."""
    return {
        "name": "fake-seg",
        "match": {"Modality": "CT"},
        "app": str(Path(__file__)),
        "env": {"FAKE_APP_RUNS": str(tmp_path / "runs.txt"), "FAKE_APP_HOLD": str(tmp_path / "hold"), **env},
    }


def runs(tmp_path: Path) -> list[tuple[str, int]]:
    """The fake app's ("start" | "finish", pid) events so far."""
    path = tmp_path / "runs.txt"
    return [(event, int(pid)) for event, pid in (line.split() for line in path.read_text().splitlines())] if path.exists() else []


def note(event: str) -> None:
    runs_file = os.environ.get("FAKE_APP_RUNS")
    if runs_file:
        with open(runs_file, "a") as handle:
            handle.write(f"{event} {os.getpid()}\n")
            handle.flush()
            os.fsync(handle.fileno())


def main() -> int:
    parser = argparse.ArgumentParser(prog="fake_seg_app")
    parser.add_argument("--result-series-uid")
    parser.add_argument("--supersedes-sop-uid")
    args = parser.parse_args()
    note("start")
    if os.environ.get("FAKE_APP_FAIL"):
        sys.stderr.write(f"fake_seg_app: error: {os.environ['FAKE_APP_FAIL']}\n")
        return 2
    hold = os.environ.get("FAKE_APP_HOLD")
    deadline = time.monotonic() + 120
    while hold and os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.1)
    sources = sorted(
        (dcmread(p) for p in Path(os.environ["HOLOSCAN_INPUT_PATH"]).rglob("*.dcm")), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    mask = np.stack([ds.pixel_array > 1050 for ds in sources]).astype(np.uint8)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Blob",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("78961009", "SCT", "Spleen"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="fake", version="0", family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing")
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=args.result_series_uid or hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="tests",
        manufacturer_model_name="fake_seg_app",
        software_versions="0",
        device_serial_number="0",
    )
    if args.supersedes_sop_uid:
        seg.ImageComments = f"supersedes {args.supersedes_sop_uid}"
    output = Path(os.environ["HOLOSCAN_OUTPUT_PATH"])
    seg.save_as(output / "seg.dcm")
    outputs = {"dicom_seg": "seg.dcm"} | ({"overlay_png": "overlay.png"} if os.environ.get("FAKE_APP_INCOMPLETE") else {})
    summary = {"outputs": outputs, "supersedes_sop_instance_uid": args.supersedes_sop_uid, "instances": len(sources)}
    (output / "summary.json").write_text(json.dumps(summary))  # not DICOM: must not be sent
    note("finish")
    return 0


if __name__ == "__main__":
    sys.exit(main())
