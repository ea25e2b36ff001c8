from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from operators.core.atomic_io import write_json_atomically
from operators.ct.series_selector import select_ct_series
from operators.ct.summary import organ_volume_ml, segmentation_summary
from operators.ct.volume import build_ct_volume
from operators.dicom.scan import scan_dicom_folder
from testkit.dicom_factories import ct_stack, save_all


@pytest.mark.parametrize(("voxels", "voxel_mm3", "expected_ml"), [(1000, 1.0, 1.0), (0, 2.0, 0.0), (250, 4.5, 1.125)])
def test_organ_volume_ml(voxels, voxel_mm3, expected_ml):
    mask = np.zeros(2000, np.uint8)
    mask[:voxels] = 1
    assert organ_volume_ml(mask, voxel_mm3) == pytest.approx(expected_ml)


def test_summary_names_series_instances_skipped_series_and_outputs(tmp_path: Path):
    save_all(ct_stack([0, 2, 4, 6, 8], description="abdomen"), tmp_path / "ct")
    save_all(ct_stack([0, 2], description="scout"), tmp_path / "scout")
    selection = select_ct_series(scan_dicom_folder(tmp_path))
    volume = build_ct_volume(selection)
    mask = np.zeros(volume.hu_zyx.shape, np.uint8)
    mask[1:3, 2:4, 2:4] = 1
    summary = segmentation_summary(
        selection, volume, mask, {"dicom_seg": tmp_path / "seg.dcm", "stl": None}, "spleen", {"model": {"name": "m"}}
    )
    # slices 1-2 at z 2 and 4 mm; rows and columns 2-3 from the first pixel's centre at (-3, -3), 0.8 mm apart
    assert summary["spleen"] == {
        "volume_ml": pytest.approx(8 * 0.8 * 0.8 * 2.0 / 1000, abs=1e-3),
        "voxel_count": 8,
        "found": True,
        "centroid_lps_mm": pytest.approx([-1.0, -1.0, 3.0]),
        "bounding_box_lps_mm": {"min": pytest.approx([-1.4, -1.4, 2.0]), "max": pytest.approx([-0.6, -0.6, 4.0])},
    }
    assert summary["input"]["gantry_tilt"] == {"angle_deg": 0.0, "tilted": False, "gantry_detector_tilt_deg": None, "handling": None}
    assert summary["input"]["series_description"] == "abdomen"
    assert summary["input"]["sop_instance_uids"] == [ds.SOPInstanceUID for ds in volume.source_datasets]
    assert [s["reason"] for s in summary["input"]["skipped_series"]] == ["2 slices, fewer than the 5 required"]
    assert summary["outputs"] == {"dicom_seg": "seg.dcm", "stl": None}
    assert summary["model"] == {"name": "m"}
    path = write_json_atomically(tmp_path / "summary.json", summary)
    assert json.loads(path.read_text())["spleen"]["voxel_count"] == 8
    assert not list(tmp_path.glob("*.partial"))


def test_summary_lists_the_dropped_edge_slice_and_the_skipped_files(tmp_path: Path):
    paths = save_all(ct_stack([0, 2, 4, 6, 8, 10]), tmp_path / "ct")
    paths[0].write_bytes(paths[0].read_bytes()[:-50])
    (tmp_path / "ct" / "notes.txt").write_text("not DICOM")
    selection = select_ct_series(scan_dicom_folder(tmp_path))
    volume = build_ct_volume(selection)
    summary = segmentation_summary(selection, volume, np.zeros(volume.hu_zyx.shape, np.uint8), {}, "spleen", {})
    [dropped] = summary["input"]["dropped_slices"]
    assert dropped["file"] == paths[0].name and dropped["image_position_patient_mm"] == [-3.0, -3.0, 0.0]
    assert dropped["sop_instance_uid"] not in summary["input"]["sop_instance_uids"] and len(summary["input"]["sop_instance_uids"]) == 5
    assert dropped["reason"].startswith("pixel data unreadable")
    assert summary["input"]["skipped_files"] == [{"path": str(tmp_path / "ct" / "notes.txt"), "reason": "not a DICOM file"}]
    json.dumps(summary)  # JSON-ready
