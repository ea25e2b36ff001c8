"""Is a received object storable: the identifying UIDs are present and well formed, and its bytes are complete.

pydicom decodes a truncated data set without complaint (it keeps the short last value), so the
encoded bytes are walked element by element here, checking every length against what is left.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from operators.dicom.uids import uid_problem

DOES_NOT_MATCH_SOP_CLASS = 0xA900  # C-STORE failure statuses (PS3.4 B.2.3)
CANNOT_UNDERSTAND = 0xC000
ERROR_COMMENT_LENGTH = 64  # Error Comment (0000,0902) is LO
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
# What pydicom raises for bytes that are not a whole data set, on reading or (it decodes lazily) on
# first access to an element: the types seen when truncating and corrupting encoded CT instances,
# plus OSError for a file that cannot be read.
UNDECODABLE = (InvalidDicomError, BytesLengthException, NotImplementedError, AttributeError, ValueError, struct.error, OSError)


class Truncated(ValueError):
    """The encoded data set ends inside an element."""


def uid_problems(ds: Dataset) -> dict[str, str]:
    """Keyword -> why, for each required UID that is absent, empty or not a UID (PS3.5 9.1: digits and dots, at most
    64 characters). They also name folders and files, so they are checked strictly (``gateway.storage``)."""
    problems = {}
    for keyword in REQUIRED_UIDS:
        value = ds.get(keyword)
        problem = "it is missing" if value is None else uid_problem(str(value))
        if problem:
            problems[keyword] = problem
    return problems


def _value_length(data: bytes, offset: int, end: int, implicit: bool, order: str) -> tuple[int, int]:
    """The value length of the element whose header (tag first) starts at ``offset``, and the offset of its value."""
    if implicit:
        return struct.unpack_from(order + "I", data, offset + 4)[0], offset + 8
    if data[offset + 4 : offset + 6] in LONG_LENGTH_VRS:
        if offset + 12 > end:
            raise Truncated(f"element header cut at byte {offset}")
        return struct.unpack_from(order + "I", data, offset + 8)[0], offset + 12
    return struct.unpack_from(order + "H", data, offset + 6)[0], offset + 8


def _walk(data: bytes, offset: int, end: int, implicit: bool, little: bool, stop_at: tuple[int, int] | None) -> int:
    """Walk elements from ``offset``; return the offset after them (after ``stop_at`` when given)."""
    order = "<" if little else ">"
    while offset < end:
        if offset + 8 > end:
            raise Truncated(f"element header cut at byte {offset}")
        group, element = struct.unpack_from(order + "HH", data, offset)
        if group == 0xFFFE:  # item or delimiter: always tag + 4-byte length
            length = struct.unpack_from(order + "I", data, offset + 4)[0]
            offset += 8
            if (group, element) == stop_at:
                return offset
            raise Truncated(f"unexpected delimiter ({group:04X},{element:04X}) at byte {offset - 8}")
        length, offset = _value_length(data, offset, end, implicit, order)
        if length == UNDEFINED:  # a sequence, or encapsulated pixel data: items up to the sequence delimiter
            offset = _walk_items(data, offset, end, implicit, little, (group, element))
        else:
            if offset + length > end:
                raise Truncated(f"({group:04X},{element:04X}) needs {length} bytes, {end - offset} left")
            offset += length
    if stop_at is not None:
        raise Truncated(f"no delimiter ({stop_at[0]:04X},{stop_at[1]:04X}) before the end")
    return offset


def _walk_items(data: bytes, offset: int, end: int, implicit: bool, little: bool, tag: tuple[int, int]) -> int:
    order = "<" if little else ">"
    while True:
        if offset + 8 > end:
            raise Truncated(f"({tag[0]:04X},{tag[1]:04X}) has no sequence delimiter")
        group, element, length = struct.unpack_from(order + "HHI", data, offset)
        offset += 8
        if (group, element) == SEQUENCE_END:
            return offset
        if (group, element) != ITEM:
            raise Truncated(f"({tag[0]:04X},{tag[1]:04X}): expected an item at byte {offset - 8}")
        if length == UNDEFINED:
            offset = _walk(data, offset, end, implicit, little, stop_at=ITEM_END)
        elif offset + length > end:
            raise Truncated(f"an item of ({tag[0]:04X},{tag[1]:04X}) needs {length} bytes, {end - offset} left")
        else:
            offset += length


def truncation_problem(encoded: bytes, transfer_syntax: str) -> str | None:
    """Why the encoded data set (no file meta) is incomplete, or None when every element is whole."""
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        try:
            encoded = zlib.decompress(encoded, -zlib.MAX_WBITS)
        except zlib.error as error:
            return f"deflated data set does not inflate: {error}"
    try:
        _walk(encoded, 0, len(encoded), implicit, little, stop_at=None)
    except Truncated as error:
        return f"truncated: {error}"
    except struct.error as error:
        return f"truncated: {error}"
    return None


@dataclass(frozen=True)
class Refusal:
    """Why a C-STORE data set is refused: its failure status, the log line's reason, and what the status names."""

    status: int
    reason: str
    comment: str  # Error Comment (0000,0902): at most 64 characters, so the attribute comes first
    offending: tuple[str, ...] = ()  # keywords for Offending Element (0000,0901)


def _uid_text(ds: Dataset, keyword: str, why: str) -> str:
    return f"{keyword} is missing" if why == "it is missing" else f"{keyword} {str(ds.get(keyword))!r} is not a UID: {why}"


def storage_refusal(ds: Dataset, encoded: bytes, transfer_syntax: str, affected_sop_instance_uid: str | None) -> Refusal | None:
    """Why this C-STORE data set must be refused, or None when it can be stored."""
    truncated = truncation_problem(encoded, transfer_syntax)
    if truncated:
        return Refusal(CANNOT_UNDERSTAND, truncated, truncated[:ERROR_COMMENT_LENGTH])
    bad = uid_problems(ds)
    if bad:
        reason = "; ".join(_uid_text(ds, keyword, why) for keyword, why in bad.items())
        comment = ", ".join(bad) + (" missing or not UIDs" if len(bad) > 1 else " missing or not a UID")
        return Refusal(DOES_NOT_MATCH_SOP_CLASS, reason, comment[:ERROR_COMMENT_LENGTH], tuple(bad))
    if affected_sop_instance_uid and str(ds.SOPInstanceUID) != str(affected_sop_instance_uid):
        reason = f"SOPInstanceUID {ds.SOPInstanceUID} differs from the request's Affected SOP Instance UID {affected_sop_instance_uid}"
        return Refusal(DOES_NOT_MATCH_SOP_CLASS, reason, "SOPInstanceUID differs from Affected SOP Instance UID", ("SOPInstanceUID",))
    return None


def undecodable_refusal(error: Exception) -> Refusal:
    reason = f"cannot decode the data set: {type(error).__name__}: {error}"
    return Refusal(CANNOT_UNDERSTAND, reason, reason[:ERROR_COMMENT_LENGTH])
