"""The hard-benchmark script: its model arguments, the fast-vs-float32 check, and one real run on tiny slides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.camelyon_hard import main, parse_models, report_markdown, runtime_checks
from training.synthetic.camelyon_layout import write_camelyon_like_dataset

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "model_zoo" / "pathology_tumor_detection" / "model.pt"


@pytest.mark.parametrize(
    ("specs", "error"),
    [
        (["today"], "NAME=PATH"),
        (["=x.pt"], "NAME=PATH"),
        ([f"a={MODEL}", f"a={MODEL}"], "given twice"),
        (["a=/nonexistent/model.pt"], "no file"),
    ],
)
def test_bad_model_arguments_are_refused(specs, error) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        parse_models(specs)


def _run(tmp_path: Path, name: str, lesion_probability: float, froc: float) -> dict:
    out = tmp_path / name
    out.mkdir()
    slides = [
        {
            "slide": "t",
            "type": "Tumor",
            "lesions": [{"max_probability": lesion_probability, "is_itc": False}, {"max_probability": 0.5, "is_itc": False}],
            "false_positives": {"probability": [0.8], "x_level0": [0], "y_level0": [0]},
        },
        {"slide": "n", "type": "Normal", "lesions": [], "false_positives": {"probability": [0.6], "x_level0": [0], "y_level0": [0]}},
    ]
    for variant in ("official", "bundle"):
        (out / f"froc_{variant}.json").write_text(json.dumps({"slides": slides}))
    return {"out": str(out), "froc_official": froc, "froc_bundle": froc}


def test_the_check_compares_the_fast_runtime_with_each_float32_one_in_both_variants(tmp_path: Path) -> None:
    runs = {
        "m / auto": _run(tmp_path, "auto", 0.7, 0.5),  # the first lesion now ranks below the 0.8 false positive
        "m / openvino-fp32": _run(tmp_path, "ov32", 0.9, 0.75),
        "m / torch-bf16": _run(tmp_path, "tbf16", 0.9, 0.75),  # not float32: no check
    }
    checks = runtime_checks(runs, "m", ["auto", "openvino-fp32", "torch-bf16"])
    assert [(c["variant"], c["reference"]) for c in checks] == [("official", "openvino-fp32"), ("bundle", "openvino-fp32")]
    assert all(not c["passed"] and c["froc_loss"] > 0.01 for c in checks)
    same = runtime_checks(
        {"m / auto": runs["m / openvino-fp32"], "m / openvino-fp32": runs["m / openvino-fp32"]}, "m", ["auto", "openvino-fp32"]
    )
    assert all(c["passed"] and c["froc_loss"] == 0 for c in same)


@pytest.mark.slow
def test_a_real_run_writes_the_table_the_curves_and_the_check(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_camelyon_like_dataset(data, n_tumor=1, n_normal=1, n_test=2, size_xy_level0=(3072, 3072), seed=0, workers=1)
    work = tmp_path / "work"
    rc = main(["--work-dir", str(work), "--data", str(data), "--runtime", "auto", "--runtime", "openvino-fp32", "--check"])
    result = json.loads((work / "results.json").read_text())
    assert list(result["runs"]) == ["today / auto", "today / openvino-fp32", "colour-threshold baseline"]
    assert {c["variant"] for c in result["checks"]} == {"official", "bundle"}
    assert rc == (0 if all(c["passed"] for c in result["checks"]) else 1)
    for run in result["runs"].values():
        assert run["n_slides"] == 2 and run["froc_ci"][0] <= run["froc_official"] <= run["froc_ci"][1]
    assert (work / "froc_curves.png").stat().st_size > 0
    assert report_markdown(result) == (work / "report.md").read_text()
