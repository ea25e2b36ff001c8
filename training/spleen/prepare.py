"""Stage ``prepare``: a synthetic spleen dataset in the MSD Task09 layout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from training.synthetic.msd import MsdCase, write_msd_spleen_dataset

logger = logging.getLogger(__name__)


def prepare(
    out_dir: Path,
    n_cases: int,
    seed: int,
    shape_zyx: Sequence[int] | None = None,
    spacing_zyx_mm: Sequence[float] | None = None,
    workers: int = 1,
) -> list[MsdCase]:
    """Write ``n_cases`` phantoms (random acquisitions unless shape/spacing are given) to ``out_dir``."""
    cases = write_msd_spleen_dataset(Path(out_dir), n_cases, shape_zyx, spacing_zyx_mm, seed, workers=workers)
    logger.info("wrote %d cases to %s", len(cases), out_dir)
    return cases
