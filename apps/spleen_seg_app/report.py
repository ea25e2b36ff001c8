"""Print where a run's outputs are and, given the true mask, the Dice of the SEG read back from disk.

``python -m apps.spleen_seg_app.report OUTPUT_FOLDER [--truth TRUTH.npy]``
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from operators.core.metrics import dice_score
from operators.dicom.seg_readback import read_seg_on_source

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_folder", type=Path)
    parser.add_argument("--truth", type=Path, help="true mask, uint8 (slice, row, column) .npy")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = json.loads((args.output_folder / "summary.json").read_text())
    logger.info("Outputs in %s:", args.output_folder.resolve())
    for kind, name in summary["outputs"].items():
        logger.info("  %-12s %s", kind, args.output_folder.resolve() / name if name else "(none)")
    logger.info("  %-12s %s", "summary", (args.output_folder / "summary.json").resolve())
    logger.info(
        "Spleen volume %.1f mL; model '%s' %s; %s; total %.1f s",
        summary["spleen"]["volume_ml"],
        summary["model"]["name"],
        summary["model"]["version"],
        f"{summary.get('backend', 'torch')} on {summary['device']}, {summary['precision']}",
        summary["timings_s"]["total"],
    )
    if args.truth:
        mask = read_seg_on_source(
            args.output_folder / summary["outputs"]["dicom_seg"],
            summary["input"]["sop_instance_uids"],
            source_frame_numbers=summary["input"].get("source_frame_numbers"),
        )
        logger.info(
            "Dice of the DICOM SEG (read back with highdicom) against the phantom's truth: %.4f", dice_score(mask, np.load(args.truth))
        )


if __name__ == "__main__":
    main()
