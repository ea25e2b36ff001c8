"""MSD-layout data lists, the train/validation split, and the bundle's transforms."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    FgBgToIndicesd,
    LoadImaged,
    MapTransform,
    RandCropByPosNegLabeld,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from operators.ct.preprocessing import spleen_dict_transforms

KEYS = ("image", "label")
MAX_BACKGROUND_INDICES = 200_000


class ThinIndicesd(MapTransform):
    """Keep a fixed random subset of at most ``max_count`` entries of index arrays (deterministic, so cached).

    RandCropByPosNegLabeld deep-copies the precomputed indices into each of its samples; millions
    of background indices per volume make that copy a large share of a CPU training step. A few
    hundred thousand uniformly chosen background voxels sample negative crops just as well.
    """

    def __init__(self, keys: Sequence[str], max_count: int, seed: int = 0):
        super().__init__(keys)
        self.max_count, self.seed = max_count, seed

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            indices = np.asarray(d[key])
            if indices.size > self.max_count:
                keep = np.random.default_rng(self.seed).choice(indices.size, self.max_count, replace=False)
                d[key] = indices[np.sort(keep)]
        return d


@dataclass(frozen=True)
class Split:
    train: list[dict[str, str]]
    val: list[dict[str, str]]

    def as_json(self) -> dict[str, list[str]]:
        return {"train": [Path(d["image"]).name for d in self.train], "val": [Path(d["image"]).name for d in self.val]}


def _case_number(path: str) -> int:
    match = re.search(r"(\d+)\.nii(\.gz)?$", path)
    return int(match.group(1)) if match else -1


def load_datalist(data_dir: Path) -> list[dict[str, str]]:
    """Training cases of an MSD task folder, sorted by case number, with absolute paths."""
    data_dir = Path(data_dir)
    dataset_json = data_dir / "dataset.json"
    if not dataset_json.is_file():
        raise FileNotFoundError(f"{dataset_json} not found: is {data_dir} an MSD task folder?")
    entries = json.loads(dataset_json.read_text())["training"]
    items = [{key: str((data_dir / entry[key]).resolve()) for key in KEYS} for entry in entries]
    missing = [item[key] for item in items for key in KEYS if not Path(item[key]).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} files listed in {dataset_json} are missing, e.g. {missing[0]}")
    return sorted(items, key=lambda item: _case_number(item["image"]))


def split_datalist(items: Sequence[dict[str, str]], val_cases: int, train_cases: int | None = None) -> Split:
    """The bundle's split: the last ``val_cases`` validate, the ones before them train (optionally capped)."""
    if not 0 < val_cases < len(items):
        raise ValueError(f"need 0 < val_cases < {len(items)} cases, got val_cases={val_cases}")
    train, val = list(items[:-val_cases]), list(items[-val_cases:])
    if train_cases is not None:
        train = train[:train_cases]
    return Split(train=train, val=val)


def deterministic_transforms(
    preprocessing: dict[str, Any], pad_to: Sequence[int] | None = None, with_indices: bool = False, device: torch.device | None = None
) -> Compose:
    """Load, channel first, the shared spleen preprocessing, crop to the body (cached by CacheDataset).

    ``device``: move image and label there last (the crop indices stay NumPy arrays), so that a
    CacheDataset holds them in that device's memory and the random crops are cut there, as in
    MONAI's fast-training recipe; ``None`` leaves them on the CPU.
    """
    transforms = [
        LoadImaged(keys=KEYS, image_only=True),
        EnsureChannelFirstd(keys=KEYS),
        *spleen_dict_transforms(preprocessing),
        CropForegroundd(keys=KEYS, source_key="image", allow_smaller=True),
        EnsureTyped(keys=KEYS, track_meta=True),
    ]
    if pad_to is not None:
        transforms.append(SpatialPadd(keys=KEYS, spatial_size=tuple(pad_to)))
    if with_indices:
        transforms.append(FgBgToIndicesd(keys="label", fg_postfix="_fg", bg_postfix="_bg", image_key="image", image_threshold=0.0))
        transforms.append(ThinIndicesd(keys=("label_bg",), max_count=MAX_BACKGROUND_INDICES))
    if device is not None:
        transforms.append(EnsureTyped(keys=KEYS, device=device, track_meta=True))
    return Compose(transforms)


def random_transforms(crop_size: Sequence[int], num_samples: int, pos: float, neg: float, intensity_augmentation: bool) -> Compose:
    """RandCropByPosNegLabeld (pos/neg/num_samples from the config), then mild intensity jitter."""
    transforms = [
        RandCropByPosNegLabeld(
            keys=KEYS,
            label_key="label",
            spatial_size=tuple(crop_size),
            pos=pos,
            neg=neg,
            num_samples=num_samples,
            image_key="image",
            image_threshold=0.0,
            fg_indices_key="label_fg",
            bg_indices_key="label_bg",
        ),
        DeleteItemsd(keys=("label_fg", "label_bg")),
    ]
    if intensity_augmentation:
        transforms += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        ]
    return Compose(transforms)
