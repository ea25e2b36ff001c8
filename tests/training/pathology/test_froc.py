"""FROC on disk: reading detection CSVs and the set of slides evaluated (official and the bundle's variant)."""

from __future__ import annotations

import pytest

from training.pathology.detections import read_detections_csv
from training.pathology.evaluation_masks import GroundTruthFile
from training.pathology.froc import SlidePlan, plan_slides


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.9,100,200\n0.5,3,4\n", [(0.9, 100, 200), (0.5, 3, 4)]),
        ("probability,x,y\n0.9,100,200\n", [(0.9, 100, 200)]),
        ("x,y,probability\n100,200,0.9\n\n", [(0.9, 100, 200)]),  # named columns in another order
        ("0.9, 100.5 ,200\r\n", [(0.9, 100.5, 200)]),
        ("", []),
    ],
)
def test_read_detections_csv(tmp_path, text: str, expected: list[tuple[float, float, float]]) -> None:
    path = tmp_path / "s.csv"
    path.write_text(text)
    det = read_detections_csv(path)
    assert list(zip(det.probability.tolist(), det.x_level0.tolist(), det.y_level0.tolist(), strict=True)) == expected


@pytest.mark.parametrize("text", ["0.9,100\n", "0.9,1,2\nabc,1,2\n", "nan,1,2\n"])
def test_read_detections_csv_rejects_malformed_rows(tmp_path, text: str) -> None:
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError):
        read_detections_csv(path)


def test_plan_slides_official_set_and_variant(tmp_path) -> None:
    gt = {
        "test_001": GroundTruthFile("test_001", tmp_path / "test_001.xml", "xml"),
        "test_004": GroundTruthFile("test_004", tmp_path / "test_004.xml", "xml"),
    }
    csvs = {"test_001": tmp_path / "test_001.csv", "test_002": tmp_path / "test_002.csv"}
    plans = plan_slides(gt, csvs, tumor_slides_only=False)
    assert plans == [
        SlidePlan("test_001", csvs["test_001"], gt["test_001"]),
        SlidePlan("test_002", csvs["test_002"], None),
        SlidePlan("test_004", None, gt["test_004"]),
    ]
    assert [p.slide for p in plan_slides(gt, csvs, tumor_slides_only=True)] == ["test_001", "test_004"]
