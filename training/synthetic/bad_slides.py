"""Damaged or unusual whole-slide images, made from good ones, for the apps' bad-input tests.

Each function writes a new file or folder and leaves its source as it was:

* :func:`write_tiff_claiming_pixels`: a small tifffile TIFF whose ImageWidth/ImageLength are then
  patched to claim more pixels than its strips or tiles hold (the header of a damaged file);
* :func:`write_tiff_with_undecodable_tile`: a sound header over a tile that does not decode;
* :func:`truncated_copy`: the first part of a file, as an interrupted download leaves it;
* :func:`svs_without_mpp`: an Aperio SVS whose ImageDescription no longer carries ``MPP``;
* :func:`dicom_wsi_copy`: a DICOM WSI folder with some instances left out (missing pyramid levels)
  and UIDs replaced (written without pydicom's value validation, as a broken sender would).
"""

from __future__ import annotations

import io
import shutil
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pydicom
import tifffile
from PIL import Image
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

_TAG_FORMATS = {3: "H", 4: "I", 16: "Q"}  # TIFF SHORT, LONG, LONG8


def patch_tiff_tags(path: Path, page: int, values: Mapping[str, int]) -> None:
    """Overwrite integer tags of one page in place (e.g. ``{"ImageWidth": 10**6}``); the tags must exist."""
    with tifffile.TiffFile(path) as tif:
        byteorder = tif.byteorder
        tags = tif.pages[page].tags
        places = {name: (tags[name].valueoffset, _TAG_FORMATS[int(tags[name].dtype)]) for name in values}
    data = bytearray(path.read_bytes())
    for name, value in values.items():
        offset, kind = places[name]
        struct.pack_into(byteorder + kind, data, offset, value)
    path.write_bytes(bytes(data))


def write_tiff_claiming_pixels(
    path: Path,
    claimed_xy: tuple[int, int],
    tile: int | None = None,
    one_strip: bool = False,
    mpp: float = 0.243,
) -> Path:
    """A 512 x 512 RGB TIFF (tiled JPEG when ``tile``, else uncompressed strips) whose header claims
    ``claimed_xy`` (width, height) pixels. ``one_strip``: one uncompressed strip whose RowsPerStrip
    is patched too, so the strip count fits the claim and only the byte count gives it away."""
    pixels = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    layout = {"tile": (tile, tile), "compression": "jpeg"} if tile else {"rowsperstrip": 512 if one_strip else 64}
    per_cm = 1e4 / mpp
    tifffile.imwrite(path, pixels, photometric="rgb", resolution=(per_cm, per_cm), resolutionunit="CENTIMETER", **layout)
    values = {"ImageWidth": claimed_xy[0], "ImageLength": claimed_xy[1]}
    if one_strip:
        values["RowsPerStrip"] = claimed_xy[1]
    patch_tiff_tags(path, 0, values)
    return path


def write_tiff_with_undecodable_tile(path: Path, mpp: float = 0.243) -> Path:
    """A 512 x 512 JPEG-tiled RGB TIFF whose first tile is replaced by a one-channel JPEG: the header and
    every offset are sound, so only decoding that tile fails (OpenSlide: 'Bogus JPEG colorspace')."""
    pixels = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    per_cm = 1e4 / mpp
    tifffile.imwrite(
        path, pixels, photometric="rgb", tile=(256, 256), compression="jpeg", resolution=(per_cm, per_cm), resolutionunit="CENTIMETER"
    )
    gray = io.BytesIO()
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(gray, "JPEG")
    start = path.stat().st_size
    with open(path, "ab") as stream:
        stream.write(gray.getvalue())
    with tifffile.TiffFile(path) as tif:
        byteorder, tags = tif.byteorder, tif.pages[0].tags
        offsets, counts = tags["TileOffsets"], tags["TileByteCounts"]
        places = [(offsets.valueoffset, _TAG_FORMATS[int(offsets.dtype)]), (counts.valueoffset, _TAG_FORMATS[int(counts.dtype)])]
    data = bytearray(path.read_bytes())
    for (offset, kind), value in zip(places, (start, len(gray.getvalue())), strict=True):
        struct.pack_into(byteorder + kind, data, offset, value)
    path.write_bytes(bytes(data))
    return path


def truncated_copy(source: Path, target: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``source``'s bytes."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def svs_without_mpp(source: Path, target: Path) -> Path:
    """A copy of an Aperio SVS whose ImageDescriptions say ``MPX`` where they said ``MPP`` (same length,
    so no offset moves): OpenSlide and tifffile then find no resolution."""
    data = source.read_bytes()
    if b"|MPP = " not in data:
        raise ValueError(f"{source} has no '|MPP = ' in its ImageDescription")
    target.write_bytes(data.replace(b"|MPP = ", b"|MPX = "))
    return target


def dicom_wsi_copy(
    source: Path,
    target: Path,
    keep: Callable[[Dataset], bool] = lambda header: True,
    uids: Mapping[str, str] | None = None,
) -> Path:
    """A copy of a DICOM WSI folder with the instances ``keep`` refuses left out and the ``uids``
    attributes (keyword -> value) replaced in every instance kept, valid UIDs or not."""
    target.mkdir(parents=True)
    for path in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if not keep(header):
            continue
        if not uids:
            shutil.copy(path, target / path.name)
            continue
        dataset = pydicom.dcmread(path)
        with pydicom_config.disable_value_validation():
            for keyword, value in uids.items():
                setattr(dataset, keyword, value)
            dataset.save_as(target / path.name, enforce_file_format=True)
    return target


def volume_size(header: Dataset) -> tuple[int, int] | None:
    """(columns, rows) of a VOLUME instance's total pixel matrix; None for labels, overviews, thumbnails."""
    image_type = list(header.get("ImageType", []))
    if len(image_type) < 3 or str(image_type[2]).upper() != "VOLUME":
        return None
    return int(header.TotalPixelMatrixColumns), int(header.TotalPixelMatrixRows)
