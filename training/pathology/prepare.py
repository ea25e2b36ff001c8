"""Stage ``prepare``: tumor masks, tissue masks and patch candidates of a Camelyon16-layout dataset.

Per training slide: the tissue mask of the app (:func:`operators.wsi.tissue_mask.compute_slide_tissue`,
on its 64-model-pixel grid); one candidate patch centre per tissue cell; its label from the centre
128 x 128 region of the tumor mask (:mod:`training.pathology.labels`). Tumor candidates come from
every tumor slide; normal candidates from normal slides and from tumor slides, except the slides
:func:`training.pathology.settings.normal_patches_excluded` names (incomplete annotations; normal
086 and 144, which contain tumor). Slides are split into train and validation by slide; the
validation slides give a fixed held-out patch set. Output files: :mod:`training.pathology.candidates`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from operators.models.config import load_model_config
from operators.wsi.slide.sources import SlideSource
from operators.wsi.tissue_mask import compute_slide_tissue
from training.pathology.auc import read_reference_csv
from training.pathology.candidates import load_pools, write_candidates, write_heldout
from training.pathology.evaluation_masks import find_ground_truth
from training.pathology.labels import centre_region_labels, read_annotations, tumor_mask
from training.pathology.sampling import PatchDraws, PatchPools
from training.pathology.settings import CamelyonLayout, PrepareSettings, normal_patches_excluded
from training.provenance import environment, write_json

logger = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs")


def slides_in(folder: Path) -> dict[str, Path]:
    """Slide name -> path of the slide files of a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in SLIDE_SUFFIXES}


def split_slides(names: list[str], val_fraction: float, seed: int, salt: int) -> tuple[list[str], list[str]]:
    """(train, val) names: round(val_fraction * n) slides drawn by seed, at least one when n >= 2 and val_fraction > 0."""
    n_val = round(val_fraction * len(names))
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    chosen = set(np.random.default_rng([seed, salt]).permutation(len(names))[:n_val].tolist())
    return ([n for i, n in enumerate(names) if i not in chosen], [n for i, n in enumerate(names) if i in chosen])


def types_of_test_slides(layout: CamelyonLayout, test_names: list[str]) -> dict[str, str]:
    """ "Tumor" / "Normal" per test slide: from the reference CSV when there is one, else Tumor when it has ground truth."""
    csv_path = layout.test_reference_csv
    if csv_path is not None and Path(csv_path).is_file():
        is_tumor = read_reference_csv(csv_path)
    else:
        truth = find_ground_truth(layout.test_reference_dir) if Path(layout.test_reference_dir).is_dir() else {}
        is_tumor = {name: name in truth for name in test_names}
    missing = [name for name in test_names if name not in is_tumor]
    if missing:
        raise ValueError(f"test slides missing from {csv_path}: {', '.join(missing)}")
    return {name: "Tumor" if is_tumor[name] else "Normal" for name in test_names}


def _save_png(mask: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(path)
    return str(path.name)


def prepare_slide(name: str, path: Path, xml_path: Path | None, settings: PrepareSettings, model_config: dict[str, Any]) -> dict[str, Any]:
    """Candidates and masks of one training slide; returns its slides.json entry."""
    preprocessing = model_config["preprocessing"]
    tissue = compute_slide_tissue(
        SlideSource(name, Path(path)),
        preprocessing["model_mpp"],
        model_config["tissue_mask"]["mask_downsample"],
        preprocessing["patch_size_px"],
    )
    grid = tissue.mask_grid
    rows, cols = np.nonzero(tissue.mask)
    origin_x, origin_y = grid.origin_xy_level0
    centres = np.rint(np.stack([origin_x + cols * grid.stride_level0_px, origin_y + rows * grid.stride_level0_px], axis=1)).astype(np.int64)
    polygons, exclusions = read_annotations(xml_path)
    # the centre region is label_centre_px level-0 pixels of a slide at the model's mpp
    centre_px = settings.label_centre_px * preprocessing["model_mpp"] / tissue.mpp
    labels = centre_region_labels(polygons, centres, settings.label_level, centre_px, exclusions)
    excluded = normal_patches_excluded(name)
    normal = centres[~labels] if excluded is None else centres[:0]
    write_candidates(settings.prep_dir, name, centres[labels], normal)
    masks = Path(settings.prep_dir) / "masks"
    tumor_png = _save_png(tumor_mask(polygons, tissue.size_xy, settings.mask_level, exclusions), masks / f"{name}_tumor.png")
    tissue_png = _save_png(tissue.mask, masks / f"{name}_tissue.png")
    logger.info(
        "%s: %d tissue cells, %d tumor and %d normal candidates%s",
        name,
        len(centres),
        int(labels.sum()),
        len(normal),
        f" (normal patches excluded: {excluded})" if excluded else "",
    )
    return {
        "path": str(path),
        "annotations": None if xml_path is None else str(xml_path),
        "size_xy_level0": list(tissue.size_xy),
        "mpp": tissue.mpp,
        "candidate_stride_level0_px": grid.stride_level0_px,
        "tissue_cells": len(centres),
        "tumor_candidates": int(labels.sum()),
        "normal_candidates": len(normal),
        "normal_patches_excluded": excluded,
        "tumor_mask_png": tumor_png,
        "tumor_mask_level": settings.mask_level,
        "tissue_mask_png": tissue_png,
        "tissue_mask_stride_level0_px": grid.stride_level0_px,
    }


def prepare(settings: PrepareSettings) -> dict[str, Any]:
    """Write the prep folder (module docstring); returns split.json's content."""
    started = time.monotonic()
    prep_dir, layout = Path(settings.prep_dir), settings.layout
    prep_dir.mkdir(parents=True, exist_ok=True)
    model_config = load_model_config(settings.model_name)
    tumor, normal = slides_in(layout.tumor_dir), slides_in(layout.normal_dir)
    if not tumor or not normal:
        raise ValueError(f"need tumor and normal training slides: {len(tumor)} in {layout.tumor_dir}, {len(normal)} in {layout.normal_dir}")
    missing_xml = [n for n in tumor if not (Path(layout.annotations_dir) / f"{n}.xml").is_file()]
    if missing_xml:
        raise ValueError(f"tumor slides without annotations in {layout.annotations_dir}: {', '.join(missing_xml)}")
    train_tumor, val_tumor = split_slides(list(tumor), settings.val_fraction, settings.seed, 1)
    train_normal, val_normal = split_slides(list(normal), settings.val_fraction, settings.seed, 2)
    entries = {
        name: prepare_slide(name, path, Path(layout.annotations_dir) / f"{name}.xml", settings, model_config)
        for name, path in tumor.items()
    }
    entries.update({name: prepare_slide(name, path, None, settings, model_config) for name, path in normal.items()})
    test = slides_in(layout.test_images_dir)
    split = {
        "train": {"tumor": train_tumor, "normal": train_normal},
        "val": {"tumor": val_tumor, "normal": val_normal},
        "test": {
            name: {"path": str(path), "type": kind}
            for (name, path), kind in zip(test.items(), types_of_test_slides(layout, list(test)).values(), strict=True)
        },
        "normal_patches_excluded": {n: e["normal_patches_excluded"] for n, e in entries.items() if e["normal_patches_excluded"]},
        "slides": {name: entry["path"] for name, entry in entries.items()},
    }
    write_json(prep_dir / "split.json", split)
    write_json(prep_dir / "slides.json", entries)
    _write_heldout_set(settings)
    write_json(
        prep_dir / "prepare.json",
        {
            "settings": {**asdict(settings), "layout": layout.as_json(), "prep_dir": str(prep_dir)},
            "seconds": round(time.monotonic() - started, 1),
            "environment": environment(),
        },
    )
    logger.info(
        "prepared %d training slides (%d+%d train, %d+%d val) and %d test slides in %.0f s into %s",
        len(entries),
        len(train_tumor),
        len(train_normal),
        len(val_tumor),
        len(val_normal),
        len(test),
        time.monotonic() - started,
        prep_dir,
    )
    return split


def heldout_draws(pools: PatchPools, per_class: int, seed: int) -> PatchDraws:
    """Up to ``per_class`` patches of each class, drawn without replacement from all candidates of the pools, in random order."""
    rng = np.random.default_rng([seed, 77])
    parts = []
    for label, pools_of_class in ((1, pools.tumor), (0, pools.normal)):
        slide_index = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(pools_of_class)] or [np.zeros(0, np.int64)])
        if not len(slide_index):
            continue
        centres = np.concatenate(pools_of_class).reshape(-1, 2)
        chosen = np.sort(rng.choice(len(slide_index), min(per_class, len(slide_index)), replace=False))
        parts.append((slide_index[chosen], centres[chosen], np.full(len(chosen), label, np.uint8)))
    if not parts:
        return PatchDraws(np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros(0, np.uint8))
    slide_index, centres, labels = (np.concatenate(column) for column in zip(*parts, strict=True))
    order = rng.permutation(len(labels))  # shuffled, so that any first n patches mix both classes
    return PatchDraws(slide_index[order], centres[order], labels[order])


def _write_heldout_set(settings: PrepareSettings) -> None:
    val = load_pools(settings.prep_dir, "val")
    draws = heldout_draws(val.pools, settings.heldout_patches_per_class, settings.seed)
    if not len(draws) or draws.labels.min() == draws.labels.max():
        logger.warning(
            "the held-out patch set has %d patches, %d tumor: patch accuracy will be one-sided", len(draws), int(draws.labels.sum())
        )
    write_heldout(Path(settings.prep_dir) / "heldout_patches.csv", list(val.pools.slides), draws)
