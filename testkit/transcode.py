"""Write a DICOM file again in another transfer syntax, with encoders nobody here wrote.

pydicom's own encoders (RLE; JPEG-LS through pyjpegls; JPEG 2000 through pylibjpeg-openjpeg),
pydicom's writer for the uncompressed and deflated syntaxes, DCMTK's ``dcmcjpeg`` for the JPEG
family (baseline, extended 12-bit, lossless .57 and .70), and OpenJPH through ``imagecodecs`` for
HTJ2K, whose codestream pydicom encapsulates. The CT test series use these to show that every
syntax decodes to the same Hounsfield units as the uncompressed series (lossless) or close to them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom import uid
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

DCMCJPEG_FLAGS = {uid.JPEGBaseline8Bit: "+eb", uid.JPEGExtended12Bit: "+ee", uid.JPEGLossless: "+el", uid.JPEGLosslessSV1: "+e1"}
LOSSLESS = frozenset(
    {
        uid.ExplicitVRLittleEndian,
        uid.ImplicitVRLittleEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.RLELossless,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEG2000Lossless,
        uid.HTJ2KLossless,
    }
)
# The CT syntaxes the spleen app's tests write; JPEG baseline carries 8 bits only, so not CT numbers.
CT_SYNTAXES = (
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.RLELossless,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
)


def requires_dcmcjpeg() -> str | None:
    """Why DCMTK's dcmcjpeg cannot run here, or None."""
    return None if shutil.which("dcmcjpeg") else "DCMTK's dcmcjpeg is not installed (apt: dcmtk)"


def transcode(source: Path, target: Path, syntax: str) -> Path:
    """``source`` written to ``target`` in transfer syntax ``syntax`` (lossy ones at their encoders' defaults)."""
    syntax = uid.UID(syntax)
    target.parent.mkdir(parents=True, exist_ok=True)
    if syntax in DCMCJPEG_FLAGS:
        return _dcmcjpeg(source, target, syntax)
    ds = pydicom.dcmread(source)
    if syntax in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(target, implicit_vr=syntax == uid.ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    elif syntax == uid.HTJ2KLossless:
        import imagecodecs  # the OpenJPH encoder; pydicom has no HTJ2K encoder

        frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
        ds.PixelData = encapsulate([imagecodecs.htj2k_encode(np.ascontiguousarray(f), level=0, reversible=True) for f in frames])
        ds.file_meta.TransferSyntaxUID = syntax
        ds["PixelData"].VR = "OB"
        ds.save_as(target, enforce_file_format=True)
    else:
        options = {"jls_error": 2} if syntax == uid.JPEGLSNearLossless else {"j2k_cr": [10]} if syntax == uid.JPEG2000 else {}
        ds.compress(syntax, **options)
        ds.save_as(target, enforce_file_format=True)
    return target


def _dcmcjpeg(source: Path, target: Path, syntax: uid.UID) -> Path:
    staged = None
    if syntax == uid.JPEGExtended12Bit:
        ds = pydicom.dcmread(source)
        if int(ds.BitsStored) > 12:
            stored = ds.pixel_array
            if stored.min() < 0 or stored.max() >= 4096:
                raise ValueError(f"{source}: stored values {stored.min()}..{stored.max()} do not fit the 12 bits of JPEG extended")
            ds.BitsStored, ds.HighBit = 12, 11  # the same values, declared in the 12 bits they fit
            staged = target.with_name(target.stem + ".12bit.dcm")
            ds.save_as(staged, enforce_file_format=True)
    # DCMTK marks a lossy copy DERIVED, with a new SOP Instance UID and the derivation code "Lossy Compression"
    command = ["dcmcjpeg", DCMCJPEG_FLAGS[syntax], str(staged or source), str(target)]
    try:
        subprocess.run(command, check=True, capture_output=True)
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    return target


def transcode_series(source_dir: Path, target_dir: Path, syntax: str) -> list[Path]:
    """Every file of a single-frame series, transcoded into ``target_dir`` under the same names."""
    return [transcode(path, target_dir / path.name, syntax) for path in sorted(source_dir.glob("*.dcm"))]


def to_legacy_converted(single_frame_dir: Path, target: Path, order: list[int] | None = None) -> Path:
    """The series as one Legacy Converted Enhanced CT instance (highdicom's converter), frames in ``order``."""
    slices = [pydicom.dcmread(p) for p in sorted(single_frame_dir.glob("*.dcm"))]
    slices = [slices[i] for i in order] if order else slices
    converted = hd.legacy.LegacyConvertedEnhancedCTImage(slices, generate_uid(), 901, generate_uid(), 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    converted.save_as(target)
    return target
