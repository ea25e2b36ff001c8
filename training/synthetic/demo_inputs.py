"""The embedded demo inputs: what the README's main command runs on, and the app tests' golden input.

``python -m training.synthetic.demo_inputs OUT_DIR`` writes:

- ``OUT_DIR/spleen_ct/dicom/``: a DICOM CT series of a synthetic abdomen, and
  ``OUT_DIR/spleen_ct/spleen_truth.npy``: its true spleen mask, uint8 indexed (slice, row, column) in
  the order of increasing slice position;
- ``OUT_DIR/wsi/demo_slide.tif``: a synthetic H&E lymph-node slide (pyramidal JPEG TIFF, 0.243 mpp)
  with metastases, and ``OUT_DIR/wsi/ground_truth/demo_slide.{tif,xml}``: its tumour mask (level-0
  frame, pyramid) and ASAP annotations, named as ``python -m training.pathology.froc`` expects.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camelyon_layout import write_ground_truth
from .ct_phantom import make_abdomen_phantom
from .dicom_series import write_ct_series
from .stamp import generator_stamp
from .wsi_scene import make_slide_scene
from .wsi_tiff import write_slide

logger = logging.getLogger(__name__)

# Held out: the training phantoms use other seeds (see training/spleen).
DEMO_CT_SEED = 20261122
DEMO_CT_SHAPE_ZYX = (80, 256, 256)
DEMO_CT_SPACING_ZYX_MM = (2.5, 1.5, 1.5)


# Held out as well: the pathology training slides use seeds derived from their dataset seed.
DEMO_SLIDE_SEED = 20261122
DEMO_SLIDE_SIZE_XY = (12288, 9216)
DEMO_SLIDE_TUMOR_SIZES_UM = (1200.0, 500.0, 250.0, 80.0)  # a macro-, two micro-metastases and an ITC


# What writes each input; its stamp also covers every module of ``training`` these import (stamp.generator_sources).
CT_GENERATOR_SOURCES = ("ct_phantom.py", "dicom_series.py")
SLIDE_GENERATOR_SOURCES = ("wsi_scene.py", "wsi_texture.py", "wsi_tiff.py", "wsi_annotations.py", "camelyon_layout.py")
STAMP_FILE = "generator.sha256"


def _fresh(case_dir: Path, stamp: str) -> bool:
    """True when ``case_dir`` was written with ``stamp``; else empties it for a rewrite."""
    stamp_path = case_dir / STAMP_FILE
    if stamp_path.is_file() and stamp_path.read_text().strip() == stamp:
        return True
    if case_dir.exists():
        logger.info("Rewriting %s: it was made by another version of its generator", case_dir)
        shutil.rmtree(case_dir)
    return False


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
    """Write the phantom as a DICOM series plus its truth mask; reuses files written by the same generator."""
    case_dir = Path(out_dir) / "spleen_ct"
    demo = DemoCT(case_dir / "dicom", case_dir / "spleen_truth.npy")
    stamp = generator_stamp(CT_GENERATOR_SOURCES, (shape_zyx, spacing_zyx_mm, seed))
    if _fresh(case_dir, stamp):
        return demo
    phantom = make_abdomen_phantom(shape_zyx, spacing_zyx_mm, seed)
    write_ct_series(phantom.hu_zyx, spacing_zyx_mm, demo.dicom_dir, seed=seed, series_description="Demo abdomen phantom")
    np.save(demo.truth_path, phantom.spleen_mask_zyx)
    (case_dir / STAMP_FILE).write_text(stamp)
    logger.info("Wrote demo CT %s and its truth %s", demo.dicom_dir, demo.truth_path)
    return demo


@dataclass(frozen=True)
class DemoSlide:
    slide_path: Path
    ground_truth_dir: Path  # <slide>.tif (mask) and <slide>.xml


def write_demo_slide(
    out_dir: Path,
    size_xy_level0: tuple[int, int] = DEMO_SLIDE_SIZE_XY,
    seed: int = DEMO_SLIDE_SEED,
    tumor_sizes_um: tuple[float, ...] = DEMO_SLIDE_TUMOR_SIZES_UM,
) -> DemoSlide:
    """Write the demo slide and its ground truth; reuses files written by the same generator."""
    case_dir = Path(out_dir) / "wsi"
    demo = DemoSlide(case_dir / "demo_slide.tif", case_dir / "ground_truth")
    mask_path, xml_path = demo.ground_truth_dir / "demo_slide.tif", demo.ground_truth_dir / "demo_slide.xml"
    stamp = generator_stamp(SLIDE_GENERATOR_SOURCES, (size_xy_level0, seed, tumor_sizes_um))
    if _fresh(case_dir, stamp):
        return demo
    demo.ground_truth_dir.mkdir(parents=True, exist_ok=True)
    scene = make_slide_scene(size_xy_level0, seed, tumor_sizes_um)
    write_slide(scene, demo.slide_path)
    write_ground_truth(scene, xml_path, mask_path)
    (case_dir / STAMP_FILE).write_text(stamp)
    logger.info("Wrote demo slide %s and its ground truth in %s", demo.slide_path, demo.ground_truth_dir)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    demo = write_demo_ct(args.out_dir)
    logger.info("DICOM series: %s", demo.dicom_dir)
    slide = write_demo_slide(args.out_dir)
    logger.info("Slide: %s", slide.slide_path)


if __name__ == "__main__":
    main()
