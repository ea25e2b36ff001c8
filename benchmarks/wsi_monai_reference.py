"""MONAI's reference whole-slide inference, as the model-zoo pathology_tumor_detection bundle runs it.

The bundle's ``configs/inference.json`` (Project-MONAI/model-zoo), reproduced without Ignite
(not installed here) and without torchvision (unusable here):

- ``MaskedPatchWSIDataset(mask_level=6, patch_size=[224, 224], reader=...)``: the dataset reads
  the whole of ``mask_level``, computes ``ForegroundMask(hsv_threshold={"S": "otsu"})`` on it and
  makes one sample per foreground pixel (row, col), whose patch's level-0 top-left corner (y, x) is
  ``round((row + 0.5) * downsample - 224 // 2)``, i.e. the patch is centred on the mask pixel's
  centre;
- transforms ``CastToTyped(float32)``, ``ScaleIntensityRanged(0..255 -> -1..1)``, ``ToTensord``;
- ``DataLoader(batch_size=400, shuffle=False, num_workers=...)`` (the bundle uses 8 workers);
- ``SimpleInferer`` on the network in eval mode under ``torch.no_grad`` (``SupervisedEvaluator``);
  the bundle's ``amp: true`` is ``torch.autocast("cuda")``, which does nothing on the CPU, so the
  network runs in float32;
- postprocessing ``Activationsd(sigmoid=True)``; ``ProbMapProducer`` writes each probability into a
  float64 map the shape of the mask at ``prob_map[mask_location] = probability``.

The network is the bundle's ``TorchVisionFCModel("resnet18", num_classes=1, use_conv=True)``
state-dict layout loaded into :class:`operators.models.networks.ResNet18ConvHead` (the same parameters,
without torchvision), run eagerly as the bundle does (no freezing, no conv/BN folding).

Run as a script (one process per pipeline, so that its peak memory is its own)::

    python benchmarks/wsi_monai_reference.py SLIDE MODEL OUT_DIR [--batch-size 400] [--workers 2] [--reader OpenSlide]

Writes ``OUT_DIR/reference_map.npy`` (float64, mask shape), ``OUT_DIR/reference_locations.npy``
(int64 (N, 4): mask row, mask col, patch top-left y, x at level 0) and ``OUT_DIR/reference.json``
(timings, counts, settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("wsi_monai_reference")

BUNDLE_MASK_LEVEL = 6
BUNDLE_PATCH_SIZE = 224
BUNDLE_BATCH_SIZE = 400


def load_reference_network(model_path: Path) -> Any:
    """The model's network, unfrozen, float32, eval mode, on the CPU (the project's own loader, so
    a bundle-layout state dict and a TorchScript classifier both load)."""
    import torch

    from operators.models.config import load_model_config
    from operators.models.loader import load_model
    from operators.models.networks import build_patch_classifier

    config = load_model_config("pathology_tumor_detection")
    model = load_model(model_path, lambda: build_patch_classifier(config["network"]), torch.device("cpu"))
    return model.module.float().eval()


def build_dataset(slide: Path, mask_level: int, patch_size: int, reader: str) -> Any:
    from monai.data import MaskedPatchWSIDataset
    from monai.transforms import CastToTyped, Compose, ScaleIntensityRanged, ToTensord

    preprocessing = Compose(
        [
            CastToTyped(keys="image", dtype=np.float32),
            ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=-1.0, b_max=1.0),
            ToTensord(keys="image"),
        ]
    )
    return MaskedPatchWSIDataset(
        [{"image": str(slide)}], mask_level=mask_level, patch_size=[patch_size, patch_size], transform=preprocessing, reader=reader
    )


def run_reference(
    slide: Path,
    model_path: Path,
    out_dir: Path,
    batch_size: int,
    workers: int,
    reader: str,
    mask_level: int = BUNDLE_MASK_LEVEL,
    patch_size: int = BUNDLE_PATCH_SIZE,
) -> dict[str, Any]:
    """Run the reference pipeline on one slide; write its map, locations and timings to ``out_dir``."""
    import torch
    from monai.data import DataLoader
    from monai.inferers import SimpleInferer
    from monai.transforms import Activationsd, Compose, EnsureTyped, ToNumpyd
    from monai.utils import ProbMapKeys, WSIPatchKeys

    start = time.perf_counter()
    network = load_reference_network(model_path)
    loaded = time.perf_counter()
    dataset = build_dataset(slide, mask_level, patch_size, reader)
    built = time.perf_counter()
    sample_info = dataset.image_data[0]
    prob_map = np.zeros(sample_info[ProbMapKeys.SIZE.value], dtype=np.float64)
    locations = np.array([[*s[ProbMapKeys.LOCATION.value], *s[WSIPatchKeys.LOCATION.value]] for s in dataset.data], dtype=np.int64).reshape(
        -1, 4
    )
    logger.info("%s: %d patches from a %s mask at level %d (%.1f s)", slide.name, len(dataset), prob_map.shape, mask_level, built - loaded)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    inferer = SimpleInferer()
    postprocessing = Compose([EnsureTyped(keys="pred"), Activationsd(keys="pred", sigmoid=True), ToNumpyd(keys="pred")])
    done, last_log = 0, time.perf_counter()
    network_s = 0.0
    with torch.no_grad():
        for batch in loader:
            images = batch["image"]
            t0 = time.perf_counter()
            pred = inferer(images, network)
            network_s += time.perf_counter() - t0
            probs = postprocessing({"pred": pred})["pred"]
            for loc, prob in zip(images.meta[ProbMapKeys.LOCATION.value], probs, strict=True):
                prob_map[tuple(int(v) for v in loc)] = float(np.asarray(prob).reshape(-1)[0])
            done += len(probs)
            now = time.perf_counter()
            if now - last_log > 10 or done == len(dataset):
                logger.info("%d/%d patches, %.1f patches/s", done, len(dataset), done / (now - built))
                last_log = now
    finished = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "reference_map.npy", prob_map)
    np.save(out_dir / "reference_locations.npy", locations)
    result = {
        "slide": str(slide),
        "model": str(model_path),
        "reader": reader,
        "mask_level": mask_level,
        "mask_shape_rows_cols": list(prob_map.shape),
        "mask_downsample": float(dataset.wsi_reader.get_downsample_ratio(dataset._get_wsi_object(sample_info), mask_level)),
        "patch_size": patch_size,
        "batch_size": batch_size,
        "workers": workers,
        "torch_threads": torch.get_num_threads(),
        "patches": len(dataset),
        "timings_s": {
            "model_load": round(loaded - start, 3),
            "dataset_and_mask": round(built - loaded, 3),
            "inference": round(finished - built, 3),
            "network_forward": round(network_s, 3),
            "total": round(finished - start, 3),
        },
        "patches_per_s": len(dataset) / max(finished - built, 1e-9),
    }
    (out_dir / "reference.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--batch-size", type=int, default=BUNDLE_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (the bundle: 8)")
    parser.add_argument("--reader", default="OpenSlide", help="MONAI WSIReader backend: OpenSlide or cuCIM")
    parser.add_argument("--mask-level", type=int, default=BUNDLE_MASK_LEVEL)
    args = parser.parse_args(argv)
    result = run_reference(args.slide, args.model, args.out_dir, args.batch_size, args.workers, args.reader, args.mask_level)
    logger.info("%d patches in %.1f s: %.1f patches/s", result["patches"], result["timings_s"]["inference"], result["patches_per_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
