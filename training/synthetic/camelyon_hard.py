"""The hard synthetic Camelyon16 benchmark: a fixed, seeded test set that a model can fail, and a training split like it.

``python -m training.synthetic.camelyon_hard OUT_DIR [--n-tumor 6 --n-normal 6] [--seed 20261207]``
writes the Camelyon16 layout of :mod:`.camelyon_layout` (training/tumor, training/normal,
training/lesion_annotations, testing/images, testing/reference/<slide>.xml and _mask.tif,
testing/reference.csv, manifest.json), with slides made by :func:`.wsi_hard.make_hard_scene`.

The test set (the data card, also ``training/synthetic/HARD_BENCHMARK.md``):

- 24 slides, 12 normal and 12 with metastases, in a seed-determined order; in each class half come
  from centre A (the training slides' stain and scanner) and half from centre B;
- 10 tumour slides of 6144 x 6144 px (1.49 x 1.49 mm at 0.243 um/px) with one to three
  micro-metastases of 200-700 um and, on about half, an isolated tumour cell cluster of 40-150 um
  (not scored, as Camelyon16); 2 of 13312 x 9216 px (3.23 x 2.24 mm) with a 2.05 mm macro-metastasis and a
  micro-metastasis; 12 normal slides of 6144 x 6144 px;
- on every slide histiocyte aggregates and reactive follicles (mimics); on about a third a fold, on
  about a third pen marks, a quarter out of focus, JPEG quality 60-95.

The training split is centre A only (as the Camelyon16 training slides come from the centres the test
slides do, while centre B stands for a site the model never saw): the same hard cases, other seeds.
Everything follows from ``seed``; a slide whose tumours do not fit its layout moves to the next
derived seed (recorded in the manifest).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camelyon_layout import CamelyonLikeDataset, describe_lesions, random_tumor_sizes, split_seed, write_ground_truth, write_reference_csv
from .stamp import generator_stamp
from .wsi_annotations import write_asap_xml
from .wsi_artefacts import Centre
from .wsi_hard import make_hard_scene
from .wsi_placement import MICRO_MIN_UM
from .wsi_scene import CAMELYON_MPP, SlideScene
from .wsi_tiff import write_slide

logger = logging.getLogger(__name__)

HARD_BENCHMARK_SEED = 20261207
N_TEST = 24
N_TEST_MACRO = 2
SLIDE_SIZE_XY = (6144, 6144)
MACRO_SLIDE_SIZE_XY = (13312, 9216)
MACRO_SIZES_UM = (2050.0, 300.0)
STAMP_FILE = "generator.sha256"
GENERATOR_SOURCES = ("camelyon_hard.py",)


@dataclass(frozen=True)
class SlidePlan:
    """One slide of the benchmark: where it goes, its class, centre and size, and the seed its scene comes from."""

    name: str
    split: str  # "tumor" | "normal" | "test"
    index: int
    tumor: bool
    centre: Centre
    size_xy_level0: tuple[int, int]
    macro: bool = False


def plan_test_slides(seed: int, n_test: int = N_TEST, n_macro: int = N_TEST_MACRO) -> list[SlidePlan]:
    """The test slides: half tumour, centres alternating within each class, ``n_macro`` tumour slides with a macro-metastasis."""
    if n_test < 2 or n_test % 4 or not 0 <= n_macro <= n_test // 2:
        raise ValueError(f"need a multiple of 4 test slides (got {n_test}) and at most half of them macro (got {n_macro})")
    order = np.random.default_rng([seed, 99]).permutation(n_test)
    plans, seen = [], {True: 0, False: 0}
    for i in range(n_test):
        tumor = bool(order[i] < n_test // 2)
        k = seen[tumor]
        seen[tumor] += 1
        macro = tumor and k < n_macro
        size = MACRO_SLIDE_SIZE_XY if macro else SLIDE_SIZE_XY
        plans.append(SlidePlan(f"test_{i + 1:03d}", "test", i, tumor, "A" if k % 2 == 0 else "B", size, macro))
    return plans


def hard_tumor_sizes(rng: np.random.Generator) -> list[float]:
    """One to three micro-metastases of 200-700 um (log-uniform), and an ITC cluster of 40-150 um on half the slides."""
    sizes = [float(np.exp(rng.uniform(np.log(MICRO_MIN_UM * 1.05), np.log(700)))) for _ in range(int(rng.integers(1, 4)))]
    if rng.uniform() < 0.5:
        sizes.append(float(rng.uniform(40, 150)))
    return sizes


def plan_scene(plan: SlidePlan, seed: int, mpp: float = CAMELYON_MPP) -> tuple[SlideScene, int]:
    """The slide's scene and the seed it was made with (the next derived seed when its tumours did not fit)."""
    for attempt in range(20):
        slide_seed = split_seed(seed, plan.split, plan.index + 1000 * attempt)
        rng = np.random.default_rng([slide_seed, 11])
        if not plan.tumor:
            sizes: Sequence[float] = ()
        elif plan.macro:
            sizes = MACRO_SIZES_UM
        elif plan.split == "test":
            sizes = hard_tumor_sizes(rng)
        else:
            sizes = random_tumor_sizes(rng, plan.size_xy_level0, mpp)
        try:
            return make_hard_scene(plan.size_xy_level0, slide_seed, sizes, plan.centre, mpp), slide_seed
        except ValueError:
            logger.debug("%s: tumours %s do not fit with seed %d", plan.name, sizes, slide_seed)
    raise ValueError(f"{plan.name}: no layout in 20 seeds holds its tumours")


def write_hard_dataset(
    out_dir: str | Path,
    n_tumor: int = 6,
    n_normal: int = 6,
    seed: int = HARD_BENCHMARK_SEED,
    n_test: int = N_TEST,
    n_macro: int = N_TEST_MACRO,
    workers: int | None = None,
) -> CamelyonLikeDataset:
    """Write the benchmark (module docstring) into ``out_dir``; returns its paths."""
    root = Path(out_dir)
    ds = CamelyonLikeDataset(root)
    manifest: dict = {"seed": seed, "generator": "training.synthetic.camelyon_hard", "mpp": CAMELYON_MPP, "slides": []}
    started = time.perf_counter()
    plans = [SlidePlan(f"tumor_{i + 1:03d}", "tumor", i, True, "A", SLIDE_SIZE_XY) for i in range(n_tumor)]
    plans += [SlidePlan(f"normal_{i + 1:03d}", "normal", i, False, "A", SLIDE_SIZE_XY) for i in range(n_normal)]
    plans += plan_test_slides(seed, n_test, n_macro) if n_test else []
    rows = []
    for plan in plans:
        scene, slide_seed = plan_scene(plan, seed)
        folder = root / "testing" / "images" if plan.split == "test" else root / "training" / plan.split
        tif = write_slide(scene, folder / f"{plan.name}.tif", jpeg_quality=scene.extras.jpeg_quality, workers=workers)
        manifest["slides"].append(
            {
                "image": plan.name,
                "path": str(tif.relative_to(root)),
                "split": plan.split,
                "type": "Tumor" if scene.is_tumor else "Normal",
                "seed": slide_seed,
                "size_xy_level0": list(plan.size_xy_level0),
                "lesions": describe_lesions(scene),
                "hard_cases": scene.extras.describe(scene.mpp),
            }
        )
        if plan.split == "tumor":
            ds.tumor_slides.append(tif)
            ds.annotations.append(write_asap_xml(scene.tumor_polygons, root / "training" / "lesion_annotations" / f"{plan.name}.xml"))
        elif plan.split == "normal":
            ds.normal_slides.append(tif)
        else:
            ds.test_slides.append(tif)
            rows.append((plan.name, "Tumor" if plan.tumor else "Normal"))
            if plan.tumor:
                ref = root / "testing" / "reference"
                ds.test_references[plan.name] = write_ground_truth(
                    scene, ref / f"{plan.name}.xml", ref / f"{plan.name}_mask.tif", workers=workers
                )
    if rows:
        ds.reference_csv = write_reference_csv(root / "testing" / "reference.csv", rows)
    ds.manifest = root / "manifest.json"
    ds.manifest.write_text(json.dumps(manifest, indent=1))
    logger.info("Wrote the hard benchmark (%d slides) to %s in %.0f s", len(plans), root, time.perf_counter() - started)
    return ds


def ensure_hard_dataset(out_dir: str | Path, n_tumor: int = 6, n_normal: int = 6, seed: int = HARD_BENCHMARK_SEED) -> Path:
    """The benchmark in ``out_dir``, written unless that folder holds one made by this generator with these settings."""
    root = Path(out_dir)
    stamp = generator_stamp(GENERATOR_SOURCES, (n_tumor, n_normal, seed, N_TEST))
    stamp_path = root / STAMP_FILE
    if stamp_path.is_file() and stamp_path.read_text().strip() == stamp:
        logger.info("Hard benchmark in %s is up to date", root)
        return root
    if root.exists() and any(root.iterdir()) and not stamp_path.is_file():
        raise FileExistsError(f"{root} holds something other than this benchmark; give an empty or new folder")
    partial = root.with_name(root.name + ".partial")  # written aside, then moved: never half a benchmark in OUT_DIR
    shutil.rmtree(partial, ignore_errors=True)
    write_hard_dataset(partial, n_tumor, n_normal, seed)
    (partial / STAMP_FILE).write_text(stamp)
    if root.exists():
        logger.info("Rewriting %s: it was made by another version of its generator", root)
        shutil.rmtree(root)
    partial.rename(root)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.synthetic.camelyon_hard", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n-tumor", type=int, default=6, help="training slides with metastases (centre A)")
    ap.add_argument("--n-normal", type=int, default=6, help="normal training slides (centre A)")
    ap.add_argument("--seed", type=int, default=HARD_BENCHMARK_SEED)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_hard_dataset(args.out_dir, args.n_tumor, args.n_normal, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
