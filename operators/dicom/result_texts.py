"""SeriesDescription of the derived objects beside a SEG (SR, Bulk Annotations, Parametric Map): what they
hold, the result's flags and the clinical-use warning, by the SEG's own rule
(:func:`operators.dicom.seg.seg_series_description`), so a flagged result is flagged in every object."""

from __future__ import annotations

from collections.abc import Sequence

from operators.dicom.seg import LO_MAX_LENGTH, NOT_FOR_CLINICAL_USE, seg_series_description


def result_series_description(subject: str, flags: Sequence[str] = ()) -> str:
    """``subject``, the ``flags`` that fit and the warning, within the 64-character VR limit."""
    return seg_series_description(subject, flags) if flags else f"{subject} - {NOT_FOR_CLINICAL_USE}"[:LO_MAX_LENGTH]
