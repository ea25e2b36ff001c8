"""The spleen app's checks around the network: the series can be abdominal (before any pixel is read),
and the result is plausible (after the mask is made). A failed check refuses the run (exit 2) or flags
the result: the flags go into summary.json and the SEG's SeriesDescription.

The spleen volume range (``checks.spleen_volume_ml`` in the model config, 20-2500 mL; adult spleens are
about 50-500 mL, massive splenomegaly reaches 2-3 L) flags a result, it does not refuse it: the SEG
shows what the model found, and its description says to check it. An empty mask (no spleen found, e.g.
after a splenectomy) is not flagged: the range applies to a spleen that was found.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.core.errors import UnsuitableSeriesError
from operators.ct.preflight import NON_ABDOMINAL_FLAG, AbdominalCheck, AbdominalPolicy, AbdominalRule, check_abdominal
from operators.ct.series_selector import SeriesSelection, slice_headers
from operators.ct.summary import organ_volume_ml
from operators.ct.volume import CTVolume
from operators.dicom.result_texts import SLICES_DROPPED_FLAG
from operators.models.loader import UNVERIFIED_MODEL_FLAG

logger = logging.getLogger(__name__)

IMPLAUSIBLE_VOLUME_FLAG = "IMPLAUSIBLE VOLUME"


@dataclass(frozen=True)
class ResultChecks:
    """The flags a result carries (short, upper case, for the SEG's SeriesDescription) and the checks' details."""

    flags: tuple[str, ...]
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"flags": list(self.flags), **self.details}


def volume_range_ml(checks: dict[str, Any], override: tuple[float, float] | None = None) -> tuple[float, float]:
    """The plausible spleen volume (min, max) in mL: ``override``, else the model config's ``checks.spleen_volume_ml``."""
    low, high = override or checks["spleen_volume_ml"]
    if not 0 <= low < high:
        raise ValueError(f"spleen volume range must be 0 <= min < max mL, got {low}, {high}")
    return float(low), float(high)


def result_checks(
    abdominal: AbdominalCheck,
    volume_ml: float,
    found: bool,
    plausible_ml: tuple[float, float],
    model_verified: bool,
    dropped_slices: int = 0,
) -> ResultChecks:
    """Flags for a spleen result: a series that failed the abdominal check (run under ``warn``), a found
    spleen outside ``plausible_ml``, a model whose weights were not verified against its card, a result
    that leaves out ``dropped_slices`` slices of the series (unreadable pixel data)."""
    in_range = not found or plausible_ml[0] <= volume_ml <= plausible_ml[1]
    flags = [
        flag
        for flag, failed in (
            (NON_ABDOMINAL_FLAG, not abdominal.abdominal),
            (IMPLAUSIBLE_VOLUME_FLAG, not in_range),
            (UNVERIFIED_MODEL_FLAG, not model_verified),
            (SLICES_DROPPED_FLAG, dropped_slices > 0),
        )
        if failed
    ]
    details = {
        "abdominal_series": abdominal.as_json(),
        "spleen_volume": {"volume_ml": round(volume_ml, 3), "plausible_range_ml": list(plausible_ml), "plausible": in_range},
        "model_verified": model_verified,
        "dropped_slices": dropped_slices,
    }
    return ResultChecks(tuple(flags), details)


class SeriesPreflightOperator(Operator):
    """Checks, from headers only, that the chosen series can be abdominal (operators.ct.preflight).

    Named inputs:
        selection: SeriesSelection.

    Named outputs:
        selection: the same SeriesSelection, once checked; abdominal: AbdominalCheck.

    Under ``refuse`` a failed check raises UnsuitableSeriesError (exit 2) before any pixel is read;
    under ``warn`` it is logged and the result is flagged.
    """

    INPUT_SELECTION = "selection"
    OUTPUT_SELECTION = "checked_selection"
    OUTPUT_ABDOMINAL = "abdominal"

    def __init__(self, fragment: Fragment, *args, rule: AbdominalRule, policy: AbdominalPolicy, **kwargs) -> None:
        self.rule = rule
        self.policy = policy
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.INPUT_SELECTION)
        spec.output(self.OUTPUT_SELECTION)
        spec.output(self.OUTPUT_ABDOMINAL)

    def compute(self, op_input, op_output, context) -> None:
        selection: SeriesSelection = op_input.receive(self.INPUT_SELECTION)
        series = selection.chosen
        check = check_abdominal(slice_headers(series), selection.slice_spacing_mm, self.rule)  # files, or frames of an Enhanced CT
        if not check.abdominal:
            reasons = "; ".join(check.reasons)
            if self.policy == "refuse":
                raise UnsuitableSeriesError(
                    f"{series.label} cannot hold a spleen: {reasons} (--on-non-abdominal warn runs it anyway, flagged)"
                )
            logger.warning("%s may not be abdominal (%s): the result is flagged %s", series.label, reasons, NON_ABDOMINAL_FLAG)
        op_output.emit(selection, self.OUTPUT_SELECTION)
        op_output.emit(check, self.OUTPUT_ABDOMINAL)


class ResultChecksOperator(Operator):
    """Checks the spleen result and collects every flag it carries.

    Named inputs:
        volume: CTVolume; mask: numpy uint8 (z, y, x) on its grid; abdominal: AbdominalCheck.

    Named outputs:
        checks: ResultChecks.
    """

    INPUT_VOLUME = "volume"
    INPUT_MASK = "mask"
    INPUT_ABDOMINAL = "abdominal"
    OUTPUT_CHECKS = "checks"

    def __init__(self, fragment: Fragment, *args, plausible_ml: tuple[float, float], model_verified: bool, **kwargs) -> None:
        self.plausible_ml = plausible_ml
        self.model_verified = model_verified
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        for name in (self.INPUT_VOLUME, self.INPUT_MASK, self.INPUT_ABDOMINAL):
            spec.input(name)
        spec.output(self.OUTPUT_CHECKS)

    def compute(self, op_input, op_output, context) -> None:
        volume: CTVolume = op_input.receive(self.INPUT_VOLUME)
        mask: np.ndarray = op_input.receive(self.INPUT_MASK)
        abdominal: AbdominalCheck = op_input.receive(self.INPUT_ABDOMINAL)
        volume_ml = organ_volume_ml(mask, volume.voxel_volume_mm3)
        checks = result_checks(abdominal, volume_ml, bool(mask.any()), self.plausible_ml, self.model_verified, len(volume.dropped_slices))
        if IMPLAUSIBLE_VOLUME_FLAG in checks.flags:
            logger.warning("Spleen volume %.1f mL is outside the plausible %g-%g mL: the result is flagged", volume_ml, *self.plausible_ml)
        op_output.emit(checks, self.OUTPUT_CHECKS)
