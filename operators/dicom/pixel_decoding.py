"""Can pydicom decode this file's pixel data here? Asked from the header, before any pixel is read.

The decoders are the pinned MIT/BSD plugins (requirements.txt): python-gdcm for 8-bit JPEG
baseline, extended and lossless, imagecodecs' libjpeg-turbo (:mod:`operators.dicom.imagecodecs_jpeg`,
registered here) for 12-bit JPEG extended and as a second JPEG decoder, pylibjpeg-openjpeg for
JPEG 2000 and HTJ2K, pyjpegls for JPEG-LS, pylibjpeg-rle or pydicom for RLE; pydicom itself for the
uncompressed and deflated syntaxes. Call :func:`ensure_decoder_plugins` before decoding.
"""

from __future__ import annotations

import functools

from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

IMAGECODECS_PLUGIN = "imagecodecs"


@functools.cache
def ensure_decoder_plugins() -> None:
    """Register the imagecodecs JPEG plugin with pydicom's JPEG decoders (once per process)."""
    from operators.dicom import imagecodecs_jpeg

    for syntax in imagecodecs_jpeg.DECODER_DEPENDENCIES:
        decoder = get_decoder(syntax)
        if IMAGECODECS_PLUGIN not in decoder.available_plugins and IMAGECODECS_PLUGIN not in decoder.missing_dependencies:
            decoder.add_plugin(IMAGECODECS_PLUGIN, (imagecodecs_jpeg.__name__, imagecodecs_jpeg.decode_frame.__name__))


def transfer_syntax_of(header: Dataset) -> UID | None:
    """The file's TransferSyntaxUID (file meta), or None when the file has no meta information."""
    meta = getattr(header, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(value)) if value else None


def decoder_problem(header: Dataset) -> str | None:
    """Why this file's pixel data cannot be decoded with the installed decoders, or None when it can."""
    ensure_decoder_plugins()
    syntax = transfer_syntax_of(header)
    if syntax is None or not syntax.is_transfer_syntax:
        return None if syntax is None else f"unknown transfer syntax {syntax}"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {syntax.name} ({syntax}) has no pixel data decoder in pydicom"
    if not decoder.is_available:
        return f"no installed decoder for transfer syntax {syntax.name} ({syntax}): {'; '.join(decoder.missing_dependencies)}"
    return None
