"""A DICOM WSI in every tile encoding wsidicom writes (testkit.real_slides.make_encoded_dicom_wsi, from the real SVS):
which backend reads it, and the pixels it returns against the source's, read independently.

Level 0 is compared with the SVS read by OpenSlide (the pixels the DICOM tiles were encoded from);
the generated lower levels with the level's own frames decoded by pydicom (imagecodecs for JPEG XL,
which pydicom 3.0 has no decoder for). Lossless encodings must be identical; lossy ones close.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from operators.core.errors import SlideReadError
from operators.dicom.pixel_decoding import ensure_decoder_plugins
from operators.wsi.slide.backends import OpenSlideBackend
from operators.wsi.slide.dicom_source import scan_dicom_slide_folder
from operators.wsi.slide.reader import SlideHandle, open_slide
from operators.wsi.slide.wsidicom_backend import OPENSLIDE_DICOM_SYNTAXES
from testkit.real_slides import DICOM_ENCODINGS, JPEGLS_NEAR
from tests.real_slides import encoded_dicom_wsi

# encoding -> (its transfer syntax, the backend "auto" reads it with, level-0 mean |difference| allowed; 0: identical)
CASES: dict[str, tuple[str, str, float]] = {
    "jpeg": ("1.2.840.10008.1.2.4.50", "openslide", 4.0),  # quality 90, 4:2:2: 2.15 by `python -m testkit.real_slides encodings`
    "jpeg-lossless": ("1.2.840.10008.1.2.4.57", "wsidicom", 0),
    "jpeg2000-lossless": ("1.2.840.10008.1.2.4.90", "openslide", 0),
    "jpeg2000": ("1.2.840.10008.1.2.4.91", "openslide", 1.5),  # 45 dB: 0.91
    "htj2k-lossless": ("1.2.840.10008.1.2.4.201", "wsidicom", 0),
    "jpegls-lossless": ("1.2.840.10008.1.2.4.80", "wsidicom", 0),
    "jpegls-near-lossless": ("1.2.840.10008.1.2.4.81", "wsidicom", 2.0),  # NEAR=2: 1.39, max 2
    "rle": ("1.2.840.10008.1.2.5", "wsidicom", 0),
    "jpegxl": ("1.2.840.10008.1.2.4.112", "wsidicom", 3.0),  # level 90: 1.67
    "uncompressed": ("1.2.840.10008.1.2.1", "openslide", 0),
}
# (x, y, width, height) at level 0 of the 2220 x 2967 slide; the last one runs past its bottom-right corner
REGIONS = [(0, 0, 300, 200), (512, 768, 512, 512), (2020, 2817, 300, 250)]
PYRAMIDS = [encoding for encoding in DICOM_ENCODINGS if encoding != "uncompressed"]  # the uncompressed slide is level 0 only


def test_every_encoding_wsidicom_writes_has_a_case():
    assert set(CASES) == set(DICOM_ENCODINGS)


@pytest.fixture(scope="module")
def source_regions(svs) -> list[np.ndarray]:
    with open_slide(svs, backend="openslide") as slide:
        return [slide.read_region((x, y), 0, (w, h)) for x, y, w, h in REGIONS]


def assert_level_0_matches_the_source(slide: SlideHandle, encoding: str, source_regions: list[np.ndarray]) -> None:
    allowed = CASES[encoding][2]
    for (x, y, w, h), expected in zip(REGIONS, source_regions, strict=True):
        ours = slide.read_region((x, y), 0, (w, h))
        if allowed == 0:
            np.testing.assert_array_equal(ours, expected, err_msg=f"{encoding} at {(x, y, w, h)}")
            continue
        difference = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
        assert difference.mean() <= allowed, f"{encoding} at {(x, y, w, h)}: mean |diff| {difference.mean():.2f}"
        if encoding == "jpegls-near-lossless":
            assert difference.max() <= JPEGLS_NEAR  # what near-lossless JPEG-LS guarantees


@pytest.mark.parametrize("encoding", DICOM_ENCODINGS)
def test_auto_reads_each_encoding_with_a_backend_that_decodes_it(encoding, source_regions):
    syntax, backend, _ = CASES[encoding]
    path = encoded_dicom_wsi(encoding)
    assert {str(i.header.file_meta.TransferSyntaxUID) for level in scan_dicom_slide_folder(path).volume_levels for i in level} == {syntax}
    with open_slide(path) as slide:
        assert slide.backend == backend
        assert slide.mpp_xy == pytest.approx((0.499, 0.499), abs=1e-3)
        assert_level_0_matches_the_source(slide, encoding, source_regions)


@pytest.mark.parametrize("backend", ["openslide", "wsidicom"])
@pytest.mark.parametrize("encoding", DICOM_ENCODINGS)
def test_each_dicom_backend_reads_the_encoding_or_refuses_it_naming_the_syntax(encoding, backend, source_regions):
    syntax = CASES[encoding][0]
    path = encoded_dicom_wsi(encoding)
    if backend == "openslide" and syntax not in OPENSLIDE_DICOM_SYNTAXES:
        with pytest.raises(SlideReadError, match=rf"OpenSlide 4 does not decode DICOM WSI tiles in .*\({syntax}\); use slide backend"):
            open_slide(path, backend="openslide")
        return
    with open_slide(path, backend=backend) as slide:
        assert slide.backend == backend
        assert_level_0_matches_the_source(slide, encoding, source_regions)


@pytest.mark.parametrize("encoding", [e for e in DICOM_ENCODINGS if CASES[e][0] not in OPENSLIDE_DICOM_SYNTAXES])
def test_openslide_itself_cannot_read_the_syntaxes_left_to_wsidicom(encoding):
    """Keeps OPENSLIDE_DICOM_SYNTAXES honest: OpenSlide fails on each syntax outside it (at open or at the first read)."""
    level0 = scan_dicom_slide_folder(encoded_dicom_wsi(encoding)).level0_path
    with pytest.raises(SlideReadError, match="OpenSlide"):
        backend = OpenSlideBackend(level0)
        try:
            backend.read_rgb((0, 0), 0, (256, 256))
        finally:
            backend.close()


def reference_frame(path: Path, syntax: str, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of the instance decoded without wsidicom or OpenSlide."""
    if syntax == "1.2.840.10008.1.2.4.112":  # JPEG XL: no pydicom decoder
        instance = next(i for level in scan_dicom_slide_folder(path.parent).volume_levels for i in level if i.path == path)
        return imagecodecs.jpegxl_decode(instance.read_frames({index})[index])
    ensure_decoder_plugins()
    return pixel_array(path, index=index)


@pytest.mark.parametrize(
    ("encoding", "backend"),
    [(e, b) for e in PYRAMIDS for b in ("openslide", "wsidicom") if b == "wsidicom" or CASES[e][0] in OPENSLIDE_DICOM_SYNTAXES],
)
def test_lower_levels_match_their_frames_decoded_by_pydicom(encoding, backend):
    """A whole frame of every level the backend serves (one not cropped by wsidicomizer's edge defect)."""
    syntax, _, allowed = CASES[encoding]
    path = encoded_dicom_wsi(encoding)
    with open_slide(path, backend=backend) as slide:
        assert len(slide.levels) > 1
        for level in slide.levels[1:]:
            (instance,) = slide.dicom_source.instances_of_size(level.size_xy)
            columns, rows = instance.tile_grid_xy
            tile_w, tile_h = int(instance.header.Columns), int(instance.header.Rows)
            column, row = (columns - 1) // 2, (rows - 1) // 2
            expected = reference_frame(instance.path, syntax, row * columns + column)
            width, height = min(tile_w, level.size_xy[0] - column * tile_w), min(tile_h, level.size_xy[1] - row * tile_h)
            location = (math.ceil(column * tile_w * level.downsample), math.ceil(row * tile_h * level.downsample))
            ours = slide.read_region(location, level.index, (width, height))
            difference = np.abs(ours.astype(np.int16) - expected[:height, :width].astype(np.int16))
            limit = 0 if allowed == 0 else 1.5  # lossy: only the decoders differ
            assert difference.mean() <= limit, f"{encoding} level {level.index}: mean |diff| {difference.mean():.2f}"


def test_a_wsidicom_slide_opens_again_without_deciding_anything(source_regions):
    path = encoded_dicom_wsi("jpegls-lossless")
    with open_slide(path) as first, first.resolved.open() as again:
        assert (again.backend, again.opened_file, again.levels) == ("wsidicom", path, first.levels)
        assert_level_0_matches_the_source(again, "jpegls-lossless", source_regions)


@pytest.fixture(scope="module")
def part2_slide(tmp_path_factory) -> Path:
    """The JPEG 2000 lossless slide labelled JPEG 2000 Part 2 Multi-component (a syntax neither OpenSlide nor wsidicom decodes)."""
    source = encoded_dicom_wsi("jpeg2000-lossless")
    target = tmp_path_factory.mktemp("part2") / "slide"
    target.mkdir()
    for file in sorted(source.glob("*.dcm")):
        dataset = pydicom.dcmread(file)
        dataset.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.92")
        dataset.save_as(target / file.name, enforce_file_format=True)
    shutil.copy(source / ".complete", target / ".complete")
    return target


@pytest.mark.parametrize("backend", ["auto", "wsidicom"])
def test_a_syntax_no_backend_decodes_is_refused_in_one_line_naming_it(part2_slide, backend):
    with pytest.raises(SlideReadError) as refused:
        open_slide(part2_slide, backend=backend)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{part2_slide}: DICOM WSI that no slide backend decodes")
    assert (
        "wsidicom has no decoder for JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only) (1.2.840.10008.1.2.4.92)" in message
    )
    if backend == "auto":
        assert "OpenSlide 4 does not decode DICOM WSI tiles in JPEG 2000 Part 2" in message


@pytest.mark.parametrize("backend", ["cucim", "tifffile"])
def test_the_tiff_backends_refuse_a_dicom_wsi(backend):
    with pytest.raises(SlideReadError, match=f"read with OpenSlide or wsidicom only, not {backend}"):
        open_slide(encoded_dicom_wsi("jpegls-lossless"), backend=backend)


def test_wsidicom_refuses_a_tiff(vips_pyramid):
    with pytest.raises(SlideReadError, match="not a DICOM WSI, so the wsidicom backend cannot read it"):
        open_slide(vips_pyramid, backend="wsidicom")


def test_a_corrupt_frame_read_through_wsidicom_is_a_named_error(tmp_path):
    """The first frame's bytes (past its JPEG-LS header) zeroed, its length kept: the read fails naming the slide and the decoder."""
    path = tmp_path / "slide"
    shutil.copytree(encoded_dicom_wsi("jpegls-lossless"), path)
    instance = scan_dicom_slide_folder(path).volume_levels[0][0]
    frame = instance.read_frames({0})[0]
    data = instance.path.read_bytes()
    start = data.index(frame)
    instance.path.write_bytes(data[: start + 40] + bytes(len(frame) - 80) + data[start + len(frame) - 40 :])
    with open_slide(path) as slide:
        slide.read_region((600, 600), 0, (100, 100))  # other frames still read
        with pytest.raises(SlideReadError, match=rf"^{path}: wsidicom could not read level 0 at \(0, 0\) size \(100, 100\) \(\w+Error: "):
            slide.read_region((0, 0), 0, (100, 100))
