"""Ground truth writer and a synthetic dataset in the Camelyon16 layout.

``python -m training.synthetic.camelyon_layout OUT_DIR --n-tumor 4 --n-normal 4 --n-test 4 --size 8192x8192 --seed 0``
writes::

    OUT_DIR/training/tumor/tumor_001.tif ...         slides with metastases
    OUT_DIR/training/normal/normal_001.tif ...       slides without
    OUT_DIR/training/lesion_annotations/tumor_001.xml  ASAP XML, level-0 polygons
    OUT_DIR/testing/images/test_001.tif ...          a mix of both
    OUT_DIR/testing/reference/test_001.xml           tumour test slides only (as Camelyon16)
    OUT_DIR/testing/reference/test_001_mask.tif      uint8 mask, 1 = tumour (tumour test slides only)
    OUT_DIR/testing/reference.csv                    image,type (Tumor / Normal), one row per test slide
    OUT_DIR/manifest.json                            seeds, sizes and every lesion (size class, centroid)

Everything follows from ``seed``: slide i of a split always gets the same scene whatever the
other counts are.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .wsi_annotations import write_asap_xml
from .wsi_placement import MICRO_MIN_UM
from .wsi_scene import CAMELYON_MPP, SlideScene, make_slide_scene
from .wsi_tiff import write_mask, write_slide

logger = logging.getLogger(__name__)

_SPLIT_SEED_OFFSET = {"tumor": 1_000_003, "normal": 2_000_003, "test": 3_000_017}


def write_ground_truth(
    scene: SlideScene, xml_path: str | Path, mask_path: str | Path | None = None, pyramid: bool = True, workers: int | None = None
) -> tuple[Path, Path | None]:
    """Write the scene's tumour polygons as ASAP XML and (unless ``mask_path`` is None) as a mask TIFF.

    A normal scene gives an XML with no annotations and an all-zero mask.
    """
    xml = write_asap_xml(scene.tumor_polygons, xml_path)
    mask = None
    if mask_path is not None:
        mask = write_mask(scene.tumor_polygons, scene.size_xy, mask_path, mpp=scene.mpp, pyramid=pyramid, workers=workers)
    return xml, mask


def describe_lesions(scene: SlideScene) -> list[dict]:
    """JSON-ready description of each lesion: size class, major axis, centroid and bbox in level-0 px."""
    out = []
    for t in scene.tumors:
        p = t.polygon_xy
        out.append(
            {
                "category": t.category,
                "major_axis_um": round(t.major_axis_um, 3),
                "centroid_xy": [round(float(v), 2) for v in p.mean(0)],
                "bbox_xyxy": [round(float(v), 2) for v in (*p.min(0), *p.max(0))],
                "n_vertices": int(len(p)),
            }
        )
    return out


def random_tumor_sizes(rng: np.random.Generator, size_xy_level0: tuple[int, int], mpp: float = CAMELYON_MPP) -> list[float]:
    """1-4 lesions for a tumour slide: at least one micro/macro metastasis, sometimes an ITC cluster.

    The largest is log-uniform in 0.25-3 mm, capped at about what a node on this slide can hold
    (:func:`scene_for` shrinks it further if the layout still fails).
    """
    min_side_um = min(size_xy_level0) * mpp
    cap = max(MICRO_MIN_UM * 1.2, 0.62 * min_side_um - 300)
    sizes = [float(min(np.exp(rng.uniform(np.log(250), np.log(3000))), cap))]
    for _ in range(int(rng.integers(0, 3))):
        sizes.append(float(min(np.exp(rng.uniform(np.log(MICRO_MIN_UM), np.log(1000))), 0.5 * sizes[0] + 100)))
    if rng.uniform() < 0.35:
        sizes.append(float(rng.uniform(40, 100)))  # isolated tumour cells
    return sizes


def scene_for(slide_seed: int, size_xy_level0: tuple[int, int], tumor: bool, mpp: float = CAMELYON_MPP) -> SlideScene:
    """The scene of one dataset slide; tumour sizes are drawn from the slide seed and shrunk until they fit."""
    if not tumor:
        return make_slide_scene(size_xy_level0, slide_seed, (), mpp)
    sizes = random_tumor_sizes(np.random.default_rng([slide_seed, 7]), size_xy_level0, mpp)
    while True:
        try:
            return make_slide_scene(size_xy_level0, slide_seed, sizes, mpp)
        except ValueError:
            if len(sizes) > 1:  # drop the smallest lesion, then try again
                sizes.remove(min(sizes))
            elif sizes[0] > MICRO_MIN_UM:
                sizes = [max(sizes[0] * 0.8, MICRO_MIN_UM)]
            else:
                raise


@dataclass
class CamelyonLikeDataset:
    """Paths of a dataset written by :func:`write_camelyon_like_dataset`."""

    root: Path
    tumor_slides: list[Path] = field(default_factory=list)
    normal_slides: list[Path] = field(default_factory=list)
    annotations: list[Path] = field(default_factory=list)  # training/lesion_annotations, one per tumour slide
    test_slides: list[Path] = field(default_factory=list)
    test_references: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # test name -> (xml, mask), tumour slides only
    reference_csv: Path | None = None
    manifest: Path | None = None


def split_seed(seed: int, split: str, index: int) -> int:
    """The scene seed of slide ``index`` of ``split`` ("tumor", "normal" or "test") in a dataset of ``seed``."""
    return int(np.random.default_rng([seed, _SPLIT_SEED_OFFSET[split], index]).integers(0, 2**31 - 1))


def write_camelyon_like_dataset(
    out_dir: str | Path,
    n_tumor: int,
    n_normal: int,
    n_test: int,
    size_xy_level0: tuple[int, int] = (8192, 8192),
    seed: int = 0,
    test_tumor_fraction: float = 0.4,
    pyramid: bool = True,
    workers: int | None = None,
) -> CamelyonLikeDataset:
    """Write synthetic slides, annotations and reference masks in the Camelyon16 layout (module docstring).

    Test slide k is a tumour slide when ``k < round(test_tumor_fraction * n_test)`` in a
    seed-determined order (at least one of each kind when ``n_test >= 2``).
    """
    root = Path(out_dir)
    ds = CamelyonLikeDataset(root)
    manifest: dict = {"seed": seed, "size_xy_level0": list(size_xy_level0), "mpp": CAMELYON_MPP, "slides": []}
    t0 = time.perf_counter()

    def one(split: str, index: int, tumor: bool, tif: Path) -> SlideScene:
        slide_seed = split_seed(seed, split, index)
        scene = scene_for(slide_seed, size_xy_level0, tumor)
        write_slide(scene, tif, pyramid=pyramid, workers=workers)
        manifest["slides"].append(
            {
                "image": tif.stem,
                "path": str(tif.relative_to(root)),
                "split": split,
                "type": "Tumor" if scene.is_tumor else "Normal",
                "seed": slide_seed,
                "lesions": describe_lesions(scene),
            }
        )
        return scene

    for i in range(n_tumor):
        name = f"tumor_{i + 1:03d}"
        scene = one("tumor", i, True, root / "training" / "tumor" / f"{name}.tif")
        ds.tumor_slides.append(root / "training" / "tumor" / f"{name}.tif")
        ds.annotations.append(write_asap_xml(scene.tumor_polygons, root / "training" / "lesion_annotations" / f"{name}.xml"))
    for i in range(n_normal):
        name = f"normal_{i + 1:03d}"
        one("normal", i, False, root / "training" / "normal" / f"{name}.tif")
        ds.normal_slides.append(root / "training" / "normal" / f"{name}.tif")

    n_test_tumor = int(round(test_tumor_fraction * n_test))
    if n_test >= 2:
        n_test_tumor = min(max(n_test_tumor, 1), n_test - 1)
    order = np.random.default_rng([seed, 99]).permutation(n_test)
    rows = []
    for i in range(n_test):
        name = f"test_{i + 1:03d}"
        tumor = bool(order[i] < n_test_tumor)
        tif = root / "testing" / "images" / f"{name}.tif"
        scene = one("test", i, tumor, tif)
        ds.test_slides.append(tif)
        rows.append((name, "Tumor" if tumor else "Normal"))
        if tumor:
            ref = root / "testing" / "reference"
            xml, mask = write_ground_truth(scene, ref / f"{name}.xml", ref / f"{name}_mask.tif", workers=workers)
            ds.test_references[name] = (xml, mask)
    if n_test:
        ds.reference_csv = write_reference_csv(root / "testing" / "reference.csv", rows)
    ds.manifest = root / "manifest.json"
    root.mkdir(parents=True, exist_ok=True)
    ds.manifest.write_text(json.dumps(manifest, indent=1))
    logger.info("Wrote %d tumour, %d normal and %d test slides to %s in %.1f s", n_tumor, n_normal, n_test, root, time.perf_counter() - t0)
    return ds


def write_reference_csv(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    """Camelyon16's testing/reference.csv: a header, then one ``image,type`` row (Tumor / Normal) per test slide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "type"])
        w.writerows(rows)
    return path


def _parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.synthetic.camelyon_layout", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n-tumor", type=int, default=4)
    ap.add_argument("--n-normal", type=int, default=4)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--size", type=_parse_size, default=(8192, 8192), help="level-0 WIDTHxHEIGHT (default 8192x8192)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-pyramid", action="store_true")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_camelyon_like_dataset(
        args.out_dir, args.n_tumor, args.n_normal, args.n_test, args.size, args.seed, pyramid=not args.no_pyramid, workers=args.workers
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
