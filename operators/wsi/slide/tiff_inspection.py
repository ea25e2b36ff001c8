"""What tifffile sees in a TIFF, before any backend opens it: levels, layout, truncation, resolution.

:func:`inspect_tiff` reads only the image file directories: their chain must lie inside the file,
every strip or tile must end inside it (a truncated download is refused here, naming the file), the
pixels a page's header claims must be there (as many strips or tiles as its ImageWidth and
ImageLength need, and for uncompressed data as many bytes: a patched or corrupt header claiming
10^6 x 10^6 pixels is refused before any backend maps or decodes it), and
the level-0 resolution comes from Aperio's ImageDescription ``MPP`` or the TIFF resolution tags.

What cuCIM 23.10 reads correctly was measured against OpenSlide and tifffile on the real SVS, a
libvips pyramid and tifffile-written TIFFs (tiled 240/256/512, JPEG RGB and YCbCr, deflate, LZW,
uncompressed, levels as pages): identical pixels. It silently returns garbage for deflate with a
horizontal predictor, refuses zstd/webp/JPEG 2000 and planar-separate files, does not open DICOM,
reports no resolution for SVS (spacing 1, unit ''), pads outside the slide with white for SVS but
black for generic TIFF, and reads stripped (untiled) TIFFs, where it is not memory bounded. So
:meth:`TiffInfo.cucim_refusal` allows it only for tiled, single-sample-plane, 8-bit RGB TIFFs with
those compressions and no predictor (and its first read is checked against the tifffile decoder,
see :mod:`operators.wsi.slide.backend_choice`).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operators.core.errors import SlideReadError

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# TIFF Compression values cuCIM 23.10 decodes correctly (measured, see module docstring).
CUCIM_COMPRESSIONS = {1: "none", 5: "LZW", 7: "JPEG", 8: "deflate", 32946: "deflate"}
PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 1, 2, 6
_RESOLUTION_UNIT_UM = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}  # inch, centimetre, tifffile's mm and um
_RESOLUTION_UNIT_NAME = {2: "inch", 3: "centimetre", 4: "millimetre", 5: "micrometre"}
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
PLAUSIBLE_MPP = (0.01, 100.0)  # micrometres per pixel; 72 dpi or vips' 1 px/mm defaults fall outside


@dataclass(frozen=True)
class TiffLevelInfo:
    size_xy: tuple[int, int]
    tiled: bool
    compression: int
    predictor: int
    photometric: int
    samples: int
    planar_contig: bool
    dtype: str
    pages: int


@dataclass(frozen=True)
class TiffInfo:
    """What tifffile sees in a TIFF: its main series' pyramid levels and its resolution."""

    path: Path
    kind: str  # tifffile's name for the series: 'svs', 'generic', 'ome', 'ndpi', ...
    levels: tuple[TiffLevelInfo, ...]
    mpp_xy: tuple[float, float] | None
    mpp_note: str  # where the resolution came from, or why there is none

    def cucim_refusal(self) -> str | None:
        """Why cuCIM must not read this file, or None when it may (see the module docstring)."""
        for index, level in enumerate(self.levels):
            if not level.tiled:
                return f"level {index} is not tiled (cuCIM would decode the whole level)"
            if level.compression not in CUCIM_COMPRESSIONS:
                return f"level {index} has TIFF compression {level.compression}"
            if level.predictor != 1:
                return f"level {index} uses predictor {level.predictor} (cuCIM 23.10 mis-decodes it)"
            if not (level.samples == 3 and level.planar_contig and level.dtype == "uint8"):
                return f"level {index} is not 8-bit interleaved RGB"
            if level.photometric not in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR) or (
                level.photometric == PHOTOMETRIC_YCBCR and level.compression != 7
            ):
                return f"level {index} has photometric {level.photometric}"
            if level.pages != 1:
                return f"level {index} has {level.pages} pages (focal planes or channels)"
        return None

    def tifffile_refusal(self) -> str | None:
        """Why the tifffile backend cannot read this file, or None."""
        for index, level in enumerate(self.levels):
            if level.dtype != "uint8":
                return f"level {index} has {level.dtype} samples; only 8-bit slides are read"
            if level.photometric == PHOTOMETRIC_YCBCR and level.compression != 7:
                return f"level {index} is YCbCr without JPEG compression"
            if level.photometric not in (PHOTOMETRIC_MINISBLACK, PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR):
                return f"level {index} has photometric interpretation {level.photometric}"
            if level.samples not in (1, 3, 4):
                return f"level {index} has {level.samples} samples per pixel"
        return None


def has_tiff_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(4) in TIFF_MAGICS
    except OSError:
        return False


def _resolution_mpp(page: Any) -> tuple[tuple[float, float] | None, str]:
    tags = page.tags
    unit = int(tags.valueof("ResolutionUnit", 2))  # TIFF default is inch
    x_res, y_res = tags.valueof("XResolution"), tags.valueof("YResolution")
    if x_res is None or y_res is None:
        return None, "no XResolution/YResolution tags"
    if unit not in _RESOLUTION_UNIT_UM:
        return None, f"ResolutionUnit {unit} (no absolute unit)"
    pixels_per_unit = [
        r[0] / r[1] if isinstance(r, tuple) and r[1] else float(r) if not isinstance(r, tuple) else 0.0 for r in (x_res, y_res)
    ]
    if min(pixels_per_unit) <= 0:
        return None, "zero XResolution/YResolution"
    mpp = (_RESOLUTION_UNIT_UM[unit] / pixels_per_unit[0], _RESOLUTION_UNIT_UM[unit] / pixels_per_unit[1])
    return mpp, f"TIFF resolution tags in pixels per {_RESOLUTION_UNIT_NAME[unit]}"


def _tiff_mpp(tif: Any, page: Any) -> tuple[tuple[float, float] | None, str]:
    if tif.is_svs:
        match = _APERIO_MPP.search(page.description or "")
        if match and float(match.group(1)) > 0:
            mpp = float(match.group(1))
            return (mpp, mpp), "Aperio ImageDescription MPP"
    return _resolution_mpp(page)


def _check_ifd_chain(path: Path, file_size: int, max_ifds: int = 100_000) -> None:
    """Follow the chain of image file directories: every one must lie inside the file (catches truncation)."""
    with open(path, "rb") as stream:
        head = stream.read(16)
        order = "<" if head[:2] == b"II" else ">"
        big = struct.unpack(order + "H", head[2:4])[0] == 43
        offset_format, count_format, entry_size = (order + "Q", order + "Q", 20) if big else (order + "I", order + "H", 12)
        offset = struct.unpack(offset_format, head[8:16] if big else head[4:8])[0]
        seen: set[int] = set()
        while offset and len(seen) < max_ifds:
            count_size, offset_size = struct.calcsize(count_format), struct.calcsize(offset_format)
            if offset in seen:
                raise SlideReadError(f"{path}: corrupt TIFF: its image directories loop back to byte {offset}")
            if offset + count_size > file_size:
                raise SlideReadError(
                    f"{path}: truncated TIFF: image directory {len(seen)} starts at byte {offset} but the file has {file_size} bytes"
                )
            seen.add(offset)
            stream.seek(offset)
            count = struct.unpack(count_format, stream.read(count_size))[0]
            next_at = offset + count_size + count * entry_size
            if next_at + offset_size > file_size:
                raise SlideReadError(
                    f"{path}: truncated TIFF: image directory {len(seen) - 1} ends at byte {next_at + offset_size} but the file has {file_size} bytes"
                )
            stream.seek(next_at)
            offset = struct.unpack(offset_format, stream.read(offset_size))[0]


def _check_segments_inside(tif: Any, path: Path, file_size: int) -> None:
    for number, page in enumerate(tif.pages):
        ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True) if count]
        if ends and max(ends) > file_size:
            raise SlideReadError(
                f"{path}: truncated or corrupt TIFF: image data of page {number} extends to byte {max(ends)} but the file has {file_size} bytes"
            )


@dataclass(frozen=True)
class _SegmentLayout:
    """How a page's header says its pixels are cut: ``count`` strips or tiles of ``width`` x ``rows``
    pixels (a plane's last strip may have fewer rows), ``per_plane`` of them per sample plane."""

    count: int
    per_plane: int
    width: int
    rows: int
    samples: int
    tiled: bool

    def uncompressed_bytes(self, index: int, image_length: int, bits_per_sample: int) -> int:
        """Bytes segment ``index`` (0-based) takes uncompressed, each row padded to a whole byte."""
        rows = self.rows if self.tiled else min(self.rows, image_length - (index % self.per_plane) * self.rows)
        return -(-self.width * self.samples * bits_per_sample // 8) * rows


def _segment_layout(page: Any) -> _SegmentLayout:
    width, length, samples = int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel)
    planes = samples if int(page.planarconfig) == 2 and samples > 1 else 1
    depth = max(1, int(page.imagedepth or 1))
    if page.is_tiled:
        tile_w, tile_h, tile_d = int(page.tilewidth), int(page.tilelength), max(1, int(page.tiledepth or 1))
        per_plane = -(-width // tile_w) * -(-length // tile_h) * -(-depth // tile_d)
        return _SegmentLayout(per_plane * planes, per_plane, tile_w, tile_h * tile_d, samples // planes, tiled=True)
    rows = max(1, min(int(page.rowsperstrip or length), length))
    per_plane = -(-length // rows) * depth
    return _SegmentLayout(per_plane * planes, per_plane, width, rows, samples // planes, tiled=False)


def _check_dimensions_match_data(tif: Any, path: Path) -> None:
    """The pixels a page's header claims must be there: as many strips or tiles as its ImageWidth and
    ImageLength need, and for uncompressed data each one as many bytes as its pixels take."""
    for number, page in enumerate(tif.pages):
        width, length = int(page.imagewidth), int(page.imagelength)
        layout = _segment_layout(page)
        kind = "tile" if layout.tiled else "strip"
        offsets = page.tags.get("TileOffsets" if layout.tiled else "StripOffsets")
        stored = int(offsets.count) if offsets is not None else 0
        if stored != layout.count:
            raise SlideReadError(
                f"{path}: corrupt TIFF: page {number} claims {width} x {length} pixels, which take {layout.count} {kind}s, "
                f"but it holds {stored}"
            )
        if int(page.compression) != 1 or int(page.photometric) == PHOTOMETRIC_YCBCR:  # subsampled YCbCr takes fewer bytes
            continue
        for index, count in enumerate(page.databytecounts):
            needed = layout.uncompressed_bytes(index, length, int(page.bitspersample))
            if count and count < needed:
                raise SlideReadError(
                    f"{path}: corrupt TIFF: page {number} claims {width} x {length} uncompressed pixels, more than its image "
                    f"data holds ({kind} {index} has {count} bytes, {needed} needed)"
                )


def inspect_tiff(path: Path) -> TiffInfo | None:
    """TIFF levels and resolution; None when the file is not a TIFF. Raises SlideReadError for a broken TIFF."""
    if not has_tiff_magic(path):
        return None
    import tifffile

    _check_ifd_chain(path, path.stat().st_size)
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) == 0:
                raise SlideReadError(f"{path}: truncated or corrupt TIFF: no image directory could be read ({path.stat().st_size} bytes)")
            _check_segments_inside(tif, path, path.stat().st_size)
            _check_dimensions_match_data(tif, path)
            series = tif.series[0]
            levels = []
            for level in series.levels:
                page = level.keyframe
                levels.append(
                    TiffLevelInfo(
                        size_xy=(int(page.imagewidth), int(page.imagelength)),
                        tiled=bool(page.is_tiled),
                        compression=int(page.compression),
                        predictor=int(page.predictor),
                        photometric=int(page.photometric),
                        samples=int(page.samplesperpixel),
                        planar_contig=int(page.planarconfig) == 1 or int(page.samplesperpixel) == 1,
                        dtype=str(page.dtype) if page.dtype is not None else f"{page.bitspersample}-bit",
                        pages=len(level.pages),
                    )
                )
            mpp, note = _tiff_mpp(tif, series.levels[0].keyframe)
            kind = str(series.kind)
    except SlideReadError:
        raise
    except Exception as error:  # tifffile raises TiffFileError, ValueError, IndexError, struct.error ... on broken files
        raise SlideReadError(f"{path}: truncated or corrupt TIFF ({type(error).__name__}: {error})") from error
    if not levels:
        raise SlideReadError(f"{path}: TIFF without images")
    return TiffInfo(path=path, kind=kind, levels=tuple(levels), mpp_xy=mpp, mpp_note=note)
