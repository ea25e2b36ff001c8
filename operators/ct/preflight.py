"""Pre-flight: can the chosen CT series hold a spleen? Decided from headers only, before any pixel is read.

The rule (``AbdominalRule``; the spleen model config's ``checks.abdominal`` overrides its numbers):

1. BodyPartExamined, when present, must not name a region that never holds the spleen: the head,
   the neck, or a limb (values of DICOM PS3.16 Annex L, compared without case, spaces or
   underscores). Other values (ABDOMEN, CHEST, CHESTABDOMEN, WHOLEBODY, PELVIS, an empty or
   site-specific value) are not decisive: a chest CT usually reaches the spleen under the left dome
   of the diaphragm, and sites write free text here.
2. The axial field of view (the smaller of rows x row spacing and columns x column spacing) must be
   at least ``min_axial_fov_mm`` (260 mm): adult abdomens are reconstructed at 300-500 mm, heads at
   200-250 mm. This is what separates a head CT that carries no BodyPartExamined.
3. The coverage along the slice normal (slices x spacing) must be at least ``min_z_coverage_mm``
   (50 mm, about half a spleen's craniocaudal length): a thin slab (a calcium score, a localised
   scan) cannot show the organ whose volume the app reports.

Patient coordinates along z are relative to the table, not to the anatomy, so the z *position* says
nothing about reaching the abdomen; the coverage and the axial field of view are what headers tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.dataset import Dataset

AbdominalPolicy = Literal["refuse", "warn"]
ABDOMINAL_POLICIES: tuple[AbdominalPolicy, ...] = ("refuse", "warn")
NON_ABDOMINAL_FLAG = "NON-ABDOMINAL SERIES"

# PS3.16 Annex L Body Part Examined values of regions that never hold the spleen.
NON_ABDOMINAL_BODY_PARTS = frozenset(
    {
        "HEAD", "BRAIN", "SKULL", "FACE", "ORBIT", "EYE", "EAR", "IAC", "SINUS", "NOSE", "JAW", "MANDIBLE",
        "MAXILLA", "TMJ", "NECK", "HEADNECK", "LARYNX", "THYROID", "CSPINE",
        "EXTREMITY", "UPPEREXTREMITY", "LOWEREXTREMITY", "ARM", "UPPERARM", "FOREARM", "ELBOW", "WRIST",
        "HAND", "FINGER", "THUMB", "SHOULDER", "CLAVICLE", "SCAPULA", "HUMERUS", "RADIUS", "ULNA",
        "HIP", "FEMUR", "THIGH", "LEG", "LOWERLEG", "KNEE", "PATELLA", "TIBIA", "FIBULA", "ANKLE",
        "FOOT", "HEEL", "TOE", "CALCANEUS",
    }
)  # fmt: skip


@dataclass(frozen=True)
class AbdominalRule:
    min_axial_fov_mm: float = 260.0
    min_z_coverage_mm: float = 50.0
    non_abdominal_body_parts: frozenset[str] = field(default=NON_ABDOMINAL_BODY_PARTS)

    @classmethod
    def from_config(cls, checks: dict[str, Any]) -> AbdominalRule:
        """The model config's ``checks.abdominal`` numbers over the defaults."""
        section = checks.get("abdominal", {})
        return cls(
            min_axial_fov_mm=float(section.get("min_axial_fov_mm", cls.min_axial_fov_mm)),
            min_z_coverage_mm=float(section.get("min_z_coverage_mm", cls.min_z_coverage_mm)),
        )


@dataclass(frozen=True)
class AbdominalCheck:
    """Whether the series can be abdominal, why not (one reason per failed test), and what was measured."""

    abdominal: bool
    reasons: tuple[str, ...]
    body_part_examined: str | None
    axial_fov_mm: float
    z_coverage_mm: float

    def as_json(self) -> dict[str, Any]:
        return {
            "abdominal": self.abdominal,
            "reasons": list(self.reasons),
            "body_part_examined": self.body_part_examined,
            "axial_fov_mm": round(self.axial_fov_mm, 1),
            "z_coverage_mm": round(self.z_coverage_mm, 1),
        }


def normalised_body_part(value: Any) -> str:
    return "".join(ch for ch in str(value or "").upper() if ch.isalnum())


def axial_fov_mm(header: Dataset) -> float:
    """The smaller side of the axial image, in mm: rows x row spacing, columns x column spacing."""
    row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
    return min(int(header.Rows) * row_spacing, int(header.Columns) * column_spacing)


def check_abdominal(headers: Sequence[Dataset], slice_spacing_mm: float, rule: AbdominalRule | None = None) -> AbdominalCheck:
    """Apply the module's rule (default :class:`AbdominalRule`) to the headers of one series (its slices, in any order)."""
    rule = rule or AbdominalRule()
    first = headers[0]
    body_part = str(first.get("BodyPartExamined", "") or "").strip() or None
    fov = axial_fov_mm(first)
    coverage = len(headers) * slice_spacing_mm
    reasons = []
    if body_part is not None and normalised_body_part(body_part) in rule.non_abdominal_body_parts:
        reasons.append(f"BodyPartExamined is {body_part}")
    if fov < rule.min_axial_fov_mm:
        reasons.append(f"axial field of view {fov:.0f} mm is below an abdomen's {rule.min_axial_fov_mm:.0f} mm")
    if coverage < rule.min_z_coverage_mm:
        reasons.append(f"coverage along z {coverage:.0f} mm is below the {rule.min_z_coverage_mm:.0f} mm a spleen needs")
    return AbdominalCheck(not reasons, tuple(reasons), body_part, fov, coverage)
