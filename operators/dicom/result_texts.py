"""Texts of the derived objects: the SeriesDescription of those beside a SEG (SR, Bulk Annotations,
Parametric Map): what they hold, the result's flags and the clinical-use warning, by the SEG's own rule
(:func:`operators.dicom.seg.seg_series_description`), so a flagged result is flagged in every object;
and the note a result carries when it covers fewer slices than its source series."""

from __future__ import annotations

from collections.abc import Sequence

from operators.dicom.seg import LO_MAX_LENGTH, NOT_FOR_CLINICAL_USE, seg_series_description

SLICES_DROPPED_FLAG = "SLICES DROPPED"
NOTE_MAX_LISTED = 20  # left-out slices named in a note (ImageComments, LT: 10,240 characters); summary.json lists all
NOTE_REASON_LENGTH = 160


def result_series_description(subject: str, flags: Sequence[str] = ()) -> str:
    """``subject``, the ``flags`` that fit and the warning, within the 64-character VR limit."""
    return seg_series_description(subject, flags) if flags else f"{subject} - {NOT_FOR_CLINICAL_USE}"[:LO_MAX_LENGTH]


def dropped_slices_note(slices_used: int, dropped: Sequence[tuple[str, Sequence[float] | None, str]]) -> str | None:
    """The sentence saying a result covers ``slices_used`` of its series' slices, naming each left-out slice
    (SOP Instance UID, ImagePositionPatient in mm or None, reason); None when none was left out."""
    if not dropped:
        return None
    named = []
    for sop_instance_uid, position_mm, reason in dropped[:NOTE_MAX_LISTED]:
        where = "" if position_mm is None else f" at ({', '.join(f'{v:.2f}' for v in position_mm)}) mm"
        named.append(f"{sop_instance_uid}{where}: {reason[:NOTE_REASON_LENGTH]}")
    more = f"; and {len(dropped) - NOTE_MAX_LISTED} more (summary.json lists them)" if len(dropped) > NOTE_MAX_LISTED else ""
    return (
        f"Covers {slices_used} of the {slices_used + len(dropped)} slices of the source series; "
        f"left out (SOP Instance UID, ImagePositionPatient, reason): {'; '.join(named)}{more}."
    )
