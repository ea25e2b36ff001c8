"""Patches read on the fly from the slides, in DataLoader worker processes.

Each process opens a slide lazily, on its first patch from it, with the app's own reader
(:func:`operators.wsi.slide.reader.open_slide`, OpenSlide backend: cuCIM crashes across threads and
forked processes) and reads it exactly as inference does (:func:`operators.wsi.grid.read_model_pixels`:
``patch_px`` model pixels at the model's mpp). Handles are never shared across a fork: a process
that finds handles opened by another process id drops them and opens its own.

Item ``i`` is a pure function of ``(seed_key, i)``: the position jitter, orientation and colour
jitter do not depend on which worker reads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from operators.wsi.grid import read_model_pixels
from operators.wsi.slide.reader import SlideHandle, open_slide
from training.pathology.augment import ColorJitter, augment_patch
from training.pathology.sampling import PatchDraws

BACKEND = "openslide"


class SlidePatches:
    """Reads patches centred on level-0 points of a set of slides, one lazily opened handle per slide and process."""

    def __init__(self, slide_paths: Sequence[Path], model_mpp: float, patch_px: int) -> None:
        self.slide_paths = [Path(p) for p in slide_paths]
        self.model_mpp = model_mpp
        self.patch_px = patch_px
        self._handles: dict[int, SlideHandle] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}

    def _slide(self, index: int) -> SlideHandle:
        if self._pid != os.getpid():  # inherited through a fork: these handles belong to the parent
            self._handles, self._pid = {}, os.getpid()
        if index not in self._handles:
            self._handles[index] = open_slide(self.slide_paths[index], None, BACKEND)
        return self._handles[index]

    def read(self, slide_index: int, centre_xy_level0: tuple[float, float]) -> np.ndarray:
        """(patch_px, patch_px, 3) uint8 RGB centred on a level-0 point, at the model's resolution."""
        slide = self._slide(slide_index)
        level0_per_model_px = self.model_mpp / float(np.mean(slide.mpp_xy))
        half_level0 = 0.5 * self.patch_px * level0_per_model_px
        origin = (centre_xy_level0[0] - half_level0, centre_xy_level0[1] - half_level0)
        return read_model_pixels(slide, origin, level0_per_model_px, (self.patch_px, self.patch_px))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


class PatchDataset(torch.utils.data.Dataset):
    """(uint8 (patch_px, patch_px, 3) RGB patch, float label) for each draw, augmented when ``augment``."""

    def __init__(
        self,
        patches: SlidePatches,
        draws: PatchDraws,
        seed_key: Sequence[int],
        jitter_px: int = 0,
        color_jitter: ColorJitter | None = None,
        augment: bool = True,
    ) -> None:
        self.patches = patches
        self.draws = draws
        self.seed_key = [int(k) for k in seed_key]
        self.jitter_px = jitter_px
        self.color_jitter = color_jitter
        self.augment = augment

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([*self.seed_key, index])
        centre = self.draws.centres_xy_level0[index].astype(np.float64)
        if self.jitter_px:
            centre = centre + rng.integers(-self.jitter_px, self.jitter_px + 1, 2)
        patch = self.patches.read(int(self.draws.slide_index[index]), (float(centre[0]), float(centre[1])))
        if self.augment:
            patch = augment_patch(patch, self.color_jitter, rng)
        return torch.from_numpy(np.ascontiguousarray(patch)), torch.tensor(float(self.draws.labels[index]))
