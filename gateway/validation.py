"""Is a received object storable: the identifying UIDs are present and well formed, and its bytes are complete.

pydicom decodes a truncated data set without complaint (it keeps the short last value), so the
encoded bytes are walked element by element here, checking every length against what is left.
"""

from __future__ import annotations

import re
import struct
import zlib

from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
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


def is_uid(value: object) -> bool:
    text = str(value)
    return 0 < len(text) <= 64 and bool(UID.match(text))


def missing_or_bad_uids(ds: Dataset) -> list[str]:
    """The required UIDs that are absent, empty, or not UIDs (they also name files, so they are checked strictly)."""
    return [keyword for keyword in REQUIRED_UIDS if not is_uid(ds.get(keyword, ""))]


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


def storage_problem(ds: Dataset, encoded: bytes, transfer_syntax: str, affected_sop_instance_uid: str | None) -> str | None:
    """Why this C-STORE data set must be refused, or None when it can be stored."""
    truncated = truncation_problem(encoded, transfer_syntax)
    if truncated:
        return truncated
    bad = missing_or_bad_uids(ds)
    if bad:
        return "missing or invalid " + ", ".join(bad)
    if affected_sop_instance_uid and str(ds.SOPInstanceUID) != str(affected_sop_instance_uid):
        return f"SOPInstanceUID {ds.SOPInstanceUID} differs from the request's Affected SOP Instance UID {affected_sop_instance_uid}"
    return None
