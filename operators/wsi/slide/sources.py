"""Find the slides in an input path: one slide file, one DICOM slide folder, or a folder of either."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from operators.core.errors import AppInputError
from operators.wsi.slide.dicom_source import is_dicom_file

logger = logging.getLogger(__name__)

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".scn", ".mrxs", ".vms", ".vmu", ".bif", ".svslide", ".dcm"})


@dataclass(frozen=True)
class SlideSource:
    """A slide to process: a file, or a folder holding one DICOM whole-slide image's instances."""

    name: str
    path: Path


def _holds_dicom(folder: Path) -> bool:
    return any(child.is_file() and is_dicom_file(child) for child in folder.iterdir())


def find_slides(input_path: Path) -> list[SlideSource]:
    """Slides in ``input_path``, sorted by name; files that are not slides are skipped with a warning."""
    input_path = Path(input_path)
    if not input_path.exists():
        raise AppInputError(f"input path does not exist: {input_path}")
    if input_path.is_file():
        return [
            SlideSource(input_path.parent.name, input_path.parent)
            if is_dicom_file(input_path)
            else SlideSource(input_path.stem, input_path)
        ]
    if _holds_dicom(input_path):
        return [SlideSource(input_path.name, input_path)]
    slides: list[SlideSource] = []
    for child in sorted(input_path.iterdir()):
        if child.is_dir() and _holds_dicom(child):
            slides.append(SlideSource(child.name, child))
        elif child.is_file() and child.suffix.lower() in SLIDE_SUFFIXES:
            slides.append(SlideSource(child.stem, child))
        elif not child.name.startswith("."):
            logger.warning("Skipping %s: not a slide file (suffix %s) nor a DICOM slide folder", child, child.suffix or "none")
    if not slides:
        raise AppInputError(f"no slides in {input_path}")
    names = [s.name for s in slides]
    if len(set(names)) != len(names):
        raise AppInputError(f"slides in {input_path} share output names: {sorted({n for n in names if names.count(n) > 1})}")
    return slides
