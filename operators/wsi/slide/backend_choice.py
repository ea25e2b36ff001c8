"""Which backend reads a slide: chosen and checked once per slide, when it is opened.

For ``backend="auto"``:

* a DICOM WSI folder whose VOLUME tiles are all JPEG baseline, JPEG 2000 or uncompressed (explicit
  VR little endian) -> OpenSlide (cuCIM 23.10 does not open DICOM; tifffile does not either); its
  pyramid's defects are then worked around (:mod:`operators.wsi.slide.dicom_workarounds`);
* a DICOM WSI folder in any other transfer syntax (JPEG-LS, JPEG lossless, HTJ2K, RLE, JPEG XL, ...)
  -> wsidicom (:mod:`operators.wsi.slide.wsidicom_backend`); a syntax wsidicom has no decoder for
  either is refused, naming it;
* a TIFF that cuCIM reads correctly (tiled 8-bit RGB, JPEG/deflate/LZW/none, no predictor; its
  first pixels are checked against tifffile's) -> cuCIM, with its per-process tile cache switched
  on, but only while ``PREFER_CUCIM`` (see the measurements above it);
* anything else OpenSlide opens -> OpenSlide;
* a TIFF OpenSlide refuses (stripped, JPEG 2000 or WebP tiles) -> the tifffile backend, which
  decodes only the strips or tiles a read touches.

A backend asked for by name is used when it can read the file, else the slide is refused naming why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np

from operators.core.errors import SlideReadError
from operators.wsi.slide.backends import CuCIMBackend, OpenSlideBackend, SlideBackend, TifffileBackend, optional_available
from operators.wsi.slide.dicom_source import DicomSlideSource
from operators.wsi.slide.tiff_inspection import TiffInfo
from operators.wsi.slide.wsidicom_backend import OPENSLIDE_DICOM_SYNTAXES, WsidicomBackend, describe_syntax, wsidicom_syntax_problem

BackendRequest = Literal["auto", "cucim", "openslide", "tifffile", "wsidicom"]
BACKENDS: tuple[BackendRequest, ...] = get_args(BackendRequest)
# Why cuCIM would come first: seconds for 1000 224x224 level-0 patches through SlideHandle.read_region,
# median of 3 interleaved runs on a shared 2-core CPU machine (load ~4.5, so +-30 %), no GPU.
# "random" = uniform random locations; "grid64" = the app's stride-64 raster order.
#                              cuCIM   cuCIM+cache  OpenSlide  tifffile(LRU)  tifffile, no cache
#   cmu_small_region.svs random 1.25      0.10        1.68        0.12            1.11
#   (Aperio, 240 JPEG)   grid64 0.74      0.05        1.27        0.05            0.75
#   libvips pyramid      random 1.31      0.15        1.85        0.10            1.88
#   (256 JPEG tiles)     grid64 1.24      0.10        2.06        0.11            1.44
# OpenSlide's own tile cache (32 MiB default) holds these small slides whole, yet each read costs
# ~1.3-2 ms; with its cache off it took 3.2 s (SVS) and 4.8 s (pyramid). A cache miss (a large
# slide) costs about the uncached column. cuCIM is faster in both regimes, but cuCIM 23.10 crashes
# (SIGSEGV in read_region) when a second Holoscan operator thread reads after another thread has
# used it, which is how the WSI app runs; so "auto" prefers OpenSlide and cuCIM is used only when
# asked for by name. The tifffile backend (own LRU tile cache) serves only files nothing else reads.
PREFER_CUCIM = False
_CUCIM_CHECK_SIZE = 64
_CUCIM_CHECK_MEAN_ABS = 2.0


def _cucim_agrees_with_tifffile(path: Path, backend: CuCIMBackend) -> bool:
    """Guard against silent mis-decoding: a patch at the centre of level 0 and of the last level must match tifffile's."""
    reference = TifffileBackend(path)
    try:
        for level in (0, len(backend.level_sizes_xy) - 1):
            width, height = backend.level_sizes_xy[level]
            size = (min(_CUCIM_CHECK_SIZE, width), min(_CUCIM_CHECK_SIZE, height))
            location = (
                int((width - size[0]) // 2 * backend.level_downsamples[level]),
                int((height - size[1]) // 2 * backend.level_downsamples[level]),
            )
            ours = backend.read_rgb(location, level, size).astype(np.int16)
            theirs = reference.read_rgb(location, level, size).astype(np.int16)
            if np.abs(ours - theirs).mean() > _CUCIM_CHECK_MEAN_ABS:
                return False
    except SlideReadError:
        return False
    finally:
        reference.close()
    return True


def _open_cucim(path: Path, tiff: TiffInfo, checked: bool) -> CuCIMBackend | str:
    """A cuCIM backend, or why not."""
    refusal = tiff.cucim_refusal()
    if refusal:
        return refusal
    if not optional_available("cucim"):
        return "cucim is not installed"
    backend = CuCIMBackend(path)
    expected = tuple(level.size_xy for level in tiff.levels)
    if backend.level_sizes_xy != expected:
        backend.close()
        return f"cuCIM sees levels {backend.level_sizes_xy}, tifffile {expected}"
    if checked and not _cucim_agrees_with_tifffile(path, backend):
        backend.close()
        return "cuCIM's pixels differ from tifffile's on a test patch"
    return backend


def _open_openslide(path: Path) -> OpenSlideBackend | str:
    """An OpenSlide backend, or why not."""
    if not optional_available("openslide"):
        return "openslide is not installed"
    if not OpenSlideBackend.can_open(path):
        return "OpenSlide does not recognise the format"
    try:
        return OpenSlideBackend(path)
    except SlideReadError as error:
        return str(error)


def _forced_cucim(path: Path, tiff: TiffInfo | None) -> CuCIMBackend:
    if tiff is None:
        raise SlideReadError(f"{path}: cuCIM reads only TIFF-based slides here; use backend 'openslide' or 'auto'")
    opened = _open_cucim(path, tiff, checked=False)
    if isinstance(opened, str):
        raise SlideReadError(f"{path}: cuCIM cannot read it correctly: {opened}")
    return opened


def _forced_tifffile(path: Path, tiff: TiffInfo | None) -> TifffileBackend:
    if tiff is None:
        raise SlideReadError(f"{path}: not a TIFF, so the tifffile backend cannot read it")
    refusal = tiff.tifffile_refusal()
    if refusal:
        raise SlideReadError(f"{path}: the tifffile backend cannot read it: {refusal}")
    return TifffileBackend(path)


def _auto_backend(path: Path, tiff: TiffInfo | None) -> SlideBackend:
    """The first backend of the module docstring's order that reads the file; else why none does."""
    reasons: list[str] = []
    if tiff is not None and PREFER_CUCIM:
        cucim = _open_cucim(path, tiff, checked=True)
        if not isinstance(cucim, str):
            return cucim
        reasons.append(f"cuCIM: {cucim}")
    openslide = _open_openslide(path)
    if not isinstance(openslide, str):
        return openslide
    reasons.append(openslide)
    if tiff is None:
        raise SlideReadError(f"{path}: not a whole-slide image (not a TIFF, not a DICOM WSI; {'; '.join(reasons)})")
    refusal = tiff.tifffile_refusal()
    if refusal is None:
        return TifffileBackend(path)
    reasons.append(f"tifffile: {refusal}")
    raise SlideReadError(f"{path}: TIFF that no backend can read ({'; '.join(reasons)})")


def dicom_transfer_syntaxes(dicom: DicomSlideSource) -> tuple[str, ...]:
    """The TransferSyntaxUIDs of the slide's VOLUME instances, sorted."""
    return tuple(sorted({str(i.header.file_meta.get("TransferSyntaxUID", "")) for level in dicom.volume_levels for i in level}))


def _dicom_backend(path: Path, request: BackendRequest, dicom: DicomSlideSource) -> SlideBackend:
    """OpenSlide where it decodes every VOLUME instance's transfer syntax, else wsidicom; else why neither does."""
    if request not in ("auto", "openslide", "wsidicom"):
        raise SlideReadError(f"{path}: a DICOM WSI is read with OpenSlide or wsidicom only, not {request}")
    reasons: list[str] = []
    if request in ("auto", "openslide"):
        outside = [describe_syntax(s) for s in dicom_transfer_syntaxes(dicom) if s not in OPENSLIDE_DICOM_SYNTAXES]
        opened = f"OpenSlide 4 does not decode DICOM WSI tiles in {', '.join(outside)}" if outside else _open_openslide(dicom.level0_path)
        if not isinstance(opened, str):
            return opened
        if request == "openslide":
            raise SlideReadError(f"{path}: {opened}; use slide backend 'wsidicom' or 'auto'")
        reasons.append(opened)
    problems = sorted({problem for level in dicom.volume_levels for i in level if (problem := wsidicom_syntax_problem(i.header))})
    if problems:
        raise SlideReadError(f"{path}: DICOM WSI that no slide backend decodes ({'; '.join([*reasons, *problems])})")
    return WsidicomBackend(dicom.folder)


def choose_backend(path: Path, request: BackendRequest, tiff: TiffInfo | None, dicom: DicomSlideSource | None = None) -> SlideBackend:
    """Open a slide with the requested backend, or for "auto" the one the module docstring names.

    ``tiff`` is the file's :func:`~operators.wsi.slide.tiff_inspection.inspect_tiff` (None: not a
    TIFF); ``dicom`` is the scanned DICOM WSI folder (OpenSlide is pointed at its level-0 instance,
    wsidicom at the folder). Raises :class:`SlideReadError` naming ``path`` when no backend can read it.
    """
    if dicom is not None:
        return _dicom_backend(path, request, dicom)
    if request == "wsidicom":
        raise SlideReadError(f"{path}: not a DICOM WSI, so the wsidicom backend cannot read it")
    if request == "auto":
        return _auto_backend(path, tiff)
    if request == "cucim":
        return _forced_cucim(path, tiff)
    if request == "tifffile":
        return _forced_tifffile(path, tiff)
    return OpenSlideBackend(path)
