from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from operators.wsi.grid import ProbabilityMap, grid_for_slide
from operators.wsi.nms import Detection
from operators.wsi.outputs.map_files import read_detections_csv, tiff_pyramid, write_detections_csv, write_probability_map


def official_camelyon16_reader(path: Path) -> tuple[list[float], list[int], list[int]]:
    """The parsing of ``readCSVContent`` in the official Camelyon16 Evaluation_FROC.py, restated."""
    probabilities, xs, ys = [], [], []
    for line in path.read_text().splitlines(keepends=True):
        fields = line.rstrip().split(",")
        probabilities.append(float(fields[0]))
        xs.append(int(fields[1]))
        ys.append(int(fields[2]))
    return probabilities, xs, ys


def blob_map(slide_size_xy: tuple[int, int], slide_mpp: float, model_mpp: float, stride_model_px: int) -> ProbabilityMap:
    grid = grid_for_slide(slide_size_xy, slide_mpp, model_mpp, stride_model_px, 224)
    rows, cols = grid.shape_rows_cols
    yy, xx = np.mgrid[:rows, :cols]
    probabilities = np.clip(1.0 - np.hypot(yy - rows / 3, xx - cols / 2) / (rows / 4), 0.0, 1.0).astype(np.float32)
    return ProbabilityMap(probabilities, grid)


# ---------------------------------------------------------------------------------------------
# Detections CSV


DETECTIONS = [Detection(0.9731, 1500, 2250), Detection(np.float32(0.61), np.int64(40), 0), Detection(0.5, 2219, 2966)]


def test_detections_csv_is_the_official_camelyon16_format(tmp_path: Path):
    path = write_detections_csv(DETECTIONS, tmp_path / "Test_001.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "0.9731,1500,2250"  # no header, probability first, integer level-0 x then y
    assert all(len(line.split(",")) == 3 for line in lines)
    probabilities, xs, ys = official_camelyon16_reader(path)
    assert probabilities == [float(d.probability) for d in DETECTIONS]
    assert (xs, ys) == ([1500, 40, 2219], [2250, 0, 2966])


def test_detections_csv_reads_back(tmp_path: Path):
    path = write_detections_csv(DETECTIONS, tmp_path / "d.csv")
    assert read_detections_csv(path) == [Detection(float(d.probability), int(d.x), int(d.y)) for d in DETECTIONS]


def test_no_detections_is_an_empty_file(tmp_path: Path):
    path = write_detections_csv([], tmp_path / "none.csv")
    assert path.read_bytes() == b""
    assert official_camelyon16_reader(path) == ([], [], [])


@pytest.mark.parametrize("detection", [Detection(0.7, 10.5, 3), Detection(float("nan"), 1, 2)])
def test_detections_csv_refuses_what_the_evaluation_cannot_parse(tmp_path: Path, detection: Detection):
    with pytest.raises(ValueError):
        write_detections_csv([detection], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


# ---------------------------------------------------------------------------------------------
# Probability map files


def test_npy_round_trips_exactly(tmp_path: Path):
    prob_map = blob_map((2220, 2967), 0.499, 0.243, 64)
    files = write_probability_map(prob_map, tmp_path / "map.npy", tmp_path / "map.tif")
    loaded = np.load(files.npy)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, prob_map.probabilities)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.json", "map.npy", "map.tif"]  # no temporary left over


@pytest.mark.parametrize(
    ("slide_size_xy", "slide_mpp", "model_mpp", "stride_model_px", "levels"),
    [
        ((2220, 2967), 0.499, 0.243, 64, 1),  # the real slide's map: 72 x 96 cells, one tile
        ((60000, 40000), 0.25, 0.243, 16, 5),  # a large slide: 3859 x 2573 cells, halved 4 times to 242 x 161
        ((20000, 3000), 0.243, 0.243, 32, 3),  # wide and thin: 625 x 94 -> 313 x 47 -> 157 x 24
    ],
)
def test_tiff_opens_in_openslide_with_the_map_mpp_and_pyramid(tmp_path: Path, slide_size_xy, slide_mpp, model_mpp, stride_model_px, levels):
    prob_map = blob_map(slide_size_xy, slide_mpp, model_mpp, stride_model_px)
    rows, cols = prob_map.grid.shape_rows_cols
    files = write_probability_map(prob_map, tmp_path / "map.npy", tmp_path / "map.tif")
    with openslide.OpenSlide(str(files.tiff)) as slide:
        assert slide.level_count == levels
        assert slide.level_dimensions[0] == (cols, rows)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(prob_map.grid.map_mpp, rel=1e-6)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(prob_map.grid.map_mpp, rel=1e-6)
        expected_sizes = [(cols, rows)]
        for _ in range(1, levels):
            expected_sizes.append((-(-expected_sizes[-1][0] // 2), -(-expected_sizes[-1][1] // 2)))
        assert slide.level_dimensions == tuple(expected_sizes)
        assert max(slide.level_dimensions[-1]) <= 256
        width, height = min(cols, 200), min(rows, 200)
        region = np.asarray(slide.read_region((0, 0), 0, (width, height)))[..., 0]
    expected = np.round(prob_map.probabilities[:height, :width] * 255)
    np.testing.assert_array_equal(region, expected)
    with tifffile.TiffFile(files.tiff) as tiff:
        page = tiff.pages[0]
        assert page.is_tiled and page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert page.dtype == np.uint8 and page.photometric == tifffile.PHOTOMETRIC.MINISBLACK


def test_tiff_pyramid_halves_by_2x2_means():
    probabilities = np.zeros((5, 600), np.float32)
    probabilities[0, 0:2] = 1.0
    levels = tiff_pyramid(probabilities, tile_px=256)
    assert [lv.shape for lv in levels] == [(5, 600), (3, 300), (2, 150)]
    assert levels[1][0, 0] == 128  # mean of 1, 1, 0, 0 = 0.5 -> 127.5 rounds to even 128


def test_sidecar_places_the_cells_on_level_0(tmp_path: Path):
    prob_map = blob_map((2220, 2967), 0.499, 0.243, 64)
    files = write_probability_map(
        prob_map, tmp_path / "out" / "map.npy", tmp_path / "out" / "map.tif", tmp_path / "out" / "map_geometry.json"
    )
    sidecar = json.loads(files.sidecar.read_text())
    stride = 64 * 0.243 / 0.499
    assert sidecar["stride_px_level0"] == pytest.approx(stride)
    assert sidecar["cell_0_centre_xy_level0"] == pytest.approx([stride / 2, stride / 2])
    assert sidecar["cell_0_corner_xy_level0"] == pytest.approx([0.0, 0.0])  # the map is the slide downsampled, no offset
    assert sidecar["map_mpp"] == pytest.approx(64 * 0.243)
    assert sidecar["shape_rows_cols"] == list(prob_map.grid.shape_rows_cols)
    assert (sidecar["npy"], sidecar["tiff"]) == ("map.npy", "map.tif")
    row, col = 40, 17
    centre = np.array(sidecar["cell_0_centre_xy_level0"]) + np.array([col, row]) * sidecar["stride_px_level0"]
    assert tuple(centre) == pytest.approx(prob_map.cell_centre_xy_level0(row, col))
