"""A pydicom decoder plugin: the JPEG family (baseline, extended 12-bit, lossless) through imagecodecs.

Hand-written, because no pinned MIT/BSD plugin decodes 12-bit JPEG Extended (1.2.840.10008.1.2.4.51,
what many archives use for lossy CT) for pydicom 3.0.2: its GDCM plugin refuses 12-bit precision,
Pillow too, and the plugin that does, pylibjpeg-libjpeg, is GPL-3. imagecodecs (BSD) bundles
libjpeg-turbo 3 (IJG/BSD licences), which decodes 8- and 12-bit sequential and lossless JPEG.
Measured: on pydicom's 12-bit JPEG-lossy.dcm and JPGExtended.dcm and its JPEG-LL.dcm the pixels
equal DCMTK dcmdjpeg's (tests/operators/ct/test_transfer_syntaxes.py).

pydicom's plugin contract (pydicom.pixels.decoders, "decoder plugins"): ``is_available(uid)``,
``DECODER_DEPENDENCIES`` and a function returning one frame's bytes in the container pydicom
expects (little endian, ``bits_allocated`` wide; pydicom applies the pixel representation).
"""

from __future__ import annotations

import numpy as np
from pydicom import uid

DECODER_DEPENDENCIES = {
    syntax: ("imagecodecs",) for syntax in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1)
}


def is_available(transfer_syntax: str) -> bool:
    if transfer_syntax not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEG8.available)


def decode_frame(src: bytes, runner) -> bytes:
    """One JPEG frame decoded by libjpeg-turbo, as pydicom's ``DecodeRunner`` expects its bytes."""
    import imagecodecs

    frame = imagecodecs.jpeg8_decode(src)
    width = 1 if runner.bits_allocated <= 8 else 2
    return np.ascontiguousarray(frame, dtype=f"<u{width}").tobytes()
