"""Inputs of the WSI benchmark: synthetic slides (cached) and a random-weight model with spread logits.

Slides come from :mod:`training.synthetic.wsi_slide` (tiled JPEG pyramid at 0.243 um/px), written
with at least 7 levels so that the bundle's mask level 6 exists in the file (MONAI's
MaskedPatchWSIDataset reads ``mask_level`` from the pyramid and does not resample). Each is cached
under ``WORK_DIR/inputs/`` and rebuilt when its spec or the generator's sources change. The
generator renders only tiles that touch tissue and writes one pre-encoded glass tile everywhere
else, so a 100k x 100k slide with a little tissue takes a minute or two and never holds a level in
memory.

A random network is a poor test of "the same map": with batch-norm statistics of (0, 1) its logits
are huge and every sigmoid saturates at 0 or 1, where any two pipelines agree. The stand-in model
here is random (seeded) but calibrated on patches of the benchmark slide: batch-norm running
statistics are re-estimated on them (train-mode forward passes, cumulative average) and the 1x1
convolution head is rescaled so that the logits over those patches have mean 0 and standard
deviation ``LOGIT_STD``; probabilities then spread over (0, 1) and disagreements show.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.synthetic.stamp import generator_stamp

REPO_ROOT = Path(__file__).resolve().parent.parent

logger = logging.getLogger(__name__)

GENERATOR_SOURCES = ("wsi_slide.py", "wsi_scene.py", "wsi_texture.py", "wsi_tiff.py")  # in training/synthetic
MIN_LEVELS = 7  # levels 0..6: the bundle's mask level 6 must exist
LOGIT_STD = 2.0
CALIBRATION_PATCHES = 96


@dataclass(frozen=True)
class SlideSpec:
    name: str
    size_xy: tuple[int, int]
    seed: int
    tissue_fraction: float
    tumor_sizes_um: tuple[float, ...]


def parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep:
        raise ValueError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)


def _fingerprint(spec: SlideSpec) -> str:
    return generator_stamp(GENERATOR_SOURCES, asdict(spec) | {"min_levels": MIN_LEVELS})[:16]


def prepare_slide(spec: SlideSpec, work_dir: Path) -> Path:
    """The slide's TIFF under ``work_dir/inputs/<name>/``, written when missing or stale."""
    from training.synthetic.wsi_slide import make_slide_scene, write_slide

    folder = work_dir / "inputs" / spec.name
    slide = folder / f"{spec.name}.tif"
    stamp = folder / "fingerprint.txt"
    fingerprint = _fingerprint(spec)
    if slide.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        logger.info("Reusing %s", slide)
        return slide
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    scene = make_slide_scene(spec.size_xy, spec.seed, tumor_sizes_um=spec.tumor_sizes_um, tissue_fraction=spec.tissue_fraction)
    write_slide(scene, slide, min_levels=MIN_LEVELS)
    stamp.write_text(fingerprint)
    (folder / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    logger.info("Wrote %s (%d x %d, %.0f MB) in %.1f s", slide, *spec.size_xy, slide.stat().st_size / 1e6, time.perf_counter() - start)
    return slide


def _calibration_patches(slide_path: Path, count: int, patch_px: int = 224) -> np.ndarray:
    """(count, 224, 224, 3) uint8 level-0 patches spread evenly over the slide's tissue."""
    import openslide

    with openslide.OpenSlide(str(slide_path)) as slide:
        level = slide.get_best_level_for_downsample(64)
        downsample = slide.level_downsamples[level]
        thumbnail = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))
        rgb = thumbnail.astype(np.float32)
        saturation = (rgb.max(axis=2) - rgb.min(axis=2)) / np.maximum(rgb.max(axis=2), 1.0)
        rows, cols = np.nonzero(saturation > 0.1)
        if len(rows) == 0:
            raise ValueError(f"{slide_path} shows no tissue to calibrate the stand-in model on")
        chosen = np.linspace(0, len(rows) - 1, count).round().astype(int)
        patches = []
        for index in chosen:
            x = int((cols[index] + 0.5) * downsample) - patch_px // 2
            y = int((rows[index] + 0.5) * downsample) - patch_px // 2
            patches.append(np.asarray(slide.read_region((max(x, 0), max(y, 0)), 0, (patch_px, patch_px)).convert("RGB")))
    return np.stack(patches)


def make_calibrated_random_model(slide_path: Path, out_path: Path, seed: int = 0) -> Path:
    """A seeded random ResNet18 classifier in the bundle's state-dict layout, with batch-norm
    statistics and head calibrated on ``slide_path``'s tissue so that its logits are spread."""
    import torch

    from operators.models.config import load_model_config
    from operators.models.networks import build_patch_classifier

    torch.manual_seed(seed)
    network = build_patch_classifier(load_model_config("pathology_tumor_detection")["network"])
    patches = _calibration_patches(slide_path, CALIBRATION_PATCHES)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    network.train()
    with torch.no_grad():
        for chunk in x.split(32):
            network(chunk)
        network.eval()
        features = torch.cat([network.pool(network.features(chunk)) for chunk in x.split(32)]).flatten(1).double()
        direction = torch.randn(features.shape[1], dtype=torch.float64)
        logits = features @ direction
        scale = LOGIT_STD / max(float(logits.std()), 1e-12)
        network.fc.weight.copy_((direction * scale).reshape(network.fc.weight.shape).float())
        network.fc.bias.fill_(float(-logits.mean() * scale))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), out_path)
    logger.info(
        "Wrote a calibrated random model (seed %d, logit std %.1f on %d patches of %s) to %s",
        seed,
        LOGIT_STD,
        len(x),
        slide_path.name,
        out_path,
    )
    return out_path


def describe_model(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
