"""What the SCP refuses: truncated data sets, missing or malformed UIDs (they also name files)."""

from __future__ import annotations

import io
import random

import pytest
from pydicom.data import get_testdata_file
from pydicom.filereader import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

from gateway.validation import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    REQUIRED_UIDS,
    UNDECODABLE,
    storage_refusal,
    truncation_problem,
    uid_problems,
)
from testkit.gateway_samples import ct_series


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_whole_data_set_passes_and_every_truncation_is_caught(syntax):
    ds = ct_series(1)[0]
    encoded = encode(ds, syntax == ImplicitVRLittleEndian, True)
    assert truncation_problem(encoded, syntax) is None
    element_ends = set()  # cutting exactly between two elements leaves a shorter but whole data set
    offset = 0
    for elem in ds:
        offset += len(encode(type(ds)({elem.tag: elem}), syntax == ImplicitVRLittleEndian, True))
        element_ends.add(offset)
    for cut in range(1, len(encoded)):
        if cut not in element_ends:
            assert truncation_problem(encoded[:cut], syntax), cut


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle.dcm", "rtplan.dcm"])
def test_encapsulated_pixel_data_and_nested_sequences_walk_whole_and_truncated(name):
    path = get_testdata_file(name)
    ds = dcmread(path)
    body = encode(ds, ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian, True)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    assert truncation_problem(body, syntax) is None
    assert "truncated" in truncation_problem(body[:-3], syntax)


def test_missing_sop_instance_uid_is_refused():
    ds = ct_series(1)[0]
    del ds.SOPInstanceUID
    refusal = storage_refusal(ds, encode(ds, False, True), ExplicitVRLittleEndian, None)
    assert (refusal.status, refusal.reason, refusal.offending) == (
        DOES_NOT_MATCH_SOP_CLASS,
        "SOPInstanceUID is missing",
        ("SOPInstanceUID",),
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("../../etc", "it has an empty component (two dots in a row, or a dot at either end)"),
        ("1.2.3/4", "component '3/4' is not digits only"),
        ("", "it is empty"),
        ("1." + "2" * 70, "it has 72 characters, more than 64"),
        ("01.2", "component '01' has a leading zero"),
        ("/etc/passwd", "component '/etc/passwd' is not digits only"),
        ("1.2.", "it has an empty component (two dots in a row, or a dot at either end)"),
    ],
)
def test_uids_that_are_not_uids_are_refused_by_the_one_uid_rule_so_they_never_name_a_file(uid, why):
    ds = ct_series(1)[0]
    ds.SeriesInstanceUID = uid
    assert uid_problems(ds) == {"SeriesInstanceUID": why}
    refusal = storage_refusal(ds, encode(ds, False, True), ExplicitVRLittleEndian, None)
    assert refusal.reason == f"SeriesInstanceUID {uid!r} is not a UID: {why}"
    assert refusal.comment == "SeriesInstanceUID missing or not a UID" and refusal.offending == ("SeriesInstanceUID",)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_bad_uid_is_named_and_the_error_comment_fits_its_64_characters():
    ds = ct_series(1)[0]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2/../../x", "../../../x"
    refusal = storage_refusal(ds, encode(ds, False, True), ExplicitVRLittleEndian, None)
    assert refusal.offending == ("StudyInstanceUID", "SeriesInstanceUID")
    assert refusal.comment == "StudyInstanceUID, SeriesInstanceUID missing or not UIDs" and len(refusal.comment) <= 64


def test_sop_instance_uid_differing_from_the_request_is_refused():
    ds = ct_series(1)[0]
    assert "differs" in storage_refusal(ds, encode(ds, False, True), ExplicitVRLittleEndian, "1.2.3").reason


def test_a_truncated_data_set_is_cannot_understand():
    ds = ct_series(1)[0]
    encoded = encode(ds, False, True)
    refusal = storage_refusal(ds, encoded[:-10], ExplicitVRLittleEndian, None)
    assert refusal.status == CANNOT_UNDERSTAND and refusal.reason.startswith("truncated: ") and len(refusal.comment) <= 64


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupted_bytes_raise_only_what_the_scp_and_the_recovery_catch():
    """Cut or overwrite bytes of encoded CT instances: decoding one and reading its UIDs fails, if at all, with UNDECODABLE."""
    rng = random.Random(1)
    caught = set()
    for syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        implicit = syntax == ImplicitVRLittleEndian
        encoded = encode(ct_series(1)[0], implicit, True)
        for trial in range(600):
            corrupted = bytearray(encoded[: rng.randrange(len(encoded))] if trial % 3 == 0 else encoded)
            for _ in range(0 if trial % 3 == 0 else rng.randint(1, 8)):
                corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
            try:
                ds = decode(io.BytesIO(bytes(corrupted)), implicit, True)
                if storage_refusal(ds, bytes(corrupted), syntax, None) is None:
                    [str(ds[keyword].value) for keyword in REQUIRED_UIDS]
            except UNDECODABLE as error:
                caught.add(type(error))
    assert caught  # the corruptions reach pydicom's own errors, not only storage_refusal's refusals
