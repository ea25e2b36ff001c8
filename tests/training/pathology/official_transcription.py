"""A slow, loop-for-loop transcription of the official Camelyon16 FROC (Python/Evaluation_FROC.py,
NCRF's port), written independently of training.pathology, to cross-check it on random cases.

Inputs are the official ones: a 0/255 uint8 mask at the evaluation level, Python lists of int
coordinates, Python floats for probabilities. Kept literal on purpose: Python lists, ``set``,
a per-threshold ``np.asarray(...) >= t``, float32 ``TP_probs``, ``np.interp`` on reversed arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure


def evaluation_mask(mask_255: np.ndarray, resolution: float, level: int) -> np.ndarray:
    distance = ndimage.distance_transform_edt(255 - mask_255)
    binary = distance < 75 / (resolution * pow(2, level) * 2)
    return measure.label(ndimage.binary_fill_holes(binary), connectivity=2)


def itc_list(labels: np.ndarray, resolution: float, level: int) -> list[int]:
    max_label = int(np.amax(labels))
    props = measure.regionprops(labels)
    threshold = 275 / (resolution * pow(2, level))
    return [i + 1 for i in range(max_label) if props[i].axis_major_length < threshold]


def fp_tp_probs(ys: list[int], xs: list[int], probs: list[float], is_tumor: bool, labels, itc: list[int], level: int):
    max_label = int(np.amax(labels))
    fp_probs: list[float] = []
    tp_probs = np.zeros((max_label,), dtype=np.float32)
    if is_tumor:
        for i in range(len(xs)):
            hit = labels[int(ys[i] / pow(2, level)), int(xs[i] / pow(2, level))]
            if hit == 0:
                fp_probs.append(probs[i])
            elif hit not in itc:
                if probs[i] > tp_probs[hit - 1]:
                    tp_probs[hit - 1] = probs[i]
    else:
        fp_probs.extend(probs)
    return fp_probs, tp_probs, max_label - len(itc)


def froc(fp_lists: list[list[float]], tp_lists: list[np.ndarray], n_tumors: list[int]) -> tuple[np.ndarray, np.ndarray]:
    all_fps = [p for sub in fp_lists for p in sub]
    all_tps = [p for sub in tp_lists for p in sub]
    fps, tps = [], []
    # float(): the official code ran on NumPy 1, which compares a float32 scalar with a Python float in
    # float64, so sorted(set(...)) is in numeric order. NumPy 2 (NEP 50) compares them in float32, where
    # float32(0.7) == 0.7 although both stay in the set: the sort of the mixed list is then not an order.
    # Sorting Python floats of the same values gives NumPy 1's result; the counts below are unchanged.
    for t in sorted(set(all_fps + [float(p) for p in all_tps]))[1:]:
        fps.append((np.asarray(all_fps) >= t).sum())
        tps.append((np.asarray(all_tps) >= t).sum())
    fps.append(0)
    tps.append(0)
    return np.asarray(fps) / float(len(fp_lists)), np.asarray(tps) / float(sum(n_tumors))


def score(fps: np.ndarray, sens: np.ndarray) -> tuple[np.ndarray, float]:
    values = np.interp([0.25, 0.5, 1, 2, 4, 8], fps[::-1], sens[::-1])
    return values, float(np.mean(values))
