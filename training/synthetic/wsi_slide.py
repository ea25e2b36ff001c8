"""Synthetic H&E lymph-node whole-slide images (Camelyon16-like) with tumour ground truth.

The public face of the generator (the modules behind it: :mod:`.wsi_scene` the scene and its
render, :mod:`.wsi_placement` its layout, :mod:`.wsi_geometry` star-shaped outlines,
:mod:`.wsi_anatomy` tissue classes and stains, :mod:`.wsi_nuclei` and :mod:`.wsi_texture` texture
primitives, :mod:`.wsi_tiff` TIFF writers, :mod:`.wsi_annotations` ASAP XML writer,
:mod:`.camelyon_layout` ground truth and dataset writer; :mod:`.wsi_hard` and :mod:`.wsi_artefacts` the
hard cases (mimics, a second centre, folds, pen marks) of :mod:`.camelyon_hard`, the hard benchmark; the
reader and the rasteriser, which real slides use too, are :mod:`training.pathology.annotations`)::

    scene = make_slide_scene((16384, 12288), seed=0)          # tumour slide; tumor_sizes_um=() for normal
    rgb = scene.render((x0, y0), (w, h), downsample)          # any region, any scale, deterministic
    write_slide(scene, "slide.tif")                           # tiled JPEG pyramid, 0.243 um/px
    write_ground_truth(scene, "slide.xml", "slide_mask.tif")  # ASAP XML + uint8 mask TIFF

    from training.pathology.annotations import rasterize_polygons, read_asap_xml
    polygons = read_asap_xml("slide.xml")                     # [(n, 2) level-0 x, y]
    mask = rasterize_polygons(polygons, (x0, y0), (w, h), downsample)

Command line (writes OUT.tif, OUT.xml and OUT_mask.tif)::

    python -m training.synthetic.wsi_slide OUT.tif --size 16384x12288 --seed 0 [--normal] [--no-pyramid]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from .camelyon_layout import CamelyonLikeDataset, describe_lesions, write_camelyon_like_dataset, write_ground_truth
from .wsi_annotations import write_asap_xml
from .wsi_placement import TissueSection, TumorRegion, tumor_category
from .wsi_scene import CAMELYON_MPP, DEFAULT_TUMOR_SIZES_UM, SlideScene, StainParams, make_slide_scene
from .wsi_tiff import MASK_MIN_LEVELS, level_sizes, write_mask, write_slide

__all__ = [
    "CAMELYON_MPP",
    "DEFAULT_TUMOR_SIZES_UM",
    "MASK_MIN_LEVELS",
    "CamelyonLikeDataset",
    "SlideScene",
    "StainParams",
    "TissueSection",
    "TumorRegion",
    "describe_lesions",
    "level_sizes",
    "make_slide_scene",
    "tumor_category",
    "write_asap_xml",
    "write_camelyon_like_dataset",
    "write_ground_truth",
    "write_mask",
    "write_slide",
]

logger = logging.getLogger(__name__)


def ground_truth_paths(slide_path: str | Path) -> tuple[Path, Path]:
    """OUT.tif -> (OUT.xml, OUT_mask.tif): where the command line puts the ground truth."""
    p = Path(slide_path)
    return p.with_suffix(".xml"), p.with_name(p.stem + "_mask.tif")


def _parse_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(w), int(h)


def _parse_sizes(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.synthetic.wsi_slide",
        description="Write a synthetic H&E lymph-node slide (tiled pyramidal TIFF) with its ASAP XML and tumour mask.",
    )
    ap.add_argument("out", type=Path, help="slide path (.tif); OUT.xml and OUT_mask.tif are written next to it")
    ap.add_argument("--size", type=_parse_size, default=(16384, 12288), help="level-0 WIDTHxHEIGHT (default 16384x12288)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--normal", action="store_true", help="no tumour")
    ap.add_argument(
        "--tumor-sizes",
        type=_parse_sizes,
        default=DEFAULT_TUMOR_SIZES_UM,
        help="comma-separated lesion major axes in um (default %(default)s)",
    )
    ap.add_argument("--no-pyramid", action="store_true", help="level 0 only")
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--jpeg-quality", type=int, default=90)
    ap.add_argument("--workers", type=int, default=None, help="render threads (default: CPUs, at most 4)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    scene = make_slide_scene(args.size, args.seed, () if args.normal else args.tumor_sizes)
    for lesion in describe_lesions(scene):
        logger.info("lesion %s", lesion)
    write_slide(
        scene, args.out, tile_size=args.tile_size, pyramid=not args.no_pyramid, jpeg_quality=args.jpeg_quality, workers=args.workers
    )
    xml, mask = ground_truth_paths(args.out)
    write_ground_truth(scene, xml, mask, workers=args.workers)  # the mask keeps its pyramid (FROC reads level 5)
    logger.info("Done in %.1f s: %s, %s, %s", time.perf_counter() - t0, args.out, xml, mask)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
