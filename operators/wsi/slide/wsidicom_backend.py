"""The wsidicom backend: DICOM WSI pyramids in the transfer syntaxes OpenSlide 4 does not decode.

OpenSlide 4.0 decodes DICOM WSI tiles in JPEG baseline, JPEG 2000 (lossless and lossy) and explicit
VR little endian (uncompressed) only (:data:`OPENSLIDE_DICOM_SYNTAXES`, checked by the tests on a
slide in each encoding); it refuses JPEG-LS, JPEG lossless, HTJ2K, RLE and JPEG XL tiles when it
opens the instance. wsidicom (Apache-2.0, the reader of the wsidicomizer project) reads a DICOM WSI
folder in those syntaxes, decoding each frame with the pinned codecs (imagecodecs, Pillow's
OpenJPEG, pylibjpeg-rle, pydicom); :func:`wsidicom_syntax_problem` asks it, from the header alone,
whether it has a decoder for a syntax, so that a slide nothing decodes is refused naming its
transfer syntax (e.g. JPEG 2000 Part 2 multi-component, MPEG).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000, UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit

from operators.core.errors import SlideReadError
from operators.wsi.slide.backends import BackendName, _downsample, _FloorAlignedBackend, import_optional, optional_available

logger = logging.getLogger(__name__)

# The DICOM WSI tile encodings OpenSlide 4.0 decodes (openslide-bin 4.0.1; tests/operators/wsi/slide/test_dicom_encodings.py).
OPENSLIDE_DICOM_SYNTAXES: frozenset[str] = frozenset({JPEGBaseline8Bit, JPEG2000Lossless, JPEG2000, ExplicitVRLittleEndian})


def describe_syntax(syntax: str) -> str:
    """'JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)'; the bare UID when pydicom does not know it."""
    name = UID(syntax).name
    return f"{name} ({syntax})" if name and name != syntax else syntax


def wsidicom_syntax_problem(header: Dataset) -> str | None:
    """Why wsidicom cannot decode this instance's frames (transfer syntax, samples, bits), or None when it can."""
    if not optional_available("wsidicom"):
        return "wsidicom is not installed"
    from wsidicom.codec.decoder import Decoder

    syntax = str(header.file_meta.get("TransferSyntaxUID", ""))
    samples, bits = int(header.get("SamplesPerPixel", 1)), int(header.get("BitsStored", 8))
    if Decoder.select_decoder(UID(syntax), samples, bits) is None:
        return f"wsidicom has no decoder for {describe_syntax(syntax)} with {samples} sample(s) of {bits} bits"
    return None


class WsidicomBackend(_FloorAlignedBackend):
    """wsidicom on a DICOM WSI folder (checked first by :func:`~operators.wsi.slide.dicom_source.scan_dicom_slide_folder`)."""

    name: ClassVar[BackendName] = "wsidicom"

    def __init__(self, folder: Path):
        wsidicom = import_optional("wsidicom", "Reading DICOM WSI tiles OpenSlide does not decode")
        self.path = folder
        try:
            self._slide = wsidicom.WsiDicom.open(folder)
            levels = sorted(self._slide.levels, key=lambda level: -level.size.width * level.size.height)
        except Exception as error:  # WsiDicomNotFoundError, ValueError, OSError: wsidicom's refusals of a folder
            raise SlideReadError(f"{folder}: wsidicom cannot open it ({type(error).__name__}: {error})") from error
        self._levels = tuple(int(level.level) for level in levels)  # our level index -> wsidicom's (log2 of its scale)
        self.level_sizes_xy = tuple((int(level.size.width), int(level.size.height)) for level in levels)
        self.level_downsamples = tuple(_downsample(self.level_sizes_xy[0], size) for size in self.level_sizes_xy)

    def _read_inside(self, level, x, y, width, height):
        try:
            region = self._slide.read_region((int(x), int(y)), self._levels[level], (int(width), int(height)))
        except Exception as error:  # a frame its decoder rejects (truncated, corrupt): named, not a traceback
            raise self._failed(f"level {level} at ({x}, {y}) size ({width}, {height})", error) from error
        return np.ascontiguousarray(np.asarray(region.convert("RGB")))

    def close(self) -> None:
        self._slide.close()
