"""CT pixel data in every common transfer syntax: the same Hounsfield units as the uncompressed series.

Encoded by tools nobody here wrote (testkit/transcode.py: pydicom's encoders, DCMTK, OpenJPH) and on
real encoded files (pydicom's test files and pydicom-data), checked against DCMTK's own decoders.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from operators.core.errors import InvalidSeriesError, NoUsableSeriesError
from operators.ct.series_selector import select_ct_series
from operators.ct.volume import build_ct_volume, read_slice
from operators.dicom.pixel_decoding import decoder_problem
from operators.dicom.scan import scan_dicom_folder
from testkit.transcode import CT_SYNTAXES, LOSSLESS, requires_dcmcjpeg, transcode, transcode_series
from training.synthetic.ct_phantom import make_abdomen_phantom
from training.synthetic.dicom_series import write_ct_series

pytestmark = pytest.mark.skipif(requires_dcmcjpeg() is not None, reason=str(requires_dcmcjpeg()))

# What a lossy syntax may change, in HU: JPEG-LS near-lossless by its error bound (2); the others by their encoders' defaults.
LOSSY_MAX_MEAN_ABS_HU = {uid.JPEGLSNearLossless: 2.0, uid.JPEGExtended12Bit: 20.0, uid.JPEG2000: 30.0}


@pytest.fixture(scope="module")
def small_series(tmp_path_factory) -> Path:
    phantom = make_abdomen_phantom((12, 96, 96), (2.5, 4.0, 4.0), seed=3)
    folder = tmp_path_factory.mktemp("uncompressed") / "ct"
    write_ct_series(phantom.hu_zyx, (2.5, 4.0, 4.0), folder, seed=3)
    return folder


@pytest.fixture(scope="module")
def reference_volume(small_series):
    return build_ct_volume(select_ct_series(scan_dicom_folder(small_series)))


@pytest.mark.parametrize("syntax", CT_SYNTAXES, ids=[uid.UID(s).keyword for s in CT_SYNTAXES])
def test_each_syntax_decodes_to_the_uncompressed_hounsfield_units(small_series, reference_volume, tmp_path: Path, syntax):
    paths = transcode_series(small_series, tmp_path / "ct", syntax)
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in paths} == {syntax}
    volume = build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))
    np.testing.assert_array_equal(volume.affine_lps, reference_volume.affine_lps)
    if syntax in LOSSLESS:
        np.testing.assert_array_equal(volume.hu_zyx, reference_volume.hu_zyx)
    else:
        error = np.abs(volume.hu_zyx - reference_volume.hu_zyx)
        assert 0 < error.mean() <= LOSSY_MAX_MEAN_ABS_HU[syntax]
        if syntax == uid.JPEGLSNearLossless:
            assert error.max() <= 2


@pytest.mark.parametrize(
    ("encoded", "reference"),
    [
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # a real CT slice, JPEG 2000 lossless
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_implicit.dcm", "MR_small.dcm"),
        ("MR_small_bigendian.dcm", "MR_small.dcm"),
    ],
)
def test_real_encoded_files_decode_to_their_uncompressed_twins(encoded, reference):
    decoded, expected = read_slice(get_testdata_file(encoded)), read_slice(get_testdata_file(reference))
    assert not isinstance(decoded, str), decoded
    np.testing.assert_array_equal(decoded[1], expected[1])


@pytest.mark.parametrize(
    ("name", "dcmtk_decoder", "max_difference"),
    [
        ("JPEG-LL.dcm", "dcmdjpeg", 0),  # JPEG Lossless SV1 (.70)
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", "dcmdjpeg", 0),
        ("JPEG-lossy.dcm", "dcmdjpeg", 1),  # JPEG Extended 12-bit; two IJG builds may round one level apart
        ("JPGExtended.dcm", "dcmdjpeg", 1),
        ("image_dfl.dcm", "dcmconv", 0),  # deflated explicit little endian
    ],
)
def test_real_jpeg_and_deflate_files_match_dcmtk_decoding(tmp_path: Path, name, dcmtk_decoder, max_difference):
    source = get_testdata_file(name)
    decoded_by_dcmtk = tmp_path / "dcmtk.dcm"
    subprocess.run([dcmtk_decoder, *(["+te"] if dcmtk_decoder == "dcmconv" else []), source, str(decoded_by_dcmtk)], check=True)
    ours = read_slice(source)
    assert not isinstance(ours, str), ours
    expected = read_slice(decoded_by_dcmtk)[1]
    assert np.abs(ours[1] - expected).max() <= max_difference


def test_jpeg_baseline_decodes_like_dcmtk(tmp_path: Path):
    baseline = transcode(Path(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")), tmp_path / "baseline.dcm", uid.JPEGBaseline8Bit)
    subprocess.run(["dcmdjpeg", str(baseline), str(tmp_path / "dcmtk.dcm")], check=True)
    assert np.abs(read_slice(baseline)[1] - read_slice(tmp_path / "dcmtk.dcm")[1]).max() <= 1


@pytest.mark.parametrize(
    ("syntax", "fragment"),
    [
        (uid.ExplicitVRLittleEndian, None),
        (uid.JPEGLosslessSV1, None),
        (uid.HTJ2KLossless, None),
        ("1.2.840.10008.1.2.4.92", "has no pixel data decoder"),  # JPEG 2000 Part 2 multi-component
        ("1.2.840.10008.1.2.4.100", "has no pixel data decoder"),  # MPEG2 video
        ("1.2.3.4", "unknown transfer syntax"),
    ],
)
def test_decoder_problem_names_the_syntax(syntax, fragment):
    header = pydicom.Dataset()
    header.file_meta = pydicom.dataset.FileMetaDataset()
    header.file_meta.TransferSyntaxUID = syntax
    problem = decoder_problem(header)
    assert problem is None if fragment is None else (fragment in problem and syntax in problem)


def test_a_series_in_a_syntax_no_decoder_reads_is_refused_before_reading_pixels(small_series, tmp_path: Path):
    for path in sorted(small_series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])  # an MPEG-2 sequence header, as a video would start
        ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / path.name, enforce_file_format=True)
    with pytest.raises(NoUsableSeriesError, match=r"MPEG2.*has no pixel data decoder"):
        select_ct_series(scan_dicom_folder(tmp_path))


def test_a_truncated_compressed_slice_inside_the_series_refuses_it(small_series, tmp_path: Path):
    paths = transcode_series(small_series, tmp_path / "ct", uid.JPEG2000Lossless)
    middle = paths[len(paths) // 2]
    middle.write_bytes(middle.read_bytes()[:-1500])
    assert isinstance(read_slice(middle), str)
    with pytest.raises(InvalidSeriesError, match="refused, not resampled: uneven slice spacing"):
        build_ct_volume(select_ct_series(scan_dicom_folder(tmp_path / "ct")))
