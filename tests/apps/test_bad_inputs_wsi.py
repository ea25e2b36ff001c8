"""The WSI app's bad-input suite (issue 15): each case through the command line, as a user or the
gateway starts it, asserting the exit code, the last stderr line (one line, naming the problem, no
traceback) and what the output folder holds: nothing partial (no ``.partial-*`` staging folder), a
failed slide's folder only its ``error.json``, a processed slide every output its summary lists.

A tile that does not decode behind a sound header fails while the tissue mask is read: the same
one-line slide error. Unusual but valid inputs are cases too (a 1000 x 1000 TIFF, a slide without tissue, a DICOM WSI
holding level 0 only): they give a complete result. The cases that fail before any pixel is read
cost the app's start-up (about 10 s on 2 cores).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
import pytest
from PIL import Image

from operators.wsi.slide.reader import open_slide
from tests.apps.conftest import write_test_classifier
from tests.conftest import run_app
from tests.real_slides import real_dicom_wsi, real_svs, real_vips_pyramid
from tests.wsi_factories import write_pyramid
from training.synthetic.bad_slides import (
    dicom_wsi_copy,
    svs_without_mpp,
    truncated_copy,
    volume_size,
    write_tiff_claiming_pixels,
    write_tiff_with_undecodable_tile,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # runs the app end to end (its own limit: 900 s)
APP = "wsi_metastasis_app"
QUICK = ["--workers", "2", "--backend", "torch"]
FAST = ["--mpp", "0.1215", *QUICK]  # a finer scan than the real 0.499 um/px: about 16x fewer windows
PREFIX = f"{APP}: error: "
Outcome = Literal["complete", "error only", "nothing"]


@dataclass(frozen=True)
class Models:
    good: Path
    nan: Path


@dataclass(frozen=True)
class Run:
    """One case's input: what ``-i`` names, the model and the other options."""

    input: Path
    model: Path
    options: tuple[str, ...] = tuple(FAST)


@dataclass(frozen=True)
class Case:
    make: Callable[[Path, Models], Run]
    exit_code: int
    line: Callable[[Run], str] | None  # the last stderr line after "wsi_metastasis_app: error: "
    outcome: Outcome


def real_he(size: int = 1000) -> np.ndarray:
    with open_slide(real_svs(), backend="openslide") as slide:
        return slide.read_region((600, 1000), 0, (size, size))


def image_file(suffix: str) -> Callable[[Path, Models], Run]:
    def make(tmp: Path, models: Models) -> Run:
        Image.fromarray(real_he()).save(tmp / f"tile{suffix}")
        return Run(tmp / f"tile{suffix}", models.good)

    return make


def text_file(tmp: Path, models: Models) -> Run:
    (tmp / "notes.txt").write_text("scanner notes, not a slide\n")
    return Run(tmp / "notes.txt", models.good)


def empty_folder(tmp: Path, models: Models) -> Run:
    (tmp / "slides").mkdir()
    return Run(tmp / "slides", models.good)


def truncated_tiff(tmp: Path, models: Models) -> Run:
    return Run(truncated_copy(real_vips_pyramid(), tmp / "cut.tif", 0.5), models.good)


def tiff_1000(tmp: Path, models: Models) -> Run:
    write_pyramid(tmp / "small.tif", real_he(), levels=1, mpp=0.243)
    return Run(tmp / "small.tif", models.good, tuple(QUICK))


def svs_no_mpp(tmp: Path, models: Models) -> Run:
    return Run(svs_without_mpp(real_svs(), tmp / "nompp.svs"), models.good, tuple(QUICK))


def claims_10e6(tmp: Path, models: Models) -> Run:
    return Run(write_tiff_claiming_pixels(tmp / "huge.tif", (10**6, 10**6), tile=256), models.good)


def claims_uncompressed(tmp: Path, models: Models) -> Run:
    """The issue's crash: one uncompressed strip, a header claiming 1000 x 1000 (mmap beyond the file)."""
    return Run(write_tiff_claiming_pixels(tmp / "claims.tif", (1000, 1000), one_strip=True), models.good)


def undecodable_tile(tmp: Path, models: Models) -> Run:
    return Run(write_tiff_with_undecodable_tile(tmp / "bad_tile.tif"), models.good)


def no_tissue(tmp: Path, models: Models) -> Run:
    write_pyramid(tmp / "blank.tif", np.full((1024, 1024, 3), 242, np.uint8), levels=2, mpp=0.243)
    return Run(tmp / "blank.tif", models.good, tuple(QUICK))


def level0_size() -> tuple[int, int]:
    return max(filter(None, (volume_size(pydicom.dcmread(p, stop_before_pixels=True)) for p in real_dicom_wsi().glob("*.dcm"))))


def dicom_level0_only(tmp: Path, models: Models) -> Run:
    size = level0_size()
    return Run(dicom_wsi_copy(real_dicom_wsi(), tmp / "level0_only", keep=lambda h: volume_size(h) in (None, size)), models.good)


def dicom_without_level0(tmp: Path, models: Models) -> Run:
    size = level0_size()
    return Run(dicom_wsi_copy(real_dicom_wsi(), tmp / "no_level0", keep=lambda h: volume_size(h) != size), models.good, tuple(QUICK))


def dicom_uid(keyword: str, value: str) -> Callable[[Path, Models], Run]:
    def make(tmp: Path, models: Models) -> Run:
        return Run(dicom_wsi_copy(real_dicom_wsi(), tmp / "bad_uid", uids={keyword: value}), models.good)

    return make


def flipped_byte_model(tmp: Path, models: Models) -> Run:
    model = write_test_classifier(tmp / "model")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return Run(real_svs(), model)


def not_a_model(tmp: Path, models: Models) -> Run:
    (tmp / "model.pt").write_bytes(b"PK\x03\x04 not really a zip archive")
    return Run(real_svs(), tmp / "model.pt")


def nan_model(tmp: Path, models: Models) -> Run:
    return Run(real_svs(), models.nan)


def slide_failed(reason: str) -> Callable[[Run], str]:
    """'1 of 1 slides failed (name: reason)...', ``reason`` formatted with the run's input as {input}."""

    def line(run: Run) -> str:
        name = run.input.stem if run.input.is_file() else run.input.name
        return f"1 of 1 slides failed ({name}: {reason.format(input=run.input)}); see error.json in its output folder"

    return line


NOT_A_SLIDE = "{input}: not a whole-slide image (not a TIFF, not a DICOM WSI; OpenSlide does not recognise the format)"
CASES: dict[str, Case] = {
    "png given as a slide": Case(image_file(".png"), 2, slide_failed(NOT_A_SLIDE), "error only"),
    "jpeg given as a slide": Case(image_file(".jpg"), 2, slide_failed(NOT_A_SLIDE), "error only"),
    "text file given as a slide": Case(text_file, 2, slide_failed(NOT_A_SLIDE), "error only"),
    "empty folder": Case(empty_folder, 2, lambda run: f"no slides in {run.input}", "nothing"),
    "truncated tiff": Case(truncated_tiff, 2, slide_failed("{input}: truncated TIFF: image directory 0 starts at byte "), "error only"),
    "1000 x 1000 tiff is processed": Case(tiff_1000, 0, None, "complete"),
    "svs without mpp": Case(
        svs_no_mpp,
        2,
        slide_failed(
            "{input}: the slide's metadata gives no usable resolution (no XResolution/YResolution tags); "
            "pass the level-0 micrometres per pixel as an mpp override"
        ),
        "error only",
    ),
    "tiff header claiming 10^6 x 10^6 pixels": Case(
        claims_10e6,
        2,
        slide_failed("{input}: corrupt TIFF: page 0 claims 1000000 x 1000000 pixels, which take 15264649 tiles, but it holds 4"),
        "error only",
    ),
    "tiff header claiming more uncompressed pixels than the file holds": Case(
        claims_uncompressed,
        2,
        slide_failed(
            "{input}: corrupt TIFF: page 0 claims 1000 x 1000 uncompressed pixels, more than its image data holds "
            "(strip 0 has 786432 bytes, 3000000 needed)"
        ),
        "error only",
    ),
    "tile that does not decode": Case(
        undecodable_tile,
        2,
        slide_failed("{input}: openslide could not read the region at ("),
        "error only",
    ),
    "slide without tissue is an empty result": Case(no_tissue, 0, None, "complete"),
    "dicom wsi with level 0 only is processed": Case(dicom_level0_only, 0, None, "complete"),
    "dicom wsi without its level 0": Case(
        dicom_without_level0,
        2,
        slide_failed(
            "{input}: level 0 is 0.998 um/pixel, 4.1x coarser than the 0.243 um/pixel the model reads (at most 2.5x): "
            "a pyramid without its full-resolution level, or a scan at too low a magnification"
        ),
        "error only",
    ),
    "dicom wsi with a series uid ../../../x": Case(
        dicom_uid("SeriesInstanceUID", "../../../x"),
        2,
        slide_failed(
            "{input}: SeriesInstanceUID '../../../x' is not a DICOM UID (it has an empty component (two dots in a row, "
            "or a dot at either end); in 8 instances, e.g. "
        ),
        "error only",
    ),
    "dicom wsi with a study uid 1.2/../../x": Case(
        dicom_uid("StudyInstanceUID", "1.2/../../x"),
        2,
        slide_failed(
            "{input}: StudyInstanceUID '1.2/../../x' is not a DICOM UID (component '2/' is not digits only; in 8 instances, e.g. "
        ),
        "error only",
    ),
    "model file with a flipped byte": Case(
        flipped_byte_model, 2, lambda run: f"model {run.model} fails its integrity check: SHA-256 ", "nothing"
    ),
    "model file that is not a model": Case(
        not_a_model,
        2,
        lambda run: f"{run.model} is neither a TorchScript model nor a PyTorch checkpoint (RuntimeError: PytorchStreamReader failed",
        "nothing",
    ),
    "model whose weights give nan": Case(nan_model, 2, slide_failed("non-finite network outputs"), "error only"),
}
PREFIX_ONLY = {  # cases whose line is checked up to a value that varies (offsets, hashes, file names)
    "tile that does not decode",
    "truncated tiff",
    "dicom wsi with a series uid ../../../x",
    "dicom wsi with a study uid 1.2/../../x",
    "model file with a flipped byte",
    "model file that is not a model",
    "model whose weights give nan",
}


@pytest.fixture(scope="module")
def models(classifier, tmp_path_factory) -> Models:
    return Models(classifier, write_test_classifier(tmp_path_factory.mktemp("nan_model"), nan_head=True))


def slide_folder_state(folder: Path) -> Outcome:
    """What a slide's output folder holds: its error record only, or a complete set (summary.json and
    every file it lists, none empty, nothing else); anything else fails the test."""
    names = sorted(p.name for p in folder.iterdir())
    if names == ["error.json"]:
        assert json.loads((folder / "error.json").read_text())["error"]
        return "error only"
    outputs = json.loads((folder / "summary.json").read_text())["outputs"]
    assert names == sorted({*outputs.values(), "summary.json"})
    assert all((folder / name).stat().st_size > 0 for name in names if name != "detections.csv")  # no lesions: an empty CSV
    return "complete"


def output_state(root: Path) -> dict[str, Outcome]:
    """Each slide folder's state; no staging folder may be left anywhere under ``root``."""
    if not root.exists():
        return {}
    assert [p for p in root.rglob("*") if p.name.startswith(".partial-")] == []
    return {folder.name: slide_folder_state(folder) for folder in sorted(root.iterdir())}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input(case: str, models: Models, tmp_path: Path):
    spec = CASES[case]
    run = spec.make(tmp_path, models)
    out = tmp_path / "out"
    result = run_app(APP, ["-i", str(run.input), "-o", str(out), "-m", str(run.model), *run.options])
    assert result.returncode == spec.exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    if spec.line is not None:
        last = result.stderr.strip().splitlines()[-1]
        expected = PREFIX + spec.line(run)
        if case in PREFIX_ONLY:
            assert last.startswith(expected.removesuffix("); see error.json in its output folder")), last
        else:
            assert last == expected
    state = output_state(out)
    if spec.outcome == "nothing":
        assert state == {}
    else:
        assert list(state.values()) == [spec.outcome]
    if spec.outcome == "complete":
        summary = json.loads((next(out.iterdir()) / "summary.json").read_text())
        assert summary["flags"] == [] and summary["model"]["integrity"]["status"] == "verified"


def test_one_bad_slide_in_a_folder_fails_alone_and_the_others_get_every_output(models: Models, tmp_path: Path):
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(real_svs(), folder / "good.svs")
    write_tiff_claiming_pixels(folder / "claims.tif", (1000, 1000), one_strip=True)  # crashed the whole batch
    truncated_copy(real_vips_pyramid(), folder / "cut.tif", 0.5)
    (folder / "readme.txt").write_text("not a slide suffix: skipped with a warning\n")
    result = run_app(APP, ["-i", str(folder), "-o", str(tmp_path / "out"), "-m", str(models.good), *FAST])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"{PREFIX}2 of 3 slides failed (claims: {folder / 'claims.tif'}: corrupt TIFF: page 0 claims 1000 x 1000 uncompressed pixels"
    )
    assert f"; cut: {folder / 'cut.tif'}: truncated TIFF: image directory 0 starts at byte " in last and last.endswith(
        "; see error.json in their output folders"
    )
    assert output_state(tmp_path / "out") == {"claims": "error only", "cut": "error only", "good": "complete"}
    errors = {name: json.loads((tmp_path / "out" / name / "error.json").read_text()) for name in ("claims", "cut")}
    assert {record["error_type"] for record in errors.values()} == {"SlideReadError"}
    assert errors["claims"]["slide"] == str(folder / "claims.tif")
