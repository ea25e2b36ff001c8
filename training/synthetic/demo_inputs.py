"""The embedded demo inputs: what the README's main command runs on, and the app tests' golden input.

``python -m training.synthetic.demo_inputs OUT_DIR`` writes ``OUT_DIR/spleen_ct/dicom/`` (a DICOM CT
series of a synthetic abdomen) and ``OUT_DIR/spleen_ct/spleen_truth.npy`` (its true spleen mask,
uint8 indexed (slice, row, column) in the order of increasing slice position).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .ct_phantom import make_abdomen_phantom
from .dicom_series import write_ct_series

logger = logging.getLogger(__name__)

# Held out: the training phantoms use other seeds (see training/spleen).
DEMO_CT_SEED = 20261122
DEMO_CT_SHAPE_ZYX = (80, 256, 256)
DEMO_CT_SPACING_ZYX_MM = (2.5, 1.5, 1.5)


@dataclass(frozen=True)
class DemoCT:
    dicom_dir: Path
    truth_path: Path


def write_demo_ct(
    out_dir: Path,
    shape_zyx: tuple[int, int, int] = DEMO_CT_SHAPE_ZYX,
    spacing_zyx_mm: tuple[float, float, float] = DEMO_CT_SPACING_ZYX_MM,
    seed: int = DEMO_CT_SEED,
) -> DemoCT:
    """Write the phantom as a DICOM series plus its truth mask; reuses files already written."""
    case_dir = Path(out_dir) / "spleen_ct"
    demo = DemoCT(case_dir / "dicom", case_dir / "spleen_truth.npy")
    if demo.truth_path.exists() and any(demo.dicom_dir.glob("*.dcm")):
        return demo
    phantom = make_abdomen_phantom(shape_zyx, spacing_zyx_mm, seed)
    write_ct_series(phantom.hu_zyx, spacing_zyx_mm, demo.dicom_dir, seed=seed, series_description="Demo abdomen phantom")
    np.save(demo.truth_path, phantom.spleen_mask_zyx)
    logger.info("Wrote demo CT %s and its truth %s", demo.dicom_dir, demo.truth_path)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    demo = write_demo_ct(args.out_dir)
    logger.info("DICOM series: %s", demo.dicom_dir)


if __name__ == "__main__":
    main()
