"""End to end: the FROC command line on synthetic ground truth (mask TIFFs and ASAP XML) in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from training.pathology.froc import evaluate, main
from training.synthetic.camelyon_layout import describe_lesions, scene_for, write_ground_truth
from training.synthetic.wsi_annotations import write_asap_xml

REPO_ROOT = Path(__file__).resolve().parents[3]


def _tumor_a_mask() -> np.ndarray:
    """4096 x 4096 level 0, 0/255. A1: square [1024, 2048)^2 (32 px at level 5); A2: disk r 640 at (3000, 1000);
    A3: square [3000, 3064)^2 (2 px at level 5: an ITC once grown)."""
    m = np.zeros((4096, 4096), np.uint8)
    m[1024:2048, 1024:2048] = 255
    r, c = np.ogrid[:4096, :4096]
    m[(c - 3000) ** 2 + (r - 1000) ** 2 <= 640**2] = 255
    m[3000:3064, 3000:3064] = 255
    return m


def _write_case(root: Path, layout: str) -> tuple[Path, Path]:
    gt, det = root / "gt", root / "det"
    gt.mkdir()
    det.mkdir()
    m = _tumor_a_mask()
    with tifffile.TiffWriter(gt / "tumor_a.tif") as tw:
        tw.write(m, tile=(256, 256), compression="zlib", subfiletype=0)
        if layout == "pyramid":  # levels 1-6 by block-centre sampling, as a nearest-neighbour pyramid
            for k in range(1, 7):
                d = 2**k
                tw.write(
                    np.ascontiguousarray(m[d // 2 :: d, d // 2 :: d]),
                    tile=(64, 64) if 4096 // d >= 64 else None,
                    compression="zlib",
                    subfiletype=1,
                )
    # tumor_b: B1 square [500, 1500)^2 and B2 a small triangle (ITC) as ASAP XML; no slide size given
    write_asap_xml(
        [
            np.array([[500, 500], [1500, 500], [1500, 1500], [500, 1500]], float),
            np.array([[3000, 3000], [3040, 3000], [3020, 3040]], float),
        ],
        gt / "tumor_b.xml",
    )
    rows = {
        # A1 hit 0.9 (and 0.4 and 0.2 inside it: not counted again); 2149 is level-5 column 67, 4 px right of
        # the square's last column (63): inside the 4.82 px growth. 2176 is column 68, 5 px away: a false positive.
        # A2 hit 0.6. A3 (ITC) 0.8: ignored. Background 0.3.
        "tumor_a": [
            (0.9, 1500, 1500),
            (0.4, 1100, 1100),
            (0.2, 2149, 1500),
            (0.35, 2176, 1500),
            (0.6, 3000, 1000),
            (0.8, 3032, 3032),
            (0.3, 100, 100),
        ],
        "tumor_b": [(0.7, 1000, 1000), (0.5, 3500, 500)],
        "normal_c": [(0.95, 10, 10), (0.1, 2000, 2000)],
    }
    for name, rs in rows.items():
        header = "probability,x,y\n" if name == "tumor_b" else ""
        (det / f"{name}.csv").write_text(header + "".join(f"{p},{x},{y}\n" for p, x, y in rs))
    return gt, det


@pytest.mark.parametrize("layout", ["level0_only", "pyramid"])
def test_cli_official_and_bundle_variant(tmp_path: Path, layout: str) -> None:
    """Hand-worked: lesions A1 0.9, A2 0.6, B1 0.7 (3; ITCs A3, B2 left out); FPs 0.35, 0.3 (A), 0.5 (B),
    0.95, 0.1 (normal C); 3 slides.

    Thresholds .1 .3 .35 .5 .6 .7 .9 .95: FPs 5 4 3 2 1 1 1 1 (+0) -> per slide 5/3 4/3 1 2/3 1/3 1/3 1/3 1/3 0;
    TPs 3 3 3 3 3 2 1 0 (+0) -> sensitivity 1 1 1 1 1 2/3 1/3 0 0. Reversed, x = 0 1/3 1/3 1/3 1/3 2/3 1 4/3 5/3:
    at 0.25 between (0, 0) and the first (1/3, 0) -> 0; at 0.5 between the last (1/3, 1) and (2/3, 1) -> 1;
    1 to 8 -> 1. FROC = 5/6.

    Bundle variant (level 6, tumour slides only): the same hits (radius 2.41 px: column 33 is 2 px from the
    square's last column 31, column 34 is 3 px); no normal slide. FPs .3 .35 .5 over 2 slides: thresholds
    .3 .35 .5 .6 .7 .9 give FPs 3 2 1 0 0 0 -> per slide 1.5 1 .5 0 0 0 (+0); sensitivity 1 1 1 1 2/3 1/3 (+0):
    at 0 FPs the last point is sensitivity 1, so every rate reads 1.0.
    """
    gt, det = _write_case(tmp_path, layout)
    out = tmp_path / "froc.json"
    assert main(["--ground-truth", str(gt), "--detections", str(det), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["froc"] == pytest.approx(5 / 6, abs=1e-12)
    assert [r["sensitivity_at_fp_rates"][k] for k in ("0.25", "0.5", "1", "2", "4", "8")] == pytest.approx([0, 1, 1, 1, 1, 1])
    assert (r["n_slides"], r["n_tumor_slides"], r["n_normal_slides"], r["n_lesions"], r["n_itc"]) == (3, 2, 1, 3, 2)
    assert (r["n_detections"], r["n_false_positives"], r["n_lesions_detected"]) == (11, 5, 3)
    slides = {s["slide"]: s for s in r["slides"]}
    a = slides["tumor_a"]
    assert (a["n_false_positives"], a["n_itc_hits"], a["n_repeat_hits"], a["n_lesions"], a["n_itc"]) == (2, 1, 2, 2, 1)
    assert a["evaluation_mask"]["shape_hw"] == [128, 128]
    assert ("pyramid" in a["evaluation_mask"]["source"]) is (layout == "pyramid")
    assert sorted(les["max_probability"] or 0 for les in a["lesions"]) == [0, 0.6, 0.9]
    assert slides["tumor_b"]["ground_truth"].endswith("tumor_b.xml") and slides["tumor_b"]["n_itc"] == 1
    assert slides["normal_c"]["type"] == "Normal" and slides["normal_c"]["n_false_positives"] == 2

    out6 = tmp_path / "froc6.json"
    assert main(["--ground-truth", str(gt), "--detections", str(det), "--json", str(out6), "--level", "6", "--tumor-slides-only"]) == 0
    r6 = json.loads(out6.read_text())
    assert r6["froc"] == 1.0 and r6["n_slides"] == 2 and r6["n_false_positives"] == 3 and r6["n_lesions"] == 3
    assert r6["variant"].startswith("model-zoo")


def test_ground_truth_without_csv_counts_as_zero_detections(tmp_path: Path) -> None:
    gt, det = _write_case(tmp_path, "level0_only")
    (det / "tumor_b.csv").unlink()
    r = evaluate(gt, det)
    assert r["slides_without_detections_csv"] == ["tumor_b"]
    assert r["n_slides"] == 3 and r["n_lesions"] == 3 and r["n_lesions_detected"] == 2


def test_cli_rejects_unknown_and_abbreviated_options(tmp_path: Path) -> None:
    for extra in (["--bogus"], ["--tumor"]):
        with pytest.raises(SystemExit) as exc:
            main(["--ground-truth", str(tmp_path), "--detections", str(tmp_path), "--json", str(tmp_path / "o.json"), *extra])
        assert exc.value.code == 2


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    gt, det = _write_case(tmp_path, "level0_only")
    out = tmp_path / "o.json"
    proc = subprocess.run(
        [sys.executable, "-m", "training.pathology.froc", "--ground-truth", str(gt), "--detections", str(det), "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["froc"] == pytest.approx(5 / 6)


def test_synthetic_camelyon_ground_truth_mask_and_xml_agree(tmp_path: Path) -> None:
    """The dataset generator's ground-truth writer (the same call ``camelyon_layout`` makes for test slides):
    a detection at each non-ITC lesion's centroid, one false positive per slide; mask TIFF and XML give the
    same evaluation, and the generator's ITC lesions are ITCs here."""
    masks, xmls, det = tmp_path / "masks", tmp_path / "xmls", tmp_path / "det"
    for d in (masks, xmls, det):
        d.mkdir()
    expected_itc = 0
    for k, seed in enumerate((12, 14)):  # lesions (um): 665 + an ITC of 41; 465, 333, 333 + an ITC of 72
        scene = scene_for(seed, (8192, 8192), tumor=True)
        name = f"test_{k + 1:03d}"
        write_ground_truth(scene, xmls / f"{name}.xml", masks / f"{name}_mask.tif", workers=1)
        lesions = describe_lesions(scene)
        expected_itc += sum(les["category"] == "itc" for les in lesions)
        rows = [f"0.9,{les['centroid_xy'][0]:.0f},{les['centroid_xy'][1]:.0f}" for les in lesions if les["category"] != "itc"]
        (det / f"{name}.csv").write_text("\n".join([*rows, "0.2,10,10"]) + "\n")
    (det / "test_003.csv").write_text("0.1,500,500\n")  # a normal slide
    by_mask, by_xml = evaluate(masks, det), evaluate(xmls, det)
    assert expected_itc == 2
    assert by_mask["n_lesions"] == by_xml["n_lesions"] == 4
    assert by_mask["froc"] == by_xml["froc"] == 1.0
    assert by_mask["n_false_positives"] == 3
    assert by_mask["n_itc"] == by_xml["n_itc"] == expected_itc
    strip = [(s["slide"], [(les["label"], les["is_itc"], les["area_px"]) for les in s["lesions"]]) for s in by_mask["slides"]]
    assert strip == [(s["slide"], [(les["label"], les["is_itc"], les["area_px"]) for les in s["lesions"]]) for s in by_xml["slides"]]
