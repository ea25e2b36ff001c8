from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from operators.core.errors import AppInputError, SlideReadError
from operators.wsi.slide import backend_choice
from operators.wsi.slide import reader as wsi_slide_reader
from operators.wsi.slide.backends import optional_available
from operators.wsi.slide.reader import SlideHandle, open_slide
from tests.wsi_factories import write_pyramid

HAS_CUCIM = optional_available("cucim")
TILED_BACKENDS = ["openslide", "tifffile", *(["cucim"] if HAS_CUCIM else [])]
SVS_SIZE = (2220, 2967)
DICOM_INSTANCE_LEVELS = [(2220, 2967), (1110, 1484), (555, 742), (278, 371), (139, 186)]  # wsidicomizer rounds up
# wsidicomizer 0.26.1 crops the edge tiles of the levels it generates from a level with an odd tile count
# (240x120 frames in a 240x240 grid); OpenSlide cannot decode those, so the reader leaves such levels out.
DICOM_LEVELS = [(2220, 2967), (139, 186)]
VIPS_LEVELS = [(2220, 2967), (1110, 1483), (555, 741), (277, 370), (138, 185)]  # libvips rounds down


# ---------------------------------------------------------------------------------------------
# Real slides


@pytest.mark.parametrize(
    ("kind", "backends", "levels"),
    [
        ("svs", ("cucim", "openslide"), [SVS_SIZE]),  # the 574x768 strip page is a thumbnail, not a level
        ("dicom", ("openslide",), DICOM_LEVELS),
        ("vips", ("cucim", "openslide"), VIPS_LEVELS),
    ],
)
def test_real_slides_open_with_their_levels_and_mpp(real_slides, kind, backends, levels):
    with open_slide(real_slides[kind]) as slide:
        assert slide.backend == (backends[0] if HAS_CUCIM and backend_choice.PREFER_CUCIM else backends[-1])
        assert [lv.size_xy for lv in slide.levels] == levels
        assert [lv.index for lv in slide.levels] == list(range(len(levels)))
        assert slide.levels[0].downsample == 1.0
        nominal = [2.0 ** round(np.log2(levels[0][0] / width)) for width, _ in levels]
        np.testing.assert_allclose([lv.downsample for lv in slide.levels], nominal, rtol=0.01)
        np.testing.assert_allclose(slide.mpp_xy, (0.499, 0.499), rtol=1e-6)
        region = slide.read_region((1000, 1500), 0, (224, 224))
        assert region.shape == (224, 224, 3) and region.dtype == np.uint8
        assert (slide.dicom_source is not None) == (kind == "dicom")


def test_dicom_level_datasets_are_headers_of_that_level(dicom_wsi):
    with open_slide(dicom_wsi) as slide:
        series = {ds.SeriesInstanceUID for level in slide.levels for ds in slide.dicom_level_datasets(level.index)}
        assert series == {slide.dicom_source.series_instance_uid}
        for level in slide.levels:
            datasets = slide.dicom_level_datasets(level.index)
            assert len(datasets) == 1
            ds = datasets[0]
            assert (ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows) == level.size_xy
            assert list(ds.ImageType)[2] == "VOLUME"
            assert "PixelData" not in ds
            assert ds.PyramidUID == slide.dicom_source.pyramid_uid
            spacing_mm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
            assert float(spacing_mm[1]) * 1000 == pytest.approx(0.499 * level.downsample, rel=0.01)
        assert {i.image_type for i in slide.dicom_source.other_instances} == {"LABEL", "OVERVIEW", "THUMBNAIL"}
        assert [instances[0].header.TotalPixelMatrixColumns for instances in slide.dicom_source.volume_levels] == [
            s[0] for s in DICOM_INSTANCE_LEVELS
        ]


def test_dicom_instance_file_opens_its_folder(dicom_wsi):
    instance = next(dicom_wsi.glob("*.dcm"))
    with open_slide(instance) as slide:
        assert slide.dicom_source.folder == dicom_wsi
        assert [lv.size_xy for lv in slide.levels] == DICOM_LEVELS


def test_svs_without_pyramid_downsamples_like_libvips(svs, vips_pyramid):
    """The SVS has one level: read_at_downsample builds low resolutions on the fly; compare with vips' own levels."""
    with open_slide(svs) as original, open_slide(vips_pyramid) as vips:
        assert len(original.levels) == 1
        for level in vips.levels[1:]:
            size = level.size_xy  # libvips halves (2x2 means) and rounds sizes down: its grid is 2**i, not level.downsample
            ours = original.read_at_downsample((0, 0), 2**level.index, size).astype(np.int16)
            theirs = vips.read_region((0, 0), level.index, size).astype(np.int16)
            assert np.abs(ours - theirs).mean() < 2.5, level
        thumbnail = original.thumbnail(32)
        assert thumbnail.shape == (93, 70, 3)


def _must_not_run(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran again on re-opening a resolved slide")

    return fail


@pytest.mark.parametrize("kind", ["svs", "dicom", "vips"])
def test_a_resolved_slide_reopens_the_same_levels_and_pixels_without_deciding_again(real_slides, kind, monkeypatch):
    with open_slide(real_slides[kind]) as first:
        resolved = first.resolved
        last = first.levels[-1].index
        expected = [first.read_region((1000, 1500), 0, (224, 224)), first.read_region((0, 0), last, (120, 160))]
        described = (first.backend, first.mpp_xy, first.mpp_source, first.levels, first.opened_file)
    assert first.closed
    for name in ("scan_dicom_slide_folder", "inspect_tiff", "choose_backend", "work_around_dicom_levels", "_resolve_mpp"):
        monkeypatch.setattr(wsi_slide_reader, name, _must_not_run(name))
    with resolved.open() as again:
        assert again.resolved is resolved and again.dicom_source is resolved.dicom_source
        assert (again.backend, again.mpp_xy, again.mpp_source, again.levels, again.opened_file) == described
        # the last DICOM level is the YCbCr one the first opening calibrated: the fix must come back too
        np.testing.assert_array_equal(again.read_region((1000, 1500), 0, (224, 224)), expected[0])
        np.testing.assert_array_equal(again.read_region((0, 0), last, (120, 160)), expected[1])


# ---------------------------------------------------------------------------------------------
# Synthetic TIFFs written here


@pytest.mark.parametrize(
    ("unit", "mpp", "compression"),
    [
        ("CENTIMETER", 0.25, "jpeg"),
        ("CENTIMETER", 0.5, "zlib"),
        ("INCH", 0.5, None),
    ],
)
def test_tiled_pyramidal_tiff_levels_mpp_and_pixels(tmp_path, tissue, unit, mpp, compression):
    path = tmp_path / "pyramid.tif"
    arrays = write_pyramid(path, tissue, unit=unit, mpp=mpp, compression=compression)
    written = [tifffile.imread(path, level=i) for i in range(3)]  # decoded by tifffile: the truth for lossy JPEG
    for backend in ["auto", *TILED_BACKENDS]:
        with open_slide(path, backend=backend) as slide:
            if backend == "auto":
                assert slide.backend == ("cucim" if HAS_CUCIM and backend_choice.PREFER_CUCIM else "openslide")
            assert slide.mpp_xy == pytest.approx((mpp, mpp))
            assert [lv.size_xy for lv in slide.levels] == [(a.shape[1], a.shape[0]) for a in arrays]
            assert [lv.downsample for lv in slide.levels] == [1.0, 2.0, 4.0]
            for level, truth in enumerate(written):
                x, y = 96 // 2**level * 2**level, 64  # level-0 location on the level's grid
                region = slide.read_region((x, y), level, (100, 60))
                np.testing.assert_array_equal(
                    region,
                    truth[y // 2**level : y // 2**level + 60, x // 2**level : x // 2**level + 100],
                    err_msg=f"{backend} level {level}",
                )


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).mean(axis=(1, 3))


def test_untiled_single_level_tiff_downsampled_on_the_fly(untiled):
    path, level0 = untiled
    with open_slide(path) as slide:
        assert slide.backend == "tifffile"
        assert [lv.size_xy for lv in slide.levels] == [(2048, 1536)]
        assert slide.mpp_xy == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(slide.read_region((100, 37), 0, (300, 200)), level0[37:237, 100:400])
        small = slide.read_at_downsample((0, 0), 16, (128, 96))
        assert np.abs(small - block_mean(level0, 16)).max() <= 1
        np.testing.assert_array_equal(slide.thumbnail(16), small)
        # a fractional downsample at an arbitrary location: Pillow's box filter over the same level-0 window
        got = slide.read_at_downsample((40, 24), 2.5, (200, 120))
        expected = np.asarray(Image.fromarray(level0[24 : 24 + 300, 40 : 40 + 500]).resize((200, 120), Image.Resampling.BOX))
        assert np.abs(got.astype(np.int16) - expected).max() <= 1


def test_downsampling_is_built_chunk_by_chunk(untiled, monkeypatch):
    """Never a whole level in memory: every backend read stays within one chunk, and chunking changes nothing."""
    path, _ = untiled
    with open_slide(path) as slide:
        whole = slide.thumbnail(8)
    monkeypatch.setattr(wsi_slide_reader, "CHUNK_SOURCE_PIXELS", 256)
    reads: list[tuple[int, int]] = []
    with open_slide(path) as slide:
        original = slide._backend.read_rgb
        monkeypatch.setattr(slide._backend, "read_rgb", lambda loc, lv, size: reads.append(size) or original(loc, lv, size))
        chunked = slide.thumbnail(8)
    np.testing.assert_array_equal(chunked, whole)
    assert len(reads) >= 48 and max(w * h for w, h in reads) <= 260 * 260


def test_best_level_and_exact_level_reads(tmp_path, tissue):
    path = tmp_path / "pyramid.tif"
    arrays = write_pyramid(path, tissue, compression="zlib")
    with open_slide(path) as slide:
        assert [slide.best_level_for_downsample(d) for d in (1, 1.9, 2, 3.9, 4, 64)] == [0, 0, 1, 1, 2, 2]
        np.testing.assert_array_equal(slide.read_at_downsample((0, 0), 4, (256, 192)), arrays[2])
        assert np.abs(slide.read_at_downsample((0, 0), 8, (128, 96)) - block_mean(arrays[2], 2)).max() <= 1


# ---------------------------------------------------------------------------------------------
# Bad input


def _text(tmp: Path, _: dict) -> Path:
    (tmp / "notes.txt").write_text("not a slide\n")
    return tmp / "notes.txt"


def _png(tmp: Path, _: dict) -> Path:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp / "picture.png")
    return tmp / "picture.png"


def _empty_file(tmp: Path, _: dict) -> Path:
    (tmp / "empty.svs").write_bytes(b"")
    return tmp / "empty.svs"


def _half(source: str, fraction: float = 0.5):
    def make(tmp: Path, slides: dict) -> Path:
        data = slides[source].read_bytes()
        target = tmp / f"cut{slides[source].suffix}"
        target.write_bytes(data[: int(len(data) * fraction)])
        return target

    return make


def _empty_folder(tmp: Path, _: dict) -> Path:
    (tmp / "slide").mkdir()
    return tmp / "slide"


def _dicom_plus(extra: str):
    def make(tmp: Path, slides: dict) -> Path:
        folder = tmp / "slide"
        shutil.copytree(slides["dicom"], folder)
        if extra == "text":
            (folder / "readme.txt").write_text("scanner notes\n")
        elif extra == "second series":
            source = next(folder.glob("*.dcm"))
            ds = pydicom.dcmread(source)
            ds.SeriesInstanceUID = pydicom.uid.generate_uid()
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / "other.dcm")
        elif extra == "truncated":
            largest = max(folder.glob("*.dcm"), key=lambda p: p.stat().st_size)
            largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
        return folder

    return make


def _no_mpp(tmp: Path, _: dict) -> Path:
    tifffile.imwrite(tmp / "nompp.tif", np.zeros((512, 512, 3), np.uint8), photometric="rgb", tile=(256, 256))
    return tmp / "nompp.tif"


def _no_mpp_untiled(tmp: Path, _: dict) -> Path:
    tifffile.imwrite(tmp / "nompp.tif", np.zeros((512, 512, 3), np.uint8), photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    return tmp / "nompp.tif"


def _missing(tmp: Path, _: dict) -> Path:
    return tmp / "nowhere.svs"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_text, "not a whole-slide image"),
        (_png, "not a whole-slide image"),
        (_empty_file, "empty"),
        (_missing, "no such file"),
        (_half("svs"), "truncated"),
        (_half("vips"), "truncated"),
        (_half("vips", 0.99), "truncated"),
        (_empty_folder, "folder is empty"),
        (_dicom_plus("text"), "readme.txt is not a readable DICOM file"),
        (_dicom_plus("second series"), "2 DICOM series"),
        (_dicom_plus("truncated"), "truncated"),
        (_no_mpp, "pass the level-0 micrometres per pixel as an mpp override"),
        (_no_mpp_untiled, "implausible 352.8"),
    ],
    ids=[
        "text",
        "png",
        "empty-file",
        "missing",
        "svs-cut-in-half",
        "tiff-cut-in-half",
        "tiff-cut-at-99%",
        "empty-folder",
        "dicom-folder-with-text",
        "dicom-folder-two-series",
        "dicom-truncated-instance",
        "no-mpp",
        "72-dpi-default",
    ],
)
def test_bad_input_raises_slide_read_error_naming_the_file(tmp_path, real_slides, make, message):
    path = make(tmp_path, real_slides)
    with pytest.raises(SlideReadError) as raised:
        open_slide(path)
    assert isinstance(raised.value, AppInputError)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_mpp_override_wins(tmp_path, svs):
    path = _no_mpp(tmp_path, {})
    with open_slide(path, mpp_override=0.25) as slide:
        assert slide.mpp_xy == (0.25, 0.25) and slide.mpp_source == "mpp_override"
    with open_slide(svs, mpp_override=0.5) as slide:
        assert slide.mpp_xy == (0.5, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "pillow"}, "unknown slide reader backend"),
        ({"mpp_override": -1.0}, "positive number"),
        ({"backend": "cucim"}, "not tiled"),
        ({"backend": "openslide"}, "OpenSlide cannot open it"),
    ],
)
def test_backend_and_override_arguments_are_checked(untiled, kwargs, message):
    if kwargs.get("backend") == "cucim" and not HAS_CUCIM:
        pytest.skip("cucim is not installed")
    path, _ = untiled
    with pytest.raises(SlideReadError, match=message):
        open_slide(path, **kwargs)


def test_handle_is_a_context_manager_and_checks_arguments(untiled):
    path, _ = untiled
    with open_slide(path) as slide:
        assert isinstance(slide, SlideHandle) and str(path) in repr(slide)
        with pytest.raises(ValueError, match="level 3 out of range"):
            slide.read_region((0, 0), 3, (10, 10))
        with pytest.raises(ValueError, match="positive"):
            slide.read_region((0, 0), 0, (0, 10))
        with pytest.raises(ValueError, match="downsample"):
            slide.read_at_downsample((0, 0), 0.5, (10, 10))
        with pytest.raises(ValueError, match="not a DICOM"):
            slide.dicom_level_datasets(0)
    assert slide.closed
    slide.close()  # a second close does nothing
